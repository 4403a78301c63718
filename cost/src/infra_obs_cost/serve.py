"""The collector's health as metrics: the state file the last run left, read at each scrape (so the exporter never
needs the run's process), served on /metrics and registered in Consul."""

from __future__ import annotations

import datetime
import logging
import queue
import signal

from infra_obs_probe.discovery import Registrar, registration
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from . import __version__
from .collect import read_state
from .config import Config

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
        )
        for name, text, value in gauges:
            yield GaugeMetricFamily(p + name, text, value=value)
        runs = CounterMetricFamily(p + "runs", "Collection runs by result", labels=["result"])
        for result in ("success", "failed"):
            runs.add_metric([result], s.runs.get(result, 0))
        yield runs
        errors = CounterMetricFamily(p + "errors", "Runs that failed, by what failed", labels=["kind"])
        for kind in ("source", "database"):
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


def serve(config: Config) -> int:
    registry = CollectorRegistry()
    registry.register(HealthCollector(config))
    ProcessCollector(registry=registry)  # process_start_time_seconds: the stalled alert's "never succeeded" branch
    try:
        server, _ = start_http_server(config.listen_port, config.listen_host, registry)
    except OSError as e:
        log.error("cannot listen on %s:%s: %s", config.listen_host, config.listen_port, e.strerror)
        return 1
    registrar = Registrar()
    signals: queue.SimpleQueue[str] = queue.SimpleQueue()
    signal.signal(signal.SIGTERM, lambda *_: signals.put("stop"))
    signal.signal(signal.SIGINT, lambda *_: signals.put("stop"))
    log.info("infra-obs-cost %s exporting the health of %s on %s:%s", __version__, config.state_file,
             config.listen_host, config.listen_port)  # fmt: skip
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
    return 0
