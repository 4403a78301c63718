"""The HTTP side: /metrics passes promtool, /paths.json numbers come from raw samples, /matrix and /matrix.json
assemble every peer's view with health per cell."""

import gzip
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from html.parser import HTMLParser

from infra_obs_probe import exposition
from infra_obs_probe.app import App
from infra_obs_probe.config import parse

from .probe_lab import PROMTOOL, base_config, free_port, wait_for

FAMILIES = [
    "infra_obs_probe_sent_total",
    "infra_obs_probe_received_total",
    "infra_obs_probe_rtt_window_seconds",
    "infra_obs_probe_tcp_connect_window_seconds",
    "infra_obs_probe_az_rtt_seconds_bucket",
    "infra_obs_probe_window_seconds",
    "infra_obs_probe_tcp_outcomes_total",
    "infra_obs_probe_mtr_hop_loss_ratio",
    "infra_obs_probe_mtr_hop_rtt_seconds",
    "infra_obs_probe_mtr_path_changes_total",
    "infra_obs_probe_scheduler_lag_seconds_bucket",
    "infra_obs_probe_skipped_total",
    "infra_obs_probe_targets",
    "infra_obs_probe_consul_discovery_last_success_timestamp_seconds",
    "infra_obs_probe_config_last_reload_successful",
    "process_cpu_seconds_total",
]


def test_metrics_pass_promtool_and_carry_the_labels(exporter):
    port = free_port()
    config = base_config(port, host="127.0.0.2", mtr={"enabled": True, "interval": 0.5, "count": 2, "max_hops": 4})
    config["targets"]["static"] = [
        {"name": "db1", "address": "127.0.0.2", "region": "eu-central-1", "az": "eu-central-1b", "tcp_ports": [port]},
        {"name": "db1", "address": "::1", "region": "eu-central-1", "az": "eu-central-1b", "tcp_ports": [1]},
    ]
    e = exporter(config)
    wait_for(lambda: e.path("::1")["mtr"], 5, what="a finished trace")
    body = e.get("/metrics")
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), result
    text = body.decode()
    for family in FAMILIES:
        assert f"\n{family}" in text, family
    labels = (
        'src_region="eu-central-1",src_az="eu-central-1a",dst_region="eu-central-1",dst_az="eu-central-1b",'
        'dst_host="db1"'
    )
    assert f'infra_obs_probe_rtt_window_seconds{{{labels},target="127.0.0.2",probe="icmp",quantile="0.9"}}' in text
    az = 'src_region="eu-central-1",src_az="eu-central-1a",dst_region="eu-central-1",dst_az="eu-central-1b"'
    assert f'infra_obs_probe_az_rtt_seconds_bucket{{{az},le="0.0001"}}' in text
    assert f'infra_obs_probe_tcp_outcomes_total{{{labels},target="[::1]:1",probe="tcp",outcome="refused"}}' in text
    hop = 'hop="1",hop_address="::1"'
    assert f'infra_obs_probe_mtr_hop_loss_ratio{{{labels},target="::1",probe="mtr",{hop}}} 0.0' in text
    assert e.sample("infra_obs_probe_tcp_outcomes_total", target=f"127.0.0.2:{port}", outcome="ok") > 0
    # Compressed when asked, as Prometheus asks
    request = urllib.request.Request(e.base + "/metrics", headers={"Accept-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        unpacked = gzip.decompress(response.read()).decode()
    assert "\ninfra_obs_probe_window_seconds 30.0\n" in unpacked
    assert "\ninfra_obs_probe_az_rtt_seconds_bucket{" in unpacked


def test_paths_json_numbers_come_from_the_raw_samples(exporter):
    config = base_config(free_port(), interval=0.05, timeout=0.3, window=1.0)
    config["targets"]["static"] = [{"name": "h2", "address": "127.0.0.2", "tcp_ports": [1]}]
    e = exporter(config)
    time.sleep(2)
    data = e.json("/paths.json")
    assert data["source"] == {"name": "node-a", "region": "eu-central-1", "az": "eu-central-1a"}
    assert data["window_seconds"] == 1.0
    (path,) = data["paths"]
    icmp = path["icmp"]
    # 1 s window at 20 probes/s, less the ones still in flight
    assert 14 <= icmp["sent"] + icmp["in_flight"] <= 22, icmp
    assert icmp["received"] == icmp["sent"] and icmp["lost"] == 0 and icmp["loss_ratio"] == 0.0
    assert 0 < icmp["rtt_median_seconds"] <= icmp["rtt_p99_seconds"] < 0.01
    # the counters keep counting past the window
    assert e.sample("infra_obs_probe_sent_total", target="127.0.0.2") >= 30
    (tcp,) = path["tcp"]
    assert tcp["port"] == 1 and tcp["outcomes"]["refused"] == tcp["attempts"] >= 14 and tcp["failure_ratio"] == 1.0
    narrow = e.json("/paths.json?window=0.5")["paths"][0]["icmp"]
    assert narrow["sent"] + narrow["in_flight"] <= 12


class Cells(HTMLParser):
    """Every <td> of the two matrices with its attributes."""

    def __init__(self):
        super().__init__()
        self.table = ""
        self.cells: list[dict] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.table = attrs.get("id", "")
        elif tag == "td":
            self.cells.append({"table": self.table, **attrs})


def test_matrix_marks_the_dead_peer_unhealthy(consul_agent, exporter):
    """A and C run; B is registered but its exporter is down: its column turns unhealthy, its row has no data."""
    port = free_port()
    nodes = {"node-a": ("127.0.0.31", "zone-1"), "node-c": ("127.0.0.33", "zone-2")}
    consul_agent.register(
        "mesh-node-b", "127.0.0.32", port, {"region": "r1", "az": "zone-1", "host": "node-b"}, name="mesh"
    )
    started = {}
    for name, (address, az) in nodes.items():
        cfg = base_config(port, host=address, interval=0.1, timeout=0.3, window=30)
        cfg["source"] = {"name": name, "region": "r1", "az": az}
        cfg["targets"]["consul"] = {"enabled": True, "url": consul_agent.url, "service": "mesh", "refresh": 0.5}
        cfg["register"] = {"enabled": True, "url": consul_agent.url, "service": "mesh", "address": address}
        started[name] = exporter(cfg)
    a = started["node-a"]

    def full_matrix():
        m = a.json("/matrix.json")
        cells = {(c["src"], c["dst"]): c for c in m["host_matrix"]}
        wanted = [("node-a", "node-b"), ("node-a", "node-c"), ("node-c", "node-a")]
        return m if all(cells.get(k, {}).get("sent", 0) >= 5 for k in wanted) else None

    m = wait_for(full_matrix, 15, 0.5, "every live source probing every peer")
    cells = {(c["src"], c["dst"]): c for c in m["host_matrix"]}
    assert cells["node-a", "node-b"]["health"] == "unhealthy"  # ICMP answers, but TCP is refused
    assert cells["node-a", "node-b"]["tcp_failure_ratio"] == 1.0 and cells["node-a", "node-b"]["loss_ratio"] == 0.0
    assert cells["node-a", "node-c"]["health"] == "healthy" and cells["node-c", "node-a"]["health"] == "healthy"
    assert cells["node-c", "node-b"]["health"] == "unhealthy"
    assert cells["node-a", "node-a"]["health"] == "nodata" and cells["node-a", "node-a"]["self"]
    assert cells["node-b", "node-a"]["health"] == "nodata"
    sources = {s["host"]: s for s in m["sources"]}
    assert sources["node-c"]["ok"] and not sources["node-b"]["ok"] and sources["node-b"]["error"]
    zones = {(c["src_az"], c["dst_az"]): c for c in m["az_matrix"]}
    assert zones["zone-1", "zone-2"]["health"] == "healthy"  # A -> C
    assert zones["zone-2", "zone-1"]["health"] == "unhealthy"  # C -> A fine, C -> B refused: half the TCP fails
    assert zones["zone-2", "zone-1"]["host_cells"] == {"healthy": 1, "degraded": 0, "unhealthy": 1, "nodata": 0}

    parser = Cells()
    parser.feed(a.get("/matrix").decode())
    assert {c["table"] for c in parser.cells} == {"az-matrix", "host-matrix"}
    for c in parser.cells:
        assert c["data-health"] in ("healthy", "degraded", "unhealthy", "nodata") and c["data-src"] and c["data-dst"]
    host = {(c["data-src"], c["data-dst"]): c for c in parser.cells if c["table"] == "host-matrix"}
    assert host["node-a", "node-b"]["data-health"] == "unhealthy" and "unhealthy" in host["node-a", "node-b"]["class"]
    assert host["node-a", "node-c"]["data-health"] == "healthy"
    assert float(host["node-a", "node-c"]["data-rtt-p99-seconds"]) > 0
    unhealthy = sorted(k for k, c in host.items() if c["data-health"] == "unhealthy")
    assert unhealthy == [("node-a", "node-b"), ("node-c", "node-b")]  # the failing column: the destination

    started["node-c"].stop(signal.SIGTERM)
    assert wait_for(lambda: "mesh-node-c" not in consul_agent.services(), 5, what="C deregistered")


def healthy(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/healthy", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_an_error_in_the_probe_loop_makes_the_exporter_unhealthy_until_a_config_is_applied(monkeypatch):
    """Never silent: /-/healthy fails with the error (Consul's check and the exporter-health alert follow it) and
    loop_errors_total counts it; the loop goes on, and a reload that applies cleanly makes it healthy again."""
    port = free_port()
    app = App(parse(base_config(port, tcp={"enabled": False}), "probe.yml"))
    app.http.start("127.0.0.1", port)
    app.prober.start()
    try:
        assert healthy(port) == (200, "Healthy\n")

        def broken():
            raise MemoryError("a ring of 8,640,000 samples")

        monkeypatch.setattr(app.prober, "_run_due", broken)
        wait_for(lambda: app.prober.loop_errors > 0, what="a loop error")
        monkeypatch.undo()
        code, body = healthy(port)
        assert code == 503 and body == "probe loop error: MemoryError: a ring of 8,640,000 samples\n", body
        metrics = exposition.render(app.prober, app.status).decode()
        assert re.search(r"^infra_obs_probe_loop_errors_total [1-9]", metrics, re.M), metrics[-2000:]
        time.sleep(0.2)
        assert healthy(port)[0] == 503  # stays unhealthy with the loop running again
        app.prober.update(config=app.config)
        wait_for(lambda: healthy(port) == (200, "Healthy\n"), what="healthy after a clean reload")
    finally:
        app.http.stop()
        app.prober.stop()
