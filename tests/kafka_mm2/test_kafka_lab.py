"""The Kafka lab works with the Python client the MM2 tooling uses: a real KRaft broker driven by kafka-python."""

import time
import zipfile
from collections import Counter, defaultdict

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

from .kafka_lab import commit_settled, jmx_agent_jar, lab_version

TOPIC = "orders"
PARTITIONS = 6
MESSAGES = 1000
KEYS = 50
GROUP = "g1"
FIRST_READ = MESSAGES // 2


@pytest.fixture(scope="module")
def admin(kafka_node):
    client = KafkaAdminClient(bootstrap_servers=kafka_node.bootstrap)
    yield client
    client.close()


@pytest.fixture(scope="module")
def produced(kafka_node, admin):
    """TOPIC with PARTITIONS partitions and MESSAGES keyed records (value = sequence number); returns
    {value: (key, partition, offset)} as the broker acknowledged them."""
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
    producer = KafkaProducer(bootstrap_servers=kafka_node.bootstrap, acks="all")
    futures = {}
    for i in range(MESSAGES):
        key = f"key-{i % KEYS}"
        futures[str(i)] = (key, producer.send(TOPIC, key=key.encode(), value=str(i).encode()))
    producer.flush()
    producer.close()
    acked = {}
    for value, (key, future) in futures.items():
        meta = future.get(timeout=10)
        acked[value] = (key, meta.partition, meta.offset)
    return acked


def consume(consumer: KafkaConsumer, count: int, timeout: float = 30) -> list:
    """Poll until at least `count` records came back; returns all of them."""
    records: list = []
    deadline = time.monotonic() + timeout
    while len(records) < count and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    assert len(records) >= count, f"got {len(records)} of {count} records in {timeout} s"
    return records


def group_consumer(kafka_node) -> KafkaConsumer:
    return KafkaConsumer(
        TOPIC,
        bootstrap_servers=kafka_node.bootstrap,
        group_id=GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=100,
    )


@pytest.fixture(scope="module")
def first_read(kafka_node, admin, produced):
    """A member of GROUP reads FIRST_READ records, commits exactly those and leaves; returns the values read,
    the offsets committed and the group as described while the member was active."""
    consumer = group_consumer(kafka_node)
    records = consume(consumer, FIRST_READ)[:FIRST_READ]
    committed = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        committed[tp] = max(committed.get(tp, 0), r.offset + 1)
    commit_settled(consumer, {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in committed.items()})
    active = admin.describe_groups([GROUP])[GROUP]
    consumer.close()
    return {"values": [r.value.decode() for r in records], "committed": committed, "active": active}


def test_keyed_records_land_by_key_and_end_offsets_add_up(kafka_node, produced):
    partitions_of_key = defaultdict(set)
    for key, partition, _ in produced.values():
        partitions_of_key[key].add(partition)
    assert len(partitions_of_key) == KEYS
    assert all(len(p) == 1 for p in partitions_of_key.values()), partitions_of_key
    per_partition = Counter(partition for _, partition, _ in produced.values())
    assert sorted(per_partition) == list(range(PARTITIONS)), (
        f"{KEYS} keys should spread over all {PARTITIONS} partitions"
    )

    consumer = KafkaConsumer(bootstrap_servers=kafka_node.bootstrap)
    try:
        ends = consumer.end_offsets([TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
    finally:
        consumer.close()
    assert sum(ends.values()) == MESSAGES
    assert {tp.partition: end for tp, end in ends.items()} == dict(per_partition)
    # acks=all, one write each: every partition holds offsets 0..n-1 with no gap or duplicate.
    for p, n in per_partition.items():
        assert sorted(off for _, part, off in produced.values() if part == p) == list(range(n))


def test_committed_offsets_read_back_by_the_admin_client(admin, first_read):
    offsets = admin.list_group_offsets(GROUP)[GROUP]
    assert {tp: om.offset for tp, om in offsets.items()} == first_read["committed"]
    assert sum(first_read["committed"].values()) == FIRST_READ


def test_group_has_no_members_after_the_consumer_closed(admin, first_read):
    active = first_read["active"]
    assert active["group_state"] == "Stable"
    assert len(active["members"]) == 1
    assigned = active["members"][0]["member_assignment"]["assigned_partitions"]
    assert assigned == [{"topic": TOPIC, "partitions": list(range(PARTITIONS))}]

    group = admin.describe_groups([GROUP])[GROUP]
    assert group["group_state"] == "Empty"
    assert group["members"] == []


def test_second_member_resumes_where_the_first_left_off(kafka_node, admin, produced, first_read):
    consumer = group_consumer(kafka_node)
    try:
        rest = consume(consumer, MESSAGES - FIRST_READ)
        rest += [r for batch in consumer.poll(timeout_ms=1000).values() for r in batch]
        consumer.commit()
    finally:
        consumer.close()
    values = [r.value.decode() for r in rest]
    assert len(values) == MESSAGES - FIRST_READ
    assert len(set(values)) == len(values), "a record was read twice by the second member"
    assert not set(values) & set(first_read["values"]), "the second member re-read records the first committed"
    assert set(values) | set(first_read["values"]) == set(produced)
    # The group's committed offsets are now the log ends: nothing left to read.
    offsets = admin.list_group_offsets(GROUP)[GROUP]
    assert sum(om.offset for om in offsets.values()) == MESSAGES


def jar_entries(path) -> list[str]:
    with zipfile.ZipFile(path) as jar:
        return jar.namelist()


def test_mirrormaker_and_jmx_agent_are_there(kafka_libs_dir):
    mm2 = [
        jar.name
        for jar in kafka_libs_dir.glob("*.jar")
        if "org/apache/kafka/connect/mirror/MirrorMaker.class" in jar_entries(jar)
    ]
    assert mm2 == [f"connect-mirror-{lab_version('kafka_version')}.jar"]
    agent = jmx_agent_jar(kafka_libs_dir)
    with zipfile.ZipFile(agent) as jar:
        manifest = jar.read("META-INF/MANIFEST.MF").decode()
    assert "Premain-Class: io.prometheus.jmx.JavaAgent" in manifest.splitlines()
