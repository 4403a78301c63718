"""The lab's artifact store: an S3-compatible server (moto) standing in for OSS.

The on-disk cache ($INFRA_OBS_CACHE/artifacts) is the source of truth; `up` starts the server if it is not
answering and uploads every cached file (with its .sha256) that the bucket lacks or holds in another version.
Objects are readable without credentials, as roles read them from an internal mirror.

    python scripts/store.py up|down|status
"""

import contextlib
import hashlib
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import boto3

CACHE = pathlib.Path(os.environ.get("INFRA_OBS_CACHE", "/var/cache/infra-obs"))
PORT = int(os.environ.get("INFRA_OBS_STORE_PORT", "19000"))
BUCKET = "infra-obs-artifacts"
ENDPOINT = f"http://127.0.0.1:{PORT}"
PIDFILE = CACHE / "run" / "store.pid"


def answering(endpoint: str = ENDPOINT) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def client():
    return boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id="lab",
        aws_secret_access_key="lab",
    )


def start(host: str = "127.0.0.1", port: int = PORT, pidfile: pathlib.Path = PIDFILE) -> str:
    """A moto server on HOST:PORT, detached, its pid in PIDFILE and its log beside it; returns its URL."""
    endpoint = f"http://{host}:{port}"
    # Ours and answering: an answer alone can come from something else (an address not yet on this machine routes
    # out, and a sandbox's proxy may answer anything).
    if running(pidfile) and answering(endpoint):
        return endpoint
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    moto = pathlib.Path(sys.executable).with_name("moto_server")
    with pidfile.with_suffix(".log").open("ab") as log:
        proc = subprocess.Popen(
            [str(moto), "-H", host, "-p", str(port)],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    pidfile.write_text(str(proc.pid))
    for _ in range(100):
        if answering(endpoint):
            return endpoint
        if proc.poll() is not None:
            sys.exit(f"moto_server exited with {proc.returncode}; see {pidfile.with_suffix('.log')}")
        time.sleep(0.1)
    sys.exit(f"nothing answers on {endpoint} after 10 s")


def running(pidfile: pathlib.Path) -> bool:
    try:
        os.kill(int(pidfile.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def md5(path: pathlib.Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fill() -> int:
    s3 = client()
    if BUCKET not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=BUCKET)
    stored = {
        obj["Key"]: obj["ETag"].strip('"')
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for obj in page.get("Contents", [])
    }
    uploaded = 0
    root = CACHE / "artifacts"
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        key = path.relative_to(root).as_posix()
        if stored.get(key) == md5(path):
            continue
        # Single-part uploads keep the ETag an MD5, which the next fill compares against.
        s3.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes(), ACL="public-read")
        uploaded += 1
    return uploaded


def stop(pidfile: pathlib.Path = PIDFILE) -> None:
    if not pidfile.exists():
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(int(pidfile.read_text()), signal.SIGTERM)
    pidfile.unlink()


def main(argv: list[str]) -> None:
    command = argv[1] if len(argv) > 1 else "status"
    if command == "up":
        start()
        print(f"store: {ENDPOINT}/{BUCKET} ({fill()} uploaded)", file=sys.stderr)
    elif command == "down":
        stop()
    elif command == "status":
        print(f"store: {ENDPOINT} {'answering' if answering() else 'not answering'}")
    else:
        sys.exit(f"usage: {argv[0]} up|down|status")


if __name__ == "__main__":
    main(sys.argv)
