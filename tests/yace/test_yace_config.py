"""The yace role's config, unit and environment templates, run by Ansible on this machine as the role runs them:
the config is checked by the real yace (`verify-config`, refusing unknown keys as well) before it is written."""

import json
import stat

import pytest
import yaml

from .yace_lab import render, yace_binary

CONFIG = "Write the YACE config"
UNIT = "Write the systemd unit"
ENVIRONMENT = "Write the AWS keys for YACE"
TAGS = ["team", "owner", "Name"]


@pytest.fixture(scope="module")
def yace():
    return yace_binary()


def test_the_defaults_render_a_config_yace_accepts(playbook, tmp_path, yace):
    dest, run = render(playbook, tmp_path, CONFIG, yace=yace)
    assert run.rc == 0, run.output
    text = dest.read_text()
    # Each job its own lists: no YAML anchors and aliases for a reader to follow.
    assert "&id" not in text and "*id" not in text
    config = yaml.safe_load(text)
    job = {"period": 300, "length": 600, "includeContextOnInfoMetrics": True, "regions": ["us-east-1"]}
    assert config == {
        "apiVersion": "v1alpha1",
        "sts-region": "us-east-1",
        "discovery": {
            "exportedTagsOnMetrics": {"AWS/EC2": TAGS, "AWS/RDS": TAGS, "CWAgent": TAGS},
            "jobs": [
                {
                    **job,
                    "type": "AWS/EC2",
                    "metrics": [
                        {"name": "CPUUtilization", "statistics": ["Average"]},
                        {"name": "NetworkIn", "statistics": ["Sum"]},
                        {"name": "NetworkOut", "statistics": ["Sum"]},
                    ],
                },
                {
                    **job,
                    "type": "AWS/RDS",
                    "metrics": [
                        {"name": "CPUUtilization", "statistics": ["Average"]},
                        {"name": "DatabaseConnections", "statistics": ["Average"]},
                    ],
                },
                {
                    **job,
                    "type": "CWAgent",
                    "metrics": [
                        {"name": "mem_used_percent", "statistics": ["Average"]},
                        {"name": "disk_used_percent", "statistics": ["Average"]},
                    ],
                },
            ],
        },
    }


def test_changed_inputs_render_a_config_yace_accepts(playbook, tmp_path, yace):
    role = {"roleArn": "arn:aws:iam::210987654321:role/yace-read", "externalId": "cost"}
    dest, run = render(
        playbook,
        tmp_path,
        CONFIG,
        {
            "yace_regions": ["eu-central-1", "eu-west-1"],
            "yace_aws_roles": [role],
            "yace_exported_tags": ["team", "cost-center"],
            "yace_job_defaults": {"period": 60, "length": 300},
            "yace_discovery_jobs": [
                {"type": "AWS/EC2", "metrics": [{"name": "NetworkOut", "statistics": ["Sum", "Maximum"]}]},
                {
                    "type": "AWS/RDS",
                    "regions": ["us-east-1"],
                    "period": 300,
                    "searchTags": [{"key": "team", "value": "^orders$"}],
                    "metrics": [{"name": "FreeStorageSpace", "statistics": ["Minimum"]}],
                },
            ],
        },
        yace=yace,
    )
    assert run.rc == 0, run.output
    config = yaml.safe_load(dest.read_text())
    assert config["sts-region"] == "eu-central-1"
    assert config["discovery"]["exportedTagsOnMetrics"] == {
        "AWS/EC2": ["team", "cost-center"],
        "AWS/RDS": ["team", "cost-center"],
    }
    ec2, rds = config["discovery"]["jobs"]
    assert ec2 == {
        "period": 60,
        "length": 300,
        "regions": ["eu-central-1", "eu-west-1"],
        "roles": [role],
        "type": "AWS/EC2",
        "metrics": [{"name": "NetworkOut", "statistics": ["Sum", "Maximum"]}],
    }
    # The job's own keys win over the defaults and the role-wide regions.
    assert rds["regions"] == ["us-east-1"] and rds["period"] == 300 and rds["length"] == 300
    assert rds["searchTags"] == [{"key": "team", "value": "^orders$"}] and rds["roles"] == [role]


def test_a_misspelt_key_is_refused_though_yace_only_warns(playbook, tmp_path, yace):
    """`yace verify-config` exits 0 on unknown keys (it logs a warning): the role's check refuses them, and the old
    config stays."""
    jobs = [{"type": "AWS/EC2", "metrics": [{"name": "CPUUtilization", "statistics": ["Average"]}], "searchTag": []}]
    dest, run = render(playbook, tmp_path, CONFIG, {"yace_discovery_jobs": jobs}, yace=yace)
    assert run.rc != 0
    assert "field searchTag not found in type config.Job" in run.output, run.output
    assert not dest.exists()


def test_an_unknown_namespace_is_refused_naming_the_job(playbook, tmp_path, yace):
    jobs = [{"type": "AWS/EC3", "metrics": [{"name": "CPUUtilization", "statistics": ["Average"]}]}]
    dest, run = render(playbook, tmp_path, CONFIG, {"yace_discovery_jobs": jobs}, yace=yace)
    assert run.rc != 0
    assert "Discovery job [0]: Service is not in known list!: AWS/EC3" in run.output, run.output
    assert not dest.exists()


# Quotes, braces, a newline, a comment sign and non-ASCII: each must stay data in the YAML written.
HOSTILE_TEXT = 'x"} , "apiVersion": v2, #y\n\u00e9'


def test_hostile_text_stays_data(playbook, tmp_path, yace):
    dest, run = render(playbook, tmp_path, CONFIG, {"yace_exported_tags": [HOSTILE_TEXT]}, yace=yace)
    assert run.rc == 0, run.output
    config = yaml.safe_load(dest.read_text())
    assert config["apiVersion"] == "v1alpha1"
    assert config["discovery"]["exportedTagsOnMetrics"]["AWS/EC2"] == [HOSTILE_TEXT]


def test_the_unit_runs_yace_with_the_roles_flags_and_no_endpoint_by_default(playbook, tmp_path):
    dest, run = render(playbook, tmp_path, UNIT)
    assert run.rc == 0, run.output
    unit = dest.read_text()
    assert "--listen-address=:5001 " in unit and "--scraping-interval=300 " in unit
    assert "--config.file=/etc/yace/yace.yml " in unit
    assert "AWS_ENDPOINT_URL" not in unit
    assert "EnvironmentFile=-/etc/yace/environment" in unit and "CapabilityBoundingSet=\n" in unit


def test_an_endpoint_url_goes_into_the_units_environment(playbook, tmp_path):
    dest, run = render(playbook, tmp_path, UNIT, {"yace_aws_endpoint_url": "http://10.89.60.5:5000"})
    assert run.rc == 0, run.output
    assert "\nEnvironment=AWS_ENDPOINT_URL=http://10.89.60.5:5000\n" in dest.read_text()


def test_aws_keys_go_into_a_root_only_file_and_nowhere_else(playbook, tmp_path):
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    dest, run = render(
        playbook, tmp_path, ENVIRONMENT, {"yace_aws_access_key_id": "AKIAEXAMPLE", "yace_aws_secret_access_key": secret}
    )
    assert run.rc == 0, run.output
    assert f"AWS_ACCESS_KEY_ID=AKIAEXAMPLE\nAWS_SECRET_ACCESS_KEY={secret}\n" in dest.read_text()
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert secret not in run.output and "AKIAEXAMPLE" not in run.output


def test_without_keys_the_environment_file_sets_nothing(playbook, tmp_path):
    dest, run = render(playbook, tmp_path, ENVIRONMENT)
    assert run.rc == 0, run.output
    assert [line for line in dest.read_text().splitlines() if not line.startswith("#")] == []


def preflight(playbook, **extra):
    return playbook(
        """
        - hosts: all
          gather_facts: false
          vars:
            region: eu-central-1
            az: eu-central-1a
          tasks:
            - ansible.builtin.include_role:
                name: infra.obs.yace
                tasks_from: preflight.yml
        """,
        "-e",
        json.dumps({"yace_archive_url": "http://mirror.invalid/yace.tar.gz", **extra}),
    )


def test_preflight_passes_the_defaults(playbook):
    run = preflight(playbook)
    assert run.rc == 0, run.output


@pytest.mark.parametrize(
    "extra",
    [
        {"yace_listen_port": 70000},
        {"yace_regions": ["us-east-1", "us east 1"]},
        {"yace_regions": []},
        {"yace_aws_endpoint_url": "ftp://10.0.0.1"},
        {"yace_discovery_jobs": [{"metrics": []}]},
    ],
    ids=["port", "region", "no-region", "endpoint-scheme", "job-without-type"],
)
def test_preflight_refuses_bad_settings_naming_them(playbook, extra):
    run = preflight(playbook, **extra)
    assert run.rc != 0
    (name,) = extra
    assert "host localhost: yace_archive_url='http://mirror.invalid/yace.tar.gz'" in run.failures()[0]
    assert name in run.failures()[0]


def test_preflight_refuses_an_endpoint_that_would_add_a_directive(playbook):
    run = preflight(playbook, yace_aws_endpoint_url="http://10.0.0.1:5000\nExecStartPre=+/bin/sh")
    assert run.rc != 0
    assert "refused, as they are written into a systemd unit" in run.failures()[0]
    assert "yace_aws_endpoint_url" in run.failures()[0]


def test_preflight_refuses_keys_without_showing_them(playbook):
    run = preflight(playbook, yace_aws_access_key_id="AKIAEXAMPLE", yace_aws_secret_access_key="s3cr3t\nLD_PRELOAD=/x")
    assert run.rc != 0
    assert "yace_aws_access_key_id and yace_aws_secret_access_key (not shown)" in run.failures()[0]
    assert "LD_PRELOAD" not in run.output and "s3cr3t" not in run.output
    half = preflight(playbook, yace_aws_access_key_id="AKIAEXAMPLE")
    assert half.rc != 0 and "set both or neither" in half.failures()[0]
