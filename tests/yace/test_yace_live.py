"""YACE as the role configures it, against the lab's AWS (moto server): two EC2 instances and an RDS instance with
tags, CloudWatch datapoints seeded for them (moto makes none), and the series YACE exports, names and labels exactly.
The CloudWatch SDK pin of scripts/build-yace.sh is what makes this work at all (moto serves no CBOR protocol).

The whole file runs on one xdist worker (tests/conftest.py groups each file), so moto and YACE start once."""

import datetime
import http.server
import pathlib
import re
import shutil
import subprocess
import sys
import threading
import time

import boto3
import pytest
import requests
from labinfo import run_playbook

from .yace_lab import DEFAULTS, free_port, render, start_yace, yace_binary

REGION = "us-east-1"
TAGGED = {"team": "payments", "owner": "alice", "Name": "pay-api-1"}
UNTEAMED = {"owner": "bob", "Name": "scratch"}
DB_TAGS = {"team": "orders", "owner": "carol", "Name": "orders-primary"}
DB = "orders-db"
# Distinct values, constant over the seeded ten minutes: every average YACE reads is exactly one of them.
VALUES = {
    ("AWS/EC2", "CPUUtilization", "tagged"): 42.5,
    ("AWS/EC2", "CPUUtilization", "unteamed"): 7.25,
    ("CWAgent", "mem_used_percent", "tagged"): 61.0,
    ("CWAgent", "mem_used_percent", "unteamed"): 33.0,
    ("CWAgent", "disk_used_percent", "tagged"): 71.0,
    ("CWAgent", "disk_used_percent", "unteamed"): 12.0,
    ("AWS/RDS", "CPUUtilization", DB): 18.5,
    ("AWS/RDS", "DatabaseConnections", DB): 4.0,
}
# Bytes, read as 5-minute sums of the datapoints above (one a minute): a period holds from one to five of them.
NETWORK = {
    ("AWS/EC2", "NetworkIn", "tagged"): 1500.0,
    ("AWS/EC2", "NetworkIn", "unteamed"): 700.0,
    ("AWS/EC2", "NetworkOut", "tagged"): 2500.0,
    ("AWS/EC2", "NetworkOut", "unteamed"): 300.0,
}
EXPECTED = [
    "aws_ec2_cpuutilization_average",
    "aws_ec2_network_in_sum",
    "aws_ec2_network_out_sum",
    "aws_cwagent_mem_used_percent_average",
    "aws_cwagent_disk_used_percent_average",
    "aws_rds_cpuutilization_average",
    "aws_rds_database_connections_average",
    "aws_ec2_info",
    "aws_rds_info",
]
# Generous: the first CloudWatch read starts when YACE does and takes a second against moto.
DEADLINE = 180


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except requests.RequestException as error:
            last = error
        else:
            if last:
                return last
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def yace():
    return yace_binary()


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    """moto_server on a free port of 127.0.0.1; its endpoint URL."""
    port = free_port()
    server = shutil.which("moto_server") or str(pathlib.Path(sys.executable).parent / "moto_server")
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("w") as out:
        process = subprocess.Popen([server, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{endpoint}/moto-api/", timeout=5).ok, 60, f"moto_server on {endpoint}")
        yield endpoint
    finally:
        stop(process)


@pytest.fixture(scope="module")
def aws(moto):
    """The seeded account: its id and the two instances' ids."""
    kwargs = {
        "endpoint_url": moto,
        "region_name": REGION,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
    }
    ec2 = boto3.client("ec2", **kwargs)
    image = ec2.describe_images()["Images"][0]["ImageId"]

    def instance(tags: dict) -> str:
        spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
        return ec2.run_instances(
            ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro", TagSpecifications=spec
        )["Instances"][0]["InstanceId"]

    ids = {"tagged": instance(TAGGED), "unteamed": instance(UNTEAMED)}
    boto3.client("rds", **kwargs).create_db_instance(
        DBInstanceIdentifier=DB,
        DBInstanceClass="db.t3.micro",
        Engine="mysql",
        MasterUsername="admin",
        MasterUserPassword="not-a-secret-1",
        AllocatedStorage=20,
        Tags=[{"Key": k, "Value": v} for k, v in DB_TAGS.items()],
    )
    # A datapoint a minute over the last ten minutes: whatever 5-minute window YACE asks for holds some.
    now = datetime.datetime.now(datetime.UTC)
    stamps = [now - datetime.timedelta(seconds=30 + 60 * k) for k in range(10)]
    cloudwatch = boto3.client("cloudwatch", **kwargs)
    for (namespace, metric, who), value in (VALUES | NETWORK).items():
        dimension = (
            {"Name": "DBInstanceIdentifier", "Value": DB} if who == DB else {"Name": "InstanceId", "Value": ids[who]}
        )
        cloudwatch.put_metric_data(
            Namespace=namespace,
            MetricData=[
                {"MetricName": metric, "Dimensions": [dimension], "Timestamp": stamp, "Value": value}
                for stamp in stamps
            ],
        )
    account = boto3.client("sts", **kwargs).get_caller_identity()["Account"]
    return {"account": account, **ids}


@pytest.fixture(scope="module")
def config(tmp_path_factory, yace):
    """The role's config with its defaults (checked by yace as the role checks it), for the region seeded."""
    directory = tmp_path_factory.mktemp("config")
    assert DEFAULTS["yace_regions"] == [REGION]
    dest, run = render(
        lambda text, *args: run_playbook(directory, text, *args), directory, "Write the YACE config", yace=yace
    )
    assert run.rc == 0, run.output
    return dest


SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(url: str) -> list[tuple[str, dict, float]]:
    """Every sample of the text exposition with its name exactly as exposed, so as Prometheus stores it
    (prometheus_client's parser would add _total to yace_cloudwatch_request_errors, a counter without it)."""
    response = requests.get(url, timeout=10)
    response.raise_for_status()
    found = []
    for line in response.text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, labels, value = SAMPLE.fullmatch(line).groups()
        pairs = LABEL.findall(labels or "")
        unescaped = {k: re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], v) for k, v in pairs}
        found.append((name, unescaped, float(value)))
    return found


@pytest.fixture(scope="module")
def exported(yace, config, aws, moto, tmp_path_factory):
    """Every sample of YACE's /metrics once all the expected series are there."""
    workdir = tmp_path_factory.mktemp("yace")
    url, process = start_yace(yace, config, moto, workdir)
    try:

        def complete():
            got = samples(url)
            return got if set(EXPECTED) <= {name for name, _, _ in got} else None

        yield wait_for(complete, DEADLINE, f"series {EXPECTED} on {url}")
    finally:
        stop(process)
        print((workdir / "yace.log").read_text()[-4000:])


def series(exported, name: str) -> list[tuple[dict, float]]:
    return sorted(((labels, value) for n, labels, value in exported if n == name), key=lambda s: sorted(s[0].items()))


def ec2_labels(aws, who: str, tags: dict) -> dict:
    instance = aws[who]
    return {
        "name": f"arn:aws:ec2:{REGION}:{aws['account']}:instance/{instance}",
        "region": REGION,
        "account_id": aws["account"],
        "tag_team": tags.get("team", ""),
        "tag_owner": tags["owner"],
        "tag_Name": tags["Name"],
    }


def by_instance(aws, name_of_value, tags_of=None, values=VALUES):
    """The expected (labels, value) of a per-instance series of both instances."""
    expected = []
    for who, tags in (("tagged", TAGGED), ("unteamed", UNTEAMED)):
        labels = tags_of(who, tags) | {"dimension_InstanceId": aws[who]}
        expected.append((labels, values[(*name_of_value, who)]))
    return sorted(expected, key=lambda s: sorted(s[0].items()))


def test_ec2_cpu_carries_the_instances_tags(exported, aws):
    assert series(exported, "aws_ec2_cpuutilization_average") == by_instance(
        aws, ("AWS/EC2", "CPUUtilization"), lambda who, tags: ec2_labels(aws, who, tags)
    )


@pytest.mark.parametrize(
    ("name", "metric"), [("aws_ec2_network_in_sum", "NetworkIn"), ("aws_ec2_network_out_sum", "NetworkOut")]
)
def test_ec2_network_is_summed_per_period_and_carries_the_instances_tags(exported, aws, name, metric):
    got = series(exported, name)
    expected = by_instance(aws, ("AWS/EC2", metric), lambda who, tags: ec2_labels(aws, who, tags), values=NETWORK)
    assert [labels for labels, _ in got] == [labels for labels, _ in expected]
    for (_, value), (_, datapoint) in zip(got, expected, strict=True):
        assert value / datapoint in (1.0, 2.0, 3.0, 4.0, 5.0), (name, value, datapoint)


@pytest.mark.parametrize(
    ("name", "metric"),
    [
        ("aws_cwagent_mem_used_percent_average", "mem_used_percent"),
        ("aws_cwagent_disk_used_percent_average", "disk_used_percent"),
    ],
)
def test_cwagent_series_name_the_instance_but_carry_no_tags(exported, aws, name, metric):
    """YACE knows no resource type for the CWAgent namespace (no tagging filter, no dimension pattern): every series
    is the pseudo-resource 'global', its tag labels empty; the instance is in dimension_InstanceId."""
    untagged = {
        "name": "global",
        "region": REGION,
        "account_id": aws["account"],
        "tag_team": "",
        "tag_owner": "",
        "tag_Name": "",
    }
    assert series(exported, name) == by_instance(aws, ("CWAgent", metric), lambda who, tags: untagged)


@pytest.mark.parametrize(
    ("name", "metric"),
    [
        ("aws_rds_cpuutilization_average", "CPUUtilization"),
        ("aws_rds_database_connections_average", "DatabaseConnections"),
    ],
)
def test_rds_series_carry_the_databases_tags(exported, aws, name, metric):
    labels = {
        "name": f"arn:aws:rds:{REGION}:{aws['account']}:db:{DB}",
        "region": REGION,
        "account_id": aws["account"],
        "dimension_DBInstanceIdentifier": DB,
        "tag_team": DB_TAGS["team"],
        "tag_owner": DB_TAGS["owner"],
        "tag_Name": DB_TAGS["Name"],
    }
    assert series(exported, name) == [(labels, VALUES[("AWS/RDS", metric, DB)])]


def test_info_series_list_every_tagged_resource_with_account_and_region(exported, aws):
    ec2 = sorted(
        ((ec2_labels(aws, who, tags), 0.0) for who, tags in (("tagged", TAGGED), ("unteamed", UNTEAMED))),
        key=lambda s: sorted(s[0].items()),
    )
    assert series(exported, "aws_ec2_info") == ec2
    rds = {
        "name": f"arn:aws:rds:{REGION}:{aws['account']}:db:{DB}",
        "region": REGION,
        "account_id": aws["account"],
        "tag_team": DB_TAGS["team"],
        "tag_owner": DB_TAGS["owner"],
        "tag_Name": DB_TAGS["Name"],
    }
    assert series(exported, "aws_rds_info") == [(rds, 0.0)]


def test_no_other_cloudwatch_series(exported):
    assert sorted({n for n, _, _ in exported if n.startswith("aws_")}) == sorted(EXPECTED)


def test_yaces_own_request_counters_count_and_no_error(exported):
    """The series the alert rules read (roles/yace/files/rules/yace.rules.yml)."""
    requests_made = {labels["api_name"]: value for labels, value in series(exported, "yace_cloudwatch_requests_total")}
    assert requests_made["ListMetrics"] >= 5 and requests_made["GetMetricData"] >= 1, requests_made
    assert series(exported, "yace_cloudwatch_request_errors") == []


@pytest.fixture
def refusing_cloudwatch(moto):
    """moto behind a proxy that refuses CloudWatch's ListMetrics as AWS does without the IAM permission (every
    other request passes through): its endpoint URL."""

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if b"Action=ListMetrics" in body:
                status, headers, content = 403, {"Content-Type": "text/xml"}, DENIED
            else:
                forwarded = requests.post(moto + self.path, data=body, headers=dict(self.headers), timeout=30)
                status, content = forwarded.status_code, forwarded.content
                headers = {"Content-Type": forwarded.headers.get("Content-Type", "text/xml")}
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


DENIED = (
    b'<ErrorResponse xmlns="http://monitoring.amazonaws.com/doc/2010-08-01/"><Error><Type>Sender</Type>'
    b"<Code>AccessDenied</Code><Message>not authorized to perform: cloudwatch:ListMetrics</Message></Error>"
    b"<RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
)


def test_refused_cloudwatch_requests_count_as_errors_per_api(yace, config, aws, refusing_cloudwatch, tmp_path):
    """The error counter the rules alert on. It appears only once a CloudWatch request failed; YACE asks STS for
    the account first, and when that fails it makes no CloudWatch request at all (nothing counted: the rules' "no
    requests" alert covers it)."""
    url, process = start_yace(yace, config, refusing_cloudwatch, tmp_path)
    try:
        errors = wait_for(
            lambda: {
                labels["api_name"]: value for labels, value in series(samples(url), "yace_cloudwatch_request_errors")
            },
            DEADLINE,
            "yace_cloudwatch_request_errors",
        )
        exported = samples(url)
    finally:
        stop(process)
        print((tmp_path / "yace.log").read_text()[-4000:])
    assert errors["ListMetrics"] >= 1 and set(errors) == {"ListMetrics"}, errors
    # A job whose ListMetrics fails exports nothing, not even its info series.
    assert not [name for name, _, _ in exported if name.startswith("aws_")]
