"""Values the roles write into systemd units and environment files are refused in preflight when they could change
what the file means (a newline starts a directive, ExecStartPre=+ runs as root; a space starts an argument; systemd
expands '%' and '$'), with the host, the variable and the value in the message."""

import json
import pathlib

import pytest
import yaml
from ansible_collections.infra.obs.plugins.test.unit_values import unit_path, unit_word
from labinfo import run_playbook

# The roles' other preflight checks, satisfied, so that only the value under test can fail.
ROLE_VARS = {
    "consul": {"consul_archive_url": "http://mirror.invalid/consul.zip", "consul_retry_join": ["192.0.2.1"]},
    "prometheus": {"prometheus_archive_url": "http://mirror.invalid/prometheus.tar.gz"},
    "probe_exporter": {
        "probe_exporter_wheelhouse_url": "http://mirror.invalid/probe.tar.gz",
        "probe_exporter_region": "eu-central-1",
        "probe_exporter_az": "eu-central-1a",
        "probe_exporter_address": "192.0.2.10",
    },
    "kafka_lab": {
        "kafka_version": "4.1.1",
        "kafka_lab_clusters": [{"name": "primary", "port": 9092, "controller_port": 9093}],
    },
    "node_exporter": {},
    "quality_checker": {
        "quality_checker_wheelhouse_url": "http://mirror.invalid/probe.tar.gz",
        "quality_checker_region": "eu-central-1",
        "quality_checker_az": "eu-central-1a",
        "quality_checker_address": "192.0.2.10",
        "quality_checker_checks_dir": str(pathlib.Path(__file__).resolve().parents[1] / "inventories/lab/checks"),
    },
    "cost_collector": {
        "cost_collector_wheelhouse_url": "http://mirror.invalid/cost.tar.gz",
        "cost_collector_region": "eu-central-1",
        "cost_collector_az": "eu-central-1a",
    },
    "thanos": {
        "thanos_archive_url": "http://mirror.invalid/thanos.tar.gz",
        "thanos_components": ["sidecar", "store", "compact", "query"],
        "thanos_objstore_bucket": "infra-obs-metrics",
        "thanos_objstore_endpoint": "oss.example.com",
        "thanos_query_endpoints": ["127.0.0.1:10901"],
    },
}
HOSTILE = {
    "directive": "/var/lib/consul\nExecStartPre=+/bin/sh -c 'id > /tmp/pwned'",
    "argument": "15d --web.enable-admin-api",
    "specifier": "/home/%u",
    "variable": "$HOME",
    "quote": "x'y",
    "trailing newline": "prometheus\n",
    "non-ASCII": "prométheus",
    "dot segment": "/opt/../etc",
}
CASES = [
    ("consul", "consul_data_dir", "directive"),
    ("consul", "consul_binary_path", "specifier"),
    ("consul", "consul_user", "trailing newline"),
    ("prometheus", "prometheus_retention_time", "argument"),
    ("prometheus", "prometheus_db_dir", "dot segment"),
    ("prometheus", "prometheus_group", "non-ASCII"),
    ("probe_exporter", "probe_exporter_version", "directive"),
    ("probe_exporter", "probe_exporter_prefix", "variable"),
    ("kafka_lab", "kafka_lab_heap", "argument"),
    ("kafka_lab", "kafka_lab_config_dir", "quote"),
    ("quality_checker", "quality_checker_version", "directive"),
    ("quality_checker", "quality_checker_config_dir", "specifier"),
    ("cost_collector", "cost_collector_state_dir", "directive"),
    ("cost_collector", "cost_collector_user", "quote"),
    ("thanos", "thanos_sidecar_tsdb_path", "directive"),
    ("thanos", "thanos_data_dir", "dot segment"),
    ("thanos", "thanos_sidecar_user", "quote"),
]


# Every other case: host name -> (role, the variables that differ from the role's defaults).
OTHER_CASES = {
    **{f"{role.replace('_', '-')}-defaults": (role, {}) for role in ROLE_VARS},
    "node-exporter-flags": (
        "node_exporter",
        {"node_exporter_extra_args": ["--collector.systemd", '--x="\nFOO=1\nY="']},
    ),
    "probe-token": ("probe_exporter", {"probe_exporter_consul_token": "0f9d\nLD_PRELOAD=/tmp/e.so"}),
    "probe-service": ("probe_exporter", {"probe_exporter_consul_service": "x/../../../../agent/leave"}),
    "quality-token": ("quality_checker", {"quality_checker_consul_token": "0f9d\nLD_PRELOAD=/tmp/e.so"}),
    "quality-no-checks": ("quality_checker", {"quality_checker_checks_dir": "/nonexistent/checks"}),
    "prometheus-meta": ("prometheus", {"prometheus_consul_meta_labels": ["region", "__address__"]}),
    "prometheus-replica": ("prometheus", {"prometheus_replica_label": ".*"}),
    "prometheus-alertmanagers": ("prometheus", {"prometheus_alertmanagers": ["127.0.0.1:9093", "am:9093\n- evil:1"]}),
    "cost-aws-secret": ("cost_collector", {"cost_collector_aws_secret_access_key": "s3cret\nLD_PRELOAD=/tmp/e.so"}),
    "cost-calendar": ("cost_collector", {"cost_collector_on_calendar": "daily\nExecStartPre=/bin/sh"}),
    "cost-calendar-specifier": ("cost_collector", {"cost_collector_on_calendar": "*-*-* %H:00"}),
    "cost-no-password": ("cost_collector", {"cost_collector_database_driver": "mysql"}),
    "thanos-secret": ("thanos", {"thanos_objstore_access_key": "lab", "thanos_objstore_secret_key": "s3cret\nX=1"}),
}


def case_host(index: int) -> str:
    return f"unit-case-{index}"


@pytest.fixture(scope="module")
def preflight(tmp_path_factory):
    """Every case in one ansible-playbook run (a play per role, a host per case, all of them this machine): the
    failure message of each host, or None when its preflight passed, and the run's whole output."""
    hosts = {case_host(i): (role, {variable: HOSTILE[kind]}) for i, (role, variable, kind) in enumerate(CASES)}
    hosts |= OTHER_CASES
    inventory = {
        "all": {
            "children": {
                f"{role}_cases": {
                    "vars": ROLE_VARS[role],
                    "hosts": {host: extra for host, (of, extra) in hosts.items() if of == role},
                }
                for role in ROLE_VARS
            }
        }
    }
    directory = tmp_path_factory.mktemp("unit-values")
    (directory / "hosts.yml").write_text(yaml.safe_dump(inventory))
    plays = [
        {
            "hosts": f"{role}_cases",
            "gather_facts": False,
            "tasks": [{"ansible.builtin.include_role": {"name": f"infra.obs.{role}", "tasks_from": "preflight.yml"}}],
        }
        for role in ROLE_VARS
    ]
    run = run_playbook(directory, yaml.safe_dump(plays), inventory=str(directory / "hosts.yml"))
    failures = {host: None for host in hosts}
    for play in run.json["plays"]:
        for task in play["tasks"]:
            for host, result in task["hosts"].items():
                if result.get("failed") and failures[host] is None:
                    failures[host] = result.get("msg", "")
    return failures, run.output


@pytest.mark.parametrize(("index", "case"), list(enumerate(CASES)), ids=[f"{r}:{v}:{k}" for r, v, k in CASES])
def test_a_hostile_unit_value_is_refused_naming_host_variable_and_value(preflight, index, case):
    _role, variable, kind = case
    message = preflight[0][case_host(index)]
    assert message is not None
    assert f"host {case_host(index)}: refused, as they are written into a systemd unit" in message, message
    assert json.dumps({variable: HOSTILE[kind]}) in message, message


@pytest.mark.parametrize("role", ROLE_VARS)
def test_the_defaults_pass(preflight, role):
    assert preflight[0][f"{role.replace('_', '-')}-defaults"] is None


def test_node_exporter_flags_are_checked_one_by_one(preflight):
    assert "node_exporter_extra_args" in preflight[0]["node-exporter-flags"]


def test_a_hostile_consul_token_is_refused_without_being_shown(preflight):
    failures, output = preflight
    assert "probe_exporter_consul_token (not shown)" in failures["probe-token"]
    assert "quality_checker_consul_token (not shown)" in failures["quality-token"]
    assert "cost_collector_aws_* (not shown)" in failures["cost-aws-secret"]
    assert "thanos_objstore_secret_key (not shown)" in failures["thanos-secret"]
    assert "LD_PRELOAD" not in output and "s3cret" not in output


def test_the_cost_timers_schedule_is_a_calendar_spec_alone(preflight):
    failures, _ = preflight
    for host in ("cost-calendar", "cost-calendar-specifier"):
        assert f"host {host}: cost_collector_on_calendar=" in failures[host], failures[host]
        assert "must be a systemd calendar spec" in failures[host], failures[host]
    assert "cost_collector_database_password (not shown) must be set" in failures["cost-no-password"]


def test_a_checker_without_check_files_is_refused(preflight):
    assert (
        "quality_checker_checks_dir=/nonexistent/checks: no *.yml check files there"
        in preflight[0]["quality-no-checks"]
    )


def test_the_probes_consul_service_name_cannot_walk_the_agent_api(preflight):
    """The exporter registers <service>-<inventory name> through URL paths of the Consul agent API."""
    assert "they name the exporter's Consul service and id" in preflight[0]["probe-service"]


def test_a_meta_key_cannot_become_an_internal_label(preflight):
    assert 'prometheus_consul_meta_labels has ["__address__"]' in preflight[0]["prometheus-meta"]


def test_the_replica_label_cannot_drop_every_label_from_alerts(preflight):
    assert 'prometheus_replica_label=".*" must be a label name' in preflight[0]["prometheus-replica"]


def test_an_alertmanager_address_cannot_add_another(preflight):
    assert (
        'prometheus_alertmanagers=["127.0.0.1:9093", "am:9093\\n- evil:1"] must be HOST:PORT each'
        in (preflight[0]["prometheus-alertmanagers"])
    )


@pytest.mark.parametrize(
    ("value", "path", "word"),
    [
        ("/var/lib/consul", True, True),
        ("/var/lib/consul/", True, True),
        ("var/lib", False, True),
        ("/a/../b", False, True),
        ("/a b", False, False),
        ("/a\n", False, False),
        ("/a%h", False, False),
        ("", False, False),
        ("0f9d6c52-8b0e-4a5e-9d6b-1a2b3c4d5e6f", False, True),
        (["--a=1", "--b"], False, True),
        (["--a", "--b c"], False, False),
        (9100, False, False),
    ],
)
def test_the_grammars(value, path, word):
    assert (unit_path(value), unit_word(value)) == (path, word)


@pytest.mark.parametrize(
    ("name", "check_path"),
    [("node-exporter/../../agent/leave", "/metrics"), ("node-exporter", "@evil.example/metrics")],
)
def test_a_consul_service_name_or_check_path_cannot_leave_its_place(playbook, tmp_path, name, check_path):
    """Names and ids go into the agent API's URL paths; a check path without '/' would become the URL's user part."""
    run = consul_service(playbook, tmp_path, {"_consul_service_name": name, "_consul_service_check_path": check_path})
    assert run.rc != 0
    message = run.failures()[-1]
    assert "name and id must be letters, digits and . _ -" in message, message
    assert json.dumps(name) in message or json.dumps(check_path) in message


@pytest.mark.parametrize(
    "team",
    # A newline, a quote, braces, a semicolon, a zone id, look-alike digits (Arabic-Indic, fullwidth), too long.
    [
        "plat\nform",
        'plat"form',
        "plat{form}",
        "plat;form",
        "fe80::1%eth0",
        "team\u0661",
        "\uff11team",
        "t" * 65,
        "-team",
        "",
    ],
)
def test_a_consul_service_meta_value_outside_the_grammar_is_refused(playbook, tmp_path, team):
    """A role's *_team variable (here as _consul_service_meta) becomes a Prometheus label that alerts route on."""
    run = consul_service(playbook, tmp_path, {"_consul_service_meta": {"team": team}})
    assert run.rc != 0
    message = run.failures()[-1]
    assert '"node-exporter"' in message and "must be letters, digits and . _ -" in message, message
    assert json.dumps(team)[:40] in message, message


def consul_service(playbook, tmp_path, inputs: dict):
    """_consul_service with inputs (a node exporter's by default), on a host of eu-central-1a. It runs only inside a
    role, so a throw-away role includes it."""
    tasks = tmp_path / "wrapper" / "tasks"
    tasks.mkdir(parents=True)
    include = {
        "ansible.builtin.include_role": {"name": "infra.obs._consul_service"},
        "vars": {"_consul_service_name": "node-exporter", "_consul_service_port": 9100, **inputs},
    }
    (tasks / "main.yml").write_text(yaml.safe_dump([include]))
    play = [
        {
            "hosts": "all",
            "gather_facts": False,
            "vars": {
                "region": "eu-central-1",
                "az": "eu-central-1a",
                "ansible_facts": {"default_ipv4": {"address": "192.0.2.10"}},
            },
            "tasks": [{"ansible.builtin.include_role": {"name": str(tmp_path / "wrapper")}}],
        }
    ]
    return playbook(yaml.safe_dump(play))
