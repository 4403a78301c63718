"""Global view benchmark: every request of the dashboards the roles ship, as Grafana sends it, timed through Thanos
query (deduplicating) and against each regional Prometheus directly; then 14 days of the probe mesh's recorded loss
backfilled into the bucket as blocks, and the mesh matrix's 14-day range query timed through Thanos query.

Prints a Markdown report on stdout (progress on stderr). Exits 1 when something is wrong: a query with data directly
but none through Thanos, or another number of series, an error or a partial answer, a backfill that query does not
answer in full; a missed goal is reported as "goal missed". See README.md in this directory.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "scripts")]

import boto3  # noqa: E402
import requests  # noqa: E402
import yaml  # noqa: E402
from botocore.exceptions import BotoCoreError, ClientError  # noqa: E402
from dashboards import dashboards, instantiate, label_values_request, query_targets, variable_queries  # noqa: E402
from labinfo import wait_for  # noqa: E402
from thanos_blocks import blocks_in, upload_block  # noqa: E402

PROMTOOL = Path(os.environ.get("INFRA_OBS_CACHE", "/var/cache/infra-obs")) / "bin" / "promtool"
INVENTORY = ROOT / "inventories" / "lab" / "hosts.yml"
GOAL_RATIO, GOAL_MATRIX_SECONDS = 2.0, 2.0
DASHBOARD_RANGE = 3600
# Grafana's Prometheus data source: its minimum interval (the default, and the lab's scrape interval) and one point
# per pixel of a panel about 1000 pixels wide; kbn.roundInterval from 15 s up (an interval under the first value
# becomes the second, in seconds).
MIN_INTERVAL, PANEL_POINTS = 15, 1000
ROUNDING = ((17.5, 15), (25, 20), (45, 30), (90, 60), (210, 120), (450, 300), (750, 600), (1050, 900), (1500, 1200),
            (2700, 1800), (5400, 3600), (9000, 7200), (16200, 10800), (32400, 21600), (86400, 43200))  # fmt: skip
LOOKBACK = 300  # PromQL's default lookback: a step sees the last sample of the 5 minutes before it
MATRIX_PANEL = "Loss: source host x destination host"
RECORDED = "infra_obs_probe:path_loss_ratio:5m"
# The lab's evaluation_interval: the store gateway decodes as many samples as for the real recorded series.
SAMPLE_INTERVAL = 15
LOSS_SHARE = 0.01  # of the 5-minute windows with some loss: a healthy mesh, not a flat zero
# About 162 h per block (promtool takes the largest of its 2h x 3^n ranges that fits): a few blocks per region, as
# the compactor leaves two weeks of history (its 2-day and 14-day levels).
MAX_BLOCK_DURATION = "168h"
WAIT_SECONDS = 300
# Deduplicated on replica as the dashboards' data source asks; a store's failure fails the query instead of leaving
# out its series with a warning.
THANOS = {"dedup": "true", "partial_response": "false"}


class BenchFailure(Exception):
    """Something did not work: its figures would mean nothing."""


class Node(NamedTuple):
    name: str
    region: str
    az: str
    addresses: tuple[str, ...]


@dataclass
class Request:
    name: str
    kind: str
    path: str
    params: dict


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def lab_hosts(group: str) -> dict[str, dict]:
    """The lab inventory's hosts of group and their variables, as Ansible resolves them."""
    listed = subprocess.run(["ansible-inventory", "-i", str(INVENTORY), "--list", "--limit", group],
                            check=True, capture_output=True, text=True).stdout  # fmt: skip
    return dict(sorted(json.loads(listed)["_meta"]["hostvars"].items()))


def grafana_step(seconds: float) -> int:
    """The step Grafana asks for over a range of that many seconds (its interval, rounded as it rounds it)."""
    interval = seconds / PANEL_POINTS
    if interval < MIN_INTERVAL:
        return MIN_INTERVAL
    return next((value for below, value in ROUNDING if interval < below), 86400)


def aligned(at: float, step: int) -> int:
    """A time aligned down to the step, as Grafana aligns a range query's start and end."""
    return int(at // step * step)


def api(session: requests.Session, url: str, path: str, params: dict) -> tuple[float, object]:
    """Seconds the GET took (the whole answer read) and its data; an error raises."""
    start = time.perf_counter()
    response = session.get(url + path, params=params, timeout=120)
    seconds = time.perf_counter() - start
    body = response.json() if response.headers.get("Content-Type", "").startswith("application/json") else {}
    if response.status_code != 200 or body.get("status") != "success":
        raise BenchFailure(f"{url}{path} {params}: HTTP {response.status_code} {response.text[:500]}")
    return seconds, body["data"]


def answer(data: object) -> list:
    """The series of a query's data, or the values of a label values request."""
    return data["result"] if isinstance(data, dict) else data


def dashboard_requests(dashboard: dict, end: float) -> list[Request]:
    """Every request of the dashboard over the last hour, variables at "All": label values for the variables, a
    range query per panel target (an instant query for a table's instant target)."""
    step = grafana_step(DASHBOARD_RANGE)
    start = end - DASHBOARD_RANGE
    found = []
    for name, selector, label in variable_queries(dashboard):
        path, params = label_values_request(selector, label, {})
        found.append(Request(f"${name}: label_values({selector}, {label})", "label values", path,
                             {**params, "start": start, "end": end}))  # fmt: skip
    for title, target in query_targets(dashboard):
        query = instantiate(target["expr"], {})
        if target.get("instant") and not target.get("range"):
            found.append(Request(f"{title}: `{query}`", "instant", "/api/v1/query", {"query": query, "time": end}))
        else:
            params = {"query": query, "start": aligned(start, step), "end": aligned(end, step), "step": step}
            found.append(Request(f"{title}: `{query}`", f"range, step {step} s", "/api/v1/query_range", params))
    return found


def compare(session: requests.Session, args, request: Request) -> tuple[list[float], float | None, str]:
    """The request against every regional Prometheus and through Thanos query: answered once (checked), then timed
    in turn `repeats` times. The median ms of each (none for a request without data directly) and what is wrong."""
    servers = [(url, request.params) for url in args.prometheus] + [(args.query, {**request.params, **THANOS})]
    *direct, through = [answer(api(session, url, request.path, params)[1]) for url, params in servers]
    if not any(direct):
        return [], None, ""
    wrong = ""
    # Series as labelled directly (a region's told apart by their own labels, replicas one); label values have none.
    series = {frozenset(s["metric"].items()) for result in direct for s in result if isinstance(s, dict)}
    if not through:
        wrong = "no data through Thanos"
    elif series and len(through) != len(series):
        wrong = f"{len(through)} series through Thanos, {len(series)} directly"
    rounds = [[api(session, url, request.path, params)[0] for url, params in servers] for _ in range(args.repeats)]
    *direct_ms, thanos_ms = (statistics.median(column) * 1000 for column in zip(*rounds, strict=True))
    return direct_ms, thanos_ms, wrong


def mesh(nodes: int | None) -> list[Node]:
    """The probe nodes (by default the lab's probe_nodes), beyond the lab's made-up ones over its AZs, at addresses of
    the benchmarking range (198.18.0.0/15) and the documentation prefix. Each peer is probed at its IPv4 and IPv6
    address, as in the lab (a path is node, target)."""
    hosts = lab_hosts("probe_nodes")
    lab = [Node(name, v["region"], v["az"], (v["lab_ipv4"], v["lab_ipv6"])) for name, v in hosts.items()]
    zones = sorted({(n.region, n.az) for n in lab})
    nodes = nodes or len(lab)
    made_up = [Node(f"probe-{i:04d}", *zones[i % len(zones)], (f"198.18.{i // 256}.{i % 256}", f"2001:db8::{i:x}"))
               for i in range(len(lab), nodes)]  # fmt: skip
    return (lab + made_up)[:nodes]


def write_openmetrics(path: Path, nodes: list[Node], region: str, start: int, end: int) -> None:
    """The recorded loss of every path from the region's nodes, labelled as its rule labels it (rules/
    probe_exporter.rules.yml: node, src_*, dst_host, dst_*, target), a sample every SAMPLE_INTERVAL s."""
    with path.open("w") as out:
        out.write(f"# TYPE {RECORDED} gauge\n")
        for src in (n for n in nodes if n.region == region):
            for dst, target in ((d, a) for d in nodes if d != src for a in d.addresses):
                labels = (f'node="{src.name}",src_region="{src.region}",src_az="{src.az}",dst_host="{dst.name}",'
                          f'dst_region="{dst.region}",dst_az="{dst.az}",target="{target}"')  # fmt: skip
                rng = random.Random(labels)
                for window in range(start, end, LOOKBACK):
                    loss = round(rng.uniform(0.003, 0.2), 3) if rng.random() < LOSS_SHARE else 0
                    out.writelines(f"{RECORDED}{{{labels}}} {loss} {t}\n" for t in range(window, window + LOOKBACK,
                                                                                         SAMPLE_INTERVAL))  # fmt: skip
        out.write("# EOF\n")


def backfill(s3, bucket: str, nodes: list[Node], *, days: int, marker: str, work: Path) -> None:
    """The days before the last day, as blocks per source region (each region's Prometheus records its own nodes'
    paths) with Thanos's metadata; each block's meta.json last, as Thanos marks a block complete."""
    end = aligned(time.time() - 86400, 3600)
    for region in sorted({n.region for n in nodes}):
        text, blocks = work / f"{region}.om", work / region
        progress(f"backfill: {days} days of {region}'s paths -> {blocks}")
        write_openmetrics(text, nodes, region, end - days * 86400, end)
        subprocess.run([str(PROMTOOL), "tsdb", "create-blocks-from", "openmetrics",
                        f"--max-block-duration={MAX_BLOCK_DURATION}", str(text), str(blocks)],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        text.unlink()
        for block in blocks_in(blocks):
            # replica and bench are external labels no Prometheus has: the compactor keeps the backfill in a group
            # of its own, never overlapping a sidecar's blocks, and query never merges it with them.
            upload_block(s3, bucket, block, {"region": region, "replica": "backfill", "bench": marker})
            progress(f"backfill: uploaded {block.name}")


def backfilled(s3, bucket: str, marker: str) -> tuple[int, int] | None:
    """The first and last sample (s) of the bucket's backfill blocks (compacted ones too), or None when it has none;
    a backfill of another mesh or length is refused (its series would be counted with this one's)."""
    window = None
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for key in (o["Key"] for o in page.get("Contents", [])):
            if key.count("/") != 1 or not key.endswith("/meta.json"):
                continue
            meta = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            found = meta.get("thanos", {}).get("labels", {}).get("bench")
            if found and found != marker:
                raise BenchFailure(f"the bucket holds another backfill (bench={found}, {key}), not {marker}:"
                                   " run with its options, or remove it (the lab's bucket lives in memory:"
                                   " make lab-down)")  # fmt: skip
            if found:
                first, last = meta["minTime"] // 1000, (meta["maxTime"] - 1) // 1000
                window = (min(first, window[0]), max(last, window[1])) if window else (first, last)
    return window


def mesh_matrix(session: requests.Session, args, nodes: list[Node], first: int, last: int) -> dict:
    """The matrix's range query over the backfill through Thanos query at Grafana's step, once the answer holds
    every path of the mesh with all its backfilled points (waited for: the store gateway syncs), then timed."""
    probe_mesh = json.loads(next(p for p in dashboards() if p.name == "probe_mesh.json").read_text())
    query = next(instantiate(t["expr"], {}) for title, t in query_targets(probe_mesh) if title == MATRIX_PANEL)
    step = grafana_step(last - first)
    params = {"query": query, "start": aligned(first, step), "end": aligned(last, step), "step": step, **THANOS}
    steps = range(params["start"], params["end"] + 1, step)
    per_path = sum(1 for t in steps if first <= t < last + LOOKBACK)
    cells = {(s.name, d.name) for s in nodes for d in nodes if d != s}

    def incomplete_paths() -> list[str]:
        found = {(s["metric"]["node"], s["metric"]["dst_host"]): len(s["values"]) for s in answer(
            api(session, args.query, "/api/v1/query_range", params)[1])}  # fmt: skip
        return [f"{src}->{dst}: {found.get((src, dst), 0)}" for src, dst in sorted(cells)
                if found.get((src, dst), 0) < per_path]  # fmt: skip

    progress(f"matrix: waiting up to {WAIT_SECONDS} s for Thanos query to answer the backfill in full")
    if not wait_for(lambda: not incomplete_paths(), WAIT_SECONDS, 5.0):
        raise BenchFailure(f"Thanos query does not answer the backfilled matrix in full after {WAIT_SECONDS} s (an"
                           f" interrupted upload?); points of {per_path} per path: "
                           + ", ".join(incomplete_paths()[:5]))  # fmt: skip
    timings, result = [], []
    for _ in range(args.repeats):
        seconds, data = api(session, args.query, "/api/v1/query_range", params)
        timings.append(seconds)
        result = answer(data)
    return {"query": query, "step": step, "cells": len(cells), "series": len(result), "timings": timings,
            "points": sum(len(s["values"]) for s in result)}  # fmt: skip


def region(session: requests.Session, url: str) -> str:
    """A Prometheus's region external label (from its configuration), else its URL."""
    config = yaml.safe_load(api(session, url, "/api/v1/status/config", {})[1]["yaml"])
    return (config.get("global", {}).get("external_labels") or {}).get("region", url)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--query", default="http://10.89.60.10:10904", help="Thanos query's HTTP address")
    parser.add_argument("--prometheus", action="append", help="a regional Prometheus (repeatable, or a comma list;"
                        " default: the lab inventory's prometheus hosts at port 9090)")  # fmt: skip
    parser.add_argument("--s3", default="http://10.89.60.1:19050", help="the bucket's S3 endpoint")
    parser.add_argument("--bucket", default="infra-obs-thanos")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each request (default 5)")
    parser.add_argument("--days", type=int, default=14, help="days of backfilled mesh history (default 14)")
    parser.add_argument("--mesh-nodes", type=int, help="probe nodes of the backfilled mesh (default: the lab's)")
    args = parser.parse_args()
    if args.prometheus:
        args.prometheus = [url for value in args.prometheus for url in value.split(",") if url]
    else:
        args.prometheus = [f"http://{v['lab_ipv4']}:9090" for v in lab_hosts("prometheus").values()]
    return args


def report_dashboards(session: requests.Session, args, wrong: list[str]) -> None:
    regions = [region(session, url) for url in args.prometheus]
    # What else the machine runs moves the ratio (Thanos's path spans five processes): reported with it.
    load = os.getloadavg()[0]
    end = time.time()
    ratios, slowest, through_thanos = [], [], []
    print(f"## Dashboard requests: {args.repeats} timed runs each, median ms\n")
    print(f"Over the last hour (range queries at Grafana's step for it, {grafana_step(DASHBOARD_RANGE)} s), every"
          " variable at All; through Thanos query with dedup=true and against each regional Prometheus directly (the"
          " ratio is to the slowest of them).\n")  # fmt: skip
    for path in dashboards():
        progress(f"dashboards: {path.name}")
        print(f"### {path.name}\n")
        print(f"| request | kind | {' | '.join(f'direct ms ({r})' for r in regions)} | thanos ms | ratio |")
        print("|---|---|" + "---:|" * (len(regions) + 2))
        for request in dashboard_requests(json.loads(path.read_text()), end):
            try:
                direct_ms, thanos_ms, problem = compare(session, args, request)
            except BenchFailure as error:
                direct_ms, thanos_ms, problem = [], None, str(error)
            name, note = (text.replace("|", "\\|") for text in (request.name, problem))
            if problem:
                wrong.append(f"{path.name}, {request.name}: {problem}")
            if thanos_ms is None:
                print(f"| {name} | {request.kind} |" + " |" * len(regions) + f" | {note or 'no data (skipped)'} |")
                continue
            ratios.append(thanos_ms / max(direct_ms))
            slowest.append(max(direct_ms))
            through_thanos.append(thanos_ms)
            print(f"| {name} | {request.kind} | {' | '.join(f'{ms:.1f}' for ms in direct_ms)} | {thanos_ms:.1f} |"
                  f" {ratios[-1]:.2f}{' WRONG: ' + note if note else ''} |")  # fmt: skip
        print()
    if ratios:
        median = statistics.median(ratios)
        verdict = "goal met" if median <= GOAL_RATIO else "goal missed"
        print(f"Median ratio over the {len(ratios)} requests with data: **{median:.2f}** (goal: at most"
              f" {GOAL_RATIO:g}): {verdict}. Median answer {statistics.median(slowest):.1f} ms directly (the slowest"
              f" Prometheus), {statistics.median(through_thanos):.1f} ms through Thanos; load average before the run"
              f" {load:.2f} on {os.cpu_count()} CPUs.\n")  # fmt: skip
    else:
        print("No request found data directly: no ratio.\n")


def report_matrix(session: requests.Session, args) -> None:
    nodes = mesh(args.mesh_nodes)
    marker = f"global-{len(nodes)}-nodes-{args.days}d"
    s3 = boto3.client("s3", endpoint_url=args.s3, region_name="us-east-1", aws_access_key_id="lab",
                      aws_secret_access_key="lab")  # fmt: skip
    window = backfilled(s3, args.bucket, marker)
    uploaded = window is None
    if uploaded:
        with tempfile.TemporaryDirectory(prefix="infra-obs-bench-global-") as work:
            backfill(s3, args.bucket, nodes, days=args.days, marker=marker, work=Path(work))
        window = backfilled(s3, args.bucket, marker)
    first, last = window
    matrix = mesh_matrix(session, args, nodes, first, last)
    median = statistics.median(matrix["timings"])
    verdict = "goal met" if median <= GOAL_MATRIX_SECONDS else "goal missed"
    print(f"## The mesh matrix over {args.days} days (backfilled), through Thanos query\n")
    span = " to ".join(time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t)) for t in (first, last))
    print(f"`{matrix['query']}` from {span} at Grafana's step for it ({matrix['step'] // 60} min), dedup=true,"
          f" {args.repeats} timed runs: {len(nodes)} probe nodes, {matrix['cells']} paths (a sample every"
          f" {SAMPLE_INTERVAL} s per target; blocks labelled bench=\"{marker}\","
          f" {'uploaded by this run' if uploaded else 'already in the bucket'}).\n")  # fmt: skip
    print("| series | points | median | min | max | goal |")
    print("|---:|---:|---:|---:|---:|---|")
    print(f"| {matrix['series']} | {matrix['points']:,} | **{median:.2f} s** | {min(matrix['timings']):.2f} s |"
          f" {max(matrix['timings']):.2f} s | under {GOAL_MATRIX_SECONDS:g} s: {verdict} |")  # fmt: skip


# What ends a run as wrong: a server or the bucket out of reach, promtool failing, or a BenchFailure.
FAILURES = (BenchFailure, BotoCoreError, ClientError, requests.RequestException, subprocess.CalledProcessError)


def main() -> int:
    args = parse_args()
    session = requests.Session()
    wrong: list[str] = []
    try:
        report_dashboards(session, args, wrong)
        report_matrix(session, args)
    except FAILURES as error:
        wrong.append(str(error))
    for problem in wrong:
        print(f"\nWRONG: {problem}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
