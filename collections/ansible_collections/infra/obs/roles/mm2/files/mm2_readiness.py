# Copyright: infra.obs maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rollback readiness exporter of a MirrorMaker 2 flow: the check of infra.obs.kafka_replication_status, run every
--interval seconds for each enabled direction of the rendered mm2.properties, published for Prometheus.

Runs in the MM2 image with python3, kafka-python and prometheus_client, and a copy of the collection's
plugins/module_utils/kafka_mm2.py beside it as the plain module kafka_mm2 (no Ansible). mm2.properties is the only
source of truth: clusters, their bootstrap servers and security, which directions are enabled, the topic and group
filters and the replication policy. For each enabled direction (upstream -> downstream) it lists the consumer groups
on the upstream cluster that MM2's group filter accepts (full match of groups, minus groups.exclude and MM2's own
excludes) and that committed on a replicated topic, and judges each as kafka_replication_status does.

    python3 mm2_readiness.py --properties /etc/infra-obs-mm2/mm2.properties --flow orders --listen 0.0.0.0:9405 \\
        --interval 30 --max-lag 100 --max-checkpoint-age 300
    python3 mm2_readiness.py --properties ... --flow orders --check   # one check as JSON; exit 0 if every check
                                                                     # completed and every group can roll back

Series (labels flow, source, target, and group or topic):
  infra_obs_mm2_group_can_roll_back, infra_obs_mm2_group_rollback_blockers (number of reasons it cannot),
  infra_obs_mm2_group_checkpoint_age_seconds (oldest of the group's newest checkpoints per partition; none without
  one), infra_obs_mm2_group_reread_records (records a rollback now would re-read; identity policy, every partition
  translated by its checkpoint or by its records), infra_obs_mm2_topic_lag_records,
  infra_obs_mm2_alive (a heartbeat of the direction within its max silence), infra_obs_mm2_heartbeat_age_seconds,
  infra_obs_mm2_readiness_check_success,
  infra_obs_mm2_readiness_check_timestamp_seconds (last successful check),
  infra_obs_mm2_readiness_check_duration_seconds.
A failed check (a cluster down, refused credentials) sets success to 0, drops that direction's group and topic series
(nothing is known) and logs one line to stderr; the next check runs as usual.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import re
import signal
import sys
import threading
import time

try:  # the repository (tests, tools): the collection's module_utils
    from ansible_collections.infra.obs.plugins.module_utils import kafka_mm2
except ModuleNotFoundError as missing:  # the image: a copy beside this file, and no Ansible
    if not (missing.name or "").startswith("ansible"):
        raise
    import kafka_mm2

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily

PREFIX = "infra_obs_mm2_"
MASK = "********"
# MM2's defaults (MirrorMakerConfig / DefaultTopicFilter / DefaultGroupFilter, Kafka 4.x).
DEFAULT_TOPICS = ".*"
DEFAULT_TOPICS_EXCLUDE = ", ".join(kafka_mm2.MM2_TOPICS_EXCLUDE)
DEFAULT_GROUPS = ".*"
# Always applied, as infra.obs.mm2_config renders them: a groups.exclude written by hand replaces MM2's defaults.
MM2_GROUPS_EXCLUDE = kafka_mm2.MM2_GROUPS_EXCLUDE
IDENTITY_POLICY = kafka_mm2.POLICY_CLASSES["identity"]
DEFAULT_POLICY = kafka_mm2.POLICY_CLASSES["prefixed"]
TIMEOUT_MS = 10000
PEM_SUFFIXES = (".pem", ".crt", ".cer")
SECONDS = re.compile(r"[0-9]{1,9}")
PORT = re.compile(r"[0-9]{1,5}")
JAAS_OPTION = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s;]+)')

log = logging.getLogger("mm2_readiness")


class PropertiesError(Exception):
    pass


# --- mm2.properties ------------------------------------------------------------------------------------------------


def _logical_lines(text):
    """java.util.Properties' logical lines: comments and blank lines dropped, continuation lines joined."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index].lstrip(" \t\f")
        index += 1
        if not line or line[0] in "#!":
            continue
        while _continues(line) and index < len(lines):
            line = line[:-1] + lines[index].lstrip(" \t\f")
            index += 1
        if _continues(line):
            line = line[:-1]
        yield line


def _continues(line):
    """Whether line ends in an odd number of backslashes."""
    return (len(line) - len(line.rstrip("\\"))) % 2 == 1


def _unescape(text):
    out = []
    chars = iter(text)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        nxt = next(chars, "")
        if nxt == "u":
            code = "".join(itertools.islice(chars, 4))
            try:
                out.append(chr(int(code, 16)))
            except ValueError:
                raise PropertiesError(f"malformed \\uxxxx escape: \\u{code}") from None
        else:
            out.append({"t": "\t", "n": "\n", "r": "\r", "f": "\f"}.get(nxt, nxt))
    # Surrogate pairs written as two \u escapes.
    return "".join(out).encode("utf-16", "surrogatepass").decode("utf-16")


def parse_properties(text):
    """{key: value} of a java.util.Properties file (as MirrorMaker reads it)."""
    found = {}
    for line in _logical_lines(text):
        at = 0
        while at < len(line):
            if line[at] == "\\":
                at += 2
                continue
            if line[at] in "=: \t\f":
                break
            at += 1
        key, rest = line[:at], line[at:]
        rest = rest.lstrip(" \t\f")
        if rest[:1] in ("=", ":"):
            rest = rest[1:].lstrip(" \t\f")
        found[_unescape(key)] = _unescape(rest)
    return found


def _seconds(name, value):
    """A whole number of seconds from 1 to 999,999,999 (ASCII digits only: int() would take look-alikes such as
    '\uff11'), the value of property name."""
    if not SECONDS.fullmatch(value.strip()) or int(value) < 1:
        raise PropertiesError(f"{name} {value!r}: expected a whole number of seconds from 1 to 999999999")
    return int(value)


def _list(value):
    """A Kafka LIST value: comma-separated, entries trimmed, empty ones dropped."""
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def jaas_options(jaas):
    """{option: value} of a one-module JAAS config such as the rendered sasl.jaas.config."""
    _module, _sep, options = jaas.partition(" required")
    found = {}
    for match in JAAS_OPTION.finditer(options):
        value = match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        found[match.group(1)] = value
    return found


class Filter:
    """MM2's include/exclude filter: a name passes when it fully matches one include pattern and no exclude one."""

    def __init__(self, include, exclude):
        self.include = list(include)
        self.exclude = list(exclude)
        self._include = [re.compile(p) for p in self.include]
        self._exclude = [re.compile(p) for p in self.exclude]

    def __call__(self, name):
        return any(p.fullmatch(name) for p in self._include) and not any(p.fullmatch(name) for p in self._exclude)


class Direction:
    """One enabled replication of the flow (upstream -> downstream) and everything the check needs for it."""

    def __init__(self, properties, source, target, ssl_cafile=None):
        self.source, self.target = source, target
        self.warnings = []
        self.source_connection = self._connection(properties, source, ssl_cafile)
        self.target_connection = self._connection(properties, target, ssl_cafile)

        def setting(name, default=None):
            """A flow-level setting: <source>-><target>.<name>, else <name> (MM2's own precedence)."""
            return properties.get(f"{source}->{target}.{name}", properties.get(name, default))

        self.topics = Filter(
            _list(setting("topics", DEFAULT_TOPICS)), _list(setting("topics.exclude", DEFAULT_TOPICS_EXCLUDE))
        )
        self.groups = Filter(
            _list(setting("groups", DEFAULT_GROUPS)),
            list(dict.fromkeys([*_list(setting("groups.exclude", "")), *MM2_GROUPS_EXCLUDE])),
        )
        policy_class = setting("replication.policy.class", DEFAULT_POLICY)
        if policy_class == IDENTITY_POLICY:
            self.policy = "identity"
        elif policy_class == DEFAULT_POLICY:
            self.policy = "prefixed"
        else:
            raise PropertiesError(f"replication.policy.class {policy_class}: only the identity and default policies")
        self.separator = setting("replication.policy.separator", ".")
        internal_separator = setting("replication.policy.internal.topic.separator.enabled", "true").lower() != "false"
        self.checkpoints_topic = None if internal_separator else f"{source}.checkpoints.internal"
        self.checkpoint_log = kafka_mm2.CheckpointLog()  # each check reads only the checkpoints written since the last
        # MM2's liveness is judged against the flow's own emit intervals (MM2's defaults: 1 s and 60 s).
        heartbeats, checkpoints = "emit.heartbeats.interval.seconds", "emit.checkpoints.interval.seconds"
        self.emit_heartbeats_seconds = _seconds(heartbeats, setting(heartbeats, "1"))
        self.emit_checkpoints_seconds = _seconds(checkpoints, setting(checkpoints, "60"))
        if setting("emit.heartbeats.enabled", "true").strip().lower() == "false":
            self.warnings.append(
                f"{source}->{target}: emit.heartbeats.enabled is false: MM2 writes no heartbeats, so every check "
                "reports it down"
            )

    def _connection(self, properties, alias, ssl_cafile):
        """kafka_mm2's connection options (module parameters) of cluster alias."""

        def get(name, default=None):
            return properties.get(f"{alias}.{name}", properties.get(name, default))

        servers = _list(get("bootstrap.servers"))
        if not servers:
            raise PropertiesError(f"no {alias}.bootstrap.servers")
        protocol = get("security.protocol", "PLAINTEXT").strip().upper()
        if protocol not in ("PLAINTEXT", "SSL", "SASL_SSL"):
            raise PropertiesError(f"{alias}.security.protocol {protocol}: only PLAINTEXT, SSL and SASL_SSL")
        connection = kafka_mm2.connection_params(
            servers,
            security_protocol=protocol,
            ssl_check_hostname=get("ssl.endpoint.identification.algorithm", "https") != "",
        )
        if protocol == "SASL_SSL":
            mechanism = get("sasl.mechanism", "GSSAPI")
            if mechanism not in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                raise PropertiesError(f"{alias}.sasl.mechanism {mechanism}: only SCRAM-SHA-256 and SCRAM-SHA-512")
            options = jaas_options(get("sasl.jaas.config", ""))
            if "username" not in options or "password" not in options:
                raise PropertiesError(f"{alias}.sasl.jaas.config: no username and password options")
            connection.update(sasl_mechanism=mechanism, username=options["username"], password=options["password"])
        if protocol != "PLAINTEXT":
            connection["ssl_cafile"] = ssl_cafile or self._pem(get, alias, "truststore")
            keystore = self._pem(get, alias, "keystore")
            if keystore:
                connection.update(
                    ssl_certfile=keystore, ssl_keyfile=keystore, ssl_password=get("ssl.key.password") or None
                )
        return connection

    def _pem(self, get, alias, store):
        """A PEM trust or key store's path; kafka-python (Python's ssl) reads neither JKS nor PKCS12."""
        location = get(f"ssl.{store}.location")
        if not location:
            return None
        if get(f"ssl.{store}.type", "").upper() == "PEM" or location.lower().endswith(PEM_SUFFIXES):
            return location
        use = "the system's CA certificates (or --ssl-cafile)" if store == "truststore" else "no client certificate"
        self.warnings.append(
            f"{alias}: ssl.{store}.location {location} is not PEM, which Python cannot read: using {use}"
        )
        return None

    def is_heartbeats(self, topic):
        """MM2 replicates heartbeats topics whatever the filter; their replicas also get the target's own heartbeats
        (identity policy) or are named by the policy: their offsets do not line up, so they have no lag."""
        if self.policy == "identity":
            return topic == "heartbeats"
        return topic == "heartbeats" or topic.endswith(f"{self.separator}heartbeats")

    @property
    def secrets(self):
        return [
            value
            for connection in (self.source_connection, self.target_connection)
            for value in (connection["password"], connection["ssl_password"])
            if value
        ]

    def params(self, topics, groups, options):
        """kafka_mm2.replication_status's params (those of the kafka_replication_status module)."""
        return dict(
            source=self.source_connection,
            target=self.target_connection,
            source_alias=self.source,
            replication_policy=self.policy,
            separator=self.separator,
            checkpoints_topic=self.checkpoints_topic,
            topics=topics,
            topics_regex=None,
            groups=groups,
            max_lag=options.max_lag,
            max_checkpoint_age=options.max_checkpoint_age,
            max_reread=options.max_reread,
            emit_heartbeats_seconds=self.emit_heartbeats_seconds,
            emit_checkpoints_seconds=self.emit_checkpoints_seconds,
            max_mm2_silence=options.max_mm2_silence,
        )


def directions(properties, ssl_cafile=None):
    """The enabled directions of a parsed mm2.properties, in the order of its clusters."""
    aliases = _list(properties.get("clusters"))
    if len(aliases) < 2:
        raise PropertiesError("clusters must name at least two cluster aliases")
    found = [
        Direction(properties, a, b, ssl_cafile)
        for a in aliases
        for b in aliases
        if a != b and properties.get(f"{a}->{b}.enabled", "false").strip().lower() == "true"
    ]
    if not found:
        raise PropertiesError("no replication direction is enabled (<a>-><b>.enabled = true)")
    return found


def load(path, ssl_cafile=None):
    with open(path, encoding="iso-8859-1") as handle:  # as java.util.Properties.load(InputStream) reads it
        return directions(parse_properties(handle.read()), ssl_cafile)


# --- the check -----------------------------------------------------------------------------------------------------


def cluster(connection):
    """kafka_mm2's Cluster (its clients open lazily), giving up on an unreachable cluster or an unanswered request
    sooner than kafka-python's and kafka_mm2's 30 s, so that a check against a cluster that is down (or goes down
    during the check) fails within seconds."""
    opened = kafka_mm2.Cluster(connection)
    opened.config.update(bootstrap_timeout_ms=TIMEOUT_MS, request_timeout_ms=TIMEOUT_MS)
    return opened


def check(direction, options):
    """One check of direction: {success, error, duration_seconds, timestamp (its end), topics, groups, ignored_groups,
    topic_lag, status (replication_status's result)}."""
    started = time.monotonic()
    result = dict(source=direction.source, target=direction.target, success=False, error=None)
    try:
        with cluster(direction.source_connection) as source, cluster(direction.target_connection) as target:
            topics = sorted(t for t in source.topics() if direction.topics(t) and not direction.is_heartbeats(t))
            listed = sorted({g["group_id"] for g in source.admin.list_groups()})
            groups = [g for g in listed if direction.groups(g)]
            params = direction.params(topics, groups, options)
            if not topics:
                params.update(topics=None, topics_regex="(?!)")  # no topic: every group is out of scope
            status = kafka_mm2.replication_status(source, target, params, direction.checkpoint_log)
    except Exception as error:  # kafka-python's errors (a cluster down, refused credentials), KafkaMM2Error, ...
        text = str(error) if str(error).startswith(type(error).__name__) else f"{type(error).__name__}: {error}"
        result.update(error=mask(text, direction.secrets))
    else:
        result.update(success=True, **summary(direction, status))
    result.update(duration_seconds=round(time.monotonic() - started, 3), timestamp=round(time.time(), 3))
    return result


def partition_reread(partition):
    """Records a rollback now would read again on one partition of a group's verdict (identity policy): from its
    translation by records where that stood in for the checkpoint, else from the checkpoint; None with neither."""
    if partition.get("by_records"):
        return partition["by_records"]["reread"]
    if partition["checkpoint"] is None:
        return None
    return partition["committed"] - partition["checkpoint"]["downstream_offset"]


def summary(direction, status):
    """Per group (those with commits on a replicated topic, as MM2 checkpoints only those) and per topic."""
    groups, ignored = {}, []
    for group, verdict in sorted(status["groups"].items()):
        if not verdict["partitions"]:
            ignored.append(group)
            continue
        checkpoints = [p["checkpoint"] for p in verdict["partitions"] if p["checkpoint"] is not None]
        rereads = [partition_reread(p) if direction.policy == "identity" else None for p in verdict["partitions"]]
        reread = None if None in rereads else sum(rereads)
        groups[group] = dict(
            can_roll_back=verdict["can_roll_back"],
            blockers=len(verdict["reasons"]),
            reasons=verdict["reasons"],
            checkpoint_age_seconds=max((c["age_seconds"] for c in checkpoints), default=None),
            reread_records=reread,
            active_on_source=verdict["active_on_source"],
        )
    # A topic with a partition whose replication its records cannot prove (status["unproven_partitions"] says why)
    # has no lag series: unknown, not smaller.
    topic_lag = {}
    for row in status["partitions"]:
        known = topic_lag.get(row["topic"], 0)
        topic_lag[row["topic"]] = None if known is None or row["lag"] is None else known + row["lag"]
    topic_lag = {topic: lag for topic, lag in topic_lag.items() if lag is not None}
    return dict(
        topics=status["topics"],
        groups=groups,
        ignored_groups=ignored,
        topic_lag=topic_lag,
        mm2=status["mm2"],
        status=status,
    )


def mask(text, secrets):
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


# --- exporter ------------------------------------------------------------------------------------------------------


class ReadinessCollector:
    """The latest check of each direction, as gauges; a group or topic absent from the latest check has no series."""

    def __init__(self, flow):
        self.flow = flow
        self._lock = threading.Lock()
        self._checks = {}  # (source, target) -> latest result
        self._last_success = {}  # (source, target) -> unix time

    def update(self, result):
        key = (result["source"], result["target"])
        with self._lock:
            self._checks[key] = result
            if result["success"]:
                self._last_success[key] = result["timestamp"]

    def collect(self):
        with self._lock:
            checks, last_success = dict(self._checks), dict(self._last_success)
        flow_labels = ["flow", "source", "target"]

        def gauge(name, doc, extra=()):
            return GaugeMetricFamily(PREFIX + name, doc, labels=[*flow_labels, *extra])

        can = gauge("group_can_roll_back", "1 if the group could roll back to the target now, else 0.", ["group"])
        blockers = gauge("group_rollback_blockers", "Number of reasons the group cannot roll back now.", ["group"])
        age = gauge(
            "group_checkpoint_age_seconds",
            "Age of the oldest of the group's newest checkpoints per partition (none without a checkpoint).",
            ["group"],
        )
        reread = gauge("group_reread_records", "Records a rollback now would read again (identity policy).", ["group"])
        lag = gauge(
            "topic_lag_records", "Records on the source not yet on the target, summed over partitions.", ["topic"]
        )
        success = gauge("readiness_check_success", "1 if the last rollback readiness check completed, else 0.")
        stamp = gauge("readiness_check_timestamp_seconds", "Unix time of the last successful readiness check.")
        duration = gauge("readiness_check_duration_seconds", "Duration of the last readiness check.")
        alive = gauge("alive", "1 if MM2 wrote a heartbeat of the direction within its max silence, else 0.")
        heartbeat_age = gauge(
            "heartbeat_age_seconds", "Age of the direction's newest heartbeat on the target (none without one)."
        )
        for (source, target), result in sorted(checks.items()):
            labels = [self.flow, source, target]
            success.add_metric(labels, 1 if result["success"] else 0)
            duration.add_metric(labels, result["duration_seconds"])
            if (source, target) in last_success:
                stamp.add_metric(labels, last_success[(source, target)])
            if not result["success"]:
                continue
            alive.add_metric(labels, 1 if result["mm2"]["alive"] else 0)
            if result["mm2"]["heartbeat_age_seconds"] is not None:
                heartbeat_age.add_metric(labels, result["mm2"]["heartbeat_age_seconds"])
            for group, verdict in result["groups"].items():
                group_labels = [*labels, group]
                can.add_metric(group_labels, 1 if verdict["can_roll_back"] else 0)
                blockers.add_metric(group_labels, verdict["blockers"])
                if verdict["checkpoint_age_seconds"] is not None:
                    age.add_metric(group_labels, verdict["checkpoint_age_seconds"])
                if verdict["reread_records"] is not None:
                    reread.add_metric(group_labels, verdict["reread_records"])
            for topic, records in result["topic_lag"].items():
                lag.add_metric([*labels, topic], records)
        return [can, blockers, age, reread, lag, success, stamp, duration, alive, heartbeat_age]


def listen_address(text):
    host, colon, port = text.rpartition(":")
    if not colon or not PORT.fullmatch(port):
        raise argparse.ArgumentTypeError(f"{text}: expected host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


def arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--properties", required=True, help="the rendered mm2.properties")
    parser.add_argument("--flow", required=True, help="the flow's name (label flow)")
    parser.add_argument("--listen", type=listen_address, default=("0.0.0.0", 9405), help="host:port (0.0.0.0:9405)")
    parser.add_argument("--interval", type=float, default=30, help="seconds between checks (30)")
    parser.add_argument("--max-lag", type=int, default=100, help="records per partition still caught up (100)")
    parser.add_argument(
        "--max-checkpoint-age", type=int, default=300, help="seconds a checkpoint behind the commit may be old (300)"
    )
    parser.add_argument("--max-reread", type=int, help="most records per partition a rollback may re-read (unset)")
    parser.add_argument(
        "--max-mm2-silence",
        type=int,
        help="seconds without a heartbeat before MM2 counts as down (3x the larger emit interval of mm2.properties)",
    )
    parser.add_argument("--ssl-cafile", help="PEM CA bundle for SSL clusters (kafka-python cannot read JKS/PKCS12)")
    parser.add_argument("--check", action="store_true", help="one check, printed as JSON; exit 0 if all can roll back")
    return parser.parse_args(argv)


def stderr(message):
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} mm2_readiness: {message}", file=sys.stderr, flush=True)


def run_checks(options, flows, collector, stop):
    while True:
        started = time.monotonic()
        for direction in flows:
            result = check(direction, options)
            collector.update(result)
            if not result["success"]:
                stderr(f"flow {options.flow} {direction.source}->{direction.target}: check failed: {result['error']}")
        if stop.wait(max(0.0, options.interval - (time.monotonic() - started))):
            return


def main(argv=None):
    options = arguments(argv)
    if kafka_mm2.KAFKA_IMPORT_ERROR:
        stderr(f"kafka-python is not importable:\n{kafka_mm2.KAFKA_IMPORT_ERROR}")
        return 2
    # kafka-python logs every refused connection: one line per failed check says it (never its config).
    logging.getLogger("kafka").addHandler(logging.NullHandler())
    logging.getLogger("kafka").propagate = False
    try:
        flows = load(options.properties, options.ssl_cafile)
    except (OSError, PropertiesError, re.error) as error:
        stderr(f"cannot read {options.properties}: {error}")
        return 2
    for direction in flows:
        for warning in direction.warnings:
            stderr(warning)
    if options.check:
        results = [check(direction, options) for direction in flows]
        print(json.dumps(dict(flow=options.flow, checks=results), indent=2, sort_keys=True))
        ok = all(r["success"] and all(g["can_roll_back"] for g in r["groups"].values()) for r in results)
        return 0 if ok else 1

    collector = ReadinessCollector(options.flow)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    host, port = options.listen
    start_http_server(port, addr=host, registry=registry)
    stderr(
        f"flow {options.flow}: serving on {host}:{port}, checking "
        f"{', '.join(f'{d.source}->{d.target}' for d in flows)} every {options.interval:g} s"
    )
    stop = threading.Event()
    worker = threading.Thread(target=run_checks, args=(options, flows, collector, stop), daemon=True)
    worker.start()

    # The handler only raises: the main thread sleeps, the checks (which can block on a dead cluster for the
    # client's request timeout) run in a daemon thread that dies with the process.
    def terminate(signum, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    try:
        while worker.is_alive():
            time.sleep(1)
    except SystemExit:
        stop.set()
        return 0
    return 1  # the check loop died: let the supervisor restart it


if __name__ == "__main__":
    sys.exit(main())
