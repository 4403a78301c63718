"""Shared helpers: run real ansible-playbook against the controller itself, and reach the lab's artifact store."""

import os
import pathlib

import boto3
import pytest
from labinfo import PlaybookRun, run_playbook

REPO = pathlib.Path(__file__).resolve().parent.parent
STORE = f"http://127.0.0.1:{os.environ.get('INFRA_OBS_STORE_PORT', '19000')}"
BUCKET = "infra-obs-artifacts"


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
