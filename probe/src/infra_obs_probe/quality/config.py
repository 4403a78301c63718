"""The checker's configuration (rendered by the quality_checker role) and the check files it names (the users' own,
one per service, written through merge requests): every value parsed to a typed value inside a tight grammar, and
every error naming file, key and value."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..config import (
    DNS_NAME,
    HOST_NAME,
    URL,
    ConfigError,
    Register,
    Source,
    _address,
    _listen,
    _Map,
    _register,
    _url,
    host_port,
    yaml_error,
)

CHECK_KINDS = ("http", "tcp", "grpc", "consul", "prometheus")
GRPC_SERVICE = re.compile(r"[A-Za-z0-9_.]{0,200}")
ABSOLUTE_PATH = re.compile(r"/[A-Za-z0-9._/-]{1,255}")
MAX_FILE_BYTES = 1 << 20
MAX_CHECKS = 1000


@dataclass(frozen=True)
class Burst:
    count: int = 10
    concurrency: int = 2


@dataclass(frozen=True)
class Thresholds:
    """Upper bounds on the burst's latency percentiles (seconds; 0 = none) and on its error ratio."""

    p50: float = 0.0
    p99: float = 0.0
    error_ratio: float = 0.0


@dataclass(frozen=True)
class Check:
    name: str
    service: str
    kind: str
    path: str  # the check file, for errors and the table
    runs_on: tuple[str, ...] = ()  # checker names; empty: every checker
    timeout: float = 2.0
    burst: Burst = field(default_factory=Burst)
    thresholds: Thresholds = field(default_factory=Thresholds)
    # http
    url: str = ""
    status: tuple[int, ...] = (200,)
    body_contains: str = ""
    ca_file: str = ""
    min_days_valid: int = 0
    # tcp, grpc
    host: str = ""
    port: int = 0
    grpc_service: str = ""
    tls: bool = False
    # consul, prometheus: the service or job, and how many instances at least
    target_service: str = ""
    min_instances: int = 1

    @property
    def target(self) -> str:
        """What the check calls, as the table and the metrics name it (consul and prometheus checks name each
        instance in their results instead)."""
        if self.kind == "http":
            return self.url
        if self.kind in ("tcp", "grpc"):
            return host_port(self.host, self.port) + (f"/{self.grpc_service}" if self.grpc_service else "")
        return self.target_service


@dataclass(frozen=True)
class QualityConfig:
    path: str
    checker: Source
    listen_host: str = "0.0.0.0"
    listen_port: int = 9429
    interval: float = 60.0
    parallel: int = 4
    consul_url: str = "http://127.0.0.1:8500"
    prometheus_url: str = ""
    checks_dir: str = ""
    register: Register = field(default_factory=Register)
    checks: tuple[Check, ...] = ()

    def mine(self) -> tuple[Check, ...]:
        """The checks this checker runs: those without runs_on, and those naming it."""
        return tuple(c for c in self.checks if not c.runs_on or self.checker.name in c.runs_on)


class _UserLoader(yaml.SafeLoader):
    """YAML for files a hostile author may write: no aliases (a few lines of them expand to gigabytes) and no
    duplicate keys (the second would silently win over the one a reviewer read)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "aliases are not allowed", self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str) and key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key[:100]!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(path, "(file)", f"cannot be read: {e.strerror}", show_value=False) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(path, "(file)", f"is larger than {MAX_FILE_BYTES} bytes", show_value=False)
    try:
        return yaml.load(data.decode("utf-8"), Loader=_UserLoader)
    except UnicodeDecodeError:
        raise ConfigError(path, "(file)", "is not UTF-8 text", show_value=False) from None
    except yaml.YAMLError as e:
        raise yaml_error(path, e) from None


def _host(m: _Map, key: str) -> str:
    value = m.string(key)
    if ":" in value or value.replace(".", "").isdigit():
        return _address(m, key)
    if not DNS_NAME.fullmatch(value):
        raise m.error(key, "must be an IP address literal or a DNS name (letters, digits, '.' and '-')")
    return value.lower()


def _milliseconds(m: _Map, key: str) -> float:
    return m.number(key, 0, 0.0, 600_000) / 1000


def _optional_path(m: _Map, key: str) -> str:
    value = m.string(key, "", allow_empty=True)
    if value and (not ABSOLUTE_PATH.fullmatch(value) or "/../" in value + "/" or "/./" in value + "/"):
        raise m.error(key, "must be an absolute path of letters, digits and . _ - /, without . or .. segments")
    return value


def _http(m: _Map) -> dict:
    url = _url(m, "url", None, query=True)
    status = m.raw("status", [200])
    if (
        not isinstance(status, list)
        or not status
        or not all(isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in status)
    ):
        raise m.error("status", "must be a non-empty list of HTTP status codes (100-599)")
    body = m.string("body_contains", "", allow_empty=True)
    if len(body) > 200 or not body.isprintable():
        raise m.error("body_contains", "must be printable text of at most 200 characters")
    https = url.startswith("https://")
    fields = {
        "url": url,
        "status": tuple(dict.fromkeys(status)),
        "body_contains": body,
        "ca_file": _optional_path(m, "ca_file"),
        "min_days_valid": m.integer("min_days_valid", 0, 0, 3650),
    }
    if not https and (fields["ca_file"] or fields["min_days_valid"]):
        raise m.error("ca_file" if fields["ca_file"] else "min_days_valid", "applies to https:// URLs only")
    return fields


def _endpoint(m: _Map) -> dict:
    return {"host": _host(m, "address"), "port": m.integer("port", 0, 1, 65535)}


def _grpc(m: _Map) -> dict:
    service = m.string("service", "", allow_empty=True)
    if not GRPC_SERVICE.fullmatch(service):
        raise m.error("service", "must be a gRPC service name: letters, digits, '_' and '.' (empty: the server)")
    tls = m.boolean("tls", False)
    ca_file = _optional_path(m, "ca_file")
    if ca_file and not tls:
        raise m.error("ca_file", "applies with tls: true only")
    return _endpoint(m) | {"grpc_service": service, "tls": tls, "ca_file": ca_file}


def _instances(m: _Map) -> dict:
    return {"target_service": m.label("service"), "min_instances": m.integer("min_instances", 1, 0, 100_000)}


KINDS = {"http": _http, "tcp": _endpoint, "grpc": _grpc, "consul": _instances, "prometheus": _instances}


def _check(m: _Map, service: str) -> Check:
    name = m.label("name")
    kinds = [k for k in CHECK_KINDS if m.has(k)]
    if len(kinds) != 1:
        raise ConfigError(m.path, m.key, f"must have exactly one of {', '.join(CHECK_KINDS)}", sorted(map(str, m.data)))
    kind = kinds[0]
    sub = m.sub(kind)
    fields = KINDS[kind](sub)
    sub.done()
    burst = Burst()
    thresholds = Thresholds()
    if kind in ("http", "tcp", "grpc"):
        b = m.sub("burst")
        burst = Burst(b.integer("count", 10, 1, 1000), b.integer("concurrency", 2, 1, 64))
        b.done()
        if burst.concurrency > burst.count:
            raise b.error("concurrency", f"must be at most the count ({burst.count})")
        thresholds = Thresholds(
            _milliseconds(m, "max_p50_ms"), _milliseconds(m, "max_p99_ms"), m.number("max_error_ratio", 0.0, 0.0, 1.0)
        )
    check = Check(
        name=name,
        service=service,
        kind=kind,
        path=m.path,
        runs_on=m.labels("runs_on", ()),
        timeout=m.number("timeout", 2.0, 0.0, 60, low_open=True),
        burst=burst,
        thresholds=thresholds,
        **fields,
    )
    m.done()
    return check


def parse_checks(data: Any, path: str) -> tuple[Check, ...]:
    """One check file: `service` (a name) and `checks`, a list of checks of one kind each."""
    top = _Map(path, "", data)
    service = top.label("service")
    items = top.raw("checks")
    if not isinstance(items, list) or not items:
        raise top.error("checks", "must be a non-empty list of checks")
    checks = tuple(_check(_Map(path, f"checks[{i}]", item), service) for i, item in enumerate(items))
    top.done()
    return checks


def load_checks(directory: str) -> tuple[Check, ...]:
    """Every *.yml of the directory, in name order; check names unique across them."""
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith((".yml", ".yaml")))
    except OSError as e:
        raise ConfigError(directory, "(directory)", f"cannot be read: {e.strerror}", show_value=False) from None
    checks: list[Check] = []
    first: dict[str, str] = {}
    for name in names:
        path = os.path.join(directory, name)
        for i, check in enumerate(parse_checks(read_yaml(path), path)):
            where = first.setdefault(check.name, path)
            if where != path or sum(c.name == check.name for c in checks if c.path == path):
                raise ConfigError(path, f"checks[{i}].name", f"is already the name of a check in {where}", check.name)
            checks.append(check)
    if len(checks) > MAX_CHECKS:
        raise ConfigError(directory, "(directory)", f"holds {len(checks)} checks: at most {MAX_CHECKS}", None, False)
    return tuple(checks)


def parse(data: Any, path: str, checks: tuple[Check, ...] | None = None) -> QualityConfig:
    """The checker's own file; its checks come from checks_dir unless given (a test's)."""
    top = _Map(path, "", data)
    if not top.has("checker"):
        raise ConfigError(path, "checker", "is required", show_value=False)
    c = top.sub("checker")
    checker = Source(c.label("name", grammar=HOST_NAME), c.label("region", "", True), c.label("az", "", True))
    c.done()
    listen_host, listen_port = _listen(top, "0.0.0.0:9429")
    prometheus_url = top.string("prometheus_url", "", allow_empty=True)
    if prometheus_url and not URL.fullmatch(prometheus_url):
        _url(top, "prometheus_url", "")
    checks_dir = _optional_path(top, "checks_dir")
    register = _register(top.sub("register"), checker, listen_port, "infra-obs-quality", ("metrics", "quality"))
    config = QualityConfig(
        path=path,
        checker=checker,
        listen_host=listen_host,
        listen_port=listen_port,
        interval=top.number("interval", 60.0, 1.0, 86400),
        parallel=top.integer("parallel", 4, 1, 64),
        consul_url=_url(top, "consul_url", "http://127.0.0.1:8500"),
        prometheus_url=prometheus_url.rstrip("/"),
        checks_dir=checks_dir,
        register=register,
        checks=checks if checks is not None else (load_checks(checks_dir) if checks_dir else ()),
    )
    top.done()
    if not config.prometheus_url:
        for check in config.mine():
            if check.kind == "prometheus":
                raise ConfigError(
                    check.path,
                    check.name,
                    "is a prometheus check this checker runs, but it has no prometheus_url",
                    show_value=False,
                )
    return config


def load(path: str) -> QualityConfig:
    return parse(read_yaml(path), path)
