"""The rollback readiness exporter (roles/mm2/files/mm2_readiness.py) as it runs in the MM2 image: plain python3
without site-packages or Ansible, kafka-python and prometheus_client on PYTHONPATH and module_utils/kafka_mm2.py
beside it as kafka_mm2. Against real Kafka and MirrorMaker 2 (test_mm2_rollback's Lab, reading the same rendered
mm2.properties MM2 runs with): a drained group with MM2 caught up can roll back, one with a member on the target
cannot, the topic lag is exact while MM2 is stopped, and with the source down the check fails while the process keeps
serving. The properties parsing is tested on renderings of the lab's team file (PLAINTEXT, failback, SASL_SSL).
"""

import importlib.util
import json
import os
import pathlib
import shutil
import signal
import struct
import subprocess
import sys
import time
import urllib.request

import kafka
import prometheus_client
import pytest
import yaml
from ansible_collections.infra.obs.plugins.module_utils import kafka_mm2
from ansible_collections.infra.obs.plugins.plugin_utils import mm2
from prometheus_client.parser import text_string_to_metric_families

from .kafka_lab import REPO, free_port
from .test_mm2_rollback import (
    GROUP,
    PARTITIONS,
    TOPIC,
    Lab,
    group_consumer,
    produce,
    read_and_commit,
    wait_for,
)

EXPORTER = REPO / "roles" / "mm2" / "files" / "mm2_readiness.py"
MODULE_UTILS = REPO / "collections" / "ansible_collections" / "infra" / "obs" / "plugins" / "module_utils"
TEAM_FILE = REPO / "inventories" / "lab" / "mm2" / "orders.yml"
RECORDS = 600
LATE = 40  # produced while MM2 is stopped
FLOW = dict(flow="orders", source="primary", target="standby")
OUTSIDER = "billing-app"  # outside the flow's groups (orders-.*)


def load_exporter():
    """mm2_readiness imported from its file (kafka_mm2 then comes from the collection, as in the repository)."""
    spec = importlib.util.spec_from_file_location("mm2_readiness", EXPORTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


readiness = load_exporter()


def render(team, secrets=None):
    return mm2.render_properties(mm2.load([("orders.yml", team)]), secrets or {})


def lab_team():
    return yaml.safe_load(TEAM_FILE.read_text())


# --- mm2.properties, no Kafka ---------------------------------------------------------------------------------------


def test_the_lab_flow_is_one_direction_with_its_filters_policy_and_connections():
    (direction,) = readiness.directions(readiness.parse_properties(render(lab_team())))
    assert (direction.source, direction.target, direction.policy, direction.separator) == (
        "primary",
        "standby",
        "identity",
        ".",
    )
    assert direction.checkpoints_topic is None  # kafka_mm2 derives primary.checkpoints.internal
    assert direction.topics.include == [r"orders\..*"]
    assert [
        t
        for t in ("orders.events", "orders.scratch.x", "orders.x.internal", "ordersX", "billing")
        if direction.topics(t)
    ] == ["orders.events"]
    assert direction.groups.exclude == ["console-consumer-.*", "connect-.*", "__.*"]
    assert [g for g in ("orders-app", "orders-", "x-orders-app", "billing-app", "orders") if direction.groups(g)] == [
        "orders-app",
        "orders-",
    ]
    clusters = lab_team()["clusters"]
    assert kafka_mm2.client_config(direction.source_connection) == dict(
        bootstrap_servers=clusters["primary"]["bootstrap_servers"],
        security_protocol="PLAINTEXT",
        request_timeout_ms=30000,
    )
    assert direction.target_connection["bootstrap_servers"] == clusters["standby"]["bootstrap_servers"]
    params = direction.params(
        ["orders.events"], ["orders-app"], readiness.arguments(["--properties", "p", "--flow", "f"])
    )
    names = ("source_alias", "replication_policy", "topics", "groups", "max_lag")
    names += ("emit_heartbeats_seconds", "emit_checkpoints_seconds", "max_mm2_silence")
    assert {k: params[k] for k in names} == dict(
        source_alias="primary",
        replication_policy="identity",
        topics=["orders.events"],
        groups=["orders-app"],
        max_lag=100,
        # The team file's checkpoint interval, MM2's default for heartbeats: MM2 is down after 15 s of silence.
        emit_heartbeats_seconds=1,
        emit_checkpoints_seconds=5,
        max_mm2_silence=None,
    )
    assert kafka_mm2.max_silence(params) == 15
    assert kafka_mm2.checkpoints_topic(params) == "primary.checkpoints.internal"


def test_a_topic_whose_replication_is_unproven_has_no_lag_series():
    """One partition of orders.b is not provable by its records (lag None): the topic's lag is unknown, not the
    sum of the others."""
    (direction,) = readiness.directions(readiness.parse_properties(render(lab_team())))
    rows = [("orders.a", 0, 3), ("orders.a", 1, 4), ("orders.b", 0, 5), ("orders.b", 1, None)]
    status = dict(
        topics=["orders.a", "orders.b"],
        groups={},
        mm2=dict(alive=True, heartbeat_age_seconds=0.5, max_silence_seconds=15, reason=None),
        partitions=[dict(topic=t, partition=p, lag=lag) for t, p, lag in rows],
    )
    assert readiness.summary(direction, status)["topic_lag"] == {"orders.a": 7}


def test_failback_checks_the_reverse_direction_only():
    team = lab_team()
    team["flow"]["failback"] = {"enabled": True}
    (direction,) = readiness.directions(readiness.parse_properties(render(team)))
    assert (direction.source, direction.target) == ("standby", "primary")
    assert direction.source_connection["bootstrap_servers"] == team["clusters"]["standby"]["bootstrap_servers"]


def test_prefixed_policy_and_both_directions():
    team = lab_team()
    team["flow"].update(replication_policy="prefixed", separator="_", failback={"enabled": True, "keep_forward": True})
    directions = readiness.directions(readiness.parse_properties(render(team)))
    assert [(d.source, d.target, d.policy, d.separator) for d in directions] == [
        ("primary", "standby", "prefixed", "_"),
        ("standby", "primary", "prefixed", "_"),
    ]
    assert directions[0].is_heartbeats("standby_heartbeats") and not directions[0].is_heartbeats("orders.events")


def test_sasl_ssl_gives_kafka_python_the_scram_login_and_pem_stores_only():
    team = lab_team()
    password = 'p"a\\ss wörd$1'  # every escaping layer: JAAS quotes, properties backslashes, \\u escapes
    team["clusters"]["standby"]["security"] = {
        "protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "username": "mm2-orders",
        "password_var": "standby_password",
        "truststore": "/etc/infra-obs-mm2/truststore.p12",
    }
    text = render(team, {"standby_password": password})
    (direction,) = readiness.directions(readiness.parse_properties(text))
    assert kafka_mm2.client_config(direction.target_connection) == dict(
        bootstrap_servers=team["clusters"]["standby"]["bootstrap_servers"],
        security_protocol="SASL_SSL",
        request_timeout_ms=30000,
        sasl_mechanism="SCRAM-SHA-512",
        sasl_plain_username="mm2-orders",
        sasl_plain_password=password,
        ssl_check_hostname=True,
    )
    # A PKCS12 truststore is for Java: Python's ssl cannot read it, so the system's CAs (said once at start) ...
    assert direction.warnings == [
        "standby: ssl.truststore.location /etc/infra-obs-mm2/truststore.p12 is not PEM, which Python cannot read: "
        "using the system's CA certificates (or --ssl-cafile)"
    ]
    # ... unless --ssl-cafile names a PEM bundle, or the truststore is PEM.
    (direction,) = readiness.directions(readiness.parse_properties(text), ssl_cafile="/etc/ssl/ca.pem")
    assert kafka_mm2.client_config(direction.target_connection)["ssl_cafile"] == "/etc/ssl/ca.pem"
    pem = readiness.parse_properties(text + "standby.ssl.truststore.type = PEM\n")
    (direction,) = readiness.directions(pem)
    assert direction.target_connection["ssl_cafile"] == "/etc/infra-obs-mm2/truststore.p12"
    assert direction.warnings == []
    assert readiness.mask(f"refused {password}!", direction.secrets) == "refused ********!"


def test_java_properties_escapes_continuations_and_separators():
    text = "# c\n! c\na.b = x\\\n    y\nc:d\ne f\\u00e9\\\\\n  g\\=h = 1\\t\nempty\n"
    assert readiness.parse_properties(text) == {"a.b": "xy", "c": "d", "e": "fé\\", "g=h": "1\t", "empty": ""}


@pytest.mark.parametrize(
    "value",
    ["0", "-5", "abc", "1.5", "1; rm -rf /", "1\\n2", "\uff11", "\u0661", "{1}", '"1"', "9" * 10, "9" * 4000],
)
def test_an_emit_interval_outside_whole_seconds_is_refused_naming_it(value):
    text = render(lab_team()) + f"\nemit.checkpoints.interval.seconds = {value}\n"
    with pytest.raises(readiness.PropertiesError) as refused:
        readiness.directions(readiness.parse_properties(text))
    assert str(refused.value).startswith("emit.checkpoints.interval.seconds ")
    assert "expected a whole number of seconds from 1 to 999999999" in str(refused.value)


def test_no_enabled_direction_or_unknown_policy_is_an_error():
    text = render(lab_team())
    with pytest.raises(readiness.PropertiesError, match="no replication direction is enabled"):
        readiness.directions(
            readiness.parse_properties(text.replace("standby.enabled = true", "standby.enabled = false"))
        )
    with pytest.raises(readiness.PropertiesError, match="only the identity and default policies"):
        readiness.directions(readiness.parse_properties(text.replace("IdentityReplicationPolicy", "MyPolicy")))


# --- against real Kafka and MM2 -------------------------------------------------------------------------------------


def image_dir(base: pathlib.Path) -> pathlib.Path:
    """What the MM2 image holds: the exporter, kafka_mm2.py beside it, kafka-python and prometheus_client."""
    image = base / "image"
    image.mkdir()
    shutil.copy(EXPORTER, image / "mm2_readiness.py")
    shutil.copy(MODULE_UTILS / "kafka_mm2.py", image / "kafka_mm2.py")
    for package in (kafka, prometheus_client):
        source = pathlib.Path(package.__file__).parent
        shutil.copytree(source, image / source.name, ignore=shutil.ignore_patterns("__pycache__"))
    return image


def image_python(image: pathlib.Path, *args: str, **kwargs) -> list | subprocess.CompletedProcess:
    """python3 -S (no site-packages, no .pth files: nothing of the test's venv, so no Ansible) with only the image's
    directory on PYTHONPATH."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(image), "LANG": "C.UTF-8"}
    return dict(args=[sys.executable, "-S", *args], env=env, cwd=image, **kwargs)


class Exporter:
    def __init__(self, image: pathlib.Path, properties: pathlib.Path, log: pathlib.Path):
        self.port = free_port()
        self.log = log
        args = ["-m", "mm2_readiness", "--properties", str(properties), "--flow", "orders"]
        args += [
            "--listen",
            f"127.0.0.1:{self.port}",
            "--interval",
            "1",
            "--max-lag",
            "0",
            "--max-checkpoint-age",
            "300",
        ]
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(**image_python(image, *args, stdout=subprocess.DEVNULL, stderr=err))

    def scrape(self) -> dict:
        """{(name, other labels): value} of one scrape; flow, source and target are asserted to be the flow's."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            body = response.read().decode()
        found = {}
        for family in text_string_to_metric_families(body):
            for s in family.samples:
                assert {k: s.labels[k] for k in FLOW} == FLOW, s
                found[(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in FLOW)))] = s.value
        return found

    def until(self, what, done, timeout=60):
        def scraped():
            try:
                return self.scrape()
            except OSError:
                return {}

        return wait_for(what, scraped, done, timeout=timeout, log=self.log)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def group(metrics: dict, name: str, group_name: str = GROUP):
    return metrics.get((f"infra_obs_mm2_group_{name}", (("group", group_name),)))


def check(metrics: dict, name: str):
    return metrics.get((f"infra_obs_mm2_readiness_check_{name}", ()))


def topic_lag(metrics: dict):
    return metrics.get(("infra_obs_mm2_topic_lag_records", (("topic", TOPIC),)))


def reread_now(lab):
    """What a rollback of GROUP would re-read now: its committed offsets minus its newest checkpoints' downstream
    offsets, read with kafka_mm2 directly."""
    params = dict(source_alias="primary", replication_policy="identity", separator=".", checkpoints_topic=None)
    with lab.clusters() as (source, target):
        committed = source.committed(GROUP)
        checkpoints = kafka_mm2.newest_checkpoints(target, params, [GROUP])[GROUP]
    if set(checkpoints) != set(committed):
        return None
    return sum(offset - checkpoints[tp]["downstream_offset"] for tp, offset in committed.items())


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("mm2-readiness"))
    try:
        yield lab.start()
    finally:
        lab.stop()


@pytest.fixture(scope="module")
def image(lab):
    return image_dir(lab.base)


@pytest.fixture(scope="module")
def exporter(lab, image):
    """The exporter on the lab's own mm2.properties, started once GROUP drained RECORDS records and committed, and
    OUTSIDER (a group MM2 does not replicate) committed some."""
    produce(lab.primary, 0, RECORDS)
    read_and_commit(lab.primary, GROUP, RECORDS)
    read_and_commit(lab.primary, OUTSIDER, 10)
    exporter = Exporter(image, lab.base / "mm2" / "mm2.properties", lab.base / "exporter.log")
    try:
        yield exporter
    finally:
        exporter.stop()


def test_the_image_has_no_ansible_and_the_exporter_imports_without_it(image):
    no_ansible = subprocess.run(**image_python(image, "-c", "import ansible"), capture_output=True, text=True)
    assert "No module named 'ansible'" in no_ansible.stderr
    imported = subprocess.run(
        **image_python(
            image,
            "-c",
            "import sys, mm2_readiness; assert mm2_readiness.kafka_mm2.__name__ == 'kafka_mm2'; "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('ansible', 'ansible_collections')]",
        ),
        capture_output=True,
        text=True,
    )
    assert imported.returncode == 0, imported.stderr


def test_a_drained_group_with_mm2_caught_up_can_roll_back(lab, exporter, image):
    # MM2 caught up: copied everything and checkpointed the group (the verdict may be 1 before, from the records).
    metrics = exporter.until(
        f"{GROUP} to be able to roll back",
        lambda m: (
            group(m, "can_roll_back") == 1 and topic_lag(m) == 0 and group(m, "checkpoint_age_seconds") is not None
        ),
    )
    assert group(metrics, "rollback_blockers") == 0
    assert 0 <= group(metrics, "checkpoint_age_seconds") < 300
    # What a rollback would re-read: the committed offsets minus the checkpoints' downstream offsets (read directly,
    # until both reads see the same checkpoints). The first checkpoints can translate from an offset sync far back
    # (MM2 holds the tail's back until its task flushes), so no bound here: test_mm2_rollback waits for that.
    metrics, _expected = wait_for(
        "the re-read records to match the checkpoints",
        lambda: (exporter.scrape(), reread_now(lab)),
        lambda pair: pair[1] is not None and group(pair[0], "reread_records") == pair[1] >= 0,
        timeout=30,
        log=exporter.log,
    )
    assert group(metrics, "can_roll_back") == 1
    assert check(metrics, "success") == 1
    assert time.time() - 30 < check(metrics, "timestamp_seconds") <= time.time()
    assert 0 < check(metrics, "duration_seconds") < 30
    assert not [key for key in metrics if ("group", OUTSIDER) in key[1]], "a group MM2 does not replicate"
    assert {name for name, _labels in metrics} == {
        *(f"infra_obs_mm2_group_{n}" for n in ("can_roll_back", "rollback_blockers", "checkpoint_age_seconds")),
        "infra_obs_mm2_group_reread_records",
        "infra_obs_mm2_topic_lag_records",
        *(f"infra_obs_mm2_readiness_check_{n}" for n in ("success", "timestamp_seconds", "duration_seconds")),
        "infra_obs_mm2_alive",
        "infra_obs_mm2_heartbeat_age_seconds",
    }
    # MM2 writes a heartbeat a second and counts as down after 3 s without one (the lab flow's intervals).
    assert metrics[("infra_obs_mm2_alive", ())] == 1
    assert 0 <= metrics[("infra_obs_mm2_heartbeat_age_seconds", ())] <= 3

    once = subprocess.run(
        **image_python(
            image,
            *("-m", "mm2_readiness"),
            *("--properties", str(lab.base / "mm2" / "mm2.properties"), "--flow", "orders", "--check"),
            *("--max-lag", "0"),
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert once.returncode == 0, once.stdout + once.stderr
    (result,) = json.loads(once.stdout)["checks"]
    assert (result["source"], result["target"], result["success"], result["topics"]) == (
        "primary",
        "standby",
        True,
        [TOPIC],
    )
    assert result["groups"][GROUP]["can_roll_back"] is True
    assert [(row["partition"], row["lag"]) for row in result["status"]["partitions"]] == [
        (p, 0) for p in range(PARTITIONS)
    ]
    assert result["ignored_groups"] == []


def test_a_member_on_the_target_blocks_the_rollback_until_it_leaves(lab, exporter):
    member = group_consumer(lab.standby)
    try:
        wait_for("a member on the target", lambda: (member.poll(timeout_ms=200), member.assignment())[1])
        metrics = exporter.until("the member to block the rollback", lambda m: group(m, "can_roll_back") == 0)
        assert group(metrics, "rollback_blockers") >= 1
    finally:
        member.close()
    exporter.until("the group to be able to roll back again", lambda m: group(m, "can_roll_back") == 1)


def test_lag_counts_what_mm2_has_not_copied(lab, exporter):
    lab.mm2.terminate()
    lab.mm2.wait(30)
    produce(lab.primary, RECORDS, RECORDS + LATE)
    metrics = exporter.until(f"a lag of {LATE} records", lambda m: topic_lag(m) == LATE)
    # max_lag 0: the group's partitions that got records are behind.
    assert group(metrics, "can_roll_back") == 0
    assert group(metrics, "rollback_blockers") >= 1
    # No heartbeat for 3 s (three times the lab flow's emit intervals of a second): MM2 is down, one more blocker
    # than the lag's. On a busy machine the lag may first be seen after those 3 s, already with MM2 down: what that
    # reading counts for the lag alone is its blockers less the one for MM2.
    lag_blockers = group(metrics, "rollback_blockers") - (metrics[("infra_obs_mm2_alive", ())] == 0)
    down = exporter.until("MM2 to be reported down", lambda m: m.get(("infra_obs_mm2_alive", ())) == 0)
    assert down[("infra_obs_mm2_heartbeat_age_seconds", ())] > 3
    assert group(down, "rollback_blockers") == lag_blockers + 1


def test_checkpoints_are_read_on_from_where_the_last_read_ended(lab):
    """MM2 is stopped here (the test before): a CheckpointLog reads the whole topic once, nothing on a second read,
    and then only a record appended since, whose checkpoint becomes the newest of its key; what it holds is what a
    whole read finds."""
    params = dict(source_alias="primary", replication_policy="identity", separator=".", checkpoints_topic=None)
    topic = kafka_mm2.checkpoints_topic(params)
    log = kafka_mm2.CheckpointLog()

    def without_ages(found):  # the ages differ by the time between two reads
        return {tp: {k: v for k, v in cp.items() if k != "age_seconds"} for tp, cp in found[GROUP].items()}

    with lab.clusters() as (_, target):
        first = kafka_mm2.newest_checkpoints(target, params, [GROUP], log)
        whole = log.records_read
        span = sum(target.end_offsets(target.partitions([topic])).values())
        assert 0 < whole == span, "every record read once"
        assert without_ages(kafka_mm2.newest_checkpoints(target, params, [GROUP], log)) == without_ages(first)
        assert log.records_read == whole
        tp = next(iter(first[GROUP]))
        key = b"".join(struct.pack(">h", len(s)) + s.encode() for s in (GROUP, tp.topic)) + struct.pack(
            ">i", tp.partition
        )
        producer = kafka.KafkaProducer(bootstrap_servers=lab.standby.bootstrap, acks="all")
        try:
            producer.send(topic, key=key, value=struct.pack(">hqqh", 0, 7, 5, 0)).get(timeout=30)
        finally:
            producer.close()
        tailed = kafka_mm2.newest_checkpoints(target, params, [GROUP], log)
        assert log.records_read == whole + 1
        assert {k: tailed[GROUP][tp][k] for k in ("upstream_offset", "downstream_offset")} == {
            "upstream_offset": 7,
            "downstream_offset": 5,
        }
        fresh = kafka_mm2.newest_checkpoints(target, params, [GROUP])
    assert without_ages(tailed) == without_ages(fresh)


def test_with_the_source_down_the_check_fails_and_the_exporter_keeps_serving(lab, exporter):
    last_success = check(exporter.scrape(), "timestamp_seconds")
    lab.primary.stop()
    metrics = exporter.until("the check to fail", lambda m: check(m, "success") == 0)
    assert group(metrics, "can_roll_back") is None and topic_lag(metrics) is None, "nothing known: no series"
    time.sleep(2)
    again = exporter.scrape()
    assert check(again, "success") == 0
    assert last_success <= check(again, "timestamp_seconds") < time.time() - 1
    assert exporter.proc.poll() is None
    exporter.proc.send_signal(signal.SIGTERM)
    assert exporter.proc.wait(5) == 0
    failures = [line for line in exporter.log.read_text().splitlines() if "check failed" in line]
    assert failures and all("flow orders primary->standby: check failed: " in line for line in failures), failures
