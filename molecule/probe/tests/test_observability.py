"""Verify the observability core through its real parts: systemd units on the hosts, the Consul catalog, and
Prometheus's HTTP API. Some tests re-run the playbook with a changed input and check the recap and the result."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

PROJECT = pathlib.Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
SCENARIO = pathlib.Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
sys.path.insert(0, str(PROJECT / "scripts"))

from labinfo import (  # noqa: E402
    active_targets,
    chromium_page,
    container_ip,
    molecule_playbook,
    rule_groups,
    save_screenshot,
    wait_for,
)

PLACEMENT = {path.stem: yaml.safe_load(path.read_text()) for path in (SCENARIO / "host_vars").glob("*.yml")}
DISCOVERY_TIMEOUT = 60
# Kept after the scenario is destroyed (.lab/ is ignored by git).
POOL_COUNT = re.compile(r"(\d+) / (\d+) up")  # a pool's header on the UI's target health page


@pytest.fixture(scope="module")
def prometheus():
    return f"http://{container_ip('infraobs-mol-probe-prom')}:9090"


def node_exporter_targets(prometheus_url):
    return {t["labels"]["node"]: t for t in active_targets(prometheus_url) if t["labels"]["job"] == "node-exporter"}


def consul_catalog(service):
    out = subprocess.run(
        [
            "podman",
            "exec",
            "infraobs-mol-probe-consul",
            "curl",
            "-sf",
            f"http://127.0.0.1:8500/v1/catalog/service/{service}",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {entry["Node"]: entry for entry in json.loads(out)}


def run_playbook(*args):
    """The core's own playbook (the part of converge.yml these tests change), as a user re-runs it for one role."""
    return molecule_playbook("../../playbooks/observability.yml", "--tags", "node_exporter", *args).stats


UNITS = {
    "infraobs-mol-probe-consul": ["consul", "prometheus-node-exporter", "infra-obs-probe"],
    "infraobs-mol-probe-prom": ["consul", "prometheus-node-exporter", "prometheus", "infra-obs-probe"],
    "infraobs-mol-probe-node1": ["consul", "prometheus-node-exporter", "infra-obs-probe"],
    "infraobs-mol-probe-node2": ["consul", "prometheus-node-exporter", "infra-obs-probe"],
}


# Each host check reads everything it needs in one command: over the lab's ssh a command costs seconds on a busy
# machine, and testinfra's service and file helpers spend several each.
def test_units_run_and_are_enabled(host):
    units = UNITS[host.backend.get_hostname()]
    active = host.run("systemctl is-active " + " ".join(units)).stdout.split()
    enabled = host.run("systemctl is-enabled " + " ".join(units)).stdout.split()
    for unit, is_active, is_enabled in zip(units, active, enabled, strict=True):
        assert is_active == "active", host.run(f"journalctl -u {unit} --no-pager -n 50").stdout
        assert is_enabled == "enabled", (unit, is_enabled)


def test_configs_are_private_and_hardened(host):
    mode_owner, hardening, *consul_users = host.check_output(
        "stat -c '%a %U %G' /etc/consul.d/consul.json;"
        " grep -cx 'ProtectSystem=strict' /etc/systemd/system/consul.service; ps -o user= -C consul"
    ).split("\n")
    assert mode_owner == "640 root consul"
    assert hardening == "1"
    assert consul_users and set(consul_users) == {"consul"}, consul_users


def test_every_exporter_is_discovered_with_its_placement(prometheus):
    registered = consul_catalog("node-exporter")
    assert set(registered) == set(PLACEMENT)

    def all_up():
        targets = node_exporter_targets(prometheus)
        return set(targets) == set(registered) and all(t["health"] == "up" for t in targets.values()) and targets

    targets = wait_for(all_up, DISCOVERY_TIMEOUT)
    assert targets, f"not all up within {DISCOVERY_TIMEOUT}s: {node_exporter_targets(prometheus)}"
    for node, entry in registered.items():
        labels = targets[node]["labels"]
        assert (labels["region"], labels["az"]) == (PLACEMENT[node]["region"], PLACEMENT[node]["az"])
        assert (entry["ServiceMeta"]["region"], entry["ServiceMeta"]["az"]) == (labels["region"], labels["az"])
        assert labels["team"] == "platform"
        assert labels["instance"] == f"{entry['ServiceAddress']}:{entry['ServicePort']}"


def test_prometheus_scrapes_itself_through_consul(prometheus):
    def self_target():
        return [t for t in active_targets(prometheus) if t["labels"]["job"] == "prometheus" and t["health"] == "up"]

    assert wait_for(self_target, DISCOVERY_TIMEOUT)


def test_the_web_ui_shows_every_target_in_chromium(prometheus):
    """Our Prometheus build carries its web UI (scripts/build-prometheus.sh). Its target health page, in Debian's
    Chromium, counts as many targets as the API lists, and shows each by its instance and job."""

    def as_shown():
        page.goto(prometheus + "/targets")
        page.get_by_text(POOL_COUNT).first.wait_for(timeout=60_000)
        text = page.inner_text("body")
        listed = active_targets(prometheus)
        totals = [int(total) for _, total in POOL_COUNT.findall(text)]
        # Consul can move a target in between: a try counts when the page and the API agree.
        agree = (len(totals), sum(totals)) == (len({t["scrapePool"] for t in listed}), len(listed))
        return agree and (listed, text)

    with chromium_page() as page:
        shown = wait_for(as_shown, DISCOVERY_TIMEOUT, 5)
        save_screenshot(page, "prometheus-targets.png")
    assert shown, [(t["scrapePool"], t["labels"]["job"]) for t in active_targets(prometheus)]
    listed, text = shown
    assert len(listed) >= 10, listed
    for target in listed:
        labels = target["labels"]
        assert f'instance="{labels["instance"]}"' in text and f'job="{labels["job"]}"' in text, (labels, text)


def test_changed_meta_reports_changed_and_takes_effect(prometheus):
    node = "infraobs-mol-probe-node1"
    stats = run_playbook("--limit", node, "-e", "node_exporter_team=payments")
    assert stats[node]["changed"] > 0

    def relabelled(team):
        return lambda: node_exporter_targets(prometheus).get(node, {}).get("labels", {}).get("team") == team

    assert wait_for(relabelled("payments"), DISCOVERY_TIMEOUT), node_exporter_targets(prometheus).get(node)

    stats = run_playbook("--limit", node)
    assert stats[node]["changed"] > 0
    assert wait_for(relabelled("platform"), DISCOVERY_TIMEOUT)


def test_deregistered_exporter_disappears_and_returns(prometheus):
    node = "infraobs-mol-probe-node2"
    stats = run_playbook("--limit", node, "-e", "node_exporter_consul_state=absent")
    assert stats[node]["changed"] > 0
    assert wait_for(lambda: node not in node_exporter_targets(prometheus), DISCOVERY_TIMEOUT)
    assert node not in consul_catalog("node-exporter")

    stats = run_playbook("--limit", node)
    assert stats[node]["changed"] > 0
    assert wait_for(lambda: node in node_exporter_targets(prometheus), DISCOVERY_TIMEOUT)


def test_prometheus_evaluates_every_rule_group_the_roles_ship(prometheus):
    shipped = {
        group["name"]
        for path in PROJECT.glob("roles/*/files/rules/*.rules.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
    }

    # Each rule has been evaluated once ("unknown" before) and without error.
    assert wait_for(lambda: all(r["health"] == "ok" for g in rule_groups(prometheus) for r in g["rules"]), 60), (
        rule_groups(prometheus)
    )
    assert shipped <= {group["name"] for group in rule_groups(prometheus)}
