# Copyright: infra.obs maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared code of the MirrorMaker 2 modules (kafka_replication_status, kafka_group_rollback): kafka-python
connections, MM2's checkpoints topic and its records, end offsets, group offsets and group membership.

Checkpoint records (Kafka 4.3 connect-mirror-client, org.apache.kafka.connect.mirror.Checkpoint), big-endian:
key = group STRING, topic STRING, partition INT32 (no version); value = version INT16 (0), upstreamOffset INT64,
offset INT64 (the downstream offset), metadata STRING; STRING = INT16 length + UTF-8. The key's topic is the
target-side name (the policy's remote topic name). Heartbeat records (org.apache.kafka.connect.mirror.Heartbeat),
written by the flow's heartbeat connector into the target's heartbeats topic: key = sourceClusterAlias STRING,
targetClusterAlias STRING; value = version INT16 (0), timestamp INT64 (ms).
"""

from __future__ import annotations

import collections
import re
import struct
import time
import traceback

try:
    from ansible.module_utils.basic import missing_required_lib
except ImportError:  # imported as the plain module kafka_mm2 by roles/mm2/files/mm2_readiness.py, without Ansible
    missing_required_lib = None

try:
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError
    from kafka.structs import OffsetAndMetadata
except ImportError:
    KAFKA_IMPORT_ERROR = traceback.format_exc()
else:
    KAFKA_IMPORT_ERROR = None

CONNECTION_OPTIONS = dict(
    bootstrap_servers=dict(type="list", elements="str", required=True),
    security_protocol=dict(type="str", default="PLAINTEXT", choices=["PLAINTEXT", "SSL", "SASL_SSL"]),
    sasl_mechanism=dict(type="str", choices=["SCRAM-SHA-256", "SCRAM-SHA-512"]),
    username=dict(type="str"),
    password=dict(type="str", no_log=True),
    ssl_cafile=dict(type="path"),
    ssl_certfile=dict(type="path"),
    ssl_keyfile=dict(type="path"),
    ssl_password=dict(type="str", no_log=True),
    ssl_check_hostname=dict(type="bool", default=True),
)


def connection_params(bootstrap_servers, **given):
    """One cluster's connection options as the modules receive them: every option's default (None where it has none)
    with the given ones."""
    return {name: spec.get("default") for name, spec in CONNECTION_OPTIONS.items()} | dict(
        bootstrap_servers=bootstrap_servers, **given
    )


CONNECTION_REQUIRED_IF = [("security_protocol", "SASL_SSL", ("sasl_mechanism", "username", "password"))]
FLOW_OPTIONS = dict(
    source_alias=dict(type="str", required=True),
    replication_policy=dict(type="str", default="identity", choices=["identity", "prefixed"]),
    separator=dict(type="str", default="."),
    checkpoints_topic=dict(type="str"),
)
# MM2's replication policies by infra.obs's name for them (Kafka 4.x connect-mirror-client).
POLICY_CLASSES = {
    "identity": "org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
    "prefixed": "org.apache.kafka.connect.mirror.DefaultReplicationPolicy",
}
# MM2's own excludes (DefaultTopicFilter, DefaultGroupFilter): a team's exclude list would replace them, so infra.obs
# renders them beside it, and the readiness exporter applies them to what it reads.
MM2_TOPICS_EXCLUDE = (r".*[\-\.]internal", r".*\.replica", r"__.*")
MM2_GROUPS_EXCLUDE = (r"console-consumer-.*", r"connect-.*", r"__.*")
CHECKPOINT_VERSION = 0
HEARTBEAT_VERSION = 0
HEARTBEATS_TOPIC = "heartbeats"
# Heartbeat records read back from each partition's end: the target's heartbeats topic takes those of every flow
# into it, one per flow and emit interval.
HEARTBEATS_TAIL = 200
# MM2 counts as down after this many times the larger of its heartbeat and checkpoint emit intervals in silence.
SILENCE_FACTOR = 3
LIVENESS_OPTIONS = dict(
    emit_heartbeats_seconds=dict(type="int", default=1),
    emit_checkpoints_seconds=dict(type="int", default=60),
    max_mm2_silence=dict(type="int"),
)
# Records read on the target from where its timestamps reach a source record's before giving up the search.
MAX_SCAN = 10_000
# A group with members is in one of these states; Empty and Dead ones have none.
ACTIVE_STATES = ("Stable", "PreparingRebalance", "CompletingRebalance", "Assigning", "Reconciling")


class KafkaMM2Error(Exception):
    pass


def require_kafka(module):
    if KAFKA_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("kafka-python"), exception=KAFKA_IMPORT_ERROR)


def client_config(params):
    """kafka-python settings for one cluster's connection options (module parameters)."""
    config = dict(
        bootstrap_servers=params["bootstrap_servers"],
        security_protocol=params["security_protocol"],
        request_timeout_ms=30000,
    )
    if params["security_protocol"] == "SASL_SSL":
        config.update(
            sasl_mechanism=params["sasl_mechanism"],
            sasl_plain_username=params["username"],
            sasl_plain_password=params["password"],
        )
    if params["security_protocol"] != "PLAINTEXT":
        config.update(ssl_check_hostname=params["ssl_check_hostname"])
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"):
            if params.get(name):
                config[name] = params[name]
    return config


def _retried(call, *args, timeout=15.0):
    """call(*args), again while it fails with a retriable error: a cluster without consumer groups yet answers
    COORDINATOR_NOT_AVAILABLE until it has created __consumer_offsets."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call(*args)
        except KafkaError as error:
            if not error.retriable or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


class Cluster:
    """One cluster's consumer (unsubscribed, no group: assign and read only) and admin client, opened lazily."""

    def __init__(self, params):
        self.config = client_config(params)
        self._consumer = None
        self._admin = None

    @property
    def consumer(self):
        if self._consumer is None:
            self._consumer = KafkaConsumer(enable_auto_commit=False, **self.config)
        return self._consumer

    @property
    def admin(self):
        if self._admin is None:
            self._admin = KafkaAdminClient(**self.config)
        return self._admin

    def close(self):
        for client in (self._consumer, self._admin):
            if client is not None:
                client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def topics(self):
        return self.consumer.topics()

    def partitions(self, topics):
        """Every TopicPartition of the existing topics among topics."""
        found = []
        for topic in sorted(set(topics)):
            found += [TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic) or ())]
        return found

    def end_offsets(self, partitions):
        return self.consumer.end_offsets(list(partitions)) if partitions else {}

    def beginning_offsets(self, partitions):
        return self.consumer.beginning_offsets(list(partitions)) if partitions else {}

    def committed(self, group):
        """{TopicPartition: offset} the group has committed."""
        offsets = _retried(self.admin.list_group_offsets, {group: None}).get(group, {})
        return {tp: om.offset for tp, om in offsets.items() if om.offset >= 0}

    def group_state(self, group):
        """(state, member count): Dead with no members for a group the cluster does not know."""
        described = _retried(self.admin.describe_groups, [group])[group]
        return described["group_state"], len(described["members"])

    def alter_offsets(self, group, offsets):
        """Commit {TopicPartition: offset} for group without joining it (the broker refuses while it has members)."""
        offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}
        errors = _retried(self.admin.alter_group_offsets, group, offsets)
        failed = {f"{tp.topic}-{tp.partition}": err.__name__ for tp, err in errors.items() if err.errno != 0}
        if failed:
            raise KafkaMM2Error(f"the target refused offsets of group {group}: {failed}")

    def read_topic(self, topic, timeout=30.0):
        """Every record of topic, partition by partition in offset order, reading up to the end offsets of now."""
        partitions = self.partitions([topic])
        if not partitions:
            raise KafkaMM2Error(f"topic {topic} does not exist")
        consumer = self.consumer
        ends = consumer.end_offsets(partitions)
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise KafkaMM2Error(f"could not read {topic} to its end in {timeout} s")
            for batch in consumer.poll(timeout_ms=500).values():
                records += [r for r in batch if r.offset < ends[TopicPartition(r.topic, r.partition)]]
        consumer.unsubscribe()
        return records

    def records_from(self, tp, offset, end, timeout=30.0):
        """The records of one partition from offset up to (not including) end, in offset order, lazily."""
        consumer = self.consumer
        consumer.assign([tp])
        consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout
        try:
            while consumer.position(tp) < end:
                if time.monotonic() > deadline:
                    raise KafkaMM2Error(f"could not read {tp_name(tp)} from {offset} to {end} in {timeout} s")
                for record in consumer.poll(timeout_ms=500).get(tp, []):
                    if record.offset >= end:
                        return
                    yield record
        finally:
            consumer.unsubscribe()

    def record_at(self, tp, offset):
        """The record at offset of one partition, None when it holds none there (compacted away or beyond the end)."""
        end = self.end_offsets([tp])[tp]
        if offset >= end:
            return None
        record = next(self.records_from(tp, offset, end), None)
        return record if record is not None and record.offset == offset else None

    def last_record(self, tp, start, end, step=50):
        """The last record of one partition below end (None when it holds none from start): read from a little before
        end, further back while that span holds only transaction markers."""
        low = end
        while low > start:
            low = max(start, low - step)
            records = collections.deque(self.records_from(tp, low, end), maxlen=1)
            if records:
                return records[0]
            step *= 4
        return None

    def first_copy(self, tp, record, max_scan=MAX_SCAN):
        """The lowest offset of tp holding a copy of record (from another cluster): same timestamp, key, value and
        headers. MM2 keeps each record's timestamp, so the search starts where the partition's timestamps reach the
        record's (offsetsForTimes: no earlier copy can exist) and reads at most max_scan records from there. None
        when no copy is found (not replicated yet, or the topic's timestamps are the broker's LogAppendTime)."""
        found = self.consumer.offsets_for_times({tp: record.timestamp})[tp]
        if found is None:
            return None
        end = min(self.end_offsets([tp])[tp], found.offset + max_scan)
        wanted = (record.timestamp, record.key, record.value, list(record.headers or ()))
        for candidate in self.records_from(tp, found.offset, end):
            if (candidate.timestamp, candidate.key, candidate.value, list(candidate.headers or ())) == wanted:
                return candidate.offset
        return None


def _string(data, at):
    """Kafka's STRING type (never null) at offset at: the text and the offset after it."""
    (length,) = struct.unpack_from(">h", data, at)
    return data[at + 2 : at + 2 + length].decode("utf-8"), at + 2 + length


def decode_checkpoint(key, value):
    """(group, topic, partition), {upstream_offset, downstream_offset, metadata} from one checkpoint record."""
    group, at = _string(key, 0)
    topic, at = _string(key, at)
    (partition,) = struct.unpack_from(">i", key, at)
    (version,) = struct.unpack_from(">h", value, 0)
    if version != CHECKPOINT_VERSION:
        raise KafkaMM2Error(f"checkpoint value version {version}: this module reads version {CHECKPOINT_VERSION}")
    upstream, downstream = struct.unpack_from(">qq", value, 2)
    metadata = _string(value, 18)[0]
    return (group, topic, partition), dict(upstream_offset=upstream, downstream_offset=downstream, metadata=metadata)


def decode_heartbeat(key, value):
    """(source alias, target alias, timestamp in ms) of one heartbeat record."""
    source, at = _string(key, 0)
    target = _string(key, at)[0]
    version, timestamp = struct.unpack_from(">hq", value, 0)
    if version != HEARTBEAT_VERSION:
        raise KafkaMM2Error(f"heartbeat value version {version}: this module reads version {HEARTBEAT_VERSION}")
    return source, target, timestamp


def max_silence(params):
    """Seconds without a heartbeat after which MM2 counts as down: max_mm2_silence, else SILENCE_FACTOR times the
    larger of the flow's heartbeat and checkpoint emit intervals."""
    if params.get("max_mm2_silence") is not None:
        return params["max_mm2_silence"]
    return SILENCE_FACTOR * max(params["emit_heartbeats_seconds"], params["emit_checkpoints_seconds"])


def mm2_liveness(target, params):
    """Whether MM2 runs the flow: dict(alive, heartbeat_age_seconds (None without any), max_silence_seconds, reason).
    The flow's heartbeat connector writes a heartbeat from source_alias into the target's heartbeats topic every
    emit interval, whether records flow or not (MM2 writes a checkpoint only when a translation changes, so its
    silence says nothing). Ages are read against this host's clock."""
    limit = max_silence(params)
    newest = None
    if HEARTBEATS_TOPIC in target.topics():
        partitions = target.partitions([HEARTBEATS_TOPIC])
        starts, ends = target.beginning_offsets(partitions), target.end_offsets(partitions)
        for tp in partitions:
            for record in target.records_from(tp, max(starts[tp], ends[tp] - HEARTBEATS_TAIL), ends[tp]):
                source, _target, timestamp = decode_heartbeat(record.key, record.value)
                if source == params["source_alias"]:
                    newest = max(newest or timestamp, timestamp)
    age = None if newest is None else round(max(0, time.time() * 1000 - newest) / 1000, 3)
    alive = age is not None and age <= limit
    silence = "never" if age is None else f"none for {age} s"
    reason = None
    if not alive:
        reason = (
            f"MM2 is down: heartbeats from {params['source_alias']} on the target's {HEARTBEATS_TOPIC} topic: "
            f"{silence} (max_mm2_silence {limit} s)"
        )
    return dict(alive=alive, heartbeat_age_seconds=age, max_silence_seconds=limit, reason=reason)


def checkpoints_topic(params):
    """MM2's checkpoints topic on the target: <source><sep>checkpoints<sep>internal. DefaultReplicationPolicy
    (and IdentityReplicationPolicy, which inherits it) joins the parts with the separator, or '.' when
    replication.policy.internal.topic.separator.enabled is false; pass checkpoints_topic then."""
    if params.get("checkpoints_topic"):
        return params["checkpoints_topic"]
    sep = params["separator"] if params["replication_policy"] == "prefixed" else "."
    return f"{params['source_alias']}{sep}checkpoints{sep}internal"


def remote_topic(params, topic):
    """The name MM2 gives topic on the target."""
    if params["replication_policy"] == "identity":
        return topic
    return f"{params['source_alias']}{params['separator']}{topic}"


def remote_partition(params, tp):
    """The target's TopicPartition for a source one."""
    return TopicPartition(remote_topic(params, tp.topic), tp.partition)


def upstream_topic(params, topic):
    """The source name of a target topic (None if the policy would not have named it so)."""
    if params["replication_policy"] == "identity":
        return topic
    prefix = f"{params['source_alias']}{params['separator']}"
    return topic[len(prefix) :] if topic.startswith(prefix) else None


class CheckpointLog:
    """The newest checkpoint record per (group, topic, partition) of a checkpoints topic, read on from where the last
    read ended: MM2 only appends to it, so a long-lived reader (the readiness exporter, one per direction) reads each
    record once. A position outside a partition's log (the topic recreated) starts it all over."""

    def __init__(self):
        self.positions = {}  # TopicPartition of the checkpoints topic -> next offset to read
        self.newest = {}  # (group, topic, partition) -> (checkpoint, record timestamp in ms)
        self.records_read = 0

    def read(self, target, topic):
        """self.newest once every record of topic up to its end offsets of now is read."""
        partitions = target.partitions([topic])
        starts, ends = target.beginning_offsets(partitions), target.end_offsets(partitions)
        if any(not starts[tp] <= self.positions.get(tp, starts[tp]) <= ends[tp] for tp in partitions):
            self.positions, self.newest = {}, {}
        for tp in partitions:
            for record in target.records_from(tp, self.positions.get(tp, starts[tp]), ends[tp]):
                key, checkpoint = decode_checkpoint(record.key, record.value)
                self.newest[key] = (checkpoint, record.timestamp)
                self.records_read += 1
            self.positions[tp] = ends[tp]
        return self.newest


def newest_checkpoints(target, params, groups, log=None):
    """{group: {TopicPartition (source name): checkpoint}} from the checkpoints topic on target, keeping per
    (group, topic, partition) the record written last; each checkpoint also carries the record's timestamp and
    its age in seconds. log, a CheckpointLog kept between calls, reads only what was written since the last."""
    wanted = set(groups)
    found = {group: {} for group in wanted}
    checkpoints = checkpoints_topic(params)
    if checkpoints not in target.topics():  # MM2 creates it with its first checkpoint
        return found
    now_ms = time.time() * 1000
    for (group, topic, partition), (checkpoint, timestamp) in (
        (log or CheckpointLog()).read(target, checkpoints).items()
    ):
        source_topic = upstream_topic(params, topic)
        if group not in wanted or source_topic is None:
            continue
        aged = dict(checkpoint, timestamp_ms=timestamp, age_seconds=round(max(0, now_ms - timestamp) / 1000, 3))
        found[group][TopicPartition(source_topic, partition)] = aged
    return found


def is_active(state, members):
    return members > 0 or state in ACTIVE_STATES


def tp_name(tp):
    return f"{tp.topic}-{tp.partition}"


def select_topics(source, params):
    """The source topics the flow replicates: the listed ones (each must exist) or those matching topics_regex."""
    existing = source.topics()
    if params.get("topics"):
        unknown = sorted(set(params["topics"]) - existing)
        if unknown:
            raise KafkaMM2Error(f"topics not found on the source: {', '.join(unknown)}")
        return sorted(set(params["topics"]))
    pattern = re.compile(params["topics_regex"])
    return sorted(t for t in existing if pattern.fullmatch(t) and not t.startswith("__"))


def partition_lag(source, target, params, topics):
    """{TopicPartition (source name): row} with source_end, target_end, and lag by the records themselves: the
    target's last record is found on the source (first_copy), and every source record after it counts as missing.
    Offsets alone cannot tell: after an MM2 crash the target holds duplicates and runs ahead of the source. MM2
    writes each partition in order, so everything before that record is on the target. duplicates counts the target
    records beyond the source's up to it, from both logs' starts. A partition missing on the target lags by all its
    records; one whose last record is not on the source (written to the target by another producer, gone from the
    source, or stamped anew by a target topic with LogAppendTime) has lag None and a problem."""
    partitions = source.partitions(topics)
    remote = {tp: remote_partition(params, tp) for tp in partitions}
    source_start, source_end = source.beginning_offsets(partitions), source.end_offsets(partitions)
    replicas = target.partitions({tp.topic for tp in remote.values()})
    target_start, target_end = target.beginning_offsets(replicas), target.end_offsets(replicas)
    rows = {}
    for tp in partitions:
        end = target_end.get(remote[tp])
        row = rows[tp] = dict(
            topic=tp.topic,
            partition=tp.partition,
            target_topic=remote[tp].topic,
            source_end=source_end[tp],
            target_end=end,
            replicated_through=None,
            duplicates=0,
            problem=None,
        )
        last = None if end is None else target.last_record(remote[tp], target_start[remote[tp]], end)
        if last is None:
            row["lag"] = source_end[tp] - source_start[tp]
            continue
        through = source.first_copy(tp, last) if last.timestamp >= 0 else None
        if through is None:
            row["lag"] = None
            row["problem"] = (
                f"{tp_name(tp)}: the target's last record (offset {last.offset}) is not on the source: written there "
                "by another producer, gone from the source, or stamped anew (a target topic with LogAppendTime); "
                "replication cannot be proven by its records"
            )
            continue
        row.update(
            replicated_through=through,
            lag=source_end[tp] - through - 1,
            duplicates=max(0, (last.offset + 1 - target_start[remote[tp]]) - (through + 1 - source_start[tp])),
        )
    return rows


def translate_by_records(source, target, tp, remote_tp, committed):
    """Where group offset committed of source partition tp goes on the target, found from the records themselves
    rather than MM2's offset syncs: one past the first copy on the target of the last record the group read (the
    target's start when it read nothing). Checked against the first record it has not read: its first copy must be
    at or after that offset; the target records before it are re-read (copies of records the group had read, such
    as the duplicates MM2 writes after a crash). Returns dict(new_offset, reread), or None when a record is not
    (yet) on the target or cannot be matched (compacted away, no timestamp)."""
    source_end = source.end_offsets([tp])[tp]
    if committed <= source.beginning_offsets([tp])[tp]:
        new = target.beginning_offsets([remote_tp])[remote_tp]
    else:
        last_read = source.record_at(tp, committed - 1)
        if last_read is None or last_read.timestamp < 0:
            return None
        copy = target.first_copy(remote_tp, last_read)
        if copy is None:
            return None
        new = copy + 1
    if committed >= source_end:
        return dict(new_offset=new, reread=target.end_offsets([remote_tp])[remote_tp] - new)
    unread = source.record_at(tp, committed)
    if unread is None or unread.timestamp < 0:
        return None
    copy = target.first_copy(remote_tp, unread)
    if copy is None:
        return None
    if copy < new:
        raise KafkaMM2Error(
            f"{tp_name(tp)}: on the target the first unread record (source offset {committed}) comes at {copy}, "
            f"before the last read one (at {new - 1}): the target's order differs from the source's"
        )
    return dict(new_offset=new, reread=copy - new)


def checkpoint_problem(tp, committed, checkpoint, max_age=None, max_reread=None):
    """Why MM2's newest checkpoint cannot translate a group's committed offset of tp (None when it can): there is
    none, it is ahead of the commit (the group was reset on the source), it translates an older offset and is more
    than max_age seconds old, or (identity policy: the logs line up) it re-reads more than max_reread records."""
    if checkpoint is None:
        return f"{tp_name(tp)}: no checkpoint yet (MM2 has not translated this group's offset)"
    if committed is None:
        return None
    if checkpoint["upstream_offset"] > committed:
        return (
            f"{tp_name(tp)}: checkpoint upstream offset {checkpoint['upstream_offset']} is ahead of the committed "
            f"offset {committed} (the group was reset on the source): translating it would skip records"
        )
    if max_age is not None and checkpoint["upstream_offset"] < committed and checkpoint["age_seconds"] > max_age:
        return (
            f"{tp_name(tp)}: newest checkpoint translates offset {checkpoint['upstream_offset']}, not the "
            f"committed {committed}, and is {checkpoint['age_seconds']} s old (max_checkpoint_age {max_age})"
        )
    if max_reread is not None and committed - checkpoint["downstream_offset"] > max_reread:
        return (
            f"{tp_name(tp)}: the checkpoint's downstream offset {checkpoint['downstream_offset']} would re-read "
            f"{committed - checkpoint['downstream_offset']} records > max_reread {max_reread}"
        )
    return None


def group_verdict(
    committed, checkpoints, lag_rows, target_state, params, *, translate=None, liveness=None, source_state=None
):
    """Whether a group could roll back to the target now, and why not. MM2 must be alive (liveness, from
    mm2_liveness, when given), and each partition the group has committed on a replicated topic needs a lag by records
    of at most max_lag and a translation: MM2's newest checkpoint (see checkpoint_problem) or, where that fails and
    translate is given, translate(tp, committed) (translate_by_records), which must re-read at most max_reread
    records. No member may be active on the target, nor, with params['require_stopped_on_source'], on the source
    (source_state; the verdict then says active_on_source)."""
    max_lag, max_reread = params["max_lag"], params.get("max_reread")
    reasons = [liveness["reason"]] if liveness and not liveness["alive"] else []
    partitions = []
    in_scope = {tp: offset for tp, offset in committed.items() if tp in lag_rows}
    for tp, offset in sorted(in_scope.items()):
        checkpoint = checkpoints.get(tp)
        lag = lag_rows[tp]["lag"]
        row = dict(topic=tp.topic, partition=tp.partition, committed=offset, lag=lag, checkpoint=checkpoint)
        partitions.append(row)
        if lag is None:
            reasons.append(lag_rows[tp]["problem"])
        elif lag > max_lag:
            reasons.append(f"{tp_name(tp)}: {lag} source records not on the target > max_lag {max_lag}")
        problem = checkpoint_problem(tp, offset, checkpoint, params["max_checkpoint_age"], max_reread)
        if problem and translate is not None:
            row["by_records"] = translate(tp, offset)
            if row["by_records"] is None:
                problem += "; nor is it found by its records on the target yet"
            elif max_reread is not None and row["by_records"]["reread"] > max_reread:
                problem += f"; by its records it would re-read {row['by_records']['reread']}"
            else:
                problem = None
        if problem:
            reasons.append(problem)
    if not in_scope:
        reasons.append("no committed offsets on the source for the selected topics")
    state, members = target_state
    if is_active(state, members):
        reasons.append(f"{members} active member(s) on the target (state {state}): a rollback refuses until they stop")
    active_on_source = source_state is not None and is_active(*source_state)
    if active_on_source and params.get("require_stopped_on_source"):
        state, members = source_state
        reasons.append(f"{members} active member(s) on the source (state {state}): stop its consumers there first")
    ignored = sorted(tp_name(tp) for tp in set(committed) - set(in_scope))
    verdict = dict(can_roll_back=not reasons, reasons=reasons, partitions=partitions, ignored_partitions=ignored)
    if source_state is not None:
        verdict["active_on_source"] = active_on_source
    return verdict


def replication_status(source, target, params, checkpoint_log=None):
    """The result of kafka_replication_status (see its RETURN); checkpoint_log, a CheckpointLog kept between calls,
    reads the checkpoints topic on from where the last call ended."""
    topics = select_topics(source, params)
    lag_rows = partition_lag(source, target, params, topics)
    liveness = mm2_liveness(target, params)
    groups = params["groups"]
    checkpoints = newest_checkpoints(target, params, groups, checkpoint_log) if groups else {}
    verdicts = {}
    for group in groups:
        verdict = group_verdict(
            source.committed(group),
            checkpoints[group],
            lag_rows,
            target.group_state(group),
            params,
            translate=lambda tp, offset: translate_by_records(source, target, tp, remote_partition(params, tp), offset),
            liveness=liveness,
            source_state=source.group_state(group),
        )
        verdicts[group] = verdict
    lags = [row["lag"] for row in lag_rows.values() if row["lag"] is not None]
    unproven = [row["problem"] for row in lag_rows.values() if row["lag"] is None]
    lag_ok = not unproven and all(lag <= params["max_lag"] for lag in lags)
    unsafe = sorted(group for group, verdict in verdicts.items() if not verdict["can_roll_back"])
    return dict(
        topics=topics,
        partitions=list(lag_rows.values()),
        lag_total=sum(lags),
        lag_max=max(lags, default=0),
        lag_ok=lag_ok,
        unproven_partitions=unproven,
        duplicates_total=sum(row["duplicates"] for row in lag_rows.values()),
        mm2=liveness,
        checkpoints_topic=checkpoints_topic(params),
        groups=verdicts,
        unsafe_groups=unsafe,
        can_roll_back=lag_ok and liveness["alive"] and not unsafe,
    )


def rollback_plan(source, target, params, group):
    """Per partition of group: where it stands on the source and the target and the offset to commit on the target.
    The newest checkpoint's downstream offset where checkpoint_problem finds none (with params['max_reread']); else,
    with the source, the translation by records (translate_by_records); else params['missing'] for partitions with
    no checkpoint. With the source, the partitions are those the group committed there or MM2 checkpointed; without
    it, every partition of the topics (params['topics'], else those of the group's checkpoints) as the target has
    them, since a partition MM2 did not checkpoint cannot be told from one the group never read. Raises
    KafkaMM2Error when the plan would lose records or cannot be made."""
    checkpoints = newest_checkpoints(target, params, [group])[group]
    source_committed = source.committed(group) if source is not None else {}
    wanted = set(params["topics"] or ())
    partitions = {tp for tp in set(checkpoints) | set(source_committed) if not wanted or tp.topic in wanted}
    topics = {tp.topic for tp in partitions} | wanted
    absent = sorted({remote_topic(params, topic) for topic in topics} - target.topics())
    if absent:
        raise KafkaMM2Error(f"topics not found on the target: {', '.join(absent)}")
    if source is None:
        upstream = {remote_topic(params, topic): topic for topic in topics}
        partitions |= {TopicPartition(upstream[r.topic], r.partition) for r in target.partitions(upstream)}
    partitions = sorted(partitions)
    if not partitions:
        raise KafkaMM2Error(f"group {group} has no checkpoint in {checkpoints_topic(params)} and no committed offsets")
    remote = {tp: remote_partition(params, tp) for tp in partitions}
    target_end = target.end_offsets(remote.values())
    target_start = target.beginning_offsets(remote.values())
    target_committed = target.committed(group)
    plan = []
    unplanned = []
    for tp in partitions:
        checkpoint = checkpoints.get(tp)
        committed = source_committed.get(tp)
        problem = checkpoint_problem(tp, committed, checkpoint, max_reread=params.get("max_reread"))
        by_records = None
        if problem and source is not None and committed is not None:
            by_records = translate_by_records(source, target, tp, remote[tp], committed)
        if not problem:
            new, origin = checkpoint["downstream_offset"], "checkpoint"
            reread = None if committed is None else committed - new
        elif by_records is not None:
            new, origin, reread = by_records["new_offset"], "records", by_records["reread"]
        elif checkpoint is None and params["missing"] != "fail":
            new = (target_start if params["missing"] == "earliest" else target_end)[remote[tp]]
            origin, reread = params["missing"], None
        else:
            unplanned.append(problem + ("; nor is it found by its records on the target" if source else ""))
            continue
        if new > target_end[remote[tp]]:
            raise KafkaMM2Error(
                f"{tp_name(tp)}: offset {new} is beyond the target's end {target_end[remote[tp]]} (topic recreated?)"
            )
        plan.append(
            dict(
                topic=tp.topic,
                target_topic=remote[tp].topic,
                partition=tp.partition,
                source_committed=committed,
                checkpoint_upstream=checkpoint["upstream_offset"] if checkpoint else None,
                checkpoint_downstream=checkpoint["downstream_offset"] if checkpoint else None,
                checkpoint_age_seconds=checkpoint["age_seconds"] if checkpoint else None,
                target_committed=target_committed.get(remote[tp]),
                new_offset=new,
                origin=origin,
                reread=reread,
            )
        )
    if unplanned:
        raise KafkaMM2Error(
            f"group {group} cannot be translated: {' | '.join(unplanned)}. Wait for MM2 to catch up, or set missing "
            "to earliest (re-read partitions without a checkpoint) or latest (skip what they hold)"
        )
    return plan


def plan_offsets(plan):
    """{TopicPartition (target name): new offset} of a plan."""
    return {TopicPartition(row["target_topic"], row["partition"]): row["new_offset"] for row in plan}
