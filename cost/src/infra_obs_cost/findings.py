"""Findings: resources a team could stop or shrink, by rules after AWS Trusted Advisor's checks (low-utilisation EC2,
idle RDS) and low memory or disk where the CloudWatch agent reports them, with Cloud Custodian-style overrides per
team (days, statistic, comparison, threshold). A finding carries its evidence, the days and values that triggered
it, and, where a price table names the resource's type, the monthly saving of stopping it.

Findings are a function of the records of a window of days and of the rules: the window ending on the last day
collected is evaluated after each run, and stored (store.write_findings) so that a rerun changes nothing and a rule
changed for one team changes that team's findings alone."""

from __future__ import annotations

import datetime
import math
import operator
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from infra_obs_probe.config import _Map
from infra_obs_probe.quality.config import read_yaml

from .model import BYTES, METRICS, TEAM, Record, Resource

COMPARISONS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
# "network": the day's bytes in and out together (Trusted Advisor's network I/O), from the two sums.
NETWORK = "network"
NETWORK_PARTS = ("network_in", "network_out")
MAX_WINDOW = 62  # days: the collector keeps at most that many in one run
HOURS_PER_MONTH = 730  # AWS's convention for monthly prices
INSTANCE_TYPE = re.compile(r"[a-z0-9][a-z0-9.-]{0,31}")


@dataclass(frozen=True)
class Condition:
    metric: str  # a record metric of the rule's service, or "network"
    statistic: str  # avg | max | sum (bytes)
    comparison: str
    threshold: float

    def holds(self, value: float) -> bool:
        return COMPARISONS[self.comparison](value, self.threshold)

    @property
    def label(self) -> str:
        return f"{self.metric}.{self.statistic}"


@dataclass(frozen=True)
class Rule:
    name: str
    service: str
    days: int  # the window: the last `days` days up to the last day collected
    min_days: int  # days of the window on which every condition holds
    conditions: tuple[Condition, ...]
    stops: bool  # the advice is to stop the resource: its whole price is the saving
    enabled: bool = True


MB = 1_000_000
DEFAULT_RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        # Trusted Advisor: daily CPU at most 10% and network I/O at most 5 MB on at least 4 of the last 14 days.
        Rule("ec2_low_utilisation", "ec2", 14, 4,
             (Condition("cpu", "avg", "<=", 10.0), Condition(NETWORK, "sum", "<=", 5 * MB)), stops=True),
        # Trusted Advisor: an RDS instance without a connection for 7 days.
        Rule("rds_idle", "rds", 7, 7, (Condition("connections", "max", "<=", 0.0),), stops=True),
        # Low memory and disk where the CloudWatch agent reports them: on 12 of 14 days, so a lost day or two of the
        # agent's does not hide an over-sized instance.
        Rule("ec2_low_memory", "ec2", 14, 12, (Condition("memory", "max", "<=", 30.0),), stops=False),
        Rule("ec2_low_disk", "ec2", 14, 12, (Condition("disk", "max", "<=", 25.0),), stops=False),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Prices:
    """Hourly prices by service and type (instance type, DB instance class), in one currency."""

    currency: str = "USD"
    hourly: Mapping[tuple[str, str], float] = field(default_factory=dict)

    def monthly(self, service: str, instance_type: str) -> float | None:
        price = self.hourly.get((service, instance_type))
        return None if price is None else round(price * HOURS_PER_MONTH, 2)


@dataclass(frozen=True)
class Policy:
    """Every team's rules, the overrides of some teams, and teams' monthly budgets for the spend findings could save."""

    rules: Mapping[str, Rule]
    teams: Mapping[str, Mapping[str, Rule]]
    prices: Prices
    budgets: Mapping[str, float] = field(default_factory=dict)

    def rules_of(self, team: str) -> list[Rule]:
        mine = self.teams.get(team, {})
        return [mine.get(name, rule) for name, rule in self.rules.items()]

    @property
    def longest(self) -> int:
        return max([r.days for r in self.rules.values()] + [r.days for t in self.teams.values() for r in t.values()])


DEFAULT_POLICY = Policy(DEFAULT_RULES, {}, Prices())


def total_saving(savings: Iterable[float | None]) -> float:
    """The monthly saving of several findings: those with an estimate (a stop, at a known price) added up."""
    return round(math.fsum(s for s in savings if s is not None), 2)


@dataclass(frozen=True)
class Finding:
    resource: Resource
    team: str
    rule: str
    window_end: datetime.date
    days: int  # the window's length
    matched_days: int
    evidence: tuple[tuple[str, tuple[tuple[str, float], ...]], ...]  # (day, ((condition, value), ...)), oldest first
    instance_type: str
    monthly_saving: float | None

    def key(self) -> tuple:
        r = self.resource
        return (r.account, r.region, r.service, r.resource_id, self.rule, self.window_end.isoformat())


def evaluate(
    values: Iterable[Record],
    window_end: datetime.date,
    policy: Policy = DEFAULT_POLICY,
    instance_types: Mapping[Resource, str] | None = None,
) -> list[Finding]:
    """The findings of the window ending on window_end (inclusive). A day counts for a rule when every condition
    has its record that day and holds; a missing record is no evidence either way."""
    by_resource: dict[Resource, dict[datetime.date, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    teams: dict[Resource, str] = {}
    for v in values:
        by_resource[v.resource][v.day][f"{v.metric}.{v.statistic}"] = v.value
        teams[v.resource] = v.team
    types = instance_types or {}
    found = []
    for resource in sorted(by_resource):
        days = by_resource[resource]
        for day_values in days.values():
            parts = [day_values.get(f"{p}.sum") for p in NETWORK_PARTS]
            if None not in parts:
                day_values[f"{NETWORK}.sum"] = math.fsum(parts)
        for rule in policy.rules_of(teams[resource]):
            if not rule.enabled or rule.service != resource.service:
                continue
            first = window_end - datetime.timedelta(days=rule.days - 1)
            evidence = []
            for day in sorted(d for d in days if first <= d <= window_end):
                got = [(c.label, days[day].get(c.label)) for c in rule.conditions]
                if all(v is not None and c.holds(v) for c, (_, v) in zip(rule.conditions, got, strict=True)):
                    evidence.append((day.isoformat(), tuple((label, round(v, 6)) for label, v in got)))
            if len(evidence) >= rule.min_days:
                kind = types.get(resource, "")
                saving = policy.prices.monthly(resource.service, kind) if rule.stops else None
                found.append(Finding(resource, teams[resource], rule.name, window_end, rule.days, len(evidence),
                                     tuple(evidence), kind, saving))  # fmt: skip
    return found


# The policy file (findings.yml) and the price table (prices.yml): a hostile author assumed, as everywhere.


def _condition(m: _Map, service: str, default: Condition) -> Condition:
    statistic = m.string("statistic", default.statistic)
    unit = BYTES if default.metric == NETWORK else next(x.unit for x in METRICS if x.service == service
                                                        and x.name == default.metric)  # fmt: skip
    allowed = ("sum", "max") if unit == BYTES else ("avg", "max")
    if statistic not in allowed:
        raise m.error("statistic", f"must be one of {', '.join(allowed)} for {default.metric}")
    comparison = m.string("comparison", default.comparison)
    if comparison not in COMPARISONS:
        raise m.error("comparison", f"must be one of {', '.join(COMPARISONS)}")
    threshold = m.number("threshold", default.threshold, 0, 1e15)
    m.done()
    return Condition(default.metric, statistic, comparison, threshold)


def _rule(m: _Map, default: Rule) -> Rule:
    days = m.integer("days", default.days, 1, MAX_WINDOW)
    min_days = m.integer("min_days", min(default.min_days, days), 1, days)
    enabled = m.boolean("enabled", default.enabled)
    given = m.sub("conditions")
    conditions = []
    for condition in default.conditions:
        if given.has(condition.metric):
            conditions.append(_condition(given.sub(condition.metric), default.service, condition))
        else:
            conditions.append(condition)
    for key in given.data:
        if key not in given.used:
            raise given.error(str(key), f"is not a condition of {default.name}: "
                                        f"{', '.join(c.metric for c in default.conditions)}")  # fmt: skip
    m.done()
    return replace(default, days=days, min_days=min_days, enabled=enabled, conditions=tuple(conditions))


def _rules(m: _Map, base: Mapping[str, Rule]) -> dict[str, Rule]:
    rules = {}
    for name in m.data:
        if name not in base:
            raise m.error(str(name), f"is not a rule: {', '.join(base)}")
        rules[name] = _rule(m.sub(name), base[name])
    return rules


def _teams(m: _Map) -> list[str]:
    """The keys of a mapping by team, each a team name (the team tag's grammar)."""
    for team in m.data:
        if not isinstance(team, str) or not TEAM.fullmatch(team):
            raise m.error(str(team), "is not a team name: lowercase letters, digits and . _ -, at most 63")
    return list(m.data)


def parse_policy(data: Any, path: str, prices: Prices) -> Policy:
    top = _Map(path, "", data)
    rules = dict(DEFAULT_RULES) | _rules(top.sub("rules"), DEFAULT_RULES)
    teams_map, budgets_map = top.sub("teams"), top.sub("budgets")
    teams = {team: _rules(teams_map.sub(team), rules) for team in _teams(teams_map)}
    budgets = {team: budgets_map.number(team, 0, 0, 1e12) for team in _teams(budgets_map)}
    top.done()
    return Policy(rules, teams, prices, budgets)


def parse_prices(data: Any, path: str) -> Prices:
    top = _Map(path, "", data)
    currency = top.string("currency", "USD")
    if not re.fullmatch(r"[A-Z]{3}", currency):
        raise top.error("currency", "must be an ISO 4217 code such as USD")
    hourly = {}
    for service in ("ec2", "rds"):
        table = top.sub(service)
        for kind in table.data:
            if not isinstance(kind, str) or not INSTANCE_TYPE.fullmatch(kind):
                raise table.error(str(kind), "is not an instance type or class (lowercase letters, digits, . and -)")
            hourly[(service, kind)] = table.number(kind, 0, 0, 1e6)
    top.done()
    return Prices(currency, hourly)


def load_policy(policy_path: str, prices_path: str) -> Policy:
    prices = parse_prices(read_yaml(prices_path), prices_path) if prices_path else Prices()
    if not policy_path:
        return Policy(DEFAULT_RULES, {}, prices)
    return parse_policy(read_yaml(policy_path), policy_path, prices)
