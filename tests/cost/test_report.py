"""The reports' parts on their own: the charts' numbers, the CSV, the directory written only where bytes change,
the markup escaped, and the exporter serving report names only. The whole chain, with the seeded account, MariaDB
and the page opened in Chromium, is in test_collector.py."""

import datetime
import os
import threading

import pytest
import requests
from infra_obs_cost import report
from infra_obs_cost.config import parse
from infra_obs_cost.findings import DEFAULT_POLICY, Prices, parse_policy
from infra_obs_cost.model import Record, Resource
from infra_obs_cost.report import ReportError, build, charts, findings_csv, publish
from infra_obs_cost.serve import _Server
from prometheus_client import CollectorRegistry

END = datetime.date(2026, 3, 14)
WEB = Resource("123456789012", "us-east-1", "ec2", "i-0123456789abcdef0")
API = Resource("123456789012", "us-east-1", "ec2", "i-0123456789abcdef1")


def finding(resource: Resource, team: str, saving: float | None) -> dict:
    return {"account_id": resource.account, "region": resource.region, "service": resource.service,
            "resource_id": resource.resource_id, "rule": "ec2_low_utilisation", "window_end": END.isoformat(),
            "team": team, "days": 14, "matched_days": 4, "instance_type": "m5.xlarge", "monthly_saving": saving,
            "evidence": [[END.isoformat(), {"cpu.avg": 2.5, "network.sum": 1000.0}]]}  # fmt: skip


def test_a_chart_shows_each_days_mean_lowest_and_highest_and_network_in_megabytes():
    days = [END - datetime.timedelta(days=1), END]
    values = [Record(WEB, "web", "cpu", "avg", END, 10.0, 288), Record(API, "web", "cpu", "avg", END, 30.0, 288),
              Record(WEB, "web", "network_in", "sum", END, 3_000_000.0, 288),
              Record(WEB, "web", "network_out", "sum", END, 1_000_000.0, 288),
              Record(WEB, "web", "cpu", "max", END, 99.0, 288)]  # fmt: skip
    cpu, network = charts(values, days)
    assert (cpu.title, cpu.mean, cpu.low, cpu.high, cpu.resources, cpu.top) == (
        "EC2 CPU, daily average", (None, 20.0), (None, 10.0), (None, 30.0), 2, 100.0)  # fmt: skip
    assert (network.unit, network.mean, network.resources) == ("MB", (None, 4.0), 1)
    # The day without data has no point; the known day's point sits at its value on the 0-100 axis.
    assert cpu.line == f"{cpu.x(1)},{cpu.y(20.0)}" and cpu.y(0) > cpu.y(20.0) > cpu.y(100)


def test_the_csv_is_the_findings_with_formula_cells_defused():
    text = findings_csv([finding(WEB, "web", 140.16), finding(API, "web", None)], "EUR")
    header, first, second = text.splitlines()
    assert header.split(",")[:6] == ["account_id", "region", "service", "resource_id", "rule", "window_end"]
    assert first.startswith("123456789012,us-east-1,ec2,i-0123456789abcdef0,ec2_low_utilisation,2026-03-14,web,14,4,")
    assert first.endswith(",m5.xlarge,140.16,EUR") and second.endswith(",m5.xlarge,,EUR")
    assert '"[[""2026-03-14"", {""cpu.avg"": 2.5, ""network.sum"": 1000.0}]]"' in first
    # A cell a spreadsheet would run as a formula is made text.
    assert findings_csv([{**finding(WEB, "web", None), "instance_type": "=HYPERLINK(1)"}], "USD").splitlines()[1] \
        .count("'=HYPERLINK(1)") == 1  # fmt: skip


def test_the_files_are_the_same_bytes_for_the_same_data_and_escape_what_they_show():
    policy = parse_policy({"budgets": {"web": 100}}, "findings.yml", Prices())
    values = [Record(WEB, "web", "cpu", "avg", END, 2.5, 288), Record(API, "ops", "cpu", "avg", END, 50.0, 288)]
    stored = [finding(WEB, "web", 140.16), {**finding(API, "web", 60.0), "instance_type": "<script>x</script>"}]
    files = build(values, stored, END, policy)
    assert set(files) == {"index.html", "web.html", "web.csv", "ops.html", "ops.csv"}
    assert build(values, stored, END, policy) == files
    page = files["web.html"].decode()
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert 'id="total-saving">200.16 USD<' in page and "100.00 USD (exceeded)" in page
    assert 'id="no-findings"' in files["ops.html"].decode() and files["ops.csv"].decode().count("\n") == 1


def test_publishing_writes_only_changed_files_and_removes_teams_gone_but_nothing_else(tmp_path):
    directory = tmp_path / "reports"
    assert publish(str(directory), {"index.html": b"1", "web.html": b"w", "web.csv": b"c"}) == 3
    (directory / "notes.txt").write_text("someone's")
    stamps = {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}
    assert publish(str(directory), {"index.html": b"1", "web.html": b"w", "web.csv": b"c"}) == 0
    assert {p.name: p.stat().st_mtime_ns for p in directory.iterdir()} == stamps
    assert publish(str(directory), {"index.html": b"2", "ops.html": b"o", "ops.csv": b"c"}) == 5
    assert sorted(p.name for p in directory.iterdir()) == ["index.html", "notes.txt", "ops.csv", "ops.html"]
    assert (directory / "index.html").read_bytes() == b"2" and oct(os.stat(directory / "ops.csv").st_mode)[-3:] == "644"


def test_a_directory_that_cannot_be_written_is_a_report_error_naming_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ReportError, match=f"reports: cannot write {blocker}/reports"):
        publish(str(blocker / "reports"), {"index.html": b""})


@pytest.fixture
def exporter(tmp_path, free_port):
    """The exporter's HTTP side on its own (no Consul, no run yet), over a reports directory in tmp_path."""
    config = parse({"state_file": str(tmp_path / "state.json"), "listen": f"127.0.0.1:{free_port()}"}, "config.yml")
    server = _Server(config, CollectorRegistry())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{config.listen_port}", tmp_path / "reports"
    server.shutdown()
    server.server_close()


def test_before_the_first_run_the_reports_say_none_yet_and_metrics_and_health_answer(exporter):
    url, _ = exporter
    reply = requests.get(url + "/reports/", timeout=10)
    assert (reply.status_code, reply.text) == (404, "no reports yet: the first collection run writes them\n")
    assert requests.get(url + "/metrics", timeout=10).status_code == 200
    assert requests.get(url + "/-/healthy", timeout=10).text == "Healthy\n"  # Consul's check of the registration
    assert requests.get(url + "/reports", timeout=10, allow_redirects=False).headers["Location"] == "/reports/"


def test_the_reports_are_served_with_their_types_and_nothing_beside_them(exporter):
    url, directory = exporter
    publish(str(directory), build([Record(WEB, "web", "cpu", "avg", END, 2.5, 288)], [], END, DEFAULT_POLICY))
    (directory / ".report.partial").write_text("x")
    assert requests.get(url + "/reports/", timeout=10).headers["Content-Type"] == "text/html; charset=utf-8"
    assert requests.get(url + "/reports/web.csv", timeout=10).headers["Content-Type"] == "text/csv; charset=utf-8"
    assert requests.get(url + "/reports/.report.partial", timeout=10).status_code == 404
    assert report.REPORT_FILE.fullmatch("web.html") and not report.REPORT_FILE.fullmatch("../web.html")
