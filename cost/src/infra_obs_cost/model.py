"""What a record is: the metrics we keep, the identity of a resource, and the daily records and rejects that
samples become. Every value that reaches the database passes through here, parsed and checked."""

from __future__ import annotations

import datetime
import math
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Identities come from labels and tags a cloud account's users write: a tight grammar for each.
ACCOUNT = re.compile(r"[0-9]{12}")
REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]{1,2}")
RESOURCE_ID = {
    "ec2": re.compile(r"i-[0-9a-f]{8,17}"),
    # RDS: a letter, then letters, digits and single hyphens, at most 63, no trailing hyphen.
    "rds": re.compile(r"[A-Za-z](?:[A-Za-z0-9]|-(?!-)){0,61}[A-Za-z0-9]|[A-Za-z]"),
}
TEAM = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
MAX_TAG = 256

PERCENT, COUNT, BYTES = "percent", "count", "bytes"
# The valid range of each unit, both ends finite: NaN and infinities fall outside.
RANGE = {PERCENT: (0.0, 100.0), COUNT: (0.0, sys.float_info.max), BYTES: (0.0, sys.float_info.max)}


@dataclass(frozen=True)
class Metric:
    """One utilisation metric of one service, as YACE names its series and as CloudWatch knows it."""

    name: str  # ours, in the records
    service: str
    unit: str
    series: str  # YACE's series name: the 5-minute Average, or Sum for bytes
    namespace: str  # CloudWatch's
    cloudwatch_name: str

    @property
    def statistics(self) -> tuple[str, str]:
        """The day's two records: a level (percent, count) is averaged, a volume (bytes) summed; both keep the max."""
        return ("sum", "max") if self.unit == BYTES else ("avg", "max")

    @property
    def cloudwatch_statistic(self) -> str:
        return "Sum" if self.unit == BYTES else "Average"


METRICS = (
    Metric("cpu", "ec2", PERCENT, "aws_ec2_cpuutilization_average", "AWS/EC2", "CPUUtilization"),
    Metric("memory", "ec2", PERCENT, "aws_cwagent_mem_used_percent_average", "CWAgent", "mem_used_percent"),
    Metric("disk", "ec2", PERCENT, "aws_cwagent_disk_used_percent_average", "CWAgent", "disk_used_percent"),
    Metric("network_in", "ec2", BYTES, "aws_ec2_network_in_sum", "AWS/EC2", "NetworkIn"),
    Metric("network_out", "ec2", BYTES, "aws_ec2_network_out_sum", "AWS/EC2", "NetworkOut"),
    Metric("cpu", "rds", PERCENT, "aws_rds_cpuutilization_average", "AWS/RDS", "CPUUtilization"),
    Metric("connections", "rds", COUNT, "aws_rds_database_connections_average", "AWS/RDS", "DatabaseConnections"),
)
# The CloudWatch dimension, the YACE label and the tagging API's resource type that name a resource of a service.
DIMENSION = {"ec2": "InstanceId", "rds": "DBInstanceIdentifier"}
RESOURCE_TYPE = {"ec2": "ec2:instance", "rds": "rds:db"}
INFO_SERIES = {"ec2": "aws_ec2_info", "rds": "aws_rds_info"}
ARN = re.compile(r"arn:aws:(ec2|rds):([a-z0-9-]{1,32}):([0-9]{12}):(?:instance/|db:)([A-Za-z0-9-]{1,63})")

# Why a record, or some of its samples, did not make it: the rejects table's reason column.
NOT_A_NUMBER = "not_a_number"
OUT_OF_RANGE = "out_of_range"
TOO_FEW_SAMPLES = "too_few_samples"
MISSING_TEAM = "missing_team"
INVALID_TEAM = "invalid_team"
UNKNOWN_RESOURCE = "unknown_resource"
INVALID_IDENTITY = "invalid_identity"
REASONS = (NOT_A_NUMBER, OUT_OF_RANGE, TOO_FEW_SAMPLES, MISSING_TEAM, INVALID_TEAM, UNKNOWN_RESOURCE, INVALID_IDENTITY)


@dataclass(frozen=True, order=True)
class Resource:
    account: str
    region: str
    service: str
    resource_id: str


@dataclass(frozen=True)
class Observation:
    """The raw samples of one metric of one resource over one day, as the source returned them."""

    resource: Resource
    metric: Metric
    values: tuple[float, ...]


@dataclass(frozen=True)
class Record:
    resource: Resource
    team: str
    metric: str
    statistic: str
    day: datetime.date
    value: float
    samples: int

    def key(self) -> tuple:
        r = self.resource
        return (r.account, r.region, r.service, r.resource_id, self.metric, self.statistic, self.day)


@dataclass(frozen=True)
class Reject:
    resource: Resource
    metric: str
    day: datetime.date
    reason: str
    samples: int  # how many samples the reason covers (0: the whole record)
    example: str  # one offending value or label, shown as text

    def key(self) -> tuple:
        r = self.resource
        return (r.account, r.region, r.service, r.resource_id, self.metric, self.day, self.reason)


def resource_from_arn(arn: str) -> Resource | None:
    match = ARN.fullmatch(arn)
    if not match:
        return None
    service, region, account, resource_id = match.groups()
    resource = Resource(account, region, service, resource_id)
    return resource if identity_problem(resource) is None else None


def identity_problem(r: Resource) -> str | None:
    """None when every part of the identity is of its grammar; else which part is not."""
    if not ACCOUNT.fullmatch(r.account):
        return "account"
    if not REGION.fullmatch(r.region):
        return "region"
    grammar = RESOURCE_ID.get(r.service)
    if grammar is None or not grammar.fullmatch(r.resource_id):
        return "resource id"
    return None


def shown(value: object) -> str:
    """A value as the rejects table shows it: printable ASCII, at most 64 characters."""
    text = "".join(c if " " <= c <= "~" else "?" for c in str(value))
    return text if len(text) <= 64 else text[:61] + "..."


@dataclass(frozen=True)
class Policy:
    min_samples: int


def daily(
    day: datetime.date,
    observations: Iterable[Observation],
    teams: Mapping[Resource, str | None],
    policy: Policy,
) -> tuple[list[Record], list[Reject]]:
    """The day's records and rejects. A sample that is not a number or out of its unit's range is dropped (and a
    reject row counts them); a record needs `min_samples` valid samples and an owning team. `teams` maps every
    resource the tags know to its team tag (None: untagged); a resource missing from it is unknown, and one in it
    without samples of a metric of its service has none (too_few_samples: a lost day, or no CloudWatch agent)."""
    records: list[Record] = []
    rejects: list[Reject] = []
    observations = list(observations)
    # A resource the tags know with no sample at all of one of its metrics that day is an observation of nothing.
    seen = {(o.resource, o.metric) for o in observations}
    observations += [
        Observation(r, m, ()) for r in sorted(teams) for m in METRICS if m.service == r.service and (r, m) not in seen
    ]
    for obs in observations:
        r, m = obs.resource, obs.metric

        def reject(reason: str, samples: int, example: object, r=r, m=m) -> None:
            rejects.append(Reject(r, m.name, day, reason, samples, shown(example)))

        problem = identity_problem(r)
        if problem:
            reject(INVALID_IDENTITY, 0, f"{problem}: {r.account}/{r.region}/{r.resource_id}")
            continue
        if r not in teams:
            reject(UNKNOWN_RESOURCE, 0, "no tags for the resource")
            continue
        team = teams[r]
        if team is None:
            reject(MISSING_TEAM, 0, "no team tag")
            continue
        if not TEAM.fullmatch(team):
            reject(INVALID_TEAM, 0, team)
            continue
        low, high = RANGE[m.unit]
        # The fast path: a comparison is False for NaN, and high is finite, so this keeps finite in-range values.
        valid = [v for v in obs.values if low <= v <= high]
        if len(valid) != len(obs.values):
            nan = [v for v in obs.values if not math.isfinite(v)]
            out = [v for v in obs.values if math.isfinite(v) and not low <= v <= high]
            if nan:
                reject(NOT_A_NUMBER, len(nan), nan[0])
            if out:
                reject(OUT_OF_RANGE, len(out), f"{out[0]:g}")
        if len(valid) < policy.min_samples:
            reject(TOO_FEW_SAMPLES, 0, f"{len(valid)} valid of {policy.min_samples} needed")
            continue
        n, level = len(valid), m.statistics[0]
        total = math.fsum(valid)
        records.append(Record(r, team, m.name, level, day, round(total if level == "sum" else total / n, 6), n))
        records.append(Record(r, team, m.name, "max", day, round(max(valid), 6), n))
    return records, rejects
