"""The consul and prometheus roles' own config tasks (template, `validate:`, no_log and diff settings), run by
Ansible on this machine with the roles' defaults; validation runs the real `consul validate` (the lab's 1.8.7)
and `promtool check config` (the lab's Prometheus)."""

import json
import pathlib
import shutil
import sys

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
TOKEN = "s3cr3t-acl-token-0f9d"
SERVER = "[consul_servers]\nmon ansible_connection=local\n"
AGENT = "[consul_servers]\n[agents]\nmon ansible_connection=local\n"
PLACEMENT = {
    "region": "eu-central-1",
    "az": "eu-central-1a",
    "ansible_facts": {"default_ipv4": {"address": "192.0.2.10"}},
}


def role_task(role: str, task_file: str, name: str, dest: pathlib.Path) -> dict:
    """The named template task of a role, writing to dest instead of the host path, without owner and handlers."""
    tasks = yaml.safe_load((REPO / "roles" / role / "tasks" / task_file).read_text())
    task = dict(next(t for t in tasks if t["name"] == name))
    task.pop("notify", None)
    args = {k: v for k, v in task["ansible.builtin.template"].items() if k not in ("owner", "group")}
    args.update(src=str(REPO / "roles" / role / "templates" / args["src"]), dest=str(dest))
    task["ansible.builtin.template"] = args
    return task


def run_role_task(playbook, tmp_path, role, task_file, name, *extra_vars, inventory=SERVER):
    dest = tmp_path / "out" / name.replace(" ", "_")
    dest.parent.mkdir()
    play = [
        {
            "hosts": "all",
            "gather_facts": False,
            "vars": PLACEMENT,
            "vars_files": [str(REPO / "roles" / role / "defaults" / "main.yml")],
            "tasks": [role_task(role, task_file, name, dest)],
        }
    ]
    (tmp_path / "hosts.ini").write_text(inventory)
    run = playbook(
        yaml.safe_dump(play, sort_keys=False),
        "--diff",
        *[arg for pair in extra_vars for arg in ("-e", pair)],
        inventory=str(tmp_path / "hosts.ini"),
    )
    return dest, run


def consul_config(playbook, tmp_path, *extra_vars, inventory=SERVER):
    consul = shutil.which("consul")
    assert consul, "consul not on PATH: run scripts/fetch-artifacts.sh"
    return run_role_task(
        playbook,
        tmp_path,
        "consul",
        "configure.yml",
        "Write the agent config",
        f"consul_binary_path={consul}",
        *extra_vars,
        inventory=inventory,
    )


def test_consul_server_config_passes_consul_validate(playbook, tmp_path):
    dest, run = consul_config(playbook, tmp_path, "consul_mode=server")
    assert run.rc == 0, run.output
    config = json.loads(dest.read_text())
    assert config["server"] is True and config["bootstrap_expect"] == 1
    assert config["ui"] is True and "ui_config" not in config
    assert config["node_meta"] == {"region": "eu-central-1", "az": "eu-central-1a"}
    assert config["bind_addr"] == "192.0.2.10"


def test_consul_agent_config_joins_servers_and_passes_consul_validate(playbook, tmp_path):
    dest, run = consul_config(playbook, tmp_path, '{"consul_retry_join": ["192.0.2.1", "192.0.2.2"]}', inventory=AGENT)
    assert run.rc == 0, run.output
    config = json.loads(dest.read_text())
    assert config["server"] is False and "bootstrap_expect" not in config
    assert config["retry_join"] == ["192.0.2.1", "192.0.2.2"]
    assert config["leave_on_terminate"] is True


# Two datacenters, as the example inventory models them: a group of servers per region under consul_servers.
TWO_DATACENTERS = """[consul_servers_euc1]
euc1-1 ansible_connection=local ansible_host=192.0.2.10
[consul_servers_use1]
use1-1 ansible_host=198.51.100.11
use1-2 ansible_host=198.51.100.12
[consul_servers:children]
consul_servers_euc1
consul_servers_use1
"""


def test_consul_server_joins_its_own_datacenters_servers_and_the_others_over_the_wan(playbook, tmp_path):
    dest, run = consul_config(
        playbook, tmp_path, "consul_mode=server", "consul_servers_group=consul_servers_euc1", inventory=TWO_DATACENTERS
    )
    assert run.rc == 0, run.output
    config = json.loads(dest.read_text())
    assert config["retry_join"] == ["192.0.2.10"] and config["bootstrap_expect"] == 1
    assert config["retry_join_wan"] == ["198.51.100.11", "198.51.100.12"]


def test_a_single_datacenter_and_agents_join_nothing_over_the_wan(playbook, tmp_path):
    dest, run = consul_config(playbook, tmp_path, "consul_mode=server")
    assert run.rc == 0, run.output
    assert "retry_join_wan" not in json.loads(dest.read_text())
    (tmp_path / "agent").mkdir()
    agent, run = consul_config(playbook, tmp_path / "agent", "consul_servers_group=consul_servers_euc1",
                               inventory=TWO_DATACENTERS)  # fmt: skip
    assert run.rc == 0, run.output
    assert "retry_join_wan" not in json.loads(agent.read_text())


def test_consul_config_for_current_releases_uses_ui_config(playbook, tmp_path):
    # Rendered for 1.21, the config is refused by the lab's 1.8.7 (which lacks ui_config) and nothing is written:
    # proof both that the version switch works and that `validate:` guards the live file.
    dest, run = consul_config(playbook, tmp_path, "consul_version=1.21.4", "consul_mode=server")
    assert run.rc != 0
    assert "invalid config key ui_config" in run.output
    assert not dest.exists()


# Quotes, braces, a newline, a comment sign and non-ASCII: each must stay data in the JSON or YAML written.
HOSTILE_TEXT = 'dc"} , "server": true, #x\n\u00e9'


def test_consul_config_keeps_hostile_text_as_data(playbook, tmp_path):
    # Preflight refuses such a region; the template alone must still keep it one string (consul validate agrees).
    dest, run = consul_config(playbook, tmp_path, json.dumps({"region": HOSTILE_TEXT}), inventory=AGENT)
    assert run.rc == 0, run.output
    config = json.loads(dest.read_text())
    assert config["node_meta"]["region"] == HOSTILE_TEXT
    assert config["server"] is False


def test_consul_token_stays_out_of_logs_and_diffs(playbook, tmp_path):
    dest, run = consul_config(playbook, tmp_path, f"consul_acl_token={TOKEN}", "consul_mode=server")
    assert run.rc == 0, run.output
    assert json.loads(dest.read_text())["acl"]["tokens"]["agent"] == TOKEN
    assert TOKEN not in run.output


def test_consul_diff_is_shown_without_secrets(playbook, tmp_path):
    _, run = consul_config(playbook, tmp_path, "consul_mode=server")
    (result,) = run.json["plays"][0]["tasks"][0]["hosts"].values()
    assert '"bootstrap_expect": 1' in result["diff"][0]["after"]


@pytest.fixture
def rules_dir(tmp_path):
    (tmp_path / "rules").mkdir()
    shutil.copy(REPO / "roles/prometheus/files/rules/infra_obs_core.rules.yml", tmp_path / "rules")
    return tmp_path


def prometheus_config(playbook, rules_dir, *extra_vars):
    promtool = shutil.which("promtool")
    assert promtool, "promtool not on PATH: run scripts/fetch-artifacts.sh"
    return run_role_task(
        playbook,
        rules_dir,
        "prometheus",
        "configure.yml",
        "Write prometheus.yml",
        f"prometheus_binary_dir={pathlib.Path(promtool).parent}",
        f"prometheus_config_dir={rules_dir}",
        *extra_vars,
    )


def test_prometheus_config_passes_promtool_and_maps_consul_meta(playbook, rules_dir):
    dest, run = prometheus_config(playbook, rules_dir)
    assert run.rc == 0, run.output
    config = yaml.safe_load(dest.read_text())
    # The host's az would replace every target's az in Thanos (external labels win there): the region and the
    # replica (the host), which alerts leave behind.
    assert config["global"]["external_labels"] == {"region": "eu-central-1", "replica": "mon"}
    assert config["alerting"] == {"alert_relabel_configs": [{"action": "labeldrop", "regex": "replica"}],
                                  "alertmanagers": []}  # fmt: skip
    assert config["rule_files"] == [f"{rules_dir}/rules/*.yml"]
    (job,) = config["scrape_configs"]
    assert job["consul_sd_configs"] == [{"server": "127.0.0.1:8500", "scheme": "http", "tags": ["metrics"]}]
    mapped = {r["target_label"]: r["source_labels"][0] for r in job["relabel_configs"]}
    assert mapped["region"] == "__meta_consul_service_metadata_region"
    assert mapped["az"] == "__meta_consul_service_metadata_az"
    assert mapped["team"] == "__meta_consul_service_metadata_team"
    assert mapped["job"] == "__meta_consul_service"


def test_a_dollar_in_an_external_label_stays_literal(playbook, rules_dir):
    """Prometheus 3 expands $name in external label values; '$$' is its literal '$'."""
    dest, run = prometheus_config(playbook, rules_dir, "region=eu-$HOME")
    assert run.rc == 0, run.output
    assert yaml.safe_load(dest.read_text())["global"]["external_labels"]["region"] == "eu-$$HOME"


def test_prometheus_config_with_a_broken_rule_file_is_refused(playbook, rules_dir):
    (rules_dir / "rules" / "broken.yml").write_text(
        "groups:\n  - name: x\n    rules:\n      - alert: A\n        expr: up ==\n"
    )
    dest, run = prometheus_config(playbook, rules_dir)
    assert run.rc != 0
    assert "broken.yml" in run.output
    assert not dest.exists()


def test_prometheus_installs_every_rule_file_the_roles_ship(playbook):
    run = playbook(
        """
        - hosts: all
          gather_facts: false
          tasks:
            - ansible.builtin.include_role:
                name: infra.obs.prometheus
                tasks_from: preflight.yml
              vars:
                prometheus_archive_url: http://mirror.invalid/prometheus.tar.gz
                prometheus_rule_files: [/dev/null]
            - ansible.builtin.debug:
                var: _prometheus_all_rule_files
        """
    )
    assert run.rc == 0, run.output
    listed = run.json["plays"][0]["tasks"][-1]["hosts"]["localhost"]["_prometheus_all_rule_files"]
    shipped = sorted(str(p.resolve()) for p in REPO.glob("roles/*/files/rules/*.rules.yml"))
    assert {"infra_obs_core.rules.yml", "nginx_whitelist.rules.yml"} <= {pathlib.Path(p).name for p in shipped}
    assert [str(pathlib.Path(p).resolve()) for p in listed] == [*shipped, "/dev/null"]


def stand_in(tmp_path, role: str, command: str, module: str) -> pathlib.Path:
    """A stand-in for a role's virtualenv of our package: PREFIX/VERSION/bin/COMMAND runs `python -m MODULE` from
    probe/src. Returns the binary."""
    version = yaml.safe_load((REPO / "roles" / role / "defaults/main.yml").read_text())[f"{role}_version"]
    binary = tmp_path / "prefix" / version / "bin" / command
    binary.parent.mkdir(parents=True)
    binary.write_text(f'#!/bin/sh\nPYTHONPATH={REPO}/probe/src exec {sys.executable} -m {module} "$@"\n')
    binary.chmod(0o755)
    return binary


@pytest.fixture
def probe_prefix(tmp_path):
    """bin/infra-obs-probe runs the exporter from probe/src."""
    stand_in(tmp_path, "probe_exporter", "infra-obs-probe", "infra_obs_probe")
    return tmp_path / "prefix"


def probe_config(playbook, tmp_path, prefix, *extra_vars):
    return run_role_task(
        playbook,
        tmp_path,
        "probe_exporter",
        "configure.yml",
        "Write the exporter config",
        f"probe_exporter_prefix={prefix}",
        "probe_exporter_wheelhouse_url=http://mirror.invalid/w.tar.gz",
        *extra_vars,
    )


def test_role_installs_the_version_the_package_declares():
    init = (REPO / "probe/src/infra_obs_probe/__init__.py").read_text()
    defaults = yaml.safe_load((REPO / "roles/probe_exporter/defaults/main.yml").read_text())
    assert f'__version__ = "{defaults["probe_exporter_version"]}"' in init


def test_probe_config_passes_the_exporters_own_check(playbook, tmp_path, probe_prefix):
    dest, run = probe_config(playbook, tmp_path, probe_prefix)
    assert run.rc == 0, run.output
    config = yaml.safe_load(dest.read_text())
    assert config["source"] == {"name": "mon", "region": "eu-central-1", "az": "eu-central-1a"}
    assert config["register"]["address"] == "192.0.2.10"
    assert config["targets"]["consul"]["service"] == "infra-obs-probe"


def test_probe_config_with_hostile_text_is_refused_by_the_exporters_check(playbook, tmp_path, probe_prefix):
    """The text is written as YAML data (quotes, braces and the newline stay inside the value), then the exporter's
    own check refuses it: tags are names."""
    dest, run = probe_config(playbook, tmp_path, probe_prefix, json.dumps({"probe_exporter_tags": [HOSTILE_TEXT]}))
    assert run.rc != 0
    assert "register.tags: must be a list of names" in run.output, run.output
    assert not dest.exists()


def test_probe_config_with_a_bad_value_is_refused_naming_the_key(playbook, tmp_path, probe_prefix):
    dest, run = probe_config(playbook, tmp_path, probe_prefix, "probe_exporter_mtr_max_hops=0")
    assert run.rc != 0
    assert "mtr.max_hops" in run.output and "(got 0)" in run.output, run.output
    assert not dest.exists()


@pytest.fixture
def quality_checker(tmp_path, playbook):
    """A stand-in for the checker's virtualenv (bin/infra-obs-quality runs it from probe/src) and a config
    directory holding the lab's check files: the role's config template, validated by the checker itself."""
    binary = stand_in(tmp_path, "quality_checker", "infra-obs-quality", "infra_obs_probe.quality")
    config_dir = tmp_path / "etc"
    shutil.copytree(REPO / "inventories/lab/checks", config_dir / "checks.d")

    def run(*extra_vars):
        return run_role_task(
            playbook,
            tmp_path,
            "quality_checker",
            "configure.yml",
            "Write the checker config",
            f"_quality_checker_bin={binary}",
            f"quality_checker_config_dir={config_dir}",
            "quality_checker_wheelhouse_url=http://mirror.invalid/w.tar.gz",
            *extra_vars,
        )

    return run


def test_quality_checker_config_passes_the_checkers_own_validation(quality_checker):
    dest, run = quality_checker("quality_checker_prometheus_url=http://10.89.60.10:9090")
    assert run.rc == 0, run.output
    config = yaml.safe_load(dest.read_text())
    assert config["checker"] == {"name": "mon", "region": "eu-central-1", "az": "eu-central-1a"}
    assert config["register"]["address"] == "192.0.2.10" and config["interval"] == 60.0


def test_quality_checker_config_without_the_prometheus_its_checks_ask_is_refused(quality_checker):
    dest, run = quality_checker()
    assert run.rc != 0
    assert "is a prometheus check this checker runs, but it has no prometheus_url" in run.output, run.output
    assert not dest.exists()
