"""The service-quality gate against this scenario: a release of the proxy's whitelist is deployed over SSH, and
`make verify` passes on the healthy lab; then one thing per class is broken at once (an exporter stopped, a file
changed on the proxy, a whitelist decision flipped, a latency threshold set below what is measured), the gate
fails naming each, the standing checkers' first run after the breaks shows the same failures, and so does
Prometheus; repaired, the gate passes again. The checks: templates/checks.yml.j2."""

import json
import os
import pathlib
import subprocess
import sys
import time

import boto3
import requests
from test_pipeline import CLIENT_B, ENV, PROXY, STORE, make, records, repo, scenario_whitelist, tag  # noqa: F401

PROJECT = pathlib.Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
sys.path.insert(0, str(PROJECT / "scripts"))
from dashboards import queries_without_data_at  # noqa: E402
from labinfo import container_ip, molecule_playbook, prometheus_query, wait_for  # noqa: E402

CLIENT_A = "infraobs-mol-wl-client-a"
CHECKERS = (PROXY, CLIENT_A)
INTERVAL = 10  # quality_checker_interval of the scenario's checkers
MTAIL = "/etc/mtail/infra_obs_whitelist.mtail"


def gate_rows(rows):
    """The gate's rows as its JSON result holds them: {(check, where): row}, where is the checker a check ran on, or
    the host of a drift row."""
    found = {}
    for row in rows:
        target = row["target"]
        where = target.rsplit("(from ", 1)[1].rstrip(")") if "(from " in target else target
        found[(row["check"], where)] = row
    return found


def verify_result(root):
    """The rows of the last `make verify` (dist/run/verify.json, until a record takes them)."""
    return json.loads((root / "dist/run/verify.json").read_text())["checks"]


def failing(found):
    return {key for key, row in found.items() if not row["ok"]}


def sh(container, command):
    return subprocess.run(
        ["podman", "exec", container, "sh", "-c", command], check=True, capture_output=True, text=True
    )


def results_json(container):
    """What a standing checker last ran (its /results.json), read on its own host."""
    return json.loads(sh(container, "curl -sf http://127.0.0.1:9429/results.json").stdout)


def geo_file():
    """The live release's http config, where client-a is let in."""
    return sh(PROXY, "readlink -f /etc/nginx/infra-obs/current/http.conf").stdout.strip()


def break_one_of_each_class(geo):
    """An exporter stopped, a file changed on the proxy, client-a's decision flipped in the running nginx, and the
    origin's latency threshold set below anything measurable (a team's check file, deployed to the checkers)."""
    sh(PROXY, "systemctl stop prometheus-nginx-exporter")
    sh(PROXY, f"echo '# edited by hand' >> {MTAIL}")
    sh(PROXY, f"cp {geo} /root/geo.saved && sed -i 's|{container_ip(CLIENT_A)}/32|192.0.2.1/32|' {geo}")
    sh(PROXY, "nginx -s reload")
    molecule_playbook("write_whitelist.yml", "-e", "quality_origin_p99_ms=0.001")
    molecule_playbook("../../playbooks/quality.yml")


def repair(geo, mtail):
    sh(PROXY, f"cp /root/geo.saved {geo} 2>/dev/null; nginx -s reload; systemctl start prometheus-nginx-exporter")
    subprocess.run(["podman", "exec", "-i", PROXY, "sh", "-c", f"cat > {MTAIL}"], input=mtail, text=True, check=True)
    molecule_playbook("write_whitelist.yml")
    molecule_playbook("../../playbooks/quality.yml")


def test_the_gate_passes_on_a_healthy_lab_and_names_each_breach(repo):  # noqa: F811 - the fixture, imported
    store = boto3.client(
        "s3", endpoint_url=STORE, region_name="us-east-1", aws_access_key_id="lab", aws_secret_access_key="lab"
    )
    prometheus = f"http://{container_ip(PROXY)}:9090"
    tag(repo, "q1", scenario_whitelist(), checkers=CHECKERS)
    # The whole chain outside Jenkins, as its stages run there: package -> publish -> plan -> deploy -> verify ->
    # record; the gate's rows come back in the audit record.
    released = make(repo, "release", TAG="q1")
    record = records(store)[-1]
    assert (record["tag"], record["result"], record["stages"]) == (
        "q1",
        "success",
        {"plan": "success", "deploy": "success", "verify": "success"},
    )
    assert record["verify"]["result"] == "success" and record["verify"]["drift"] == {}
    found = gate_rows(record["verify"]["checks"])
    assert not failing(found), released.stdout
    for check, checker in [
        ("client-a-allowed", CLIENT_A),
        ("others-denied", PROXY),
        ("origin-latency", PROXY),
        ("origin-echo", PROXY),
        ("exporters-registered", PROXY),
        ("exporters-scraped", PROXY),
        ("node-exporter-scraped", PROXY),
        ("drift", "1 hosts"),
    ]:
        assert (check, checker) in found, (check, checker, released.stdout)
    assert "CHECK" in released.stdout and "client-a-allowed" in released.stdout  # the table, in the stage's log

    mtail = sh(PROXY, f"cat {MTAIL}").stdout
    geo = geo_file()
    assert f"{container_ip(CLIENT_A)}/32" in sh(PROXY, f"cat {geo}").stdout
    try:
        break_one_of_each_class(geo)
        broken_at = time.time()

        failed = make(repo, "verify", TAG="q1", expect=2)
        found = gate_rows(verify_result(repo))
        assert failing(found) >= {
            ("client-a-allowed", CLIENT_A),
            ("origin-latency", PROXY),
            ("exporters-registered", PROXY),
            ("exporters-scraped", PROXY),
            ("drift", PROXY),
        }, failed.stdout
        assert ("others-denied", PROXY) not in failing(found) and ("origin-echo", PROXY) not in failing(found)
        for check, where in failing(found):  # the table names each failure, and why
            assert f"FAILED {check} " in failed.stdout and (check == "drift" or f"(from {where}):" in failed.stdout)
        assert "first error: status 403, expected 200" in found[("client-a-allowed", CLIENT_A)]["error"]
        latency = found[("origin-latency", PROXY)]
        assert latency["p99"] > 0.000001 and "p99 <= 0.0 ms" in latency["threshold"] and "p99 " in latency["error"]
        why = next(line for line in failed.stdout.splitlines() if line.startswith(f"FAILED drift {PROXY}"))
        assert MTAIL in why and "Enable and start the exporters" in why, why
        assert "Compare the live release with the compiled whitelist" in why, why

        # The standing checkers: their first run that began after the breaks shows every one of them.
        def first_run_after(container):
            done = results_json(container)
            return done if done["run_started"] > broken_at else None

        seen = set()
        for container in CHECKERS:
            done = wait_for(lambda c=container: first_run_after(c), 3 * INTERVAL + 150, 1)
            assert done, f"{container}: no run began after the breaks"
            seen |= {(r["check"], container) for r in done["results"] if not r["ok"]}
        assert seen >= {
            ("client-a-allowed", CLIENT_A),
            ("origin-latency", PROXY),
            ("exporters-registered", PROXY),
            ("exporters-scraped", PROXY),
        }, seen
        # And Prometheus has them, from both checkers; the alert rule waits 5 minutes (promtool-tested).
        query = "infra_obs_quality_check_success == 0"
        names = wait_for(
            lambda: (
                {s["metric"]["check"] for s in prometheus_query(prometheus, query)}
                >= {"client-a-allowed", "origin-latency", "exporters-registered", "exporters-scraped"}
            ),
            120,
        )
        assert names, prometheus_query(prometheus, query)
        dashboard = PROJECT / "roles/quality_checker/files/dashboards/quality_checker.json"
        urls = [prometheus, prometheus.replace(":9090", ":10904")]  # and through Thanos query
        assert wait_for(lambda: not queries_without_data_at(urls, dashboard, {}), 60), queries_without_data_at(
            urls, dashboard, {}
        )
    finally:
        repair(geo, mtail)

    # Repaired: the gate passes again (the exporter's Consul check and Prometheus's scrape have caught up).
    assert wait_for(
        lambda: requests.get(
            f"http://{container_ip(PROXY)}:8500/v1/health/service/nginx-exporter?passing", timeout=5
        ).json(),
        60,
    )
    again = make(repo, "verify", TAG="q1")
    assert not failing(gate_rows(verify_result(repo))), again.stdout
