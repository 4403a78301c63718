"""Consul: peers from the catalog (the mesh) and this exporter's own registration, on one background thread."""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
import urllib.parse
from dataclasses import dataclass

import consul

from .config import HOST_NAME, NAME, Config, Register, Source, host_port, parse_address
from .engine import Prober
from .series import Target
from .status import Status

log = logging.getLogger("infra_obs_probe")
CONSUL_TIMEOUT = 5.0


@dataclass(frozen=True)
class Peer:
    host: str
    region: str
    az: str
    address: str  # IPv4, may be empty
    address6: str  # IPv6, may be empty
    port: int
    service_id: str

    def url(self, path: str) -> str:
        host = self.address or f"[{self.address6}]"
        return f"http://{host}:{self.port}{path}"


def client(url: str) -> consul.Consul:
    parts = urllib.parse.urlsplit(url)
    return consul.Consul(
        host=parts.hostname,
        port=parts.port or (443 if parts.scheme == "https" else 80),
        scheme=parts.scheme,
        token=os.environ.get("CONSUL_HTTP_TOKEN") or None,
        connections_timeout=CONSUL_TIMEOUT,
    )


def _ip(value: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return parse_address(value) if value else None
    except ValueError:
        return None


def catalog_nodes(cfg: Config, last: dict[str, list[dict]]) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """The probe service's catalog entries per datacenter asked for (all the agent knows by default), and the error
    of each datacenter that could not be read, whose entries of the last read (`last`) stand in for it: a region
    out of reach keeps its peers probed, and the other regions' are still refreshed. A failing read of the list of
    datacenters raises."""
    consul_client = client(cfg.consul.url)
    datacenters = cfg.consul.datacenters or consul_client.catalog.datacenters()
    nodes: dict[str, list[dict]] = {}
    errors: dict[str, str] = {}
    for datacenter in datacenters:
        if not (isinstance(datacenter, str) and NAME.fullmatch(datacenter)):
            log.warning("Consul datacenter %.100r has a name we do not use; skipped", datacenter)
            continue
        try:
            _index, nodes[datacenter] = consul_client.catalog.service(cfg.consul.service, dc=datacenter)
        except Exception as e:
            errors[datacenter] = str(e)
            nodes[datacenter] = last.get(datacenter, [])
    return nodes, errors


def peers_from_catalog(nodes: list[dict], cfg: Config) -> list[Peer]:
    """Every other instance of the probe service, filtered by region/AZ, with its IPv4 and IPv6 addresses."""
    peers: dict[str, Peer] = {}
    for node in nodes:
        meta = node.get("ServiceMeta") or {}
        host = meta.get("host") or node.get("Node") or ""
        service_id = node.get("ServiceID") or ""
        if service_id == cfg.register.id or host == cfg.source.name:
            continue
        region, az = meta.get("region", ""), meta.get("az", "")
        names_ok = all(isinstance(v, str) for v in (host, region, az))
        if not (names_ok and HOST_NAME.fullmatch(host) and all(NAME.fullmatch(v) for v in (region, az) if v)):
            log.warning(
                "Consul peer %.100r (%.100r) has a host, region or AZ name we do not use; skipped", host, service_id
            )
            continue
        if (cfg.consul.regions and region not in cfg.consul.regions) or (cfg.consul.azs and az not in cfg.consul.azs):
            continue
        v4 = v6 = ""
        main = _ip(node.get("ServiceAddress")) or _ip(node.get("Address"))
        if main is not None:
            v4, v6 = (main.compressed, "") if main.version == 4 else ("", main.compressed)
        tagged = node.get("ServiceTaggedAddresses") or {}
        lan6 = _ip((tagged.get("lan_ipv6") or {}).get("Address"))
        if lan6 is not None and lan6.version == 6:
            v6 = lan6.compressed
        lan4 = _ip((tagged.get("lan_ipv4") or {}).get("Address"))
        if not v4 and lan4 is not None and lan4.version == 4:
            v4 = lan4.compressed
        if not (v4 or v6):
            log.warning("Consul peer %s (%s) has no usable address; skipped", host, service_id)
            continue
        peers.setdefault(host, Peer(host, region, az, v4, v6, int(node.get("ServicePort") or 0), service_id))
    return sorted(peers.values(), key=lambda p: (p.region, p.az, p.host))


def peer_targets(peers: list[Peer], cfg: Config) -> list[Target]:
    ports = (cfg.tcp.port,)
    out = []
    for p in peers:
        for family, address in ((4, p.address), (6, p.address6)):
            if address:
                out.append(Target(p.host, address, family, p.region, p.az, "consul", ports))
    return out


def registration(r: Register, source: Source, listen_host: str, listen_port: int) -> dict:
    """The agent service definition a daemon of this package registers (keyword arguments of py-consul's
    register): its health check is its /-/healthy."""
    port = r.port
    if r.check_url:
        check_url = r.check_url
    else:
        host = listen_host
        if host in ("0.0.0.0", "::"):
            host = r.address or r.address6 or "127.0.0.1"
        check_url = f"http://{host_port(host, listen_port)}/-/healthy"
    tagged = {}
    if r.address:
        tagged["lan_ipv4"] = {"address": r.address, "port": port}
    if r.address6:
        tagged["lan_ipv6"] = {"address": r.address6, "port": port}
    return {
        "name": r.service,
        "service_id": r.id,
        "address": r.address or r.address6 or None,
        "port": port,
        "tags": list(r.tags),
        "meta": {"region": source.region, "az": source.az, "host": source.name, **({"team": r.team} if r.team else {})},
        "tagged_addresses": tagged or None,
        "check": consul.Check.http(check_url, r.check_interval, timeout="5s"),
    }


class Registrar:
    """Keeps one service registered with a Consul agent (again when the agent has lost it), and removes it."""

    def __init__(self) -> None:
        self._registered: tuple[str, str, dict] | None = None  # (url, id, definition) as last registered

    def keep(self, url: str, definition: dict) -> bool:
        wanted = (url, definition["service_id"], definition)
        if self._registered is not None and self._registered[:2] != wanted[:2]:
            self.remove()
        c = client(url)
        try:
            present = self._registered == wanted and wanted[1] in c.agent.services()
            if not present:
                c.agent.service.register(**definition)
                log.info("registered %s in Consul at %s", wanted[1], url)
            self._registered = wanted
            return True
        except Exception as e:
            log.warning("Consul registration of %s at %s failed: %s", wanted[1], url, e)
            return False

    def remove(self) -> None:
        if self._registered is None:
            return
        url, service_id, _ = self._registered
        try:
            client(url).agent.service.deregister(service_id)
            log.info("deregistered %s from Consul at %s", service_id, url)
        except Exception as e:
            log.warning("Consul deregistration of %s at %s failed: %s", service_id, url, e)
        self._registered = None


class Discovery:
    """Refreshes peers every `targets.consul.refresh` seconds and keeps the registration in place."""

    def __init__(self, prober: Prober, status: Status, config: Config):
        self.prober = prober
        self.status = status
        self.config = config
        self.peers: list[Peer] = []
        self._nodes: dict[str, list[dict]] = {}  # the catalog's entries per datacenter, as last read
        self._registrar = Registrar()
        self._had_consul_targets = False
        self._targets: list[Target] = []
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="consul", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def configure(self, config: Config) -> None:
        self.config = config
        self._wake.set()

    def stop(self) -> None:
        """Stop refreshing and deregister (clean shutdown)."""
        self._stopping = True
        self._wake.set()
        self._thread.join(CONSUL_TIMEOUT * 2 + 1)
        self._deregister()

    def _run(self) -> None:
        while not self._stopping:
            cfg = self.config
            self._wake.clear()
            try:
                self.refresh(cfg)
                self._keep_registered(cfg)
            except Exception:
                log.exception("Consul thread error")
            self._wake.wait(cfg.consul.refresh)

    def refresh(self, cfg: Config) -> None:
        if not cfg.consul.enabled:
            if self._had_consul_targets:
                self.peers = []
                self._nodes = {}
                self.status.datacenters_read = {}
                self._targets = []
                self.prober.update(source="consul", targets=[])
                self._had_consul_targets = False
            return
        try:
            self._nodes, errors = catalog_nodes(cfg, self._nodes)
        except Exception as e:
            self._failed(f"Consul discovery failed ({cfg.consul.url}), keeping the last {len(self.peers)} peers: {e}")
            return
        self.status.datacenters_read = {dc: int(dc not in errors) for dc in self._nodes}
        peers = peers_from_catalog([n for found in self._nodes.values() for n in found], cfg)
        if peers != self.peers or not self._had_consul_targets:
            log.info("Consul: %d peers (%s)", len(peers), ", ".join(p.host for p in peers) or "none")
        self.peers = peers
        targets = peer_targets(peers, cfg)
        if targets != self._targets or not self._had_consul_targets:
            self.prober.update(source="consul", targets=targets)
            self._targets = targets
        self._had_consul_targets = True
        if errors:
            failed = "; ".join(f"{dc}: {error}" for dc, error in sorted(errors.items()))
            self._failed(
                f"Consul discovery ({cfg.consul.url}) kept the last peers of datacenters it could not read: {failed}"
            )
            return
        self.status.discovery_success = 1
        self.status.discovery_last_success = time.time()
        self.status.discovery_error = ""

    def _failed(self, error: str) -> None:
        self.status.discovery_success = 0
        self.status.discovery_failures += 1
        self.status.discovery_error = error
        log.warning("%s", error)

    def _keep_registered(self, cfg: Config) -> None:
        if not cfg.register.enabled:
            self._deregister()
            return
        definition = registration(cfg.register, cfg.source, cfg.listen_host, cfg.listen_port)
        self.status.registered = int(self._registrar.keep(cfg.register.url, definition))

    def _deregister(self) -> None:
        self._registrar.remove()
        self.status.registered = 0
