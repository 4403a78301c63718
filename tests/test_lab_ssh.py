"""scripts/lab-ssh-proxy.sh, the way Ansible reaches the lab's and molecule's containers: SSH through an sshd that
`podman exec` starts per connection, with the lab's key only, and sessions that keep the container's umask (a
private umask there made every directory Ansible created without a mode unreadable to the services)."""

import os
import pathlib
import subprocess
import uuid

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CACHE = pathlib.Path(os.environ.get("INFRA_OBS_CACHE", "/var/cache/infra-obs"))
IMAGE = os.environ.get("INFRA_OBS_BASE_IMAGE", "localhost/infra-obs-base:latest")


@pytest.fixture(scope="module")
def container():
    name = f"infraobs-test-ssh-{uuid.uuid4().hex[:8]}"
    subprocess.run(["podman", "run", "-d", "--name", name, IMAGE, "sleep", "300"], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], check=False, capture_output=True)


def ssh(container, key, command):
    return subprocess.run(
        [
            "ssh",
            "-i",
            str(key),
            "-o",
            f"ProxyCommand={REPO / 'scripts/lab-ssh-proxy.sh'} %h",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            f"root@{container}",
            command,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_labs_key_logs_in_as_root_with_the_containers_umask(container):
    run = ssh(container, CACHE / "ssh" / "id_ed25519", "id -u; umask")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["0", "0022"]


def test_another_key_is_refused(container, tmp_path):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    run = ssh(container, other, "true")
    assert run.returncode == 255
    assert "Permission denied" in run.stderr
