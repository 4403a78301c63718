"""The delivery pipeline end to end against this scenario's proxy, as a team ships a whitelist change: the change
is committed and tagged in a repository of its own (this project's files, and an inventory that reaches the proxy
over the network: its sshd, the user `deploy` with the pipeline's key, sudo), then packed, published to the store,
planned, deployed from the fetched release and recorded, through the make targets the Jenkinsfile calls. A changed
object in the store stops a deployment before any host changes; a release that fails mid-rollout is recorded as
failed, and `make rollback` restores the last good tag."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import uuid
from datetime import datetime

import boto3
import pytest
import testinfra
import yaml

PROJECT = pathlib.Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
EPHEMERAL = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
sys.path.insert(0, str(PROJECT / "scripts"))

from dashboards import DEPLOYMENTS, annotation_queries, instantiate  # noqa: E402
from labinfo import (  # noqa: E402
    container_ip,
    git_as_alice,
    molecule_playbook,
    project_repository,
    prometheus_query,
    record_host_keys,
    wait_for,
)

CACHE = pathlib.Path(os.environ.get("INFRA_OBS_CACHE", "/var/cache/infra-obs"))
STORE = f"http://127.0.0.1:{os.environ.get('INFRA_OBS_STORE_PORT', '19000')}"
PROXY = "infraobs-mol-wl-proxy"
CLIENT_B = "infraobs-mol-wl-client-b"  # has the deploy user, without sudo
INVENTORY = "inventories/pipeline/hosts.yml"
PLAYBOOK = "playbooks/whitelist.yml"
BUCKET = f"pipeline-{uuid.uuid4().hex[:12]}"
# Through the store's S3 API as another store would be reached (credentials from the environment).
ENV = {
    **os.environ,
    "INFRA_OBS_RELEASE_ENDPOINT": STORE,
    "INFRA_OBS_RELEASE_BUCKET": BUCKET,
    "AWS_ACCESS_KEY_ID": "lab",
    "AWS_SECRET_ACCESS_KEY": "lab",
    "AWS_DEFAULT_REGION": "us-east-1",
    "BUILD_USER": "alice",
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """This project in a git repository of its own, with an inventory of the proxy reached over SSH."""
    root = project_repository(tmp_path_factory.mktemp("pipeline") / "repo")
    inventory = root / INVENTORY
    (inventory.parent / "group_vars").mkdir(parents=True)
    shutil.copytree(PROJECT / "inventories/lab/group_vars/all", inventory.parent / "group_vars/all")
    shutil.copytree(
        PROJECT / "inventories/lab/group_vars/whitelist_proxies", inventory.parent / "group_vars/whitelist_proxies"
    )
    (inventory.parent / "whitelists").mkdir()
    ENV["INFRA_OBS_DEPLOY_TEXTFILE"] = str(root.parent / "infra_obs_deploy.prom")
    return root


def write_inventory(root, proxies, checkers=()):
    """The inventory of these hosts, whose keys go into its known_hosts first, as a fleet's provisioning records
    them: the pipeline checks host keys strictly."""
    known_hosts = root.parent / "known_hosts"
    record_host_keys(known_hosts, [*proxies, *checkers])

    def hosts(names):
        return {
            name: {"ansible_host": container_ip(name), "region": "eu-central-1", "az": "eu-central-1a"}
            for name in names
        }

    document = {
        "all": {
            "vars": {
                "ansible_connection": "ansible.builtin.ssh",
                "ansible_user": "deploy",
                "ansible_ssh_private_key_file": str(CACHE / "ssh/deploy_ed25519"),
                "ansible_ssh_common_args": f"-o UserKnownHostsFile={known_hosts}",
                "ansible_python_interpreter": "/usr/bin/python3",
                # One proxy at a time: a failed batch stops the rollout (the pipeline passes it to `serial`).
                "infra_obs_batch_size": 1,
            },
            "children": {
                "whitelist_proxies": {"hosts": hosts(proxies)},
                "quality_checkers": {"hosts": hosts(checkers)},
            },
        }
    }
    (root / INVENTORY).write_text(yaml.safe_dump(document, sort_keys=False))


def tag(root, name, whitelist, proxies=(PROXY,), checkers=()):
    """Commit the whitelist and the inventory of these proxies (and quality checkers), and tag the commit."""
    write_inventory(root, proxies, checkers)
    (root / INVENTORY).parent.joinpath("whitelists/teams.yml").write_text(whitelist)
    git_as_alice(root, "add", "-A")
    git_as_alice(root, "commit", "-q", "--allow-empty", "-m", f"whitelist for {name}")
    git_as_alice(root, "tag", name)


def make(root, *targets, expect=0, **variables):
    arguments = [f"{k}={v}" for k, v in {"INVENTORY": INVENTORY, "PLAYBOOK": PLAYBOOK, **variables}.items()]
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(root), *targets, *arguments], env=ENV, capture_output=True, text=True
    )
    assert result.returncode == expect, result.stdout[-4000:] + result.stderr[-3000:]
    return result


def scenario_whitelist(*extra_vars):
    """The scenario's own whitelist (write_whitelist.yml), with these variables, as text."""
    molecule_playbook("write_whitelist.yml", *[arg for pair in extra_vars for arg in ("-e", pair)])
    return (EPHEMERAL / "whitelist/teams.yml").read_text()


@pytest.fixture(scope="module")
def clients():
    inventory = EPHEMERAL / "inventory"
    return {
        name: testinfra.get_host(f"ansible://infraobs-mol-wl-{name}?ansible_inventory={inventory}")
        for name in ("client-a", "client-b")
    }


def statuses(clients):
    proxy = container_ip(PROXY)
    return {
        name: host.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' http://{proxy}:8080/")
        for name, host in clients.items()
    }


def scraped(query):
    """The deploy metrics `make record` wrote, handed to the proxy's node_exporter (the lab's stand-in for the
    Jenkins agent's), and what the proxy's Prometheus answers to query once it has them (or [] after 2 min)."""
    textfile = ENV["INFRA_OBS_DEPLOY_TEXTFILE"]
    subprocess.run(["podman", "cp", textfile, f"{PROXY}:/var/lib/prometheus/node-exporter/"], check=True)
    prometheus = f"http://{container_ip(PROXY)}:9090"
    return wait_for(lambda: prometheus_query(prometheus, query), 120) or []


def annotated_deployments(prometheus):
    """What the dashboards' deployment annotation marks: (tag, result, time in ms) per series."""
    dashboard = json.loads((PROJECT / "roles/nginx_whitelist/files/dashboards/nginx_whitelist.json").read_text())
    annotation = next(a for a in annotation_queries(dashboard) if a["name"] == DEPLOYMENTS)
    events = prometheus_query(prometheus, instantiate(annotation["expr"], {}))
    return {(e["metric"]["tag"], e["metric"]["result"], float(e["value"][1])) for e in events}


def records(store):
    objects = store.list_objects_v2(Bucket=BUCKET, Prefix="records/")["Contents"]
    found = [json.loads(store.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()) for o in objects]
    return sorted(found, key=lambda r: r["start"])


def test_a_tagged_whitelist_change_goes_live_over_ssh_and_every_run_is_recorded(repo, clients):
    store = boto3.client(
        "s3", endpoint_url=STORE, region_name="us-east-1", aws_access_key_id="lab", aws_secret_access_key="lab"
    )
    client_b = container_ip(CLIENT_B)
    try:
        # v1: the scenario's rules (client-a in, client-b out, live since converge), published; once only.
        tag(repo, "v1", scenario_whitelist())
        make(repo, "package", "publish", TAG="v1")
        assert statuses(clients) == {"client-a": "200", "client-b": "403"}
        refused = make(repo, "publish", TAG="v1", expect=2)
        assert "release v1 is in the store already" in refused.stderr

        # v2: the everyday change, client-b allowed: planned, deployed, live.
        tag(repo, "v2", scenario_whitelist(f"extra_allowed={client_b}"))
        make(repo, "package", "publish", "plan", "deploy", TAG="v2")
        make(repo, "record")
        assert statuses(clients) == {"client-a": "200", "client-b": "200"}
        v2 = records(store)[-1]
        assert (v2["tag"], v2["result"], v2["who"], v2["inventory"], v2["batch"]) == (
            "v2",
            "success",
            "alice",
            INVENTORY,
            "1",
        )
        assert v2["hosts"][PROXY]["changed"] > 0 and v2["hosts"][PROXY]["failures"] == 0
        assert v2["plan"][PROXY]["tasks"], v2["plan"]
        assert v2["commit"] == subprocess.check_output(["git", "-C", str(repo), "rev-parse", "v2"], text=True).strip()

        # v2x: an object changed in the store after its publish stops the deploy before any host changes.
        tag(repo, "v2x", scenario_whitelist())
        make(repo, "package", "publish", TAG="v2x")
        v1_deploy = store.get_object(Bucket=BUCKET, Key="releases/v1/deploy.tar.gz")["Body"].read()
        store.put_object(Bucket=BUCKET, Key="releases/v2x/deploy.tar.gz", Body=v1_deploy)
        stopped = make(repo, "deploy", TAG="v2x", expect=2)
        assert "releases/v2x/deploy.tar.gz: sha256" in stopped.stderr and "after it was published" in stopped.stderr
        make(repo, "record", RESULT="failed")
        assert statuses(clients) == {"client-a": "200", "client-b": "200"}
        assert "after it was published" in records(store)[-1]["errors"]["deploy"]

        # v3: a bad change (client-a dropped) that also names client-b as a proxy, where the deploy user has no
        # sudo: the proxy takes v3 in the first batch, client-b fails the second, and the rollout stops.
        tag(
            repo,
            "v3",
            scenario_whitelist(f"extra_allowed={client_b}").replace(
                container_ip("infraobs-mol-wl-client-a"), "192.0.2.1"
            ),
            proxies=(PROXY, CLIENT_B),
        )
        make(repo, "package", "publish", "deploy", TAG="v3", expect=2)
        make(repo, "record")
        v3 = records(store)[-1]
        assert (v3["tag"], v3["result"]) == ("v3", "failed")
        assert v3["hosts"][CLIENT_B]["failures"] > 0 and v3["hosts"][PROXY]["failures"] == 0
        assert statuses(clients) == {"client-a": "403", "client-b": "200"}
        failed = f'ALERTS{{alertname="InfraObsDeployFailed", alertstate="firing", inventory="{INVENTORY}", tag="v3"}}'
        assert scraped(failed), "the failed deploy did not alert"

        # One command brings back the last good tag.
        make(repo, "rollback")
        back = records(store)[-1]
        assert (back["tag"], back["result"]) == ("v2", "success")
        assert statuses(clients) == {"client-a": "200", "client-b": "200"}
        assert scraped(f'infra_obs_deploy_last_run_success{{inventory="{INVENTORY}", tag="v2"}} == 1')
        prometheus = f"http://{container_ip(PROXY)}:9090"
        # The dashboards' deployment annotation shows the rollback, at the time its run ended.
        assert ("v2", "success", datetime.fromisoformat(back["end"]).timestamp() * 1000) in annotated_deployments(
            prometheus
        ), back["end"]
        assert wait_for(lambda: not prometheus_query(prometheus, failed), 120), "the alert outlived the rollback"
        listed = make(repo, "releases").stdout
        assert all(f"{t} " in listed for t in ("v1", "v2", "v2x", "v3")), listed
    finally:
        # The scenario's own rules again, for the tests after this one.
        scenario_whitelist()
        molecule_playbook("../../playbooks/whitelist.yml")
    assert statuses(clients) == {"client-a": "200", "client-b": "403"}
