"""Cost collector benchmark: 10,000 resources x 14 days x 4 metrics of 5-minute samples through validation into a
real MariaDB (as PolarDB) and SQLite, a first run and a rerun that must write nothing; and the CloudWatch API calls
of the direct mode against one call per metric (GetMetricStatistics), counted against a real moto server.

Prints a Markdown report on stdout (progress on stderr). Exits 1 when a run writes the wrong number of rows or a
rerun writes anything; a missed goal is reported as "goal missed". See README.md in this directory.
"""

from __future__ import annotations

import argparse
import datetime
import math
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "cost/src"), str(ROOT / "probe/src"), str(ROOT / "scripts")]

import boto3  # noqa: E402
from infra_obs_cost import report  # noqa: E402
from infra_obs_cost.findings import DEFAULT_POLICY, evaluate  # noqa: E402
from infra_obs_cost.model import COUNT, METRICS, PERCENT, Metric, Observation, Policy, Resource, daily  # noqa: E402
from infra_obs_cost.sources import GET_METRIC_DATA_LIMIT, CloudWatchSource  # noqa: E402
from infra_obs_cost.store import Database, Store  # noqa: E402
from lab_mariadb import running  # noqa: E402
from lab_servers import free_port  # noqa: E402

ACCOUNT = "123456789012"
LAST_DAY = datetime.date(2026, 11, 30)
SAMPLES = 288
# Four metrics per resource, as the goal is stated: EC2's three percentages (CPU, memory, disk) and a count. What they
# are called does not change the work (validation by unit, aggregation, rows), so the fourth is a bench-only count.
BENCH_METRICS = (
    *(m for m in METRICS if m.service == "ec2" and m.unit == PERCENT),
    Metric("requests", "ec2", COUNT, "", "", ""),
)
GOAL_FIRST, GOAL_RERUN = 60.0, 30.0


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def fleet(resources: int) -> tuple[list[Resource], dict[Resource, str | None]]:
    rng = random.Random(17)
    fleet = [Resource(ACCOUNT, ("us-east-1", "eu-central-1")[i % 2], "ec2", f"i-{i:017x}") for i in range(resources)]
    teams = {r: None if i % 50 == 0 else rng.choice(("payments", "search", "data", "web")) for i, r in enumerate(fleet)}
    return fleet, teams


def observations(day: datetime.date, fleet: list[Resource]) -> list[Observation]:
    """A day of samples per resource and metric: a level per resource with noise, and one bad value in a thousand."""
    rng = random.Random(day.toordinal())
    out = []
    for i, r in enumerate(fleet):
        for m in BENCH_METRICS:
            level = (i * 7 % 90) + 1
            values = [level + rng.random() for _ in range(SAMPLES)]
            if i % 1000 == 1:
                values[5] = math.nan
            out.append(Observation(r, m, tuple(values)))
    return out


def run_days(store: Store, days: list[datetime.date], fleet, teams) -> tuple[float, int, int]:
    """Validate and write every day; the seconds that took (not making the samples: a day's are made, deterministic,
    just before they are timed, so 14 days never sit in memory at once), the records produced and the rows written."""
    spent = 0.0
    produced = written = 0
    for day in days:
        inputs = observations(day, fleet)
        start = time.perf_counter()
        records, rejects = daily(day, inputs, teams, Policy(144))
        result = store.write_day("bench", day, records, rejects)
        spent += time.perf_counter() - start
        produced += len(records)
        written += result.written
    return spent, produced, written


def store_bench(name: str, database: Database, days, fleet, teams) -> dict:
    with Store(database) as store:
        store.migrate()
        progress(f"{name}: first run")
        first, produced, written = run_days(store, days, fleet, teams)
        progress(f"{name}: rerun")
        rerun, _, rewritten = run_days(store, days, fleet, teams)
        held = len(store.rows("utilisation_daily"))
        progress(f"{name}: findings and reports, twice")
        with tempfile.TemporaryDirectory(prefix="infra-obs-bench-reports-") as reports:
            found, findings_first, _, reports_first, files, _ = find(store, days, reports)
            _, findings_rerun, refound, reports_rerun, _, rewritten_files = find(store, days, reports)
    return {"name": name, "first": first, "rerun": rerun, "produced": produced, "written": written,
            "rewritten": rewritten, "held": held, "findings": found, "findings_first": findings_first,
            "findings_rerun": findings_rerun, "findings_rewritten": refound, "reports_first": reports_first,
            "reports_rerun": reports_rerun, "report_files": files, "reports_rewritten": rewritten_files}  # fmt: skip


def find(store: Store, days: list[datetime.date], reports: str) -> tuple[int, float, int, float, int, int]:
    """The findings of the window as the collector makes them after a run (read the records back, evaluate, store),
    then the reports (read the findings back, build every team's page and CSV, write those that changed): how many
    findings, the seconds, the rows the write changed; the reports' seconds, files, and files written."""
    start = time.perf_counter()
    values = store.daily_values(days[0], days[-1])
    found = evaluate(values, days[-1])
    result = store.write_findings(days[-1], found)
    found_in = time.perf_counter() - start
    start = time.perf_counter()
    files = report.build(values, store.findings(window_end=days[-1]), days[-1], DEFAULT_POLICY)
    written = report.publish(reports, files)
    return (len(found), found_in, result.added + result.changed + result.removed, time.perf_counter() - start,
            len(files), written)  # fmt: skip


def cloudwatch_calls(resources: int) -> tuple[int, int, int]:
    """GetMetricData calls of the direct mode for one day of `resources` EC2 instances (5 metrics each) against a
    real moto server, the tagging API's pages, and the one-call-per-metric count (GetMetricStatistics per resource
    and metric)."""
    port = free_port()
    moto = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        kw = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "bench",
              "aws_secret_access_key": "bench"}  # fmt: skip
        ec2 = boto3.client("ec2", **kw)
        image = ec2.describe_images()["Images"][0]["ImageId"]
        for at in range(0, resources, 500):
            ec2.run_instances(
                ImageId=image, MinCount=min(500, resources - at), MaxCount=min(500, resources - at),
                TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "team", "Value": "payments"}]}],
            )  # fmt: skip
        import os  # noqa: PLC0415

        os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
        source = CloudWatchSource(["us-east-1"], endpoint)
        fetched = source.fetch(LAST_DAY)
        per_metric = sum(1 for r in fetched.teams for m in METRICS if m.service == r.service)
        return source.api_calls["GetMetricData"], source.api_calls["GetResources"], per_metric
    finally:
        moto.terminate()
        moto.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resources", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--cloudwatch-resources", type=int, default=2_000)
    args = parser.parse_args()
    fleet_, teams = fleet(args.resources)
    days = [LAST_DAY - datetime.timedelta(days=n) for n in range(args.days - 1, -1, -1)]
    expected = sum(1 for r in fleet_ if teams[r]) * len(BENCH_METRICS) * 2 * args.days
    results = []
    with tempfile.TemporaryDirectory(prefix="infra-obs-bench-cost-") as tmp:
        with running(Path(tmp) / "mariadb") as server:
            results.append(store_bench("MariaDB 10.11", server.database(), days, fleet_, teams))
        results.append(store_bench("SQLite", Database("sqlite", path=f"{tmp}/cost.db"), days, fleet_, teams))
    progress(f"CloudWatch direct mode: {args.cloudwatch_resources:,} instances in moto")
    calls, tagging, per_metric = cloudwatch_calls(args.cloudwatch_resources)

    wrong = False
    print(f"## Cost collector: {args.resources:,} resources x {args.days} days x {len(BENCH_METRICS)} metrics\n")
    total = args.resources * args.days * len(BENCH_METRICS) * SAMPLES
    print(f"{SAMPLES} samples per resource, metric and day ({total:,}"
          f" in all), validated and aggregated into {expected:,} records (average and maximum; 2% of the resources"
          " have no team and are rejected).\n")  # fmt: skip
    print("| database | first run | goal | records/s | rerun | goal | rows written by the rerun |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        first_ok = "" if r["first"] <= GOAL_FIRST else " (goal missed)"
        rerun_ok = "" if r["rerun"] <= GOAL_RERUN else " (goal missed)"
        print(f"| {r['name']} | {r['first']:.1f} s{first_ok} | {GOAL_FIRST:.0f} s | {r['written'] / r['first']:,.0f} |"
              f" {r['rerun']:.1f} s{rerun_ok} | {GOAL_RERUN:.0f} s | {r['rewritten']} |")  # fmt: skip
        if r["written"] != expected or r["held"] != expected or r["rewritten"] != 0 or r["findings_rewritten"] != 0 \
                or r["reports_rewritten"] != 0:  # fmt: skip
            wrong = True
            print(f"\nWRONG: {r['name']} wrote {r['written']:,} and holds {r['held']:,} of {expected:,} records;"
                  f" the rerun wrote {r['rewritten']}, its findings {r['findings_rewritten']} rows, its reports"
                  f" {r['reports_rewritten']} files")  # fmt: skip
    print("\n| database | findings of the 14-day window (read, evaluate, store) | findings | again, writing nothing |"
          " reports (build, write) | files | again, writing none |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['findings_first']:.1f} s | {r['findings']:,} | {r['findings_rerun']:.1f} s |"
              f" {r['reports_first']:.1f} s | {r['report_files']} | {r['reports_rerun']:.1f} s |")  # fmt: skip
    ratio = per_metric / calls
    goal = "" if calls <= math.ceil(per_metric / GET_METRIC_DATA_LIMIT) else " (goal missed)"
    print(f"\n## CloudWatch API calls for one day of {args.cloudwatch_resources:,} instances (5 metrics each)\n")
    print("| direct mode: GetMetricData calls (500 queries each) | one call per metric | ratio | tagging API pages |")
    print("|---|---|---|---|")
    print(f"| {calls} | {per_metric:,} | 1/{ratio:.0f}{goal} (YACE's: 1/500) | {tagging} (YACE's too) |")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
