"""Ground truth for latency and loss: in a namespace of our own, a userspace responder answers after a known
delay, and iptables drops a known share of echo requests."""

import statistics
import time

from .probe_lab import base_config, free_port, wait_for
from .tools.icmp_delay_responder import holds


def test_injected_30ms_delay_is_measured_within_1ms(netns, exporter, tmp_path):
    """The exporter's median per path is the responder's real median hold within 1 ms (on a busy machine the
    responder replies late now and then: the 30 ms it was asked for is only the least), and never under 30 ms."""
    ns = netns()
    ns.sysctl("net.ipv4.ping_group_range", "0 2147483647")
    held = tmp_path / "holds"
    responder = ns.responder("--delay=0.030", "--source=127.0.0.1", f"--holds={held}")
    try:
        config = base_config(free_port(), interval=0.05, timeout=0.5, tcp={"enabled": False})
        config["icmp"]["socket"] = "dgram"  # the unprivileged path, with kernel timestamps too
        config["targets"]["static"] = [
            {"name": f"d{i}", "address": f"127.0.0.{i}", "region": "r", "az": "delayed"} for i in range(2, 6)
        ] + [{"name": "v6", "address": "::1", "region": "r", "az": "direct"}]  # the kernel answers ICMPv6: no delay
        e = exporter(config, ns)
        wait_for(
            lambda: all(e.path(f"127.0.0.{i}")["icmp"]["sent"] >= 30 for i in range(2, 6)), 30, what="30 probes each"
        )
        for i in range(2, 6):
            icmp = e.path(f"127.0.0.{i}")["icmp"]
            real = statistics.median(holds(held.read_text(), "127.0.0.1", f"127.0.0.{i}"))
            assert icmp["sent"] >= 30 and icmp["received"] == icmp["sent"], icmp
            assert abs(icmp["rtt_median_seconds"] - real) < 0.001, (real, icmp)
            assert icmp["rtt_median_seconds"] >= 0.030  # a reply cannot beat the delay
        assert e.path("::1")["icmp"]["rtt_median_seconds"] < 0.001
        scrape = e.metrics()
        gauge = e.sample("infra_obs_probe_rtt_window_seconds", scrape, target="127.0.0.2", quantile="0.5")
        real = statistics.median(holds(held.read_text(), "127.0.0.1", "127.0.0.2"))
        assert gauge >= 0.030 and abs(gauge - real) < 0.001, (gauge, real)  # the exact median, as Prometheus reads it
        buckets = {
            float(s.labels["le"]): s.value
            for fam in scrape
            for s in fam.samples
            if s.name == "infra_obs_probe_az_rtt_seconds_bucket" and s.labels["dst_az"] == "delayed"
        }
        assert buckets[0.025] == 0 and buckets[float("inf")] >= 120  # the AZ's histogram: no reply beats the delay
    finally:
        responder.kill()
        responder.wait()


def test_injected_20_percent_loss_is_measured(netns, exporter):
    ns = netns()
    ns.run(
        "iptables",
        *("-A", "INPUT", "-p", "icmp", "--icmp-type", "echo-request"),
        *("-m", "statistic", "--mode", "random", "--probability", "0.2", "-j", "DROP"),
    )
    config = base_config(free_port(), interval=0.02, timeout=0.3, window=60, tcp={"enabled": False})
    config["targets"]["static"] = [{"name": f"l{i}", "address": f"127.0.0.{i}"} for i in range(2, 12)]
    e = exporter(config, ns)

    def totals():
        paths = e.json("/paths.json")["paths"]
        sent = sum(p["icmp"]["sent"] for p in paths)
        return (sent, sum(p["icmp"]["received"] for p in paths)) if sent >= 1500 else None

    sent, received = wait_for(totals, 15, 0.5, "1500 resolved probes")
    loss = 1 - received / sent
    assert 0.15 <= loss <= 0.25, (sent, received, loss)
    # the counters tell the same story as the raw samples (increase over 2 s: probes in flight cancel out)
    before = [e.sample(f"infra_obs_probe_{n}_total", probe="icmp") for n in ("sent", "received")]
    time.sleep(2)
    after = [e.sample(f"infra_obs_probe_{n}_total", probe="icmp") for n in ("sent", "received")]
    sent, received = after[0] - before[0], after[1] - before[1]
    assert sent >= 800 and 0.13 <= 1 - received / sent <= 0.27, (sent, received)
