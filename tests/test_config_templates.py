"""The consul and prometheus roles' config templates, rendered by Ansible with the roles' defaults and checked
by the real tools: `consul validate` (the lab's 1.8.7) and `promtool check config` (the lab's Prometheus)."""

import json
import pathlib
import shutil
import subprocess

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
TOKEN = "s3cr3t-acl-token-0f9d"

RENDER = """
- hosts: all
  gather_facts: false
  vars:
    region: eu-central-1
    az: eu-central-1a
    ansible_facts: {{default_ipv4: {{address: 192.0.2.10}}}}
  vars_files:
    - {repo}/roles/{role}/defaults/main.yml
  tasks:
    - ansible.builtin.template:
        src: {repo}/roles/{role}/templates/{template}
        dest: {dest}
        mode: "0640"
      no_log: {no_log}
"""


SERVER = "[consul_servers]\nmon ansible_connection=local\n"
AGENT = "[consul_servers]\n[agents]\nmon ansible_connection=local\n"


def render(playbook, tmp_path, role, template, *extra_vars, inventory=SERVER, no_log="false"):
    dest = tmp_path / template.removesuffix(".j2")
    (tmp_path / "hosts.ini").write_text(inventory)
    run = playbook(
        RENDER.format(repo=REPO, role=role, template=template, dest=dest, no_log=no_log),
        "--diff",
        *[arg for pair in extra_vars for arg in ("-e", pair)],
        inventory=str(tmp_path / "hosts.ini"),
    )
    assert run.rc == 0, run.output
    return dest, run


@pytest.fixture(scope="module")
def consul():
    path = shutil.which("consul")
    assert path, "consul not on PATH: run scripts/fetch-artifacts.sh"
    return path


def consul_validate(consul, path):
    return subprocess.run([consul, "validate", "-config-format=json", str(path)], capture_output=True, text=True)


def test_consul_server_config_is_valid_for_lab_consul(playbook, tmp_path, consul):
    dest, _ = render(playbook, tmp_path, "consul", "consul.json.j2", "consul_mode=server")
    config = json.loads(dest.read_text())
    assert config["server"] is True and config["bootstrap_expect"] == 1
    assert config["ui"] is True and "ui_config" not in config
    assert config["node_meta"] == {"region": "eu-central-1", "az": "eu-central-1a"}
    result = consul_validate(consul, dest)
    assert result.returncode == 0, result.stdout + result.stderr


def test_consul_agent_config_joins_servers_and_is_valid(playbook, tmp_path, consul):
    dest, _ = render(
        playbook,
        tmp_path,
        "consul",
        "consul.json.j2",
        '{"consul_retry_join": ["192.0.2.1", "192.0.2.2"]}',
        inventory=AGENT,
    )
    config = json.loads(dest.read_text())
    assert config["server"] is False and "bootstrap_expect" not in config
    assert config["retry_join"] == ["192.0.2.1", "192.0.2.2"]
    assert config["leave_on_terminate"] is True
    result = consul_validate(consul, dest)
    assert result.returncode == 0, result.stdout + result.stderr


def test_consul_config_for_current_releases_uses_ui_config(playbook, tmp_path, consul):
    dest, _ = render(
        playbook,
        tmp_path,
        "consul",
        "consul.json.j2",
        "consul_version=1.21.4",
        "consul_mode=server",
    )
    config = json.loads(dest.read_text())
    assert config["ui_config"] == {"enabled": True} and "ui" not in config
    # 1.8.7 does not know ui_config: the version switch is what keeps each release's config valid.
    assert consul_validate(consul, dest).returncode != 0


def test_consul_token_stays_out_of_output(playbook, tmp_path):
    dest, run = render(
        playbook,
        tmp_path,
        "consul",
        "consul.json.j2",
        f"consul_acl_token={TOKEN}",
        no_log="true",
    )
    assert json.loads(dest.read_text())["acl"]["tokens"]["agent"] == TOKEN
    assert TOKEN not in run.output


def test_prometheus_config_passes_promtool_and_maps_consul_meta(playbook, tmp_path):
    dest, _ = render(
        playbook, tmp_path, "prometheus", "prometheus.yml.j2", f'{{"prometheus_config_dir": "{tmp_path}"}}'
    )
    (tmp_path / "rules").mkdir()
    shutil.copy(REPO / "roles/prometheus/files/rules/infra_obs_core.rules.yml", tmp_path / "rules")
    result = subprocess.run(["promtool", "check", "config", str(dest)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

    config = yaml.safe_load(dest.read_text())
    assert config["global"]["external_labels"] == {"region": "eu-central-1", "az": "eu-central-1a"}
    (job,) = config["scrape_configs"]
    assert job["consul_sd_configs"] == [{"server": "127.0.0.1:8500", "scheme": "http", "tags": ["metrics"]}]
    mapped = {r["target_label"]: r["source_labels"][0] for r in job["relabel_configs"]}
    assert mapped["region"] == "__meta_consul_service_metadata_region"
    assert mapped["az"] == "__meta_consul_service_metadata_az"
    assert mapped["team"] == "__meta_consul_service_metadata_team"
    assert mapped["job"] == "__meta_consul_service"
