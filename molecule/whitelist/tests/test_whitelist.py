"""Verify the whitelist proxy from the clients' side: real requests from real source addresses through the real
nginx, then a change that must take effect in one run, and a change that passes our validation but fails
`nginx -t`, which must fail the rollout while the proxy keeps serving the previous rules."""

import os
import pathlib
import sys

import pytest
import testinfra

sys.path.insert(0, str(pathlib.Path(os.environ["MOLECULE_PROJECT_DIRECTORY"]) / "scripts"))

from dashboards import REPO, queries_without_data_at
from labinfo import active_targets, container_ip, molecule_playbook, prometheus_query, wait_for

PROXY = "infraobs-mol-wl-proxy"
# What a team runs to roll out a whitelist change (converge also deploys the observability core).
WHITELIST_PLAYBOOK = "../../playbooks/whitelist.yml"
STREAM_PROBE = (
    "import socket,sys; s=socket.create_connection((sys.argv[1], 7000), timeout=5); s.sendall(b'ping')\n"
    "try: print(s.recv(64).decode() or 'closed')\n"
    "except ConnectionResetError: print('closed')"
)


@pytest.fixture(scope="module")
def proxy_ip():
    return container_ip(PROXY)


@pytest.fixture(scope="module")
def hosts():
    """testinfra hosts by short name; these tests do not take testinfra's per-host `host`, so each runs once."""
    inventory = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "inventory"
    return {
        name: testinfra.get_host(f"ansible://infraobs-mol-wl-{name}?ansible_inventory={inventory}")
        for name in ("proxy", "client-a", "client-b")
    }


def http_status(client, proxy_ip, path="/"):
    return client.check_output(f"curl -s -o /dev/null -w '%{{http_code}}' http://{proxy_ip}:8080{path}")


def stream_answer(client, proxy_ip):
    return client.check_output(f'python3 -c "{STREAM_PROBE}" {proxy_ip}')


def write_whitelist(*extra_vars):
    molecule_playbook("write_whitelist.yml", *[arg for pair in extra_vars for arg in ("-e", pair)])


def assert_first_rules(hosts, proxy_ip):
    assert http_status(hosts["client-a"], proxy_ip) == "200"
    assert http_status(hosts["client-b"], proxy_ip) == "403"
    assert stream_answer(hosts["client-a"], proxy_ip) == "echo:ping"
    assert stream_answer(hosts["client-b"], proxy_ip) == "closed"


def test_allowed_client_passes_and_denied_client_is_refused(hosts, proxy_ip):
    assert_first_rules(hosts, proxy_ip)
    config = hosts["proxy"].file("/etc/nginx/infra-obs/current")
    assert config.is_symlink and config.linked_to.startswith("/etc/nginx/infra-obs/releases/")


def test_change_takes_effect_in_one_run_and_a_failing_one_keeps_the_old_rules(hosts, proxy_ip):
    proxy = hosts["proxy"]
    client_b = container_ip("infraobs-mol-wl-client-b")
    try:
        write_whitelist(f"extra_allowed={client_b}")
        stats = molecule_playbook(WHITELIST_PLAYBOOK).stats
        assert stats[PROXY]["changed"] > 0
        assert http_status(hosts["client-b"], proxy_ip) == "200"
        assert stream_answer(hosts["client-b"], proxy_ip) == "echo:ping"

        write_whitelist("broken=true")
        live_before = proxy.file("/etc/nginx/infra-obs/current").linked_to
        messages = molecule_playbook(WHITELIST_PLAYBOOK, expect_success=False).failures()
        assert any("host not found in upstream" in m and "keeps serving the previous release" in m for m in messages), (
            messages
        )
        assert proxy.file("/etc/nginx/infra-obs/current").linked_to == live_before
        # The previous rules (client-b allowed) are still served.
        assert http_status(hosts["client-a"], proxy_ip) == "200"
        assert http_status(hosts["client-b"], proxy_ip) == "200"
    finally:
        write_whitelist()
        molecule_playbook(WHITELIST_PLAYBOOK)
    assert_first_rules(hosts, proxy_ip)
    assert molecule_playbook(WHITELIST_PLAYBOOK).stats[PROXY]["changed"] == 0


def test_denials_are_counted_in_prometheus_through_consul(hosts, proxy_ip):
    prometheus = f"http://{proxy_ip}:9090"
    jobs = {"nginx-exporter", "nginx-whitelist-mtail"}
    assert wait_for(
        lambda: jobs <= {t["labels"]["job"] for t in active_targets(prometheus) if t["health"] == "up"}, 60
    ), active_targets(prometheus)

    def denied_web():
        result = prometheus_query(prometheus, 'infra_obs_whitelist_requests_total{backend="web", decision="denied"}')
        return float(result[0]["value"][1]) if result else 0.0

    before = denied_web()
    for _ in range(5):
        assert http_status(hosts["client-b"], proxy_ip) == "403"
    assert wait_for(lambda: denied_web() >= before + 5, 60), denied_web()
    (series,) = prometheus_query(prometheus, 'nginx_up{job="nginx-exporter"}')
    assert series["value"][1] == "1"
    assert (series["metric"]["region"], series["metric"]["az"]) == ("eu-central-1", "eu-central-1a")


def test_every_dashboard_query_finds_data_in_the_lab(hosts, proxy_ip):
    # Runs after the denials above, so the decision counters and the recording rule have series.
    dashboard = REPO / "roles/nginx_whitelist/files/dashboards/nginx_whitelist.json"
    urls = [f"http://{proxy_ip}:9090", f"http://{proxy_ip}:10904"]  # Prometheus and Thanos query over it
    assert http_status(hosts["client-b"], proxy_ip) == "403"
    assert wait_for(lambda: not queries_without_data_at(urls, dashboard, {}), 90), queries_without_data_at(
        urls, dashboard, {}
    )
