"""Releases: a git tag packed reproducibly, published to the artefact store (OSS, S3-compatible) immutably, listed,
and fetched back with every sum checked. The Jenkinsfile's package and publish stages call this through make.

    python scripts/release.py package TAG     # dist/TAG/: the collection, the probe wheelhouse, the playbooks and
                                              # inventories, manifest.json (sha256 of each)
    python scripts/release.py publish TAG     # releases/TAG/ in the store; refused when any of it is there already
    python scripts/release.py list            # the index: tag, commit, published when and by whom, status
    python scripts/release.py fetch TAG DIR   # every object downloaded and checked against the manifest
    python scripts/release.py plan|deploy TAG INVENTORY [LIMIT] [PLAYBOOK]
                                              # ansible-playbook (--check --diff for plan) from the fetched release
    python scripts/release.py verify TAG INVENTORY [LIMIT] [PLAYBOOK]
                                              # the service-quality gate: no drift from the release on any host,
                                              # every check passing on every quality checker
    python scripts/release.py record INVENTORY [RESULT]      # the run's audit record, into records/ in the store
    python scripts/release.py rollback INVENTORY             # deploys the last tag recorded good before the newest
    python scripts/release.py is-production INVENTORY        # exit 0: approval needed; 10: not production

A package holds nothing of the machine or the moment that packed it: the files come from `git archive` of the
tag's commit, every time in them is the commit's time, entries are sorted and owned by 0:0, and gzip records no
name. Who published it and when go in publish.json beside it, written last: a release without one was not
published whole (status "incomplete"). The store is the lab's (scripts/store.py) unless INFRA_OBS_RELEASE_ENDPOINT
names another; INFRA_OBS_RELEASE_BUCKET names the bucket.
"""

from __future__ import annotations

import getpass
import gzip
import hashlib
import io
import json
import os
import pathlib
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime

import ansible_mitogen
import botocore.exceptions
import store
import yaml
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "probe/src"))  # the gate's results print as the checker prints them
from infra_obs_probe.quality.checks import Result, table  # noqa: E402

DIST = REPO / "dist"
BUCKET = os.environ.get("INFRA_OBS_RELEASE_BUCKET", "infra-obs-releases")
PREFIX = "releases"
MANIFEST = "manifest.json"
PUBLISHED = "publish.json"
# What a tag may be called: it becomes a directory and an object key prefix.
TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# What a manifest may name: a plain file beside it (a manifest from the store is not trusted).
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
SHA256 = re.compile(r"[0-9a-f]{64}")
COLLECTION_DIR = "collections/ansible_collections/infra/obs"
# The data a deployment applies, from the tag as well: playbooks, and inventories with their whitelists and flows.
DEPLOYABLE = ("playbooks", "inventories")
# Our host packages (probe/, cost/): each ships as the wheelhouse scripts/build-wheelhouse.sh packs.
WHEELHOUSES = ("probe", "cost")
# A path inside the release's tree (INVENTORY, PLAYBOOK): plain segments, so it cannot leave the tree.
TREE_PATH = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}(/[A-Za-z0-9][A-Za-z0-9._-]{0,99}){0,9}")
# A rollout batch (`serial`): a number of hosts or a percentage, the grammar the plays' own check (preflight) uses.
BATCH_SIZE = re.compile(
    yaml.safe_load((REPO / COLLECTION_DIR / "roles/preflight/defaults/main.yml").read_text())[
        "preflight_batch_size_pattern"
    ]
)
# An Ansible host pattern without `@file` (which would read a file of the caller's choosing).
LIMIT = re.compile(r"[A-Za-z0-9_.*!&:,\[\]-]{0,1000}")
RECORDS = "records"
TEXTFILE = os.environ.get("INFRA_OBS_DEPLOY_TEXTFILE", "/var/lib/prometheus/node-exporter/infra_obs_deploy.prom")
STAGES = ("plan", "deploy", "verify")
# How ansible-playbook drives the hosts: Mitogen's linear strategy by default (one Python per host, kept for the
# whole run, instead of a module shipped and an interpreter started per task: bench/deploy), Ansible's own as the
# way back should Mitogen misbehave on a fleet.
STRATEGIES = ("mitogen_linear", "linear")


class ReleaseError(Exception):
    """A release cannot be made, published or fetched; the message says which object or input and why."""


@dataclass(frozen=True)
class Manifest:
    tag: str
    commit: str
    commit_time: int
    files: dict[str, tuple[str, int]]  # name -> (sha256, size)
    tools: dict[str, str]

    def to_json(self) -> bytes:
        document = {
            "schema": 1,
            "tag": self.tag,
            "commit": self.commit,
            "commit_time": datetime.fromtimestamp(self.commit_time, UTC).isoformat(),
            "files": [{"name": n, "sha256": s, "size": z} for n, (s, z) in sorted(self.files.items())],
            "tools": self.tools,
        }
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes, where: str) -> Manifest:
        """A manifest read back from the store, checked field by field against a tight grammar."""
        try:
            document = json.loads(data)
        except ValueError as error:
            raise ReleaseError(f"{where}: not JSON: {error}") from None
        if not isinstance(document, dict) or document.get("schema") != 1:
            raise ReleaseError(f"{where}: not a schema 1 manifest")
        tag, commit, files = document.get("tag"), document.get("commit"), document.get("files")
        if not isinstance(tag, str) or not TAG.fullmatch(tag):
            raise ReleaseError(f"{where}: key tag: {tag!r} is not a tag name")
        if not isinstance(commit, str) or not re.fullmatch(r"[0-9a-f]{40}", commit):
            raise ReleaseError(f"{where}: key commit: {commit!r} is not a commit id")
        if not isinstance(files, list) or not files:
            raise ReleaseError(f"{where}: key files: a list of files is needed")
        parsed: dict[str, tuple[str, int]] = {}
        for entry in files:
            name = entry.get("name") if isinstance(entry, dict) else None
            sha, size = (entry.get("sha256"), entry.get("size")) if isinstance(entry, dict) else (None, None)
            if not isinstance(name, str) or not FILE_NAME.fullmatch(name) or name in {MANIFEST, PUBLISHED}:
                raise ReleaseError(f"{where}: key files: {name!r} is not a plain file name")
            if not isinstance(sha, str) or not SHA256.fullmatch(sha):
                raise ReleaseError(f"{where}: key files[{name}].sha256: {sha!r} is not a sha256")
            if type(size) is not int or size < 0:
                raise ReleaseError(f"{where}: key files[{name}].size: {size!r} is not a size")
            if name in parsed:
                raise ReleaseError(f"{where}: key files: {name} is listed twice")
            parsed[name] = (sha, size)
        try:
            commit_time = int(datetime.fromisoformat(document["commit_time"]).timestamp())
        except (KeyError, TypeError, ValueError):
            raise ReleaseError(f"{where}: key commit_time: {document.get('commit_time')!r} is not a time") from None
        tools = document.get("tools", {})
        return cls(tag, commit, commit_time, parsed, tools if isinstance(tools, dict) else {})


def checked_tag(tag: str) -> str:
    if not TAG.fullmatch(tag or ""):
        raise ReleaseError(
            f"TAG={tag!r}: a tag is 1-100 letters, digits, '.', '_' or '-', starting with one of the first two"
        )
    return tag


def git(*args: str) -> str:
    result = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    if result.returncode:
        raise ReleaseError(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


def tag_commit(tag: str) -> str:
    """The commit a tag names (a tag, not a branch of that name)."""
    return git("rev-parse", "--verify", "--quiet", f"refs/tags/{checked_tag(tag)}^{{commit}}")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def deterministic_tgz(members: list[tuple[tarfile.TarInfo, bytes | None]], mtime: int) -> bytes:
    """A gzipped tar of these members in name order, every time `mtime`, owned by 0:0 with no names, and modes
    reduced to 0755 (directories and executables) or 0644: the same members give the same bytes anywhere."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in sorted(members, key=lambda m: m[0].name):
            clean = tarfile.TarInfo(info.name.rstrip("/"))
            clean.type, clean.linkname, clean.size = info.type, info.linkname, len(data or b"")
            clean.mode = 0o755 if info.isdir() or info.mode & 0o100 else 0o644
            clean.mtime, clean.uid, clean.gid, clean.uname, clean.gname = mtime, 0, 0, "", ""
            tar.addfile(clean, io.BytesIO(data) if data is not None else None)
    packed = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=packed, mtime=mtime, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return packed.getvalue()


def tar_members(path: pathlib.Path) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar.getmembers()]


def tree_members(root: pathlib.Path, tops: tuple[str, ...]) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    members = []
    for top in tops:
        for path in [root / top, *sorted((root / top).rglob("*"))]:
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            if path.is_symlink():
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
                members.append((info, None))
            elif path.is_dir():
                info.type = tarfile.DIRTYPE
                members.append((info, None))
            else:
                info.mode = path.stat().st_mode
                members.append((info, path.read_bytes()))
    return members


def tool_versions() -> dict[str, str]:
    from ansible.release import __version__ as ansible_core  # noqa: PLC0415 (only packing needs it)

    return {"python": platform.python_version(), "ansible-core": ansible_core}


def package(tag: str) -> pathlib.Path:
    """dist/TAG/ from the tag's commit alone (never the working tree); the previous pack of it is replaced."""
    commit = tag_commit(tag)
    if not commit:
        raise ReleaseError(f"TAG={tag}: no such tag in {REPO}")
    commit_time = int(git("log", "-1", "--format=%ct", commit))
    out = DIST / tag
    with tempfile.TemporaryDirectory(prefix="infra-obs-package-") as tmp:
        work = pathlib.Path(tmp)
        src = work / "src"
        archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit], capture_output=True)
        if archive.returncode:
            raise ReleaseError(f"git archive {commit}: {archive.stderr.decode().strip()}")
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(src, filter="data")
        files: dict[str, bytes] = {}

        # ansible-galaxy stamps MANIFEST.json and FILES.json with the time of the build: repacked.
        (work / "ansible.cfg").write_text("[defaults]\n")
        galaxy = work / "galaxy"
        run(
            ["ansible-galaxy", "collection", "build", "--output-path", str(galaxy), str(src / COLLECTION_DIR)],
            env=ansible_env(work / "ansible.cfg"),
        )
        (built,) = galaxy.glob("*.tar.gz")
        files[built.name] = deterministic_tgz(tar_members(built), commit_time)

        # The tag's own recipe: its wheelhouses are reproducible and cached by their sources.
        for package in WHEELHOUSES:
            run(["bash", str(src / "scripts/build-wheelhouse.sh"), package])
            init = (src / f"{package}/src/infra_obs_{package}/__init__.py").read_text()
            version = re.search(r'^__version__ = "(.+)"$', init, re.M)
            wheelhouse = store.CACHE / "artifacts" / package / f"infra-obs-{package}-{version[1]}.tar.gz"
            files[wheelhouse.name] = wheelhouse.read_bytes()

        files["deploy.tar.gz"] = deterministic_tgz(tree_members(src, DEPLOYABLE), commit_time)

    manifest = Manifest(tag, commit, commit_time, {n: (sha256(d), len(d)) for n, d in files.items()}, tool_versions())
    if out.exists():
        for old in out.iterdir():
            old.unlink()
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    (out / MANIFEST).write_bytes(manifest.to_json())
    return out


def ansible_env(config: pathlib.Path, **extra: str) -> dict[str, str]:
    """The environment for Ansible with the run's config only: ANSIBLE_* variables of the caller (a CI agent's,
    molecule's) would override it, e.g. the collections path with a working tree's collection."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    return {**kept, "ANSIBLE_CONFIG": str(config), **extra}


def run(command: list[str], env: dict[str, str] | None = None) -> None:
    result = subprocess.run(command, capture_output=True, text=True, env=env or dict(os.environ))
    if result.returncode:
        raise ReleaseError(f"{' '.join(command)} exited with {result.returncode}: {result.stderr.strip()[-2000:]}")


def client():
    endpoint = os.environ.get("INFRA_OBS_RELEASE_ENDPOINT")
    if not endpoint:
        return store.client()
    import boto3  # noqa: PLC0415 (the lab's client comes from store.py)

    return boto3.client("s3", endpoint_url=endpoint)


def key(tag: str, name: str = "") -> str:
    return f"{PREFIX}/{tag}/{name}"


def read(s3, object_key: str) -> bytes:
    try:
        return s3.get_object(Bucket=BUCKET, Key=object_key)["Body"].read()
    except botocore.exceptions.ClientError as error:
        raise ReleaseError(f"s3://{BUCKET}/{object_key}: {error.response['Error'].get('Code', error)}") from None


def bucket_exists(s3) -> bool:
    """HEAD on the bucket: a deploy user of a real store may read and write it without being allowed to list every
    bucket of the account."""
    try:
        s3.head_bucket(Bucket=BUCKET)
    except botocore.exceptions.ClientError as error:
        if error.response["Error"].get("Code") in {"404", "NoSuchBucket"}:
            return False
        raise
    return True


def put_new(s3, object_key: str, data: bytes) -> None:
    """Write an object that must not exist: the store itself refuses an overwrite (If-None-Match), no race."""
    try:
        s3.put_object(Bucket=BUCKET, Key=object_key, Body=data, IfNoneMatch="*")
    except botocore.exceptions.ClientError as error:
        if error.response["Error"].get("Code") == "PreconditionFailed":
            raise ReleaseError(f"s3://{BUCKET}/{object_key} exists already: a release is never overwritten") from None
        raise


def publisher() -> str:
    """Jenkins's user (build-user-vars plugin), else whoever runs this."""
    return os.environ.get("BUILD_USER") or getpass.getuser()


def publish(tag: str) -> str:
    """Upload dist/TAG/ under releases/TAG/, read every object back, then write publish.json."""
    checked_tag(tag)
    local = DIST / tag
    if not (local / MANIFEST).is_file():
        raise ReleaseError(f"{local / MANIFEST}: no package of {tag} here; run `make package TAG={tag}` first")
    manifest_bytes = (local / MANIFEST).read_bytes()
    manifest = Manifest.parse(manifest_bytes, str(local / MANIFEST))
    if manifest.tag != tag:
        raise ReleaseError(f"{local / MANIFEST}: key tag: {manifest.tag!r}, not {tag!r}")
    s3 = client()
    if not bucket_exists(s3):
        s3.create_bucket(Bucket=BUCKET)
    there = s3.list_objects_v2(Bucket=BUCKET, Prefix=key(tag)).get("KeyCount", 0)
    if there:
        raise ReleaseError(
            f"release {tag} is in the store already ({there} objects under {key(tag)}): a tag is "
            "published once; make a new tag"
        )
    for name, (sha, _size) in sorted(manifest.files.items()):
        data = (local / name).read_bytes()
        if sha256(data) != sha:
            raise ReleaseError(f"{local / name}: sha256 {sha256(data)} is not the manifest's {sha}")
        put_new(s3, key(tag, name), data)
    put_new(s3, key(tag, MANIFEST), manifest_bytes)
    for name, (sha, _size) in sorted(manifest.files.items()):
        if sha256(read(s3, key(tag, name))) != sha:
            raise ReleaseError(f"s3://{BUCKET}/{key(tag, name)}: read back with another sha256 than uploaded")
    if read(s3, key(tag, MANIFEST)) != manifest_bytes:
        raise ReleaseError(f"s3://{BUCKET}/{key(tag, MANIFEST)}: read back with other bytes than uploaded")
    record = {
        "tag": tag,
        "commit": manifest.commit,
        "manifest_sha256": sha256(manifest_bytes),
        "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "published_by": publisher(),
    }
    put_new(s3, key(tag, PUBLISHED), (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    return f"s3://{BUCKET}/{key(tag)}"


def index() -> list[dict]:
    """Every release in the store, oldest publish first; one whose publish.json is missing is "incomplete"."""
    s3 = client()
    if not bucket_exists(s3):
        return []
    tags = [
        p["Prefix"].split("/")[1]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{PREFIX}/", Delimiter="/")
        for p in page.get("CommonPrefixes", [])
    ]
    releases = []
    for tag in tags:
        try:
            record = json.loads(read(s3, key(tag, PUBLISHED)))
            record["status"] = "published"
        except ReleaseError:
            record = {"tag": tag, "status": "incomplete"}
        releases.append(record)
    return sorted(releases, key=lambda r: (r.get("published_at", ""), r["tag"]))


def fetch(tag: str, dest: pathlib.Path) -> Manifest:
    """The release's files in dest, each checked against its manifest, and the manifest against publish.json and
    (where this checkout has the tag) the tag's commit. A tampered object stops here, named."""
    checked_tag(tag)
    s3 = client()
    manifest_bytes = read(s3, key(tag, MANIFEST))
    try:
        published = json.loads(read(s3, key(tag, PUBLISHED)))
    except ValueError:
        raise ReleaseError(f"s3://{BUCKET}/{key(tag, PUBLISHED)}: not JSON") from None
    if not isinstance(published, dict) or published.get("manifest_sha256") != sha256(manifest_bytes):
        raise ReleaseError(f"s3://{BUCKET}/{key(tag, MANIFEST)}: its sha256 is not the one published")
    manifest = Manifest.parse(manifest_bytes, f"s3://{BUCKET}/{key(tag, MANIFEST)}")
    local_commit = tag_commit(tag) if git("tag", "--list", tag) else ""
    if manifest.tag != tag or (local_commit and local_commit != manifest.commit):
        raise ReleaseError(
            f"s3://{BUCKET}/{key(tag, MANIFEST)}: names {manifest.tag} at {manifest.commit}, but tag {tag} is "
            f"{local_commit or 'another release'} here"
        )
    if dest.exists():
        raise ReleaseError(f"{dest}: exists already; a release is fetched into a new directory")
    # Into a directory beside dest, renamed once every object has passed: dest never holds part of a release.
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}-", dir=dest.parent) as tmp:
        partial = pathlib.Path(tmp)
        for name, (sha, size) in sorted(manifest.files.items()):
            data = read(s3, key(tag, name))
            if len(data) != size or sha256(data) != sha:
                raise ReleaseError(
                    f"s3://{BUCKET}/{key(tag, name)}: sha256 {sha256(data)} ({len(data)} bytes) is not the "
                    f"manifest's {sha} ({size} bytes): the object was changed after it was published"
                )
            (partial / name).write_bytes(data)
        (partial / MANIFEST).write_bytes(manifest_bytes)
        partial.rename(dest)
        partial.mkdir()  # for TemporaryDirectory's clean-up
    return manifest


def checked_path(value: str, name: str) -> str:
    if not TREE_PATH.fullmatch(value or ""):
        raise ReleaseError(f"{name}={value!r}: a path inside the release, segments of letters, digits, '.', '_' or '-'")
    return value


# is-production's exit status for an inventory that needs no approval: any other (an error too) asks for one.
NOT_PRODUCTION = 10


def inventory_hostvars(path: pathlib.Path, inventory: str, env: dict[str, str] | None = None) -> dict[str, dict]:
    """Every host's variables as the inventory at path sets them (unrendered), by host name."""
    command = ["ansible-inventory", "-i", str(path), "--list"]
    listed = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env)
    if listed.returncode:
        raise ReleaseError(f"INVENTORY={inventory}: ansible-inventory failed: {listed.stderr.strip()[-1000:]}")
    return json.loads(listed.stdout).get("_meta", {}).get("hostvars", {})


def is_production(inventory: str) -> bool:
    """Whether any host of the inventory (this checkout's: Jenkins's is the tag's) has infra_obs_environment
    production."""
    checked_path(inventory, "INVENTORY")
    hostvars = inventory_hostvars(REPO / inventory, inventory)
    return any(v.get("infra_obs_environment") == "production" for v in hostvars.values())


def batch_size(hostvars: dict[str, dict], inventory: str) -> str | None:
    """The inventory's infra_obs_batch_size, one value for every host that sets it, for -e: Ansible templates a
    play's `serial` before any inventory variable, so the value would otherwise be silently ignored."""
    values: dict[str, str] = {}
    for host, variables in sorted(hostvars.items()):
        if "infra_obs_batch_size" not in variables:
            continue
        value = variables["infra_obs_batch_size"]
        text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else None
        if text is None or not BATCH_SIZE.fullmatch(text):
            raise ReleaseError(
                f"INVENTORY={inventory}: host {host}: infra_obs_batch_size={value!r}: a number of hosts (1-99999) "
                "or a percentage (1%-100%)"
            )
        values[host] = text
    if len(set(values.values())) > 1:
        found = ", ".join(f"{v} on {h}" for h, v in values.items())
        raise ReleaseError(f"INVENTORY={inventory}: infra_obs_batch_size differs between hosts ({found}): one value")
    return next(iter(values.values()), None)


def check_local_interpreters(hostvars: dict[str, dict], inventory: str, chosen: str) -> None:
    """Under Mitogen, a host reached over a local connection needs its interpreter named: Mitogen's interpreter
    discovery fails there (mitogen 0.3 with ansible-core 2.19: the host is unreachable, "EOF on stream")."""
    hosts = [
        host
        for host, variables in sorted(hostvars.items())
        if variables.get("ansible_connection") in ("local", "ansible.builtin.local")
        and str(variables.get("ansible_python_interpreter", "auto")).startswith("auto")
    ]
    if chosen == "mitogen_linear" and hosts:
        raise ReleaseError(
            f"INVENTORY={inventory}: {', '.join(hosts)}: ansible_connection=local and no ansible_python_interpreter: "
            "Mitogen cannot discover a local interpreter; set it (e.g. '{{ ansible_playbook_python }}', as Ansible's "
            "implicit localhost has) or run with INFRA_OBS_DEPLOY_STRATEGY=linear"
        )


def checked_limit(limit: str) -> str:
    if not LIMIT.fullmatch(limit):
        raise ReleaseError(f"LIMIT={limit!r}: host patterns of letters, digits and _ . * ! & : , [ ] - only")
    return limit


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def run_dir() -> pathlib.Path:
    """Where a run's stages leave their results for the record (one run at a time per workspace: Jenkins locks)."""
    return DIST / "run"


def strategy() -> str:
    """INFRA_OBS_DEPLOY_STRATEGY, one of STRATEGIES."""
    chosen = os.environ.get("INFRA_OBS_DEPLOY_STRATEGY", STRATEGIES[0])
    if chosen not in STRATEGIES:
        raise ReleaseError(f"INFRA_OBS_DEPLOY_STRATEGY={chosen!r}: one of {', '.join(STRATEGIES)}")
    return chosen


def ansible_config(work: pathlib.Path, inventory: str) -> pathlib.Path:
    """The run's own config: the release's collection only, its recap written for the record, the strategy, and
    SSH kept open and pipelined (one round trip per task); facts cached per inventory, as --limit runs need other
    hosts'. Mitogen checks host keys strictly or not at all: the hosts' keys belong in known_hosts."""
    facts = DIST / "facts" / inventory.replace("/", "_")
    config = work / "ansible.cfg"
    config.write_text(
        "[defaults]\n"
        f"collections_path = {work / 'collections'}\n"
        f"strategy_plugins = {pathlib.Path(ansible_mitogen.__file__).parent / 'plugins/strategy'}\n"
        f"strategy = {strategy()}\n"
        "forks = 25\n"
        "callbacks_enabled = infra.obs.run_summary, ansible.posix.profile_tasks\n"
        "stdout_callback = ansible.builtin.default\n"
        "interpreter_python = auto_silent\n"
        "host_key_checking = True\n"
        "retry_files_enabled = False\n"
        "gathering = smart\n"
        "fact_caching = jsonfile\n"
        f"fact_caching_connection = {facts}\n"
        "fact_caching_timeout = 86400\n"
        "[ssh_connection]\n"
        "pipelining = True\n"
        "ssh_args = -o ControlMaster=auto -o ControlPersist=60s\n"
    )
    return config


def ansible_run(stage: str, tag: str, inventory: str, limit: str = "", playbook: str = "playbooks/site.yml") -> dict:
    """plan (--check --diff), deploy or verify: fetch and check the release, install its collection in a private
    path and run its playbooks on its inventory. The result, a failure too (a tampered object), is left in the run
    directory for the record."""
    checked_tag(tag)
    checked_path(inventory, "INVENTORY")
    checked_path(playbook, "PLAYBOOK")
    checked_limit(limit)
    if stage == "plan":
        shutil.rmtree(run_dir(), ignore_errors=True)  # a plan starts a run: nothing of an earlier one is kept
    result = {"stage": stage, "tag": tag, "inventory": inventory, "limit": limit, "playbook": playbook}
    result["start"] = now()
    try:
        release = Release.prepare(tag, inventory, playbook)
        result.update(gate(release, limit) if stage == "verify" else release.run_stage(stage, limit))
    except ReleaseError as error:
        result.update(result="failed", error=str(error))
    finally:
        result["end"] = now()
        result.setdefault("result", "aborted")  # interrupted: Jenkins's abort, a signal
        run_dir().mkdir(parents=True, exist_ok=True)
        (run_dir() / f"{stage}.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    if result["result"] != "success":
        raise ReleaseError(f"{stage} of {tag} on {inventory} failed: {result['error']}")
    return result


@dataclass
class Release:
    """A fetched and checked release, unpacked, with its collection installed in a private path."""

    tag: str
    inventory: str
    playbook: str
    work: pathlib.Path
    tree: pathlib.Path
    config: pathlib.Path
    manifest: Manifest
    batch: str | None  # the inventory's infra_obs_batch_size

    @classmethod
    def prepare(cls, tag: str, inventory: str, playbook: str) -> Release:
        work = DIST / "deploy" / tag
        shutil.rmtree(work, ignore_errors=True)
        manifest = fetch(tag, work / "release")
        tree = work / "tree"
        with tarfile.open(work / "release/deploy.tar.gz") as tar:
            try:
                tar.extractall(tree, filter="data")
            except tarfile.FilterError as error:  # e.g. a link out of the tree: refused, whatever its sums say
                raise ReleaseError(f"release {tag}: deploy.tar.gz: {error}") from None
        for path, name in ((inventory, "INVENTORY"), (playbook, "PLAYBOOK")):
            if not (tree / path).is_file():
                raise ReleaseError(f"{name}={path}: not a file in release {tag}")
        config = ansible_config(work, inventory)
        (collection,) = [work / "release" / n for n in manifest.files if re.fullmatch(r"infra-obs-\d.*\.tar\.gz", n)]
        run(
            ["ansible-galaxy", "collection", "install", "--offline", "-p", str(work / "collections"), str(collection)],
            ansible_env(config),
        )
        hostvars = inventory_hostvars(tree / inventory, inventory, ansible_env(config))
        check_local_interpreters(hostvars, inventory, strategy())
        batch = batch_size(hostvars, inventory)
        return cls(tag, inventory, playbook, work, tree, config, manifest, batch)

    def playbook_run(self, playbook: str, limit: str, *args: str) -> tuple[int, dict]:
        """ansible-playbook from the release's tree: its exit status and the run_summary callback's recap."""
        summary = self.work / "summary.json"
        summary.unlink(missing_ok=True)
        command = ["ansible-playbook", "-i", str(self.tree / self.inventory), str(self.tree / playbook), *args]
        command += ["--limit", limit] if limit else []
        command += ["-e", json.dumps({"infra_obs_batch_size": self.batch})] if self.batch else []
        # The output streams to the console (Jenkins's log); the recap per host comes from the run_summary callback.
        env = ansible_env(self.config, INFRA_OBS_RUN_SUMMARY=str(summary))
        rc = subprocess.run(command, cwd=self.tree, env=env).returncode
        recap = json.loads(summary.read_text()) if summary.exists() else {"hosts": {}, "changes": {}}
        return rc, recap

    def run_stage(self, stage: str, limit: str) -> dict:
        rc, recap = self.playbook_run(self.playbook, limit, *(["--check", "--diff"] if stage == "plan" else []))
        result = {"commit": self.manifest.commit, "result": "success" if rc == 0 else "failed", "hosts": recap["hosts"]}
        result["batch"] = self.batch
        if stage == "plan":
            result["changes"] = changes(recap)
        if rc:
            result["error"] = f"ansible-playbook exited with {rc}"
        return result


def changes(recap: dict) -> dict:
    """Per host, the tasks that changed (or would, in check mode) and the files their diffs name."""
    return {
        host: {"tasks": [t["task"] for t in tasks], "files": sorted({f for t in tasks for f in t["files"]})}
        for host, tasks in recap["changes"].items()
    }


def gate(release: Release, limit: str) -> dict:
    """The verify stage, the service-quality gate. From inside: the release's playbook in check mode changes
    nothing on any host (a file changed by hand, a unit stopped, a package replaced all show as drift). From
    outside: every quality checker of the inventory runs its checks once (playbooks/verify.yml). Prints one table;
    the result holds every row for the record."""
    rc, recap = release.playbook_run(release.playbook, limit, "--check", "--diff")
    drift = changes(recap)
    rows = [
        Result(
            "drift",
            "release",
            "drift",
            host,
            False,
            f"{len(d['tasks'])} tasks would change",
            "no change",
            "; ".join(d["tasks"] + [f"file {f}" for f in d["files"]]),
        )
        for host, d in sorted(drift.items())
    ]
    errors = [f"the check-mode run of {release.playbook} exited with {rc}"] if rc else []
    if not rc and not drift:
        rows.append(Result("drift", "release", "drift", f"{len(recap['hosts'])} hosts", True, "no change", "no change"))
    results = release.work / "quality"
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir()
    rc, _ = release.playbook_run("playbooks/verify.yml", "", "-e", f"infra_obs_verify_dir={results}")
    if rc:
        errors.append(f"playbooks/verify.yml exited with {rc}")
    checkers = {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}
    if not checkers:
        errors.append(f"no quality checker of {release.inventory} answered: nothing was checked from outside")
    for name, checked in checkers.items():
        rows += [Result(**{**r, "target": f"{r['target']} (from {name})"}) for r in checked["results"]]
    print(table(rows))
    failed = [r for r in rows if not r.ok]
    print(f"verify: {len(rows) - len(failed)} passed, {len(failed)} failed", file=sys.stderr)
    result = {
        "commit": release.manifest.commit,
        "result": "failed" if failed or errors else "success",
        "hosts": recap["hosts"],
        "drift": drift,
        "checks": [r.as_dict() for r in rows],
    }
    if failed or errors:
        result["error"] = "; ".join(errors + [f"{r.check} {r.target}" for r in failed][:20])
    return result


def record(inventory: str, result: str = "") -> dict:
    """The run's audit record from its stages' results, written once under records/INVENTORY/ and never
    overwritten; the run directory is emptied for the next run. RESULT (Jenkins's post block: failed, aborted)
    overrides what the stages say."""
    checked_path(inventory, "INVENTORY")
    if result not in {"", "success", "failed", "aborted"}:
        raise ReleaseError(f"RESULT={result!r}: success, failed or aborted")
    stages = {
        stage: json.loads((run_dir() / f"{stage}.json").read_text())
        for stage in STAGES
        if (run_dir() / f"{stage}.json").is_file()
    }
    ran = list(stages.values())  # in STAGES order
    if not ran or any(s["inventory"] != inventory for s in ran):
        raise ReleaseError(f"{run_dir()}: no plan, deploy or verify of INVENTORY={inventory} to record")
    if len({s["tag"] for s in ran}) > 1:
        raise ReleaseError(f"{run_dir()}: results of more than one run ({', '.join(sorted({s['tag'] for s in ran}))})")
    deploy = stages.get("deploy", {})
    verified = stages.get("verify", {}).get("result", "not run")
    if not result:
        failed = any(s["result"] != "success" for s in ran) or verified not in {"success", "not run"}
        result = "failed" if failed else "success"
    if result == "success" and not deploy:
        result = "planned"  # a plan alone (CHECK_ONLY) deployed nothing: rollback never returns to it
    first = ran[0]
    document = {
        "who": publisher(),
        "tag": first["tag"],
        "commit": first.get("commit", ""),
        "inventory": inventory,
        "limit": first.get("limit", ""),
        "playbook": first.get("playbook", ""),
        "batch": deploy.get("batch", first.get("batch")),
        "hosts": deploy.get("hosts") or first.get("hosts", {}),
        "plan": stages.get("plan", {}).get("changes"),
        "verify": {
            "result": verified,
            **{k: v for k, v in stages.get("verify", {}).items() if k in ("drift", "checks")},
        },
        "stages": {name: stage["result"] for name, stage in stages.items()},
        "errors": {name: stage["error"] for name, stage in stages.items() if stage.get("error")},
        "start": first["start"],
        "end": now(),
        "result": result,
    }
    stamp = document["start"].replace(":", "").replace("-", "").replace("+0000", "Z")
    object_key = f"{RECORDS}/{inventory.replace('/', '_')}/{stamp}-{document['tag']}-{secrets.token_hex(4)}.json"
    s3 = client()
    if not bucket_exists(s3):
        s3.create_bucket(Bucket=BUCKET)
    put_new(s3, object_key, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())
    shutil.rmtree(run_dir())
    write_deploy_metrics(s3)
    document["key"] = object_key
    return document


def deploy_metrics(s3) -> CollectorRegistry:
    """Per inventory, its newest deployment run (a plan alone is not one) and its newest success, from the records
    in the store: what Prometheus reads through node_exporter's textfile collector on the agent."""
    registry = CollectorRegistry()
    last_run = Gauge(
        "infra_obs_deploy_last_run_timestamp_seconds",
        "When the newest deployment run of an inventory ended.",
        ["inventory", "tag", "result"],
        registry=registry,
    )
    last_success = Gauge(
        "infra_obs_deploy_last_run_success",
        "1 when the newest deployment run of an inventory succeeded, else 0.",
        ["inventory", "tag"],
        registry=registry,
    )
    good = Gauge(
        "infra_obs_deploy_last_success_timestamp_seconds",
        "When the newest successful deployment of an inventory ended.",
        ["inventory", "tag"],
        registry=registry,
    )
    keys: dict[str, list[str]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=f"{RECORDS}/"):
        for o in page.get("Contents", []):
            keys.setdefault(o["Key"].split("/")[1], []).append(o["Key"])
    for names in keys.values():
        newest = None
        for object_key in sorted(names, reverse=True):  # keys begin with the run's start: newest first
            run_record = json.loads(read(s3, object_key))
            if run_record["result"] == "planned":
                continue
            ended = datetime.fromisoformat(run_record["end"]).timestamp()
            if newest is None:
                newest = run_record
                last_run.labels(run_record["inventory"], run_record["tag"], run_record["result"]).set(ended)
                last_success.labels(run_record["inventory"], run_record["tag"]).set(run_record["result"] == "success")
            if run_record["result"] == "success":
                good.labels(run_record["inventory"], run_record["tag"]).set(ended)
                break
    return registry


def write_deploy_metrics(s3) -> None:
    """The metrics file for node_exporter's textfile collector (INFRA_OBS_DEPLOY_TEXTFILE; by default in the
    directory of Debian's prometheus-node-exporter), written whole and renamed into place. Skipped, saying so,
    where that directory does not exist."""
    path = pathlib.Path(TEXTFILE)
    if not path.parent.is_dir():
        print(f"release: no {path.parent}: deploy metrics not written (set INFRA_OBS_DEPLOY_TEXTFILE)", file=sys.stderr)
        return
    write_to_textfile(str(path), deploy_metrics(s3))


def records(inventory: str) -> list[dict]:
    """Every audit record of an inventory, oldest first."""
    checked_path(inventory, "INVENTORY")
    s3 = client()
    prefix = f"{RECORDS}/{inventory.replace('/', '_')}/"
    keys = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        for o in page.get("Contents", [])
    ]
    return sorted((json.loads(read(s3, k)) for k in keys), key=lambda r: (r["start"], r["end"]))


def rollback(inventory: str) -> dict:
    """Deploy the newest tag recorded as a success that is not the newest run's tag, and record it."""
    history = records(inventory)
    if not history:
        raise ReleaseError(f"INVENTORY={inventory}: no deployment recorded, nothing to roll back to")
    newest = history[-1]
    good = [r for r in history if r["result"] == "success" and r["tag"] != newest["tag"]]  # planned ones are not
    if not good:
        raise ReleaseError(f"INVENTORY={inventory}: no successful deployment of a tag other than {newest['tag']}")
    target = good[-1]
    print(f"rollback: {inventory} from {newest['tag']} ({newest['result']}) to {target['tag']}", file=sys.stderr)
    shutil.rmtree(run_dir(), ignore_errors=True)  # a run of its own
    try:
        ansible_run(
            "deploy", target["tag"], inventory, target.get("limit", ""), target.get("playbook") or "playbooks/site.yml"
        )
    finally:
        done = record(inventory)
    return done


def main(argv: list[str]) -> int:
    usage = (
        "usage: release.py package TAG | publish TAG | list | fetch TAG DIR | plan|deploy TAG INVENTORY [LIMIT] "
        "[PLAYBOOK] | verify TAG INVENTORY [LIMIT] [PLAYBOOK] | record INVENTORY [RESULT] | rollback INVENTORY | "
        "is-production INVENTORY"
    )
    try:
        match argv:
            case ["package", tag]:
                print(package(tag))
            case ["publish", tag]:
                print(publish(tag))
            case ["list"]:
                for r in index():
                    print(
                        f"{r['tag']:<24} {r.get('commit', '')[:12]:<12} {r.get('published_at', '-'):<25} "
                        f"{r.get('published_by', '-'):<16} {r['status']}"
                    )
            case ["fetch", tag, dest]:
                fetch(tag, pathlib.Path(dest))
                print(dest)
            case ["plan" | "deploy" | "verify" as stage, tag, inventory, *rest] if len(rest) <= 2:
                ansible_run(stage, tag, inventory, *rest)
            case ["record", inventory, *rest] if len(rest) <= 1:
                print(record(inventory, *rest)["key"])
            case ["is-production", inventory]:
                production = is_production(inventory)
                print(
                    f"{inventory}: {'production: a deployment waits for approval' if production else 'not production'}"
                )
                return 0 if production else NOT_PRODUCTION
            case ["rollback", inventory]:
                print(rollback(inventory)["key"])
            case _:
                print(usage, file=sys.stderr)
                return 2
    except ReleaseError as error:
        print(f"release: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
