"""Samples into daily records: each reject reason, the arithmetic, and hostile identities and tags."""

import datetime
import math

import pytest
from infra_obs_cost import model
from infra_obs_cost.model import METRICS, Observation, Policy, Resource, daily, resource_from_arn

DAY = datetime.date(2026, 11, 20)
EC2 = Resource("123456789012", "eu-central-1", "ec2", "i-0a1b2c3d4e5f60718")
RDS = Resource("123456789012", "us-east-1", "rds", "orders-db-1")
CPU = next(m for m in METRICS if m.service == "ec2" and m.name == "cpu")
CONNECTIONS = next(m for m in METRICS if m.name == "connections")
POLICY = Policy(min_samples=144)


def one(observation, teams=None):
    """The records and rejects of the observation's metric (a resource's other metrics have no samples here)."""
    teams = (
        {observation.resource: {"ec2": "payments", "rds": "data"}[observation.resource.service]}
        if teams is None
        else teams
    )
    records, rejects = daily(DAY, [observation], teams, POLICY)
    name = observation.metric.name
    return [r for r in records if r.metric == name], [j for j in rejects if j.metric == name]


def test_a_known_resource_without_samples_of_a_metric_has_too_few_of_it():
    records, rejects = daily(DAY, [Observation(EC2, CPU, tuple([5.0] * 288))], {EC2: "payments", RDS: "data"}, POLICY)
    assert {(r.resource, r.metric) for r in records} == {(EC2, "cpu")}
    assert sorted((j.resource.service, j.metric, j.reason, j.example) for j in rejects) == [
        ("ec2", "disk", "too_few_samples", "0 valid of 144 needed"),
        ("ec2", "memory", "too_few_samples", "0 valid of 144 needed"),
        ("ec2", "network_in", "too_few_samples", "0 valid of 144 needed"),
        ("ec2", "network_out", "too_few_samples", "0 valid of 144 needed"),
        ("rds", "connections", "too_few_samples", "0 valid of 144 needed"),
        ("rds", "cpu", "too_few_samples", "0 valid of 144 needed"),
    ]


def reasons(rejects):
    return sorted((j.reason, j.samples, j.example) for j in rejects)


def test_a_full_day_gives_its_average_and_maximum_with_the_sample_count():
    values = tuple([10.0] * 144 + [40.0] * 144)
    records, rejects = one(Observation(EC2, CPU, values))
    assert rejects == []
    assert [(r.statistic, r.value, r.samples, r.team, r.metric, r.day) for r in records] == [
        ("avg", 25.0, 288, "payments", "cpu", DAY),
        ("max", 40.0, 288, "payments", "cpu", DAY),
    ]


def test_a_day_of_bytes_gives_its_total_and_largest_five_minutes():
    network_in = next(m for m in METRICS if m.name == "network_in")
    values = tuple([1000.0] * 287 + [5e6, -1.0])  # a negative byte count is out of range, as a percentage over 100
    records, rejects = one(Observation(EC2, network_in, values))
    assert [(r.statistic, r.value, r.samples) for r in records] == [("sum", 287_000 + 5e6, 288), ("max", 5e6, 288)]
    assert reasons(rejects) == [("out_of_range", 1, "-1")]
    assert network_in.cloudwatch_statistic == "Sum" and CPU.cloudwatch_statistic == "Average"


def test_bad_samples_are_dropped_counted_and_the_record_kept_from_the_rest():
    values = tuple([20.0] * 200 + [math.nan, math.inf, -3.0, 100.5, 250.0])
    records, rejects = one(Observation(EC2, CPU, values))
    assert reasons(rejects) == [("not_a_number", 2, "nan"), ("out_of_range", 3, "-3")]
    assert [(r.statistic, r.value, r.samples) for r in records] == [("avg", 20.0, 200), ("max", 20.0, 200)]


def test_a_percentage_of_exactly_0_and_100_is_in_range_and_a_count_has_no_upper_bound():
    records, _ = one(Observation(EC2, CPU, tuple([0.0] * 100 + [100.0] * 100)))
    assert [r.value for r in records] == [50.0, 100.0]
    records, rejects = one(Observation(RDS, CONNECTIONS, tuple([5000.0] * 150 + [-1.0])))
    assert [r.value for r in records] == [5000.0, 5000.0]
    assert reasons(rejects) == [("out_of_range", 1, "-1")]


def test_too_few_valid_samples_reject_the_record():
    records, rejects = one(Observation(EC2, CPU, tuple([5.0] * 143 + [-1.0] * 10)))
    assert records == []
    assert reasons(rejects) == [("out_of_range", 10, "-1"), ("too_few_samples", 0, "143 valid of 144 needed")]


def test_a_resource_without_a_team_tag_an_invalid_team_or_no_tags_at_all_is_rejected_whole():
    full = Observation(EC2, CPU, tuple([5.0] * 288))
    assert reasons(one(full, {EC2: None})[1]) == [("missing_team", 0, "no team tag")]
    assert reasons(one(full, {EC2: "Pay ments\n"})[1]) == [("invalid_team", 0, "Pay ments?")]
    assert reasons(one(full, {})[1]) == [("unknown_resource", 0, "no tags for the resource")]
    assert one(full, {EC2: None})[0] == []


@pytest.mark.parametrize(
    ("resource", "part"),
    [
        (Resource("12345678901", "eu-central-1", "ec2", "i-0a1b2c3d4e5f60718"), "account"),
        (Resource("123456789012", "eu-central-1'", "ec2", "i-0a1b2c3d4e5f60718"), "region"),
        (Resource("123456789012", "eu-central-1", "ec2", "i-0A1B2C3D"), "resource id"),
        (Resource("123456789012", "eu-central-1", "ec2", ""), "resource id"),
        (Resource("123456789012", "us-east-1", "rds", "db--two"), "resource id"),
        (Resource("123456789012", "us-east-1", "rds", "db-" + "x" * 61), "resource id"),
        (Resource("123456789012", "us-east-1", "rds", "1db"), "resource id"),
    ],
)
def test_an_identity_outside_its_grammar_is_rejected_naming_the_part(resource, part):
    # Tags name resources by ARN, which only parses to identities of the grammar: a bad one is never in teams.
    records, rejects = one(Observation(resource, CPU, tuple([5.0] * 288)), {})
    assert records == []
    assert [(j.reason, j.example.split(":")[0]) for j in rejects] == [("invalid_identity", part)]


def test_the_rejects_example_is_printable_and_short():
    long_team = "x" * 300 + "\x00"
    _, rejects = one(Observation(EC2, CPU, tuple([5.0] * 288)), {EC2: long_team})
    assert rejects[0].example == "x" * 61 + "..."


@pytest.mark.parametrize(
    ("arn", "expected"),
    [
        ("arn:aws:ec2:eu-central-1:123456789012:instance/i-0a1b2c3d4e5f60718", EC2),
        ("arn:aws:rds:us-east-1:123456789012:db:orders-db-1", RDS),
        ("arn:aws:ec2:eu-central-1:123456789012:volume/vol-0a1b2c3d", None),
        ("arn:aws:ec2:eu-central-1:123456789012:instance/i-0a1b2c3d4e5f60718\n", None),
        ("arn:aws:rds:us-east-1:123456789012:db:orders--db", None),
        ("global", None),
    ],
)
def test_arns_name_a_resource_only_in_their_exact_shape(arn, expected):
    assert resource_from_arn(arn) == expected


def test_every_reason_has_a_name_the_rejects_table_holds():
    assert all(len(reason) <= 32 and reason.isidentifier() for reason in model.REASONS)
