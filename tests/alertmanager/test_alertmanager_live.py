"""Alertmanager as the role runs it: the role's config (checked by amtool, as its `validate:` does) and unit, rendered
by Ansible after its preflight, run as they are as a cluster of two, with the lab's alert sink as every receiver.
Two Prometheus replicas of one region, configured by the prometheus role's own template (external labels region and
replica, alerts sent to both Alertmanagers without the replica label), fire the same alerts: each notification
reaches its team's receiver once; the AZ-wide probe alert keeps the per-path alert under it from being sent."""

import json
import os
import pathlib
import subprocess
import sys
import time

import pytest
import requests
import yaml
from lab_servers import Started, exec_start
from labinfo import render_role, wait_for

REPO = pathlib.Path(__file__).resolve().parents[2]
ROLES = REPO / "roles"
CACHE = pathlib.Path(os.environ.get("INFRA_OBS_CACHE", "/var/cache/infra-obs"))
SINK = ROLES / "alert_sink_lab" / "files" / "alert_sink.py"
GROUP_WAIT, GROUP_INTERVAL = 1, 10
DEADLINE = 180
PLACEMENT = {"region": "eu-central-1", "az": "eu-central-1a",
             "ansible_facts": {"default_ipv4": {"address": "127.0.0.1"}}}  # fmt: skip
CONFIG = {"src": "alertmanager.yml.j2", "dest": "alertmanager.yml"}
UNIT = {"src": "alertmanager.service.j2", "dest": "alertmanager.service"}
PROMETHEUS_CONFIG = {"src": "prometheus.yml.j2", "dest": "prometheus.yml"}
RECEIVERS = ["platform", "network", "network-use1", "payments"]
ROUTES = [
    {"team": "network", "region": "us-east-1", "receiver": "network-use1"},
    {"team": "network", "receiver": "network"},
    {"team": "payments", "receiver": "payments"},
]
# What the replicas fire, every alert at once. Alerts without a region label take the Prometheus's (eu-central-1).
RULES = {"groups": [{"name": "lab", "rules": [
    {"alert": "InfraObsProbeDestinationAZLoss", "expr": "vector(1)",
     "labels": {"team": "network", "dst_region": "us-east-1", "dst_az": "us-east-1b"}},
    # Under the AZ alert: inhibited.
    {"alert": "InfraObsProbePathLoss", "expr": "vector(1)",
     "labels": {"team": "network", "node": "node-euc1-a", "dst_host": "node-use1-b", "dst_region": "us-east-1",
                "dst_az": "us-east-1b"}},
    # Another AZ: sent.
    {"alert": "InfraObsProbePathLoss", "expr": "vector(1)",
     "labels": {"team": "network", "node": "node-use1-a", "dst_host": "node-euc1-b", "dst_region": "eu-central-1",
                "dst_az": "eu-central-1b"}},
    {"alert": "LabCheckoutDown", "expr": "vector(1)", "labels": {"team": "payments"}},
    {"alert": "LabTransitDown", "expr": "vector(1)", "labels": {"team": "network", "region": "us-east-1"}},
    {"alert": "LabNobodysAlert", "expr": "vector(1)"},
]}]}  # fmt: skip


def alertmanager_vars(sink_url: str, **extra) -> dict:
    return {
        "alertmanager_archive_url": "http://mirror.invalid/alertmanager.tar.gz",
        "alertmanager_binary_dir": str(CACHE / "bin"),
        "alertmanager_receivers": [{"name": name, "webhook_url": f"{sink_url}/{name}"} for name in RECEIVERS],
        "alertmanager_default_receiver": "platform",
        "alertmanager_routes": ROUTES,
        "alertmanager_group_wait": f"{GROUP_WAIT}s",
        "alertmanager_group_interval": f"{GROUP_INTERVAL}s",
        **extra,
    }


@pytest.fixture(scope="module")
def site(start_prometheus, free_port, tmp_path_factory):
    for binary in ("alertmanager", "amtool"):
        if not os.access(CACHE / "bin" / binary, os.X_OK):
            pytest.fail(f"{CACHE / 'bin' / binary} is missing: scripts/fetch-artifacts.sh builds it")
    work = tmp_path_factory.mktemp("alertmanager")
    servers = Started(work)
    try:
        sink_port = free_port()
        sink = servers.start([sys.executable, str(SINK), "--listen", f"127.0.0.1:{sink_port}",
                              "--log", str(work / "notifications.jsonl")], "sink", sink_port, "/-/healthy",
                             "the alert sink")  # fmt: skip
        ports = [(free_port(), free_port()) for _ in range(2)]
        alertmanagers = []
        for index, (web, cluster) in enumerate(ports):
            peers = [f"127.0.0.1:{c}" for i, (_, c) in enumerate(ports) if i != index]
            out, run = render_role(work / f"am{index}", "alertmanager", [CONFIG, UNIT],
                              alertmanager_vars(sink.url, alertmanager_web_port=web, alertmanager_cluster_port=cluster,
                                                alertmanager_cluster_peers=peers,
                                                alertmanager_config_dir=str(work / f"am{index}" / "out"),
                                                alertmanager_data_dir=str(work / f"am{index}" / "data")),
                                  placement=PLACEMENT)  # fmt: skip
            assert run.rc == 0, run.output
            check = run_amtool(out / "alertmanager.yml")
            assert check.returncode == 0, check.stdout + check.stderr
            alertmanagers.append(servers.start(exec_start(out / "alertmanager.service"), f"alertmanager{index}", web,
                                               "/-/ready", f"alertmanager {index}"))  # fmt: skip
        prometheus = []
        for replica in ("a", "b"):
            config_dir = work / f"prometheus-{replica}"
            (config_dir / "rules").mkdir(parents=True)
            (config_dir / "rules" / "lab.yml").write_text(yaml.safe_dump(RULES))
            out, run = render_role(config_dir, "prometheus", [PROMETHEUS_CONFIG], {
                "prometheus_config_dir": str(config_dir), "prometheus_archive_url": "http://mirror.invalid/p.tgz",
                "prometheus_evaluation_interval": "1s", "inventory_hostname": f"prom-{replica}",
                "prometheus_external_labels": {"region": "eu-central-1", "replica": replica},
                "prometheus_alertmanagers": [f"127.0.0.1:{web}" for web, _ in ports]},
                placement=PLACEMENT, preflight=False)  # fmt: skip
            assert run.rc == 0, run.output
            prometheus.append(start_prometheus(config_dir / "data", config=(out / "prometheus.yml").read_text()))
        yield {"sink": sink.url, "alertmanagers": [a.url for a in alertmanagers], "prometheus": prometheus}
    finally:
        servers.stop()


def run_amtool(config: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(CACHE / "bin" / "amtool"), "check-config", str(config)], capture_output=True,
                          text=True, check=False)  # fmt: skip


def notifications(site, receiver: str | None = None) -> list[dict]:
    params = {"receiver": receiver} if receiver else {}
    return requests.get(site["sink"] + "/notifications", params=params, timeout=10).json()


def alerts_at(url: str) -> list[dict]:
    return requests.get(url + "/api/v2/alerts", timeout=10).json()


def names(notification: dict) -> list[str]:
    return sorted(a["labels"]["alertname"] for a in notification["payload"]["alerts"])


def everywhere(site) -> None:
    """Wait until both Alertmanagers hold all six alerts and see each other. Each test waits for what it reads: the
    order of a file's tests is not kept under xdist."""

    def held():
        return all(len(alerts_at(url)) == 6 and "alertmanager_cluster_members 2" in requests.get(url + "/metrics",
                   timeout=10).text for url in site["alertmanagers"])  # fmt: skip

    assert wait_for(held, DEADLINE, 1.0), [alerts_at(url) for url in site["alertmanagers"]]


def test_both_alertmanagers_receive_every_alert_without_the_replica_label(site):
    everywhere(site)
    for url in site["alertmanagers"]:
        for alert in alerts_at(url):
            assert "replica" not in alert["labels"], alert
            assert alert["labels"]["region"] in ("eu-central-1", "us-east-1"), alert
        members = requests.get(url + "/api/v2/status", timeout=10).json()["cluster"]["peers"]
        assert len(members) == 2, members


def test_each_group_is_notified_once_to_its_teams_receiver(site):
    expected = {
        "network": [["InfraObsProbeDestinationAZLoss"], ["InfraObsProbePathLoss"]],
        "network-use1": [["LabTransitDown"]],
        "payments": [["LabCheckoutDown"]],
        "platform": [["LabNobodysAlert"]],
    }
    started = time.monotonic()
    assert wait_for(lambda: len(notifications(site)) >= 5, DEADLINE, 0.5), notifications(site)
    first = time.monotonic() - started
    # Two Alertmanagers, two Prometheus replicas, each alert four times over: still one notification per group, for
    # two group intervals more (a duplicate would come from the second Alertmanager within one).
    time.sleep(2 * GROUP_INTERVAL)
    got = {receiver: sorted(names(n) for n in notifications(site, receiver)) for receiver in RECEIVERS}
    assert got == expected, (got, f"first notifications after {first:.1f} s")
    print(f"all five groups notified {first:.1f} s after the test began; group_interval {GROUP_INTERVAL} s")


def test_the_az_alert_inhibits_the_path_alert_under_it_only(site):
    everywhere(site)
    assert wait_for(lambda: len(notifications(site)) >= 5, DEADLINE, 0.5), notifications(site)
    sent = [a for n in notifications(site, "network") for a in n["payload"]["alerts"]
            if a["labels"]["alertname"] == "InfraObsProbePathLoss"]  # fmt: skip
    assert [a["labels"]["dst_az"] for a in sent] == ["eu-central-1b"], sent
    for url in site["alertmanagers"]:
        under = [a for a in alerts_at(url) if a["labels"].get("dst_az") == "us-east-1b"
                 and a["labels"]["alertname"] == "InfraObsProbePathLoss"]  # fmt: skip
        assert len(under) == 1 and under[0]["status"]["inhibitedBy"], under


def test_the_servers_expose_what_the_alerts_read(site):
    everywhere(site)
    for url in site["alertmanagers"]:
        text = requests.get(url + "/metrics", timeout=10).text
        assert "alertmanager_config_last_reload_successful 1" in text
        assert "alertmanager_cluster_members 2" in text
        assert 'alertmanager_notifications_failed_total{integration="webhook"' in text
    for prometheus in site["prometheus"]:
        text = requests.get(prometheus.url + "/metrics", timeout=10).text
        assert "prometheus_notifications_errors_total{" in text
        assert "prometheus_notifications_alertmanagers_discovered 2" in text


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ({"alertmanager_receivers": [{"name": "a b", "webhook_url": "http://127.0.0.1/x"}]}, "alertmanager_receivers"),
        (
            {"alertmanager_receivers": [{"name": "platform", "webhook_url": "http://u:p@x/\n"}]},
            "alertmanager_receivers",
        ),
        ({"alertmanager_default_receiver": "nobody"}, "alertmanager_default_receiver"),
        ({"alertmanager_routes": [{"team": 'x"} , {', "receiver": "platform"}]}, "alertmanager_routes"),
        ({"alertmanager_routes": [{"team": "x", "receiver": "elsewhere"}]}, "alertmanager_routes"),
        ({"alertmanager_group_by": ["team", "a-b"]}, "alertmanager_group_by"),
        ({"alertmanager_group_interval": "5 minutes"}, "durations"),
        ({"alertmanager_cluster_peers": ["127.0.0.1:9094 --web.listen-address=:1"]}, "alertmanager_cluster_peers"),
        (
            {"alertmanager_cluster_peers": ["127.0.0.1:\uff19\uff10\uff19\uff14"]},
            "alertmanager_cluster_peers",
        ),  # look-alikes
        (
            {"alertmanager_receivers": [{"name": "p" * 64, "webhook_url": "http://127.0.0.1/x"}]},
            "alertmanager_receivers",
        ),
        (
            {"alertmanager_receivers": [{"name": "platform", "webhook_url": "http://h/" + "a" * 300}]},
            "alertmanager_receivers",
        ),  # one over the path's 200
        (
            {"alertmanager_routes": [{"team": "x", "region": "us-east-1\n", "receiver": "platform"}]},
            "alertmanager_routes",
        ),
        (
            {"alertmanager_inhibit_rules": [{"source_alertname": 'A"}', "target_alertnames": ["B"], "equal": []}]},
            "alertmanager_inhibit_rules",
        ),
    ],
)
def test_hostile_values_are_refused_by_the_preflight_naming_the_variable(tmp_path, extra, variable):
    platform = [{"name": "platform", "webhook_url": "http://127.0.0.1:9099/platform"}]
    values = {**alertmanager_vars("http://127.0.0.1:9099"), "alertmanager_receivers": platform,
              "alertmanager_routes": [], **extra}  # fmt: skip
    out, run = render_role(tmp_path, "alertmanager", [CONFIG], values, placement=PLACEMENT)
    assert run.rc != 0 and variable in run.output and "Check the" in run.output, run.output
    assert not (out / "alertmanager.yml").exists()


def test_the_sink_refuses_what_is_not_a_notification(site):
    for path, body in (("/platform", "not json"), ("/platform", json.dumps([1])), ("/../etc", "{}")):
        response = requests.post(site["sink"] + path, data=body, timeout=10)
        assert response.status_code == 400, (path, body, response.text)
