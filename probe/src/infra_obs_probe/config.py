"""Configuration: load the YAML file the role renders, validate every key, and name file, key and value on error."""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import yaml

GO_DURATION = re.compile(r"([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+")
SOCKET_MODES = ("auto", "dgram", "raw")
# Names of hosts, regions, AZs, services and tags: they become label values, Consul names and matrix cells.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")
ADDRESS_TEXT = re.compile(r"[0-9A-Fa-f:.]{2,45}")  # no zone id, no host name: ip_address() accepts "fe80::1%eth0"
DOTTED = re.compile(r"[0-9.]+")
# scheme://host[:port][/path]: the host an RFC 1123 name or an IP literal ([v6]), the path up to 256 unreserved
# characters.
# An RFC 1123 host name (the resolver's business from there).
DNS_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
URL = re.compile(
    rf"https?://(\[[0-9A-Fa-f:.]{{2,45}}\]|{DNS_NAME.pattern})(:[0-9]{{1,5}})?(/[A-Za-z0-9._~/-]{{0,255}})?"
)
# A check's URL may carry a query of unreserved characters, '=', '&' and percent escapes.
QUERY = re.compile(r"\?[A-Za-z0-9._~=&%-]{0,255}")
MIN_INTERVAL = 0.01
# Every path keeps its last `window / interval` samples (the ring: time, value, outcome) and the sorted RTTs among
# them, about this many bytes per sample; a window must fit in a bounded number of them.
BYTES_PER_SAMPLE = 48
MAX_SAMPLES = 36_000


class ConfigError(Exception):
    """A configuration problem; str() reads `FILE: KEY: PROBLEM (got VALUE)`."""

    def __init__(self, path: str, key: str, problem: str, value: Any = None, show_value: bool = True):
        self.path, self.key, self.problem, self.value = path, key, problem, value
        text = f"{path}: {key}: {problem}"
        if show_value:
            text += f" (got {_show(value)})"
        super().__init__(text)


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 200 else text[:200] + "...(cut)"


def host_port(host: str, port: int) -> str:
    """HOST:PORT, an IPv6 literal in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def yaml_error(path: str, error: yaml.YAMLError) -> ConfigError:
    """A YAML syntax error as a ConfigError naming the line and column."""
    mark = getattr(error, "problem_mark", None)
    where = f"line {mark.line + 1} column {mark.column + 1}" if mark else "(file)"
    return ConfigError(path, where, f"invalid YAML: {getattr(error, 'problem', error)}", show_value=False)


def _grammar_text(grammar: re.Pattern) -> str:
    longest = grammar.pattern.rsplit(",", 1)[1].rstrip("}")
    return f"must be ASCII letters, digits and . _ - (starting with a letter or digit, at most {int(longest) + 1})"


def parse_address(text: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IP address literal, parsed strictly (no zone id, no host name); ValueError says what is wrong."""
    if not isinstance(text, str) or not ADDRESS_TEXT.fullmatch(text):
        raise ValueError("must be an IP address literal (no host names, no zone id)")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        if DOTTED.fullmatch(text):
            raise ValueError("is not an IPv4 address: four numbers 0-255 separated by dots") from None
        raise ValueError("is not a valid IPv6 address") from None


@dataclass(frozen=True)
class Source:
    name: str
    region: str
    az: str


@dataclass(frozen=True)
class Icmp:
    enabled: bool = True
    payload_size: int = 56
    socket: str = "auto"


@dataclass(frozen=True)
class Tcp:
    enabled: bool = True
    port: int = 9427


@dataclass(frozen=True)
class Mtr:
    enabled: bool = True
    interval: float = 30.0
    max_hops: int = 16
    count: int = 5


@dataclass(frozen=True)
class Health:
    loss_degraded: float = 0.01
    loss_unhealthy: float = 0.05
    rtt_p99_degraded: float = 0.1
    rtt_p99_unhealthy: float = 0.25


@dataclass(frozen=True)
class StaticTarget:
    name: str
    address: str
    family: int
    region: str = ""
    az: str = ""
    tcp_ports: tuple[int, ...] = ()


@dataclass(frozen=True)
class ConsulTargets:
    enabled: bool = False
    url: str = "http://127.0.0.1:8500"
    service: str = "infra-obs-probe"
    regions: tuple[str, ...] = ()
    azs: tuple[str, ...] = ()
    refresh: float = 15.0
    # Consul datacenters to read peers from; empty: every datacenter the agent knows (one per region, WAN-joined).
    datacenters: tuple[str, ...] = ()


@dataclass(frozen=True)
class Register:
    enabled: bool = False
    url: str = "http://127.0.0.1:8500"
    service: str = "infra-obs-probe"
    id: str = ""
    address: str = ""
    address6: str = ""
    port: int = 0
    tags: tuple[str, ...] = ("metrics", "probe")
    check_interval: str = "10s"
    check_url: str = ""
    # The team that owns this daemon's alerts: its registration's meta, which Prometheus makes a label.
    team: str = ""


@dataclass(frozen=True)
class Matrix:
    timeout: float = 2.0


@dataclass(frozen=True)
class Config:
    path: str
    source: Source
    listen_host: str = "0.0.0.0"
    listen_port: int = 9427
    interval: float = 1.0
    timeout: float = 1.0
    window: float = 300.0
    icmp: Icmp = field(default_factory=Icmp)
    tcp: Tcp = field(default_factory=Tcp)
    mtr: Mtr = field(default_factory=Mtr)
    health: Health = field(default_factory=Health)
    static: tuple[StaticTarget, ...] = ()
    consul: ConsulTargets = field(default_factory=ConsulTargets)
    register: Register = field(default_factory=Register)
    matrix: Matrix = field(default_factory=Matrix)

    @property
    def listen(self) -> str:
        return host_port(self.listen_host, self.listen_port)


class _Map:
    """One mapping of the file: typed getters that know their dotted key, and a check for unknown keys."""

    def __init__(self, path: str, key: str, data: Any):
        self.path, self.key = path, key
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(path, key or "(top level)", "must be a mapping", data)
        self.data = data
        self.used: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self.key}.{key}" if self.key else key

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.path, self.name(key), problem, self.data.get(key))

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        return self.data.get(key, default)

    def sub(self, key: str) -> _Map:
        return _Map(self.path, self.name(key), self.raw(key))

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "must be true or false")
        return value

    def number(self, key: str, default: float, low: float, high: float, low_open: bool = False) -> float:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, "must be a number")
        # Written so that NaN, which no comparison holds for, is refused too.
        if not low <= value <= high or (low_open and value == low):
            bound = f"> {low}" if low_open else f">= {low}"
            raise self.error(key, f"must be {bound} and <= {high}")
        return float(value)

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, "must be an integer")
        if not low <= value <= high:
            raise self.error(key, f"must be between {low} and {high}")
        return value

    def string(self, key: str, default: str | None = None, allow_empty: bool = False) -> str:
        if default is None and key not in self.data:
            raise ConfigError(self.path, self.name(key), "is required", show_value=False)
        value = self.raw(key, default)
        if not isinstance(value, str) or (not value and not allow_empty):
            raise self.error(key, "must be a non-empty string" if not allow_empty else "must be a string")
        return value

    def label(self, key: str, default: str | None = None, allow_empty: bool = False, grammar: re.Pattern = NAME) -> str:
        """A string of the NAME (or given) grammar: ASCII letters, digits and . _ -, starting with a letter or digit."""
        value = self.string(key, default, allow_empty)
        if value and not grammar.fullmatch(value):
            raise self.error(key, _grammar_text(grammar))
        return value

    def labels(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.raw(key, list(default))
        if value is None:
            value = []
        if not isinstance(value, list) or not all(isinstance(v, str) and NAME.fullmatch(v) for v in value):
            raise self.error(key, f"must be a list of names: each {_grammar_text(NAME)}")
        return tuple(value)

    def done(self) -> None:
        for key in self.data:
            if key not in self.used:
                raise ConfigError(self.path, self.name(str(key)), "unknown key", self.data[key])


def _address(m: _Map, key: str, family: int | None = None, required: bool = True) -> str:
    value = m.raw(key, None if required else "")
    if not required and value in ("", None):
        return ""
    try:
        ip = parse_address(value)
    except ValueError as e:
        raise m.error(key, str(e)) from None
    if family is not None and ip.version != family:
        raise m.error(key, f"must be an IPv{family} address")
    return ip.compressed


def _url(m: _Map, key: str, default: str | None, query: bool = False) -> str:
    """An http(s) URL of the URL grammar (and a query, if allowed): urlsplit alone takes whitespace, quotes and
    control characters. No default: required."""
    value = m.string(key, default)
    base, mark, rest = value.partition("?")
    if not URL.fullmatch(base) or (mark and not (query and QUERY.fullmatch(mark + rest))):
        plain = "a plain path and query" if query else "a plain path"
        raise m.error(key, f"must be an http:// or https:// URL: a host name or IP literal, a port, {plain}")
    parts = urllib.parse.urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or not parts.hostname:
        raise m.error(key, "has an invalid host or port")
    if parts.hostname.replace(".", "").isdigit() or ":" in parts.hostname:
        try:
            parse_address(parts.hostname)
        except ValueError as e:
            raise m.error(key, f"host {e}") from None
    return value if query else value.rstrip("/")  # a check calls the URL as written


def _listen(m: _Map, default: str = "0.0.0.0:9427") -> tuple[str, int]:
    value = m.raw("listen", default)
    match = re.fullmatch(r"(\[([0-9a-fA-F:.]+)\]|([0-9.]*)):([0-9]{1,5})", value) if isinstance(value, str) else None
    if not match or not 1 <= int(match.group(4)) <= 65535:
        raise m.error("listen", 'must be "HOST:PORT" with an IP literal host ("[::]:9427" for IPv6)')
    host = match.group(2) or match.group(3) or "0.0.0.0"
    try:
        host = parse_address(host).compressed
    except ValueError as e:
        raise m.error("listen", f"host {e}") from None
    return host, int(match.group(4))


def _static_target(m: _Map) -> StaticTarget:
    address = _address(m, "address")
    ports = m.raw("tcp_ports", [])
    if ports is None:
        ports = []
    if not isinstance(ports, list) or not all(
        isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535 for p in ports
    ):
        raise m.error("tcp_ports", "must be a list of ports (1-65535)")
    target = StaticTarget(
        name=m.label("name", grammar=HOST_NAME),
        address=address,
        family=ipaddress.ip_address(address).version,
        region=m.label("region", "", allow_empty=True),
        az=m.label("az", "", allow_empty=True),
        tcp_ports=tuple(dict.fromkeys(ports)),
    )
    m.done()
    return target


def _probes(top: _Map) -> tuple[Icmp, Tcp, Mtr]:
    m = top.sub("icmp")
    icmp = Icmp(m.boolean("enabled", True), m.integer("payload_size", 56, 16, 1400), m.string("socket", "auto"))
    if icmp.socket not in SOCKET_MODES:
        raise m.error("socket", f"must be one of {', '.join(SOCKET_MODES)}")
    m.done()
    m = top.sub("tcp")
    tcp = Tcp(m.boolean("enabled", True), m.integer("port", 9427, 1, 65535))
    m.done()
    m = top.sub("mtr")
    mtr = Mtr(
        m.boolean("enabled", True),
        m.number("interval", 30.0, 0.1, 86400),
        m.integer("max_hops", 16, 1, 64),
        m.integer("count", 5, 1, 50),
    )
    m.done()
    return icmp, tcp, mtr


def _health(m: _Map) -> Health:
    health = Health(
        m.number("loss_degraded", 0.01, 0.0, 1.0),
        m.number("loss_unhealthy", 0.05, 0.0, 1.0),
        m.number("rtt_p99_degraded", 0.1, 0.0, 3600, low_open=True),
        m.number("rtt_p99_unhealthy", 0.25, 0.0, 3600, low_open=True),
    )
    if health.loss_unhealthy < health.loss_degraded:
        raise m.error("loss_unhealthy", f"must be >= loss_degraded ({health.loss_degraded:g})")
    if health.rtt_p99_unhealthy < health.rtt_p99_degraded:
        raise m.error("rtt_p99_unhealthy", f"must be >= rtt_p99_degraded ({health.rtt_p99_degraded:g})")
    m.done()
    return health


def _targets(targets: _Map) -> tuple[tuple[StaticTarget, ...], ConsulTargets]:
    static_list = targets.raw("static", [])
    if static_list is None:
        static_list = []
    if not isinstance(static_list, list):
        raise targets.error("static", "must be a list of targets")
    path = targets.path
    static = tuple(_static_target(_Map(path, f"targets.static[{i}]", item)) for i, item in enumerate(static_list))
    by_address: dict[str, int] = {}
    by_name: dict[tuple[str, int], int] = {}  # a host may have one address per family
    for i, t in enumerate(static):
        first = by_address.setdefault(t.address, i)
        if first != i:
            what = "the same target as" if static[first].name == t.name else f"{static[first].name!r}'s address in"
            raise ConfigError(path, f"targets.static[{i}].address", f"is {what} targets.static[{first}]", t.address)
        first = by_name.setdefault((t.name, t.family), i)
        if first != i:
            raise ConfigError(
                path,
                f"targets.static[{i}].name",
                f"already has an IPv{t.family} address in targets.static[{first}] ({static[first].address})",
                t.name,
            )
    m = targets.sub("consul")
    consul = ConsulTargets(
        m.boolean("enabled", False),
        _url(m, "url", "http://127.0.0.1:8500"),
        m.label("service", "infra-obs-probe"),
        m.labels("regions", ()),
        m.labels("azs", ()),
        m.number("refresh", 15.0, 0.1, 86400),
        m.labels("datacenters", ()),
    )
    m.done()
    targets.done()
    return static, consul


def _register(
    m: _Map,
    source: Source,
    listen_port: int,
    service: str = "infra-obs-probe",
    tags: tuple[str, ...] = ("metrics", "probe"),
) -> Register:
    service = m.label("service", service)
    register = Register(
        enabled=m.boolean("enabled", False),
        url=_url(m, "url", "http://127.0.0.1:8500"),
        service=service,
        id=m.label("id", f"{service}-{source.name}", grammar=HOST_NAME),
        address=_address(m, "address", 4, required=False),
        address6=_address(m, "address6", 6, required=False),
        port=m.integer("port", listen_port, 1, 65535),
        tags=m.labels("tags", tags),
        check_interval=m.string("check_interval", "10s"),
        check_url=m.string("check_url", "", allow_empty=True),
        team=m.label("team", "", allow_empty=True),
    )
    if not GO_DURATION.fullmatch(register.check_interval):
        raise m.error("check_interval", 'must be a Go duration such as "10s"')
    if register.check_url:
        _url(m, "check_url", "")
    m.done()
    return register


def parse(data: Any, path: str) -> Config:
    top = _Map(path, "", data)
    if not top.has("source"):
        raise ConfigError(path, "source", "is required", show_value=False)
    src = top.sub("source")
    source = Source(src.label("name", grammar=HOST_NAME), src.label("region", "", True), src.label("az", "", True))
    src.done()
    listen_host, listen_port = _listen(top)
    interval = top.number("interval", 1.0, MIN_INTERVAL, 3600)
    timeout = top.number("timeout", 1.0, 0.0, 60, low_open=True)
    window = top.number("window", 300, 0.0, 86400, low_open=True)
    if window < interval:
        raise top.error("window", f"must be at least the interval ({interval:g} s)")
    samples = window / interval
    if samples > MAX_SAMPLES:
        raise top.error(
            "window",
            f"keeps {samples:,.0f} samples per path at interval {interval:g} s (about "
            f"{samples * BYTES_PER_SAMPLE / 2**20:,.1f} MiB per path): at most {MAX_SAMPLES:,} "
            f"(a window of {MAX_SAMPLES * interval:g} s at this interval)",
        )
    icmp, tcp, mtr = _probes(top)
    health = _health(top.sub("health"))
    static, consul = _targets(top.sub("targets"))
    register = _register(top.sub("register"), source, listen_port)
    m = top.sub("matrix")
    matrix = Matrix(m.number("timeout", 2.0, 0.0, 60, low_open=True))
    m.done()
    top.done()
    return Config(
        path=path,
        source=source,
        listen_host=listen_host,
        listen_port=listen_port,
        interval=interval,
        timeout=timeout,
        window=window,
        icmp=icmp,
        tcp=tcp,
        mtr=mtr,
        health=health,
        static=static,
        consul=consul,
        register=register,
        matrix=matrix,
    )


def load(path: str) -> Config:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, "(file)", f"cannot be read: {e.strerror}", show_value=False) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise yaml_error(path, e) from None
    return parse(data, path)
