"""The collector's health as metrics: the state file the last run left, read at each scrape (so the exporter never
needs the run's process), served on /metrics and registered in Consul; and the reports the last run wrote, on
/reports/ (report.py)."""

from __future__ import annotations

import datetime
import logging
import os
import queue
import signal
import socket
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from infra_obs_probe.discovery import Registrar, registration
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from . import __version__
from .collect import read_state
from .config import Config
from .report import REPORT_FILE

log = logging.getLogger("infra_obs_cost")
REGISTER_EVERY = 30.0


class HealthCollector:
    def __init__(self, config: Config):
        self.config = config

    def collect(self):
        s = read_state(self.config.state_file)
        p = "infra_obs_cost_"

        gauges = (
            ("last_success_timestamp_seconds", "When the last successful run ended (0: never)", s.last_success),
            ("last_run_timestamp_seconds", "When the last run ended, successful or not", s.last_run_end),
            ("last_run_success", "1 if the last run succeeded, 0 if it failed", float(s.last_result == "success")),
            ("last_run_duration_seconds", "How long the last run took", s.duration),
            ("interval_seconds", "Seconds between runs (the timer's)", self.config.interval),
            ("last_run_days", "Days the last run collected", s.days),
            ("last_run_batches", "Batches the last run wrote (days with something new)", s.batches),
            ("last_run_records", "Daily records the last run produced", s.records),
            ("last_run_records_written", "Records the last run added or changed", s.records_added + s.records_changed),
            ("last_run_records_rejected", "Records the last run refused whole (rejects table)", s.records_rejected),
            ("last_run_rejects", "Reject rows of the last run: whole records and dropped samples", s.rejects),
            ("last_run_reject_ratio", "Share of the last run's records refused whole", s.reject_ratio),
            ("last_run_source_calls", "Requests the last run made to its source", s.source_calls),
            ("last_run_reports_written", "Report files the last run wrote or removed", s.reports_written),
        )
        for name, text, value in gauges:
            yield GaugeMetricFamily(p + name, text, value=value)
        runs = CounterMetricFamily(p + "runs", "Collection runs by result", labels=["result"])
        for result in ("success", "failed"):
            runs.add_metric([result], s.runs.get(result, 0))
        yield runs
        errors = CounterMetricFamily(p + "errors", "Runs that failed, by what failed", labels=["kind"])
        for kind in ("source", "database", "report"):
            errors.add_metric([kind], s.errors.get(kind, 0))
        yield errors
        yield from self.teams(s)
        info = GaugeMetricFamily(
            p + "build_info", "Version and source of the collector", labels=["version", "source", "database"]
        )
        info.add_metric([__version__, self.config.source, self.config.database.driver], 1.0)
        yield info

    def teams(self, s):
        """The newest findings window per team, as the last run that evaluated one left it, and the budgets."""
        p = "infra_obs_cost_"
        currency = s.currency or self.config.findings.policy.prices.currency
        findings = GaugeMetricFamily(p + "findings", "Findings of the newest window", labels=["team", "rule"])
        new = GaugeMetricFamily(p + "new_findings", "Findings the window before did not have", labels=["team", "rule"])
        saving = GaugeMetricFamily(p + "idle_monthly_saving", "Monthly saving the findings offer (stopping what "
                                   "they advise to stop, at the price table's prices)",
                                   labels=["team", "currency"])  # fmt: skip
        usage = GaugeMetricFamily(p + "team_utilisation_percent", "Mean of the team's daily averages on the window's "
                                  "last day", labels=["team", "metric"])  # fmt: skip
        for team, summary in sorted(s.teams.items()):
            for rule, count in sorted(summary.get("findings", {}).items()):
                findings.add_metric([team, rule], count)
                new.add_metric([team, rule], summary.get("new", {}).get(rule, 0))
            saving.add_metric([team, currency], summary.get("saving", 0.0))
            for metric, value in sorted(summary.get("utilisation", {}).items()):
                usage.add_metric([team, metric], value)
        budget = GaugeMetricFamily(p + "team_monthly_budget", "A team's monthly budget for the spend findings could "
                                   "save (the findings policy's budgets)", labels=["team", "currency"])  # fmt: skip
        for team, amount in sorted(self.config.findings.policy.budgets.items()):
            budget.add_metric([team, currency], amount)
        window = GaugeMetricFamily(p + "findings_window_end_timestamp_seconds",
                                   "The newest evaluated window's last day (00:00 UTC); 0: none yet")  # fmt: skip
        window.add_metric([], _midnight(s.window_end))
        yield from (findings, new, saving, usage, budget, window)


def _midnight(day: str) -> float:
    if not day:
        return 0.0
    return datetime.datetime.combine(datetime.date.fromisoformat(day), datetime.time(), datetime.UTC).timestamp()


INDEX = (
    b"<!DOCTYPE html><html><head><meta charset='utf-8'><title>infra-obs-cost</title></head><body>"
    b"<h1>infra-obs-cost</h1><ul><li><a href='metrics'>metrics</a></li>"
    b"<li><a href='reports/'>reports</a>: a page and a CSV per team</li></ul></body></html>"
)
TYPES = {".html": "text/html; charset=utf-8", ".csv": "text/csv; charset=utf-8"}


class Handler(BaseHTTPRequestHandler):
    """/metrics, /-/healthy (Consul's check: the exporter answers; a failed run is the alerts' business), and
    /reports/NAME for the names report.REPORT_FILE allows, read from the reports' directory: a path is never joined
    from a request beyond that grammar (no separators, no dot-dot)."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format, *args):
        """No access log: Prometheus scrapes constantly."""

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/metrics":
            self._send(200, generate_latest(self.server.registry), CONTENT_TYPE_LATEST)
        elif path == "/-/healthy":
            self._send(200, b"Healthy\n", "text/plain")
        elif path == "/":
            self._send(200, INDEX, "text/html; charset=utf-8")
        elif path == "/reports":
            self.send_response(301)
            self.send_header("Location", "/reports/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path.startswith("/reports/"):
            self._report(path.removeprefix("/reports/") or "index.html")
        else:
            self._send(404, b"not found\n", "text/plain")

    def _report(self, name: str) -> None:
        directory = self.server.config.reports.directory
        if not self.server.config.reports.enabled or not REPORT_FILE.fullmatch(name):
            self._send(404, b"not found\n", "text/plain")
            return
        try:
            with open(os.path.join(directory, name), "rb") as f:
                body = f.read()
        except FileNotFoundError:
            text = "no reports yet: the first collection run writes them\n" if name == "index.html" else "not found\n"
            self._send(404, text.encode(), "text/plain")
            return
        self._send(200, body, TYPES[os.path.splitext(name)[1]])


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, config: Config, registry: CollectorRegistry):
        self.config, self.registry = config, registry
        self.address_family = socket.AF_INET6 if ":" in config.listen_host else socket.AF_INET
        super().__init__((config.listen_host, config.listen_port), Handler)


def serve(config: Config) -> int:
    registry = CollectorRegistry()
    registry.register(HealthCollector(config))
    ProcessCollector(registry=registry)  # process_start_time_seconds: the stalled alert's "never succeeded" branch
    try:
        server = _Server(config, registry)
    except OSError as e:
        log.error("cannot listen on %s:%s: %s", config.listen_host, config.listen_port, e.strerror)
        return 1
    registrar = Registrar()
    signals: queue.SimpleQueue[str] = queue.SimpleQueue()
    signal.signal(signal.SIGTERM, lambda *_: signals.put("stop"))
    signal.signal(signal.SIGINT, lambda *_: signals.put("stop"))
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    log.info("infra-obs-cost %s exporting the health of %s and serving the reports on %s:%s", __version__,
             config.state_file, config.listen_host, config.listen_port)  # fmt: skip
    while True:
        if config.register.enabled:
            registrar.keep(
                config.register.url,
                registration(config.register, config.collector, config.listen_host, config.listen_port),
            )
        try:
            signals.get(timeout=REGISTER_EVERY)
            break
        except queue.Empty:
            continue
    log.info("shutting down")
    registrar.remove()
    server.shutdown()
    server.server_close()
    return 0
