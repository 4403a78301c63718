"""Verify the cost system as deployed (playbooks/cost.yml): YACE on the Prometheus host reads the lab's AWS (moto on
the controller, at the scenario network's gateway) and is scraped through Consul; the collector on node2, its timer's
unit started by hand, reads a backfilled history from that Prometheus and writes it into MariaDB on node1, once,
with its findings, which module infra.obs.cost_findings returns, and its reports, which its exporter serves.
The records' values for every shape and fault are tests/cost/test_collector.py's; here the deployed parts must
carry them end to end."""

import csv
import datetime
import io
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest
import requests

PROJECT = pathlib.Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
sys.path.insert(0, str(PROJECT / "scripts"))

import lab_aws  # noqa: E402
import yaml  # noqa: E402
from dashboards import queries_without_data_at  # noqa: E402
from labinfo import active_targets, container_ip, molecule_playbook, prometheus_query, wait_for  # noqa: E402

PROM = "infraobs-mol-probe-prom"
COLLECTOR = "infraobs-mol-probe-node2"
DATABASE = "infraobs-mol-probe-node1"
TIMEOUT = 240
# The history backfilled: 7 days, so the collector's 6 (host_vars) are whole in it from 01:00 UTC on; days 2 to 6
# before today are whole whatever the time.
HISTORY_DAYS = 7
WHOLE_DAYS = (2, 3, 4, 5, 6)


def on(container: str, command: str, check: bool = True) -> subprocess.CompletedProcess:
    command_line = ["podman", "exec", container, "sh", "-c", command]
    return subprocess.run(command_line, capture_output=True, text=True, check=check)


def sql(query: str) -> list[list[str]]:
    out = on(DATABASE, f'mysql -N -B infra_obs_cost -e "{query}"').stdout
    return [line.split("\t") for line in out.splitlines()]


@pytest.fixture(scope="module")
def prometheus():
    return f"http://{container_ip(PROM)}:9090"


@pytest.fixture(scope="module")
def lab_aws_ids():
    """The account's live datapoints put again now (those of prepare's seeding have aged out of YACE's window)."""
    network = json.loads(subprocess.run(["podman", "network", "inspect", "infraobs-mol-probe"], capture_output=True,
                                        text=True, check=True).stdout)  # fmt: skip
    gateway = next(s["gateway"] for s in network[0]["subnets"] if "." in s["gateway"])
    port = yaml.safe_load((PROJECT / "inventories/lab/group_vars/all/cost.yml").read_text())["lab_aws_port"]
    now = datetime.datetime.now(datetime.UTC)
    return now, lab_aws.seed_moto(f"http://{gateway}:{port}", now)


def test_yace_reads_the_account_and_is_scraped_through_consul(prometheus, lab_aws_ids):
    _, ids = lab_aws_ids

    def scraped():
        targets = [t for t in active_targets(prometheus) if t["labels"]["job"] == "yace" and t["health"] == "up"]
        return targets and prometheus_query(prometheus, "count(aws_ec2_info)")

    assert wait_for(scraped, TIMEOUT), [t for t in active_targets(prometheus) if t["labels"]["job"] == "yace"]
    target = next(t for t in active_targets(prometheus) if t["labels"]["job"] == "yace")
    assert (target["labels"]["region"], target["labels"]["az"]) == ("eu-central-1", "eu-central-1b")
    assert prometheus_query(prometheus, "count(aws_ec2_info)")[0]["value"][1] == "60"
    assert prometheus_query(prometheus, "count(aws_rds_info)")[0]["value"][1] == "10"

    # A read of YACE's before the fixture's datapoints (those of prepare's seeding aged out) exports NaN, "no
    # datapoint in the period": wait for a read that has them.
    def live_cpu():
        query = f'aws_ec2_cpuutilization_average{{dimension_InstanceId="{ids["ec2-use1-00"]}"}}'
        return [s for s in prometheus_query(prometheus, query) if not math.isnan(float(s["value"][1]))]

    series = wait_for(live_cpu, TIMEOUT)
    assert series, "no live CPU sample of ec2-use1-00 from YACE"
    labels = series[0]["metric"]
    # The AWS region YACE gives, kept apart from the placement label Consul's meta sets.
    placement = (labels["tag_team"], labels["exported_region"], labels["region"])
    assert placement == ("payments", "us-east-1", "eu-central-1")
    assert 1 <= float(series[0]["value"][1]) <= 3  # idle


@pytest.fixture(scope="module")
def history(prometheus, lab_aws_ids, tmp_path_factory):
    """The seed's history, as TSDB blocks made on the controller, copied into the Prometheus host's data directory;
    Prometheus loads new blocks within a minute."""
    now, ids = lab_aws_ids
    work = tmp_path_factory.mktemp("history")
    made = lab_aws.backfill(lab_aws.openmetrics(work / "history.om", now, ids, days=HISTORY_DAYS).path, work / "blocks")
    for meta in made:
        subprocess.run(["podman", "cp", str(work / "blocks" / meta["ulid"]), f"{PROM}:/var/lib/prometheus/"],
                       check=True)  # fmt: skip
    on(PROM, "chown -R prometheus:prometheus /var/lib/prometheus")
    day = lab_aws.midnight(now) - WHOLE_DAYS[-1] * lab_aws.DAY
    selector = f'aws_ec2_cpuutilization_average{{dimension_InstanceId="{ids["ec2-use1-00"]}"}}'

    def loaded():
        reply = prometheus_query(prometheus, f"count_over_time({selector}[1d] @ {day + lab_aws.DAY - 1})")
        return reply and reply[0]["value"][1] == "288"

    assert wait_for(loaded, TIMEOUT), f"Prometheus has not loaded the backfilled blocks: {made}"
    return now, ids


def collect() -> subprocess.CompletedProcess:
    return on(COLLECTOR, "systemctl start infra-obs-cost-collect.service", check=False)


@pytest.fixture(scope="module")
def collected(history):
    run = collect()
    assert run.returncode == 0, on(COLLECTOR, "journalctl -u infra-obs-cost-collect --no-pager -n 40").stdout
    return history


def day_before(now: datetime.datetime, days: int) -> str:
    return (now.date() - datetime.timedelta(days=days)).isoformat()


def test_the_collector_writes_the_history_into_mariadb(collected):
    now, ids = collected
    rows = sql(
        "SELECT day, team, samples, value FROM utilisation_daily"
        f" WHERE resource_id = '{ids['ec2-use1-00']}' AND metric = 'cpu' AND statistic = 'avg' ORDER BY day"
    )
    got = {day: (team, int(samples), float(value)) for day, team, samples, value in rows}
    for before in WHOLE_DAYS:
        team, samples, value = got[day_before(now, before)]
        assert (team, samples) == ("payments", 288)
        assert 1 <= value <= 3
    # The bursty instance: a low day with its spikes in the maximum.
    spikes = sql(
        "SELECT MAX(value) FROM utilisation_daily"
        f" WHERE resource_id = '{ids['ec2-use1-02']}' AND metric = 'cpu' AND statistic = 'max'"
        f" AND day = '{day_before(now, 3)}'"
    )
    assert float(spikes[0][0]) >= 75
    # An instance without a team tag is refused whole, with the reason.
    untagged = ids["ec2-use1-07"]
    reasons = {row[0] for row in sql(f"SELECT reason FROM utilisation_rejects WHERE resource_id = '{untagged}'")}
    assert "missing_team" in reasons


def test_a_second_run_writes_nothing(collected):
    tables = "utilisation_daily, utilisation_rejects, collection_batches, collected_days"
    before = sql(f"CHECKSUM TABLE {tables}")
    assert collect().returncode == 0
    assert sql(f"CHECKSUM TABLE {tables}") == before


def test_the_collector_health_is_scraped_through_consul(collected, prometheus):
    def succeeded():
        query = 'infra_obs_cost_last_run_success{job="infra-obs-cost"} == 1'
        return prometheus_query(prometheus, query)

    found = wait_for(succeeded, TIMEOUT)
    assert found and found[0]["metric"]["node"] == COLLECTOR, found
    # The last run was the rerun: once Prometheus has scraped the exporter after it, it wrote nothing.
    query = 'infra_obs_cost_last_run_records_written{job="infra-obs-cost"} == 0'
    assert wait_for(lambda: prometheus_query(prometheus, query), TIMEOUT), prometheus_query(
        prometheus, 'infra_obs_cost_last_run_records_written{job="infra-obs-cost"}'
    )


def test_the_database_password_stays_private(collected):
    modes = on(COLLECTOR, "stat -c '%a %U' /etc/infra-obs-cost/db-password /etc/infra-obs-cost/config.yml").stdout
    assert modes.split("\n")[:2] == ["600 infra-obs-cost", "600 infra-obs-cost"]
    journal = on(COLLECTOR, "journalctl --no-pager -u infra-obs-cost -u infra-obs-cost-collect").stdout
    assert "lab-collector" not in journal


def test_the_findings_module_returns_a_teams_findings_with_savings_in_check_mode_too(collected):
    now, ids = collected
    for mode in ((), ("--check",)):
        run = molecule_playbook("cost_findings.yml", "-e", "findings_team=payments", *mode)
        result = run.json["plays"][0]["tasks"][0]["hosts"][COLLECTOR]
        assert result["changed"] is False
        found = {(f["resource_id"], f["rule"]): f for f in result["findings"]}
        assert {f["team"] for f in result["findings"]} == {"payments"}
        # The idle instance: its type from the lab's AWS, its price from the lab's table (0.192 an hour).
        idle = found[(ids["ec2-use1-00"], "ec2_low_utilisation")]
        assert (idle["instance_type"], idle["monthly_saving"]) == ("m5.xlarge", 140.16)
        assert idle["window_end"] == day_before(now, 1) and idle["matched_days"] >= len(WHOLE_DAYS)
        assert all(values["cpu.avg"] <= 3 for _, values in idle["evidence"])
        # The bursty one moves more than 5 MB a day: not flagged.
        assert (ids["ec2-use1-02"], "ec2_low_utilisation") not in found
        assert result["count"] == len(found) and result["monthly_saving"] >= 140.16


def test_findings_per_team_are_metrics_and_every_dashboard_query_finds_data(collected, prometheus):
    def payments():
        query = 'infra_obs_cost_findings{job="infra-obs-cost", team="payments", rule="ec2_low_utilisation"}'
        return prometheus_query(prometheus, query)

    assert wait_for(payments, TIMEOUT), "no findings of payments in Prometheus"
    # The lab's policy gives payments a budget of 100 USD: its idle instances cost more (140.16 each).
    saving = prometheus_query(prometheus, 'infra_obs_cost_idle_monthly_saving{team="payments"}')
    budget = prometheus_query(prometheus, 'infra_obs_cost_team_monthly_budget{team="payments"}')
    assert float(saving[0]["value"][1]) >= 140.16 > float(budget[0]["value"][1]) == 100.0
    dashboard = PROJECT / "roles/cost_collector/files/dashboards/cost.json"
    urls = [prometheus, prometheus.replace(":9090", ":10904")]  # and through Thanos query
    assert wait_for(lambda: not queries_without_data_at(urls, dashboard, {}), TIMEOUT), queries_without_data_at(
        urls, dashboard, {}
    )


def test_the_reports_are_served_and_a_teams_csv_is_its_stored_findings(collected):
    """The deployed exporter serves the reports the collection wrote: the index names the teams, and payments' CSV
    holds what the database holds (the page itself is opened in Chromium by tests/cost/test_collector.py)."""
    base = f"http://{container_ip(COLLECTOR)}:9312/reports/"
    index = requests.get(base, timeout=30)
    assert index.status_code == 200 and 'data-team="payments"' in index.text, index.text[:500]
    page = requests.get(base + "payments.html", timeout=30).text
    rows = list(csv.DictReader(io.StringIO(requests.get(base + "payments.csv", timeout=30).text)))
    stored = sql("SELECT resource_id, rule, matched_days, monthly_saving FROM findings WHERE team = 'payments' "
                 "AND window_end = (SELECT MAX(window_end) FROM findings)")  # fmt: skip
    assert rows and sorted((r["resource_id"], r["rule"], r["matched_days"]) for r in rows) == sorted(
        (resource, rule, matched) for resource, rule, matched, _ in stored
    )
    assert f'id="total-findings">{len(rows)}<' in page
    assert all(f'data-resource-id="{r["resource_id"]}" data-rule="{r["rule"]}"' in page for r in rows)
