"""Consul 1.8: peers from the catalog with their region/AZ and both address families, filters, keeping the
last peers when Consul is gone, and the exporter's own registration and deregistration."""

import signal
import time

from infra_obs_probe import exposition
from infra_obs_probe.config import parse
from infra_obs_probe.discovery import Discovery
from infra_obs_probe.status import Status

from .probe_lab import ConsulAgent, base_config, free_port, http_get, wait_for

PEERS = [  # (id, address, meta, lan_ipv6)
    ("infra-obs-probe-b", "127.0.0.12", {"region": "r1", "az": "r1b", "host": "node-b"}, ""),
    ("infra-obs-probe-c", "127.0.0.13", {"region": "r1", "az": "r1c", "host": "node-c"}, "::1"),
    ("infra-obs-probe-d", "127.0.0.14", {"region": "r2", "az": "r2a", "host": "node-d"}, ""),
    # this exporter's own registration: never a peer
    ("infra-obs-probe-node-a", "127.0.0.11", {"region": "r1", "az": "r1a", "host": "node-a"}, ""),
]


def config(agent: ConsulAgent, **consul) -> object:
    return parse(
        {
            "source": {"name": "node-a", "region": "r1", "az": "r1a"},
            "tcp": {"port": 9999},
            "mtr": {"enabled": False},
            "interval": 0.5,
            "targets": {"consul": {"enabled": True, "url": agent.url, "refresh": 0.5, **consul}},
        },
        "test.yml",
    )


def register_peers(agent: ConsulAgent, service: str) -> None:
    for service_id, address, meta, address6 in PEERS:
        agent.register(service_id, address, 9999, meta, address6=address6, name=service)


def paths(prober) -> set[tuple]:
    series = prober.snapshot.icmp + prober.snapshot.tcp
    return {(s.kind, s.target.name, s.target.address, s.target.region, s.target.az, s.port) for s in series}


def test_peers_with_region_az_and_both_families(consul_agent, prober):
    register_peers(consul_agent, "probe-mesh-1")
    cfg = config(consul_agent, service="probe-mesh-1")
    p = prober([], interval=0.5)
    status = Status()
    discovery = Discovery(p, status, cfg)
    discovery.refresh(cfg)
    assert [x.host for x in discovery.peers] == ["node-b", "node-c", "node-d"]
    assert discovery.peers[1].address6 == "::1" and discovery.peers[1].port == 9999
    wait_for(lambda: len(p.snapshot.icmp) == 4, 3, what="4 ICMP paths")
    assert paths(p) == {
        ("icmp", "node-b", "127.0.0.12", "r1", "r1b", 0),
        ("tcp", "node-b", "127.0.0.12", "r1", "r1b", 9999),
        ("icmp", "node-c", "127.0.0.13", "r1", "r1c", 0),
        ("tcp", "node-c", "127.0.0.13", "r1", "r1c", 9999),
        ("icmp", "node-c", "::1", "r1", "r1c", 0),
        ("tcp", "node-c", "::1", "r1", "r1c", 9999),
        ("icmp", "node-d", "127.0.0.14", "r2", "r2a", 0),
        ("tcp", "node-d", "127.0.0.14", "r2", "r2a", 9999),
    }
    assert dict(p.snapshot.targets) == {"static": 0, "consul": 4}
    assert status.discovery_success == 1 and status.discovery_last_success > time.time() - 5
    text = exposition.render(p, status).decode()
    assert 'infra_obs_probe_targets{source="consul"} 4.0\n' in text
    assert 'dst_region="r1",dst_az="r1c",dst_host="node-c",target="::1",probe="icmp"' in text


def test_region_and_az_filters(consul_agent, prober):
    register_peers(consul_agent, "probe-mesh-2")
    p = prober([])
    for filters, hosts in (
        ({"regions": ["r1"]}, ["node-b", "node-c"]),
        ({"azs": ["r1c", "r2a"]}, ["node-c", "node-d"]),
        ({"regions": ["r1"], "azs": ["r2a"]}, []),
    ):
        cfg = config(consul_agent, service="probe-mesh-2", **filters)
        discovery = Discovery(p, Status(), cfg)
        discovery.refresh(cfg)
        assert [x.host for x in discovery.peers] == hosts, filters


def test_peers_from_every_datacenter_the_agent_knows_and_one_out_of_reach_keeps_its_own(prober):
    # One datacenter per region, WAN-joined: the agent of r1 finds r2's peers through its catalog. Agents of its own,
    # not the session's: a session agent left WAN-joined to a stopped r2 fails every later catalog read of r2.
    home, other = ConsulAgent(), ConsulAgent(datacenter="r2")
    try:
        other.join_wan(home)
        wait_for(lambda: len(home.api("GET", "/v1/catalog/datacenters")) == 2, 30, what="the WAN join")
        for service_id, address, meta, address6 in PEERS:
            agent = other if meta["region"] == "r2" else home
            agent.register(service_id, address, 9999, meta, address6=address6, name="probe-mesh-dc")
        p = prober([])
        everywhere = [("node-b", "r1"), ("node-c", "r1"), ("node-d", "r2")]
        for datacenters, peers in (([], everywhere), (["dc1"], everywhere[:2]), (["r2"], everywhere[2:])):
            cfg = config(home, service="probe-mesh-dc", datacenters=datacenters)
            discovery = Discovery(p, Status(), cfg)
            discovery.refresh(cfg)
            assert [(x.host, x.region) for x in discovery.peers] == peers, datacenters

        # r2 goes out of reach: its last peers stay, and a peer new in dc1 is still found.
        cfg = config(home, service="probe-mesh-dc")
        status = Status()
        discovery = Discovery(p, status, cfg)
        discovery.refresh(cfg)
        assert status.datacenters_read == {"dc1": 1, "r2": 1} and status.discovery_success == 1
        other.stop()
        home.register(
            "infra-obs-probe-e",
            "127.0.0.15",
            9999,
            {"region": "r1", "az": "r1d", "host": "node-e"},
            name="probe-mesh-dc",
        )
        discovery.refresh(cfg)
        assert [(x.host, x.region) for x in discovery.peers] == [*everywhere[:2], ("node-e", "r1"), everywhere[2]]
        assert status.datacenters_read == {"dc1": 1, "r2": 0}
        assert status.discovery_success == 0 and status.discovery_failures == 1 and "r2: " in status.discovery_error
        text = exposition.render(p, status).decode()
        assert 'infra_obs_probe_consul_datacenter_read{datacenter="r2"} 0.0\n' in text
        assert 'infra_obs_probe_consul_datacenter_read{datacenter="dc1"} 1.0\n' in text
        assert "infra_obs_probe_consul_discovery_success 0.0\n" in text
    finally:
        other.stop()
        home.stop()


def test_last_peers_stay_when_consul_is_gone(prober):
    agent = ConsulAgent()
    try:
        register_peers(agent, "infra-obs-probe")
        cfg = config(agent)
        p = prober([], interval=0.2, mtr={"enabled": False})
        status = Status()
        discovery = Discovery(p, status, cfg)
        discovery.refresh(cfg)
        wait_for(lambda: len(p.snapshot.icmp) == 4, 3, what="4 ICMP paths")
    finally:
        agent.stop()
    discovery.refresh(cfg)
    discovery.refresh(cfg)
    assert [x.host for x in discovery.peers] == ["node-b", "node-c", "node-d"]
    assert status.discovery_success == 0 and status.discovery_failures == 2
    sent = {s.target.address: s.sent for s in p.snapshot.icmp}
    time.sleep(0.5)
    assert len(p.snapshot.icmp) == 4 and all(s.sent > sent[s.target.address] for s in p.snapshot.icmp)
    text = exposition.render(p, status).decode()
    assert "infra_obs_probe_consul_discovery_success 0.0\n" in text
    assert "infra_obs_probe_consul_discovery_failures_total 2.0\n" in text
    assert 'infra_obs_probe_targets{source="consul"} 4.0\n' in text


def test_registers_itself_and_deregisters_on_sigterm(consul_agent, exporter):
    port = free_port()
    cfg = base_config(port, host="127.0.0.21")
    cfg["source"] = {"name": "node-reg", "region": "r9", "az": "r9b"}
    cfg["register"] = {
        "enabled": True,
        "url": consul_agent.url,
        "service": "probe-reg",
        "address": "127.0.0.21",
        "address6": "::1",
        "tags": ["metrics", "probe", "lab"],
        "check_interval": "1s",
        "team": "network",
    }
    e = exporter(cfg)
    service = wait_for(lambda: consul_agent.services().get("probe-reg-node-reg"), 10, what="registration")
    assert service["Service"] == "probe-reg" and service["Port"] == port
    assert service["Address"] == "127.0.0.21"
    assert service["Tags"] == ["metrics", "probe", "lab"]
    # The team is the owner of the mesh's alerts: Prometheus makes the meta a label.
    assert service["Meta"] == {"region": "r9", "az": "r9b", "host": "node-reg", "team": "network"}
    tagged = service["TaggedAddresses"]
    assert tagged["lan_ipv4"]["Address"] == "127.0.0.21" and tagged["lan_ipv6"]["Address"] == "::1"

    def check_passing():
        checks = consul_agent.api("GET", "/v1/agent/checks")
        return [c for c in checks.values() if c["ServiceID"] == "probe-reg-node-reg" and c["Status"] == "passing"]

    check = wait_for(check_passing, 10, 0.3, "passing health check")[0]
    assert check["Type"] == "http"
    assert http_get(f"http://127.0.0.21:{port}/-/healthy") == b"Healthy\n"
    # Consul runs the check while the exporter still waits for the answer to its register call: the gauge follows.
    wait_for(lambda: e.sample("infra_obs_probe_consul_registered") == 1, 10, 0.1, "the registered gauge at 1")

    assert e.stop(signal.SIGTERM) == 0
    assert "probe-reg-node-reg" not in consul_agent.services()
    assert "deregistered probe-reg-node-reg" in e.log()
