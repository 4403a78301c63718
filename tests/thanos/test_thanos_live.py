"""Thanos as the role runs it: the role's objstore file and units, rendered by Ansible from its defaults (after its
preflight), run as they are (each unit's ExecStart) with the thanos scripts/build-thanos.sh built, against real
Prometheus servers and the lab's S3 server (moto). Two regions: eu-central-1 with two replicas (a and b, which
scrape the same targets) and us-east-1 with one; each holds a backfilled hour of history (older than its head, so
a block its sidecar uploads). Query asks the three sidecars and the store gateway."""

import json
import os
import pathlib
import subprocess
import time

import boto3
import pytest
import requests
import yaml
from lab_servers import Started, exec_start
from labinfo import render_role, wait_for
from thanos_blocks import blocks_in, upload_block

CACHE = pathlib.Path(os.environ.get("INFRA_OBS_CACHE", "/var/cache/infra-obs"))
THANOS = CACHE / "bin" / "thanos"
PROMTOOL = CACHE / "bin" / "promtool"
BUCKET = "infra-obs-thanos"
DEADLINE = 180
REPLICAS = {"euc1-a": ("eu-central-1", "a"), "euc1-b": ("eu-central-1", "b"), "use1-a": ("us-east-1", "a")}
HISTORY_HOURS = (5, 4)  # the backfilled hour: from 5 to 4 hours ago
PLACEMENT = {"region": "eu-central-1", "az": "eu-central-1a",
             "ansible_facts": {"default_ipv4": {"address": "192.0.2.10"}}}  # fmt: skip


def waited(check, what: str):
    """check's first truthy value within DEADLINE seconds, or a failure naming what was awaited."""
    found = wait_for(check, DEADLINE, 1.0)
    assert found, f"gave up waiting for {what}"
    return found


def render(directory: pathlib.Path, extra: dict):
    """The role's preflight, then its objstore template and a unit per component, written into directory/out."""
    templates = [
        {"src": "objstore.yml.j2", "dest": "objstore.yml", "no_log": True},
        {"src": "thanos.service.j2", "dest": "thanos-{{ item }}.service", "loop": "{{ thanos_components }}"},
    ]
    return render_role(directory, "thanos", templates, {
        "thanos_config_dir": str(directory / "out"), "thanos_binary_dir": str(THANOS.parent),
        "thanos_archive_url": "http://mirror.invalid/thanos.tar.gz", **extra}, placement=PLACEMENT)  # fmt: skip


def bucket_client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="lab",
                        aws_secret_access_key="lab")  # fmt: skip


def objstore_vars(s3_url: str) -> dict:
    """The role's bucket variables for the bucket BUCKET on a moto server."""
    return {"thanos_objstore_bucket": BUCKET, "thanos_objstore_endpoint": s3_url.removeprefix("http://"),
            "thanos_objstore_insecure": True, "thanos_objstore_region": "us-east-1",
            "thanos_objstore_access_key": "lab", "thanos_objstore_secret_key": "lab"}  # fmt: skip


def history(path: pathlib.Path, now: int) -> pathlib.Path:
    start, end = (now - h * 3600 for h in HISTORY_HOURS)
    lines = ["# TYPE lab_history gauge"] + [f'lab_history{{site="lab"}} 1 {t}' for t in range(start, end, 60)]
    path.write_text("\n".join([*lines, "# EOF", ""]))
    return path


@pytest.fixture(scope="module")
def global_view(start_moto, start_prometheus, free_port, tmp_path_factory):
    if not os.access(THANOS, os.X_OK):
        pytest.fail(f"{THANOS} is missing: scripts/fetch-artifacts.sh builds it")
    work = tmp_path_factory.mktemp("thanos")
    s3 = start_moto()
    bucket_client(s3.url).create_bucket(Bucket=BUCKET)
    objstore = objstore_vars(s3.url)
    now = int(time.time())
    components = Started(work)
    prometheus, sidecars = {}, {}
    try:
        for name, (region, replica) in REPLICAS.items():
            data = work / f"prometheus-{name}"
            run = subprocess.run([str(PROMTOOL), "tsdb", "create-blocks-from", "openmetrics",
                                  str(history(work / f"{name}.om", now)), str(data)],
                                 capture_output=True, text=True, check=False)  # fmt: skip
            assert run.returncode == 0, run.stderr
            config = {"global": {"scrape_interval": "15s", "external_labels": {"region": region, "replica": replica}}}
            # As a sidecar needs it: blocks cut every 2 hours and never compacted locally.
            prometheus[name] = start_prometheus(data, "--storage.tsdb.min-block-duration=2h",
                                                "--storage.tsdb.max-block-duration=2h",
                                                config=yaml.safe_dump(config))  # fmt: skip
            http, grpc = free_port(), free_port()
            out, run = render(work / f"render-{name}", {
                **objstore, "thanos_components": ["sidecar"], "thanos_sidecar_tsdb_path": str(data),
                "thanos_sidecar_prometheus_url": prometheus[name].url, "thanos_sidecar_http_port": http,
                "thanos_sidecar_grpc_port": grpc})  # fmt: skip
            assert run.rc == 0, run.output
            sidecars[name] = (components.start(exec_start(out / "thanos-sidecar.service"), f"sidecar-{name}", http,
                                               "/-/ready", f"the sidecar of {name}"), grpc)  # fmt: skip
        ports = {name: free_port() for name in ("store_http", "store_grpc", "compact_http", "query_http", "query_grpc")}
        out, run = render(work / "render-global", {
            **objstore, "thanos_components": ["store", "compact", "query"], "thanos_data_dir": str(work / "data"),
            **{f"thanos_{k}_port": v for k, v in ports.items()},
            "thanos_query_endpoints": [f"127.0.0.1:{grpc}" for _, grpc in sidecars.values()]
            + [f"127.0.0.1:{ports['store_grpc']}"]})  # fmt: skip
        assert run.rc == 0, run.output
        for component in ("store", "compact"):
            (work / "data" / component).mkdir(parents=True)  # the role's configure.yml makes them
        started = {
            component: components.start(exec_start(out / f"thanos-{component}.service"), component,
                                        ports[f"{component}_http"], "/-/ready", f"thanos {component}")
            for component in ("store", "compact", "query")
        }  # fmt: skip
        yield {"s3": s3.url, "now": now, "prometheus": prometheus, "sidecars": sidecars, "out": out, **started}
    finally:
        components.stop()


def query(view, promql: str, at: int, dedup: bool = True) -> list[dict]:
    reply = requests.get(view["query"].url + "/api/v1/query", timeout=30,
                         params={"query": promql, "time": at, "dedup": str(dedup).lower()}).json()  # fmt: skip
    assert reply["status"] == "success", reply
    return reply["data"]["result"]


def in_history(view) -> int:
    return view["now"] - 4 * 3600 - 1800  # inside the backfilled hour


def metas(s3) -> dict[str, dict]:
    """Every block's meta.json in the bucket, by block."""
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []) if o["Key"].endswith("/meta.json")]
    return {key.split("/")[0]: json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()) for key in keys}


def uploaded(view) -> set[tuple[str, str]]:
    """The (region, replica) of every block in the bucket, from the meta.json the sidecars wrote."""
    labels = [meta["thanos"]["labels"] for meta in metas(bucket_client(view["s3"])).values()]
    return {(m["region"], m["replica"]) for m in labels}


def gauge(server, name: str) -> float | None:
    """The value of a metric without labels on a component's /metrics, or None while it has none."""
    text = requests.get(server.url + "/metrics", timeout=30).text
    line = next((x for x in text.splitlines() if x.startswith(name + " ")), "")
    return float(line.split()[1]) if line else None


def test_the_rendered_objstore_file_is_the_bucket_and_its_keys(global_view):
    text = (global_view["out"] / "objstore.yml").read_text()
    config = yaml.safe_load(text)
    assert config["type"] == "S3" and config["config"]["bucket"] == BUCKET and config["config"]["insecure"] is True
    assert (config["config"]["access_key"], config["config"]["secret_key"]) == ("lab", "lab")


def test_each_sidecar_uploads_its_backfilled_block_with_its_external_labels(global_view):
    assert waited(lambda: uploaded(global_view) == set(REPLICAS.values()), "the three sidecars' blocks")


def test_query_deduplicates_the_replicas_and_answers_across_regions(global_view):
    at = in_history(global_view)

    def both_regions():
        found = query(global_view, "lab_history", at)
        return len(found) == 2 and found

    found = waited(both_regions, "lab_history of both regions through query")
    assert sorted(s["metric"]["region"] for s in found) == ["eu-central-1", "us-east-1"]
    assert all("replica" not in s["metric"] for s in found)
    # Without deduplication, eu-central-1's two replicas are two series.
    replicas = sorted((s["metric"]["region"], s["metric"]["replica"]) for s in query(global_view, "lab_history", at,
                                                                                       dedup=False))  # fmt: skip
    assert replicas == sorted(REPLICAS.values())


def metric_names(url: str) -> set[str]:
    text = requests.get(url + "/metrics", timeout=30).text
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_the_components_expose_what_the_alerts_read(global_view):
    """Every metric roles/thanos/files/rules/thanos.rules.yml reads, on the component its rule names."""
    sidecar = metric_names(global_view["sidecars"]["euc1-a"][0].url)
    assert {"thanos_shipper_upload_failures_total", "thanos_sidecar_prometheus_up",
            "thanos_objstore_bucket_operation_failures_total"} <= sidecar  # fmt: skip
    assert "thanos_compact_halted" in metric_names(global_view["compact"].url)
    assert "thanos_objstore_bucket_operation_failures_total" in metric_names(global_view["store"].url)

    def store_connected() -> bool:
        text = requests.get(global_view["query"].url + "/metrics", timeout=30).text
        return any(line.startswith("thanos_store_nodes_grpc_connections{") and 'store_type="store"' in line
                   and line.endswith(" 1") for line in text.splitlines())  # fmt: skip

    assert waited(store_connected, "query's connection to the store gateway")


# Last: stops every Prometheus and sidecar.
def test_with_every_prometheus_and_sidecar_stopped_the_store_gateway_answers_from_the_bucket(global_view):
    assert waited(lambda: uploaded(global_view) == set(REPLICAS.values()), "the three sidecars' blocks")

    def loaded() -> bool:
        return (gauge(global_view["store"], "thanos_bucket_store_blocks_loaded") or 0) >= len(REPLICAS)

    assert waited(loaded, "the store gateway's blocks")
    for sidecar, _ in global_view["sidecars"].values():
        sidecar.stop()
    for server in global_view["prometheus"].values():
        server.stop()
    found = query(global_view, "lab_history", in_history(global_view))
    assert sorted(s["metric"]["region"] for s in found) == ["eu-central-1", "us-east-1"], found


@pytest.mark.parametrize(
    ("extra", "variable"),
    [
        ({"thanos_components": ["sidecar", "ruler"]}, "thanos_components"),
        ({"thanos_objstore_bucket": "metrics; rm -rf /"}, "thanos_objstore_bucket"),
        ({"thanos_objstore_endpoint": "oss.example.com\n--objstore.config=x"}, "thanos_objstore_endpoint"),
        ({"thanos_query_endpoints": ["prom:10901 --web.disable-cors"]}, "thanos_query_endpoints"),
        ({"thanos_query_replica_labels": ['replica"}']}, "thanos_query_replica_labels"),
        ({"thanos_compact_retention_raw": "30 days"}, "thanos_compact_retention_"),
        ({"thanos_store_grpc_port": 10906}, "their ports"),  # the store's HTTP port too
        ({"thanos_sidecar_prometheus_url": "file:///etc/shadow"}, "thanos_sidecar_prometheus_url"),
        ({"thanos_objstore_bucket": "b" * 64}, "thanos_objstore_bucket"),  # one over S3's 63
        ({"thanos_objstore_endpoint": "\uff11\uff12\uff17.0.0.1:9000"}, "thanos_objstore_endpoint"),  # look-alikes
        ({"thanos_objstore_region": "us-east-1\nx"}, "thanos_objstore_region"),
        ({"thanos_objstore_bucket": ""}, "empty only without store and compact"),  # a store gateway needs one
        ({"thanos_compact_vertical": "false"}, "thanos_compact_vertical"),  # a string, and one Jinja takes as true
    ],
)
def test_hostile_values_are_refused_by_the_preflight_naming_the_variable(tmp_path, extra, variable):
    valid = {"thanos_components": ["sidecar", "store", "query"], "thanos_objstore_bucket": BUCKET,
             "thanos_objstore_endpoint": "127.0.0.1:9000", "thanos_query_endpoints": ["127.0.0.1:10901"]}  # fmt: skip
    _, run = render(tmp_path, {**valid, **extra})
    assert run.rc != 0 and variable in run.output and "Check the Thanos settings" in run.output, run.output
    assert not (tmp_path / "out" / "objstore.yml").exists()


def test_without_a_bucket_the_sidecar_is_not_given_one(tmp_path):
    out, run = render(
        tmp_path, {"thanos_components": ["sidecar", "query"], "thanos_query_endpoints": ["127.0.0.1:10901"]}
    )
    assert run.rc == 0, run.output
    assert not [arg for arg in exec_start(out / "thanos-sidecar.service") if arg.startswith("--objstore")]
    assert "--tsdb.path=/var/lib/prometheus" in exec_start(out / "thanos-sidecar.service")


def overlapping_blocks(work: pathlib.Path, now: int) -> list[pathlib.Path]:
    """Two blocks of the same two hours (ending on a 2-hour boundary 8 to 10 hours ago, so promtool makes one block
    of each), a series each: a stream's uploaded block and a backfill of the same range."""
    end = (now - 8 * 3600) // 7200 * 7200
    made = []
    for part in ("uploaded", "backfilled"):
        text = work / f"{part}.om"
        samples = [f'lab_overlap{{part="{part}"}} 1 {t}' for t in range(end - 7200, end, 60)]
        text.write_text("\n".join(["# TYPE lab_overlap gauge", *samples, "# EOF", ""]))
        run = subprocess.run([str(PROMTOOL), "tsdb", "create-blocks-from", "openmetrics", str(text), str(work / part)],
                             capture_output=True, text=True, check=False)  # fmt: skip
        assert run.returncode == 0, run.stderr
        made += blocks_in(work / part)
    assert len(made) == 2, made
    return made


@pytest.mark.parametrize("vertical", [False, True])
def test_overlapping_blocks_of_one_stream_halt_the_compactor_unless_vertical_compaction_is_on(
    start_moto, free_port, tmp_path, vertical
):
    s3 = start_moto()
    client = bucket_client(s3.url)
    client.create_bucket(Bucket=BUCKET)
    blocks = overlapping_blocks(tmp_path, int(time.time()))
    for block in blocks:
        upload_block(client, BUCKET, block, {"region": "eu-central-1", "replica": "a"})
    port = free_port()
    out, run = render(tmp_path / "render", {
        **objstore_vars(s3.url), "thanos_components": ["compact"], "thanos_data_dir": str(tmp_path / "data"),
        "thanos_compact_http_port": port, "thanos_compact_vertical": vertical})  # fmt: skip
    assert run.rc == 0, run.output
    (tmp_path / "data" / "compact").mkdir(parents=True)
    components = Started(tmp_path)
    try:
        # The compactor leaves a block alone until its ULID is 30 minutes old; these were made just now.
        compactor = components.start([*exec_start(out / "thanos-compact.service"), "--consistency-delay=0s"],
                                     "compact", port, "/-/ready", "thanos compact")  # fmt: skip
        sources = {block.name for block in blocks}
        if vertical:

            def merged():
                return next((meta for meta in metas(client).values()
                             if set(meta["compaction"]["sources"]) == sources), None)  # fmt: skip

            block = waited(merged, "a block merged from both")
            assert (block["stats"]["numSeries"], block["stats"]["numSamples"]) == (2, 240), block["stats"]
            assert block["thanos"]["labels"] == {"region": "eu-central-1", "replica": "a"}
            assert gauge(compactor, "thanos_compact_halted") == 0
        else:
            waited(lambda: gauge(compactor, "thanos_compact_halted") == 1, "the compactor to halt")
            assert set(metas(client)) == sources  # both kept, nothing merged
            assert "overlaps found" in compactor.log.read_text()
            # Halted, it no longer exits on SIGTERM (systemd kills it after the unit's TimeoutStopSec).
            compactor.process.kill()
    finally:
        components.stop()
