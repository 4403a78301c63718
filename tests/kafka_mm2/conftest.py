"""Fixtures for the Kafka / MirrorMaker 2 tests: real KRaft Kafka processes on loopback."""

import pytest

from .kafka_lab import KafkaNode, kafka_libs


@pytest.fixture(scope="session")
def kafka_libs_dir():
    """The Kafka classpath directory (scripts/fetch-kafka.sh, or INFRA_OBS_KAFKA_LIBS)."""
    return kafka_libs()


@pytest.fixture(scope="session")
def kafka_node(tmp_path_factory, kafka_libs_dir):
    """One started single-node cluster shared by the session: tests use their own topics and groups."""
    with KafkaNode(tmp_path_factory.mktemp("kafka"), libs=kafka_libs_dir) as node:
        yield node
