"""Verify the MM2 site from outside, as a team would use it: MM2's metrics and the rollback-readiness verdict in
Prometheus (found through Consul), 10,000 keyed records over 6 partitions, a group that read half, the rest
produced, playbooks/mm2_rollback.yml refused while the group has a member on the standby, then run for real, and
the group reading the rest on the standby with nothing lost. A bad team file is refused before MM2 is touched."""

import json
import os
import pathlib
import sys
import time
from types import SimpleNamespace

import pytest
import yaml
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError

PROJECT = pathlib.Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
sys.path[:0] = [str(PROJECT), str(PROJECT / "scripts"), str(PROJECT / "collections")]

from dashboards import queries_without_data_at  # noqa: E402
from labinfo import active_targets, container_ip, molecule_playbook, prometheus_query, wait_for  # noqa: E402

from tests.kafka_mm2.test_mm2_rollback import (  # noqa: E402
    FIRST_PRODUCED,
    GROUP,
    MESSAGES,
    PARTITIONS,
    TOPIC,
    group_consumer,
    produce,
    read_and_commit,
    read_on_target,
)

HOST = "infraobs-mol-mm2"
ROLLBACK_PLAYBOOK = "../../playbooks/mm2_rollback.yml"
DEPLOY_PLAYBOOK = "../../playbooks/mm2_deploy.yml"
TEAM_FILE = pathlib.Path(os.environ["MM2_TEAM_FILE"])
# The lab flow's offset.lag.max: MM2 translates a drained group's offsets at most that many records back.
OFFSET_LAG_MAX = yaml.safe_load(TEAM_FILE.read_text())["flow"]["offset_lag_max"]


@pytest.fixture(scope="module")
def lab():
    address = container_ip(HOST)
    return SimpleNamespace(
        primary=SimpleNamespace(bootstrap=f"{address}:19092"),
        standby=SimpleNamespace(bootstrap=f"{address}:29092"),
        prometheus=f"http://{address}:9090",
        thanos=f"http://{address}:10904",
    )


# The team file's clusters take SCRAM-SHA-512 over TLS (host_vars): the rollback connects as its own user, trusting
# the lab CA that prepare.yml made.
ROLLBACK_USER = dict(
    sasl_mechanism="SCRAM-SHA-512",
    username="rollback",
    password="rollback-lab-secret",
    ssl_cafile=str(pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"], "tls", "ca.pem")),
)


def rollback(*extra):
    connections = json.dumps({"mm2_rollback_connections": {"primary": ROLLBACK_USER, "standby": ROLLBACK_USER}})
    args = ["-e", f"mm2_rollback_src={TEAM_FILE}", "-e", f"mm2_rollback_group={GROUP}", "-e", connections]
    return [*args, *(arg for pair in extra for arg in ("-e", pair))]


def verdict(lab, group):
    return prometheus_query(lab.prometheus, f'infra_obs_mm2_group_can_roll_back{{flow="orders", group="{group}"}}')


@pytest.fixture(scope="module")
def first_read(lab):
    """The first half produced on the primary and read by the group, which commits and stops."""
    admin = KafkaAdminClient(bootstrap_servers=lab.primary.bootstrap)
    try:
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    finally:
        admin.close()
    produce(lab.primary, 0, FIRST_PRODUCED)
    read = read_and_commit(lab.primary, GROUP, FIRST_PRODUCED)
    assert len(read["committed"]) == PARTITIONS, "every partition should hold records"
    return read


def test_mm2_reaches_both_clusters_as_a_scram_user_over_tls_only():
    """MM2's team file names the SCRAM-over-TLS listeners only; they take the right password and refuse another."""
    clusters = yaml.safe_load(TEAM_FILE.read_text())["clusters"]
    assert {alias: c["security"]["protocol"] for alias, c in clusters.items()} == {
        "primary": "SASL_SSL",
        "standby": "SASL_SSL",
    }
    for cluster in clusters.values():
        (bootstrap,) = cluster["bootstrap_servers"]
        secure = dict(bootstrap_servers=bootstrap, security_protocol="SASL_SSL", request_timeout_ms=10000)
        secure.update(
            sasl_mechanism="SCRAM-SHA-512",
            sasl_plain_username=ROLLBACK_USER["username"],
            ssl_cafile=ROLLBACK_USER["ssl_cafile"],
        )
        admin = KafkaAdminClient(sasl_plain_password=ROLLBACK_USER["password"], **secure)
        try:
            assert admin.describe_cluster()["brokers"]
        finally:
            admin.close()
        with pytest.raises(KafkaError):
            KafkaAdminClient(sasl_plain_password="not-it", bootstrap_timeout_ms=10000, **secure).close()


def test_mm2_and_its_readiness_exporter_are_scraped_through_consul(lab):
    def healthy():
        return {
            t["labels"]["job"]
            for t in active_targets(lab.prometheus)
            if t["health"] == "up" and t["labels"]["job"] in ("mm2-orders", "rollback-readiness-orders")
        }

    assert wait_for(lambda: healthy() == {"mm2-orders", "rollback-readiness-orders"}, 90), active_targets(
        lab.prometheus
    )
    running = prometheus_query(lab.prometheus, 'kafka_mm2_connector_status{job="mm2-orders", status="running"}')
    assert {s["metric"]["connector"] for s in running} >= {"MirrorSourceConnector", "MirrorCheckpointConnector"}
    # Both registrations carry the flow's team (mm2_team, host_vars), which the alerts route on.
    teams = {
        (t["labels"]["job"], t["labels"].get("team"))
        for t in active_targets(lab.prometheus)
        if "orders" in t["labels"]["job"]
    }
    assert teams == {("mm2-orders", "payments"), ("rollback-readiness-orders", "payments")}, teams


def test_the_group_could_roll_back_before_anyone_asks(lab, first_read):
    """The scheduled check publishes the verdict: 1 once MM2 has copied the half and the commit translates (by MM2's
    checkpoint, or by the records until MM2 has written one); and MM2 checkpoints the group, which a rollback with
    the source down needs."""
    ready = wait_for(lambda: [s for s in verdict(lab, GROUP) if s["value"][1] == "1"], 180)
    assert ready, verdict(lab, GROUP)
    query = f'infra_obs_mm2_group_checkpoint_age_seconds{{group="{GROUP}"}}'
    assert wait_for(lambda: prometheus_query(lab.prometheus, query), 120), "MM2 never checkpointed the group"


@pytest.fixture(scope="module")
def all_produced(lab, first_read):
    """The rest produced on the primary; nobody reads it there."""
    produce(lab.primary, FIRST_PRODUCED, MESSAGES)


def test_rollback_is_refused_while_the_group_has_a_member_on_the_standby(lab, all_produced):
    member = group_consumer(lab.standby)
    try:
        assert wait_for(lambda: (member.poll(timeout_ms=200), member.assignment())[1], 60)
        run = molecule_playbook(ROLLBACK_PLAYBOOK, *rollback("mm2_rollback_wait=10"), expect_success=False)
    finally:
        member.close()
    (msg,) = run.failures()
    # The gate's own words, first: no "Task failed: Action failed: Unknown error." of an exhausted until loop.
    assert msg.startswith(f"not safe to roll back after 10 s: {GROUP}: "), msg
    assert "active member(s) on the target" in msg, msg
    admin = KafkaAdminClient(bootstrap_servers=lab.standby.bootstrap)
    try:
        assert admin.list_group_offsets(GROUP)[GROUP] == {}, "nothing may be committed on a refusal"
    finally:
        admin.close()


def test_rollback_then_the_group_reads_the_rest_on_the_standby(lab, first_read, all_produced):
    started = time.monotonic()
    run = molecule_playbook(ROLLBACK_PLAYBOOK, *rollback(f"mm2_rollback_max_reread={OFFSET_LAG_MAX}"))
    seconds = time.monotonic() - started
    (applied,) = [
        result
        for play in run.json["plays"]
        for task in play["tasks"]
        if task["task"]["name"].startswith("Apply")
        for result in task["hosts"].values()
    ]
    assert applied["changed"] is True
    again = molecule_playbook(ROLLBACK_PLAYBOOK, *rollback())
    assert again.stats["localhost"]["changed"] == 0, "a second rollback changes nothing"

    # Nothing lost (the set difference is empty) and what is read twice is exactly the plan's rounding.
    rounding = read_on_target(lab, GROUP, first_read, applied["plan"])
    print(f"\nrollback through the playbook: {seconds:.1f} s; records read again per partition: {rounding}")
    # The group was drained; the rest was produced after it stopped, so MM2's checkpoints may have slid back beyond
    # offset.lag.max: those partitions are translated by their records (0 re-reads without duplicates).
    origins = {row["partition"]: (row["origin"], row["reread"]) for row in applied["plan"]}
    print(f"origins and re-reads per partition: {origins}")
    assert {row["partition"]: row["reread"] for row in applied["plan"]} == rounding
    assert max(rounding.values()) <= OFFSET_LAG_MAX


def test_a_bad_team_file_is_refused_before_mm2_is_touched(lab, tmp_path):
    team = yaml.safe_load(TEAM_FILE.read_text())
    team["flow"]["topcs"] = team["flow"].pop("topics")
    team["flow"]["groups"]["include"] = ["orders-(?P<name>.*)"]
    bad = tmp_path / "orders.yml"
    bad.write_text(yaml.safe_dump(team))
    flows = f'{{"mm2_flows": [{{"name": "orders", "src": "{bad}"}}]}}'
    run = molecule_playbook(DEPLOY_PLAYBOOK, "-e", flows, expect_success=False)
    message = "\n".join(run.failures())
    assert f"{bad}: flow.topcs" in message, message
    assert "flow.groups.include" in message and "orders-(?P<name>.*)" in message, message
    assert all(not play["tasks"] or play["play"]["name"].startswith("Preflight") for play in run.json["plays"])
    up = prometheus_query(lab.prometheus, 'up{job="mm2-orders"} == 1')
    assert up, "MM2 keeps running with its last good config"


def test_every_dashboard_query_finds_data_in_prometheus_and_through_thanos_query(lab, all_produced):
    dashboard = PROJECT / "roles/mm2/files/dashboards/mm2.json"

    def empty():
        # Firing alerts: none is expected on a healthy flow.
        return [
            (url, title, query)
            for url, title, query in queries_without_data_at([lab.prometheus, lab.thanos], dashboard, {})
            if title != "Firing MM2 alerts"
        ]

    assert wait_for(lambda: not empty(), 120), empty()
