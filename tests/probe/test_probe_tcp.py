"""TCP connect probes: ok, refused, timeout and unreachable from real sockets, a fresh source port every time."""

import socket
import threading

from infra_obs_probe.series import Target

from .probe_lab import base_config, free_port, wait_for


def test_outcomes_ok_refused_timeout_unreachable(netns, exporter):
    ns = netns()
    ns.run("iptables", "-A", "INPUT", "-d", "127.0.0.5", "-p", "tcp", "--syn", "-j", "DROP")
    ns.run(
        "iptables",
        *("-A", "OUTPUT", "-d", "127.0.0.6", "-p", "tcp"),
        *("-j", "REJECT", "--reject-with", "icmp-host-unreachable"),
    )
    port = free_port()
    config = base_config(port, interval=0.2, timeout=0.3, icmp={"enabled": False})
    config["targets"]["static"] = [
        {"name": "self", "address": "127.0.0.1", "tcp_ports": [port, port + 1]},  # our own HTTP port, a closed one
        {"name": "dropped", "address": "127.0.0.5", "tcp_ports": [port]},
        {"name": "rejected", "address": "127.0.0.6", "tcp_ports": [port]},
    ]
    e = exporter(config, ns)

    def outcomes(target: str) -> dict:
        return {
            o: e.sample("infra_obs_probe_tcp_outcomes_total", target=target, outcome=o)
            for o in ("ok", "refused", "timeout", "unreachable", "error")
        }

    cases = {
        f"127.0.0.1:{port}": "ok",
        f"127.0.0.1:{port + 1}": "refused",
        f"127.0.0.5:{port}": "timeout",
        f"127.0.0.6:{port}": "unreachable",
    }
    wait_for(lambda: all(outcomes(t)[o] >= 5 for t, o in cases.items()), 10, 0.3, "5 probes of each outcome")
    for target, expected in cases.items():
        seen = outcomes(target)
        assert seen[expected] >= 5, (target, seen)
        assert sum(seen.values()) == seen[expected], (target, seen)
    # Both from one scrape: the loop keeps probing between two.
    scrape = e.metrics()
    ok = e.sample("infra_obs_probe_tcp_outcomes_total", scrape, target=f"127.0.0.1:{port}", outcome="ok")
    assert ok == e.sample("infra_obs_probe_received_total", scrape, target=f"127.0.0.1:{port}")
    assert e.sample("infra_obs_probe_tcp_connect_window_seconds", scrape, target=f"127.0.0.1:{port}", quantile="0.5")
    tcp = {t["port"]: t for t in e.path("127.0.0.1")["tcp"]}[port]
    # A connect that succeeded took more than nothing and less than the timeout (how fast is bench/probe's business).
    assert 0 < tcp["connect_median_seconds"] < 0.3 and tcp["failure_ratio"] == 0.0
    dropped = e.path("127.0.0.5")["tcp"][0]
    assert dropped["failure_ratio"] == 1.0 and dropped["connect_median_seconds"] is None
    # a probe that takes longer than the interval is still in flight when the next one is due
    assert e.sample("infra_obs_probe_skipped_total", probe="tcp", reason="in_flight") >= 3


def test_every_connection_comes_from_a_fresh_source_port(prober):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    peers = []

    def accept():
        listener.settimeout(0.2)
        while not done.is_set():
            try:
                conn, peer = listener.accept()
            except TimeoutError:
                continue
            peers.append(peer[1])
            conn.close()

    done = threading.Event()
    thread = threading.Thread(target=accept)
    thread.start()
    try:
        p = prober(
            [Target("l", "127.0.0.1", 4, tcp_ports=(port,))],
            interval=0.05,
            timeout=0.5,
            icmp={"enabled": False},
            mtr={"enabled": False},
        )
        wait_for(lambda: len(peers) >= 20, 5, what="20 connections")
        assert len(set(peers)) == len(peers), peers
        s = p.snapshot.tcp[0]
        assert s.outcomes[0] >= 20 and sum(s.outcomes) == s.outcomes[0], s.outcomes  # every connect ok
    finally:
        done.set()
        thread.join()
        listener.close()
