"""MirrorMaker 2's metrics through the Prometheus JMX exporter agent, against a real MM2 4.3.1: two KRaft clusters on
loopback (primary -> standby, the lab's orders flow as in test_mm2_rollback), MM2 started with
`-javaagent:<agent>=<port>:roles/mm2/files/jmx_exporter.yml`, records produced once it replicates, a group of the flow
reading and committing them. The scrape must carry every series the shipped rules read, with their labels and sane
values, nothing outside the config's families, pass `promtool check metrics`, and fire none of the alerts when fed to
the shipped rules as a healthy flow.
"""

import json
import math
import re
import subprocess
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .kafka_lab import REPO, free_port, jmx_agent_jar
from .test_mm2_rollback import GROUP, PARTITIONS, TOPIC, Lab, produce, read_and_commit, wait_for

PROMTOOL = "/var/cache/infra-obs/bin/promtool"
CONFIG = REPO / "roles" / "mm2" / "files" / "jmx_exporter.yml"
RULES = REPO / "roles" / "mm2" / "files" / "rules" / "mm2.rules.yml"
RECORDS = 600
FLOW = dict(source="primary", target="standby")
# The labels each family the rules read carries (beside job and instance, which Prometheus adds).
LABELS = {
    "kafka_mm2_consumer_records_lag": {"source", "target", "task", "topic", "partition"},
    "kafka_mm2_records_total": {"source", "target", "topic", "partition"},
    "kafka_mm2_replication_latency_seconds": {"source", "target", "topic", "partition"},
    "kafka_mm2_checkpoint_latency_seconds": {"source", "target", "group", "topic", "partition"},
    "kafka_mm2_task_records_written_total": {"connector", "task"},
    "kafka_mm2_task_status": {"connector", "task", "status"},
    "kafka_mm2_connector_status": {"connector", "status"},
}
# What the agent exports besides the config's rules: its JVM and process collectors and its own scrape metrics.
AGENT_FAMILIES = re.compile(r"(jvm|process|jmx)_")
CONNECTORS = {"MirrorSourceConnector", "MirrorCheckpointConnector", "MirrorHeartbeatConnector"}


class MetricsLab(Lab):
    """Lab's two clusters and flow; MM2 runs with the JMX exporter agent on a free loopback port."""

    def agent_options(self) -> list[str]:
        self.metrics_port = free_port()
        return [f"-javaagent:{jmx_agent_jar(self.primary.libs)}=127.0.0.1:{self.metrics_port}:{CONFIG}"]

    def scrape(self) -> bytes:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as response:
                return response.read()
        except OSError:
            return b""


def samples(body: bytes) -> list:
    return [s for family in text_string_to_metric_families(body.decode()) for s in family.samples]


def series(body: bytes, name: str, **labels: str) -> list:
    return [s for s in samples(body) if s.name == name and labels.items() <= s.labels.items()]


def replicated(body: bytes) -> float:
    return sum(s.value for s in series(body, "kafka_mm2_records_total", topic=TOPIC))


@pytest.fixture(scope="module")
def scrape(tmp_path_factory):
    """The agent's exposition once MM2 replicated RECORDS records, GROUP committed them and MM2 checkpointed it on
    every partition, with the replication consumer caught up."""
    lab = MetricsLab(tmp_path_factory.mktemp("mm2-metrics"))
    try:
        lab.start()
        # Produce only once the replication consumer holds every partition, so record ages measure replication.
        wait_for(
            "the replication consumer to be assigned the topic",
            lambda: len(series(lab.scrape(), "kafka_mm2_consumer_records_lag", topic=TOPIC)),
            lambda n: n == PARTITIONS,
            log=lab.mm2_log,
        )
        produce(lab.primary, 0, RECORDS)
        read_and_commit(lab.primary, GROUP, RECORDS)

        def settled(body: bytes) -> bool:
            lag = series(body, "kafka_mm2_consumer_records_lag", topic=TOPIC)
            checkpointed = series(body, "kafka_mm2_checkpoint_latency_seconds", group=GROUP, topic=TOPIC)
            return (
                replicated(body) == RECORDS
                and len(checkpointed) == PARTITIONS
                and len(lag) == PARTITIONS
                and all(s.value == 0 for s in lag)
            )

        yield wait_for("MM2 to replicate, checkpoint and catch up", lab.scrape, settled, log=lab.mm2_log)
    finally:
        lab.stop()


def rule_metric_names() -> set[str]:
    """The raw series the shipped rules read (recording rules' own outputs have a ':' and are left out)."""
    exprs = [rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    return {name for expr in exprs for name in re.findall(r"\bkafka_mm2_[a-z_]+\b", expr)}


def test_every_series_the_rules_read_is_exported_with_its_labels(scrape):
    names = rule_metric_names()
    assert names == set(LABELS), "LABELS should list exactly what the rules read"
    for name, labels in LABELS.items():
        found = series(scrape, name)
        assert found, f"{name} missing from the scrape"
        for s in found:
            assert set(s.labels) == labels, (name, s.labels)
            if "source" in labels:
                assert {k: s.labels[k] for k in FLOW} == FLOW, (name, s.labels)


def test_values_are_sane_and_in_base_units(scrape):
    for name in ("kafka_mm2_record_age_seconds", "kafka_mm2_replication_latency_seconds"):
        values = [s.value for s in series(scrape, name, topic=TOPIC)]
        assert len(values) == PARTITIONS, name
        # Milliseconds would be in the hundreds at least: the factor 0.001 is applied.
        assert all(0 < v < 60 for v in values), (name, values)
    assert all(s.value >= 0 for s in series(scrape, "kafka_mm2_byte_rate_bytes", topic=TOPIC))
    assert sum(s.value for s in series(scrape, "kafka_mm2_bytes_total", topic=TOPIC)) > RECORDS
    assert replicated(scrape) == RECORDS
    lag = series(scrape, "kafka_mm2_consumer_records_lag", topic=TOPIC)
    assert sorted(s.labels["partition"] for s in lag) == [str(p) for p in range(PARTITIONS)]
    assert all(s.value == 0 for s in lag)
    checkpoints = [s.value for s in series(scrape, "kafka_mm2_checkpoint_latency_seconds", group=GROUP)]
    assert all(0 <= v < 60 for v in checkpoints), checkpoints
    written = {s.labels["connector"]: s.value for s in series(scrape, "kafka_mm2_task_records_written_total")}
    assert written["MirrorSourceConnector"] >= RECORDS and written["MirrorCheckpointConnector"] >= PARTITIONS


def test_every_connector_and_task_runs(scrape):
    tasks = {(s.labels["connector"], s.labels["status"]) for s in series(scrape, "kafka_mm2_task_status")}
    assert tasks == {(c, "running") for c in CONNECTORS}
    connectors = {(s.labels["connector"], s.labels["status"]) for s in series(scrape, "kafka_mm2_connector_status")}
    assert connectors == {(c, "running") for c in CONNECTORS}
    states = {(s.labels["connector"], s.labels["state"]): s.value for s in series(scrape, "kafka_mm2_connector_tasks")}
    assert all(states[(c, "running")] == states[(c, "total")] == 1 and states[(c, "failed")] == 0 for c in CONNECTORS)
    assert series(scrape, "kafka_mm2_worker_tasks")[0].value == len(CONNECTORS)


def test_the_config_is_strict(scrape):
    names = {s.name for s in samples(scrape)}
    outside = {n for n in names if not n.startswith("kafka_mm2_") and not AGENT_FAMILIES.match(n)}
    assert not outside, f"exported outside the config's rules: {sorted(outside)}"
    # No Connect or client bean slipped through a loose pattern under another name.
    assert {n for n in names if n.startswith("kafka_") and not n.startswith("kafka_mm2_")} == set()


def test_the_scrape_passes_promtool(scrape):
    """The whole exposition, the agent's own JVM families included, lints clean (names, units, counter suffixes)."""
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=scrape, capture_output=True)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result


def promql_series(sample) -> str:
    labels = dict(sample.labels, job="mm2-orders", instance="127.0.0.1:9404")
    return sample.name + "{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items())) + "}"


def test_the_shipped_rules_see_a_healthy_flow(scrape, tmp_path):
    """The scrape held for 30 minutes, counters growing as observed: the lag record keeps the real topic only
    (Kafka's orders_events twin dropped), and no alert fires."""
    inputs = [{"series": 'up{job="mm2-orders", instance="127.0.0.1:9404"}', "values": "1x30"}]
    for s in samples(scrape):
        if not s.name.startswith("kafka_mm2_") or math.isnan(s.value):
            continue
        # Counters keep growing as in a flow that replicates and checkpoints all along.
        values = f"{s.value:g}+{max(s.value, 1):g}x30" if s.name.endswith("_total") else f"{s.value:g}x30"
        inputs.append({"series": promql_series(s), "values": values})
    lag = sorted(
        (s for s in series(scrape, "kafka_mm2_consumer_records_lag") if s.labels["topic"] == TOPIC),
        key=promql_series,
    )
    case = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": inputs,
                "promql_expr_test": [
                    {
                        "expr": f'kafka_mm2:consumer_records_lag{{topic=~"{TOPIC.split(".")[0]}.*"}}',
                        "eval_time": "20m",
                        "exp_samples": [
                            {"labels": "kafka_mm2:consumer_records_lag" + promql_series(s)[len(s.name) :], "value": 0}
                            for s in lag
                        ],
                    }
                ],
                "alert_rule_test": [
                    {"eval_time": "30m", "alertname": alert, "exp_alerts": []}
                    for alert in ("MM2LagHigh", "MM2Down", "MM2CheckpointsStale", "MM2TaskFailed")
                ],
            }
        ],
    }
    (tmp_path / "case.yml").write_text(yaml.safe_dump(case))
    result = subprocess.run([PROMTOOL, "test", "rules", str(tmp_path / "case.yml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
