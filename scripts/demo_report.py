"""Prints where to look after `make demo`: each region's Prometheus (its web UI) with its targets by region and AZ,
then through Thanos query (the global view): the probe mesh, the MirrorMaker 2 flow, the service-quality checkers'
results and the cost system (YACE reading the lab's AWS, the collector's health), the mesh's loss between the regions
and every dashboard's queries; and one allowed and one denied request through the lab's whitelist proxy."""

import json
import pathlib
import subprocess
import sys
import time
from collections import Counter

import requests
import yaml
from dashboards import dashboards, queries, queries_without_data, variable_queries
from jinja2.sandbox import SandboxedEnvironment
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka.structs import TopicPartition
from labinfo import active_targets, container_ip, http_status, prometheus_query, wait_for

INVENTORY = "inventories/lab/hosts.yml"
# What the demo gives the lab's MM2 flow to carry (an idle flow leaves its dashboard empty): a topic its filter takes
# and a group its filter takes, which reads what was produced and commits, so MM2 copies and checkpoints both.
DEMO_TOPIC, DEMO_GROUP, DEMO_RECORDS = "orders.demo", "orders-demo", 1000


def inventory() -> dict:
    return json.loads(
        subprocess.run(
            ["ansible-inventory", "-i", INVENTORY, "--list"], check=True, capture_output=True, text=True
        ).stdout
    )


def whitelist_requests(lab: dict) -> bool:
    """One request the lab's whitelist allows (from the monitoring host) and one it denies (from a node)."""
    hostvars = lab["_meta"]["hostvars"]
    proxy = hostvars[lab["whitelist_proxies"]["hosts"][0]]
    url = f"http://{proxy['lab_ipv4']}:8080/metrics"
    print(f"\nWhitelist proxy: {proxy['ansible_host']} ({url}), rules in inventories/lab/whitelists/")
    ok = True
    for client, expected in ((lab["prometheus"]["hosts"][0], "200"), (lab["nodes"]["hosts"][-1], "403")):
        status = http_status(hostvars[client]["ansible_host"], url)
        verdict = "allowed" if status == "200" else "denied" if status == "403" else "unexpected"
        print(f"  from {client:<12} ({hostvars[client]['lab_ipv4']}): HTTP {status or '-'} {verdict}")
        ok &= status == expected
    return ok


def consul_get(container: str, path: str):
    """A Consul API read through the agent on a lab host (the API listens on the host's loopback only)."""
    out = subprocess.run(
        ["podman", "exec", container, "curl", "-sf", f"http://127.0.0.1:8500{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def registered_instances(container: str) -> int:
    """How many service instances carry the scrape tag: what Prometheus should end up with."""
    services = consul_get(container, "/v1/catalog/services")
    return sum(
        len(consul_get(container, f"/v1/catalog/service/{name}"))
        for name, tags in services.items()
        if "metrics" in tags
    )


def probe_mesh(lab: dict, url: str) -> bool:
    """The probe mesh as Prometheus sees it: every ordered pair of probe nodes measured, and loss by AZ pair."""
    hostvars = lab["_meta"]["hostvars"]
    nodes = sorted(set(all_hosts(lab, "probe_nodes")))
    expected = len(nodes) * (len(nodes) - 1)

    def measured():
        pairs = prometheus_query(url, 'count by (node, dst_host) (infra_obs_probe_received_total{probe="icmp"} > 0)')
        return len(pairs) >= expected and pairs

    pairs = wait_for(measured, 90) or []
    print(f"\nProbe mesh: {len(pairs)} of {expected} source -> destination pairs measured, through {url}")
    loss = prometheus_query(
        url,
        '1 - sum by (src_az, dst_az) (increase(infra_obs_probe_received_total{probe="icmp"}[2m]))'
        ' / sum by (src_az, dst_az) (increase(infra_obs_probe_sent_total{probe="icmp"}[2m]))',
    )
    cells = {(r["metric"]["src_az"], r["metric"]["dst_az"]): float(r["value"][1]) for r in loss}
    azs = sorted({az for pair in cells for az in pair})
    print("ICMP loss over 2 min, source AZ (rows) x destination AZ (columns):")
    print(f"  {'':<15}" + "".join(f"{az:>15}" for az in azs))
    for src in azs:
        row = "".join(f"{cells[(src, dst)]:>15.3f}" if (src, dst) in cells else f"{'-':>15}" for dst in azs)
        print(f"  {src:<15}{row}")
    page = hostvars[nodes[0]]["lab_ipv4"]
    print(f"Matrix page: http://{page}:9427/matrix  (JSON: /matrix.json; one node's own numbers: /paths.json)")
    return len(pairs) >= expected


def produce_and_read(bootstrap: list[str]) -> None:
    """DEMO_RECORDS more records into DEMO_TOPIC on the flow's source cluster, then DEMO_GROUP reads the topic to its
    end (or for a minute) and commits (a rerun of the demo adds as many again)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(DEMO_TOPIC, num_partitions=3, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(DEMO_RECORDS):
        producer.send(DEMO_TOPIC, key=f"order-{i % 50}".encode(), value=f"demo order {i}".encode())
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=DEMO_GROUP, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(DEMO_TOPIC, p) for p in consumer.partitions_for_topic(DEMO_TOPIC)]
        consumer.assign(partitions)  # no group rebalance to wait for; the commits are the group's all the same
        consumer.seek_to_beginning()
        end = consumer.end_offsets(partitions)
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < end[tp] for tp in partitions) and time.monotonic() < deadline:
            consumer.poll(timeout_ms=1000)
        consumer.commit()
    finally:
        consumer.close()


def mm2_flows(lab: dict, url: str) -> bool:
    """Each flow's MM2 up with its connectors running and its rollback-readiness check passing, in Prometheus; the
    demo's records produced on its source, copied by MM2, and its group judged by the readiness check."""
    hostvars = lab["_meta"]["hostvars"]
    ok = True
    for host in lab.get("mm2_hosts", {}).get("hosts", []):
        for flow in hostvars[host]["mm2_flows"]:
            name = flow["name"]
            running = f'kafka_mm2_connector_status{{job="mm2-{name}", status="running"}}'
            checked = f'infra_obs_mm2_readiness_check_success{{job="rollback-readiness-{name}"}} == 1'
            wait_for(lambda: prometheus_query(url, running) and prometheus_query(url, checked), 90)  # noqa: B023
            connectors = sorted(s["metric"]["connector"] for s in prometheus_query(url, running))
            readiness = prometheus_query(url, checked)
            print(f"\nMirrorMaker 2 flow {name} on {host} ({hostvars[host]['ansible_host']})")
            print(f"  connectors running: {', '.join(connectors) or 'none'}")
            print(f"  rollback-readiness check: {'passing' if readiness else 'not passing'}")
            # ansible-inventory lists src unrendered ("{{ inventory_dir }}/mm2/..."): render it as Ansible would.
            inventory_dir = str(pathlib.Path(INVENTORY).resolve().parent)
            src = SandboxedEnvironment().from_string(flow["src"]).render(inventory_dir=inventory_dir)
            team = yaml.safe_load(pathlib.Path(src).read_text())
            source = team["clusters"][team["flow"]["source"]]
            produce_and_read(source["bootstrap_servers"])
            copied = f'sum(kafka_mm2_records_total{{job="mm2-{name}", topic="{DEMO_TOPIC}"}})'
            judged = f'infra_obs_mm2_group_can_roll_back{{job="rollback-readiness-{name}", group="{DEMO_GROUP}"}}'
            wait_for(lambda: prometheus_query(url, copied) and prometheus_query(url, judged), 120)  # noqa: B023
            records = first_value(url, copied)
            group = prometheus_query(url, judged)
            where = f"{team['flow']['source']} ({', '.join(source['bootstrap_servers'])})"
            print(f"  {DEMO_RECORDS} records produced to {DEMO_TOPIC} on {where}; MM2 has copied {records} of it")
            verdict = "yes" if group and group[0]["value"][1] == "1" else "not yet" if group else "not judged"
            print(f"  group {DEMO_GROUP} read them all; it can roll back now: {verdict}")
            print(
                "  dashboard: roles/mm2/files/dashboards/mm2.json; roll a group over with playbooks/mm2_rollback.yml "
                "(README: Kafka MirrorMaker 2)"
            )
            ok = ok and len(connectors) >= 2 and bool(readiness) and records != "-" and bool(group)
    return ok


def quality_checks(lab: dict, url: str) -> bool:
    """Each standing checker's results in Prometheus: every check of inventories/lab/checks/ passing."""
    hostvars = lab["_meta"]["hostvars"]
    checkers = lab.get("quality_checkers", {}).get("hosts", [])

    def results():
        found = prometheus_query(url, "infra_obs_quality_check_success")
        nodes = {s["metric"].get("node") for s in found}
        passing = all(s["value"][1] == "1" for s in found)
        return found if set(checkers) <= nodes and passing else None

    found = wait_for(results, 90) or prometheus_query(url, "infra_obs_quality_check_success")
    print("\nService-quality checkers (checks: inventories/lab/checks/; `make verify` runs them once as a gate):")
    ok = bool(checkers)
    for checker in checkers:
        mine = [s for s in found if s["metric"].get("node") == checker]
        failed = sorted(f"{s['metric']['check']} ({s['metric']['target']})" for s in mine if s["value"][1] != "1")
        print(
            f"  {checker:<12} {len(mine) - len(failed)} of {len(mine)} results passing"
            f"{': failing ' + ', '.join(failed) if failed else ''}"
            f"  (http://{hostvars[checker]['lab_ipv4']}:9429/results.json)"
        )
        ok = ok and bool(mine) and not failed
    return ok


def cost_system(lab: dict, url: str) -> bool:
    """YACE's view of the lab's AWS in Prometheus (the seeded instances, with tags), the collector's health and where
    its reports are."""
    hostvars = lab["_meta"]["hostvars"]
    yace = lab.get("yace_exporters", {}).get("hosts", [])
    collectors = lab.get("cost_collectors", {}).get("hosts", [])
    if not yace and not collectors:
        return True

    def seen():
        found = prometheus_query(url, 'count by (exported_region) ({__name__=~"aws_(ec2|rds)_info"})')
        return found and prometheus_query(url, "infra_obs_cost_build_info") and found

    found = wait_for(seen, 180) or []
    print("\nCost and utilisation (docs/cost.md): YACE on " + ", ".join(yace) + ", reading the lab's AWS (moto)")
    for series in found:
        region, count = series["metric"].get("exported_region", "?"), series["value"][1]
        print(f"  {region:<15} {count:>4} EC2 and RDS instances (aws_ec2_info, aws_rds_info)")
    for collector in collectors:
        print(
            f"  collector on {collector}: health http://{hostvars[collector]['lab_ipv4']}:9312/metrics; its timer runs"
            f" daily; one run now: podman exec {hostvars[collector]['ansible_host']} systemctl start"
            " infra-obs-cost-collect (records in MariaDB, database infra_obs_cost; then each team's report at"
            f" http://{hostvars[collector]['lab_ipv4']}:9312/reports/)"
        )
    return bool(found)


def global_view(lab: dict) -> bool:
    """Thanos query's address, and one cross-region question through it: the probe mesh's ICMP loss between the
    regions, deduplicated over Prometheus replicas."""
    hosts = lab.get("thanos_global", {}).get("hosts", [])
    if not hosts:
        return True
    url = f"http://{lab['_meta']['hostvars'][hosts[0]]['lab_ipv4']}:10904"
    by_regions = 'sum by (src_region, dst_region) (increase(infra_obs_probe_{}_total{{probe="icmp"}}[2m]))'
    promql = f"1 - {by_regions.format('received')} / {by_regions.format('sent')}"

    def answered():
        try:
            reply = requests.get(url + "/api/v1/query", params={"query": promql, "dedup": "true"}, timeout=10).json()
        except (requests.RequestException, ValueError):
            return []
        return reply.get("data", {}).get("result", [])

    found = wait_for(answered, 90) or []
    print(f"\nGlobal view: Thanos query at {url} (PromQL API and UI; the sidecar uploads 2-hour blocks to the"
          " lab's bucket, the store gateway serves them)")  # fmt: skip
    print("ICMP loss over 2 min between regions, through Thanos (source region -> destination region):")
    for series in sorted(found, key=lambda r: sorted(r["metric"].items())):
        labels = series["metric"]
        src, dst = labels.get("src_region", "?"), labels.get("dst_region", "?")
        print(f"  {src:<15} -> {dst:<15} {float(series['value'][1]):.3f}")
    return bool(found)


def alerting(lab: dict) -> bool:
    """Each Alertmanager's address, its cluster and the alerts it holds, and what the lab's alert sink was sent."""
    hostvars = lab["_meta"]["hostvars"]
    hosts = lab.get("alertmanagers", {}).get("hosts", [])
    if not hosts:
        return True
    print("\nAlerting (playbooks/alerting.yml): Alertmanager, one cluster; every Prometheus sends to each member")
    ok = True
    for host in hosts:
        url = f"http://{hostvars[host]['lab_ipv4']}:9093"

        def clustered(url=url):
            try:
                status = requests.get(url + "/api/v2/status", timeout=10).json()
            except (requests.RequestException, ValueError):
                return None
            return status if len(status["cluster"].get("peers") or []) == len(hosts) else None

        status = wait_for(clustered, 90)
        alerts = requests.get(url + "/api/v2/alerts", timeout=10).json() if status else []
        firing = sorted({a["labels"]["alertname"] for a in alerts if a["status"]["state"] == "active"})
        members = len(status["cluster"]["peers"]) if status else 0
        print(f"  {host:<12} {url}  (UI and API) cluster of {members}; {len(alerts)} alerts held, active: "
              f"{', '.join(firing) or 'none'}")  # fmt: skip
        ok = ok and bool(status)
    for sink in lab.get("alert_sink_lab", {}).get("hosts", []):
        url = f"http://{hostvars[sink]['lab_ipv4']}:9099/notifications"
        received = requests.get(url, timeout=10).json()
        by_receiver = Counter(notification["receiver"] for notification in received)
        counts = ", ".join(f"{name} {count}" for name, count in sorted(by_receiver.items())) or "none yet"
        print(f"  the lab's receivers (alert sink on {sink}): {url}  notifications by receiver: {counts}")
    return ok


def first_value(url: str, promql: str) -> str:
    """The first series' value of an instant query, or "-" when there is none."""
    found = prometheus_query(url, promql)
    return found[0]["value"][1] if found else "-"


def health_summary(url: str) -> bool:
    """One line per system, from the global view: targets up by job, the mesh's loss, MM2's lag, the whitelist's
    decisions, the cost collector's last batch, the alerts firing."""
    print(f"\nHealth by system, through {url}:")
    jobs = {s["metric"]["job"]: s["value"][1] for s in prometheus_query(url, "count by (job) (up)")}
    up = {s["metric"]["job"]: s["value"][1] for s in prometheus_query(url, "count by (job) (up == 1)")}
    print("  targets up by job: " + ", ".join(f"{job} {up.get(job, '0')}/{n}" for job, n in sorted(jobs.items())))
    loss = first_value(url, "max(infra_obs_probe:path_loss_ratio:5m)")
    print(f"  probe mesh: worst path loss over 5 min {loss}")
    lag = first_value(url, 'sum(kafka_mm2:flow_records_lag{job=~"mm2-.*"})')
    print(f"  MM2: replication lag {lag} records")
    decisions = prometheus_query(url, "sum by (decision) (increase(infra_obs_whitelist_requests_total[1h]))")
    counted = ", ".join(f"{s['metric']['decision']} {float(s['value'][1]):.0f}" for s in decisions) or "-"
    print(f"  whitelist: decisions in the last hour: {counted}")
    written = first_value(url, "max(infra_obs_cost_last_run_records_written)")
    print(f"  cost collector: records written by its last run {written} (its timer runs daily)")
    firing = prometheus_query(url, 'count by (alertname) (ALERTS{alertstate="firing"})')
    print("  alerts firing: " + (", ".join(sorted(s["metric"]["alertname"] for s in firing)) or "none"))
    return sum(int(n) for n in jobs.values()) > 0 and jobs.keys() == up.keys()


def all_hosts(lab: dict, group: str) -> list[str]:
    """The hosts of an inventory group, its children's included."""
    entry = lab.get(group, {})
    return entry.get("hosts", []) + [h for child in entry.get("children", []) for h in all_hosts(lab, child)]


def regional_prometheus(lab: dict, host: str) -> bool:
    """A region's Prometheus: its address and every instance registered in its region's Consul datacenter
    discovered and up, by region and AZ."""
    container = lab["_meta"]["hostvars"][host]["ansible_host"]
    url = f"http://{container_ip(container)}:9090"
    expected = registered_instances(container)

    def all_discovered_and_up():
        targets = active_targets(url)
        return len(targets) == expected and all(t["health"] == "up" for t in targets) and targets

    targets = wait_for(all_discovered_and_up, 90) or active_targets(url)
    region = lab["_meta"]["hostvars"][host]["region"]
    print(f"\nPrometheus of {region} on {host}: its web UI at {url}/targets  (API: {url}/api/v1/targets)")
    print(f"{len(targets)} targets discovered through Consul ({expected} instances registered with the tag metrics"
          f" in its datacenter):\n")  # fmt: skip
    print(f"{'REGION':<15} {'AZ':<15} {'JOB':<26} {'NODE':<15} {'INSTANCE':<20} HEALTH")
    for target in sorted(targets, key=lambda t: [t["labels"].get(k, "") for k in ("region", "az", "job", "node")]):
        labels = target["labels"]
        print(
            f"{labels.get('region', '?'):<15} {labels.get('az', '?'):<15} {labels['job']:<26} "
            f"{labels.get('node', ''):<15} {labels['instance']:<20} {target['health']}"
        )
    complete = len(targets) == expected and all(t["health"] == "up" for t in targets)
    if not complete:
        print(f"\nnot every instance registered in {region} is up in its Prometheus after 90 s", file=sys.stderr)
    return complete


def dashboards_through(url: str, regional: list[str]) -> bool:
    """Every panel query and variable of every dashboard we ship, as Grafana sends it, through url: each one a
    regional Prometheus answers must be answered there too. Those no Prometheus answers yet are listed (the cost
    collector's findings come with its daily run over two weeks of history)."""
    print(f"\nDashboards (roles/*/files/dashboards/) through {url}, against the regional Prometheus servers:")
    ok = True
    for path in dashboards():
        total = len(queries(json.loads(path.read_text()))) + len(variable_queries(json.loads(path.read_text())))

        def missing():
            direct = set.intersection(*(set(queries_without_data(server, path, {})) for server in regional))  # noqa: B023
            return direct, set(queries_without_data(url, path, {})) - direct  # noqa: B023

        wait_for(lambda: not missing()[1], 180)
        nowhere, only_direct = missing()
        print(f"  {path.name:<24} {total - len(nowhere) - len(only_direct)} of {total} queries answered"
              + (f", {len(nowhere)} with no data in any Prometheus yet" if nowhere else "")
              + "".join(f"\n    answered by Prometheus, not through Thanos: {name}: {query}"
                        for name, query in sorted(only_direct)))  # fmt: skip
        ok = ok and not only_direct
    return ok


def main() -> int:
    lab = inventory()
    complete = all([regional_prometheus(lab, host) for host in lab["prometheus"]["hosts"]])
    regional = [f"http://{lab['_meta']['hostvars'][host]['lab_ipv4']}:9090" for host in lab["prometheus"]["hosts"]]
    # Cross-region questions go to Thanos query (the regions' Prometheus servers, deduplicated), else to the one
    # Prometheus.
    global_hosts = lab.get("thanos_global", {}).get("hosts", [])
    if global_hosts:
        url = f"http://{lab['_meta']['hostvars'][global_hosts[0]]['lab_ipv4']}:10904"
    else:
        url = f"http://{container_ip(lab['_meta']['hostvars'][lab['prometheus']['hosts'][0]]['ansible_host'])}:9090"
    # Each part prints what it found, then, if it failed, why, and the demo goes on to the next.
    parts = [
        (lambda: probe_mesh(lab, url), "not every pair of probe nodes is measured after 90 s; see above"),
        (lambda: whitelist_requests(lab), "the whitelist proxy did not answer 200 and 403 as its rules say; see above"),
        (lambda: mm2_flows(lab, url),
         "an MM2 flow is not running, its readiness check does not pass, or the demo's records were not copied and"
         " its group not judged within 2 min; see above"),
        (lambda: quality_checks(lab, url), "a quality checker has no results or a failing check after 90 s; see above"),
        (lambda: cost_system(lab, url),
         "Prometheus has no YACE series of the lab's AWS or no collector health after 180 s"),
        (lambda: global_view(lab), "Thanos query has not answered the mesh's loss between regions after 90 s"),
        (lambda: health_summary(url), "a job has no target up; see the health summary"),
        (lambda: alerting(lab), "an Alertmanager is not ready in a whole cluster after 90 s"),
        (lambda: dashboards_through(url, regional),
         "a dashboard query answered by Prometheus is not answered through Thanos after 180 s"),
    ]  # fmt: skip
    ok = complete
    for part, failure in parts:
        if not part():
            print(f"\n{failure}", file=sys.stderr)
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
