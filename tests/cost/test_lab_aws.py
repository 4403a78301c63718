"""The lab's seeded AWS account (scripts/lab_aws.py): the resource table, deterministic history with the documented
shapes and faults, a real moto server seeded (twice), and the history backfilled with promtool and read back from
a real Prometheus. The expectations are written out by hand from the module's docstring."""

import filecmp
import json
import math
import pathlib
import re
import statistics
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import boto3
import lab_aws
import pytest
import requests

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "lab_aws.py"
NOW = datetime(2026, 3, 10, 9, 17, 42, tzinfo=UTC)  # aligned: 09:15; history 2026-02-24T08:20..2026-03-10T08:15
MIDNIGHT = int(datetime(2026, 3, 10, tzinfo=UTC).timestamp())  # day 0 starts here
BY_KEY = {r.key: r for r in lab_aws.RESOURCES}
FAMILY = {(m.service, m.short): m.series for m in lab_aws.METRICS}
CLEAN_SERIES = 14 * 288


def day_range(day: int, hours: tuple[int, ...] | None = None) -> list[int]:
    """The timestamps of a day (days before NOW's date) or of some of its UTC hours."""
    start = MIDNIGHT - day * 86400
    return [t for t in range(start, start + 86400, 300) if hours is None or (t - start) // 3600 in hours]


def on_day(samples: list[tuple[int, float]], day: int) -> list[tuple[int, float]]:
    wanted = set(day_range(day))
    return [(t, v) for t, v in samples if t in wanted]


def parse(path: pathlib.Path) -> tuple[dict, dict, list[str]]:
    """The file's samples by (family, key), each series' labels by (family, key), and the families in order."""
    samples: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    labels: dict[tuple[str, str], dict[str, str]] = {}
    heads: dict[str, tuple[str, str]] = {}
    families = []
    id_to_key = {r.id: r.key for r in lab_aws.RESOURCES}
    with path.open() as f:
        for line in f:
            if line.startswith("#"):
                families.append(line.rstrip("\n"))
                continue
            head, value, ts = line.rsplit(" ", 2)
            if head not in heads:
                family, text = head.split("{", 1)
                parsed = dict(re.findall(r'(\w+)="([^"]*)"', text))
                key = parsed.get("tag_lab_key") or id_to_key[parsed[next(k for k in parsed if k.startswith("dim"))]]
                heads[head] = (family, key)
                labels[heads[head]] = parsed
            samples[heads[head]].append((int(ts), float(value)))
    return samples, labels, families


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> lab_aws.History:
    return lab_aws.openmetrics(tmp_path_factory.mktemp("history") / "history.om", NOW)


@pytest.fixture(scope="module")
def parsed(history):
    return parse(history.path)


def metric_samples(parsed, key: str, short: str) -> list[tuple[int, float]]:
    return parsed[0][(FAMILY[BY_KEY[key].service, short], key)]


def test_the_table_holds_60_ec2_and_10_rds_instances_of_four_teams_in_two_regions():
    ec2 = [r for r in lab_aws.RESOURCES if r.service == "ec2"]
    rds = [r for r in lab_aws.RESOURCES if r.service == "rds"]
    assert (len(ec2), len(rds)) == (60, 10)
    assert sum(r.region == "us-east-1" for r in ec2) == 32
    assert sum(r.region == "us-east-1" for r in rds) == 6
    assert {r.region for r in lab_aws.RESOURCES} == {"us-east-1", "eu-central-1"}
    assert {r.tags.get("team") for r in lab_aws.RESOURCES} == {"payments", "search", "data", "web", None}
    no_team = {r.key for r in lab_aws.RESOURCES if "team" not in r.tags}
    assert no_team == {"ec2-use1-07", "ec2-use1-22", "ec2-euc1-11", "ec2-euc1-25", "rds-euc1-3"}
    owners = [r.tags["owner"] for r in lab_aws.RESOURCES if "owner" in r.tags]
    assert len(owners) == 69
    assert all(re.fullmatch(r"[a-z]+@example\.com", o) for o in owners)
    assert len({r.tags["Name"] for r in lab_aws.RESOURCES}) == 70
    assert all(r.tags["lab:key"] == r.key for r in lab_aws.RESOURCES)
    assert all(re.fullmatch(r"i-0[0-9a-f]{16}", r.id) for r in ec2)
    assert all(r.id == r.key for r in rds)
    assert len({r.id for r in lab_aws.RESOURCES}) == 70
    for shape in lab_aws.SHAPES:
        assert sum(r.shape == shape for r in ec2) == 15
    assert [r.shape for r in rds] == [
        "idle",
        "busy",
        "bursty",
        "daily",
        "idle",
        "busy",
        "idle",
        "busy",
        "bursty",
        "daily",
    ]
    assert BY_KEY["ec2-use1-01"].faults == (lab_aws.Fault("gap", None, 2, (10, 11, 12)),)
    assert set(lab_aws.FAULTS) <= set(BY_KEY)
    for resource in lab_aws.RESOURCES:
        shorts = {m.short for m in resource.metrics}
        assert all(f.metric in shorts | {None} for f in resource.faults), resource.key


def test_the_table_is_the_seeds_and_the_ec2_ids_change_with_it():
    assert lab_aws.resources() == lab_aws.RESOURCES
    other = lab_aws.resources(seed=8)
    assert [r.id for r in other if r.service == "ec2"] != [r.id for r in lab_aws.RESOURCES if r.service == "ec2"]
    assert [r.tags for r in other] == [r.tags for r in lab_aws.RESOURCES]


def test_the_same_seed_and_now_write_the_same_bytes_and_another_seed_other_values(tmp_path):
    one = lab_aws.openmetrics(tmp_path / "one.om", NOW, days=2)
    two = lab_aws.openmetrics(tmp_path / "two.om", NOW + timedelta(minutes=2), days=2)  # the same 5 minutes
    other = lab_aws.openmetrics(tmp_path / "other.om", NOW, lab_aws.default_ids(), seed=8, days=2)
    assert one.path.read_bytes() == two.path.read_bytes()
    assert one.path.read_bytes() != other.path.read_bytes()
    assert (one.first, one.last) == (two.first, two.last) == (other.first, other.last)


@pytest.mark.parametrize("days", [1, 7])
def test_now_moved_by_whole_days_moves_the_timestamps_only(tmp_path, days):
    base = lab_aws.openmetrics(tmp_path / "base.om", NOW, days=3).path.read_text().splitlines()
    moved = lab_aws.openmetrics(tmp_path / "moved.om", NOW + timedelta(days=days), days=3).path.read_text()
    shift = days * 86400
    expected = [
        line if line.startswith("#") else f"{line.rsplit(' ', 1)[0]} {int(line.rsplit(' ', 1)[1]) + shift}"
        for line in base
    ]
    assert moved.splitlines() == expected


def test_a_later_now_the_same_day_keeps_the_values_already_given(tmp_path):
    later = NOW + timedelta(hours=5)
    for resource in (BY_KEY["ec2-use1-03"], BY_KEY["rds-use1-2"], BY_KEY["ec2-euc1-01"]):
        for metric in resource.metrics:
            first, last = lab_aws.history_window(NOW)
            before = lab_aws.series(resource, metric, first, last, NOW)
            after = dict(lab_aws.series(resource, metric, first, last, later))
            assert all(after[t] == v or (math.isnan(v) and math.isnan(after[t])) for t, v in before)


def test_the_history_is_openmetrics_for_promtool_14_days_ending_an_hour_before_now(history, parsed):
    samples, _, families = parsed
    assert history.first == int(datetime(2026, 2, 24, 8, 20, tzinfo=UTC).timestamp())
    assert history.last == int(datetime(2026, 3, 10, 8, 15, tzinfo=UTC).timestamp())
    assert (history.first, history.last) == lab_aws.history_window(NOW)
    expected_families = [m.series for m in lab_aws.METRICS] + ["aws_ec2_info", "aws_rds_info"]
    assert families == [f"# TYPE {name} gauge" for name in expected_families] + ["# EOF"]
    text = history.path.read_text()
    assert text.endswith("\n# EOF\n")
    # Samples are grouped by family (the file's order is the families' order) and time-ordered per series.
    order = [line.split("{", 1)[0] for line in text.splitlines() if not line.startswith("#")]
    assert [name for i, name in enumerate(order) if i == 0 or order[i - 1] != name] == expected_families
    for series in samples.values():
        times = [t for t, _ in series]
        assert times == sorted(set(times))
        assert all((t - history.first) % 300 == 0 and history.first <= t <= history.last for t in times)
    # 390 series of 4032 samples, less the gaps: 2,856 in the percent and count series, 1,424 in the network's (3 hours
    # of ec2-use1-01, 2 days of ec2-use1-02 and day 0's 100 samples of ec2-euc1-04, each twice).
    assert sum(map(len, samples.values())) == history.samples == 390 * 4032 - 2_856 - 1_424 == 1_568_200
    assert len(samples) == history.series == 390
    assert " nan " not in text and " NaN " in text


def test_the_series_have_yaces_names_and_labels(parsed):
    _, labels, _ = parsed
    ec2 = BY_KEY["ec2-use1-00"]
    arn = f"arn:aws:ec2:us-east-1:123456789012:instance/{ec2.id}"
    common = {"account_id": "123456789012", "region": "us-east-1", "dimension_InstanceId": ec2.id}
    tags = {"tag_Name": "payments-api-1", "tag_owner": "alice@example.com", "tag_team": "payments"}
    assert labels["aws_ec2_cpuutilization_average", ec2.key] == {**common, "name": arn, **tags}
    assert labels["aws_cwagent_mem_used_percent_average", ec2.key] == {**common, "name": "global"}
    assert labels["aws_cwagent_disk_used_percent_average", ec2.key] == {**common, "name": "global"}
    assert labels["aws_ec2_info", ec2.key] == {
        "account_id": "123456789012",
        "region": "us-east-1",
        "name": arn,
        "tag_Name": "payments-api-1",
        "tag_owner": "alice@example.com",
        "tag_team": "payments",
        "tag_lab_key": "ec2-use1-00",
    }
    rds_arn = "arn:aws:rds:eu-central-1:123456789012:db:rds-euc1-3"
    rds_common = {"account_id": "123456789012", "region": "eu-central-1", "name": rds_arn}
    rds_tags = {"tag_Name": "legacy-db", "tag_owner": "alice@example.com"}  # no team tag, no tag_team label
    for family in ("aws_rds_cpuutilization_average", "aws_rds_database_connections_average"):
        assert labels[family, "rds-euc1-3"] == {
            **rds_common,
            **rds_tags,
            "dimension_DBInstanceIdentifier": "rds-euc1-3",
        }
    assert labels["aws_rds_info", "rds-euc1-3"] == {
        **rds_common,
        "tag_Name": "legacy-db",
        "tag_owner": "alice@example.com",
        "tag_lab_key": "rds-euc1-3",
    }
    assert "tag_team" not in labels["aws_ec2_info", "ec2-use1-07"]
    assert "tag_team" not in labels["aws_ec2_cpuutilization_average", "ec2-use1-07"]
    assert "tag_owner" not in labels["aws_ec2_info", "ec2-euc1-25"]
    assert "tag_owner" not in labels["aws_ec2_cpuutilization_average", "ec2-euc1-25"]


def test_every_resource_has_an_info_series_of_zeros_over_the_whole_history(parsed):
    samples, _, _ = parsed
    for resource in lab_aws.RESOURCES:
        series = samples[f"aws_{resource.service}_info", resource.key]
        assert len(series) == CLEAN_SERIES
        assert {v for _, v in series} == {0.0}


def clean_days(key: str, short: str) -> list[int]:
    """The whole days (1..13) no fault of the resource touches for that metric."""
    faulted = {f.day for f in BY_KEY[key].faults if f.metric in (None, short)}
    return [d for d in range(1, 14) if d not in faulted]


def keys_of(shape: str) -> list[str]:
    return [r.key for r in lab_aws.RESOURCES if r.shape == shape]


def test_idle_resources_idle(parsed):
    for key in keys_of("idle"):
        for day in clean_days(key, "cpu"):
            assert all(1 <= v <= 3 for _, v in on_day(metric_samples(parsed, key, "cpu"), day)), (key, day)
        if key.startswith("rds"):
            for day in clean_days(key, "connections"):
                assert {v for _, v in on_day(metric_samples(parsed, key, "connections"), day)} == {0.0}, key
        else:
            assert all(10 <= v <= 20 for _, v in metric_samples(parsed, key, "mem")), key


def test_busy_resources_are_busy(parsed):
    for key in keys_of("busy"):
        for day in clean_days(key, "cpu"):
            assert all(60 <= v <= 90 for _, v in on_day(metric_samples(parsed, key, "cpu"), day)), (key, day)
        if key.startswith("rds"):
            assert all(80 <= v <= 160 for _, v in on_day(metric_samples(parsed, key, "connections"), 1)), key


def test_bursty_resources_are_low_with_spikes_every_day(parsed):
    for key in keys_of("bursty"):
        for day in clean_days(key, "cpu"):
            values = [v for _, v in on_day(metric_samples(parsed, key, "cpu"), day)]
            assert len(values) == 288
            assert statistics.median(values) <= 8, (key, day)
            assert 1 <= sum(v >= 75 for v in values) <= 9, (key, day)  # 3 spikes of 1 to 3, which may overlap


def test_daily_resources_peak_in_the_afternoon_and_rest_at_night(parsed):
    for key in keys_of("daily"):
        for day in clean_days(key, "cpu"):
            series = dict(on_day(metric_samples(parsed, key, "cpu"), day))
            afternoon = statistics.mean(series[t] for t in day_range(day, (13, 14)))
            night = statistics.mean(series[t] for t in day_range(day, (1, 2)))
            assert afternoon > 55 and night < 10, (key, day, afternoon, night)


def test_disks_fill_slowly(parsed):
    for resource in (r for r in lab_aws.RESOURCES if r.service == "ec2" and r.key != "ec2-euc1-02"):
        values = [v for _, v in metric_samples(parsed, resource.key, "disk")]
        assert 20 <= values[0] < values[-1] <= 74, resource.key
        assert 2 < values[-1] - values[0] < 3.5, resource.key


# (key, metric, day, what, how many): what the docstring's fault table says, written out.
FAULT_EXPECTATIONS = [
    ("ec2-use1-01", "cpu", 2, "missing", 36),
    ("ec2-use1-01", "mem", 2, "missing", 36),
    ("ec2-use1-01", "disk", 2, "missing", 36),
    ("ec2-use1-02", "cpu", 4, "missing", 288),
    ("ec2-use1-02", "disk", 5, "missing", 288),
    ("ec2-use1-03", "cpu", 3, "nan", 12),
    ("ec2-use1-04", "cpu", 6, "negative", 24),
    ("ec2-use1-05", "mem", 7, "over_100", 12),
    ("ec2-use1-06", "mem", 9, "missing", 288),
    ("ec2-use1-06", "disk", 9, "missing", 288),
    ("ec2-use1-06", "cpu", 9, "missing", 0),
    ("rds-use1-1", "cpu", 2, "missing", 72),
    ("rds-use1-1", "connections", 2, "missing", 72),
    ("rds-use1-2", "connections", 3, "negative", 12),
    ("rds-euc1-1", "cpu", 5, "nan", 24),
    ("rds-euc1-2", "cpu", 8, "over_100", 12),
    # Day 0: 00:00..08:15 is in the history (100 samples), the rest is after it.
    ("ec2-euc1-01", "cpu", 0, "over_100", 100),
    ("ec2-euc1-02", "disk", 0, "negative", 100),
    ("ec2-euc1-03", "mem", 0, "nan", 100),
    ("ec2-euc1-04", "cpu", 0, "missing", 100),
    ("ec2-euc1-04", "mem", 1, "missing", 0),
]


def count(samples: list[tuple[int, float]], what: str, day: int) -> int:
    """How many of the day's samples are what: missing (of those inside the history), nan, negative, over_100."""
    first, last = lab_aws.history_window(NOW)
    values = [v for _, v in on_day(samples, day)]
    return {
        "missing": sum(first <= t <= last for t in day_range(day)) - len(values),
        "nan": sum(map(math.isnan, values)),
        "negative": sum(v < 0 for v in values),
        "over_100": sum(v > 100 for v in values),
    }[what]


@pytest.mark.parametrize("case", FAULT_EXPECTATIONS, ids=lambda case: "-".join(map(str, case)))
def test_each_fault_is_where_the_table_says(parsed, case):
    key, short, day, what, expected = case
    assert count(metric_samples(parsed, key, short), what, day) == expected


def hours_where(parsed, key: str, short: str, day: int, what) -> set[int]:
    """The UTC hours of the day with a sample of the resource's metric for which what(value) holds."""
    start = MIDNIGHT - day * 86400
    return {(t - start) // 3600 for t, v in on_day(metric_samples(parsed, key, short), day) if what(v)}


def test_the_gaps_and_bad_values_fall_in_the_documented_hours(parsed):
    assert hours_where(parsed, "ec2-use1-01", "cpu", 2, math.isfinite) == set(range(24)) - {10, 11, 12}
    assert hours_where(parsed, "rds-use1-1", "cpu", 2, math.isfinite) == set(range(6, 24))
    assert hours_where(parsed, "ec2-use1-03", "cpu", 3, math.isnan) == {14}
    assert hours_where(parsed, "ec2-use1-04", "cpu", 6, lambda v: v < 0) == {2, 3}
    assert hours_where(parsed, "ec2-use1-05", "mem", 7, lambda v: v > 100) == {20}
    assert hours_where(parsed, "rds-euc1-1", "cpu", 5, math.isnan) == {6, 7}


def test_no_other_series_has_a_gap_or_a_bad_value(parsed):
    samples, _, _ = parsed
    faulted = {(key, f.metric) for key, faults in lab_aws.FAULTS.items() for f in faults}
    for resource in lab_aws.RESOURCES:
        for metric in resource.metrics:
            if (resource.key, metric.short) in faulted or (resource.key, None) in faulted:
                continue
            values = [v for _, v in samples[metric.series, resource.key]]
            assert len(values) == CLEAN_SERIES, (resource.key, metric.short)
            top = {"Percent": 100, "Count": 1000, "Bytes": 1e8}[metric.unit]
            assert all(0 <= v <= top for v in values), (resource.key, metric.short)


# moto


def ec2_instances(endpoint: str, region: str) -> list[dict]:
    client = boto3.client(
        "ec2", region_name=region, endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x"
    )
    return [i for r in client.describe_instances()["Reservations"] for i in r["Instances"]]


def rds_instances(endpoint: str, region: str) -> list[dict]:
    client = boto3.client(
        "rds", region_name=region, endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x"
    )
    return client.describe_db_instances()["DBInstances"]


def live_points(endpoint: str, resource, short: str, ids, now) -> list[tuple[int, float, float]]:
    """(timestamp, average, sample count) of the resource's datapoints in the live window."""
    metric = next(m for m in resource.metrics if m.short == short)
    client = boto3.client(
        "cloudwatch",
        region_name=resource.region,
        endpoint_url=endpoint,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    first, last = lab_aws.live_window(now)
    out = []
    for stat in ("Average", "SampleCount"):
        reply = client.get_metric_data(
            MetricDataQueries=[
                {
                    "Id": "q",
                    "MetricStat": {
                        "Metric": {
                            "Namespace": metric.namespace,
                            "MetricName": metric.metric,
                            "Dimensions": [{"Name": metric.dimension, "Value": ids[resource.key]}],
                        },
                        "Period": 300,
                        "Stat": stat,
                    },
                }
            ],
            StartTime=datetime.fromtimestamp(first, UTC),
            EndTime=datetime.fromtimestamp(last + 300, UTC),
            ScanBy="TimestampAscending",
        )["MetricDataResults"][0]
        out.append(dict(zip((int(t.timestamp()) for t in reply["Timestamps"]), reply["Values"], strict=True)))
    return [(t, out[0][t], out[1][t]) for t in sorted(out[0])]


@pytest.fixture(scope="module")
def seeded(moto_server):
    """The clock's now, though at least 00:30 UTC: so the live window lies in day 0, where the live faults are."""
    now = datetime.now(UTC)
    now = max(now, now.replace(hour=0, minute=30, second=0, microsecond=0))
    return now, lab_aws.seed_moto(moto_server, now)


def test_seeding_moto_makes_the_instances_with_their_tags(moto_server, seeded):
    _, ids = seeded
    assert list(ids) == [r.key for r in lab_aws.RESOURCES]
    for region, ec2_count, rds_count in (("us-east-1", 32, 6), ("eu-central-1", 28, 4)):
        instances = ec2_instances(moto_server, region)
        assert len(instances) == ec2_count
        for instance in instances:
            tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
            resource = BY_KEY[tags["lab:key"]]
            assert tags == resource.tags
            assert ids[resource.key] == instance["InstanceId"]
            assert instance["InstanceType"] == resource.size
        dbs = rds_instances(moto_server, region)
        assert len(dbs) == rds_count
        for db in dbs:
            resource = BY_KEY[db["DBInstanceIdentifier"]]
            assert {t["Key"]: t["Value"] for t in db["TagList"]} == resource.tags
            assert db["DBInstanceArn"] == f"arn:aws:rds:{region}:123456789012:db:{resource.key}"
    tagging = boto3.client(
        "resourcegroupstaggingapi",
        region_name="eu-central-1",
        endpoint_url=moto_server,
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    arns = {
        m["ResourceARN"] for m in tagging.get_resources(ResourceTypeFilters=["ec2:instance"])["ResourceTagMappingList"]
    }
    assert f"arn:aws:ec2:eu-central-1:123456789012:instance/{ids['ec2-euc1-00']}" in arns


def test_seeding_moto_puts_the_last_half_hour_with_its_faults_but_no_nan(moto_server, seeded):
    now, ids = seeded
    first, last = lab_aws.live_window(now)
    assert last - first == 25 * 60
    times = list(range(first, last + 1, 300))
    busy = live_points(moto_server, BY_KEY["ec2-use1-01"], "cpu", ids, now)
    assert [t for t, _, _ in busy] == times
    assert all(60 <= v <= 90 and n == 1 for _, v, n in busy)
    assert [v for _, v, _ in live_points(moto_server, BY_KEY["rds-use1-0"], "connections", ids, now)] == [0.0] * 6
    assert all(v > 100 for _, v, _ in live_points(moto_server, BY_KEY["ec2-euc1-01"], "cpu", ids, now))
    assert all(v < 0 for _, v, _ in live_points(moto_server, BY_KEY["ec2-euc1-02"], "disk", ids, now))
    assert live_points(moto_server, BY_KEY["ec2-euc1-03"], "mem", ids, now) == []  # NaN: not put
    assert len(live_points(moto_server, BY_KEY["ec2-euc1-03"], "cpu", ids, now)) == 6
    for short in ("cpu", "mem", "disk"):
        assert live_points(moto_server, BY_KEY["ec2-euc1-04"], short, ids, now) == []  # stopped today


def test_a_second_seed_changes_nothing(moto_server, seeded):
    now, ids = seeded
    before = {
        r: len(ec2_instances(moto_server, r)) + len(rds_instances(moto_server, r)) for r in lab_aws.REGIONS.values()
    }
    again = subprocess.run(
        [sys.executable, str(SCRIPT), "seed", "--endpoint", moto_server, "--now", now.isoformat()],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr
    assert "0 instances created, 70 there already; 0 datapoints put" in again.stderr
    assert json.loads(again.stdout) == ids
    after = {
        r: len(ec2_instances(moto_server, r)) + len(rds_instances(moto_server, r)) for r in lab_aws.REGIONS.values()
    }
    assert after == before == {"us-east-1": 38, "eu-central-1": 32}
    assert all(n == 1 for _, _, n in live_points(moto_server, BY_KEY["ec2-use1-01"], "cpu", ids, now))


def test_history_from_a_seeded_account_names_its_ec2_ids(moto_server, seeded, tmp_path):
    _, ids = seeded
    out = tmp_path / "history.om"
    run = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "history",
            "--out",
            str(out),
            "--now",
            NOW.isoformat(),
            "--endpoint",
            moto_server,
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    text = out.read_text()
    moto_id = ids["ec2-use1-00"]
    assert moto_id != BY_KEY["ec2-use1-00"].id
    assert f'dimension_InstanceId="{moto_id}",name="arn:aws:ec2:us-east-1:123456789012:instance/{moto_id}"' in text
    assert BY_KEY["ec2-use1-00"].id not in text


# promtool and Prometheus


@pytest.fixture(scope="module")
def backfilled(history, tmp_path_factory):
    """The history written and backfilled by the CLI (another process: the same bytes as the history fixture's)."""
    directory = tmp_path_factory.mktemp("backfill")
    run = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "backfill",
            "--out",
            str(directory / "history.om"),
            "--data-dir",
            str(directory / "data"),
            "--now",
            NOW.isoformat(),
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    assert filecmp.cmp(directory / "history.om", history.path, shallow=False)
    return directory / "data", run.stdout


def test_promtool_makes_blocks_of_every_sample_and_analyzes_them(backfilled, history, tmp_path):
    data, printed = backfilled
    assert sum(line.startswith("block ") for line in printed.splitlines()) in (3, 4)
    again = lab_aws.backfill(history.path, tmp_path / "data")
    assert 3 <= len(again) <= 4
    assert sum(meta["stats"]["numSamples"] for meta in again) == history.samples
    assert again[0]["minTime"] == history.first * 1000
    assert again[-1]["maxTime"] == history.last * 1000 + 1  # older than a head started at NOW
    analyze = subprocess.run([lab_aws.promtool(), "tsdb", "analyze", str(data)], capture_output=True, text=True)
    assert analyze.returncode == 0, analyze.stderr
    assert "aws_ec2_cpuutilization_average" in analyze.stdout


@pytest.fixture(scope="module")
def prometheus(backfilled, start_prometheus):
    data, _ = backfilled
    return start_prometheus(data, "--storage.tsdb.retention.time=60d").url


def query(url: str, expr: str, at: int) -> list[dict]:
    reply = requests.get(f"{url}/api/v1/query", params={"query": expr, "time": at}, timeout=30)
    reply.raise_for_status()
    return reply.json()["data"]["result"]


def test_prometheus_counts_the_samples_the_generator_wrote(prometheus, history):
    at = MIDNIGHT - 86400 - 300  # day 2 23:55: [1d] is (day 3 23:55, day 2 23:55], day 2's 288 samples
    for key, short, expected in (
        ("ec2-use1-01", "cpu", 252),  # 3 hours missing
        ("ec2-use1-00", "cpu", 288),
        ("ec2-use1-06", "mem", 288),
        ("rds-use1-1", "connections", 216),  # 6 hours missing
    ):
        resource = BY_KEY[key]
        metric = next(m for m in resource.metrics if m.short == short)
        generated = lab_aws.series(resource, metric, history.first, history.last, NOW)
        assert sum(at - 86400 < t <= at for t, _ in generated) == expected
        selector = f'{metric.series}{{dimension_{metric.dimension}="{resource.id}"}}'
        result = query(prometheus, f"count_over_time({selector}[1d])", at)
        assert [float(r["value"][1]) for r in result] == [expected], (key, short)
    # A whole day missing, and NaN counted as the samples they are.
    ec2_02 = BY_KEY["ec2-use1-02"].id
    assert (
        query(
            prometheus,
            f'count_over_time(aws_ec2_cpuutilization_average{{dimension_InstanceId="{ec2_02}"}}[1d])',
            MIDNIGHT - 4 * 86400 - 300,
        )
        == []
    )
    ec2_03 = BY_KEY["ec2-use1-03"].id
    nan_day = query(
        prometheus,
        f'count_over_time(aws_ec2_cpuutilization_average{{dimension_InstanceId="{ec2_03}"}}[1d])',
        MIDNIGHT - 2 * 86400 - 300,
    )
    assert [r["value"][1] for r in nan_day] == ["288"]


def test_prometheus_has_the_info_series_and_their_tags(prometheus, history):
    at = history.last
    assert query(prometheus, "count(aws_ec2_info)", at)[0]["value"][1] == "60"
    assert query(prometheus, "count(aws_rds_info)", at)[0]["value"][1] == "10"
    no_team = query(prometheus, 'aws_ec2_info{tag_team=""}', at)
    assert sorted(r["metric"]["tag_lab_key"] for r in no_team) == [
        "ec2-euc1-11",
        "ec2-euc1-25",
        "ec2-use1-07",
        "ec2-use1-22",
    ]
    by_team = query(prometheus, "count by (tag_team) (aws_ec2_info)", at)
    assert {r["metric"].get("tag_team", ""): r["value"][1] for r in by_team} == {
        "payments": "16",
        "search": "14",
        "data": "14",
        "web": "12",
        "": "4",
    }
    cpu_by_team = query(prometheus, "count by (tag_team) (aws_ec2_cpuutilization_average)", at)
    assert {r["metric"].get("tag_team", ""): r["value"][1] for r in cpu_by_team} == {
        "payments": "16",
        "search": "13",  # ec2-euc1-04, stopped today, has no sample at the end of the history
        "data": "14",
        "web": "12",
        "": "4",
    }
    over_100 = f'aws_ec2_cpuutilization_average{{dimension_InstanceId="{BY_KEY["ec2-euc1-01"].id}"}}'
    over = query(prometheus, f"max_over_time({over_100}[1h])", at)
    assert float(over[0]["value"][1]) > 100
