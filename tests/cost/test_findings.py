"""Findings on the lab's seeded account: the records of 14 whole days of named resources (the seed's samples through
the collector's own validation), evaluated by the default rules and by per-team overrides; and stored, so that a
rerun changes nothing. Expectations are written from the resource table (scripts/lab_aws.py's shapes)."""

import datetime

import lab_aws
import pytest
from infra_obs_cost.collect import team_summary
from infra_obs_cost.findings import DEFAULT_POLICY, evaluate, load_policy, parse_policy, parse_prices
from infra_obs_cost.model import METRICS, Observation, Policy, Record, Resource, daily
from infra_obs_cost.store import Store
from infra_obs_probe.config import ConfigError

NOW = datetime.datetime(2026, 3, 10, 9, 30, tzinfo=datetime.UTC)
WINDOW_END = NOW.date() - datetime.timedelta(days=1)  # the collector's last day: yesterday
NAMED = ["ec2-use1-00", "ec2-use1-01", "ec2-use1-02", "ec2-use1-03", "ec2-use1-04", "ec2-euc1-04", "ec2-use1-07",
         "rds-use1-0", "rds-use1-1", "rds-use1-2", "rds-use1-4"]  # fmt: skip
BY_KEY = {r.key: r for r in lab_aws.RESOURCES}
IDS = lab_aws.default_ids()
PRICES = {"ec2": {"m5.xlarge": 0.192, "t3.large": 0.0832}, "rds": {"db.r5.xlarge": 0.5}}


def resource(key: str) -> Resource:
    r = BY_KEY[key]
    return Resource(lab_aws.ACCOUNT_ID, r.region, r.service, IDS[key])


@pytest.fixture(scope="module")
def values() -> list[Record]:
    """Days 1 to 14 before NOW of the named resources, as the collector would have stored them."""
    model_metric = {m.series: m for m in METRICS}
    teams = {resource(k): BY_KEY[k].tags.get("team") for k in NAMED}
    found = []
    for n in range(1, 15):
        day = NOW.date() - datetime.timedelta(days=n)
        start = lab_aws.midnight(NOW) - n * lab_aws.DAY
        observations = [
            Observation(resource(k), model_metric[m.series],
                        tuple(v for _, v in lab_aws.series(BY_KEY[k], m, start, start + lab_aws.DAY - 1, NOW)))
            for k in NAMED
            for m in BY_KEY[k].metrics
        ]  # fmt: skip
        records, _ = daily(day, observations, teams, Policy(144))
        found += records
    return found


def keyed(findings) -> dict[tuple[str, str], object]:
    keys = {IDS[k]: k for k in NAMED}
    return {(keys[f.resource.resource_id], f.rule): f for f in findings}


TYPES = {resource(k): BY_KEY[k].size for k in NAMED}


@pytest.fixture(scope="module")
def default_findings(values):
    policy = parse_policy({}, "findings.yml", parse_prices(PRICES, "prices.yml"))
    return keyed(evaluate(values, WINDOW_END, policy, TYPES))


def test_the_idle_instances_and_the_idle_database_are_found_and_nothing_else(default_findings):
    assert set(default_findings) == {
        ("ec2-use1-00", "ec2_low_disk"),  # its disk, the seed's lowest level, rising: at most 25% on 12 of the 14 days
        ("ec2-use1-00", "ec2_low_memory"),
        ("ec2-use1-00", "ec2_low_utilisation"),
        ("ec2-use1-04", "ec2_low_memory"),
        ("ec2-use1-04", "ec2_low_utilisation"),
        ("ec2-euc1-04", "ec2_low_memory"),
        ("ec2-euc1-04", "ec2_low_utilisation"),
        ("rds-use1-0", "rds_idle"),
        ("rds-use1-4", "rds_idle"),
    }


def test_a_low_utilisation_finding_shows_each_day_that_triggered_it_and_the_saving(default_findings, values):
    found = default_findings[("ec2-use1-00", "ec2_low_utilisation")]
    assert (found.team, found.days, found.matched_days, found.instance_type) == ("payments", 14, 14, "m5.xlarge")
    assert found.monthly_saving == round(0.192 * 730, 2) == 140.16
    mine = {(v.metric, v.statistic, v.day.isoformat()): v.value for v in values if v.resource == found.resource}
    assert [day for day, _ in found.evidence] == sorted({d for _, _, d in mine})
    for day, measured in found.evidence:
        cpu, network = dict(measured)["cpu.avg"], dict(measured)["network.sum"]
        assert cpu == mine[("cpu", "avg", day)] and 1 <= cpu <= 3
        assert network == pytest.approx(mine[("network_in", "sum", day)] + mine[("network_out", "sum", day)])
        assert network <= 5_000_000


def test_the_bursty_instance_is_not_flagged_its_network_is_over_5_mb(default_findings, values):
    bursty = resource("ec2-use1-02")
    low_cpu_days = [v.day for v in values if v.resource == bursty and (v.metric, v.statistic) == ("cpu", "avg")
                    and v.value <= 10]  # fmt: skip
    assert len(low_cpu_days) >= 4  # CPU alone would flag it
    assert not [key for key in default_findings if key[0] == "ec2-use1-02"]


def test_the_idle_database_has_no_connection_on_seven_days_and_no_type_no_saving(default_findings):
    found = default_findings[("rds-use1-0", "rds_idle")]
    assert (found.days, found.matched_days, found.instance_type, found.monthly_saving) == (7, 7, "db.r5.xlarge", 365.0)
    assert [dict(v) for _, v in found.evidence] == [{"connections.max": 0.0}] * 7
    assert default_findings[("ec2-use1-00", "ec2_low_memory")].monthly_saving is None  # a resize: no estimate


def test_an_untagged_instance_has_no_records_so_no_findings(values, default_findings):
    assert not [v for v in values if v.resource == resource("ec2-use1-07")]
    assert not [key for key in default_findings if key[0] == "ec2-use1-07"]


def day_values(resource_: Resource, cpu_by_day: list[float]) -> list[Record]:
    """A resource's CPU averages on the window's last days (oldest first) and 1 MB of network a day."""
    out = []
    for n, cpu in enumerate(reversed(cpu_by_day)):
        day = WINDOW_END - datetime.timedelta(days=n)
        out += [Record(resource_, "web", "cpu", "avg", day, cpu, 288),
                Record(resource_, "web", "network_in", "sum", day, 600_000.0, 288),
                Record(resource_, "web", "network_out", "sum", day, 400_000.0, 288)]  # fmt: skip
    return out


@pytest.mark.parametrize(("low_days", "flagged"), [(4, True), (3, False)])
def test_four_low_days_of_fourteen_flag_an_instance_three_do_not(low_days, flagged):
    machine = Resource(lab_aws.ACCOUNT_ID, "us-east-1", "ec2", "i-0123456789abcdef0")
    cpu = [50.0] * (14 - low_days) + [5.0] * low_days
    found = keyed_rules(evaluate(day_values(machine, cpu), WINDOW_END))
    assert ("ec2_low_utilisation" in found) is flagged
    # A low day just outside the window does not count.
    older = day_values(machine, [5.0] + [50.0] * 11 + [5.0] * 3)
    assert "ec2_low_utilisation" not in keyed_rules(evaluate(older, WINDOW_END))


def keyed_rules(findings) -> set[str]:
    return {f.rule for f in findings}


def test_overrides_change_exactly_the_findings_of_their_team(values, default_findings):
    policy = parse_policy(
        {
            # payments: CPU must be under 1.5% (its idle instances run at 1 to 3): no low-utilisation finding.
            "teams": {
                "payments": {"ec2_low_utilisation": {"conditions": {"cpu": {"threshold": 1.5, "comparison": "<"}}}},
                # search keeps its own memory rule off; busy and bursty databases stay unflagged
                "search": {"ec2_low_memory": {"enabled": False}},
            },
        },
        "findings.yml",
        parse_prices(PRICES, "prices.yml"),
    )
    changed = keyed(evaluate(values, WINDOW_END, policy, TYPES))
    removed = {key for key in default_findings if key not in changed}
    added = {key for key in changed if key not in default_findings}
    # ec2-use1-00 and -04 are payments' and search's; ec2-euc1-04 is search's.
    assert BY_KEY["ec2-use1-00"].tags["team"] == "payments" and BY_KEY["ec2-use1-04"].tags["team"] == "search"
    assert removed == {("ec2-use1-00", "ec2_low_utilisation"), ("ec2-use1-04", "ec2_low_memory"),
                       ("ec2-euc1-04", "ec2_low_memory")}  # fmt: skip
    assert added == set()
    for key in changed:
        assert changed[key] == default_findings[key]


def test_a_longer_global_rule_and_a_lower_bar_for_one_team():
    policy = parse_policy(
        {"rules": {"rds_idle": {"days": 10, "min_days": 9}}, "teams": {"data": {"rds_idle": {"min_days": 2}}}},
        "findings.yml",
        parse_prices({}, "prices.yml"),
    )
    assert [(r.name, r.days, r.min_days) for r in policy.rules_of("web") if r.name == "rds_idle"] == [
        ("rds_idle", 10, 9)
    ]
    assert [(r.name, r.days, r.min_days) for r in policy.rules_of("data") if r.name == "rds_idle"] == [
        ("rds_idle", 10, 2)
    ]


def test_stored_findings_a_rerun_changes_nothing_and_an_override_replaces_the_window(values, database):
    policy = parse_policy({}, "findings.yml", parse_prices(PRICES, "prices.yml"))
    first = evaluate(values, WINDOW_END, policy, TYPES)
    with Store(database) as store:
        store.migrate()
        result = store.write_findings(WINDOW_END, first)
        assert (result.added, result.changed, result.removed) == (9, 0, 0)
        before = {t: store.rows(t) for t in ("findings", "findings_batches")}
        assert store.write_findings(WINDOW_END, evaluate(values, WINDOW_END, policy, TYPES)).batch_id is None
        assert {t: store.rows(t) for t in before} == before
        stricter = parse_policy({"rules": {"ec2_low_memory": {"enabled": False}}}, "findings.yml", policy.prices)
        result = store.write_findings(WINDOW_END, evaluate(values, WINDOW_END, stricter, TYPES))
        assert (result.added, result.changed, result.removed) == (0, 0, 3)
        shown = store.findings(team="payments")
        assert [(f["rule"], f["matched_days"], f["monthly_saving"]) for f in shown] == [
            ("ec2_low_disk", 12, None),
            ("ec2_low_utilisation", 14, 140.16),
            ("rds_idle", 7, 365.0),
            ("rds_idle", 7, 365.0),
        ]
        low = next(f for f in shown if f["rule"] == "ec2_low_utilisation")
        assert low["evidence"][0][1]["cpu.avg"] <= 3 and len(low["evidence"]) == 14


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"rules": {"ec2_idle": {}}}, "rules.ec2_idle", "is not a rule"),
        ({"rules": {"rds_idle": {"days": 0}}}, "rules.rds_idle.days", "between 1 and 62"),
        ({"rules": {"rds_idle": {"days": 5, "min_days": 6}}}, "rules.rds_idle.min_days", "between 1 and 5"),
        ({"rules": {"rds_idle": {"conditions": {"cpu": {"threshold": 1}}}}}, "rules.rds_idle.conditions.cpu",
         "not a condition"),
        ({"rules": {"ec2_low_utilisation": {"conditions": {"network": {"statistic": "avg"}}}}},
         "rules.ec2_low_utilisation.conditions.network.statistic", "sum, max"),
        ({"rules": {"ec2_low_memory": {"conditions": {"memory": {"comparison": "=~"}}}}},
         "rules.ec2_low_memory.conditions.memory.comparison", "must be one of"),
        ({"rules": {"ec2_low_memory": {"conditions": {"memory": {"threshold": "30; DROP"}}}}},
         "rules.ec2_low_memory.conditions.memory.threshold", "must be a number"),
        ({"rules": {"ec2_low_memory": {"conditions": {"memory": {"threshold": float("nan")}}}}},
         "rules.ec2_low_memory.conditions.memory.threshold", "must be >= 0"),
        ({"rules": {"ec2_low_memory": {"enabled": "yes"}}}, "rules.ec2_low_memory.enabled", "true or false"),
        ({"teams": {"Ops Team": {}}}, "teams.Ops Team", "is not a team name"),
        ({"teams": {"web": {"rds_idle": {"colour": 1}}}}, "teams.web.rds_idle.colour", "unknown key"),
        ({"team": {}}, "team", "unknown key"),
        ({"budgets": {"Ops Team": 100}}, "budgets.Ops Team", "is not a team name"),
        ({"budgets": {"web": -5}}, "budgets.web", "must be >= 0"),
        ({"budgets": {"web": "100 USD"}}, "budgets.web", "must be a number"),
        ({"budgets": {"web": "\uff11\uff10\uff10"}}, "budgets.web", "must be a number"),  # look-alike digits
        ({"budgets": {"{web}": 1}}, "budgets.{web}", "is not a team name"),
        ({"budgets": {"w" * 64: 1}}, "budgets." + "w" * 64, "is not a team name"),  # one too long
        ({"teams": {"web\nx": {}}}, "teams.web", "is not a team name"),
        ([], "(top level)", "must be a mapping"),
    ],
)  # fmt: skip
def test_a_hostile_policy_is_refused_naming_file_key_and_value(data, key, problem):
    with pytest.raises(ConfigError) as refused:
        parse_policy(data, "/etc/infra-obs-cost/findings.yml", DEFAULT_POLICY.prices)
    text = str(refused.value)
    assert "/etc/infra-obs-cost/findings.yml" in text and key in text and problem in text, text


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"ec2": {"m5.xlarge": -1}}, "ec2.m5.xlarge", "must be >= 0"),
        ({"ec2": {"m5.xlarge\nx": 1}}, "ec2.m5.xlarge", "is not an instance type"),
        ({"ec2": {"M5.XLARGE": 1}}, "ec2.M5.XLARGE", "is not an instance type"),
        ({"ec2": {"m5." + "x" * 30: 1}}, "ec2.m5.", "is not an instance type"),  # one over 32 characters
        ({"rds": {"db.r5;large": 1}}, "rds.db.r5;large", "is not an instance type"),
        ({"currency": "dollars"}, "currency", "ISO 4217"),
        ({"s3": {}}, "s3", "unknown key"),
    ],
)
def test_a_hostile_price_table_is_refused_naming_file_key_and_value(data, key, problem):
    with pytest.raises(ConfigError) as refused:
        parse_prices(data, "/etc/infra-obs-cost/prices.yml")
    text = str(refused.value)
    assert "/etc/infra-obs-cost/prices.yml" in text and key in text and problem in text, text


def test_policy_and_prices_files_load_with_yaml_refusals(tmp_path):
    policy, prices = tmp_path / "findings.yml", tmp_path / "prices.yml"
    policy.write_text("teams:\n  web:\n    rds_idle: {min_days: 3}\n")
    prices.write_text("ec2: {m5.large: 0.096}\nrds: {db.m5.large: 0.171}\n")
    loaded = load_policy(str(policy), str(prices))
    assert loaded.prices.monthly("rds", "db.m5.large") == round(0.171 * 730, 2)
    assert [r.min_days for r in loaded.rules_of("web") if r.name == "rds_idle"] == [3]
    policy.write_text("teams: &a\n  web: *a\n")
    with pytest.raises(ConfigError):
        load_policy(str(policy), str(prices))


def test_the_exporters_summary_per_team_counts_findings_new_ones_savings_and_utilisation(values):
    policy = parse_policy({"budgets": {"payments": 100}}, "findings.yml", parse_prices(PRICES, "prices.yml"))
    assert policy.budgets == {"payments": 100.0}
    found = evaluate(values, WINDOW_END, policy, TYPES)
    last_day = [v for v in values if v.day == WINDOW_END]
    first = team_summary(found, last_day, set())
    # payments: ec2-use1-00 (low utilisation, memory, disk), rds-use1-0 and rds-use1-4 idle.
    assert first["payments"]["findings"] == {"ec2_low_disk": 1, "ec2_low_memory": 1, "ec2_low_utilisation": 1,
                                             "rds_idle": 2}  # fmt: skip
    assert first["payments"]["saving"] == round(140.16 + 2 * 365.0, 2)
    assert first["payments"]["new"] == {}  # no window before to compare with
    assert 1 <= first["search"]["utilisation"]["cpu"] <= 90 and set(first["search"]["utilisation"]) <= {
        "cpu", "memory", "disk"}  # fmt: skip
    # The window before had everything but the idle database rds-use1-4: it is the one new finding.
    before = {f"{f.resource.resource_id}/{f.rule}" for f in found if f.resource != resource("rds-use1-4")}
    later = team_summary(found, last_day, before)
    assert later["payments"]["new"] == {"rds_idle": 1} and later["search"]["new"] == {}
