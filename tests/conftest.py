"""Shared helpers: run real ansible-playbook against the controller itself, and reach the lab's artifact store."""

import os
import pathlib

import boto3
import pytest
from labinfo import PlaybookRun, run_playbook

REPO = pathlib.Path(__file__).resolve().parent.parent
STORE = f"http://127.0.0.1:{os.environ.get('INFRA_OBS_STORE_PORT', '19000')}"
BUCKET = "infra-obs-artifacts"


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


@pytest.fixture(scope="session")
def store():
    """An S3 client on the lab's artifact store (started by `make unit`/`make test`)."""
    client = boto3.client(
        "s3", endpoint_url=STORE, region_name="us-east-1", aws_access_key_id="lab", aws_secret_access_key="lab"
    )
    client.head_bucket(Bucket=BUCKET)
    return client
