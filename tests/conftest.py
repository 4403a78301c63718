"""Shared helpers: run real ansible-playbook against the controller itself, and reach the lab's artifact store."""

import collections
import os
import pathlib
import subprocess
import sys
import textwrap

import boto3
import pytest
from labinfo import PlaybookRun

REPO = pathlib.Path(__file__).resolve().parent.parent
STORE = f"http://127.0.0.1:{os.environ.get('INFRA_OBS_STORE_PORT', '19000')}"
BUCKET = "infra-obs-artifacts"


@pytest.fixture
def playbook(tmp_path):
    """Write a playbook (YAML text) and run it with the repository's roles; return a PlaybookRun."""

    def run(text: str, *args: str, inventory: str = "localhost,") -> PlaybookRun:
        path = tmp_path / "play.yml"
        path.write_text(textwrap.dedent(text))
        env = dict(
            os.environ,
            ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
            ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
            ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks",
            ANSIBLE_FACT_CACHING="memory",
            # Every host here is this machine: run modules with the controller's own interpreter.
            ANSIBLE_PYTHON_INTERPRETER=sys.executable,
        )
        result = subprocess.run(
            ["ansible-playbook", "-i", inventory, "-c", "local", str(path), *args],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO,
        )
        return PlaybookRun(result)

    return run


@pytest.fixture(scope="session")
def store():
    """An S3 client on the lab's artifact store (started by `make unit`/`make test`)."""
    client = boto3.client(
        "s3", endpoint_url=STORE, region_name="us-east-1", aws_access_key_id="lab", aws_secret_access_key="lab"
    )
    client.head_bucket(Bucket=BUCKET)
    return client


# Where the suite's time goes: the seconds each test directory took (set-up, test and tear-down, summed over workers),
# printed after the results so `make test` logs keep a per-part record.
_DIRECTORY_SECONDS: collections.Counter = collections.Counter()


def pytest_runtest_logreport(report):
    _DIRECTORY_SECONDS[str(pathlib.Path(report.location[0]).parent)] += report.duration


def pytest_terminal_summary(terminalreporter):
    terminalreporter.section("seconds per test directory")
    for directory, seconds in sorted(_DIRECTORY_SECONDS.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{seconds:8.1f}  {directory}")
