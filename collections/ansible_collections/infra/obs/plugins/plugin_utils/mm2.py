# Copyright: infra.obs maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kafka MirrorMaker 2 flows as data: load and validate a team's YAML (clusters and one flow) and render
mm2.properties for a dedicated MirrorMaker (org.apache.kafka.connect.mirror.MirrorMaker, Kafka 4.x).

Runs on the controller (action plugin and tests), so every error names the file, the key path, the value and why.
Passwords are never in the team's files, a Flow, its summary or an error: the files name the Ansible variable that
holds each one, and only render_properties() sees the values.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from ansible_collections.infra.obs.plugins.module_utils.kafka_mm2 import (
    MM2_GROUPS_EXCLUDE,
    MM2_TOPICS_EXCLUDE,
    POLICY_CLASSES,
)
from ansible_collections.infra.obs.plugins.plugin_utils.userdata import Problem, ProblemsError, host_port

MASK = "********"
# Aliases become part of property names (<alias>.bootstrap.servers, <a>-><b>.enabled) and of topic names.
ALIAS = re.compile(r"[A-Za-z0-9_-]{1,64}")
VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
TOPIC_CHARS = re.compile(r"[A-Za-z0-9._-]+")
ABSOLUTE_PATH = re.compile(r"/.*")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# MM2 reads these settings into Java ints and shorts: a larger number stops it at start-up.
JAVA_INT_MAX, JAVA_SHORT_MAX = 2**31 - 1, 2**15 - 1
SECRET_NAME = re.compile(r"password|passwd|passphrase|pwd|secret|token|credential", re.IGNORECASE)
# A secret whatever key it sits under: a JAAS option (password="..."), a private key in PEM.
SECRET_TEXT = re.compile(r"password\s*=|-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----", re.IGNORECASE)

KEYS = {
    "": {"clusters", "flow"},
    "cluster": {"bootstrap_servers", "brokers", "security", "description"},
    "security": {
        "protocol",
        "sasl_mechanism",
        "username",
        "password_var",
        "truststore",
        "truststore_password_var",
        "keystore",
        "keystore_password_var",
    },
    "flow": {
        "source",
        "target",
        "topics",
        "groups",
        "replication_policy",
        "separator",
        "replication_factor",
        "intervals",
        "offset_lag_max",
        "sync_group_offsets",
        "sync_topic_configs",
        "tasks_max",
        "failback",
        "description",
    },
    "filter": {"include", "exclude"},
    "intervals": {
        "refresh_topics_seconds",
        "refresh_groups_seconds",
        "emit_checkpoints_seconds",
        "emit_heartbeats_seconds",
        "sync_group_offsets_seconds",
        "offset_flush_seconds",
    },
    "failback": {"enabled", "keep_forward"},
}
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL")
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
SASL_KEYS = ("sasl_mechanism", "username", "password_var")
SSL_KEYS = ("truststore", "truststore_password_var", "keystore", "keystore_password_var")
OFFSET_FLUSH = "offset.flush.interval.ms"
# file key -> (MM2 property, default, maximum). Defaults are MM2's own; the maxima catch milliseconds written as
# seconds, and keep checkpoints (which a rollback needs newer than the group's last commit) coming.
INTERVALS = {
    "refresh_topics_seconds": ("refresh.topics.interval.seconds", 600, 86400),
    "refresh_groups_seconds": ("refresh.groups.interval.seconds", 600, 86400),
    "emit_checkpoints_seconds": ("emit.checkpoints.interval.seconds", 60, 3600),
    "emit_heartbeats_seconds": ("emit.heartbeats.interval.seconds", 1, 3600),
    "sync_group_offsets_seconds": ("sync.group.offsets.interval.seconds", 60, 3600),
    # Kafka Connect's offset commit of the source tasks, per cluster written to: MM2 holds back the offset sync of a
    # partition's last record until then, so a drained group's checkpoint can only be exact after it.
    "offset_flush_seconds": (OFFSET_FLUSH, 60, 3600),
}
DEFAULT_OFFSET_LAG_MAX = 100
# Every topic MM2 creates: the replicated topics, its own, and the herder's Kafka Connect topics. All on the cluster
# a flow writes to (offset syncs too, with offset-syncs.topic.location = target).
REPLICATION_FACTORS = (
    "replication.factor",
    "checkpoints.topic.replication.factor",
    "heartbeats.topic.replication.factor",
    "offset-syncs.topic.replication.factor",
    "config.storage.replication.factor",
    "offset.storage.replication.factor",
    "status.storage.replication.factor",
)
# Patterns java.util.regex refuses or reads differently, on the pattern with escapes taken as pairs.
JAVA_DIFFERENCES = (
    (re.compile(r"\(\?P"), "(?P<name>...) and (?P=name) are Python-only; Java writes (?<name>...) and \\k<name>"),
    (re.compile(r"\(\?#"), "java.util.regex has no (?#...) comments"),
    (re.compile(r"\(\?\("), "java.util.regex has no conditional groups (?(...)...)"),
    (re.compile(r"\(\?[A-Za-z-]*[aLx]"), "flags a and L are Python-only; with x Java also skips blanks in classes"),
)


@dataclass(frozen=True)
class Security:
    protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password_var: str | None = None
    truststore: str | None = None
    truststore_password_var: str | None = None
    keystore: str | None = None
    keystore_password_var: str | None = None


@dataclass(frozen=True)
class Cluster:
    alias: str
    file: str
    bootstrap_servers: tuple[str, ...]
    brokers: int | None  # None while invalid
    security: Security

    def secret_vars(self) -> list[tuple[str, str, str]]:
        """(file, key path, variable name) of each password this cluster needs."""
        return [
            (self.file, f"clusters.{self.alias}.security.{name}", getattr(self.security, name))
            for name in ("password_var", "truststore_password_var", "keystore_password_var")
            if getattr(self.security, name)
        ]


@dataclass(frozen=True)
class Filter:
    include: tuple[str, ...]
    exclude: tuple[str, ...]


def directions(source: Cluster, target: Cluster, failback: bool, keep_forward: bool) -> list[tuple[Cluster, Cluster]]:
    """The replications MM2 runs, each (from, to): the forward one until cutover, then the failback one (both only
    when the team keeps the forward flow, which the prefixed policy allows)."""
    forward, back = (source, target), (target, source)
    if not failback:
        return [forward]
    return [forward, back] if keep_forward else [back]


@dataclass(frozen=True)
class Flow:
    file: str
    source: Cluster
    target: Cluster
    topics: Filter
    groups: Filter
    policy: str
    separator: str
    replication_factor: int
    intervals: dict[str, int]
    offset_lag_max: int
    sync_group_offsets: bool
    sync_topic_configs: bool
    tasks_max: int
    failback: bool
    keep_forward: bool

    @property
    def enabled(self) -> list[tuple[Cluster, Cluster]]:
        return directions(self.source, self.target, self.failback, self.keep_forward)

    def secret_vars(self) -> list[tuple[str, str, str]]:
        return self.source.secret_vars() + self.target.secret_vars()

    def checkpoints_topic(self, upstream: Cluster) -> str:
        """The topic holding checkpoints of upstream's groups, on the cluster it replicates into (MM2's internal
        topic names use the separator too)."""
        return f"{upstream.alias}{self.separator}checkpoints{self.separator}internal"

    def summary(self) -> dict:
        """What the flow does, for results and reports; no secrets."""
        return {
            "file": self.file,
            "source": self.source.alias,
            "target": self.target.alias,
            "enabled": [f"{a.alias}->{b.alias}" for a, b in self.enabled],
            "replication_policy": self.policy,
            "separator": self.separator,
            "replication_factors": dict.fromkeys(REPLICATION_FACTORS, self.replication_factor),
            "checkpoints": [
                {"cluster": to.alias, "topic": self.checkpoints_topic(upstream)} for upstream, to in self.enabled
            ],
            "topics": {"include": list(self.topics.include), "exclude": list(self.topics.exclude)},
            "groups": {"include": list(self.groups.include), "exclude": list(self.groups.exclude)},
            "sync_group_offsets": self.sync_group_offsets,
            "intervals": dict(self.intervals),
            "failback": self.failback,
            "clusters": {
                c.alias: {
                    "bootstrap_servers": list(c.bootstrap_servers),
                    "brokers": c.brokers,
                    "protocol": c.security.protocol,
                }
                for c in (self.source, self.target)
            },
        }


def java_regex_problem(pattern: str) -> str | None:
    """Why MM2 could not use pattern in a topic or group filter, or None.

    MM2 reads these lists with java.util.regex (joined with '|', full match). Python's re is only an approximation
    of it: what re refuses is refused, and so is each construct known to be refused or read differently by Java.
    """
    if not pattern or pattern.strip() != pattern:
        return "must be a non-empty pattern without surrounding whitespace (MM2 trims list entries)"
    if "," in pattern:
        return "contains ',': MM2 splits these lists on commas (write {n,m} repetitions another way)"
    if CONTROL.search(pattern):
        return "contains a control character (Java trims them from list entries): write it as an escape such as \\x01"
    return next(_java_only_problems(pattern), None) or _python_re_problem(pattern)


def _java_only_problems(pattern: str) -> Iterator[str]:
    """Why java.util.regex refuses or reads differently each such construct of pattern, as Python's re reads it."""
    tokens = re.findall(r"\\.|.", pattern, re.DOTALL)  # an escape is one token
    plain = "".join(t if len(t) == 1 else "_" for t in tokens)
    yield from (why for construct, why in JAVA_DIFFERENCES if construct.search(plain))
    in_class = False
    for index, token in enumerate(tokens):
        rest = "".join(tokens[index + 1 :])
        if token == "\\U":
            yield "\\U escapes are Python-only; Java writes \\x{...}"
        elif token == "\\0" and not re.match("[0-7]", rest):
            yield "java.util.regex refuses \\0 without octal digits; write \\x00"
        elif token == "\\b" and in_class:
            yield "\\b in a class is a backspace to Python's re and an error to java.util.regex"
        elif token == "[" and in_class:
            yield "java.util.regex reads '[' inside a class as a nested class; write \\["
        elif token == "[":
            in_class = True
        elif token == "]" and in_class and tokens[index - 1] != "[" and tokens[index - 2 : index] != ["[", "^"]:
            in_class = False
        elif token == "{" and not in_class and not re.match(r"[0-9]+\}", rest):
            yield "java.util.regex refuses a '{' that does not start a {n} repetition; write \\{"


def _python_re_problem(pattern: str) -> str | None:
    with warnings.catch_warnings():
        # re warns about nested sets and set operations ([a[b]], &&), which java.util.regex does perform.
        warnings.simplefilter("error", FutureWarning)
        try:
            re.compile(pattern)
        except re.error as error:
            return f"not a regular expression (Python's re, standing in for java.util.regex: {error})"
        except FutureWarning as warning:
            return f"java.util.regex reads this differently ({warning})"
    return None


def _redacted(value: object) -> object:
    """value with whatever sits under a secret-looking key, and any text that holds a secret, masked, so that no
    error echoes a password."""
    if isinstance(value, dict):
        return {k: MASK if isinstance(k, str) and SECRET_NAME.search(k) else _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    if isinstance(value, str) and SECRET_TEXT.search(value):
        return MASK
    return value


def _shown(key: str, value: object) -> object:
    """What an error may show of the value at key: masked under a secret-looking key (but the name of a variable
    under a *_var key), redacted inside."""
    name = key.rsplit(".", 1)[-1]
    variable_name = name.endswith("_var") and isinstance(value, str) and VARIABLE.fullmatch(value)
    if value is not None and SECRET_NAME.search(name) and not variable_name:
        return MASK
    return _redacted(value)


class _Loader:
    def __init__(self, files: list[str]) -> None:
        self.files = files
        self.problems: list[Problem] = []
        self.clusters: dict[str, Cluster] = {}
        self.flows: list[tuple[str, object]] = []

    def fail(self, file: str, key: str, value: object, why: str) -> None:
        self.problems.append(Problem(file, key, _shown(key, value), why))

    def mapping(self, file: str, key: str, value: object, kind: str | None) -> dict:
        """value, if a mapping; its keys must be those of KEYS[kind] (any, for kind None)."""
        if not isinstance(value, dict):
            self.fail(file, key or "(top level)", value, "must be a mapping")
            return {}
        for unknown in sorted(set(value) - KEYS[kind], key=str) if kind is not None else ():
            where = f"{key}.{unknown}" if key else str(unknown)
            if isinstance(unknown, str) and SECRET_NAME.search(unknown):
                self.fail(
                    file,
                    where,
                    MASK,
                    "secrets never go in this file: keep the password in an Ansible variable (in a vault) and name "
                    "that variable in password_var, truststore_password_var or keystore_password_var",
                )
            else:
                self.fail(file, where, value[unknown], f"unknown key; expected one of {sorted(KEYS[kind])}")
        return value

    def integer(self, file: str, key: str, value: object, low: int, high: int | None = None) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            limits = f"from {low} to {high}" if high is not None else f"at least {low}"
            self.fail(file, key, value, f"must be a whole number {limits}")
            return None
        return value

    def flag(self, file: str, key: str, value: object) -> bool:
        if not isinstance(value, bool):
            self.fail(file, key, value, "must be true or false")
            return False
        return value

    def choice(self, file: str, key: str, value: object, options: Iterable[str], why: str = "") -> str | None:
        if not isinstance(value, str) or value not in options:
            self.fail(file, key, value, f"must be one of {', '.join(options)}{why}")
            return None
        return value

    def text(self, file: str, key: str, value: object, why: str, pattern: re.Pattern | None = None) -> str | None:
        """A single line of text (matching pattern, if given); why says what it must be."""
        if (
            not isinstance(value, str)
            or not value
            or CONTROL.search(value)
            or (pattern and not pattern.fullmatch(value))
        ):
            self.fail(file, key, value, why)
            return None
        return value

    def description(self, file: str, key: str, spec: dict) -> None:
        if "description" in spec:
            self.text(file, f"{key}.description", spec["description"], "must be a single line of text")

    def document(self, file: str, data: object) -> None:
        data = self.mapping(file, "", data, "")
        for alias, spec in self.mapping(file, "clusters", data.get("clusters", {}), None).items():
            self.cluster(file, alias, spec)
        if "flow" in data:
            self.flows.append((file, data["flow"]))

    def cluster(self, file: str, alias: object, spec: object) -> None:
        key = f"clusters.{alias}"
        if not isinstance(alias, str) or not ALIAS.fullmatch(alias):
            self.fail(
                file, key, alias, "aliases are letters, digits, '_' and '-' (up to 64): MM2 puts them in topic names"
            )
            return
        if alias in self.clusters:
            self.fail(file, key, alias, f"alias already defined in {self.clusters[alias].file}")
            return
        spec = self.mapping(file, key, spec, "cluster")
        self.description(file, key, spec)
        servers = spec.get("bootstrap_servers")
        if not isinstance(servers, list) or not servers:
            self.fail(file, f"{key}.bootstrap_servers", servers, "must be a list of host:port, at least one")
            servers = []
        parsed: list[str] = []
        for index, server in enumerate(servers):
            where = f"{key}.bootstrap_servers[{index}]"
            canonical = host_port(server) if isinstance(server, str) else None
            if canonical is None:
                self.fail(
                    file,
                    where,
                    server,
                    "must be host:port (IPv6 as [address]:port, no zone id), the host an address or DNS name, with a "
                    "port from 1 to 65535",
                )
            elif canonical in parsed:
                self.fail(file, where, server, "listed twice")
            else:
                parsed.append(canonical)
        brokers = self.integer(file, f"{key}.brokers", spec.get("brokers"), 1, JAVA_SHORT_MAX)
        security = self.security(file, f"{key}.security", spec.get("security", {}))
        self.clusters[alias] = Cluster(alias, file, tuple(parsed), brokers, security)

    def security(self, file: str, key: str, spec: object) -> Security:
        spec = self.mapping(file, key, spec, "security")
        protocol = self.choice(
            file, f"{key}.protocol", spec.get("protocol", "PLAINTEXT"), PROTOCOLS, " (SCRAM only over TLS)"
        )
        if protocol is None:
            return Security()
        for name in SASL_KEYS if protocol != "SASL_SSL" else ():
            if name in spec:
                self.fail(file, f"{key}.{name}", spec[name], f"only for protocol SASL_SSL, not {protocol}")
        for name in SSL_KEYS if protocol == "PLAINTEXT" else ():
            if name in spec:
                self.fail(file, f"{key}.{name}", spec[name], "only for protocols SSL and SASL_SSL, not PLAINTEXT")
        found = {}
        if protocol == "SASL_SSL":
            found["sasl_mechanism"] = self.choice(file, f"{key}.sasl_mechanism", spec.get("sasl_mechanism"), MECHANISMS)
            why = "SASL needs a username (a single line of text)"
            found["username"] = self.text(file, f"{key}.username", spec.get("username"), why)
            found["password_var"] = self.variable(file, f"{key}.password_var", spec.get("password_var"), True)
        for store in ("truststore", "keystore") if protocol != "PLAINTEXT" else ():
            password_key = f"{store}_password_var"
            if store in spec:
                why = "must be an absolute path on the MM2 host"
                found[store] = self.text(file, f"{key}.{store}", spec[store], why, ABSOLUTE_PATH)
                # Kafka reads a truststore without its password (skipping the integrity check), never a keystore.
                required = store == "keystore"
                found[password_key] = self.variable(file, f"{key}.{password_key}", spec.get(password_key), required)
            elif password_key in spec:
                self.fail(file, f"{key}.{password_key}", spec[password_key], f"only with {store}")
        return Security(protocol, **{k: v for k, v in found.items() if v is not None})

    def variable(self, file: str, key: str, value: object, required: bool) -> str | None:
        """The name of the Ansible variable holding a password (the password itself never goes in the file)."""
        if value is None and not required:
            return None
        if not isinstance(value, str) or not VARIABLE.fullmatch(value):  # shown masked: it may be the password
            self.fail(file, key, value, "must name the Ansible variable that holds the password, never the password")
            return None
        return value

    def filter(self, file: str, key: str, spec: object, default_include: list[str] | None) -> Filter:
        spec = self.mapping(file, key, spec, "filter")
        lists = {}
        for part, default in (("include", default_include), ("exclude", [])):
            patterns = spec.get(part, default)
            if not isinstance(patterns, list) or (part == "include" and not patterns):
                at_least = ", at least one" if part == "include" else ""
                self.fail(file, f"{key}.{part}", patterns, f"must be a list of regular expressions{at_least}")
                patterns = []
            for index, pattern in enumerate(patterns):
                why = java_regex_problem(pattern) if isinstance(pattern, str) else "must be a regular expression"
                if why:
                    self.fail(file, f"{key}.{part}[{index}]", pattern, why)
            lists[part] = tuple(p for p in patterns if isinstance(p, str))
        return Filter(lists["include"], lists["exclude"])

    def cluster_ref(self, file: str, key: str, alias: object) -> Cluster | None:
        if not isinstance(alias, str) or alias not in self.clusters:
            self.fail(file, key, alias, f"unknown cluster alias; defined: {sorted(self.clusters)}")
            return None
        return self.clusters[alias]

    def flow(self) -> Flow | None:
        if not self.flows:
            self.fail(", ".join(self.files), "flow", None, "no file defines the flow (source, target, topics)")
            return None
        file, spec = self.flows[0]
        for other, other_spec in self.flows[1:]:
            why = f"the flow is already defined in {file}; one MM2 runs one flow"
            self.fail(other, "flow", other_spec, why)
        spec = self.mapping(file, "flow", spec, "flow")
        self.description(file, "flow", spec)
        source = self.cluster_ref(file, "flow.source", spec.get("source"))
        target = self.cluster_ref(file, "flow.target", spec.get("target"))
        if source and source == target:
            self.fail(
                file, "flow.target", target.alias, "same as flow.source: MM2 would replicate a cluster into itself"
            )
        elif source and target and set(source.bootstrap_servers) & set(target.bootstrap_servers):
            why = f"shares bootstrap servers with {source.alias}: MM2 would replicate a cluster into itself"
            self.fail(file, "flow.target", target.alias, why)
        topics = self.filter(file, "flow.topics", spec.get("topics", {}), None)
        groups = self.filter(file, "flow.groups", spec.get("groups", {}), [".*"])
        policy = self.choice(
            file, "flow.replication_policy", spec.get("replication_policy", "identity"), POLICY_CLASSES
        )
        separator = "."
        if "separator" in spec and policy != "prefixed":
            why = "only with replication_policy: prefixed (identity keeps topic names)"
            self.fail(file, "flow.separator", spec["separator"], why)
        elif "separator" in spec:
            why = "must be letters, digits, '.', '_' or '-', at least one (it goes into topic names)"
            separator = self.text(file, "flow.separator", spec["separator"], why, TOPIC_CHARS)
        failback = self.mapping(file, "flow.failback", spec.get("failback", {}), "failback")
        back = self.flag(file, "flow.failback.enabled", failback.get("enabled", False))
        keep_forward = self.flag(file, "flow.failback.keep_forward", failback.get("keep_forward", False))
        if keep_forward and not back:
            self.fail(file, "flow.failback.keep_forward", keep_forward, "only with flow.failback.enabled: true")
        elif keep_forward and policy == "identity":
            why = (
                "the identity policy cannot replicate both ways at once (same topic names: each side would copy "
                "the other's records back); once failback is enabled the forward flow is switched off"
            )
            self.fail(file, "flow.failback.keep_forward", keep_forward, why)
        intervals = self.mapping(file, "flow.intervals", spec.get("intervals", {}), "intervals")
        seconds = {
            name: self.integer(file, f"flow.intervals.{name}", intervals.get(name, default), 1, high)
            for name, (_property, default, high) in INTERVALS.items()
        }
        lag = self.integer(
            file, "flow.offset_lag_max", spec.get("offset_lag_max", DEFAULT_OFFSET_LAG_MAX), 0, JAVA_INT_MAX
        )
        tasks_max = self.integer(file, "flow.tasks_max", spec.get("tasks_max", 1), 1, 1000)
        sync_groups = self.flag(file, "flow.sync_group_offsets", spec.get("sync_group_offsets", False))
        sync_configs = self.flag(file, "flow.sync_topic_configs", spec.get("sync_topic_configs", True))
        written = [to for _from, to in directions(source, target, back, keep_forward)] if source and target else []
        factor = self.replication_factor(file, spec, written)
        if self.problems:
            return None
        return Flow(
            file=file,
            source=source,
            target=target,
            topics=topics,
            groups=groups,
            policy=policy,
            separator=separator,
            replication_factor=factor,
            intervals=seconds,
            offset_lag_max=lag,
            sync_group_offsets=sync_groups,
            sync_topic_configs=sync_configs,
            tasks_max=tasks_max,
            failback=back,
            keep_forward=keep_forward,
        )

    def replication_factor(self, file: str, spec: dict, written: list[Cluster]) -> int | None:
        """Explicit, or min(3, brokers) of the clusters MM2 writes to; never more than one of them has."""
        brokers = [c.brokers for c in written if c.brokers]
        if "replication_factor" not in spec:
            return min([3, *brokers])
        factor = self.integer(file, "flow.replication_factor", spec["replication_factor"], 1, JAVA_SHORT_MAX)
        for cluster in written if factor else []:
            if cluster.brokers and factor > cluster.brokers:
                why = f"larger than {cluster.alias}'s {cluster.brokers} broker(s), where MM2 creates its topics"
                self.fail(file, "flow.replication_factor", factor, why)
        return factor


def load(documents: list[tuple[str, object]]) -> Flow:
    """Validate parsed YAML documents, given as (file name, data), into the one flow they define. Raises
    ProblemsError with every problem found."""
    loader = _Loader([file for file, _data in documents])
    for file, data in documents:
        loader.document(file, data)
    flow = loader.flow()
    if flow is None:
        raise ProblemsError(loader.problems)
    return flow


def _escape(value: str) -> str:
    """A java.util.Properties value: MirrorMaker reads the file as ISO-8859-1 with backslash escapes, and drops
    a value's leading spaces."""
    out = []
    for char in value:
        if char == "\\":
            out.append("\\\\")
        elif " " <= char <= "~":
            out.append(char)
        else:
            encoded = char.encode("utf-16-be")
            out += [f"\\u{int.from_bytes(encoded[i : i + 2], 'big'):04x}" for i in range(0, len(encoded), 2)]
    text = "".join(out)
    return "\\" + text if text.startswith(" ") else text


def _jaas_quoted(value: str) -> str:
    """A quoted JAAS option value, as Kafka's JaasConfig (java.io.StreamTokenizer) reads it back."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _passwords(flow: Flow, secrets: Mapping[str, object]) -> dict[str, str]:
    problems = []
    found = {}
    for file, key, name in flow.secret_vars():
        value = secrets.get(name)
        if name not in secrets:
            why = f"no variable {name} is defined for this host (or it cannot be templated); define it in a vault"
            problems.append(Problem(file, key, name, why))
        elif not isinstance(value, str) or not value or CONTROL.search(value):
            # Never the value: it is a password.
            why = f"variable {name} must hold the password as a one-line string, quoted if numeric (value not shown)"
            problems.append(Problem(file, key, name, why))
        else:
            found[name] = value
    if problems:
        raise ProblemsError(problems)
    return found


def _cluster_properties(cluster: Cluster, passwords: dict[str, str]) -> list[tuple[str, str]]:
    security = cluster.security
    properties = [("bootstrap.servers", ",".join(cluster.bootstrap_servers)), ("security.protocol", security.protocol)]
    if security.protocol == "SASL_SSL":
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f"username={_jaas_quoted(security.username)} password={_jaas_quoted(passwords[security.password_var])};"
        )
        properties += [("sasl.mechanism", security.sasl_mechanism), ("sasl.jaas.config", jaas)]
    for store in ("truststore", "keystore"):
        if getattr(security, store):
            properties.append((f"ssl.{store}.location", getattr(security, store)))
        if getattr(security, f"{store}_password_var"):
            properties.append((f"ssl.{store}.password", passwords[getattr(security, f"{store}_password_var")]))
    return [(f"{cluster.alias}.{name}", value) for name, value in properties]


def render_properties(flow: Flow, secrets: Mapping[str, object]) -> str:
    """mm2.properties for a dedicated MirrorMaker (Kafka 4.x). secrets maps each password variable the flow names
    to its value; a missing or unusable one raises ProblemsError naming the variable, never the value."""
    passwords = _passwords(flow, secrets)
    source, target = flow.source.alias, flow.target.alias
    enabled = {(a.alias, b.alias) for a, b in flow.enabled}
    written = ", ".join(sorted({b for _a, b in enabled}))
    lines: list[str] = []

    def section(comment: str, properties: list[tuple[str, object]]) -> None:
        lines.extend(["", *(f"# {line}" for line in comment.splitlines())])
        for name, value in properties:
            text = str(value).lower() if isinstance(value, bool) else str(value)
            lines.append(f"{name} = {_escape(text)}")

    section(
        "mm2.properties for a dedicated MirrorMaker 2 (Kafka 4.x), rendered by infra.obs.mm2_config from\n"
        f"{flow.file}: do not edit here, change that file.",
        [("clusters", f"{source}, {target}")],
    )
    for cluster in sorted((flow.source, flow.target), key=lambda c: c.alias):
        section(
            f"Cluster {cluster.alias} ({cluster.file}), {cluster.brokers} broker(s)",
            _cluster_properties(cluster, passwords),
        )
    section(
        "Replication flows. A disabled flow emits no heartbeats either: its herder would write them, and its\n"
        "Kafka Connect topics, into the cluster it points at.",
        [
            (f"{a}->{b}.{name}", (a, b) in enabled)
            for a, b in ((source, target), (target, source))
            for name in ("enabled", "emit.heartbeats.enabled")
        ],
    )
    section(
        "What to replicate. MM2's own excludes are kept: a team's exclude list would replace them.",
        [
            ("topics", ", ".join(flow.topics.include)),
            ("topics.exclude", ", ".join(dict.fromkeys((*flow.topics.exclude, *MM2_TOPICS_EXCLUDE)))),
            ("groups", ", ".join(flow.groups.include)),
            ("groups.exclude", ", ".join(dict.fromkeys((*flow.groups.exclude, *MM2_GROUPS_EXCLUDE)))),
        ],
    )
    section(
        "Topic names: the identity policy keeps them, so consumers can roll over to the other cluster. Set for\n"
        "every connector: the checkpoint connector names the topics it translates with it too.",
        [("replication.policy.class", POLICY_CLASSES[flow.policy])]
        + ([("replication.policy.separator", flow.separator)] if flow.policy == "prefixed" else []),
    )
    section(
        f"Replication factors of every topic MM2 creates, all on {written}.",
        [(name, flow.replication_factor) for name in REPLICATION_FACTORS],
    )
    section(
        f"Offset syncs and checkpoints, all on {written}. infra.obs.kafka_group_rollback translates group\n"
        "offsets from the checkpoints: MM2's own group offset sync is off unless the team file turns it on.",
        [
            ("offset-syncs.topic.location", "target"),
            ("emit.offset-syncs.enabled", True),
            ("emit.checkpoints.enabled", True),
            ("offset.lag.max", flow.offset_lag_max),
            ("sync.group.offsets.enabled", flow.sync_group_offsets),
            *(
                (INTERVALS[name][0], seconds)
                for name, seconds in flow.intervals.items()
                if name != "offset_flush_seconds"
            ),
            *(
                (f"{cluster}.{OFFSET_FLUSH}", flow.intervals["offset_flush_seconds"] * 1000)
                for cluster in sorted({b for _a, b in enabled})
            ),
        ],
    )
    section(
        "ACLs stay with the platform's tooling: MM2's ACL sync needs ACL admin rights where it writes and would\n"
        "write ACLs into the source on failback. One MM2 process per flow: no internal REST server.",
        [
            ("sync.topic.configs.enabled", flow.sync_topic_configs),
            ("sync.topic.acls.enabled", False),
            ("dedicated.mode.enable.internal.rest", False),
            ("tasks.max", flow.tasks_max),
        ],
    )
    return "\n".join(lines[1:]) + "\n"


# A secret's line: any property (or continuation line) with a password in it, e.g. ssl.truststore.password = x or
# sasl.jaas.config = ... password="x";
SECRET_LINE = re.compile(r"(?im)(password[^\s=:]*[ \t]*[=:][ \t]*).*$")


def mask_secrets(text: str) -> str:
    """text (mm2.properties as rendered, or as found on a host) with every password replaced by MASK."""
    return SECRET_LINE.sub(lambda match: match.group(1) + MASK, text)
