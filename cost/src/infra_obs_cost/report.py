"""The reports: per team an HTML page (the window's utilisation as charts, the findings with their evidence, the
saving on offer against the budget) and a CSV of the findings exactly as stored, plus an index of the teams.
Rebuilt from the database after each run's findings and written to a directory only where a file's bytes change,
so a rerun touches nothing; the health exporter serves the directory (serve.py, /reports/)."""

from __future__ import annotations

import csv
import datetime
import importlib.resources
import io
import json
import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import jinja2

from .findings import NETWORK, NETWORK_PARTS, Policy, total_saving
from .model import TEAM, Record
from .store import FINDING_KEY, FINDING_VALUES

# What the directory holds: the index, and a page and a CSV per team (a team name, model.TEAM, is a file name).
REPORT_FILE = re.compile(rf"index\.html|(?:{TEAM.pattern})\.(?:html|csv)")
CSV_COLUMNS = (*FINDING_KEY, *FINDING_VALUES, "currency")
# The charts: (service, metric, statistic, title, unit); network is in and out together, in MB a day.
CHARTS = (
    ("ec2", "cpu", "avg", "EC2 CPU, daily average", "%"),
    ("ec2", "memory", "avg", "EC2 memory used, daily average", "%"),
    ("ec2", "disk", "avg", "EC2 disk used, daily average", "%"),
    ("ec2", NETWORK, "sum", "EC2 network in + out a day", "MB"),
    ("rds", "cpu", "avg", "RDS CPU, daily average", "%"),
    ("rds", "connections", "max", "RDS connections, daily maximum", ""),
)
WIDTH, HEIGHT, PAD = 560, 150, 28
# A cell a spreadsheet would run as a formula. Our values come from tight grammars and cannot start so; kept as the
# CSV's own guard all the same, since a report outlives the code that checked its data.
FORMULA = ("=", "+", "-", "@", "\t", "\r")


class ReportError(Exception):
    """The reports' directory could not be written; str() says which file and why."""


@dataclass(frozen=True)
class Chart:
    title: str
    unit: str
    days: tuple[str, ...]
    mean: tuple[float | None, ...]  # the team's resources' mean each day
    low: tuple[float | None, ...]
    high: tuple[float | None, ...]
    resources: int
    top: float  # the y axis's top

    def x(self, i: int) -> float:
        return round(PAD + i * (WIDTH - 2 * PAD) / max(len(self.days) - 1, 1), 1)

    def y(self, value: float) -> float:
        return round(HEIGHT - PAD - value / self.top * (HEIGHT - 2 * PAD), 1)

    @property
    def line(self) -> str:
        return " ".join(f"{self.x(i)},{self.y(v)}" for i, v in enumerate(self.mean) if v is not None)

    @property
    def band(self) -> str:
        """The min-max band: the highs left to right, then the lows back."""
        known = [i for i, v in enumerate(self.high) if v is not None]
        return " ".join([f"{self.x(i)},{self.y(self.high[i])}" for i in known] +
                        [f"{self.x(i)},{self.y(self.low[i])}" for i in reversed(known)])  # fmt: skip


def charts(values: Iterable[Record], days: list[datetime.date]) -> list[Chart]:
    """One chart per metric the team has: each day's mean, lowest and highest over its resources."""
    per_day: dict[tuple[str, str, str], dict[datetime.date, dict]] = defaultdict(lambda: defaultdict(dict))
    for v in values:
        if v.metric in NETWORK_PARTS and v.statistic == "sum":
            got = per_day[v.resource.service, NETWORK, "sum"][v.day]
            got[v.resource] = got.get(v.resource, 0.0) + v.value / 1_000_000
        else:
            per_day[v.resource.service, v.metric, v.statistic][v.day][v.resource] = v.value
    out = []
    for service, metric, statistic, title, unit in CHARTS:
        by_day = per_day.get((service, metric, statistic))
        if not by_day:
            continue
        daily = [list(by_day.get(d, {}).values()) for d in days]
        high = tuple(max(x) if x else None for x in daily)
        top = 100.0 if unit == "%" else max([h for h in high if h is not None] + [1.0]) * 1.1
        out.append(Chart(title, unit, tuple(d.isoformat() for d in days),
                         tuple(round(sum(x) / len(x), 3) if x else None for x in daily),
                         tuple(min(x) if x else None for x in daily), high,
                         len({r for got in by_day.values() for r in got}), top))  # fmt: skip
    return out


def _environment() -> jinja2.Environment:
    templates = importlib.resources.files(__package__) / "templates"
    return jinja2.Environment(
        loader=jinja2.FunctionLoader(lambda name: (templates / name).read_text(encoding="utf-8")),
        autoescape=True,  # team names and identifiers come from tags: never markup
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def _csv_cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA) else text


def findings_csv(findings: list[dict], currency: str) -> str:
    """The findings as stored, a row each: the table's columns, evidence as its JSON, and the price's currency."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for f in findings:
        row = {**f, "evidence": json.dumps(f["evidence"], sort_keys=True), "currency": currency}
        writer.writerow([_csv_cell(row[c]) for c in CSV_COLUMNS])
    return out.getvalue()


def build(values: list[Record], findings: list[dict], window_end: datetime.date, policy: Policy) -> dict[str, bytes]:
    """Every file of the directory: the index, and each team's page and CSV. Teams are those with records in the
    window or findings; the bytes depend on the data alone (no clock), so the same data gives the same files."""
    env = _environment()
    days = [window_end - datetime.timedelta(days=n) for n in range(policy.longest - 1, -1, -1)]
    currency = policy.prices.currency
    teams = sorted({v.team for v in values} | {f["team"] for f in findings})
    files: dict[str, bytes] = {}
    summaries = []
    for team in teams:
        mine = [f for f in findings if f["team"] == team]
        summary = {
            "team": team,
            "findings": len(mine),
            "resources": len({(f["account_id"], f["region"], f["service"], f["resource_id"]) for f in mine}),
            "saving": total_saving(f["monthly_saving"] for f in mine),
            "budget": policy.budgets.get(team),
        }
        summaries.append(summary)
        page = env.get_template("team.html.j2").render(
            summary=summary, findings=mine, charts=charts([v for v in values if v.team == team], days),
            first=days[0].isoformat(), last=window_end.isoformat(), days=len(days), currency=currency,
            width=WIDTH, height=HEIGHT, pad=PAD,
        )  # fmt: skip
        files[f"{team}.html"] = page.encode()
        files[f"{team}.csv"] = findings_csv(mine, currency).encode()
    index = env.get_template("index.html.j2").render(
        teams=summaries, first=days[0].isoformat(), last=window_end.isoformat(), currency=currency
    )
    files["index.html"] = index.encode()
    return files


def publish(directory: str, files: dict[str, bytes]) -> int:
    """Writes the files whose bytes differ (each atomically) and removes the reports of teams no longer there;
    returns how many files it wrote or removed."""
    try:
        return _publish(directory, files)
    except OSError as e:
        raise ReportError(f"reports: cannot write {e.filename or directory}: {e.strerror}") from e


def _publish(directory: str, files: dict[str, bytes]) -> int:
    os.makedirs(directory, mode=0o755, exist_ok=True)
    changed = 0
    for name, body in sorted(files.items()):
        path = os.path.join(directory, name)
        try:
            with open(path, "rb") as f:
                if f.read() == body:
                    continue
        except FileNotFoundError:
            pass
        with tempfile.NamedTemporaryFile("wb", dir=directory, prefix=".report.", delete=False) as f:
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(f.name, 0o644)
        os.replace(f.name, path)
        changed += 1
    for name in sorted(os.listdir(directory)):
        if name not in files and REPORT_FILE.fullmatch(name):
            os.remove(os.path.join(directory, name))
            changed += 1
    return changed
