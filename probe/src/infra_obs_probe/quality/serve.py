"""The standing checker: the gate's checks on a schedule, their last results as metrics, registered in Consul."""

from __future__ import annotations

import json
import logging
import queue
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from .. import __version__
from ..config import ConfigError
from ..discovery import Registrar, registration
from .checks import Result, run_all
from .config import QualityConfig, load

log = logging.getLogger("infra_obs_quality")


class State:
    """The last completed run, swapped whole: /metrics never sees half a run."""

    def __init__(self, config: QualityConfig):
        self.config = config
        self.results: list[Result] = []
        self.last_run = 0.0
        self.run_duration = 0.0
        self.runs = 0
        self.config_ok = 1
        self.registered = 0
        self.started = time.time()

    def healthy(self) -> bool:
        """Running its checks: a first run under way, or the last one ended within three intervals."""
        last = self.last_run or self.started
        return time.time() - last <= 3 * self.config.interval + 60


class Collector:
    def __init__(self, state: State):
        self.state = state

    def collect(self):
        s = self.state
        labels = ["check", "service", "kind", "target"]
        success = GaugeMetricFamily(
            "infra_obs_quality_check_success", "1 if the check's last run passed", labels=labels
        )
        latency = GaugeMetricFamily(
            "infra_obs_quality_check_latency_seconds",
            "Latency of the last burst of calls, by quantile (nearest rank)",
            labels=[*labels, "quantile"],
        )
        errors = GaugeMetricFamily(
            "infra_obs_quality_check_error_ratio", "Share of the last burst's calls that failed", labels=labels
        )
        for r in s.results:
            values = [r.check, r.service, r.kind, r.target]
            success.add_metric(values, 1.0 if r.ok else 0.0)
            if r.p50 is not None:
                latency.add_metric([*values, "0.5"], r.p50)
                latency.add_metric([*values, "0.99"], r.p99)
                errors.add_metric(values, r.error_ratio)
        yield success
        yield latency
        yield errors
        yield GaugeMetricFamily(
            "infra_obs_quality_last_run_timestamp_seconds", "When the last run of every check ended", value=s.last_run
        )
        yield GaugeMetricFamily(
            "infra_obs_quality_run_duration_seconds", "How long the last run of every check took", value=s.run_duration
        )
        yield GaugeMetricFamily("infra_obs_quality_interval_seconds", "Seconds between runs", value=s.config.interval)
        yield GaugeMetricFamily("infra_obs_quality_checks", "Checks this checker runs", value=len(s.config.mine()))
        yield GaugeMetricFamily(
            "infra_obs_quality_config_ok",
            "0 if the last reload was refused (the last good one still runs)",
            value=s.config_ok,
        )
        yield GaugeMetricFamily("infra_obs_quality_consul_registered", "1 if registered in Consul", value=s.registered)
        info = GaugeMetricFamily("infra_obs_quality_build_info", "Version of the checker", labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format, *args):
        """No access log: Prometheus and Consul poll constantly."""

    def do_GET(self):
        state = self.server.state
        if self.path == "/metrics":
            body, code, kind = generate_latest(self.server.registry), 200, "text/plain; version=0.0.4; charset=utf-8"
        elif self.path == "/-/healthy":
            ok = state.healthy()
            body, code, kind = (b"OK\n" if ok else b"checks not run lately\n"), (200 if ok else 503), "text/plain"
        elif self.path == "/results.json":
            data = {
                "run_started": state.last_run - state.run_duration if state.last_run else 0.0,
                "last_run": state.last_run,
                "results": [r.as_dict() for r in state.results],
            }
            body, code, kind = json.dumps(data, indent=1).encode(), 200, "application/json"
        else:
            body, code, kind = b"not found: /metrics, /-/healthy, /results.json\n", 404, "text/plain"
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: State
    registry: CollectorRegistry


class _Server6(_Server):
    address_family = socket.AF_INET6


def _server(config: QualityConfig, state: State) -> _Server:
    server_class = _Server6 if ":" in config.listen_host else _Server
    server = server_class((config.listen_host, config.listen_port), _Handler)
    server.state = state
    server.registry = CollectorRegistry()
    server.registry.register(Collector(state))
    return server


def serve(config: QualityConfig) -> int:
    state = State(config)
    try:
        server = _server(config, state)
    except OSError as e:
        log.error("cannot listen on %s:%s: %s", config.listen_host, config.listen_port, e.strerror)
        return 1
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    registrar = Registrar()
    signals: queue.SimpleQueue[str] = queue.SimpleQueue()
    signal.signal(signal.SIGHUP, lambda *_: signals.put("reload"))
    signal.signal(signal.SIGTERM, lambda *_: signals.put("stop"))
    signal.signal(signal.SIGINT, lambda *_: signals.put("stop"))
    log.info("infra-obs-quality %s started as %s: %d checks", __version__, config.checker.name, len(config.mine()))
    while True:
        config = state.config
        if config.register.enabled:
            definition = registration(config.register, config.checker, config.listen_host, config.listen_port)
            state.registered = int(registrar.keep(config.register.url, definition))
        else:
            registrar.remove()
            state.registered = 0
        start = time.time()
        results = run_all(config)
        state.results, state.last_run, state.run_duration = results, time.time(), time.time() - start
        state.runs += 1
        failed = [r for r in results if not r.ok]
        if failed:
            log.warning("%d of %d results failed: %s", len(failed), len(results), ", ".join(r.check for r in failed))
        try:
            what = signals.get(timeout=max(0.0, config.interval - state.run_duration))
        except queue.Empty:
            continue
        if what == "stop":
            break
        try:
            state.config = load(config.path)
            state.config_ok = 1
            log.info("configuration reloaded from %s", config.path)
        except ConfigError as e:
            state.config_ok = 0
            log.error("configuration reload refused, still running the last good one: %s", e)
    log.info("shutting down")
    registrar.remove()
    server.shutdown()
    return 0
