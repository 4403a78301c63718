# Copyright: infra.obs maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Nginx IP whitelists as data: load and validate the users' YAML, resolve groups, compile geo maps, describe the
effective access (for diffs) and explain what one address reaches.

Runs on the controller (action plugin and tests), so every error names the file, the key path, the value and why.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections import defaultdict
from dataclasses import dataclass, field
from operator import itemgetter
from typing import NamedTuple

from ansible_collections.infra.obs.plugins.module_utils._action_specs import NGINX_WHITELIST
from ansible_collections.infra.obs.plugins.plugin_utils.userdata import (
    Problem,
    ProblemsError,
    host_port,
    without_cyclic_gc,
)

# Every grammar is matched whole (fullmatch): `$` would let a final newline through.
NAME = re.compile(r"[a-z][a-z0-9_-]{0,62}")
# A URL path as nginx matches it (decoded and normalised): no '%' escapes, dot segments or repeated slashes, none
# of nginx's own syntax (space, ';', braces, quotes, '#', '$', '\\') and nothing outside printable ASCII.
URL_PATH = re.compile(r"/[A-Za-z0-9._~+=,:@/-]{0,1023}")
# Before any parser sees it: only the characters of an IPv4 or IPv6 address and a prefix (no zone id, no names).
CIDR_TEXT = re.compile(r"[0-9A-Fa-f:.]{2,45}(/[0-9]{1,3})?")
DESCRIPTION_LIMIT = 1000
ALLOWED_KEYS = {
    "": {"settings", "groups", "backends", "rules"},
    "settings": {"broad_prefix_v4", "broad_prefix_v6", "trusted_proxies", "real_ip_header", "allow_empty"},
    "group": {"cidrs", "include", "allow_host_bits", "description"},
    "backend": {"protocol", "listen", "upstreams", "description"},
    "rule": {"backend", "groups", "paths", "allow_broad", "description"},
}
DEFAULT_SETTINGS = {"broad_prefix_v4": 8, "broad_prefix_v6": 32}
ALL_PATHS = "/"
HEADER = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,63}")
# nginx looks IPv4-mapped IPv6 clients (::ffff:a.b.c.d) up as IPv4: IPv6 entries inside ::ffff:0:0/96 never match.
IPV4_MAPPED_HIGH_BITS = 0xFFFF


def client_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as nginx's geo matches it: IPv4-mapped IPv6 addresses become IPv4."""
    ip = ipaddress.ip_address(address)
    return ip.ipv4_mapped or ip if ip.version == 6 else ip


class Network(NamedTuple):
    """A CIDR as integers. Lists run to 100,000s of entries, and ipaddress's networks hash, compare and sort in
    Python; these tuples do it in C. Sorted by family, first address, then prefix, so a covering network comes
    before everything it covers."""

    version: int
    first: int
    prefixlen: int
    text: str  # canonical, as ipaddress writes it

    @property
    def last(self) -> int:
        return self.first | _HOST_BITS[self.version][self.prefixlen]

    def covers(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return ip.version == self.version and self.first <= int(ip) <= self.last

    def __str__(self) -> str:
        return self.text


_PREFIXLEN = {str(length): length for length in range(129)}
# Network(...) without the Python-level __new__ a NamedTuple has: the parser makes one per CIDR.
_new_network = tuple.__new__
HOST_BITS_HINT = "; set allow_host_bits: true on the group to accept it"
# version -> prefix length -> the host bits of such a network (Network.last without the property call).
_HOST_BITS = {v: [(1 << (bits - length)) - 1 for length in range(bits + 1)] for v, bits in ((4, 32), (6, 128))}


class WhitelistError(ProblemsError):
    """Raised with every problem found; nothing is compiled when there is one."""


@dataclass
class Group:
    name: str
    file: str
    networks: list[tuple[Network, str]]  # (network, key path) as written
    includes: list[str]


@dataclass
class Backend:
    name: str
    file: str
    protocol: str
    listen: int
    upstreams: list[str]


@dataclass
class Rule:
    key: str
    file: str
    backend: str
    groups: list[str]
    paths: list[str]
    allow_broad: bool


@dataclass
class Whitelist:
    groups: dict[str, Group]
    backends: dict[str, Backend]
    rules: list[Rule]
    warnings: list[Problem] = field(default_factory=list)
    _members: dict[str, dict[Network, str]] = field(default_factory=dict, repr=False)
    # Opt-in: http clients are looked up by the address these proxies put in real_ip_header (nginx realip).
    trusted_proxies: list[Network] = field(default_factory=list)
    real_ip_header: str = "X-Forwarded-For"
    # Every group's networks in Network order (duplicates kept), as validation sorted them once: compile walks it
    # instead of sorting a large backend's networks again.
    ordered: list[Network] = field(default_factory=list, repr=False)

    def members(self, group: str) -> dict[Network, str]:
        """Every network of a group, its includes resolved: network -> the group that lists it. Cached: the
        whitelist does not change once loaded, and large lists ask for the same groups many times."""
        if group not in self._members:
            found: dict[Network, str] = {}
            for name in self._closure(group):
                for network, _key in self.groups[name].networks:
                    found.setdefault(network, name)
            self._members[group] = found
        return self._members[group]

    def _closure(self, group: str) -> list[str]:
        order, stack = [], [group]
        while stack:
            name = stack.pop()
            if name not in order:
                order.append(name)
                stack.extend(reversed(self.groups[name].includes))
        return order

    def _reach(self) -> dict[str, dict[str, dict[str, set[Network]]]]:
        """backend -> path -> group -> networks, as the rules grant them."""
        result: dict[str, dict[str, dict[str, set[Network]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(set))
        )
        for rule in self.rules:
            for path in rule.paths or [ALL_PATHS]:
                for group in rule.groups:
                    result[rule.backend][path][group].update(self.members(group))
        return result

    def access(self) -> dict[str, dict[str, dict[str, list[str]]]]:
        """Effective access, the unit of diffs: backend -> path -> group -> CIDRs (sorted, as strings)."""
        return {
            backend: {
                path: {group: [n.text for n in sorted(networks)] for group, networks in groups.items()}
                for path, groups in paths.items()
            }
            for backend, paths in self._reach().items()
        }

    def explain(self, address: str) -> list[dict]:
        """Which backends (and paths) an address reaches, through which group, network and rule."""
        ip = client_address(address)
        reasons = []
        for rule in self.rules:
            for group in rule.groups:
                for network, source in self.members(group).items():
                    if network.covers(ip):
                        for path in rule.paths or [ALL_PATHS]:
                            reasons.append(
                                {
                                    "backend": rule.backend,
                                    "path": path,
                                    "group": group,
                                    "via_group": source,
                                    "network": str(network),
                                    "rule": rule.key,
                                }
                            )
        return reasons


def _parse(cidr: str, strict: bool = True) -> Network:
    """ipaddress.ip_network(cidr, strict) as a Network, for the characters of an address and a prefix only (no zone
    id: ipaddress keeps `%<text>` in what it prints). The text is printed from the parsed value, never copied from
    the input. Clean entries are checked by the C library: ipaddress's Python parser would be most of the time a
    100,000-entry list takes."""
    if not CIDR_TEXT.fullmatch(cidr):
        raise ValueError(f"{cidr!r} is not an IPv4 or IPv6 address or CIDR")
    address, slash, prefix = cidr.partition("/")
    version, family, bits = (6, socket.AF_INET6, 128) if ":" in address else (4, socket.AF_INET, 32)
    # Canonical prefix texts only ("24", not "024"): the dict answers for the digits and the bound at once.
    prefixlen = _PREFIXLEN.get(prefix, -1) if slash else bits
    if strict and 0 <= prefixlen <= bits:
        try:
            packed = socket.inet_pton(family, address)  # IPv4: strict dotted quad, no leading zeros
        except OSError:
            pass
        else:
            first = int.from_bytes(packed, "big")
            # inet_ntop writes what ipaddress writes, except the dotted forms of embedded IPv4 addresses.
            text = socket.inet_ntop(family, packed)
            if first & _HOST_BITS[version][prefixlen] == 0 and (version == 4 or "." not in text):
                return _new_network(Network, (version, first, prefixlen, f"{text}/{prefixlen}"))
    parsed = ipaddress.ip_network(cidr, strict)
    network = type(parsed)((int(parsed.network_address), parsed.prefixlen))  # printed from integers
    return Network(network.version, int(network.network_address), network.prefixlen, str(network))


def access_diff(before: dict, after: dict) -> list[dict]:
    """The change in effective access: each (backend, path, group) that gains or loses CIDRs."""
    changes = []
    keys = {(b, p, g) for side in (before, after) for b, paths in side.items() for p, gs in paths.items() for g in gs}
    for backend, path, group in sorted(keys):
        old = set(before.get(backend, {}).get(path, {}).get(group, []))
        new = set(after.get(backend, {}).get(path, {}).get(group, []))
        if old != new:
            changes.append(
                {
                    "backend": backend,
                    "path": path,
                    "group": group,
                    "gains": sorted(new - old, key=_parse),
                    "loses": sorted(old - new, key=_parse),
                }
            )
    return changes


def _is_url_path(path: str) -> bool:
    return bool(URL_PATH.fullmatch(path)) and "//" not in path and not {".", ".."} & set(path.split("/"))


class _Loader:
    def __init__(self) -> None:
        self.problems: list[Problem] = []
        self.warnings: list[Problem] = []
        self.settings = dict(DEFAULT_SETTINGS)
        self.trusted_proxies: list[tuple[Network, str, str]] = []  # (network, file, key)
        self.real_ip_header = "X-Forwarded-For"
        self.groups: dict[str, Group] = {}
        self.backends: dict[str, Backend] = {}
        self.rules: list[Rule] = []
        self.files: list[str] = []
        self.declared_backends = 0
        self.allow_empty = False

    def fail(self, file: str, key: str, value: object, why: str) -> None:
        self.problems.append(Problem(file, key, value, why))

    def keys_known(self, file: str, key: str, value: dict, kind: str) -> None:
        for unknown in sorted(set(value) - ALLOWED_KEYS[kind], key=str):
            why = f"unknown key; expected one of {sorted(ALLOWED_KEYS[kind])}"
            if isinstance(unknown, str) and NAME.fullmatch(unknown):
                self.fail(file, f"{key}.{unknown}" if key else unknown, value[unknown], why)
            else:  # the key itself is the odd value: it never becomes part of a key path
                self.fail(file, key or "(top level)", unknown, why)

    def mapping(self, file: str, key: str, value: object) -> dict:
        if not isinstance(value, dict):
            self.fail(file, key or "(top level)", value, "must be a mapping")
            return {}
        return value

    def string_list(self, file: str, key: str, value: object) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(file, key, value, "must be a list of strings")
            return []
        return value

    def name(self, file: str, key: str, name: object, seen: dict, kind: str) -> bool:
        if not isinstance(name, str) or not NAME.fullmatch(name):
            self.fail(
                file, key, name, f"{kind} names are lowercase letters, digits, '-' and '_', starting with a letter"
            )
            return False
        if name in seen:
            self.fail(file, key, name, f"duplicate {kind} name; also defined in {seen[name].file}")
            return False
        return True

    def document(self, file: str, data: object) -> None:
        self.files.append(file)
        data = self.mapping(file, "", data)
        self.keys_known(file, "", data, "")
        settings = self.mapping(file, "settings", data.get("settings", {}))
        self.keys_known(file, "settings", settings, "settings")
        self.allow_empty = self.flag(file, "settings", settings, "allow_empty") or self.allow_empty
        for key, value in settings.items():
            if key in DEFAULT_SETTINGS:
                limit = 32 if key.endswith("v4") else 128
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
                    self.fail(file, f"settings.{key}", value, f"must be a prefix length from 0 to {limit}")
                else:
                    self.settings[key] = value
        self.trusted(file, settings)
        for name, group in self.mapping(file, "groups", data.get("groups", {})).items():
            self.group(file, name, group)
        backends = self.mapping(file, "backends", data.get("backends", {}))
        self.declared_backends += len(backends)
        for name, backend in backends.items():
            self.backend(file, name, backend)
        rules = data.get("rules", [])
        if not isinstance(rules, list):
            self.fail(file, "rules", rules, "must be a list of rules")
            rules = []
        for index, rule in enumerate(rules):
            self.rule(file, f"rules[{index}]", rule)

    def trusted(self, file: str, settings: dict) -> None:
        """Trusted proxies may name any client address, so each is a single proxy or a small proxy subnet."""
        if "real_ip_header" in settings:
            header = settings["real_ip_header"]
            if not isinstance(header, str) or not HEADER.fullmatch(header):
                self.fail(file, "settings.real_ip_header", header, "must be an HTTP header name")
            else:
                self.real_ip_header = header
        key = "settings.trusted_proxies"
        for index, cidr in enumerate(self.string_list(file, key, settings.get("trusted_proxies", []))):
            network = self.network(file, f"{key}[{index}]", cidr)
            if network is not None:
                self.trusted_proxies.append((network, file, f"{key}[{index}]"))

    def trusted_narrow(self) -> None:
        """Checked once every file is read: the broad-prefix settings may come from any of them."""
        for network, file, key in self.trusted_proxies:
            limit = self.settings["broad_prefix_v4" if network.version == 4 else "broad_prefix_v6"]
            if network.prefixlen <= limit:
                self.fail(
                    file,
                    key,
                    network.text,
                    f"a trusted proxy range must be narrower than /{limit}: any host in it can claim any address",
                )

    def network(self, file: str, where: str, cidr: str, host_bits_hint: str | None = None) -> Network | None:
        """A parsed CIDR, or None after recording why it is refused. Host bits pass only with a host_bits_hint of ""
        (the group accepts them); otherwise the hint says how to accept them."""
        # One strict parse for the usual, clean entry; a second one only to tell host bits from garbage.
        try:
            network = _parse(cidr)
        except ValueError:
            try:
                network = _parse(cidr, strict=False)
            except ValueError:
                self.fail(file, where, cidr, "not an IPv4 or IPv6 address or CIDR")
                return None
            if host_bits_hint != "":
                self.fail(file, where, cidr, f"host bits set (the network is {network}){host_bits_hint or ''}")
                return None
        if network.version == 6 and network.prefixlen >= 96 and network.first >> 32 == IPV4_MAPPED_HIGH_BITS:
            self.fail(
                file, where, cidr, "IPv4-mapped range: nginx matches these clients as IPv4, so write the IPv4 network"
            )
            return None
        return network

    def entry(self, file: str, kind: str, name: object, spec: object, seen: dict) -> tuple[str, dict | None]:
        """Key path and spec of a named group or backend; None when its name is unusable."""
        key = f"{kind}s.{name}" if isinstance(name, str) and NAME.fullmatch(name) else f"{kind}s"
        if not self.name(file, key, name, seen, kind):
            return key, None
        spec = self.mapping(file, key, spec)
        self.keys_known(file, key, spec, kind)
        self.description(file, key, spec)
        return key, spec

    def description(self, file: str, key: str, spec: dict) -> None:
        """Free text for reviewers; it never reaches a config file, but it is bounded like everything else."""
        value = spec.get("description", "")
        if not isinstance(value, str) or len(value) > DESCRIPTION_LIMIT:
            self.fail(file, f"{key}.description", value, f"must be text of at most {DESCRIPTION_LIMIT} characters")

    def flag(self, file: str, key: str, spec: dict, name: str) -> bool:
        value = spec.get(name, False)
        if not isinstance(value, bool):
            self.fail(file, f"{key}.{name}", value, "must be true or false")
        return value is True

    def group(self, file: str, name: object, spec: object) -> None:
        key, spec = self.entry(file, "group", name, spec, self.groups)
        if spec is None:
            return
        hint = "" if self.flag(file, key, spec, "allow_host_bits") else HOST_BITS_HINT
        networks = []
        append, parse = networks.append, self.network  # once per CIDR: 100,000s of times
        for index, cidr in enumerate(self.string_list(file, f"{key}.cidrs", spec.get("cidrs", []))):
            where = f"{key}.cidrs[{index}]"
            network = parse(file, where, cidr, hint)
            if network is not None:
                append((network, where))
        includes = self.string_list(file, f"{key}.include", spec.get("include", []))
        if not spec.get("cidrs") and not spec.get("include"):  # one error only when what is there is refused
            self.fail(file, key, spec, "a group needs cidrs or include")
        self.groups[name] = Group(name, file, networks, includes)

    def backend(self, file: str, name: object, spec: object) -> None:
        key, spec = self.entry(file, "backend", name, spec, self.backends)
        if spec is None:
            return
        protocol = spec.get("protocol", "http")
        if protocol not in ("http", "stream"):
            self.fail(file, f"{key}.protocol", protocol, "must be http or stream")
        listen = spec.get("listen")
        if isinstance(listen, bool) or not isinstance(listen, int) or not 1 <= listen <= 65535:
            self.fail(file, f"{key}.listen", listen, "must be a port number from 1 to 65535")
        else:
            for other in self.backends.values():
                if other.listen == listen:
                    self.fail(
                        file, f"{key}.listen", listen, f"port already used by backend {other.name} ({other.file})"
                    )
        upstreams = self.string_list(file, f"{key}.upstreams", spec.get("upstreams"))
        if not upstreams:
            self.fail(
                file, f"{key}.upstreams", spec.get("upstreams"), "a backend needs at least one upstream host:port"
            )
        parsed = []
        for index, upstream in enumerate(upstreams):
            server = host_port(upstream)
            if server is None:
                self.fail(
                    file,
                    f"{key}.upstreams[{index}]",
                    upstream,
                    "must be host:port, the host an IPv4 address, [IPv6 address] or DNS name, the port 1 to 65535",
                )
            else:
                parsed.append(server)
        self.backends[name] = Backend(name, file, protocol, listen, parsed)

    def rule(self, file: str, key: str, spec: object) -> None:
        spec = self.mapping(file, key, spec)
        self.keys_known(file, key, spec, "rule")
        allow_broad = self.flag(file, key, spec, "allow_broad")
        groups = self.string_list(file, f"{key}.groups", spec.get("groups"))
        if not groups:
            self.fail(file, f"{key}.groups", spec.get("groups"), "a rule needs at least one group")
        paths = self.string_list(file, f"{key}.paths", spec.get("paths", []))
        for index, path in enumerate(paths):
            if not _is_url_path(path):
                self.fail(
                    file,
                    f"{key}.paths[{index}]",
                    path,
                    "must be a decoded URL path starting with '/', of letters, digits and . _ ~ + = , : @ / - (no '%' "
                    "escapes, '//', '.' or '..' segments)",
                )
        backend = spec.get("backend")
        if not isinstance(backend, str) or not NAME.fullmatch(backend):
            self.fail(file, f"{key}.backend", backend, "must name a backend")
            backend = ""
        self.rules.append(Rule(key, file, backend, groups, paths, allow_broad))

    def cross_checks(self) -> None:
        if not self.declared_backends and not self.allow_empty:
            self.fail(
                ", ".join(self.files) or "(no files)",
                "backends",
                {},
                "no backend in any file: deployed, this removes every backend from the proxy; set "
                "settings.allow_empty: true if that is meant",
            )
        self.trusted_narrow()
        for group in self.groups.values():
            for index, include in enumerate(group.includes):
                if include not in self.groups:
                    self.fail(group.file, f"groups.{group.name}.include[{index}]", include, "unknown group")
        self.find_cycles()
        for rule in self.rules:
            backend = self.backends.get(rule.backend)
            if rule.backend and backend is None:
                self.fail(rule.file, f"{rule.key}.backend", rule.backend, "unknown backend")
            if backend and rule.paths and backend.protocol != "http":
                self.fail(
                    rule.file, f"{rule.key}.paths", rule.paths, f"backend {backend.name} is stream: paths are http only"
                )
            for index, group in enumerate(rule.groups):
                if group not in self.groups:
                    self.fail(rule.file, f"{rule.key}.groups[{index}]", group, "unknown group")
        ruled = {rule.backend for rule in self.rules}
        for backend in self.backends.values():
            if backend.name not in ruled:
                self.fail(
                    backend.file,
                    f"backends.{backend.name}",
                    backend.name,
                    "no rule lets anyone reach this backend; add a rule or remove the backend",
                )

    def find_cycles(self) -> None:
        state: dict[str, str] = {}

        def visit(name: str, path: list[str]) -> None:
            state[name] = "open"
            for include in self.groups[name].includes:
                if include not in self.groups:
                    continue
                if state.get(include) == "open":
                    cycle = [*path[path.index(include) :], include] if include in path else [name, include]
                    group = self.groups[name]
                    self.fail(group.file, f"groups.{name}.include", include, "cycle: " + " -> ".join(cycle))
                elif include not in state:
                    visit(include, [*path, include])
            state[name] = "done"

        for name in self.groups:
            if name not in state:
                visit(name, [name])

    def broad_and_redundant(self, whitelist: Whitelist) -> None:
        limit = {4: self.settings["broad_prefix_v4"], 6: self.settings["broad_prefix_v6"]}
        broad = {
            name: [(n, key) for n, key in group.networks if n.prefixlen < limit[n.version] or n.prefixlen == 0]
            for name, group in self.groups.items()
        }
        # Overlaps are checked per scope: within each group, and across the groups each rule combines.
        scopes: dict[str, list[tuple[object, Rule | None]]] = {name: [(name, None)] for name in self.groups}
        for rule in self.rules:
            sources = list(dict.fromkeys(source for group in rule.groups for source in whitelist._closure(group)))
            for source in [] if rule.allow_broad else sources:
                for network, key in broad[source]:
                    self.fail(
                        self.groups[source].file,
                        key,
                        network.text,
                        f"broader than /{limit[network.version]} and reaches backend {rule.backend} through "
                        f"{rule.key}; set allow_broad: true on that rule if this is meant",
                    )
            if len(sources) > 1:
                for source in sources:
                    scopes[source].append(((rule.file, rule.key), rule))
        # One stable sort of every entry (a covering network first, then file order) and one pass: an entry is
        # covered when it starts before the end of the last uncovered entry of the same scope. IPv4 entries sort
        # by a float (exact below 2**53; list.sort compares floats in C without calls), IPv6 ones as tuples.
        v4: list[tuple[Network, str, str]] = []
        v6: list[tuple[Network, str, str]] = []
        for group in self.groups.values():
            name = group.name
            for network, key in group.networks:
                (v4 if network[0] == 4 else v6).append((network, key, name))
        v4.sort(key=_v4_order)
        v6.sort(key=itemgetter(0))
        entries = v4 + v6
        whitelist.ordered = [entry[0] for entry in entries]
        # The loop runs once per CIDR: fields are unpacked once and the host bits come from a table, not a property.
        covers: dict[object, tuple[tuple[Network, str, str], int, int]] = {}
        no_cover = (None, 0, -1)
        for entry in entries:
            (version, first, prefixlen, _text), _key, group = entry
            for scope, rule in scopes[group]:
                cover, cover_version, cover_end = covers.get(scope, no_cover)
                if cover is None or version != cover_version or first > cover_end:
                    covers[scope] = (entry, version, first | _HOST_BITS[version][prefixlen])
                elif rule is None or group != cover[2]:
                    self.covered(entry, cover, rule)

    def covered(self, entry: tuple[Network, str, str], cover: tuple[Network, str, str], rule: Rule | None) -> None:
        """The warning for an entry covered by another: within one group (rule None), or across a rule's groups."""
        network, key, group = entry
        why = "duplicate of" if network == cover[0] else "already covered by"
        where = f" ({self.groups[cover[2]].file}: {cover[1]}) in {rule.key}" if rule else f" ({cover[1]})"
        self.warnings.append(Problem(self.groups[group].file, key, network.text, f"{why} {cover[0]}{where}"))


def _v4_order(entry: tuple[Network, str, str]) -> float:
    network = entry[0]
    return network[1] * 64.0 + network[2]  # first address, then prefix length (at most 32)


@without_cyclic_gc()
def load(documents: list[tuple[str, object]]) -> Whitelist:
    """Validate and resolve parsed YAML documents, given as (file name, data). Raises WhitelistError."""
    loader = _Loader()
    for file, data in documents:
        loader.document(file, data)
    loader.cross_checks()
    if loader.problems:
        raise WhitelistError(loader.problems)
    whitelist = Whitelist(
        loader.groups,
        loader.backends,
        loader.rules,
        trusted_proxies=[network for network, _file, _key in loader.trusted_proxies],
        real_ip_header=loader.real_ip_header,
    )
    loader.broad_and_redundant(whitelist)
    if loader.problems:
        raise WhitelistError(loader.problems)
    whitelist.warnings = loader.warnings
    return whitelist


# Stream connections that no group allows go here. The '.' keeps it apart from every backend's upstream
# (backend names have none).
DENY_UPSTREAM = "infra_obs.deny"


def _variable(backend: str, index: int) -> str:
    """The geo variable of a backend's index-th path. nginx variables take no '-', so names are escaped
    injectively ('_' -> '__', '-' -> '_h'): `a-b` and `a_b` get variables of their own."""
    return f"$infra_obs_wl_{backend.replace('_', '__').replace('-', '_h')}_{index}"


def _geo(variable: str, source: str, networks: list[Network], allowed: str, denied: str) -> list[str]:
    lines = [f"geo {source} {variable} {{", f"    default {denied};"]
    lines += [f"    {network.text} {allowed};" for network in networks]
    return [*lines, "}"]


def _collapsed(networks: set[Network], ordered: list[Network]) -> list[Network]:
    """The networks a geo map needs: each one not covered by another (the same decision either way), in order.
    Not ipaddress.collapse_addresses, which also merges siblings but takes seconds on 100,000 entries. A set that
    holds a good part of the whitelist is put in order by walking the whitelist's sorted networks (a membership test
    each) rather than by sorting it again (half a second for 200,000)."""
    kept: list[Network] = []
    cover_end = -1
    version = 0
    walk = ordered and len(networks) * 8 >= len(ordered)
    in_order = [n for n in ordered if n in networks] if walk else sorted(networks)
    for network in in_order:
        if network.version == version and network.first <= cover_end:
            continue
        kept.append(network)
        version, cover_end = network.version, network.last
    return kept


def _upstream(backend: Backend) -> list[str]:
    return [f"upstream infra_obs_{backend.name} {{", *(f"    server {u};" for u in backend.upstreams), "}"]


# The default of the module option, so the compiler and the module agree.
ACCESS_LOG = NGINX_WHITELIST["access_log"]["default"]
# One line per request or connection: backend, decision (1 allowed, 0 denied), status. The role's mtail program
# turns it into infra_obs_whitelist_requests_total{backend, decision}.
LOG_FORMAT = "log_format infra_obs_whitelist '$infra_obs_backend $infra_obs_allowed $status';"


# What the operator (not the whitelist's author) sets in the task.
OPERATOR_ARGUMENTS = {
    "address_variable": re.compile(r"\$[a-z][a-z0-9_]{0,63}"),
    "access_log": re.compile(r"/[A-Za-z0-9._/-]{1,255}"),
}


@without_cyclic_gc()
def compile_nginx(
    whitelist: Whitelist, address_variable: str = "$remote_addr", access_log: str = ACCESS_LOG
) -> dict[str, str]:
    """nginx config for the http and stream contexts (file name -> text), default deny.

    Lookups are geo maps (a radix tree: most specific network wins, fast for very large lists). Denied http
    requests get 403 in the rewrite phase, before any content handler; denied stream connections go to an upstream
    whose only server is down, so nginx closes them at once. Every decision is logged to access_log.
    """
    if not OPERATOR_ARGUMENTS["address_variable"].fullmatch(address_variable):
        raise ValueError(f"address_variable: {address_variable!r} is not an nginx variable like $remote_addr")
    if not OPERATOR_ARGUMENTS["access_log"].fullmatch(access_log):
        raise ValueError(f"access_log: {access_log!r} is not an absolute path of letters, digits and . _ - /")
    reach = whitelist._reach()
    header = ["# Generated by infra.obs nginx_whitelist: do not edit; change the whitelist data instead.", LOG_FORMAT]
    http, stream = list(header), list(header)
    for backend in sorted(whitelist.backends.values(), key=lambda b: b.name):
        paths = sorted(reach[backend.name])
        server = [
            "server {",
            f"    listen {backend.listen};",
            f"    listen [::]:{backend.listen};",
            f"    set $infra_obs_backend {backend.name};",
            f"    access_log {access_log} infra_obs_whitelist;",
        ]
        if backend.protocol == "http":
            http += _upstream(backend)
            if whitelist.trusted_proxies:
                server += [f"    set_real_ip_from {network};" for network in whitelist.trusted_proxies]
                server += [f"    real_ip_header {whitelist.real_ip_header};", "    real_ip_recursive on;"]
            locations = []
            for index, path in enumerate(paths):
                variable = _variable(backend.name, index)
                networks = set().union(*reach[backend.name][path].values())
                http += _geo(variable, address_variable, _collapsed(networks, whitelist.ordered), "1", "0")
                locations += [
                    f"    location {path} {{",
                    f"        set $infra_obs_allowed {variable};",
                    "        if ($infra_obs_allowed = 0) { return 403; }",
                    f"        proxy_pass http://infra_obs_{backend.name};",
                    "    }",
                ]
            if ALL_PATHS not in paths:
                locations += [
                    f"    location {ALL_PATHS} {{",
                    "        set $infra_obs_allowed 0;",
                    "        return 403;",
                    "    }",
                ]
            http += [*server, *locations, "}"]
        else:
            variable = _variable(backend.name, 0)
            stream += _upstream(backend)
            stream += _geo(
                variable,
                address_variable,
                _collapsed(set().union(*reach[backend.name][ALL_PATHS].values()), whitelist.ordered),
                f"infra_obs_{backend.name}",
                DENY_UPSTREAM,
            )
            allowed = f"{variable}_allowed"
            stream += [f"map {variable} {allowed} {{", f"    {DENY_UPSTREAM} 0;", "    default 1;", "}"]
            stream += [*server, f"    set $infra_obs_allowed {allowed};", f"    proxy_pass {variable};", "}"]
    if any(b.protocol == "stream" for b in whitelist.backends.values()):
        stream += [f"upstream {DENY_UPSTREAM} {{", "    server 127.0.0.1:9 down;", "}"]
    # A context without backends gets no log_format: nginx refuses a format whose variables nothing sets.
    return {
        name: "\n".join(_as_written(lines if len(lines) > len(header) else header[:1])) + "\n"
        for name, lines in (("http.conf", http), ("stream.conf", stream))
    }


# Every line compile_nginx writes, as a grammar: the last guard between the data and nginx.
_NAME = NAME.pattern
_CIDR = r"[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}|[0-9a-f:]{2,39}/[0-9]{1,3}"
_SERVER = r"([0-9.]{7,15}|\[[0-9a-f:]{2,39}\]|[a-z0-9.-]{1,253}):[0-9]{1,5}"
_VARIABLE = r"\$infra_obs_wl_[a-z0-9_]{1,126}_[0-9]+"
_ADDRESS = OPERATOR_ARGUMENTS["address_variable"].pattern
_GEO_ENTRY_SHAPE = rf"    ({_CIDR}) (1|infra_obs_{_NAME});"
_LINE = re.compile(
    "|".join(
        f"(?:{shape})"
        for shape in (
            r"# Generated by infra\.obs nginx_whitelist: do not edit; change the whitelist data instead\.",
            re.escape(LOG_FORMAT),
            rf"upstream infra_obs_{_NAME} \{{",
            rf"upstream {re.escape(DENY_UPSTREAM)} \{{",
            rf"    server {_SERVER};",
            r"    server 127\.0\.0\.1:9 down;",
            rf"geo {_ADDRESS} {_VARIABLE} \{{",
            rf"    default (0|{re.escape(DENY_UPSTREAM)});",
            _GEO_ENTRY_SHAPE,
            r"server \{",
            r"    listen (\[::\]:)?[0-9]{1,5};",
            rf"    set \$infra_obs_backend {_NAME};",
            rf"    access_log ({OPERATOR_ARGUMENTS['access_log'].pattern}) infra_obs_whitelist;",
            rf"    set_real_ip_from ({_CIDR});",
            rf"    real_ip_header {HEADER.pattern};",
            r"    real_ip_recursive on;",
            rf"    location {URL_PATH.pattern} \{{",
            rf"        set \$infra_obs_allowed ({_VARIABLE}|0);",
            r"        if \(\$infra_obs_allowed = 0\) \{ return 403; \}",
            rf"        proxy_pass http://infra_obs_{_NAME};",
            r"        return 403;",
            rf"map {_VARIABLE} {_VARIABLE}_allowed \{{",
            rf"    {re.escape(DENY_UPSTREAM)} 0;",
            r"    default 1;",
            rf"    set \$infra_obs_allowed {_VARIABLE}_allowed;",
            rf"    proxy_pass {_VARIABLE};",
            r"    \}",
            r"\}",
        )
    )
)


# Most lines are geo entries: matched first on their own, rather than after the other shapes of _LINE.
_GEO_ENTRY = re.compile(_GEO_ENTRY_SHAPE)


def _as_written(lines: list[str]) -> list[str]:
    """lines, once each is known to be one the compiler means to write: a value that got past validation with
    nginx syntax in it stops here (an internal error) instead of reaching the proxy."""
    geo_entry, any_line = _GEO_ENTRY.fullmatch, _LINE.fullmatch
    for number, line in enumerate(lines, 1):
        if not (geo_entry(line) or any_line(line)):
            raise AssertionError(f"compile_nginx: line {number} is not one it writes: {line[:200]!r}")
    return lines
