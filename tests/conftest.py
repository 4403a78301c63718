"""Shared helpers: run real ansible-playbook against the controller itself, reach the lab's artifact store, and start
servers on loopback: moto (an empty AWS account each) and Prometheus from the release tarball the lab deploys."""

from __future__ import annotations

import os
import pathlib
import sys
import tarfile
from collections.abc import Callable, Iterator

import boto3
import pytest
from lab_servers import Server, Started
from lab_servers import free_port as free_port_now
from labinfo import PlaybookRun, run_playbook

REPO = pathlib.Path(__file__).resolve().parent.parent
STORE = f"http://127.0.0.1:{os.environ.get('INFRA_OBS_STORE_PORT', '19000')}"
BUCKET = "infra-obs-artifacts"
CACHE = pathlib.Path(os.environ.get("INFRA_OBS_CACHE", "/var/cache/infra-obs"))
PROMETHEUS_TARBALL = CACHE / "artifacts/prometheus/prometheus-3.16.0.linux-amd64.tar.gz"


def pytest_collection_modifyitems(items):
    """Under `pytest -n 2 --dist loadgroup` (make test/unit) each file runs on one worker, so its module fixtures
    start once. The Kafka tests run on one worker, one lab (two clusters and MM2) at a time, except the rollback
    file: the longest, it runs beside them on the other worker."""
    for item in items:
        path = item.path.relative_to(REPO)
        together = path.is_relative_to("tests/kafka_mm2") and path.name != "test_mm2_rollback.py"
        group = "tests/kafka_mm2" if together else str(path)
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture
def playbook(tmp_path):
    """Run a playbook (YAML text) with the repository's roles; return a PlaybookRun."""

    def run(text: str, *args: str, inventory: str = "localhost,") -> PlaybookRun:
        return run_playbook(tmp_path, text, *args, inventory=inventory)

    return run


@pytest.fixture
def preflight(playbook):
    """Run the preflight role alone over an inventory: its checks are asserts, which read variables and contact no
    host, so any inventory can be checked from here."""

    def run(inventory: str, *args: str) -> PlaybookRun:
        return playbook("- hosts: all\n  gather_facts: false\n  roles:\n    - role: infra.obs.preflight\n", *args,
                        inventory=inventory)  # fmt: skip

    return run


@pytest.fixture(scope="session")
def store():
    """An S3 client on the lab's artifact store (started by `make unit`/`make test`)."""
    client = boto3.client(
        "s3", endpoint_url=STORE, region_name="us-east-1", aws_access_key_id="lab", aws_secret_access_key="lab"
    )
    client.head_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """A function returning a loopback TCP port free at the time of the call."""
    return free_port_now


@pytest.fixture(scope="module")
def start_moto(tmp_path_factory) -> Iterator[Callable[[], Server]]:
    """Factory of moto servers (`moto_server -H 127.0.0.1 -p PORT`, an empty account each), stopped at the end of
    the module."""
    started = Started(tmp_path_factory.mktemp("moto"))
    moto = pathlib.Path(sys.executable).with_name("moto_server")

    def start() -> Server:
        port = free_port_now()
        return started.start([str(moto), "-H", "127.0.0.1", "-p", str(port)], "moto", port, "/moto-api/",
                             "moto_server")  # fmt: skip

    yield start
    started.stop()


@pytest.fixture(scope="module")
def moto_server(start_moto) -> str:
    """The endpoint URL of a moto server the module shares."""
    return start_moto().url


@pytest.fixture(scope="session")
def prometheus_binary(tmp_path_factory) -> pathlib.Path:
    """The prometheus binary of the release tarball the lab deploys, extracted into a temporary directory."""
    if not PROMETHEUS_TARBALL.is_file():
        pytest.fail(f"{PROMETHEUS_TARBALL} is missing: scripts/fetch-artifacts.sh fetches it")
    directory = tmp_path_factory.mktemp("prometheus-bin")
    with tarfile.open(PROMETHEUS_TARBALL) as tar:
        member = next(m for m in tar.getmembers() if m.isfile() and pathlib.PurePath(m.name).name == "prometheus")
        source = tar.extractfile(member)
        assert source is not None
        binary = directory / "prometheus"
        binary.write_bytes(source.read())
    binary.chmod(0o755)
    return binary


@pytest.fixture(scope="module")
def start_prometheus(prometheus_binary, tmp_path_factory) -> Iterator[Callable[..., Server]]:
    """Factory of Prometheus servers on loopback: start(data_dir, *extra_args, config="...") runs one with its TSDB
    in data_dir (a backfilled one, say) and the given configuration (default: no scrape jobs), ready when /-/ready
    answers; all are stopped at the end of the module."""
    started = Started(tmp_path_factory.mktemp("prometheus"))

    def start(data_dir: pathlib.Path, *extra: str, config: str = "global:\n  scrape_interval: 1m\n") -> Server:
        port = free_port_now()
        config_file = started.directory / f"prometheus-{port}.yml"
        config_file.write_text(config)
        cmd = [
            str(prometheus_binary),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address=127.0.0.1:{port}",
            *extra,
        ]
        return started.start(cmd, "prometheus", port, "/-/ready", "prometheus")

    yield start
    started.stop()
