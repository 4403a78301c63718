"""The internal _artifact role against the real artifact store: a good artefact is copied to the host as one archive,
unpacked there and installs once, then reports no change; a checksum mismatch stops before the host's file is touched
and names the URL, the file and both sums; a play that names the role itself is refused."""

import hashlib
import io
import tarfile

import pytest
from conftest import BUCKET, STORE

PLAY = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: caller
      vars:
        _artifact_url: "{url}"
        _artifact_checksum: "{checksum}"
        _artifact_controller_cache: "{cache}"
        _artifact_host_cache: "{cache}/host"
        _artifact_files:
          - {{src: tool-1.0/tool, dest: "{dest}"}}
"""


def caller_role(play_dir):
    """A role beside the test's playbook that includes the internal role, as the collection's roles do."""
    tasks = play_dir / "roles" / "caller" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "main.yml").write_text("- ansible.builtin.include_role:\n    name: infra.obs._artifact\n")


def tarball(content: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("tool-1.0/tool")
        info.size = len(content)
        info.mode = 0o755
        archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@pytest.fixture
def published(store, tmp_path):
    """Publish a release tarball with its .sha256 in the store; return (url, sha256)."""
    body = tarball(f"#!/bin/sh\necho {tmp_path.name}\n".encode())
    key = f"test/{tmp_path.name}/tool-1.0.tar.gz"
    digest = hashlib.sha256(body).hexdigest()
    store.put_object(Bucket=BUCKET, Key=key, Body=body, ACL="public-read")
    store.put_object(
        Bucket=BUCKET, Key=key + ".sha256", Body=f"{digest}  tool-1.0.tar.gz\n".encode(), ACL="public-read"
    )
    return f"{STORE}/{BUCKET}/{key}", digest


def test_installs_verified_artefact_once(playbook, published, tmp_path):
    caller_role(tmp_path)
    url, _ = published
    dest = tmp_path / "bin" / "tool"
    dest.parent.mkdir()
    play = PLAY.format(url=url, checksum=f"sha256:{url}.sha256", cache=tmp_path / "cache", dest=dest)

    first = playbook(play)
    assert first.rc == 0, first.output
    assert first.stats["localhost"]["changed"] > 0
    assert dest.read_text() == f"#!/bin/sh\necho {tmp_path.name}\n"
    assert dest.stat().st_mode & 0o777 == 0o755

    second = playbook(play)
    assert second.rc == 0, second.output
    assert second.stats["localhost"]["changed"] == 0
    # The host got the archive and unpacked it into a tree named after the verified sum.
    (archive,) = (tmp_path / "cache" / "host").glob("*.tar.gz")
    assert archive.name == "tool-1.0.tar.gz"
    (tree,) = (tmp_path / "cache" / "host" / "unpacked").iterdir()
    assert tree.name == hashlib.sha256(archive.read_bytes()).hexdigest()[:16]


def test_checksum_mismatch_stops_before_the_host_is_touched(playbook, published, tmp_path):
    caller_role(tmp_path)
    url, digest = published
    wrong = "0" * 64
    dest = tmp_path / "tool"
    dest.write_text("the installed version\n")
    play = PLAY.format(url=url, checksum=f"sha256:{wrong}", cache=tmp_path / "cache", dest=dest)

    run = playbook(play)
    assert run.rc != 0
    message = run.failures()[-1]
    assert url in message
    assert str(tmp_path / "cache" / "tool-1.0.tar.gz") in message
    assert wrong in message and digest in message
    assert dest.read_text() == "the installed version\n"
    assert not (tmp_path / "cache" / "host").exists()


def test_a_play_cannot_use_the_internal_role_directly(playbook, published, tmp_path):
    url, _ = published
    dest = tmp_path / "tool"
    play = PLAY.replace("- role: caller", "- role: infra.obs._artifact")
    run = playbook(play.format(url=url, checksum=f"sha256:{url}.sha256", cache=tmp_path / "cache", dest=dest))
    assert run.rc != 0
    assert "infra.obs._artifact is internal" in run.failures()[-1]
    assert not dest.exists()
