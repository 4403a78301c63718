"""Where a day's samples come from: Prometheus (which scrapes YACE, so CloudWatch is read once), or CloudWatch
itself through GetMetricData, batched as YACE batches it, for users without YACE."""

from __future__ import annotations

import datetime
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from .model import DIMENSION, INFO_SERIES, METRICS, RESOURCE_TYPE, Metric, Observation, Resource, resource_from_arn

DAY = datetime.timedelta(days=1)
GET_METRIC_DATA_LIMIT = 500  # queries per call: CloudWatch's limit, and YACE's batch


class SourceError(Exception):
    """The source failed; str() says which source, what was asked and why."""


@dataclass
class Fetched:
    observations: list[Observation]
    teams: dict[Resource, str | None]  # every tagged resource -> its team tag (None: no team tag)
    calls: int  # requests made to the source


def day_bounds(day: datetime.date) -> tuple[datetime.datetime, datetime.datetime]:
    start = datetime.datetime.combine(day, datetime.time(), datetime.UTC)
    return start, start + DAY


class _Samples:
    """Samples by (resource, metric) and timestamp. Several series of one resource (CWAgent's disk, one per mount)
    merge into the highest finite value at each timestamp."""

    def __init__(self) -> None:
        self.by_key: dict[tuple[Resource, Metric], dict[float, float]] = defaultdict(dict)

    def add(self, resource: Resource, metric: Metric, points: Iterable[tuple[float, float]]) -> None:
        series = self.by_key[(resource, metric)]
        for t, v in points:
            old = series.get(t)
            if old is None or (math.isfinite(v) and (not math.isfinite(old) or v > old)):
                series[t] = v

    def observations(self) -> list[Observation]:
        return [
            Observation(r, m, tuple(v for _, v in sorted(points.items())))
            for (r, m), points in sorted(self.by_key.items(), key=lambda kv: (kv[0][0], kv[0][1].name))
        ]


class PrometheusSource:
    """Raw samples through range selectors (`series[1d]` at the day's end), not query_range: no resampling, so the
    records count the samples CloudWatch gave, with their gaps and bad values. Tags from YACE's aws_*_info."""

    name = "prometheus"

    def __init__(self, url: str, timeout: float):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _query(self, query: str, at: float) -> list[dict]:
        body = urllib.parse.urlencode({"query": query, "time": f"{at:.3f}"}).encode()
        request = urllib.request.Request(self.url + "/api/v1/query", data=body, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                reply = json.load(response)
        except urllib.error.HTTPError as e:
            detail = e.read(500).decode("utf-8", "replace")
            raise SourceError(f"Prometheus {self.url}: query {query!r}: HTTP {e.code}: {detail}") from None
        except (OSError, ValueError) as e:
            raise SourceError(f"Prometheus {self.url}: query {query!r}: {e}") from None
        if reply.get("status") != "success":
            raise SourceError(f"Prometheus {self.url}: query {query!r}: {reply.get('error', reply)}")
        return reply["data"]["result"]

    def fetch(self, day: datetime.date) -> Fetched:
        _, end = day_bounds(day)
        # A range selector is (t - 1d, t]: one millisecond before midnight makes it [start, end).
        at = end.timestamp() - 0.001
        calls = 0
        teams: dict[Resource, str | None] = {}
        for service, series in sorted(INFO_SERIES.items()):
            calls += 1
            for result in self._query(f"last_over_time({series}[1d])", at):
                labels = result["metric"]
                resource = resource_from_arn(labels.get("name", ""))
                if resource is not None and resource.service == service:
                    teams[resource] = labels.get("tag_team")
        samples = _Samples()
        for metric in METRICS:
            calls += 1
            label = "dimension_" + DIMENSION[metric.service]
            for result in self._query(f"{metric.series}[1d]", at):
                labels = result["metric"]
                # Scraped through Consul, the target's own region label wins and YACE's becomes exported_region.
                region = labels.get("exported_region", labels.get("region", ""))
                resource = Resource(labels.get("account_id", ""), region, metric.service, labels.get(label, ""))
                samples.add(resource, metric, ((float(t), float(v)) for t, v in result["values"]))
        return Fetched(samples.observations(), teams, calls)


class CloudWatchSource:
    """The tagging API for resources and tags, GetMetricData for the samples: up to 500 queries a call."""

    name = "cloudwatch"

    def __init__(self, regions: Iterable[str], endpoint_url: str = "", period: int = 300):
        import boto3  # noqa: PLC0415 (the cloudwatch extra: Prometheus users need not install it)

        self.boto3 = boto3
        self.regions = tuple(regions)
        self.endpoint_url = endpoint_url or None
        self.period = period
        self.api_calls: Counter[str] = Counter()  # by operation, over the source's life

    def _client(self, service: str, region: str):
        return self.boto3.client(service, region_name=region, endpoint_url=self.endpoint_url)

    def fetch(self, day: datetime.date) -> Fetched:
        start, end = day_bounds(day)
        teams: dict[Resource, str | None] = {}
        samples = _Samples()
        calls = 0
        for region in self.regions:
            try:
                tagging = self._client("resourcegroupstaggingapi", region)
                token = ""
                while True:
                    calls += 1
                    self.api_calls["GetResources"] += 1
                    page = tagging.get_resources(
                        ResourceTypeFilters=sorted(RESOURCE_TYPE.values()), PaginationToken=token
                    )
                    for mapping in page.get("ResourceTagMappingList", []):
                        resource = resource_from_arn(mapping["ResourceARN"])
                        if resource is not None:
                            tags = {t["Key"]: t["Value"] for t in mapping.get("Tags", [])}
                            teams[resource] = tags.get("team")
                    token = page.get("PaginationToken", "")
                    if not token:
                        break
                queries = [
                    (r, m) for r in sorted(teams) if r.region == region for m in METRICS if m.service == r.service
                ]
                cloudwatch = self._client("cloudwatch", region)
                for at in range(0, len(queries), GET_METRIC_DATA_LIMIT):
                    chunk = queries[at : at + GET_METRIC_DATA_LIMIT]
                    calls += self._get_metric_data(cloudwatch, chunk, start, end, samples)
            except self.boto3.exceptions.Boto3Error as e:
                raise SourceError(f"CloudWatch {region}: {e}") from None
            except Exception as e:
                if type(e).__module__.startswith("botocore"):
                    raise SourceError(f"CloudWatch {region}: {e}") from None
                raise
        return Fetched(samples.observations(), teams, calls)

    def _get_metric_data(self, cloudwatch, chunk, start, end, samples: _Samples) -> int:
        queries = [
            {
                "Id": f"q{i}",
                "MetricStat": {
                    "Metric": {
                        "Namespace": m.namespace,
                        "MetricName": m.cloudwatch_name,
                        "Dimensions": [{"Name": DIMENSION[r.service], "Value": r.resource_id}],
                    },
                    "Period": self.period,
                    "Stat": m.cloudwatch_statistic,
                },
            }
            for i, (r, m) in enumerate(chunk)
        ]
        calls = 0
        token = None
        while True:
            kwargs = {"MetricDataQueries": queries, "StartTime": start, "EndTime": end, "ScanBy": "TimestampAscending"}
            if token:
                kwargs["NextToken"] = token
            calls += 1
            self.api_calls["GetMetricData"] += 1
            reply = cloudwatch.get_metric_data(**kwargs)
            for result in reply["MetricDataResults"]:
                r, m = chunk[int(result["Id"][1:])]
                points = (
                    (t.timestamp(), float(v))
                    for t, v in zip(result["Timestamps"], result["Values"], strict=True)
                    if start <= t < end
                )
                samples.add(r, m, points)
            token = reply.get("NextToken")
            if not token:
                return calls


def instance_types(resources: Iterable[Resource], endpoint_url: str = "") -> dict[Resource, str]:
    """The EC2 instance types and RDS instance classes of the resources (DescribeInstances, DescribeDBInstances: no
    CloudWatch charge), region by region; a resource the account no longer has gets none."""
    import boto3  # noqa: PLC0415 (the cloudwatch extra)
    import botocore.exceptions  # noqa: PLC0415

    wanted = {(r.region, r.service, r.resource_id): r for r in resources}
    found: dict[Resource, str] = {}
    for region in sorted({region for region, _, _ in wanted}):
        try:
            ec2 = boto3.client("ec2", region_name=region, endpoint_url=endpoint_url or None)
            for page in ec2.get_paginator("describe_instances").paginate():
                for reservation in page["Reservations"]:
                    for instance in reservation["Instances"]:
                        r = wanted.get((region, "ec2", instance["InstanceId"]))
                        if r is not None:
                            found[r] = str(instance.get("InstanceType", ""))
            rds = boto3.client("rds", region_name=region, endpoint_url=endpoint_url or None)
            for page in rds.get_paginator("describe_db_instances").paginate():
                for db in page["DBInstances"]:
                    r = wanted.get((region, "rds", db["DBInstanceIdentifier"]))
                    if r is not None:
                        found[r] = str(db.get("DBInstanceClass", ""))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as e:
            raise SourceError(f"instance types in {region}: {e}") from None
    return found


def open_source(config) -> PrometheusSource | CloudWatchSource:
    if config.source == "cloudwatch":
        return CloudWatchSource(config.cloudwatch_regions, config.cloudwatch_endpoint_url)
    return PrometheusSource(config.prometheus_url, config.prometheus_timeout)
