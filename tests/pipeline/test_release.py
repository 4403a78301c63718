"""Releases against the lab's store (moto's S3 server): packed from a tag alone and byte for byte the same twice,
published once and read back, listed, and fetched with every sum checked, so that a changed object stops a
deployment before anything runs. Each test packs a tag of its own clone of this repository and publishes into a
bucket of its own."""

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tarfile
import time
import uuid

import pytest
import release as rel
import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = pathlib.Path(__file__).resolve().parents[2]
TAG = "v1.0.0"


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A clone of this repository's HEAD with the tag v1.0.0 on it."""
    path = tmp_path_factory.mktemp("release") / "repo"
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "tag", TAG], check=True)
    return path


@pytest.fixture
def release(clone, tmp_path, monkeypatch, store):
    """The release module working on the clone, packing into tmp_path and publishing into a bucket of its own."""
    monkeypatch.setattr(rel, "REPO", clone)
    monkeypatch.setattr(rel, "DIST", tmp_path / "dist")
    monkeypatch.setattr(rel, "BUCKET", f"releases-{uuid.uuid4().hex[:12]}")
    monkeypatch.setattr(rel, "TEXTFILE", str(tmp_path / "infra_obs_deploy.prom"))
    monkeypatch.setenv("BUILD_USER", "alice")
    return rel


def sums(directory: pathlib.Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def commit_time(clone: pathlib.Path) -> int:
    return int(subprocess.check_output(["git", "-C", str(clone), "log", "-1", "--format=%ct", TAG], text=True))


def test_two_packs_of_a_tag_are_byte_identical_and_hold_the_tag_alone(release, clone, tmp_path):
    first = sums(release.package(TAG))
    # A working tree that differs from the tag, and a later second (ansible-galaxy stamps its build time).
    (clone / "playbooks/site.yml").write_text((clone / "playbooks/site.yml").read_text() + "# not committed\n")
    (clone / "playbooks/untracked.yml").write_text("---\n")
    time.sleep(1.1)
    package = release.package(TAG)
    assert sums(package) == first
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["commit"] == subprocess.check_output(["git", "-C", str(clone), "rev-parse", TAG], text=True).strip()
    assert {f["name"]: f["sha256"] for f in manifest["files"]} == {n: s for n, s in first.items() if n != rel.MANIFEST}

    (collection,) = package.glob("infra-obs-[0-9]*.tar.gz")
    with tarfile.open(collection) as tar:
        members = tar.getmembers()
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(commit_time(clone), 0, 0, "", "")}
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {"roles/nginx_whitelist/tasks/main.yml", "plugins/modules/kafka_replication_status.py"} <= {
        m.name for m in members
    }
    with tarfile.open(package / "deploy.tar.gz") as tar:
        names = set(tar.getnames())
        site = tar.extractfile("playbooks/site.yml").read().decode()
    assert {"playbooks/site.yml", "inventories/lab/hosts.yml"} <= names
    assert "playbooks/untracked.yml" not in names and "# not committed" not in site

    # The repacked tarball is still a collection ansible-galaxy installs.
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")
    subprocess.run(
        ["ansible-galaxy", "collection", "install", "--offline", "-p", str(tmp_path / "installed"), str(collection)],
        check=True,
        capture_output=True,
        env={**os.environ, "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg")},
    )
    assert (tmp_path / "installed/ansible_collections/infra/obs/roles/nginx_whitelist/tasks/main.yml").is_file()


def test_publish_reads_back_is_listed_and_is_refused_a_second_time(release, store):
    release.package(TAG)
    assert release.publish(TAG) == f"s3://{release.BUCKET}/releases/{TAG}/"
    (listed,) = release.index()
    assert (listed["tag"], listed["status"], listed["published_by"]) == (TAG, "published", "alice")
    assert listed["commit"] == json.loads((release.DIST / TAG / "manifest.json").read_text())["commit"]

    def stored():
        objects = store.list_objects_v2(Bucket=release.BUCKET, Prefix=f"releases/{TAG}/")["Contents"]
        return {o["Key"]: o["ETag"] for o in objects}

    before = stored()
    assert len(before) == 6  # four files (collection, two wheelhouses, deploy), the manifest and publish.json
    with pytest.raises(rel.ReleaseError, match=f"release {TAG} is in the store already \\(6 objects"):
        release.publish(TAG)
    # The store refuses an overwrite itself, whoever asks.
    with pytest.raises(rel.ReleaseError, match="exists already: a release is never overwritten"):
        release.put_new(store, f"releases/{TAG}/deploy.tar.gz", b"other")
    assert stored() == before


def test_fetch_checks_every_object_and_stops_at_a_changed_one(release, store, tmp_path):
    package = release.package(TAG)
    release.publish(TAG)
    fetched = tmp_path / "fetched"
    release.fetch(TAG, fetched)
    assert sums(fetched) == sums(package)

    # Someone with write access to the bucket replaces an object after the publish.
    key = f"releases/{TAG}/deploy.tar.gz"
    store.put_object(Bucket=release.BUCKET, Key=key, Body=b"tampered")
    with pytest.raises(rel.ReleaseError, match=f"s3://{release.BUCKET}/{key}: sha256 .* after it was published"):
        release.fetch(TAG, tmp_path / "again")
    assert not (tmp_path / "again").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".again")] == []

    # A manifest rewritten to match the changed object is not the one published.
    manifest = json.loads((package / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["name"] == "deploy.tar.gz":
            entry.update(sha256=hashlib.sha256(b"tampered").hexdigest(), size=8)
    store.put_object(Bucket=release.BUCKET, Key=f"releases/{TAG}/manifest.json", Body=json.dumps(manifest).encode())
    with pytest.raises(rel.ReleaseError, match=r"manifest\.json: its sha256 is not the one published"):
        release.fetch(TAG, tmp_path / "again")


def test_a_publish_cut_short_is_listed_incomplete_and_fetches_nothing(release, store, tmp_path):
    release.package(TAG)
    store.create_bucket(Bucket=release.BUCKET)
    store.put_object(
        Bucket=release.BUCKET,
        Key=f"releases/{TAG}/manifest.json",
        Body=(release.DIST / TAG / "manifest.json").read_bytes(),
    )
    assert release.index() == [{"tag": TAG, "status": "incomplete"}]
    with pytest.raises(rel.ReleaseError, match=r"publish\.json: NoSuchKey"):
        release.fetch(TAG, tmp_path / "fetched")


@pytest.mark.parametrize(
    "tag", ["", "../v1", "v1/../x", "-v1", ".v1", "v 1", "v1\n", "v1;rm", "x" * 101, "v\u0661"]
)  # the last: an Arabic-Indic one
def test_a_tag_outside_the_grammar_is_refused(tag):
    with pytest.raises(rel.ReleaseError, match="a tag is 1-100 letters"):
        rel.checked_tag(tag)


@pytest.mark.parametrize(
    "path",
    [
        "",
        "/etc/passwd",
        "../hosts.yml",
        "inventories/../../x",
        "inventories/./lab",
        "inventories//lab",
        "a b",
        "inventories/lab/hosts.yml\n",
        "-i/etc/x",
        "inventories/lab/hosts.yml;id",
        "inventories/$HOME",
        "x/" * 11 + "y",
    ],
)  # the last: eleven segments, one too many
def test_an_inventory_or_playbook_path_leaving_the_release_tree_is_refused(path):
    for name in ("INVENTORY", "PLAYBOOK"):
        with pytest.raises(rel.ReleaseError, match=f"^{name}=.*: a path inside the release"):
            rel.checked_path(path, name)
    assert rel.checked_path("inventories/lab/hosts.yml", "INVENTORY") == "inventories/lab/hosts.yml"


@pytest.mark.parametrize(
    "limit", ["@/etc/passwd", "proxies --become-user=x", "all\n", "a;id", "$(id)", "a/b", "x" * 1001]
)
def test_a_limit_outside_the_host_pattern_grammar_is_refused(limit):
    """@file would read a file of the caller's choosing; spaces would add ansible-playbook options."""
    with pytest.raises(rel.ReleaseError, match=r"^LIMIT=.*: host patterns of letters"):
        rel.checked_limit(limit)
    for good in ("", "proxy-1", "whitelist_proxies:&eu_central_1", "app-euc1-a-[01:02],!app-euc1-a-01", "*.lab"):
        assert rel.checked_limit(good) == good


@pytest.mark.parametrize(
    "chosen", ["", "free", "mitogen_linear ", "linear\nforks = 1", "Linear", "mitogen", "linear'", "l" * 500]
)
def test_a_strategy_outside_the_list_is_refused(chosen, monkeypatch, tmp_path):
    """The value becomes a line of the run's ansible.cfg: a newline would add settings of the caller's choosing."""
    monkeypatch.setenv("INFRA_OBS_DEPLOY_STRATEGY", chosen)
    refused = r"^INFRA_OBS_DEPLOY_STRATEGY=(['\"]).*\1: one of mitogen_linear, linear$"  # the value as repr() quotes it
    with pytest.raises(rel.ReleaseError, match=refused):
        rel.ansible_config(tmp_path, "inventories/lab/hosts.yml")
    assert not (tmp_path / "ansible.cfg").exists()


@pytest.mark.parametrize("chosen", ["mitogen_linear", "linear", None])
def test_the_runs_config_drives_ansible_with_the_chosen_strategy(chosen, monkeypatch, tmp_path):
    """ansible-playbook runs a play under the run's config, its tasks in a Mitogen context unless told otherwise:
    the process a task's command runs under is Mitogen's (its title names it), or Ansible's module wrapper."""
    if chosen:
        monkeypatch.setenv("INFRA_OBS_DEPLOY_STRATEGY", chosen)
    else:
        monkeypatch.delenv("INFRA_OBS_DEPLOY_STRATEGY", raising=False)
    config = rel.ansible_config(tmp_path, "inventories/lab/hosts.yml")
    (tmp_path / "play.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - ansible.builtin.shell: tr '\\0' ' ' < /proc/$PPID/cmdline\n      register: parent\n"
        "    - ansible.builtin.copy:\n        content: '{{ parent.stdout }}'\n        dest: "
        + str(tmp_path / "parent")
        + "\n        mode: '0600'\n"
    )
    command = ["ansible-playbook", "-i", "localhost,", "-c", "local", str(tmp_path / "play.yml")]
    command += ["-e", f"ansible_python_interpreter={sys.executable}"]
    result = subprocess.run(command, env=rel.ansible_env(config), capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    parent = (tmp_path / "parent").read_text()
    if chosen == "linear":
        assert "AnsiballZ_command.py" in parent and "mitogen" not in parent, parent
    else:
        assert "(mitogen:" in parent, parent


LOCAL = {"ansible_connection": "local"}


@pytest.mark.parametrize(
    ("hostvars", "chosen", "refused"),
    [
        ({"ctl": LOCAL, "web-1": {}}, "mitogen_linear", "ctl"),
        ({"b": {"ansible_connection": "ansible.builtin.local"}, "a": LOCAL}, "mitogen_linear", "a, b"),
        ({"ctl": {**LOCAL, "ansible_python_interpreter": "auto_silent"}}, "mitogen_linear", "ctl"),
        ({"ctl": {**LOCAL, "ansible_python_interpreter": "{{ ansible_playbook_python }}"}}, "mitogen_linear", None),
        ({"ctl": LOCAL}, "linear", None),
        ({"web-1": {"ansible_connection": "ssh"}}, "mitogen_linear", None),
    ],
)
def test_a_local_host_needs_its_interpreter_named_under_mitogen(hostvars, chosen, refused):
    if refused:
        with pytest.raises(rel.ReleaseError, match=rf"^INVENTORY=inv: {refused}: ansible_connection=local and no "):
            rel.check_local_interpreters(hostvars, "inv", chosen)
    else:
        rel.check_local_interpreters(hostvars, "inv", chosen)


@pytest.mark.parametrize("interpreter", [None, "{{ ansible_playbook_python }}"])
def test_mitogen_reaches_a_local_host_only_with_its_interpreter_named(interpreter, monkeypatch, tmp_path):
    """What the check above guards against, with the pinned Mitogen and the run's own config: without the variable
    the host is unreachable; with it, the play runs (should a later Mitogen discover it, the check can go)."""
    monkeypatch.delenv("INFRA_OBS_DEPLOY_STRATEGY", raising=False)
    config = rel.ansible_config(tmp_path, "inv.yml")
    host = {**LOCAL, **({"ansible_python_interpreter": interpreter} if interpreter else {})}
    (tmp_path / "inv.yml").write_text(yaml.safe_dump({"all": {"hosts": {"ctl": host}}}))
    (tmp_path / "play.yml").write_text("- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.ping:\n")
    command = ["ansible-playbook", "-i", str(tmp_path / "inv.yml"), str(tmp_path / "play.yml")]
    result = subprocess.run(command, env=rel.ansible_env(config), capture_output=True, text=True, cwd=tmp_path)
    output = result.stdout[-3000:] + result.stderr[-3000:]
    if interpreter:
        assert result.returncode == 0, output
    else:
        assert result.returncode == 4 and "UNREACHABLE" in output and "EOF on stream" in output, output


@pytest.mark.parametrize(
    "value",
    [
        *("0", "0%", "101%", "10 %", "10%;id", "{{ size }}", "1e3", "100000", "-1", "", True, 1.5, None, [1]),
        *("10%\n", "10%'", '"10%"', "1,000", "1" * 500),
        *("\u0661", "\uff11\uff10%"),  # Arabic-Indic one, fullwidth 10%
    ],
)
def test_a_batch_size_outside_the_grammar_is_refused_naming_the_host(value):
    hostvars = {"proxy-1": {}, "proxy-2": {"infra_obs_batch_size": value}}
    with pytest.raises(rel.ReleaseError, match=r"^INVENTORY=inv: host proxy-2: infra_obs_batch_size=.*: a number"):
        rel.batch_size(hostvars, "inv")


def test_one_batch_size_for_the_fleet():
    for value, expected in (("10%", "10%"), ("100%", "100%"), (2, "2"), ("99999", "99999")):
        assert rel.batch_size({"a": {"infra_obs_batch_size": value}, "b": {}}, "inv") == expected
    assert rel.batch_size({"a": {}, "b": {}}, "inv") is None
    with pytest.raises(rel.ReleaseError, match=r"differs between hosts \(10% on a, 2 on b\): one value"):
        rel.batch_size({"a": {"infra_obs_batch_size": "10%"}, "b": {"infra_obs_batch_size": 2}}, "inv")


@pytest.mark.parametrize(("inventory_value", "batches"), [(None, ["1", "1", "1"]), ("100%", ["3"]), ("2", ["2", "1"])])
def test_the_inventorys_batch_size_reaches_serial(inventory_value, batches, tmp_path):
    """Ansible alone ignores infra_obs_batch_size from an inventory for `serial`: the release passes it with -e."""
    tree = tmp_path / "tree"
    (tree / "inv/group_vars/all").mkdir(parents=True)
    (tree / "inv/hosts.yml").write_text(
        f"all:\n  hosts: {{a: {{}}, b: {{}}, c: {{}}}}\n  vars:\n    ansible_connection: local\n"
        f"    ansible_python_interpreter: {sys.executable}\n"
    )
    if inventory_value:
        (tree / "inv/group_vars/all/main.yml").write_text(f"infra_obs_batch_size: '{inventory_value}'\n")
    serial = yaml.safe_load((REPO / "playbooks/whitelist.yml").read_text())[1]["serial"]  # the playbooks' own
    out = tmp_path / "batches"
    (tree / "play.yml").write_text(
        yaml.safe_dump(
            [
                {
                    "hosts": "all",
                    "gather_facts": False,
                    "serial": serial,
                    "tasks": [
                        {
                            "ansible.builtin.shell": f"echo {{{{ ansible_play_batch | length }}}} >> {out}",
                            "run_once": True,
                        }
                    ],
                }
            ]
        )
    )
    config = rel.ansible_config(tmp_path, "inv/hosts.yml")
    batch = rel.batch_size(rel.inventory_hostvars(tree / "inv/hosts.yml", "inv/hosts.yml"), "inv/hosts.yml")
    release = rel.Release("t1", "inv/hosts.yml", "play.yml", tmp_path, tree, config, None, batch)
    rc, _recap = release.playbook_run("play.yml", "")
    assert rc == 0
    assert out.read_text().split() == batches


GOOD = {
    "schema": 1,
    "tag": "v1.0.0",
    "commit": "a" * 40,
    "commit_time": "2026-12-03T21:00:40+00:00",
    "files": [{"name": "deploy.tar.gz", "sha256": "0" * 64, "size": 3}],
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema": 2}, "not a schema 1 manifest"),
        ({"tag": "../x"}, "key tag: '../x'"),
        ({"commit": "HEAD"}, "key commit: 'HEAD'"),
        ({"commit_time": "yesterday"}, "key commit_time: 'yesterday'"),
        ({"files": []}, "key files: a list"),
        ({"files": [{"name": "../etc/passwd", "sha256": "0" * 64, "size": 1}]}, "'../etc/passwd' is not a plain"),
        ({"files": [{"name": "a/b", "sha256": "0" * 64, "size": 1}]}, "'a/b' is not a plain"),
        ({"files": [{"name": ".hidden", "sha256": "0" * 64, "size": 1}]}, "'.hidden' is not a plain"),
        ({"files": [{"name": "publish.json", "sha256": "0" * 64, "size": 1}]}, "'publish.json' is not a plain"),
        ({"files": [{"name": "x", "sha256": "A" * 64, "size": 1}]}, r"files\[x\].sha256: 'AAA"),
        ({"files": [{"name": "x", "sha256": "0" * 64, "size": "1"}]}, r"files\[x\].size: '1'"),
        ({"files": [{"name": "x", "sha256": "0" * 64, "size": True}]}, r"files\[x\].size: True"),
        ({"files": [{"name": "x", "sha256": "0" * 64, "size": -1}]}, r"files\[x\].size: -1"),
        ({"files": [{"name": "x", "sha256": "0" * 64, "size": 1}] * 2}, "x is listed twice"),
    ],
)
def test_a_hostile_manifest_is_refused_naming_the_key(change, message):
    with pytest.raises(rel.ReleaseError, match=f"^s3://b/m: .*{message}"):
        rel.Manifest.parse(json.dumps({**GOOD, **change}).encode(), "s3://b/m")
    with pytest.raises(rel.ReleaseError, match=r"^s3://b/m: not JSON"):
        rel.Manifest.parse(b"{", "s3://b/m")


def test_the_command_line_names_what_is_missing(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts/release.py"), "publish", "v0.0.0-never-packed"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "release: error: " in result.stderr and "dist/v0.0.0-never-packed/manifest.json: no package" in result.stderr
    usage = subprocess.run([sys.executable, str(REPO / "scripts/release.py")], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage:" in usage.stderr


def stage(release, name, result, tag=TAG, **more):
    release.run_dir().mkdir(parents=True, exist_ok=True)
    document = {"stage": name, "tag": tag, "inventory": "inventories/lab/hosts.yml", "result": result, **more}
    document.setdefault("start", "2026-12-03T10:00:00+00:00")
    (release.run_dir() / f"{name}.json").write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("stages", "given", "recorded"),
    [
        ({"plan": "success", "deploy": "success"}, "", "success"),
        ({"plan": "success"}, "", "planned"),  # CHECK_ONLY: nothing was deployed
        ({"plan": "success"}, "success", "planned"),
        ({"plan": "success", "deploy": "failed"}, "", "failed"),
        ({"deploy": "success", "verify": "unavailable"}, "", "failed"),
        ({"deploy": "success"}, "aborted", "aborted"),
    ],
)
def test_the_record_says_what_the_stages_did(release, stages, given, recorded):
    for name, result in stages.items():
        stage(release, name, result, hosts={"h1": {"changed": 1, "failures": 0}})
    document = release.record("inventories/lab/hosts.yml", given)
    assert (document["result"], document["who"], document["tag"]) == (recorded, "alice", TAG)
    assert document["stages"] == stages
    assert document["hosts"] == {"h1": {"changed": 1, "failures": 0}}
    assert not release.run_dir().exists()  # the next run starts clean
    with pytest.raises(rel.ReleaseError, match=r"no plan, deploy or verify of INVENTORY=inventories/lab/hosts\.yml"):
        release.record("inventories/lab/hosts.yml")
    with pytest.raises(rel.ReleaseError, match="RESULT='maybe'"):
        release.record("inventories/lab/hosts.yml", "maybe")
    # Results left by a run that was never recorded are not mixed into the next one's record.
    stage(release, "plan", "success", tag="v7")
    stage(release, "deploy", "success", tag="v8")
    with pytest.raises(rel.ReleaseError, match=r"results of more than one run \(v7, v8\)"):
        release.record("inventories/lab/hosts.yml")


def test_rollback_returns_to_the_newest_deployed_tag_before_the_newest_run(release, monkeypatch):
    history = [("v1", {"deploy": "success"}, ""), ("v2", {"deploy": "success"}, ""), ("v3", {"plan": "success"}, "")]
    history += [("v4", {"deploy": "failed"}, "")]
    for hour, (tag, stages, given) in enumerate(history):
        for name, result in stages.items():
            stage(release, name, result, tag=tag, start=f"2026-12-03T1{hour}:00:00+00:00")
        release.record("inventories/lab/hosts.yml", given)
    deployed = []

    def ansible_run(name, tag, inventory, limit, playbook):
        deployed.append((name, tag, inventory))
        stage(release, name, "success", tag=tag, start="2026-12-03T18:00:00+00:00")

    # What node_exporter's textfile collector hands Prometheus: the newest run (v4, failed; v3 was a plan alone)
    # and the newest success.
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(pathlib.Path(release.TEXTFILE).read_text())
        for s in family.samples
    }
    inventory = ("inventory", "inventories/lab/hosts.yml")
    assert samples[("infra_obs_deploy_last_run_success", (inventory, ("tag", "v4")))] == 0
    assert ("infra_obs_deploy_last_run_timestamp_seconds", (inventory, ("result", "failed"), ("tag", "v4"))) in samples
    assert [k[1] for k in samples if k[0] == "infra_obs_deploy_last_success_timestamp_seconds"] == [
        (inventory, ("tag", "v2"))
    ]

    monkeypatch.setattr(release, "ansible_run", ansible_run)
    assert release.rollback("inventories/lab/hosts.yml")["tag"] == "v2"  # v3 was only planned, v4 failed
    assert 'infra_obs_deploy_last_run_success{inventory="inventories/lab/hosts.yml",tag="v2"} 1.0' in (
        pathlib.Path(release.TEXTFILE).read_text()
    )
    assert deployed == [("deploy", "v2", "inventories/lab/hosts.yml")]
    # Rolled back to v2, the next rollback goes to v1.
    assert release.rollback("inventories/lab/hosts.yml")["tag"] == "v1"
    with pytest.raises(rel.ReleaseError, match="no deployment recorded"):
        release.rollback("inventories/other/hosts.yml")


def test_a_release_whose_tree_leaves_its_directory_is_refused_and_recorded(release, tmp_path):
    """Sums prove what was published, not that it is safe: a link out of the tree in deploy.tar.gz (a hostile
    publisher's) stops the deploy before Ansible runs, and the run's result says why."""
    package = release.package(TAG)
    link = tarfile.TarInfo("inventories/lab/hosts.yml")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hostile = release.deterministic_tgz([(link, None)], 0)
    (package / "deploy.tar.gz").write_bytes(hostile)
    manifest = json.loads((package / "manifest.json").read_text())
    for entry in manifest["files"]:
        if entry["name"] == "deploy.tar.gz":
            entry.update(sha256=hashlib.sha256(hostile).hexdigest(), size=len(hostile))
    (package / "manifest.json").write_text(json.dumps(manifest))
    release.publish(TAG)
    refused = r"deploy of v1\.0\.0 on inventories/lab/hosts\.yml failed: release v1\.0\.0: deploy\.tar\.gz: "
    with pytest.raises(rel.ReleaseError, match=refused):
        release.ansible_run("deploy", TAG, "inventories/lab/hosts.yml")
    result = json.loads((release.run_dir() / "deploy.json").read_text())
    assert result["result"] == "failed" and "is a link to an absolute path" in result["error"], result
