"""Values the roles write into systemd units and environment files are refused in preflight when they could change
what the file means (a newline starts a directive, ExecStartPre=+ runs as root; a space starts an argument; systemd
expands '%' and '$'), with the host, the variable and the value in the message."""

import json

import pytest
import yaml
from ansible_collections.infra.obs.plugins.test.unit_values import unit_path, unit_word

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
]


def preflight(playbook, role: str, extra: dict):
    play = [
        {
            "hosts": "all",
            "gather_facts": False,
            "tasks": [
                {
                    "ansible.builtin.include_role": {"name": f"infra.obs.{role}", "tasks_from": "preflight.yml"},
                    "vars": ROLE_VARS[role] | extra,
                }
            ],
        }
    ]
    return playbook(yaml.safe_dump(play))


@pytest.mark.parametrize(("role", "variable", "kind"), CASES, ids=[f"{r}:{v}:{k}" for r, v, k in CASES])
def test_a_hostile_unit_value_is_refused_naming_host_variable_and_value(playbook, role, variable, kind):
    run = preflight(playbook, role, {variable: HOSTILE[kind]})
    assert run.rc != 0
    message = run.failures()[-1]
    assert "host localhost: refused, as they are written into a systemd unit" in message, message
    assert json.dumps({variable: HOSTILE[kind]}) in message, message


@pytest.mark.parametrize("role", ROLE_VARS)
def test_the_defaults_pass(playbook, role):
    run = preflight(playbook, role, {})
    assert run.rc == 0, run.failures()


def test_node_exporter_flags_are_checked_one_by_one(playbook):
    flags = ["--collector.systemd", '--x="\nLD_PRELOAD=/tmp/e.so\nY="']
    run = preflight(playbook, "node_exporter", {"node_exporter_extra_args": flags})
    assert run.rc != 0
    assert "node_exporter_extra_args" in run.failures()[-1]


def test_a_hostile_consul_token_is_refused_without_being_shown(playbook):
    token = "0f9d\nLD_PRELOAD=/tmp/e.so"
    run = preflight(playbook, "probe_exporter", {"probe_exporter_consul_token": token})
    assert run.rc != 0
    assert "probe_exporter_consul_token (not shown)" in run.failures()[-1]
    assert "LD_PRELOAD" not in run.output


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


def test_the_probes_consul_service_name_cannot_walk_the_agent_api(playbook):
    """The exporter registers <service>-<inventory name> through URL paths of the Consul agent API."""
    run = preflight(playbook, "probe_exporter", {"probe_exporter_consul_service": "x/../../../../agent/leave"})
    assert run.rc != 0
    assert "they name the exporter's Consul service and id" in run.failures()[-1]


def test_a_meta_key_cannot_become_an_internal_label(playbook):
    run = preflight(playbook, "prometheus", {"prometheus_consul_meta_labels": ["region", "__address__"]})
    assert run.rc != 0
    assert 'prometheus_consul_meta_labels has ["__address__"]' in run.failures()[-1]
