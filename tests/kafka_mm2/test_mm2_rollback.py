"""Rollback of consumer groups through real MirrorMaker 2: two KRaft clusters on loopback (primary -> standby, the
lab's orders flow rendered by plugin_utils.mm2), 10,000 keyed records over 6 partitions produced in two halves;
before the second, orders-app reads all of the first half (drained, as for a planned rollback) and orders-laggard
half of it. kafka_replication_status is the gate, kafka_group_rollback moves the groups to standby, where each
must read every record it had not read (nothing lost) and re-read exactly what the plan says: at most
offset.lag.max records per partition, from MM2's checkpoints or, where those fall short (orders-laggard's: MM2 keeps
sparser offset syncs the further back they are), from the records themselves.
"""

import concurrent.futures
import contextlib
import json
import pathlib
import signal
import struct
import subprocess
import threading
import time
from collections import Counter

import pytest
import yaml
from ansible_collections.infra.obs.plugins.module_utils import kafka_mm2
from ansible_collections.infra.obs.plugins.plugin_utils import mm2
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import RetriableError as KafkaRetriableError
from kafka.structs import OffsetAndMetadata

from .kafka_lab import LOG4J2, REPO, KafkaNode, commit_settled, java

TOPIC = "orders.events"
PARTITIONS = 6
MESSAGES = 10_000
FIRST_PRODUCED = 5_000
KEYS = 120
GROUP = "orders-app"
# Stops half-way through what was produced; MM2 translates its offsets less precisely (see the test).
LAGGARD = "orders-laggard"
LAGGARD_READ = 2_500
OFFSET_LAG_MAX = 10
# The lab flow's emit intervals (a second each): MM2 counts as down after 3 s without a heartbeat.
PARAMS = dict(
    source_alias="primary",
    replication_policy="identity",
    separator=".",
    checkpoints_topic=None,
    emit_heartbeats_seconds=1,
    emit_checkpoints_seconds=1,
    max_mm2_silence=None,
)


def connection(node):
    return kafka_mm2.connection_params([node.bootstrap])


def wait_for(what, check, done=bool, timeout=90, log=None):
    """check() until done(its value); returns that value, or fails showing the last one and the log's tail. A
    retriable Kafka error counts as "not yet": on a busy machine a starved broker can leave a read unanswered for
    the client's whole request timeout (one fixture saw that with pytest on both cores beside a molecule converge)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if done(last := check()):
                return last
        except KafkaRetriableError as error:
            last = error
        time.sleep(0.5)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log and log.exists() else ""
    pytest.fail(f"timed out after {timeout} s waiting for {what}; last: {last!r}\n{tail}")


class Lab:
    def __init__(self, base: pathlib.Path):
        self.base = base
        self.primary = KafkaNode(base, "primary")
        self.standby = KafkaNode(base, "standby", libs=self.primary.libs)
        self.mm2_log = base / "mm2" / "mm2.log"
        self.mm2: subprocess.Popen | None = None

    def team(self) -> dict:
        """The lab's orders flow pointed at the two nodes, with intervals of a second."""
        team = yaml.safe_load((REPO / "inventories" / "lab" / "mm2" / "orders.yml").read_text())
        team["clusters"]["primary"]["bootstrap_servers"] = [self.primary.bootstrap]
        team["clusters"]["standby"]["bootstrap_servers"] = [self.standby.bootstrap]
        # offset_flush_seconds: MM2 holds back the offset sync of a partition's last record until its task commits;
        # only then can a drained group's checkpoint become exact.
        team["flow"]["intervals"] = dict(
            refresh_topics_seconds=1,
            refresh_groups_seconds=1,
            emit_checkpoints_seconds=1,
            emit_heartbeats_seconds=1,
            offset_flush_seconds=1,
        )
        team["flow"]["offset_lag_max"] = OFFSET_LAG_MAX
        return team

    def secrets(self) -> dict:
        """The passwords the team file names, by variable."""
        return {}

    def properties(self) -> str:
        properties = mm2.render_properties(mm2.load([("orders.yml", self.team())]), self.secrets())
        assert "standby.offset.flush.interval.ms = 1000" in properties
        return properties

    def agent_options(self) -> list[str]:
        """Extra JVM options for MM2 (a Java agent)."""
        return []

    def start(self) -> "Lab":
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(KafkaNode.start, (self.primary, self.standby)))
        create_topic(self.primary, TOPIC, PARTITIONS)
        work = self.base / "mm2"
        work.mkdir()
        (work / "mm2.properties").write_text(self.properties())
        (work / "log4j2.properties").write_text(LOG4J2.format(log=self.mm2_log))
        self.start_mm2()
        return self

    def start_mm2(self) -> None:
        work = self.base / "mm2"
        command = [
            java(),
            "-Xmx384m",
            "-XX:+UseSerialGC",
            "-XX:+ExitOnOutOfMemoryError",
            *self.agent_options(),
            f"-Dlog4j2.configurationFile={work / 'log4j2.properties'}",
            "-cp",
            f"{self.primary.libs}/*",
            "org.apache.kafka.connect.mirror.MirrorMaker",
            str(work / "mm2.properties"),
        ]
        with open(work / "stdout.log", "ab") as out:
            self.mm2 = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=work)

    def stop_mm2(self, sig=signal.SIGTERM) -> None:
        """MM2 stopped: SIGTERM lets it commit what it copied, SIGKILL (a crash) does not."""
        if self.mm2 is None or self.mm2.poll() is not None:
            return
        self.mm2.send_signal(sig)
        try:
            self.mm2.wait(30)
        except subprocess.TimeoutExpired:
            self.mm2.kill()
            self.mm2.wait()

    @contextlib.contextmanager
    def clusters(self):
        """Connections to the source and the target, as the modules open them."""
        with (
            kafka_mm2.Cluster(connection(self.primary)) as source,
            kafka_mm2.Cluster(connection(self.standby)) as target,
        ):
            yield source, target

    def stop(self) -> None:
        self.stop_mm2()
        for node in (self.primary, self.standby):
            node.stop()

    def status(self, groups=(GROUP,), max_reread=None, topic=TOPIC):
        """kafka_replication_status's result, strict: no lag, and checkpoints accepted for their offset only."""
        params = dict(
            PARAMS, topics=[topic], groups=list(groups), max_lag=0, max_checkpoint_age=0, max_reread=max_reread
        )
        with self.clusters() as (source, target):
            return kafka_mm2.replication_status(source, target, params)

    def module_args(self, **extra):
        return dict(
            source=dict(bootstrap_servers=[self.primary.bootstrap]),
            target=dict(bootstrap_servers=[self.standby.bootstrap]),
            source_alias="primary",
            **extra,
        )


def produce(node, first, last):
    """Values str(first)..str(last - 1), keyed over KEYS keys, acknowledged by all replicas."""
    producer = KafkaProducer(bootstrap_servers=node.bootstrap, acks="all")
    for i in range(first, last):
        producer.send(TOPIC, key=f"key-{i % KEYS}".encode(), value=str(i).encode())
    producer.flush()
    producer.close()


def group_consumer(node, group=GROUP, timeout=120, topic=TOPIC, auto_offset_reset="earliest", **extra):
    """A member of the group, subscribed once its metadata knows the topic's partitions. kafka-python's leader
    assigns from the metadata it holds when it joins and never revisits an empty assignment: a member that joined
    before its first metadata answer (a busy machine), or before MM2 created the topic on the target, kept no
    partitions for good."""
    consumer = KafkaConsumer(
        bootstrap_servers=node.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset=auto_offset_reset,
        **extra,
    )
    deadline = time.monotonic() + timeout
    while not consumer.partitions_for_topic(topic):
        if time.monotonic() > deadline:
            consumer.close()
            raise AssertionError(f"{topic} has no partitions on {node.bootstrap} after {timeout} s")
        time.sleep(0.5)
    consumer.subscribe([topic])
    return consumer


def read_all(consumer, expected, idle_ms=3000):
    """Records until at least `expected` came and then nothing more for idle_ms."""
    records = []
    quiet_since = time.monotonic()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        batch = [r for part in consumer.poll(timeout_ms=500).values() for r in part]
        records += batch
        if batch:
            quiet_since = time.monotonic()
        elif len(records) >= expected and time.monotonic() - quiet_since > idle_ms / 1000:
            return records
    pytest.fail(f"read {len(records)} records, expected at least {expected}")


def playbook_task(module, args):
    # JSON is YAML: the arguments go in as they are.
    return f"""
    - hosts: localhost
      gather_facts: false
      tasks:
        - {module}: {json.dumps(args)}
    """


def task_result(run):
    (task,) = run.json["plays"][0]["tasks"]
    return task["hosts"]["localhost"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("mm2-rollback"))
    try:
        yield lab.start()
    finally:
        lab.stop()


def read_and_commit(node, group, count, topic=TOPIC):
    """A member of group reads count records, commits exactly those and leaves; returns the values it read and the
    offsets it committed."""
    consumer = group_consumer(node, group, topic=topic, max_poll_records=100)
    records = []
    deadline = time.monotonic() + 60
    while len(records) < count and time.monotonic() < deadline:
        records += [r for part in consumer.poll(timeout_ms=500).values() for r in part]
    assert len(records) >= count, f"{group} read {len(records)} of {count} records on the source"
    committed = {}
    for r in records[:count]:
        tp = TopicPartition(r.topic, r.partition)
        committed[tp] = max(committed.get(tp, 0), r.offset + 1)
    commit_settled(consumer, {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in committed.items()})
    consumer.close()
    return {"values": {r.value.decode() for r in records[:count]}, "committed": committed}


@pytest.fixture(scope="module")
def first_read(lab):
    """FIRST_PRODUCED records on the source; GROUP reads all of them (drained, as before a planned rollback) and
    LAGGARD the first LAGGARD_READ."""
    produce(lab.primary, 0, FIRST_PRODUCED)
    reads = {GROUP: read_and_commit(lab.primary, GROUP, FIRST_PRODUCED)}
    reads[LAGGARD] = read_and_commit(lab.primary, LAGGARD, LAGGARD_READ)
    assert len(reads[GROUP]["committed"]) == PARTITIONS, "every partition should hold records"
    return reads


def by_records(status, group):
    """The partitions of group the status translated by their records, its checkpoints falling short there."""
    return [p["partition"] for p in status["groups"][group]["partitions"] if "by_records" in p]


@pytest.fixture(scope="module")
def caught_up(lab, first_read):
    """The status once MM2 has copied everything and GROUP's newest checkpoints translate its very commits closely
    (the planned procedure: drain, stop, wait for a newer checkpoint), on every partition (no translation by
    records standing in). LAGGARD may still lack some: MM2 keeps fewer
    offset syncs the further back they are, and cannot translate an offset older than all it kept."""
    return wait_for(
        "MM2 to replicate and checkpoint the groups",
        lambda: lab.status(groups=(GROUP, LAGGARD), max_reread=OFFSET_LAG_MAX),
        lambda status: status["groups"][GROUP]["can_roll_back"] and not by_records(status, GROUP),
        timeout=120,
        log=lab.mm2_log,
    )


@pytest.fixture(scope="module")
def all_replicated(lab, caught_up):
    """The rest of the MESSAGES produced on the source and replicated (no group has read them)."""
    produce(lab.primary, FIRST_PRODUCED, MESSAGES)
    return wait_for(
        "MM2 to replicate the rest",
        lambda: lab.status(groups=()),
        lambda status: status["lag_ok"],
        log=lab.mm2_log,
    )


def read_on_target(lab, group, read, plan):
    """What group reads on the target after the rollback: asserts nothing it had not read on the source is missing,
    and that what it reads again is exactly the plan's rounding per partition; returns that rounding."""
    consumer = group_consumer(lab.standby, group)
    try:
        records = read_all(consumer, MESSAGES - len(read["values"]))
    finally:
        consumer.close()
    values = Counter(r.value.decode() for r in records)
    unread = {str(i) for i in range(MESSAGES)} - read["values"]
    assert unread - set(values) == set(), f"{group}: records never read on the source are missing on the target"
    assert max(values.values()) == 1, f"{group}: a record came twice to one consumer"
    again = Counter(r.partition for r in records if r.value.decode() in read["values"])
    rounding = {row["partition"]: row["source_committed"] - row["new_offset"] for row in plan}
    assert {p: again.get(p, 0) for p in rounding} == rounding
    return rounding


def test_checkpoint_records_decode_to_the_groups_commits(lab, first_read, caught_up):
    """The schema read from Checkpoint.class (connect-mirror-client 4.3.1) holds for MM2's own records: each one
    re-encodes to exactly its bytes, and the newest per partition translates the group's commit."""
    target = kafka_mm2.Cluster(connection(lab.standby))
    try:
        records = target.read_topic("primary.checkpoints.internal")
    finally:
        target.close()
    newest = {}
    for record in records:
        (group, topic, partition), cp = kafka_mm2.decode_checkpoint(record.key, record.value)
        key = b"".join(struct.pack(">h", len(s)) + s.encode() for s in (group, topic)) + struct.pack(">i", partition)
        metadata = cp["metadata"].encode()
        value = struct.pack(">hqqh", 0, cp["upstream_offset"], cp["downstream_offset"], len(metadata)) + metadata
        assert (record.key, record.value) == (key, value)
        newest[(group, topic, partition)] = cp
    for group, read in first_read.items():
        ours = {TopicPartition(t, p): cp for (g, t, p), cp in newest.items() if g == group}
        assert set(ours) <= set(read["committed"])
        for tp, cp in ours.items():
            # Identity policy, both logs from offset 0: MM2 rounds down to an offset sync, never up.
            assert cp["upstream_offset"] == read["committed"][tp]
            assert 0 <= cp["downstream_offset"] <= cp["upstream_offset"]
    assert len({(t, p) for (g, t, p) in newest if g == GROUP}) == PARTITIONS


def test_replication_status_through_ansible_gates_on_lag_and_checkpoints(lab, all_replicated, playbook):
    args = lab.module_args(topics_regex=r"orders\..*", groups=[GROUP, "orders-never-ran"], max_lag=0)
    run = playbook(playbook_task("infra.obs.kafka_replication_status", args), "--check")
    assert run.rc == 0, run.output
    result = task_result(run)
    assert result["changed"] is False
    assert result["topics"] == [TOPIC]
    assert [(p["partition"], p["lag"]) for p in result["partitions"]] == [(p, 0) for p in range(PARTITIONS)]
    assert sum(p["source_end"] for p in result["partitions"]) == MESSAGES
    assert result["groups"][GROUP]["can_roll_back"] is True, result["groups"][GROUP]
    assert result["groups"][GROUP]["active_on_source"] is False
    assert result["unsafe_groups"] == ["orders-never-ran"]
    assert result["groups"]["orders-never-ran"]["reasons"] == [
        "no committed offsets on the source for the selected topics"
    ]

    gate = playbook(playbook_task("infra.obs.kafka_replication_status", dict(args, fail_when_unsafe=True)))
    assert gate.rc != 0
    (msg,) = gate.failures()
    assert msg == "not safe to roll back: orders-never-ran: no committed offsets on the source for the selected topics"


def test_rollback_refused_while_the_group_is_active_on_the_target(lab, all_replicated, playbook):
    member = group_consumer(lab.standby)
    try:
        wait_for("a member on the target", lambda: (member.poll(timeout_ms=200), member.assignment())[1])
        run = playbook(playbook_task("infra.obs.kafka_group_rollback", lab.module_args(group=GROUP)))
    finally:
        member.close()
    assert run.rc != 0
    (msg,) = run.failures()
    assert msg.startswith(f"group {GROUP} has 1 active member(s) on the target (state Stable): stop its consumers")


def test_a_member_still_on_the_source_needs_allow_active_source(lab, all_replicated, playbook):
    member = group_consumer(lab.primary)
    try:
        wait_for("a member on the source", lambda: (member.poll(timeout_ms=200), member.assignment())[1])
        refused = playbook(playbook_task("infra.obs.kafka_group_rollback", lab.module_args(group=GROUP)), "--check")
        allowed = playbook(
            playbook_task("infra.obs.kafka_group_rollback", lab.module_args(group=GROUP, allow_active_source=True)),
            "--check",
        )
    finally:
        member.close()
    assert refused.rc != 0
    (msg,) = refused.failures()
    assert msg.startswith(f"group {GROUP} still has 1 active member(s) on the source (state Stable)")
    assert allowed.rc == 0, allowed.output
    assert task_result(allowed)["warnings"] == [
        f"group {GROUP} is still active on the source: records it reads there now are read again"
    ]


def test_check_mode_shows_the_plan_and_commits_nothing(lab, first_read, all_replicated, playbook):
    run = playbook(playbook_task("infra.obs.kafka_group_rollback", lab.module_args(group=GROUP)), "--check", "--diff")
    assert run.rc == 0, run.output
    result = task_result(run)
    assert result["changed"] is True
    plan = {row["partition"]: row for row in result["plan"]}
    assert sorted(plan) == list(range(PARTITIONS))
    for tp, committed in first_read[GROUP]["committed"].items():
        row = plan[tp.partition]
        assert row["source_committed"] == row["checkpoint_upstream"] == committed
        assert row["new_offset"] == row["checkpoint_downstream"] and row["origin"] == "checkpoint"
    assert result["diff"]["after"] == {f"{TOPIC}-{p}": row["new_offset"] for p, row in plan.items()}
    admin = KafkaAdminClient(bootstrap_servers=lab.standby.bootstrap)
    try:
        assert admin.list_group_offsets(GROUP)[GROUP] == {}
    finally:
        admin.close()


def test_rollback_then_the_group_reads_the_rest_on_the_target(lab, first_read, all_replicated, playbook):
    started = time.monotonic()
    run = playbook(playbook_task("infra.obs.kafka_group_rollback", lab.module_args(group=GROUP)))
    rollback_seconds = time.monotonic() - started
    assert run.rc == 0, run.output
    assert task_result(run)["changed"] is True

    again = playbook(playbook_task("infra.obs.kafka_group_rollback", lab.module_args(group=GROUP)))
    assert again.rc == 0, again.output
    assert task_result(again)["changed"] is False

    rounding = read_on_target(lab, GROUP, first_read[GROUP], task_result(run)["plan"])
    print(f"\n{GROUP}: rollback {rollback_seconds:.1f} s (ansible-playbook), re-read per partition {rounding}")
    # Drained at the log end: MM2 translates from its newest offset sync, at most offset.lag.max records back.
    assert max(rounding.values()) <= OFFSET_LAG_MAX


def test_a_group_mid_log_rolls_back_without_loss_within_the_bound(lab, first_read, all_replicated):
    """LAGGARD stopped half-way while the source was written on: MM2's checkpoints for it are far back or missing
    (it keeps fewer offset syncs the further back they are). With max_reread, those partitions are translated by
    their records: every partition gets a plan, nothing is lost, and each re-reads what its row states, within the
    bound."""
    params = dict(PARAMS, topics=None, missing="fail", max_reread=OFFSET_LAG_MAX)
    with lab.clusters() as (source, target):
        plan = kafka_mm2.rollback_plan(source, target, params, LAGGARD)
        target.alter_offsets(LAGGARD, kafka_mm2.plan_offsets(plan))
    rounding = read_on_target(lab, LAGGARD, first_read[LAGGARD], plan)
    origins = {row["partition"]: row["origin"] for row in plan}
    print(f"\n{LAGGARD}: re-read per partition {rounding}, from {origins}")
    assert sorted(origins) == sorted(tp.partition for tp in first_read[LAGGARD]["committed"])
    assert {row["partition"]: row["reread"] for row in plan} == rounding
    assert max(rounding.values()) <= OFFSET_LAG_MAX
    # No duplicates on the target (MM2 ran uninterrupted): a translation by records re-reads nothing.
    assert all(row["reread"] == 0 for row in plan if row["origin"] == "records")


def test_a_group_mm2_never_checkpoints_is_translated_by_its_records(lab, all_replicated):
    """billing-app is outside the flow's groups (orders-.*): MM2 never checkpoints it, but its records are on the
    target, so the plan starts each partition exactly where the group stopped."""
    read = read_and_commit(lab.primary, "billing-app", 100)
    with lab.clusters() as (source, target):
        plan = kafka_mm2.rollback_plan(source, target, dict(PARAMS, topics=None, missing="fail"), "billing-app")
    assert {row["origin"] for row in plan} == {"records"}
    assert {row["partition"]: row["new_offset"] for row in plan} == {
        tp.partition: offset for tp, offset in read["committed"].items()
    }
    assert {row["reread"] for row in plan} == {0}


def test_partitions_neither_checkpointed_nor_replicated_need_a_missing_policy(lab, all_replicated):
    """orders.scratch.* is outside the flow's topics: the topic exists on both clusters but MM2 copies nothing of it,
    and the target holds records of its own there."""
    scratch, group = "orders.scratch.billing", "orders-scratch"
    for node, origin, count in ((lab.primary, "source", 6), (lab.standby, "target", 3)):
        create_topic(node, scratch, 2)
        producer = KafkaProducer(bootstrap_servers=node.bootstrap, acks="all")
        for i in range(count):
            for partition in (0, 1):
                producer.send(scratch, value=f"{origin}-{i}".encode(), partition=partition)
        producer.flush()
        producer.close()
    admin = KafkaAdminClient(bootstrap_servers=lab.primary.bootstrap)
    try:
        admin.alter_group_offsets(group, {TopicPartition(scratch, p): OffsetAndMetadata(4, "", -1) for p in (0, 1)})
    finally:
        admin.close()
    params = dict(PARAMS, topics=[scratch], missing="fail")
    with lab.clusters() as (source, target):
        with pytest.raises(kafka_mm2.KafkaMM2Error) as refused:
            kafka_mm2.rollback_plan(source, target, params, group)
        earliest = kafka_mm2.rollback_plan(source, target, dict(params, missing="earliest"), group)
        latest = kafka_mm2.rollback_plan(source, target, dict(params, missing="latest"), group)
    for partition in (0, 1):
        assert f"{scratch}-{partition}: no checkpoint yet" in str(refused.value)
    assert "nor is it found by its records on the target" in str(refused.value)
    assert [(row["origin"], row["new_offset"], row["reread"]) for row in earliest] == [("earliest", 0, None)] * 2
    assert [(row["origin"], row["new_offset"]) for row in latest] == [("latest", 3)] * 2


def test_without_the_source_the_plan_comes_from_the_checkpoints_alone(lab, first_read, all_replicated):
    params = dict(PARAMS, topics=None, missing="fail")
    with lab.clusters() as (source, target):
        with_source = kafka_mm2.rollback_plan(source, target, params, GROUP)
        alone = kafka_mm2.rollback_plan(None, target, params, GROUP)
    assert kafka_mm2.plan_offsets(alone) == kafka_mm2.plan_offsets(with_source)
    assert {row["source_committed"] for row in alone} == {None}


def test_the_issues_mid_log_case_completes_on_the_planned_path(lab, all_replicated):
    """The issue's mid-log reproducer: 24 partitions, a group stopped at 12,345 of 20,000 records while the source
    was written on (MM2 then has no checkpoint for many partitions, or one far back). The gate passes once MM2 has
    copied everything, every partition gets a plan (checkpoint or records) whose stated re-read is what the group
    reads again, within offset.lag.max, and nothing is lost."""
    topic, group, partitions = "orders.midlog", "orders-midlog", 24
    create_topic(lab.primary, topic, partitions)
    values = [str(i) for i in range(20_000)]
    produce_values(lab.primary, topic, values[:15_000])
    read = read_and_commit(lab.primary, group, 12_345, topic=topic)
    produce_values(lab.primary, topic, values[15_000:])

    def gate():
        params = dict(
            PARAMS, topics=[topic], groups=[group], max_lag=0, max_checkpoint_age=0, max_reread=OFFSET_LAG_MAX
        )
        with lab.clusters() as (source, target):
            return kafka_mm2.replication_status(source, target, params)

    wait_for("the gate to pass", gate, lambda s: s["can_roll_back"], timeout=120, log=lab.mm2_log)
    started = time.monotonic()
    with lab.clusters() as (source, target):
        plan = kafka_mm2.rollback_plan(
            source, target, dict(PARAMS, topics=[topic], missing="fail", max_reread=OFFSET_LAG_MAX), group
        )
        target.alter_offsets(group, kafka_mm2.plan_offsets(plan))
    seconds = time.monotonic() - started
    consumer = group_consumer(lab.standby, group, topic=topic)
    try:
        records = read_all(consumer, len(values) - len(read["values"]))
    finally:
        consumer.close()
    got = Counter(r.value.decode() for r in records)
    assert set(values) - read["values"] - set(got) == set(), "records the group had not read are missing"
    again = Counter(r.partition for r in records if r.value.decode() in read["values"])
    stated = {row["partition"]: row["reread"] for row in plan}
    origins = Counter(row["origin"] for row in plan)
    print(f"\n{group}: plan {seconds:.2f} s for {len(plan)} partitions, {dict(origins)}, re-reads {stated}")
    assert sorted(stated) == sorted(tp.partition for tp in read["committed"])
    assert {p: again.get(p, 0) for p in stated} == stated
    assert max(stated.values()) <= OFFSET_LAG_MAX


# --- MM2 crashes and stops (these run last: they stop and restart MM2) ----------------------------------------------

CRASH_TOPIC, CRASH_GROUP = "orders.crash", "orders-crash"
HALVES_TOPIC, HALVES_GROUP, HALVES_PARTITIONS = "orders.halves", "orders-halves", 24


def create_topic(node, topic, partitions):
    admin = KafkaAdminClient(bootstrap_servers=node.bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        admin.close()


def produce_values(node, topic, values, per_second=None, partitions=None):
    """values to topic, keyed as produce() keys them, or round-robin over partitions when given; per_second paces
    them."""
    producer = KafkaProducer(bootstrap_servers=node.bootstrap, acks="all")
    started = time.monotonic()
    for i, value in enumerate(values):
        partition = None if partitions is None else i % partitions
        producer.send(topic, key=f"key-{i % KEYS}".encode(), value=value.encode(), partition=partition)
        if per_second and i % 50 == 0 and (ahead := started + i / per_second - time.monotonic()) > 0:
            time.sleep(ahead)
    producer.flush()
    producer.close()


def topic_values(node, topic):
    """Counter of the values of every record of topic on node."""
    with kafka_mm2.Cluster(connection(node)) as cluster:
        return Counter(r.value.decode() for r in cluster.read_topic(topic))


def crashed_with_duplicates(lab):
    """CRASH_TOPIC on the source, and MM2 killed (SIGKILL) mid-burst and restarted, until the target holds duplicates
    (MM2 copies again what it wrote after its last offset commit); returns the status once every record is there and
    the number of records produced."""
    create_topic(lab.primary, CRASH_TOPIC, PARTITIONS)
    produce_values(lab.primary, CRASH_TOPIC, [f"warm-{p}" for p in range(PARTITIONS)], partitions=PARTITIONS)
    wait_for(
        "MM2 to copy a new topic", lambda: lab.status((), topic=CRASH_TOPIC), lambda s: s["lag_ok"], log=lab.mm2_log
    )
    produced = PARTITIONS
    for attempt in range(5):
        burst = [f"burst-{attempt}-{i}" for i in range(6000)]
        writer = threading.Thread(
            target=produce_values, args=(lab.primary, CRASH_TOPIC, burst), kwargs={"per_second": 1500}
        )
        writer.start()
        time.sleep(2.5)
        lab.stop_mm2(signal.SIGKILL)
        time.sleep(2)
        lab.start_mm2()
        writer.join()
        produced += len(burst)
        status = wait_for(
            "MM2 to copy the burst after its crash",
            lambda: lab.status((), topic=CRASH_TOPIC),
            lambda s: s["lag_ok"],
            timeout=180,
            log=lab.mm2_log,
        )
        if status["duplicates_total"]:
            return status, produced
    pytest.fail("five MM2 crashes mid-burst left no duplicate on the target")


def test_after_an_mm2_crash_the_gate_proves_every_record_and_knows_mm2_is_down(lab, all_replicated, playbook):
    """The issue's reproducer: after a crash the target holds duplicates, so its end offsets run ahead; a group
    drains the source, MM2 stops, and the group reads and commits more there. The gate counts by records: those
    records are missing and MM2 is down, until MM2 is back and has copied them; then the rollback loses nothing."""
    status, produced = crashed_with_duplicates(lab)
    rows = status["partitions"]
    assert sum(row["source_end"] for row in rows) == produced
    # Every source record is on the target, with the duplicates on top: the target's ends are ahead by exactly them.
    assert [row["target_end"] - row["source_end"] for row in rows] == [row["duplicates"] for row in rows]
    source_values, target_values = topic_values(lab.primary, CRASH_TOPIC), topic_values(lab.standby, CRASH_TOPIC)
    assert set(target_values) == set(source_values)
    assert target_values.total() - source_values.total() == status["duplicates_total"] > 0

    first = read_and_commit(lab.primary, CRASH_GROUP, produced, topic=CRASH_TOPIC)
    wait_for(
        "MM2 to checkpoint the group",
        lambda: lab.status((CRASH_GROUP,), topic=CRASH_TOPIC),
        lambda s: s["can_roll_back"],
        log=lab.mm2_log,
    )
    lab.stop_mm2()
    after = [f"after-{i}" for i in range(50 * PARTITIONS)]
    produce_values(lab.primary, CRASH_TOPIC, after, partitions=PARTITIONS)
    second = read_and_commit(lab.primary, CRASH_GROUP, len(after), topic=CRASH_TOPIC)
    assert second["values"] == set(after)
    stopped = wait_for(
        "MM2's silence to show",
        lambda: lab.status((CRASH_GROUP,), topic=CRASH_TOPIC),
        lambda s: not s["mm2"]["alive"],
        timeout=60,
    )
    assert [row["lag"] for row in stopped["partitions"]] == [50] * PARTITIONS
    assert (stopped["lag_ok"], stopped["can_roll_back"], stopped["mm2"]["max_silence_seconds"]) == (False, False, 3)
    reasons = stopped["groups"][CRASH_GROUP]["reasons"]
    assert reasons[0].startswith("MM2 is down: heartbeats from primary on the target's heartbeats topic: none for ")
    assert reasons[0].endswith(" s (max_mm2_silence 3 s)")
    for partition in range(PARTITIONS):
        assert f"{CRASH_TOPIC}-{partition}: 50 source records not on the target > max_lag 0" in reasons

    args = lab.module_args(
        topics=[CRASH_TOPIC], groups=[CRASH_GROUP], max_lag=0, emit_checkpoints_seconds=1, fail_when_unsafe=True
    )
    gate = playbook(playbook_task("infra.obs.kafka_replication_status", args))
    (msg,) = gate.failures()
    assert msg.startswith(
        f"not safe to roll back: replication lag up to 50 records (max_lag 0) | {CRASH_GROUP}: MM2 is down"
    )

    lab.start_mm2()
    wait_for(
        "MM2 back, and the records after its stop on the target",
        lambda: lab.status((CRASH_GROUP,), topic=CRASH_TOPIC),
        lambda s: s["can_roll_back"],
        timeout=120,
        log=lab.mm2_log,
    )
    assert set(topic_values(lab.standby, CRASH_TOPIC)) == set(topic_values(lab.primary, CRASH_TOPIC))
    with lab.clusters() as (source, target):
        plan = kafka_mm2.rollback_plan(source, target, dict(PARAMS, topics=[CRASH_TOPIC], missing="fail"), CRASH_GROUP)
        target.alter_offsets(CRASH_GROUP, kafka_mm2.plan_offsets(plan))
    new = [f"new-{i}" for i in range(10 * PARTITIONS)]
    produce_values(lab.primary, CRASH_TOPIC, new, partitions=PARTITIONS)
    consumer = group_consumer(lab.standby, CRASH_GROUP, topic=CRASH_TOPIC)
    try:
        values = {r.value.decode() for r in read_all(consumer, len(new))}
    finally:
        consumer.close()
    assert set(new) <= values, "records produced after the rollback are missing on the target"
    assert values - set(new) <= first["values"] | second["values"], "read records neither new nor read before"


def test_source_down_every_partition_gets_an_offset(lab, all_replicated):
    """The issue's reproducer of the source-down path: 24 partitions, the group committed on half of them while MM2
    ran and on the other half after it stopped; MM2 checkpointed some of the first half (those it has an offset sync
    for). Without the source nothing tells a partition MM2 did not checkpoint from one the group never read, so every
    partition of the topic on the target gets a plan: the default refuses naming the unchecked ones, missing=earliest
    starts them at the beginning, and a consumer with either auto.offset.reset reads every record the group had not
    read."""
    per_partition, committed_at = 100, 50
    create_topic(lab.primary, HALVES_TOPIC, HALVES_PARTITIONS)
    values = [f"{i % HALVES_PARTITIONS}-{i // HALVES_PARTITIONS}" for i in range(per_partition * HALVES_PARTITIONS)]
    # MM2 takes a new group on by restarting its checkpoint task, which then keeps only the newest offset sync of each
    # partition (Kafka's OffsetSyncStore): a commit behind that sync is never checkpointed. So the records up to the
    # commit come first, the rest once MM2 has checkpointed it; all at once, the test passed only when MM2's syncs
    # happened to lag behind the copy.
    before, after = values[: committed_at * HALVES_PARTITIONS], values[committed_at * HALVES_PARTITIONS :]

    def produce_and_copy(part):
        produce_values(lab.primary, HALVES_TOPIC, part, partitions=HALVES_PARTITIONS)
        wait_for(
            "MM2 to copy the topic", lambda: lab.status((), topic=HALVES_TOPIC), lambda s: s["lag_ok"], log=lab.mm2_log
        )

    produce_and_copy(before)
    first_half, second_half = range(HALVES_PARTITIONS // 2), range(HALVES_PARTITIONS // 2, HALVES_PARTITIONS)

    def commit_on_source(partitions):
        admin = KafkaAdminClient(bootstrap_servers=lab.primary.bootstrap)
        try:
            offsets = {TopicPartition(HALVES_TOPIC, p): OffsetAndMetadata(committed_at, "", -1) for p in partitions}
            admin.alter_group_offsets(HALVES_GROUP, offsets)
        finally:
            admin.close()

    def checkpointed():
        with lab.clusters() as (_, target):
            return kafka_mm2.newest_checkpoints(target, PARAMS, [HALVES_GROUP])[HALVES_GROUP]

    commit_on_source(first_half)
    wait_for("MM2 to checkpoint the group", checkpointed, log=lab.mm2_log)
    produce_and_copy(after)
    time.sleep(3)  # a few more emit intervals: the more of the first half checkpointed, the closer to the issue's
    lab.stop_mm2()
    commit_on_source(second_half)
    checked = {tp.partition for tp, cp in checkpointed().items() if cp["upstream_offset"] == committed_at}
    unchecked = set(range(HALVES_PARTITIONS)) - checked
    print(f"\n{HALVES_GROUP}: MM2 checkpointed partitions {sorted(checked)} of {HALVES_PARTITIONS}")
    assert checked and checked <= set(first_half)

    params = dict(PARAMS, topics=None, missing="fail")
    with lab.clusters() as (_, target):
        with pytest.raises(kafka_mm2.KafkaMM2Error) as refused:
            kafka_mm2.rollback_plan(None, target, params, HALVES_GROUP)
        plan = kafka_mm2.rollback_plan(None, target, dict(params, missing="earliest"), HALVES_GROUP)
        target.alter_offsets(HALVES_GROUP, kafka_mm2.plan_offsets(plan))
    named = {p for p in range(HALVES_PARTITIONS) if f"{HALVES_TOPIC}-{p}: no checkpoint yet" in str(refused.value)}
    assert named == unchecked
    assert {row["partition"]: row["origin"] for row in plan} == {p: "checkpoint" for p in checked} | {
        p: "earliest" for p in unchecked
    }
    unread = {f"{p}-{i}" for p in range(HALVES_PARTITIONS) for i in range(committed_at, per_partition)}
    for reset in ("latest", "earliest"):
        consumer = group_consumer(lab.standby, HALVES_GROUP, topic=HALVES_TOPIC, auto_offset_reset=reset)
        try:
            values = {r.value.decode() for r in read_all(consumer, len(unread))}
        finally:
            consumer.close()
        assert unread - values == set(), f"auto.offset.reset={reset}: records the group had not read are missing"
