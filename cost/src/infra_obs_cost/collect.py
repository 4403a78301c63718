"""One collection run: each of the last `days` complete UTC days fetched, validated and written as its own batch,
and the run's outcome kept in the state file that `serve` exports."""

from __future__ import annotations

import datetime
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field

from . import report
from .config import Config
from .findings import evaluate, total_saving
from .model import Policy, daily
from .report import ReportError
from .sources import SourceError, instance_types, open_source
from .store import Store, StoreError

log = logging.getLogger("infra_obs_cost")
# The percent metrics whose daily averages the exporter shows per team.
UTILISATION = ("cpu", "memory", "disk")


@dataclass
class RunState:
    """What `serve` exports: the last run, the last success, and counters over all runs."""

    last_run_start: float = 0.0
    last_run_end: float = 0.0
    last_success: float = 0.0
    last_result: str = ""  # "success" | "failed"
    last_error: str = ""
    duration: float = 0.0
    days: int = 0
    batches: int = 0
    records: int = 0  # produced this run
    records_added: int = 0
    records_changed: int = 0
    rejects: int = 0  # reject rows produced this run (a record may have several)
    records_rejected: int = 0  # records not written for a whole-record reason
    source_calls: int = 0
    findings: int = 0  # of the window ending on the last day collected
    findings_written: int = 0  # added, changed or removed
    reports_written: int = 0  # report files written or removed
    # Per team, what the exporter shows of the newest window (kept from the last run that evaluated one): the
    # findings by rule, those the window before lacked, the monthly saving on offer, and the last day's mean
    # utilisation by metric.
    window_end: str = ""
    currency: str = ""
    teams: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=lambda: {"success": 0, "failed": 0})
    errors: dict[str, int] = field(default_factory=lambda: {"source": 0, "database": 0, "report": 0})

    @property
    def reject_ratio(self) -> float:
        considered = self.records // 2 + self.records_rejected  # records come as avg + max
        return self.records_rejected / considered if considered else 0.0


def read_state(path: str) -> RunState:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return RunState()
    except (OSError, ValueError) as e:
        log.warning("state file %s unreadable (%s): starting afresh", path, e)
        return RunState()
    known = {k: v for k, v in data.items() if k in RunState.__dataclass_fields__}
    return RunState(**known)


def write_state(path: str, state: RunState) -> None:
    directory = os.path.dirname(path) or "."
    with tempfile.NamedTemporaryFile("w", dir=directory, prefix=".state.", delete=False, encoding="utf-8") as f:
        json.dump(asdict(state), f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)


def days_to_collect(config: Config, today: datetime.date) -> list[datetime.date]:
    return [today - datetime.timedelta(days=n) for n in range(config.days, 0, -1)]


def run(config: Config, today: datetime.date | None = None, source=None) -> RunState:
    """Collects, writes and records the outcome; raises SourceError or StoreError after recording a failure."""
    state = read_state(config.state_file)
    kept = {k: getattr(state, k) for k in ("runs", "errors", "last_success", "window_end", "currency", "teams")}
    state = RunState(**kept, last_run_start=time.time())
    today = today or datetime.datetime.now(datetime.UTC).date()
    policy = Policy(config.min_samples)
    try:
        source = source or open_source(config)
        with Store(config.database) as store:
            store.migrate()
            for day in days_to_collect(config, today):
                fetched = source.fetch(day)
                state.source_calls += fetched.calls
                records, rejects = daily(day, fetched.observations, fetched.teams, policy)
                result = store.write_day(source.name, day, records, rejects)
                state.days += 1
                state.records += len(records)
                state.rejects += len(rejects)
                state.records_rejected += sum(1 for j in rejects if j.samples == 0)
                state.records_added += result.records_added
                state.records_changed += result.records_changed
                if result.batch_id:
                    state.batches += 1
                    log.info(
                        "%s: batch %s: %d records added, %d changed, %d rejects added, %d changed",
                        day, result.batch_id, result.records_added, result.records_changed,
                        result.rejects_added, result.rejects_changed,
                    )  # fmt: skip
                else:
                    log.info("%s: nothing new (%d records, %d rejects)", day, len(records), len(rejects))
            if config.findings.enabled:
                find(config, store, today - datetime.timedelta(days=1), state)
    except (SourceError, StoreError, ReportError) as e:
        kind = {SourceError: "source", StoreError: "database", ReportError: "report"}[type(e)]
        state.errors[kind] = state.errors.get(kind, 0) + 1
        _finish(config, state, "failed", str(e))
        raise
    _finish(config, state, "success", "")
    return state


def find(config: Config, store: Store, window_end: datetime.date, state: RunState) -> None:
    """The findings of the window ending on window_end, stored as that window's set."""
    policy = config.findings.policy
    values = store.daily_values(window_end - datetime.timedelta(days=policy.longest - 1), window_end)
    types = instance_types({v.resource for v in values}, config.cloudwatch_endpoint_url) if (
        config.findings.instance_types) else {}  # fmt: skip
    findings = evaluate(values, window_end, policy, types)
    previous = store.findings(window_end=window_end - datetime.timedelta(days=1))
    before = {f"{f['resource_id']}/{f['rule']}" for f in previous}
    result = store.write_findings(window_end, findings)
    state.findings = len(findings)
    state.findings_written = result.added + result.changed + result.removed
    state.window_end, state.currency = window_end.isoformat(), policy.prices.currency
    state.teams = team_summary(findings, [v for v in values if v.day == window_end], before)
    log.info("findings of the %d days to %s: %d (%d added, %d changed, %d removed)", policy.longest, window_end,
             len(findings), result.added, result.changed, result.removed)  # fmt: skip
    if config.reports.enabled:
        # From the database, so the reports show what is stored.
        files = report.build(values, store.findings(window_end=window_end), window_end, policy)
        state.reports_written = report.publish(config.reports.directory, files)
        log.info("reports in %s: %d files, %d written or removed", config.reports.directory, len(files),
                 state.reports_written)  # fmt: skip


def team_summary(findings: list, last_day: list, before: set[str]) -> dict[str, dict]:
    """Per team: findings by rule, new ones by rule (none without a window before to compare with), the monthly
    saving on offer, and the last day's mean of each percent metric's daily average."""
    teams: dict[str, dict] = {}

    def team(name: str) -> dict:
        return teams.setdefault(name, {"findings": {}, "new": {}, "saving": 0.0, "utilisation": {}})

    for f in findings:
        mine = team(f.team)
        mine["findings"][f.rule] = mine["findings"].get(f.rule, 0) + 1
        if before and f"{f.resource.resource_id}/{f.rule}" not in before:
            mine["new"][f.rule] = mine["new"].get(f.rule, 0) + 1
    for name, mine in teams.items():
        mine["saving"] = total_saving(f.monthly_saving for f in findings if f.team == name)
    sums: dict[tuple[str, str], list[float]] = {}
    for r in last_day:
        if r.statistic == "avg" and r.metric in UTILISATION:
            sums.setdefault((r.team, r.metric), []).append(r.value)
    for (name, metric), values in sorted(sums.items()):
        team(name)["utilisation"][metric] = round(sum(values) / len(values), 3)
    return teams


def _finish(config: Config, state: RunState, result: str, error: str) -> None:
    state.last_run_end = time.time()
    state.duration = state.last_run_end - state.last_run_start
    state.last_result = result
    state.last_error = error[:500]
    state.runs[result] = state.runs.get(result, 0) + 1
    if result == "success":
        state.last_success = state.last_run_end
    write_state(config.state_file, state)
