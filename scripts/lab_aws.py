"""The lab's seeded AWS account for the cost and utilisation system: 60 EC2 and 10 RDS instances in two regions of
moto's default account, their CloudWatch metrics now (put into a moto server) and 14 days of their history (as
OpenMetrics text in the shape YACE v0.67.0 exports, backfilled into a Prometheus data directory with promtool).

    python scripts/lab_aws.py seed --endpoint URL [--now ISO]        # instances + the last 30 minutes of metrics
    python scripts/lab_aws.py up --host ADDRESS --port PORT --pidfile FILE       # a moto server there, seeded
    python scripts/lab_aws.py down --pidfile FILE                                # and stopped
    python scripts/lab_aws.py history --out FILE [--now ISO] [--endpoint URL]      # the 14 days, OpenMetrics text
    python scripts/lab_aws.py backfill --out FILE --data-dir DIR [--now ISO] [--endpoint URL]
                                                     # history into FILE, then TSDB blocks from it into DIR

Everything is a function of the seed and of `now` (aligned down to 5 minutes; the CLI alone reads the clock).
A value belongs to a UTC day counted back from now's date (day 0: today, day 1: yesterday) and a 5-minute slot of
that day, drawn from random.Random(f"{seed}:{key}:{metric}:{day}"). So `now` moved by whole days gives the same
values at timestamps moved by as much, and within one day a later `now` keeps the values already given.

Time: the history has 14 days of 5-minute samples (4032 per series) ending at now - 1 h (HISTORY_LAG), so every
sample is older than the head of a Prometheus started now, as backfilling needs; the live datapoints put into
CloudWatch are the 6 from now - 25 min to now (before 00:25 UTC some of them are yesterday's, day 1). Days 1 to 13
are whole UTC days inside the history whenever now is 01:00 UTC or later; day 0 and day 14 are partial.

Series (the table _METRIC_TABLE, METRIC_TAGS and INFO_SERIES): aws_ec2_cpuutilization_average,
aws_ec2_network_in_sum, aws_ec2_network_out_sum, aws_rds_cpuutilization_average and
aws_rds_database_connections_average carry account_id, region,
dimension_InstanceId / dimension_DBInstanceIdentifier, name (the ARN) and tag_team, tag_owner, tag_Name (the yace
role's exported tags; a tag the resource lacks is a label it lacks); aws_cwagent_mem_used_percent_average and
aws_cwagent_disk_used_percent_average the same without tags and with name="global"; aws_ec2_info and aws_rds_info
(value 0, every 5 minutes) account_id, region, name and tag_<key> for each of its tags, tag_lab_key included.
The file for 14 days is about 370 MB (1,568,200 samples in 390 series).

Resources (RESOURCES, from the table below; key, then the tags team/owner/Name, the shape and the instance size):
EC2 ec2-use1-00..31 (us-east-1) and ec2-euc1-00..27 (eu-central-1); RDS rds-use1-0..5 and rds-euc1-0..3. The
shape is idle, busy, bursty, daily in turn. Five have no team tag: ec2-use1-07, ec2-use1-22, ec2-euc1-11,
ec2-euc1-25 (no owner either) and rds-euc1-3. Every resource also carries the tag lab:key = its key, which is how
seed_moto finds it again (moto gives EC2 instances ids of its own; an RDS instance's identifier is its key).

Shapes (percentages rounded to 0.01; clean samples, before faults):
    idle    CPU 1..3; memory 10..20; RDS connections 0
    busy    CPU 60..90; memory 60..90; RDS connections 80..160
    bursty  CPU 2..8 with 3 spikes a day (1 to 3 samples each; they may overlap) at 75..98; memory 25..40;
            RDS connections 1..4, 40..120 in the spikes
    daily   CPU 5 + 60 * c, memory 30 + 30 * c, RDS connections 5 + 70 * c (each +- 2 or 3), where
            c = (1 - cos(2 pi (hour - 2) / 24)) / 2: 0 at 02:00 UTC, 1 at 14:00 UTC
    disk (every EC2): a level of 20..70 per instance, rising 0.2 a day
    network (EC2, bytes in and bytes out per 5 minutes, whole numbers): idle 500..3000 (under 1 MB a day each way),
            bursty 20..60 KB with 5..20 MB in the spikes, busy 20..80 MB, daily 0.1 + 20 * c MB

Faults (FAULTS; metric None = every metric of the resource; hours are UTC, None = the whole day):
    ec2-use1-01 busy    gap      all   day 2 hours 10-12     stopped 3 h: 36 samples missing from each series
    ec2-use1-02 bursty  gap      all   days 4 and 5          stopped 2 whole days: 576 missing
    ec2-use1-03 daily   nan      cpu   day 3 hour 14         12 NaN
    ec2-use1-04 idle    negative cpu   day 6 hours 2-3       24 values below 0 (-(v) - 1)
    ec2-use1-05 busy    over_100 mem   day 7 hour 20         12 values above 100 (101 + v / 2)
    ec2-use1-06 bursty  gap      mem, disk  day 9            the agent down a day: CWAgent missing, CPU there
    rds-use1-1  busy    gap      all   day 2 hours 0-5       72 missing
    rds-use1-2  bursty  negative connections  day 3 hour 12      12 below 0
    rds-euc1-1  busy    nan      cpu   day 5 hours 6-7       24 NaN
    rds-euc1-2  bursty  over_100 cpu   day 8 hour 9          12 above 100
  and today (day 0, whole day), so in the live datapoints as well:
    ec2-euc1-01 busy    over_100 cpu
    ec2-euc1-02 bursty  negative disk
    ec2-euc1-03 daily   nan      mem   (CloudWatch refuses NaN: no live mem datapoints for it)
    ec2-euc1-04 idle    gap      all   (stopped today: no live datapoints, no history today)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import random
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import boto3
import store

SEED = 7
ACCOUNT_ID = "123456789012"  # moto's default account
REGIONS = {"use1": "us-east-1", "euc1": "eu-central-1"}
STEP = 300  # seconds between samples
DAY = 86400
HISTORY_DAYS = 14
HISTORY_LAG = timedelta(hours=1)  # the history ends this long before now: older than a Prometheus head started now
LIVE_SAMPLES = 6  # the datapoints seed_moto puts: now - 25 min .. now
KEY_TAG = "lab:key"
# The bucket of the lab's Thanos (role thanos: inventories/lab/group_vars/all/thanos.yml).
THANOS_BUCKET = "infra-obs-thanos"
# promtool rounds this down to a compaction range (2h * 3^n): 162 h, so 14 days make 3 or 4 blocks (the file is read
# once per block; the 2 h default would read it ~170 times).
MAX_BLOCK_DURATION = "168h"
SHAPES = ("idle", "busy", "bursty", "daily")

# The series YACE v0.67.0 makes of each CloudWatch metric (statistic Average; Sum for the network's bytes), easy to
# adjust should it differ: `name` is the resource's ARN where YACE associates the metric with a resource, "global"
# where it cannot (CWAgent).
_METRIC_TABLE = """
svc short       namespace metric              unit    series                                dimension            name
ec2 cpu         AWS/EC2   CPUUtilization      Percent aws_ec2_cpuutilization_average        InstanceId           arn
ec2 mem         CWAgent   mem_used_percent    Percent aws_cwagent_mem_used_percent_average  InstanceId           global
ec2 disk        CWAgent   disk_used_percent   Percent aws_cwagent_disk_used_percent_average InstanceId           global
ec2 netin       AWS/EC2   NetworkIn           Bytes   aws_ec2_network_in_sum                InstanceId           arn
ec2 netout      AWS/EC2   NetworkOut          Bytes   aws_ec2_network_out_sum               InstanceId           arn
rds cpu         AWS/RDS   CPUUtilization      Percent aws_rds_cpuutilization_average        DBInstanceIdentifier arn
rds connections AWS/RDS   DatabaseConnections Count   aws_rds_database_connections_average  DBInstanceIdentifier arn
"""
# The tags YACE exports as tag_<key> labels on the series it ties to a resource (name = ARN): the yace role's
# yace_exported_tags (exportedTagsOnMetrics). A CWAgent series is tied to none: its tag labels are empty, i.e. absent,
# as is the label of a tag the resource lacks. () gives the bare series.
METRIC_TAGS = ("team", "owner", "Name")
# YACE's info series per resource (value 0): account_id, region, name = ARN and tag_<key> for every tag.
INFO_SERIES = {"ec2": "aws_ec2_info", "rds": "aws_rds_info"}
ARN = {
    "ec2": "arn:aws:ec2:{region}:" + ACCOUNT_ID + ":instance/{id}",
    "rds": "arn:aws:rds:{region}:" + ACCOUNT_ID + ":db:{id}",
}

# key, team, owner (at example.com), shape, size, Name; "-": no such tag.
_RESOURCE_TABLE = """
ec2-use1-00  payments  alice  idle    m5.xlarge      payments-api-1
ec2-use1-01  payments  alice  busy    c5.2xlarge     payments-ledger-2
ec2-use1-02  payments  alice  bursty  t3.large       payments-api-3
ec2-use1-03  payments  alice  daily   m5.large       payments-ledger-4
ec2-use1-04  search    carol  idle    m5.xlarge      search-indexer-1
ec2-use1-05  search    carol  busy    c5.2xlarge     search-query-2
ec2-use1-06  search    carol  bursty  t3.large       search-indexer-3
ec2-use1-07  -         carol  daily   m5.large       scratch-4
ec2-use1-08  data      erin   idle    m5.xlarge      data-etl-1
ec2-use1-09  data      erin   busy    c5.2xlarge     data-spark-2
ec2-use1-10  data      erin   bursty  t3.large       data-etl-3
ec2-use1-11  data      erin   daily   m5.large       data-spark-4
ec2-use1-12  web       grace  idle    m5.xlarge      web-frontend-1
ec2-use1-13  web       grace  busy    c5.2xlarge     web-render-2
ec2-use1-14  web       grace  bursty  t3.large       web-frontend-3
ec2-use1-15  web       grace  daily   m5.large       web-render-4
ec2-use1-16  payments  bob    idle    m5.xlarge      payments-api-5
ec2-use1-17  payments  bob    busy    c5.2xlarge     payments-ledger-6
ec2-use1-18  payments  bob    bursty  t3.large       payments-api-7
ec2-use1-19  payments  bob    daily   m5.large       payments-ledger-8
ec2-use1-20  search    dave   idle    m5.xlarge      search-indexer-5
ec2-use1-21  search    dave   busy    c5.2xlarge     search-query-6
ec2-use1-22  -         dave   bursty  t3.large       scratch-7
ec2-use1-23  search    dave   daily   m5.large       search-query-8
ec2-use1-24  data      frank  idle    m5.xlarge      data-etl-5
ec2-use1-25  data      frank  busy    c5.2xlarge     data-spark-6
ec2-use1-26  data      frank  bursty  t3.large       data-etl-7
ec2-use1-27  data      frank  daily   m5.large       data-spark-8
ec2-use1-28  web       heidi  idle    m5.xlarge      web-frontend-5
ec2-use1-29  web       heidi  busy    c5.2xlarge     web-render-6
ec2-use1-30  web       heidi  bursty  t3.large       web-frontend-7
ec2-use1-31  web       heidi  daily   m5.large       web-render-8
ec2-euc1-00  payments  alice  idle    m5.xlarge      payments-api-9
ec2-euc1-01  payments  alice  busy    c5.2xlarge     payments-ledger-10
ec2-euc1-02  payments  alice  bursty  t3.large       payments-api-11
ec2-euc1-03  payments  alice  daily   m5.large       payments-ledger-12
ec2-euc1-04  search    carol  idle    m5.xlarge      search-indexer-9
ec2-euc1-05  search    carol  busy    c5.2xlarge     search-query-10
ec2-euc1-06  search    carol  bursty  t3.large       search-indexer-11
ec2-euc1-07  search    carol  daily   m5.large       search-query-12
ec2-euc1-08  data      erin   idle    m5.xlarge      data-etl-9
ec2-euc1-09  data      erin   busy    c5.2xlarge     data-spark-10
ec2-euc1-10  data      erin   bursty  t3.large       data-etl-11
ec2-euc1-11  -         erin   daily   m5.large       scratch-12
ec2-euc1-12  web       grace  idle    m5.xlarge      web-frontend-9
ec2-euc1-13  web       grace  busy    c5.2xlarge     web-render-10
ec2-euc1-14  web       grace  bursty  t3.large       web-frontend-11
ec2-euc1-15  web       grace  daily   m5.large       web-render-12
ec2-euc1-16  payments  bob    idle    m5.xlarge      payments-api-13
ec2-euc1-17  payments  bob    busy    c5.2xlarge     payments-ledger-14
ec2-euc1-18  payments  bob    bursty  t3.large       payments-api-15
ec2-euc1-19  payments  bob    daily   m5.large       payments-ledger-16
ec2-euc1-20  search    dave   idle    m5.xlarge      search-indexer-13
ec2-euc1-21  search    dave   busy    c5.2xlarge     search-query-14
ec2-euc1-22  search    dave   bursty  t3.large       search-indexer-15
ec2-euc1-23  search    dave   daily   m5.large       search-query-16
ec2-euc1-24  data      frank  idle    m5.xlarge      data-etl-13
ec2-euc1-25  -         -      busy    c5.2xlarge     scratch-14
ec2-euc1-26  data      frank  bursty  t3.large       data-etl-15
ec2-euc1-27  data      frank  daily   m5.large       data-spark-16
rds-use1-0   payments  alice  idle    db.r5.xlarge   payments-db-use1-0
rds-use1-1   search    carol  busy    db.r5.2xlarge  search-db-use1-1
rds-use1-2   data      erin   bursty  db.t3.medium   data-db-use1-2
rds-use1-3   web       grace  daily   db.m5.large    web-db-use1-3
rds-use1-4   payments  alice  idle    db.r5.xlarge   payments-db-use1-4
rds-use1-5   search    carol  busy    db.r5.2xlarge  search-db-use1-5
rds-euc1-0   search    carol  idle    db.r5.xlarge   search-db-euc1-0
rds-euc1-1   data      erin   busy    db.r5.2xlarge  data-db-euc1-1
rds-euc1-2   web       grace  bursty  db.t3.medium   web-db-euc1-2
rds-euc1-3   -         alice  daily   db.m5.large    legacy-db
"""


@dataclass(frozen=True)
class Metric:
    service: str  # "ec2" | "rds"
    short: str  # our name for it: cpu, mem, disk, connections
    namespace: str  # CloudWatch's
    metric: str
    unit: str
    series: str  # YACE's series name
    dimension: str  # the one CloudWatch dimension, YACE's label dimension_<it>
    name: str  # YACE's label name: "arn" (the resource's ARN) or "global"


METRICS = tuple(Metric(*line.split()) for line in _METRIC_TABLE.strip().splitlines()[1:])


@dataclass(frozen=True)
class Fault:
    kind: str  # gap (no sample) | nan | negative | over_100
    metric: str | None  # a Metric.short of the resource's service; None: each of them
    day: int  # days before now's UTC date: 0 today, 1 yesterday
    hours: tuple[int, ...] | None = None  # UTC hours of that day; None: the whole day

    def covers(self, metric: str, day: int, slot: int) -> bool:
        return (
            self.metric in (None, metric)
            and self.day == day
            and (self.hours is None or slot // (3600 // STEP) in self.hours)
        )


FAULTS: dict[str, tuple[Fault, ...]] = {
    "ec2-use1-01": (Fault("gap", None, 2, (10, 11, 12)),),
    "ec2-use1-02": (Fault("gap", None, 4), Fault("gap", None, 5)),
    "ec2-use1-03": (Fault("nan", "cpu", 3, (14,)),),
    "ec2-use1-04": (Fault("negative", "cpu", 6, (2, 3)),),
    "ec2-use1-05": (Fault("over_100", "mem", 7, (20,)),),
    "ec2-use1-06": (Fault("gap", "mem", 9), Fault("gap", "disk", 9)),
    "rds-use1-1": (Fault("gap", None, 2, (0, 1, 2, 3, 4, 5)),),
    "rds-use1-2": (Fault("negative", "connections", 3, (12,)),),
    "rds-euc1-1": (Fault("nan", "cpu", 5, (6, 7)),),
    "rds-euc1-2": (Fault("over_100", "cpu", 8, (9,)),),
    "ec2-euc1-01": (Fault("over_100", "cpu", 0),),
    "ec2-euc1-02": (Fault("negative", "disk", 0),),
    "ec2-euc1-03": (Fault("nan", "mem", 0),),
    "ec2-euc1-04": (Fault("gap", None, 0),),
}


@dataclass(frozen=True)
class Resource:
    key: str  # ours, stable: ec2-use1-00, rds-euc1-3
    service: str  # "ec2" | "rds"
    region: str
    id: str  # ours: EC2 "i-0" + 16 hex from the seed (moto assigns its own), RDS the DB identifier (= key)
    tags: dict[str, str]  # Name, owner, team (when it has one), lab:key
    shape: str  # idle | busy | bursty | daily
    faults: tuple[Fault, ...]
    size: str  # instance type or DB instance class

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return tuple(m for m in METRICS if m.service == self.service)

    def arn(self, real_id: str | None = None) -> str:
        return ARN[self.service].format(region=self.region, id=real_id or self.id)


def resources(seed: int = SEED) -> list[Resource]:
    """The account's resources in table order; only the EC2 ids depend on the seed."""
    rng = random.Random(seed)
    made = []
    for line in _RESOURCE_TABLE.strip().splitlines():
        key, team, owner, shape, size, name = line.split()
        service, region = key.split("-")[:2]
        if shape not in SHAPES:
            raise ValueError(f"unknown shape in {line!r}")
        tags = {"Name": name}
        if owner != "-":
            tags["owner"] = f"{owner}@example.com"
        if team != "-":
            tags["team"] = team
        tags[KEY_TAG] = key
        own_id = f"i-0{rng.getrandbits(64):016x}" if service == "ec2" else key
        made.append(Resource(key, service, REGIONS[region], own_id, tags, shape, FAULTS.get(key, ()), size))
    return made


RESOURCES = resources()


def default_ids(seed: int = SEED) -> dict[str, str]:
    """Our own ids, for history written without a moto server to ask."""
    return {r.key: r.id for r in resources(seed)}


# Time. Every timestamp here is an int of Unix seconds on the 5-minute grid.


def align(now: datetime) -> int:
    """now (timezone-aware) aligned down to 5 minutes, in Unix seconds."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    seconds = int(now.timestamp())
    return seconds - seconds % STEP


def history_window(now: datetime, days: int = HISTORY_DAYS) -> tuple[int, int]:
    """First and last timestamp of the history (inclusive): days * 288 samples ending HISTORY_LAG before now."""
    last = align(now) - int(HISTORY_LAG.total_seconds())
    return last - days * DAY + STEP, last


def live_window(now: datetime) -> tuple[int, int]:
    """First and last timestamp (inclusive) of the datapoints seed_moto puts."""
    last = align(now)
    return last - (LIVE_SAMPLES - 1) * STEP, last


def midnight(now: datetime) -> int:
    """The start of day 0: 00:00 UTC of now's date."""
    return align(now) - align(now) % DAY


def day_of(now: datetime, t: int) -> int:
    """Which day t falls on, counted back from now's UTC date (0: today)."""
    return -((t - midnight(now)) // DAY)


# Values.


def _cycle(slot: int) -> float:
    """0 at 02:00 UTC, 1 at 14:00 UTC."""
    return (1 - math.cos(2 * math.pi * (slot * STEP - 2 * 3600) / DAY)) / 2


def _spikes(seed: int, key: str, day: int) -> set[int]:
    """The slots of a bursty resource's spikes that day: 3 spikes of 1 to 3 samples (shared by its metrics)."""
    rng = random.Random(f"{seed}:{key}:spikes:{day}")
    slots: set[int] = set()
    for _ in range(3):
        start = rng.randrange(DAY // STEP - 3)
        slots.update(range(start, start + rng.randint(1, 3)))
    return slots


def _clean_day(resource: Resource, metric: Metric, day: int, seed: int) -> list[float]:
    """The day's 288 values (slot 0 at 00:00 UTC) before faults."""
    rng = random.Random(f"{seed}:{resource.key}:{metric.short}:{day}")
    level = random.Random(f"{seed}:{resource.key}:{metric.short}")
    shape, short, slots = resource.shape, metric.short, range(DAY // STEP)
    spikes = _spikes(seed, resource.key, day) if shape == "bursty" else set()
    if short in ("netin", "netout"):
        values = [_network(shape, rng, s, s in spikes) for s in slots]
    elif short == "disk":
        base = level.uniform(20, 70) + 0.2 * (HISTORY_DAYS - day)
        values = [base + 0.2 * s / len(slots) + rng.uniform(-0.05, 0.05) for s in slots]
    elif short == "connections":
        values = [_connections(shape, rng, s, s in spikes) for s in slots]
    elif shape == "idle":
        values = [rng.uniform(1, 3) if short == "cpu" else rng.uniform(10, 20) for _ in slots]
    elif shape == "busy":
        mean = level.uniform(68, 82)
        values = [min(90.0, max(60.0, mean + rng.uniform(-6, 6))) for _ in slots]
    elif shape == "bursty" and short == "cpu":
        values = [rng.uniform(75, 98) if s in spikes else rng.uniform(2, 8) for s in slots]
    elif shape == "bursty":
        values = [rng.uniform(25, 40) for _ in slots]
    else:  # daily
        low, high = (5, 60) if short == "cpu" else (30, 30)
        values = [low + high * _cycle(s) + rng.uniform(-2, 2) for s in slots]
    return [round(v, 2) for v in values]


def _network(shape: str, rng: random.Random, slot: int, spike: bool) -> float:
    """Bytes in (or out) in 5 minutes: idle well under 5 MB a day both ways (0.5 to 3 KB a sample), bursty over it
    (20 to 60 KB, and 5 to 20 MB in the spikes), busy and daily far over."""
    if shape == "idle":
        value = rng.uniform(500, 3000)
    elif shape == "busy":
        value = rng.uniform(2e7, 8e7)
    elif shape == "bursty":
        value = rng.uniform(5e6, 2e7) if spike else rng.uniform(2e4, 6e4)
    else:
        value = 1e5 + 2e7 * _cycle(slot) + rng.uniform(0, 1e4)
    return float(round(value))


def _connections(shape: str, rng: random.Random, slot: int, spike: bool) -> float:
    if shape == "idle":
        return 0.0
    if shape == "busy":
        return float(rng.randint(80, 160))
    if shape == "bursty":
        return float(rng.randint(40, 120) if spike else rng.randint(1, 4))
    return float(max(0, round(5 + 70 * _cycle(slot) + rng.uniform(-3, 3))))


def _apply(fault: Fault, value: float) -> float | None:
    if fault.kind == "gap":
        return None
    if fault.kind == "nan":
        return math.nan
    if fault.kind == "negative":
        return round(-abs(value) - 1, 2)
    if fault.kind == "over_100":
        return round(101 + abs(value) / 2, 2)
    raise ValueError(f"unknown fault kind {fault.kind!r}")


def series(
    resource: Resource, metric: Metric, first: int, last: int, now: datetime, *, seed: int = SEED
) -> list[tuple[int, float]]:
    """The samples (timestamp, value) from first to last inclusive, faults applied: a gap is no sample."""
    days: dict[int, list[float]] = {}
    out = []
    start = midnight(now)
    for t in range(first, last + 1, STEP):
        day, slot = -((t - start) // DAY), (t - start) % DAY // STEP
        if day not in days:
            days[day] = _clean_day(resource, metric, day, seed)
        value: float | None = days[day][slot]
        for fault in resource.faults:
            if value is not None and fault.covers(metric.short, day, slot):
                value = _apply(fault, value)
        if value is not None:
            out.append((t, value))
    return out


# OpenMetrics history.


def _prom_tag(key: str) -> str:
    """A tag key as YACE makes it a label (its sanitize(): these characters become _)."""
    return "tag_" + re.sub(r"[ ,\t/\\.\-:=@<>()]", "_", key)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items())) + "}"


def series_labels(resource: Resource, metric: Metric, real_id: str) -> dict[str, str]:
    """The labels YACE gives the resource's series of metric."""
    labels = {
        "account_id": ACCOUNT_ID,
        f"dimension_{metric.dimension}": real_id,
        "name": resource.arn(real_id) if metric.name == "arn" else "global",
        "region": resource.region,
    }
    if metric.name == "arn":
        labels.update({_prom_tag(k): resource.tags[k] for k in METRIC_TAGS if k in resource.tags})
    return labels


def info_labels(resource: Resource, real_id: str) -> dict[str, str]:
    """The labels of the resource's info series: a tag it has not (team) is a label it has not."""
    labels = {"account_id": ACCOUNT_ID, "name": resource.arn(real_id), "region": resource.region}
    labels.update({_prom_tag(k): v for k, v in resource.tags.items()})
    return labels


def _number(value: float) -> str:
    return "NaN" if math.isnan(value) else repr(value)


@dataclass(frozen=True)
class History:
    path: pathlib.Path
    first: int  # the history window: its first and last timestamp (Unix seconds)
    last: int
    series: int
    samples: int


def openmetrics(
    out_path: str | os.PathLike,
    now: datetime,
    ids: Mapping[str, str] | None = None,
    seed: int = SEED,
    days: int = HISTORY_DAYS,
) -> History:
    """Write the history (history_window) as OpenMetrics text for `promtool tsdb create-blocks-from openmetrics`:
    one `# TYPE NAME gauge` per family, the families one after the other (METRICS order, then the info series),
    each series' samples in time order, timestamps in seconds, `# EOF` last. ids maps our keys to the ids the
    account gave (seed_moto's answer); default: default_ids(seed)."""
    ids = dict(ids or default_ids(seed))
    table = resources(seed)
    first, last = history_window(now, days)
    path = pathlib.Path(out_path)
    count_series = count_samples = 0
    with path.open("w", encoding="utf-8", newline="\n") as out:
        for metric in METRICS:
            out.write(f"# TYPE {metric.series} gauge\n")
            for resource in (r for r in table if r.service == metric.service):
                head = metric.series + _labels(series_labels(resource, metric, ids[resource.key]))
                samples = series(resource, metric, first, last, now, seed=seed)
                out.write("".join(f"{head} {_number(v)} {t}\n" for t, v in samples))
                count_series += bool(samples)
                count_samples += len(samples)
        for service, name in INFO_SERIES.items():
            out.write(f"# TYPE {name} gauge\n")
            for resource in (r for r in table if r.service == service):
                head = name + _labels(info_labels(resource, ids[resource.key]))
                out.write("".join(f"{head} 0 {t}\n" for t in range(first, last + 1, STEP)))
                count_series += 1
                count_samples += (last - first) // STEP + 1
        out.write("# EOF\n")
    return History(path, first, last, count_series, count_samples)


# promtool.


def promtool() -> str:
    """promtool 3.x: on PATH, else $INFRA_OBS_CACHE/bin."""
    cache = pathlib.Path(os.environ.get("INFRA_OBS_CACHE", "/var/cache/infra-obs"))
    found = shutil.which("promtool") or str(cache / "bin" / "promtool")
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=True).stdout
    if not re.match(r"promtool, version 3\.", version):
        raise RuntimeError(f"{found} is not promtool 3.x: {version.splitlines()[:1]}")
    return found


def backfill(openmetrics_path: str | os.PathLike, data_dir: str | os.PathLike) -> list[dict]:
    """TSDB blocks from the OpenMetrics file into data_dir (made if missing) with promtool, blocks of up to
    MAX_BLOCK_DURATION; returns the meta.json of each block made, oldest first."""
    data = pathlib.Path(data_dir)
    data.mkdir(parents=True, exist_ok=True)
    before = {p.parent.name for p in data.glob("*/meta.json")}
    result = subprocess.run(
        [
            promtool(),
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            f"--max-block-duration={MAX_BLOCK_DURATION}",
            str(openmetrics_path),
            str(data),
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"promtool create-blocks-from failed ({result.returncode}): {result.stderr.strip()}")
    made = [json.loads(p.read_text()) for p in data.glob("*/meta.json") if p.parent.name not in before]
    return sorted(made, key=lambda meta: meta["minTime"])


# moto.


def _client(service: str, region: str, endpoint: str):
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id="lab",  # any key that STS did not hand out is moto's default account
        aws_secret_access_key="lab",
    )


def _tag_list(resource: Resource) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in resource.tags.items()]


def _ec2_found(ec2) -> dict[str, str]:
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": "tag-key", "Values": [KEY_TAG]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
    )
    found: dict[str, list[str]] = {}
    for page in pages:
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
                found.setdefault(tags[KEY_TAG], []).append(instance["InstanceId"])
    return {key: min(instance_ids) for key, instance_ids in found.items()}


def _rds_found(rds) -> dict[str, str]:
    found = {}
    for page in rds.get_paginator("describe_db_instances").paginate():
        for db in page["DBInstances"]:
            tags = {t["Key"]: t["Value"] for t in db.get("TagList", [])}
            if KEY_TAG in tags:
                found[tags[KEY_TAG]] = db["DBInstanceIdentifier"]
    return found


def find_ids(endpoint: str) -> dict[str, str]:
    """Our key -> id of each of our resources the account holds (found by the lab:key tag); nothing is created."""
    ids: dict[str, str] = {}
    for region in REGIONS.values():
        ids |= _ec2_found(_client("ec2", region, endpoint))
        ids |= _rds_found(_client("rds", region, endpoint))
    return ids


def _create(resource: Resource, endpoint: str, images: dict[str, str]) -> str:
    if resource.service == "rds":
        _client("rds", resource.region, endpoint).create_db_instance(
            DBInstanceIdentifier=resource.id,
            DBInstanceClass=resource.size,
            Engine="postgres",
            AllocatedStorage=20,
            MasterUsername="lab",
            MasterUserPassword="lab-password",
            Tags=_tag_list(resource),
        )
        return resource.id
    ec2 = _client("ec2", resource.region, endpoint)
    if resource.region not in images:
        images[resource.region] = min(i["ImageId"] for i in ec2.describe_images(Owners=["amazon"])["Images"])
    reply = ec2.run_instances(
        ImageId=images[resource.region],
        InstanceType=resource.size,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": _tag_list(resource)}],
    )
    return reply["Instances"][0]["InstanceId"]


@dataclass
class _Datum:
    namespace: str
    metric: Metric
    real_id: str
    timestamp: int
    value: float

    def cloudwatch(self) -> dict:
        return {
            "MetricName": self.metric.metric,
            "Dimensions": [{"Name": self.metric.dimension, "Value": self.real_id}],
            "Timestamp": datetime.fromtimestamp(self.timestamp, UTC),
            "Value": self.value,
            "Unit": self.metric.unit,
        }


def _already_there(cloudwatch, data: list[_Datum], first: int, last: int) -> set[tuple[str, str, str, int]]:
    """(namespace, metric, id, timestamp) of the data CloudWatch holds already (GetMetricData, 500 queries a call)."""
    wanted = sorted({(d.namespace, d.metric.metric, d.metric.dimension, d.real_id) for d in data})
    there = set()
    for start in range(0, len(wanted), 500):
        batch = wanted[start : start + 500]
        queries = [
            {
                "Id": f"q{n}",
                "MetricStat": {
                    "Metric": {"Namespace": ns, "MetricName": name, "Dimensions": [{"Name": dim, "Value": rid}]},
                    "Period": STEP,
                    "Stat": "SampleCount",
                },
            }
            for n, (ns, name, dim, rid) in enumerate(batch)
        ]
        kwargs = {
            "MetricDataQueries": queries,
            "StartTime": datetime.fromtimestamp(first, UTC),
            "EndTime": datetime.fromtimestamp(last + STEP, UTC),
        }
        while True:
            reply = cloudwatch.get_metric_data(**kwargs)
            for result in reply["MetricDataResults"]:
                ns, name, _, rid = batch[int(result["Id"][1:])]
                there.update((ns, name, rid, int(ts.timestamp())) for ts in result["Timestamps"])
            if not reply.get("NextToken"):
                break
            kwargs["NextToken"] = reply["NextToken"]
    return there


def _put_live(endpoint: str, region: str, ids: Mapping[str, str], now: datetime, seed: int) -> int:
    """Put the region's live datapoints CloudWatch does not hold yet; NaN is skipped (CloudWatch refuses it)."""
    first, last = live_window(now)
    data = [
        _Datum(metric.namespace, metric, ids[r.key], t, v)
        for r in resources(seed)
        if r.region == region
        for metric in r.metrics
        for t, v in series(r, metric, first, last, now, seed=seed)
        if not math.isnan(v)
    ]
    cloudwatch = _client("cloudwatch", region, endpoint)
    there = _already_there(cloudwatch, data, first, last)
    todo = [d for d in data if (d.namespace, d.metric.metric, d.real_id, d.timestamp) not in there]
    for namespace in sorted({d.namespace for d in todo}):
        mine = [d.cloudwatch() for d in todo if d.namespace == namespace]
        for start in range(0, len(mine), 1000):  # PutMetricData: 1000 datums (and 1 MB) a call
            cloudwatch.put_metric_data(Namespace=namespace, MetricData=mine[start : start + 1000])
    return len(todo)


def seed_moto(endpoint: str, now: datetime, seed: int = SEED) -> dict[str, str]:
    """Make the account hold our resources (those it holds already, found by the lab:key tag, are kept), the
    live datapoints (live_window) it does not hold yet, and the global view's bucket (THANOS_BUCKET, which the
    Thanos sidecars upload to: the lab's OSS); a second run changes nothing. Returns our key -> the id
    the account has for it (EC2: moto's, RDS: ours)."""
    ids = find_ids(endpoint)
    images: dict[str, str] = {}
    created = 0
    for resource in resources(seed):
        if resource.key not in ids:
            ids[resource.key] = _create(resource, endpoint, images)
            created += 1
    put = sum(_put_live(endpoint, region, ids, now, seed) for region in REGIONS.values())
    s3 = _client("s3", "us-east-1", endpoint)
    if THANOS_BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=THANOS_BUCKET)
    print(
        f"lab_aws: {created} instances created, {len(ids) - created} there already; {put} datapoints put;"
        f" bucket {THANOS_BUCKET}",
        file=sys.stderr,
    )
    return {r.key: ids[r.key] for r in resources(seed)}


# CLI.


def _now(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _history(args: argparse.Namespace) -> History:
    ids = find_ids(args.endpoint) if args.endpoint else default_ids(args.seed)
    missing = [r.key for r in resources(args.seed) if r.key not in ids]
    if missing:
        raise SystemExit(f"{args.endpoint} lacks {len(missing)} of the lab's resources ({missing[0]}, ...): seed it")
    history = openmetrics(args.out, _now(args.now), ids, args.seed)
    print(
        f"{history.path}: {history.series} series, {history.samples} samples, "
        f"{datetime.fromtimestamp(history.first, UTC):%Y-%m-%dT%H:%M}Z"
        f"..{datetime.fromtimestamp(history.last, UTC):%Y-%m-%dT%H:%M}Z"
    )
    return history


def main(argv: Iterable[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    seed = commands.add_parser("seed", help="instances and the last 30 minutes of metrics into a moto server")
    history = commands.add_parser("history", help="the 14-day history as OpenMetrics text")
    fill = commands.add_parser("backfill", help="the history into FILE, then TSDB blocks from it into DIR")
    # The lab hosts reach the controller only at their network's gateway: the lab's AWS listens there.
    up = commands.add_parser("up", help="a moto server on ADDRESS:PORT (unless one answers there), then seed it")
    down = commands.add_parser("down", help="stop the moto server `up` started")
    for command in (up, down):
        command.add_argument("--pidfile", required=True, type=pathlib.Path)
    up.add_argument("--host", required=True, help="the address to listen on (the lab network's gateway)")
    up.add_argument("--port", required=True, type=int)
    for command in (seed, history, fill, up):
        command.add_argument("--now", help="ISO 8601 (UTC when no offset); default: the clock")
        command.add_argument("--seed", type=int, default=SEED)
    seed.add_argument("--endpoint", required=True, help="moto server URL")
    for command in (history, fill):
        command.add_argument("--out", required=True, type=pathlib.Path, help="the OpenMetrics file")
        command.add_argument("--endpoint", help="moto server to take the EC2 ids from (default: our own ids)")
    fill.add_argument("--data-dir", required=True, type=pathlib.Path)
    args = parser.parse_args(list(argv))
    if args.command == "seed":
        print(json.dumps(seed_moto(args.endpoint, _now(args.now), args.seed), indent=1))
    elif args.command == "up":
        endpoint = store.start(args.host, args.port, args.pidfile)
        seed_moto(endpoint, _now(args.now), args.seed)
        print(endpoint)
    elif args.command == "down":
        store.stop(args.pidfile)
    elif args.command == "history":
        _history(args)
    else:
        made = backfill(_history(args).path, args.data_dir)
        for meta in made:
            print(f"block {args.data_dir / meta['ulid']}: {meta['stats']['numSamples']} samples")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
