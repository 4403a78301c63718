"""module_utils/kafka_mm2 without a cluster: topic names under both replication policies, checkpoint decoding and
the can_roll_back rule, one reason per broken condition."""

import struct

import pytest
from ansible_collections.infra.obs.plugins.module_utils import kafka_mm2
from kafka import TopicPartition

IDENTITY = dict(source_alias="primary", replication_policy="identity", separator=".", checkpoints_topic=None)
PREFIXED = dict(IDENTITY, replication_policy="prefixed", separator="_")
TP = TopicPartition("orders.events", 0)
RULES = dict(max_lag=10, max_checkpoint_age=60)


def test_topic_names_follow_the_policy():
    assert kafka_mm2.checkpoints_topic(IDENTITY) == "primary.checkpoints.internal"
    assert kafka_mm2.checkpoints_topic(PREFIXED) == "primary_checkpoints_internal"
    assert kafka_mm2.checkpoints_topic(dict(PREFIXED, checkpoints_topic="x")) == "x"
    assert kafka_mm2.remote_topic(IDENTITY, "orders.events") == "orders.events"
    assert kafka_mm2.remote_topic(PREFIXED, "orders.events") == "primary_orders.events"
    assert kafka_mm2.upstream_topic(PREFIXED, "primary_orders.events") == "orders.events"
    assert kafka_mm2.upstream_topic(PREFIXED, "standby_orders.events") is None


def test_checkpoint_decodes_from_its_wire_layout():
    key = struct.pack(">h", 3) + b"grp" + struct.pack(">h", 1) + b"t" + struct.pack(">i", 5)
    value = struct.pack(">hqqh", 0, 1234, 1230, 2) + b"md"
    assert kafka_mm2.decode_checkpoint(key, value) == (
        ("grp", "t", 5),
        {"upstream_offset": 1234, "downstream_offset": 1230, "metadata": "md"},
    )
    with pytest.raises(kafka_mm2.KafkaMM2Error, match="version 1"):
        kafka_mm2.decode_checkpoint(key, struct.pack(">hqqh", 1, 1, 1, 0))


def verdict(committed=100, lag=0, checkpoint=(100, 98, 500.0), target=("Empty", 0), *, problem=None, liveness=None):
    upstream, downstream, age = checkpoint or (None, None, None)
    checkpoints = (
        {TP: dict(upstream_offset=upstream, downstream_offset=downstream, age_seconds=age)} if checkpoint else {}
    )
    rows = {TP: dict(lag=lag, problem=problem)}
    return kafka_mm2.group_verdict({TP: committed}, checkpoints, rows, target, RULES, liveness=liveness)


def test_heartbeat_decodes_from_its_wire_layout():
    key = struct.pack(">h", 7) + b"primary" + struct.pack(">h", 7) + b"standby"
    assert kafka_mm2.decode_heartbeat(key, struct.pack(">hq", 0, 1796323880224)) == (
        "primary",
        "standby",
        1796323880224,
    )
    with pytest.raises(kafka_mm2.KafkaMM2Error, match="heartbeat value version 2"):
        kafka_mm2.decode_heartbeat(key, struct.pack(">hq", 2, 1))


def test_mm2_is_down_after_three_times_the_larger_emit_interval_unless_told():
    intervals = dict(emit_heartbeats_seconds=1, emit_checkpoints_seconds=60)
    assert kafka_mm2.max_silence(intervals) == 180
    assert kafka_mm2.max_silence(dict(intervals, emit_heartbeats_seconds=90)) == 270
    assert kafka_mm2.max_silence(dict(intervals, max_mm2_silence=20)) == 20


def test_members_on_the_source_block_only_when_the_gate_asks():
    def judged(**params):
        rows = {TP: dict(lag=0, problem=None)}
        checkpoints = {TP: dict(upstream_offset=100, downstream_offset=98, age_seconds=1.0)}
        rules = dict(RULES, **params)
        return kafka_mm2.group_verdict({TP: 100}, checkpoints, rows, ("Empty", 0), rules, source_state=("Stable", 3))

    free = judged()
    assert (free["can_roll_back"], free["reasons"], free["active_on_source"]) == (True, [], True)
    assert judged(require_stopped_on_source=True)["reasons"] == [
        "3 active member(s) on the source (state Stable): stop its consumers there first"
    ]
    assert "active_on_source" not in verdict()


def test_mm2_down_and_an_unproven_partition_are_reasons():
    down = dict(alive=False, reason="MM2 is down: ...")
    assert verdict(liveness=down)["reasons"] == ["MM2 is down: ..."]
    assert verdict(liveness=dict(alive=True, reason=None))["can_roll_back"] is True
    unproven = verdict(lag=None, problem="orders.events-0: the target's last record (offset 7) is not on the source")
    assert unproven["reasons"] == ["orders.events-0: the target's last record (offset 7) is not on the source"]


def test_a_checkpoint_of_the_very_commit_can_roll_back_however_old():
    result = verdict()
    assert result["can_roll_back"] is True and result["reasons"] == []


def test_a_checkpoint_behind_the_commit_only_while_recent():
    assert verdict(checkpoint=(90, 88, 30.0))["can_roll_back"] is True
    assert verdict(checkpoint=(90, 88, 61.0))["reasons"] == [
        "orders.events-0: newest checkpoint translates offset 90, not the committed 100, and is 61.0 s old "
        "(max_checkpoint_age 60)"
    ]


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        (dict(lag=11), "orders.events-0: 11 source records not on the target > max_lag 10"),
        (dict(checkpoint=None), "orders.events-0: no checkpoint yet (MM2 has not translated this group's offset)"),
        (dict(committed=50), "orders.events-0: checkpoint upstream offset 100 is ahead of the committed offset 50"),
        (dict(target=("Stable", 2)), "2 active member(s) on the target (state Stable)"),
    ],
)
def test_each_unsafe_condition_gives_its_reason(case, reason):
    result = verdict(**case)
    assert result["can_roll_back"] is False
    (only,) = result["reasons"]
    assert only.startswith(reason)


def test_max_reread_asks_for_a_closer_translation():
    close = dict(RULES, max_reread=2)
    checkpoints = {TP: dict(upstream_offset=100, downstream_offset=98, age_seconds=1.0)}
    assert kafka_mm2.group_verdict({TP: 100}, checkpoints, {TP: dict(lag=0)}, ("Empty", 0), close)["reasons"] == []
    far = dict(close, max_reread=1)
    (reason,) = kafka_mm2.group_verdict({TP: 100}, checkpoints, {TP: dict(lag=0)}, ("Empty", 0), far)["reasons"]
    assert reason.startswith(
        "orders.events-0: the checkpoint's downstream offset 98 would re-read 2 records > max_reread 1"
    )


def test_partitions_of_unselected_topics_are_ignored_and_no_commit_is_unsafe():
    other = TopicPartition("billing", 0)
    result = kafka_mm2.group_verdict({other: 5}, {}, {TP: dict(lag=0)}, ("Empty", 0), RULES)
    assert result["ignored_partitions"] == ["billing-0"]
    assert result["reasons"] == ["no committed offsets on the source for the selected topics"]


def test_where_the_checkpoint_fails_a_translation_by_records_may_stand_in():
    far = dict(RULES, max_reread=1)
    checkpoints = {TP: dict(upstream_offset=100, downstream_offset=70, age_seconds=1.0)}
    asked = []

    def translate(reread):
        def by_records(tp, offset):
            asked.append((tp, offset))
            return None if reread is None else dict(new_offset=offset, reread=reread)

        return by_records

    def judge(reread):
        return kafka_mm2.group_verdict(
            {TP: 100}, checkpoints, {TP: dict(lag=0)}, ("Empty", 0), far, translate=translate(reread)
        )

    exact = judge(0)
    assert exact["reasons"] == [] and exact["partitions"][0]["by_records"] == dict(new_offset=100, reread=0)
    assert asked == [(TP, 100)]
    (reason,) = judge(5)["reasons"]
    assert reason.endswith("would re-read 30 records > max_reread 1; by its records it would re-read 5")
    (reason,) = judge(None)["reasons"]
    assert reason.endswith("; nor is it found by its records on the target yet")
    asked.clear()
    close = {TP: dict(upstream_offset=100, downstream_offset=100, age_seconds=1.0)}
    kafka_mm2.group_verdict({TP: 100}, close, {TP: dict(lag=0)}, ("Empty", 0), far, translate=translate(0))
    assert asked == [], "a usable checkpoint needs no search of the target"
