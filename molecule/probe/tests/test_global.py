"""Verify the global view as deployed (playbooks/global.yml): on the Prometheus host a Thanos sidecar beside
Prometheus (which cuts 2-hour blocks for it), a store gateway, the compactor and query, each registered in Consul and
scraped; query answers what Prometheus holds; and an hour of history backfilled into
Prometheus goes through the sidecar into the bucket (the lab's AWS at the network's gateway), from which the store
gateway answers with Prometheus stopped."""

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
import requests

PROJECT = pathlib.Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
sys.path.insert(0, str(PROJECT / "scripts"))

import lab_aws  # noqa: E402
from labinfo import active_targets, container_ip, prometheus_query, wait_for  # noqa: E402

PROM = "infraobs-mol-probe-prom"
TIMEOUT = 240
JOBS = {"thanos-sidecar", "thanos-store", "thanos-compact", "thanos-query"}
# The backfilled hour: 9 days ago, older than the cost system's 7-day history (test_cost.py), so its block overlaps
# no other and the compactor has nothing to refuse.
HOURS_AGO = 9 * 24


def on(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", "exec", PROM, "sh", "-c", command], capture_output=True, text=True, check=True)


@pytest.fixture(scope="module")
def prometheus():
    return f"http://{container_ip(PROM)}:9090"


@pytest.fixture(scope="module")
def query():
    return f"http://{container_ip(PROM)}:10904"


def thanos_query(url: str, promql: str, at: float, dedup: bool = True) -> list[dict]:
    params = {"query": promql, "time": at, "dedup": str(dedup).lower()}
    reply = requests.get(url + "/api/v1/query", params=params, timeout=30).json()
    return reply["data"]["result"] if reply.get("status") == "success" else []


def test_every_component_is_registered_in_consul_and_scraped(prometheus):
    def scraped():
        return {t["labels"]["job"] for t in active_targets(prometheus) if t["health"] == "up"} >= JOBS

    assert wait_for(scraped, TIMEOUT), [t for t in active_targets(prometheus) if t["labels"]["job"] in JOBS]
    # Prometheus cuts the blocks as the sidecar needs them.
    flags = requests.get(prometheus + "/api/v1/status/flags", timeout=30).json()["data"]
    assert flags["storage.tsdb.min-block-duration"] == flags["storage.tsdb.max-block-duration"] == "2h"


def test_query_answers_what_prometheus_holds(prometheus, query):
    def answered():
        now = time.time()
        direct = prometheus_query(prometheus, 'count(up{job="node-exporter"})')
        through = thanos_query(query, 'up{job="node-exporter"}', now)
        return direct and len(through) == int(direct[0]["value"][1]) and through

    found = wait_for(answered, TIMEOUT)
    assert found, thanos_query(query, 'up{job="node-exporter"}', time.time())
    assert {s["metric"]["instance"] for s in found} == {
        s["metric"]["instance"] for s in prometheus_query(prometheus, 'up{job="node-exporter"}')
    }


@pytest.fixture(scope="module")
def backfilled(prometheus, tmp_path_factory):
    """An hour of a series of our own, made into a TSDB block on the controller and copied into the host's
    Prometheus data directory, where Prometheus loads it and the sidecar uploads it."""
    work = tmp_path_factory.mktemp("global")
    start = int(time.time()) - HOURS_AGO * 3600
    lines = ["# TYPE infra_obs_global_history gauge"]
    lines += [f'infra_obs_global_history{{site="lab"}} 7 {t}' for t in range(start, start + 3600, 60)]
    (work / "history.om").write_text("\n".join([*lines, "# EOF", ""]))
    made = lab_aws.backfill(work / "history.om", work / "blocks")
    for meta in made:
        subprocess.run(["podman", "cp", str(work / "blocks" / meta["ulid"]), f"{PROM}:/var/lib/prometheus/"],
                       check=True)  # fmt: skip
    on("chown -R prometheus:prometheus /var/lib/prometheus")
    return start + 1800, [meta["ulid"] for meta in made]


def test_a_backfilled_block_reaches_the_bucket_and_is_answered_from_it_with_prometheus_stopped(query, backfilled):
    at, blocks = backfilled

    def uploaded():
        state = on("cat /var/lib/prometheus/thanos.shipper.json 2>/dev/null || echo '{}'").stdout
        return set(blocks) <= set(json.loads(state).get("uploaded", []))

    assert wait_for(uploaded, TIMEOUT), on("journalctl -u thanos-sidecar --no-pager -n 30").stdout
    # With Prometheus stopped its sidecar answers nothing: what query returns is the store gateway's, once its next
    # look at the bucket (thanos_store_sync_interval: 30 s in the lab) has found the block.
    on("systemctl stop prometheus")
    try:
        found = wait_for(lambda: thanos_query(query, "infra_obs_global_history", at), TIMEOUT)
    finally:
        on("systemctl start prometheus")
    assert [s["value"][1] for s in found] == ["7"], found
    # The series had no placement: it carries the Prometheus host's region, its external label (how the global view
    # tells servers apart); its other one, the replica, is what query deduplicates on, so it is gone...
    assert found[0]["metric"] == {"__name__": "infra_obs_global_history", "site": "lab", "region": "eu-central-1"}
    # ...and there without deduplication: the Prometheus host.
    raw = thanos_query(query, "infra_obs_global_history", at, dedup=False)
    assert [s["metric"].get("replica") for s in raw] == [PROM], raw
    # Prometheus is back for the tests after this one.
    assert wait_for(prometheus_ready, TIMEOUT), "Prometheus is not ready again"


def prometheus_ready() -> bool:
    try:
        return requests.get(f"http://{container_ip(PROM)}:9090/-/ready", timeout=10).ok
    except requests.RequestException:
        return False
