"""MirrorMaker 2 benchmark: two real single-node KRaft Kafka clusters on loopback and a real dedicated MirrorMaker 2
started from the properties our plugin_utils/mm2.py renders for the lab's orders flow (tests/kafka_mm2's Lab), then
1. a producer-only baseline: a fixed produce rate into the source, read back by a consumer on the same cluster;
2. the same rate into a replicated topic, read by a consumer on the target: replicated throughput and end-to-end
   replication lag, as ratios to the baseline; then an unthrottled burst timed until the target holds all of it;
3. the rollback of one consumer group over 100 partitions with the kafka_group_rollback module's own code
   (module_utils/kafka_mm2.py: rollback_plan, alter_offsets, read back);
4. a group stopped mid-log (12,345 of 20,000 records over 24 partitions): the gate's wait, the plan's time and
   re-reads, beside what MM2's checkpoints alone would give.

Prints a Markdown report on stdout (progress on stderr). Exits 1 only on a functional failure: a cluster or MM2 that
does not start or dies, records that never arrive, a rollback that fails or reads back wrong; a missed goal is
reported as "goal missed". See README.md in this directory for the method.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import queue
import signal
import struct
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# As pytest's pythonpath (pyproject.toml) and rootdir give the tests: the collection, scripts and tests.kafka_mm2.
for entry in (ROOT / "collections", ROOT / "scripts", ROOT):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

import kafka  # noqa: E402
from ansible_collections.infra.obs.plugins.module_utils import kafka_mm2  # noqa: E402
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition  # noqa: E402
from kafka.admin import NewTopic  # noqa: E402

from tests.kafka_mm2.kafka_lab import lab_version  # noqa: E402
from tests.kafka_mm2.test_mm2_rollback import OFFSET_LAG_MAX, PARAMS, Lab, connection  # noqa: E402

BASELINE_TOPIC = "orders.scratch.bench-baseline"  # excluded by the flow (orders\.scratch\..*): never replicated
RATE_TOPIC = "orders.bench-rate"
BURST_TOPIC = "orders.bench-burst"
ROLLBACK_TOPIC = "orders.bench-rollback"
GROUP = "orders-bench-rollback"  # in the flow's groups (orders-.*)
# The mid-log case of the rollback issue: a group stopped at 12,345 of 20,000 records over 24 partitions while the
# source is written on (MM2 then has no checkpoint for some partitions, or one far back).
MIDLOG_TOPIC, MIDLOG_GROUP, MIDLOG_PARTITIONS = "orders.bench-midlog", "orders-bench-midlog", 24
MIDLOG_RECORDS, MIDLOG_STOP, MIDLOG_FIRST = 20_000, 12_345, 15_000
PARTITIONS = 6
KEYS = 120
VALUE_BYTES = 200
HEADER = struct.Struct(">qd")  # record index, send time (time.time()) at the front of every value
ROLLBACK_RECORDS_PER_PARTITION = 50
ROLLBACK_RUNS = 3
STARTUP_TIMEOUT = 180.0
# Goals.
THROUGHPUT_GOAL = 0.95  # replicated records/s over the produce rate, at the fixed rate
LAG_P99_GOAL = 5.0  # seconds, with the lab's offset.lag.max
ROLLBACK_GOAL = 10.0  # seconds, checks + plan + apply + read back, for a group over 100 partitions


class BenchFailure(Exception):
    """Something did not work: its figures would mean nothing."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2000, help="fixed produce rate, records/s (default 2000)")
    parser.add_argument("--window", type=float, default=30, help="measured seconds at the fixed rate (default 30)")
    parser.add_argument("--warmup", type=float, default=5, help="seconds produced before each window (default 5)")
    parser.add_argument("--burst", type=int, default=100_000, help="records of the unthrottled burst (default 100000)")
    parser.add_argument(
        "--partitions", type=int, default=100, help="partitions of the rollback group's topic (default 100)"
    )
    parser.add_argument("--quick", action="store_true", help="short run: window 10 s, warm-up 3 s, burst 20,000")
    args = parser.parse_args()
    if args.quick:
        args.window, args.warmup, args.burst = 10.0, 3.0, 20_000
    if args.rate <= 0 or args.window < 2 or args.warmup < 0 or args.burst < 1 or args.partitions < 1:
        parser.error("--rate must be > 0, --window at least 2 s, --warmup at least 0, --burst and --partitions >= 1")
    return args


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_average() -> str:
    return " / ".join(f"{value:.2f}" for value in os.getloadavg())


# --- the producer: a child process of its own, so that it and the measuring consumer do not share one GIL -------------


def value_of(index: int) -> bytes:
    return HEADER.pack(index, time.time()).ljust(VALUE_BYTES, b".")


def produce(bootstrap: str, topic: str, *, rate: float | None, count: int, warmup: int, results) -> None:
    """count records (indexes 0..count-1, keyed over KEYS keys) at `rate` records/s, paced against the clock (None:
    as fast as possible); puts {sent, errors, start (first send after the warm-up), end (last send), acked (after
    the final flush)} on results, or {error}."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    try:
        fast = rate is None
        producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=5 if fast else 0,
            batch_size=65536 if fast else 16384,
            max_in_flight_requests_per_connection=5,
        )
        errors = []
        begin = start = time.monotonic()
        wall_start = time.time()
        for i in range(count):
            if not fast:
                ahead = begin + i / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            if i == warmup:
                start, wall_start = time.monotonic(), time.time()
                # The window keeps its own schedule from its first send: a warm-up that fell behind is not made up
                # for by a burst inside the window.
                begin = start - i / rate if not fast else begin
            future = producer.send(topic, key=f"key-{i % KEYS}".encode(), value=value_of(i))
            future.add_errback(errors.append)
        end, wall_end = time.monotonic(), time.time()
        producer.flush()
        acked = time.monotonic()
        producer.close()
        results.put(
            dict(
                sent=count - warmup,
                errors=len(errors),
                error_sample=repr(errors[0]) if errors else "",
                seconds=end - start,
                flushed=acked - start,
                wall_start=wall_start,
                wall_end=wall_end,
            )
        )
    except Exception as error:
        results.put(dict(error=f"{type(error).__name__}: {error}"))


class Producer:
    """The producer child, stopped when the stack unwinds."""

    def __init__(self, stack: ExitStack, bootstrap: str, topic: str, *, rate: float | None, count: int, warmup: int):
        context = multiprocessing.get_context("spawn")
        self.results = context.Queue()
        self.process = context.Process(
            target=produce,
            args=(bootstrap, topic),
            kwargs=dict(rate=rate, count=count, warmup=warmup, results=self.results),
            daemon=True,
        )
        self.process.start()
        stack.callback(self.stop)

    def result(self, block: bool = False, timeout: float | None = None) -> dict | None:
        try:
            result = self.results.get(block, timeout)
        except queue.Empty:
            if self.process.is_alive():
                return None
            try:  # it may have put its result just before it exited
                result = self.results.get(True, 2)
            except queue.Empty:
                raise BenchFailure(f"the producer exited with {self.process.exitcode} without a result") from None
        if "error" in result:
            raise BenchFailure(f"the producer failed: {result['error']}")
        if result["errors"]:
            raise BenchFailure(f"{result['errors']} sends failed, e.g. {result['error_sample']}")
        return result

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()


# --- measurements --------------------------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    """Nearest rank."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass
class Flow:
    """One fixed-rate run: produced into the source, read by a consumer on `where`."""

    name: str
    where: str
    load: str = ""
    produced: int = 0
    produce_seconds: float = math.nan
    delivered_in_window: int = 0  # records of the window that arrived within the window
    latencies: list[float] = field(default_factory=list)  # seconds, send -> read, records of the window only
    drain: float = math.nan  # seconds from the last send until the last record was read
    duplicates: int = 0

    @property
    def produce_rate(self) -> float:
        return self.produced / self.produce_seconds if self.produce_seconds > 0 else math.nan

    @property
    def delivered_rate(self) -> float:
        return self.delivered_in_window / self.produce_seconds if self.produce_seconds > 0 else math.nan

    def q(self, quant: float) -> float:
        return quantile(self.latencies, quant)

    @property
    def max(self) -> float:
        return max(self.latencies, default=math.nan)


def topic_consumer(bootstrap: str, topic: str, partitions: int) -> KafkaConsumer:
    """A consumer without a group (MM2 has nothing to checkpoint), on every partition, positioned at the end now."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
    assigned = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(assigned)
    consumer.seek_to_end(*assigned)
    for tp in assigned:
        consumer.position(tp)  # resolved now, before anything is produced
    return consumer


def fixed_rate(lab: Lab, stack: ExitStack, name: str, topic: str, *, read_from, args: argparse.Namespace) -> Flow:
    """args.rate records/s into `topic` on the source for warm-up + window, read by a consumer on read_from (the
    source itself, or the target through MM2); latency = read time - send time in the value, per record."""
    flow = Flow(name, "source (same cluster)" if read_from is lab.primary else "target, through MM2", load_average())
    warmup = round(args.rate * args.warmup)
    total = warmup + round(args.rate * args.window)
    consumer = topic_consumer(read_from.bootstrap, topic, PARTITIONS)
    stack.callback(consumer.close)
    producer = Producer(stack, lab.primary.bootstrap, topic, rate=args.rate, count=total, warmup=warmup)
    seen: set[int] = set()
    arrivals: list[tuple[int, float]] = []  # (index, read time) of the window's records
    result = None
    deadline = time.monotonic() + STARTUP_TIMEOUT + args.warmup + args.window
    while len(seen) < total:
        check_mm2(lab)
        if result is None:
            result = producer.result()
            if result is not None:  # everything sent: whatever is still missing has a bounded time to arrive
                deadline = min(deadline, time.monotonic() + max(60.0, args.window))
        if time.monotonic() > deadline:
            raise BenchFailure(f"{name}: {total - len(seen)} of {total} records never arrived on the {flow.where}")
        for records in consumer.poll(timeout_ms=200).values():
            now = time.time()
            for record in records:
                index, sent = HEADER.unpack_from(record.value)
                if index in seen:
                    flow.duplicates += 1  # MM2 delivers at least once: counted, and measured once
                    continue
                seen.add(index)
                if index >= warmup:
                    flow.latencies.append(now - sent)
                    arrivals.append((index, now))
    last_read = time.time()
    if result is None:
        result = producer.result(block=True, timeout=60)
        if result is None:
            raise BenchFailure(f"{name}: the producer did not report")
    flow.produced, flow.produce_seconds = result["sent"], result["seconds"]
    flow.delivered_in_window = sum(1 for _, at in arrivals if result["wall_start"] <= at <= result["wall_end"])
    flow.drain = last_read - result["wall_end"]
    return flow


@dataclass
class Burst:
    records: int
    load: str = ""
    produce_seconds: float = math.nan  # first send .. all acknowledged by the source
    target_seconds: float = math.nan  # first send .. the target's end offsets hold every record

    @property
    def produce_rate(self) -> float:
        return self.records / self.produce_seconds

    @property
    def behind(self) -> float:
        """How long after the source had acknowledged the last record the target held it."""
        return self.target_seconds - self.produce_seconds

    @property
    def target_rate(self) -> float:
        return self.records / self.target_seconds


def end_total(cluster: kafka_mm2.Cluster, topic: str, partitions: int) -> int:
    return sum(cluster.end_offsets([TopicPartition(topic, p) for p in range(partitions)]).values())


def burst(lab: Lab, stack: ExitStack, args: argparse.Namespace) -> Burst:
    """args.burst records as fast as one kafka-python producer sends them; the target's end offsets polled every
    50 ms until they hold all of them."""
    result = Burst(args.burst, load_average())
    target = stack.enter_context(kafka_mm2.Cluster(connection(lab.standby)))
    before = end_total(target, BURST_TOPIC, PARTITIONS)
    producer = Producer(stack, lab.primary.bootstrap, BURST_TOPIC, rate=None, count=args.burst, warmup=0)
    sent = None
    deadline = time.monotonic() + STARTUP_TIMEOUT + args.burst / 1000
    while True:
        check_mm2(lab)
        if sent is None:
            sent = producer.result()
        arrived = end_total(target, BURST_TOPIC, PARTITIONS) - before
        now = time.time()  # after the answer: the target held them at the latest then
        if arrived >= args.burst and sent is not None:
            break
        if time.monotonic() > deadline:
            raise BenchFailure(f"burst: the target did not get all {args.burst} records in time")
        time.sleep(0.05)
    result.produce_seconds = sent["flushed"]
    result.target_seconds = now - sent["wall_start"]
    return result


@dataclass
class Rollback:
    partitions: int
    wait_checkpoints: float = math.nan
    runs: list[dict[str, float]] = field(default_factory=list)  # checks, plan, apply, verify, total (seconds)
    reread_max: int = 0
    reread_total: int = 0


def rollback(lab: Lab, stack: ExitStack, args: argparse.Namespace) -> Rollback:
    """GROUP committed at the end of every partition of ROLLBACK_TOPIC on the source; once MM2's checkpoints let it
    roll back (replication_status, max_reread = offset.lag.max), the module's steps timed ROLLBACK_RUNS times."""
    result = Rollback(args.partitions)
    partitions = [TopicPartition(ROLLBACK_TOPIC, p) for p in range(args.partitions)]
    producer = KafkaProducer(bootstrap_servers=lab.primary.bootstrap, acks="all", linger_ms=5)
    for p in range(args.partitions):
        for i in range(ROLLBACK_RECORDS_PER_PARTITION):
            producer.send(ROLLBACK_TOPIC, key=f"key-{i}".encode(), value=value_of(i), partition=p)
    producer.flush()
    producer.close()
    source = stack.enter_context(kafka_mm2.Cluster(connection(lab.primary)))
    ends = source.end_offsets(partitions)
    source.alter_offsets(GROUP, ends)  # as if its consumers had read everything, committed and stopped
    progress(f"rollback: {GROUP} committed on {len(ends)} partitions; waiting for MM2's checkpoints")
    params = dict(
        PARAMS, topics=[ROLLBACK_TOPIC], groups=[GROUP], max_lag=0, max_checkpoint_age=0, max_reread=OFFSET_LAG_MAX
    )
    started = time.monotonic()
    while True:
        check_mm2(lab)
        with lab.clusters() as (src, target):
            status = kafka_mm2.replication_status(src, target, params)
        if status["groups"][GROUP]["can_roll_back"]:
            break
        if time.monotonic() - started > STARTUP_TIMEOUT:
            reasons = status["groups"][GROUP]["reasons"]
            raise BenchFailure(f"rollback: no complete checkpoints after {STARTUP_TIMEOUT:g} s: {reasons[:3]} ...")
        time.sleep(1)
    result.wait_checkpoints = time.monotonic() - started
    plan_params = dict(PARAMS, topics=[ROLLBACK_TOPIC], missing="fail")
    for _ in range(ROLLBACK_RUNS):
        # What kafka_group_rollback does, with fresh connections as a module run opens them.
        t0 = time.monotonic()
        with lab.clusters() as (src, target):
            for cluster, side in ((target, "target"), (src, "source")):
                state, members = cluster.group_state(GROUP)
                if kafka_mm2.is_active(state, members):
                    raise BenchFailure(f"rollback: {GROUP} has {members} member(s) on the {side}")
            t1 = time.monotonic()
            plan = kafka_mm2.rollback_plan(src, target, plan_params, GROUP)
            offsets = kafka_mm2.plan_offsets(plan)
            t2 = time.monotonic()
            target.alter_offsets(GROUP, offsets)
            t3 = time.monotonic()
            committed = target.committed(GROUP)
            wrong = {kafka_mm2.tp_name(tp): committed.get(tp) for tp, o in offsets.items() if committed.get(tp) != o}
            t4 = time.monotonic()
        if wrong or len(plan) != args.partitions:
            raise BenchFailure(f"rollback: {len(plan)} partitions planned; read back differs: {wrong}")
        result.runs.append(dict(checks=t1 - t0, plan=t2 - t1, apply=t3 - t2, verify=t4 - t3, total=t4 - t0))
        rereads = [row["source_committed"] - row["new_offset"] for row in plan]
        if min(rereads) < 0:
            raise BenchFailure("rollback: a planned offset is beyond the group's commit: records would be skipped")
        result.reread_max, result.reread_total = max(rereads), sum(rereads)
        # Back to nothing committed on the target would need the group deleted; the next runs re-apply the same
        # plan (the module would report unchanged and skip the commit; here it commits again, as a first run does).
    return result


@dataclass
class MidLog:
    wait_gate: float = math.nan  # seconds until replication_status lets the group roll back
    plan_seconds: float = math.nan
    origins: dict[str, int] = field(default_factory=dict)
    rereads: list[int] = field(default_factory=list)  # per planned partition, by checkpoint or records
    checkpoint_only: dict[str, int] = field(default_factory=dict)  # what the checkpoints alone give


def midlog(lab: Lab, stack: ExitStack) -> MidLog:
    """MIDLOG_GROUP committed at MIDLOG_STOP of MIDLOG_FIRST records spread over MIDLOG_PARTITIONS, then the rest
    produced. The gate (replication_status, max_reread = offset.lag.max) waited for, then rollback_plan timed; beside
    it, the plan from the checkpoints alone (the rollback before translation by records: missing=earliest re-reads
    whole partitions MM2 did not checkpoint)."""
    result = MidLog()
    admin = stack.enter_context(closing(KafkaAdminClient(bootstrap_servers=lab.primary.bootstrap)))
    admin.create_topics([NewTopic(MIDLOG_TOPIC, MIDLOG_PARTITIONS, 1)])
    producer = KafkaProducer(bootstrap_servers=lab.primary.bootstrap, acks="all", linger_ms=5)
    for i in range(MIDLOG_FIRST):
        producer.send(MIDLOG_TOPIC, key=f"key-{i}".encode(), value=value_of(i), partition=i % MIDLOG_PARTITIONS)
    producer.flush()
    committed = {
        TopicPartition(MIDLOG_TOPIC, p): len(range(p, MIDLOG_STOP, MIDLOG_PARTITIONS)) for p in range(MIDLOG_PARTITIONS)
    }
    source = stack.enter_context(kafka_mm2.Cluster(connection(lab.primary)))
    source.alter_offsets(MIDLOG_GROUP, committed)
    for i in range(MIDLOG_FIRST, MIDLOG_RECORDS):
        producer.send(MIDLOG_TOPIC, key=f"key-{i}".encode(), value=value_of(i), partition=i % MIDLOG_PARTITIONS)
    producer.flush()
    producer.close()
    params = dict(PARAMS, topics=[MIDLOG_TOPIC], groups=[MIDLOG_GROUP], max_lag=0, max_checkpoint_age=0)
    params.update(max_reread=OFFSET_LAG_MAX, missing="fail")
    started = time.monotonic()
    while True:
        check_mm2(lab)
        with lab.clusters() as (src, target):
            if kafka_mm2.replication_status(src, target, params)["groups"][MIDLOG_GROUP]["can_roll_back"]:
                break
        if time.monotonic() - started > STARTUP_TIMEOUT:
            raise BenchFailure(f"mid-log: the gate did not pass in {STARTUP_TIMEOUT:g} s")
        time.sleep(1)
    result.wait_gate = time.monotonic() - started
    with lab.clusters() as (src, target):
        t0 = time.monotonic()
        plan = kafka_mm2.rollback_plan(src, target, params, MIDLOG_GROUP)
        result.plan_seconds = time.monotonic() - t0
        alone = kafka_mm2.rollback_plan(None, target, dict(params, missing="earliest"), MIDLOG_GROUP)
    if len(plan) != MIDLOG_PARTITIONS:
        raise BenchFailure(f"mid-log: {len(plan)} of {MIDLOG_PARTITIONS} partitions planned")
    result.origins = dict(Counter(row["origin"] for row in plan))
    result.rereads = [row["source_committed"] - row["new_offset"] for row in plan]
    by_partition = {row["partition"]: row for row in alone}
    rereads = [committed[tp] - by_partition[tp.partition]["new_offset"] for tp in committed]
    result.checkpoint_only = dict(
        without_checkpoint=sum(row["origin"] == "earliest" for row in alone),
        reread_total=sum(rereads),
        reread_max=max(rereads),
    )
    return result


# --- the lab -------------------------------------------------------------------------------------------------------


def check_mm2(lab: Lab) -> None:
    for node in (lab.primary, lab.standby):
        if node.proc is not None and node.proc.poll() is not None:
            raise BenchFailure(f"{node.name} exited with {node.proc.returncode}:\n{node.log_tail(15)}")
    if lab.mm2 is not None and lab.mm2.poll() is not None:
        tail = lab.mm2_log.read_text(errors="replace").splitlines()[-15:] if lab.mm2_log.exists() else []
        raise BenchFailure(f"MirrorMaker 2 exited with {lab.mm2.returncode}:\n" + "\n".join(tail))


def prepare(lab: Lab, args: argparse.Namespace) -> float:
    """The bench's topics on the source; one record per partition of each replicated topic, until the target holds
    them all (MM2 has found the topics and its tasks copy them). Returns the seconds that took."""
    admin = KafkaAdminClient(bootstrap_servers=lab.primary.bootstrap)
    try:
        admin.create_topics(
            [
                NewTopic(BASELINE_TOPIC, PARTITIONS, 1),
                NewTopic(RATE_TOPIC, PARTITIONS, 1),
                NewTopic(BURST_TOPIC, PARTITIONS, 1),
                NewTopic(ROLLBACK_TOPIC, args.partitions, 1),
            ]
        )
    finally:
        admin.close()
    replicated = {RATE_TOPIC: PARTITIONS, BURST_TOPIC: PARTITIONS, ROLLBACK_TOPIC: args.partitions}
    producer = KafkaProducer(bootstrap_servers=lab.primary.bootstrap, acks="all")
    for topic, count in replicated.items():
        for p in range(count):
            producer.send(topic, value=value_of(-1), partition=p)
    producer.flush()
    producer.close()
    started = time.monotonic()
    with kafka_mm2.Cluster(connection(lab.standby)) as target:
        while True:
            check_mm2(lab)
            existing = target.topics()
            if all(t in existing and end_total(target, t, n) >= n for t, n in replicated.items()):
                return time.monotonic() - started
            if time.monotonic() - started > STARTUP_TIMEOUT:
                raise BenchFailure(f"MM2 did not replicate the bench's topics within {STARTUP_TIMEOUT:g} s")
            time.sleep(0.5)


# --- report --------------------------------------------------------------------------------------------------------


def secs(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return f"{value * 1e3:,.1f} ms" if value < 1 else f"{value:,.2f} s"


def ratio(a: float, b: float) -> str:
    return "n/a" if math.isnan(a) or math.isnan(b) or b == 0 else f"{a / b:.3g}x"


def verdict(met: bool | None) -> str:
    return "not measured" if met is None else "goal met" if met else "goal missed"


def report(
    args: argparse.Namespace,
    meta: dict,
    flows: list[Flow],
    bursts: list[Burst],
    rb: Rollback | None,
    *,
    ml: MidLog | None,
) -> None:
    lines = [
        f"Kafka {lab_version('kafka_version')} (two single-node KRaft clusters, 256 MB heap each) and dedicated "
        f"MirrorMaker 2 (384 MB heap) on loopback, kafka-python {kafka.__version__} (Python "
        f"{sys.version.split()[0]}); {os.cpu_count()} CPUs, load average {meta['load_start']} at the start, "
        f"{load_average()} at the end. MM2 from the lab's orders flow as plugin_utils/mm2.py renders it "
        f"(offset.lag.max {OFFSET_LAG_MAX}, intervals 1 s). Both clusters up in {secs(meta.get('startup'))}; MM2 "
        f"then had every bench topic created and copying on the target {secs(meta.get('prepare'))} later.",
        "",
        f"### Fixed rate: {args.rate:,.0f} records/s, {VALUE_BYTES}-byte values, {KEYS} keys over {PARTITIONS} "
        f"partitions, {args.window:g} s window after a {args.warmup:g} s warm-up",
        "",
        "One kafka-python producer (acks=all, linger 0) in a process of its own, paced against the clock; one "
        "consumer without a group in the bench's process. Latency per record = read time - send time carried in the "
        "value. Baseline: a topic MM2 does not replicate, read on the source; MM2: a replicated topic, read on the "
        "target. Delivered/s = the window's records read within the window / the window.",
        "",
        "| run | read on | produced/s | delivered/s | delivered / produced | p50 | p99 | max | drain after last send "
        "| duplicates | load (1/5/15) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for f in flows:
        lines.append(
            f"| {f.name} | {f.where} | {f.produce_rate:,.0f} | {f.delivered_rate:,.0f} "
            f"| {ratio(f.delivered_rate, f.produce_rate)} | {secs(f.q(0.5))} | {secs(f.q(0.99))} | {secs(f.max)} "
            f"| {secs(f.drain)} | {f.duplicates} | {f.load} |"
        )
    base = next((f for f in flows if f.name == "baseline"), None)
    mm2 = next((f for f in flows if f.name == "MM2"), None)
    if base and mm2:
        lines += [
            "",
            f"MM2 / baseline: delivered/s {ratio(mm2.delivered_rate, base.delivered_rate)}, "
            f"p50 latency {ratio(mm2.q(0.5), base.q(0.5))}, p99 {ratio(mm2.q(0.99), base.q(0.99))}, "
            f"max {ratio(mm2.max, base.max)}.",
        ]
    if bursts:
        lines += [
            "",
            f"### Unthrottled burst: {args.burst:,} records into the source, timed until the target holds them all",
            "",
            "Producer as fast as it goes (acks=all, linger 5 ms, 64 KiB batches); the target's end offsets polled "
            "every 50 ms. Both times from the first send. While the target ends a moment after the source, MM2 "
            "kept pace with the producer and its own ceiling is higher than the figure.",
            "",
            "| records | acknowledged by the source | records/s | all on the target | records/s | target / source "
            "| target behind source | load (1/5/15) |",
            "|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
    for b in bursts:
        lines.append(
            f"| {b.records:,} | {secs(b.produce_seconds)} | {b.produce_rate:,.0f} | {secs(b.target_seconds)} "
            f"| {b.target_rate:,.0f} | {ratio(b.target_rate, b.produce_rate)} | {secs(b.behind)} | {b.load} |"
        )
    if rb:
        lines += [
            "",
            f"### Rollback of one group over {rb.partitions} partitions",
            "",
            f"{GROUP} committed at the end of each of the {rb.partitions} partitions of {ROLLBACK_TOPIC} "
            f"({ROLLBACK_RECORDS_PER_PARTITION} records each) on the source; MM2's checkpoints let it roll back "
            f"(replication_status, max_reread {OFFSET_LAG_MAX}) {rb.wait_checkpoints:.1f} s later. Then "
            "kafka_group_rollback's steps through module_utils/kafka_mm2.py with fresh connections: group states on "
            "both sides (checks), rollback_plan (reads the checkpoints topic, both clusters' offsets), "
            "Cluster.alter_offsets on the target (apply), committed offsets read back and compared (verify). "
            f"Records the plan re-reads: {rb.reread_total} in all, at most {rb.reread_max} on a partition.",
            "",
            "| run | checks | plan | apply | verify | total |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for i, run in enumerate(rb.runs, 1):
            cells = " | ".join(secs(run[k]) for k in ("checks", "plan", "apply", "verify", "total"))
            lines.append(f"| {i}{' (first)' if i == 1 else ''} | {cells} |")
    if ml:
        before = ml.checkpoint_only
        lines += [
            "",
            f"### Rollback of a group stopped mid-log: {MIDLOG_STOP:,} of {MIDLOG_RECORDS:,} records over "
            f"{MIDLOG_PARTITIONS} partitions",
            "",
            f"{MIDLOG_GROUP} committed at {MIDLOG_STOP:,} of the first {MIDLOG_FIRST:,} records, then the rest "
            f"produced. The gate (replication_status, max_reread {OFFSET_LAG_MAX}) passed {secs(ml.wait_gate)} "
            "later.",
            "",
            "| plan | partitions planned | without a checkpoint | re-reads in all | most on a partition | plan time |",
            "|---|---:|---:|---:|---:|---:|",
            f"| checkpoints only, missing=earliest (before) | {MIDLOG_PARTITIONS} | {before['without_checkpoint']} "
            f"| {before['reread_total']:,} | {before['reread_max']:,} | |",
            f"| checkpoints, else the records (now: {', '.join(f'{n} {o}' for o, n in sorted(ml.origins.items()))})"
            f" | {MIDLOG_PARTITIONS} | 0 | {sum(ml.rereads):,} | {max(ml.rereads):,} | {secs(ml.plan_seconds)} |",
        ]
    lines += ["", *goals(args, flows, rb)]
    print("\n".join(lines))


def goals(args: argparse.Namespace, flows: list[Flow], rb: Rollback | None) -> list[str]:
    mm2 = next((f for f in flows if f.name == "MM2"), None)
    lines = ["### Goals", ""]
    met = text = None
    if mm2:
        value = mm2.delivered_rate / mm2.produce_rate
        met, text = value >= THROUGHPUT_GOAL, f"{value:.3f}x ({mm2.delivered_rate:,.0f} of {mm2.produce_rate:,.0f}/s)"
    lines.append(
        f"- replicated throughput at least {THROUGHPUT_GOAL:g}x the fixed produce rate: {verdict(met)}"
        + (f", {text}" if text else "")
    )
    met = text = None
    if mm2:
        met, text = mm2.q(0.99) < LAG_P99_GOAL, f"p99 {secs(mm2.q(0.99))} (p50 {secs(mm2.q(0.5))})"
    lines.append(
        f"- p99 replication lag under {LAG_P99_GOAL:g} s (offset.lag.max {OFFSET_LAG_MAX}): {verdict(met)}"
        + (f", {text}" if text else "")
    )
    met = text = None
    if rb and rb.runs:
        first = rb.runs[0]["total"]
        met, text = (
            first < ROLLBACK_GOAL,
            f"{secs(first)} the first time, then " + ", ".join(secs(r["total"]) for r in rb.runs[1:]),
        )
    lines.append(
        f"- rollback of one group over {args.partitions} partitions under {ROLLBACK_GOAL:g} s: "
        f"{verdict(met)}" + (f", {text}" if text else "")
    )
    return lines


# --- main ----------------------------------------------------------------------------------------------------------


def main() -> int:
    args = parse_args()
    # A SIGTERM unwinds like Ctrl-C: producer, MM2 and both brokers stopped, the temporary files removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    meta = {"load_start": load_average()}
    flows: list[Flow] = []
    bursts: list[Burst] = []
    rb = ml = None
    failure = ""
    try:
        with tempfile.TemporaryDirectory(prefix="bench-mm2-") as tmp:
            lab = Lab(Path(tmp))
            try:
                progress(f"starting two KRaft clusters and MirrorMaker 2 in {tmp} (load {load_average()})")
                started = time.monotonic()
                try:
                    lab.start()
                except RuntimeError as error:
                    raise BenchFailure(str(error)) from None
                meta["startup"] = time.monotonic() - started
                meta["prepare"] = prepare(lab, args)
                progress(
                    f"clusters up in {meta['startup']:.1f} s, "
                    f"MM2 copying the bench's topics {meta['prepare']:.1f} s later"
                )
                for name, topic, node in (("baseline", BASELINE_TOPIC, lab.primary), ("MM2", RATE_TOPIC, lab.standby)):
                    progress(f"{name}: {args.rate:,.0f} records/s for {args.warmup:g} + {args.window:g} s")
                    with ExitStack() as stack:
                        flow = fixed_rate(lab, stack, name, topic, read_from=node, args=args)
                    flows.append(flow)
                    progress(
                        f"{name}: {flow.produce_rate:,.0f}/s produced, {flow.delivered_rate:,.0f}/s delivered, "
                        f"p50 {secs(flow.q(0.5))}, p99 {secs(flow.q(0.99))}, max {secs(flow.max)}"
                    )
                progress(f"burst: {args.burst:,} records")
                with ExitStack() as stack:
                    bursts.append(burst(lab, stack, args))
                progress(f"burst: {bursts[-1].target_rate:,.0f} records/s to the target")
                with ExitStack() as stack:
                    rb = rollback(lab, stack, args)
                progress(f"rollback: {', '.join(secs(r['total']) for r in rb.runs)}")
                with ExitStack() as stack:
                    ml = midlog(lab, stack)
                progress(f"mid-log: plan {secs(ml.plan_seconds)}, {sum(ml.rereads)} re-reads ({ml.origins})")
                check_mm2(lab)
            finally:
                progress("stopping MirrorMaker 2 and both clusters")
                lab.stop()
    except BenchFailure as error:
        failure = str(error)
    except KeyboardInterrupt:
        print("interrupted: producer, MM2 and brokers stopped, temporary files removed", file=sys.stderr)
        return 130
    report(args, meta, flows, bursts, rb, ml=ml)
    if failure:  # what was measured before is reported above
        print(f"\nFAILED: {failure.splitlines()[0]}")
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
