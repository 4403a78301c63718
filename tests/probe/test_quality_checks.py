"""infra-obs-quality's checks against real servers on loopback: HTTP and HTTPS (a CA of scripts/lab-tls.sh), TCP,
a gRPC health server (grpcio's own servicer), Consul 1.8; the gate's table, JSON and exit status; and the standing
checker's metrics, health and Consul registration."""

import json
import pathlib
import signal
import subprocess
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from infra_obs_probe.quality.checks import Result, run_check, table
from infra_obs_probe.quality.config import parse, parse_checks

from .probe_lab import free_port, http_get, stop_process, wait_for

REPO = pathlib.Path(__file__).resolve().parents[2]
DELAY = 0.02  # what the slow path holds each answer: a lower bound of every call's latency


REQUESTED = []  # the paths the origins were asked for


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        REQUESTED.append(self.path)
        if self.path.startswith("/slow"):
            time.sleep(DELAY)
        body = b"hello from the origin\n"
        self.send_response(404 if self.path == "/missing" else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def origin():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def tls_origin(tmp_path_factory):
    """HTTPS with a certificate for 127.0.0.1, valid 7 days, signed by a throwaway CA."""
    import ssl  # noqa: PLC0415

    tls = tmp_path_factory.mktemp("tls")
    subprocess.run([REPO / "scripts/lab-tls.sh", tls, "127.0.0.1"], check=True, capture_output=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls / "server.pem", tls / "server.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://127.0.0.1:{server.server_address[1]}", str(tls / "ca.pem")
    server.shutdown()


@pytest.fixture(scope="module")
def grpc_server():
    """A real gRPC server with the standard health service: one service serving, one not."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = health.HealthServicer()
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("shop.v1.Api", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("shop.v1.Down", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(0)


def config(*checks, **top):
    data = {"checker": {"name": "mon"}, **top}
    return parse(data, "quality.yml", parse_checks({"service": "shop", "checks": list(checks)}, "checks/shop.yml"))


def one(check, **top):
    cfg = config(check, **top)
    return run_check(cfg.checks[0], cfg)


def test_http_passes_with_percentiles_over_the_burst(origin):
    r = one({"name": "front", "http": {"url": origin + "/", "body_contains": "origin"}, "burst": {"count": 8}})[0]
    assert r.ok, r.error
    assert (r.calls, r.error_ratio, r.target) == (8, 0.0, origin + "/")
    assert 0 < r.p50 <= r.p99
    assert "errors 0/8" in r.measured


@pytest.mark.parametrize(
    ("http", "error"),
    [
        ({"path": "/missing"}, "status 404, expected 200"),
        ({"status": [204]}, "status 200, expected 204"),
        ({"body_contains": "teapot"}, "body does not contain 'teapot'"),
    ],
)
def test_http_fails_on_status_or_body_naming_why(origin, http, error):
    url = origin + http.pop("path", "/")
    r = one({"name": "front", "http": {"url": url, **http}, "burst": {"count": 3}})[0]
    assert not r.ok and r.error_ratio == 1.0
    assert error in r.error and "error ratio 1.00 > 0" in r.error


def test_a_latency_threshold_below_the_measured_value_fails(origin):
    check = {"name": "slow", "http": {"url": origin + "/slow"}, "burst": {"count": 4, "concurrency": 2}}
    r = one({**check, "max_p50_ms": DELAY * 1000 / 4})[0]
    assert not r.ok and r.error_ratio == 0.0
    assert r.p50 >= DELAY and f"p50 {r.p50 * 1000:.1f} ms > {DELAY * 1000 / 4:.1f} ms" in r.error
    assert "p50 <= 5.0 ms" in r.threshold
    assert one(check)[0].ok  # no latency threshold: the same calls pass


def test_an_error_ratio_threshold_lets_some_calls_fail(origin):
    closed = free_port()
    check = {"name": "shaky", "tcp": {"address": "127.0.0.1", "port": closed}, "burst": {"count": 4}}
    r = one(check)[0]
    assert not r.ok and r.error_ratio == 1.0 and "Connection refused" in r.error
    assert one({**check, "max_error_ratio": 1})[0].ok


def test_tcp_connects(origin):
    port = int(origin.rsplit(":", 1)[1])
    r = one({"name": "port", "tcp": {"address": "127.0.0.1", "port": port}, "burst": {"count": 5}})[0]
    assert r.ok and r.target == f"127.0.0.1:{port}"


def test_https_checks_the_certificate(tls_origin):
    url, ca = tls_origin
    assert one({"name": "tls", "http": {"url": url + "/", "ca_file": ca}})[0].ok
    untrusted = one({"name": "tls", "http": {"url": url + "/"}})[0]
    assert not untrusted.ok and "TLS certificate not valid" in untrusted.error
    expiring = one({"name": "tls", "http": {"url": url + "/expiring", "ca_file": ca, "min_days_valid": 30}})[0]
    assert not expiring.ok and "TLS certificate expires in" in expiring.error and "(< 30)" in expiring.error
    assert "/expiring" not in REQUESTED  # refused before it sent a request


def test_grpc_health_of_a_real_server(grpc_server):
    def grpc_check(service):
        return {"name": "api", "grpc": {"address": "127.0.0.1", "port": grpc_server, "service": service}}

    assert one(grpc_check(""))[0].ok
    serving = one(grpc_check("shop.v1.Api"))[0]
    assert serving.ok and serving.calls == 10 and serving.target == f"127.0.0.1:{grpc_server}/shop.v1.Api"
    down = one(grpc_check("shop.v1.Down"))[0]
    assert not down.ok and "status NOT_SERVING" in down.error
    unknown = one(grpc_check("shop.v1.Nope"))[0]
    assert not unknown.ok and "NOT_FOUND" in unknown.error
    nobody = one({"name": "api", "grpc": {"address": "127.0.0.1", "port": free_port()}, "timeout": 0.5})[0]
    assert not nobody.ok and "UNAVAILABLE" in nobody.error


def test_consul_check_names_each_instance_and_its_failing_check(consul_agent):
    for sid, status in (("web-1", "passing"), ("web-2", "critical")):
        consul_agent.api(
            "PUT",
            "/v1/agent/service/register",
            {"Name": "web", "ID": sid, "Port": 80, "Check": {"TTL": "600s", "Status": status, "Name": f"{sid} ttl"}},
        )
    try:
        rows = one(
            {"name": "web-registered", "consul": {"service": "web", "min_instances": 2}}, consul_url=consul_agent.url
        )
        assert [(r.target.split("/")[1], r.ok) for r in rows[1:]] == [("web-1", True), ("web-2", False)]
        assert rows[0].ok and rows[0].measured == "2 instances"
        assert "web-2 ttl: critical" in rows[2].error
        few = one({"name": "db", "consul": {"service": "db"}}, consul_url=consul_agent.url)
        assert len(few) == 1 and not few[0].ok and few[0].measured == "0 instances"
    finally:
        for sid in ("web-1", "web-2"):
            consul_agent.api("PUT", f"/v1/agent/service/deregister/{sid}")


def test_a_check_that_cannot_run_is_a_failure_not_a_crash():
    rows = one({"name": "web", "consul": {"service": "web"}}, consul_url=f"http://127.0.0.1:{free_port()}")
    assert len(rows) == 1 and not rows[0].ok and rows[0].measured == "not measured" and rows[0].error


def test_the_table_names_the_failing_check(origin):
    rows = one({"name": "front", "http": {"url": origin + "/missing"}, "burst": {"count": 2}})
    text = table(rows)
    header, line, why = text.splitlines()
    assert header.split() == ["CHECK", "TARGET", "RESULT", "MEASURED", "THRESHOLD"]
    assert line.startswith("front ") and " FAIL " in line and "errors 2/2" in line
    assert why.startswith(f"FAILED front {origin}/missing: ") and "status 404" in why


def write_checker(tmp_path, checks, **top):
    (tmp_path / "checks").mkdir(exist_ok=True)
    (tmp_path / "checks/shop.yml").write_text(yaml.safe_dump({"service": "shop", "checks": checks}))
    path = tmp_path / "quality.yml"
    data = {"checker": {"name": "mon", "region": "r1", "az": "r1a"}, "checks_dir": str(tmp_path / "checks"), **top}
    path.write_text(yaml.safe_dump(data))
    return path


def quality(*args):
    env = {"PYTHONPATH": str(REPO / "probe/src"), "PATH": "/usr/bin:/bin"}
    return [sys.executable, "-m", "infra_obs_probe.quality", *args], env


def test_the_gate_prints_a_table_writes_json_and_fails_on_a_failure(tmp_path, origin):
    good = {"name": "front", "http": {"url": origin + "/"}, "burst": {"count": 2}}
    bad = {"name": "gone", "tcp": {"address": "127.0.0.1", "port": free_port()}, "burst": {"count": 2}}
    path = write_checker(tmp_path, [good, bad])
    command, env = quality("check", "--config", str(path), "--json", str(tmp_path / "out.json"))
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert "FAILED gone 127.0.0.1:" in done.stdout and "1 passed, 1 failed" in done.stdout
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["result"] == "failed" and result["checker"] == "mon"
    assert [(r["check"], r["ok"]) for r in result["results"]] == [("front", True), ("gone", False)]
    command, env = quality("check", "--config", str(path), "--only", "front")
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "1 passed, 0 failed" in done.stdout
    (tmp_path / "checks/shop.yml").write_text("service: shop\nchecks:\n  - name: x\n    tcp: {address: a b, port: 1}\n")
    done = subprocess.run(quality("check", "--config", str(path))[0], env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "checks/shop.yml: checks[0].tcp.address" in done.stderr


def metric(text, name, **labels):
    for line in text.splitlines():
        if line.startswith(name + ("{" if labels else " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_the_standing_checker_serves_results_registers_and_deregisters(tmp_path, origin, consul_agent):
    port = free_port()
    good = {"name": "front", "http": {"url": origin + "/"}, "burst": {"count": 2}}
    bad = {"name": "gone", "tcp": {"address": "127.0.0.1", "port": free_port()}, "burst": {"count": 2}}
    path = write_checker(
        tmp_path,
        [good, bad],
        listen=f"127.0.0.1:{port}",
        interval=1,
        consul_url=consul_agent.url,
        register={"enabled": True, "url": consul_agent.url, "address": "127.0.0.1"},
    )
    command, env = quality("serve", "--config", str(path))
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        text = wait_for(
            lambda: (
                (t := http_get(url + "/metrics").decode())
                and metric(t, "infra_obs_quality_last_run_timestamp_seconds")
                and t
            ),
            30,
            0.2,
            "a first run",
        )
        assert metric(text, "infra_obs_quality_check_success", check="front") == 1
        assert metric(text, "infra_obs_quality_check_success", check="gone", service="shop", kind="tcp") == 0
        assert metric(text, "infra_obs_quality_check_error_ratio", check="gone") == 1
        assert metric(text, "infra_obs_quality_check_latency_seconds", check="front", quantile="0.99") > 0
        assert metric(text, "infra_obs_quality_checks") == 2
        assert http_get(url + "/-/healthy") == b"OK\n"
        services = wait_for(lambda: consul_agent.api("GET", "/v1/agent/services"), 10, 0.2, "registration")
        service = services["infra-obs-quality-mon"]
        assert (service["Service"], service["Meta"]["region"], service["Port"]) == ("infra-obs-quality", "r1", port)
        # The next runs follow the interval: the last run's time moves on.
        first = metric(text, "infra_obs_quality_last_run_timestamp_seconds")
        wait_for(
            lambda: metric(http_get(url + "/metrics").decode(), "infra_obs_quality_last_run_timestamp_seconds") > first,
            30,
            0.2,
            "a second run",
        )
    finally:
        assert stop_process(proc, signal.SIGTERM) == 0
    assert "infra-obs-quality-mon" not in consul_agent.api("GET", "/v1/agent/services")


def test_the_table_cuts_a_long_cell_but_the_failure_line_keeps_it_whole():
    target = "http://10.0.0.1:8080/" + "a" * 120
    failed = Result("front", "shop", "http", target, False, "p50 1.0 ms", "errors <= 0", "status 500")
    header, line, why = table([failed]).splitlines()
    assert target[:97] + "..." in line and target not in line
    assert why == f"FAILED front {target}: status 500"
    assert header.index("RESULT") == line.index("FAIL")
