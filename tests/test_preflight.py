"""Preflight fails fast, naming the host and the variable, before any play changes anything."""

import pathlib

REPO = pathlib.Path(__file__).resolve().parent.parent


def write_inventory(tmp_path, hosts: dict) -> str:
    lines = ["[consul_servers]", "srv", "[prometheus]", "srv", "[all:vars]", "ansible_connection=local"]
    lines += ["[all]"] + [
        f"{name} {' '.join(f'{k}={v}' for k, v in hostvars.items())}" for name, hostvars in hosts.items()
    ]
    path = tmp_path / "hosts.ini"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def run_site(playbook_fixture, inventory):
    # --check: were preflight ever to let a host through, nothing would be changed on this machine.
    return playbook_fixture(
        "- ansible.builtin.import_playbook: " + str(REPO / "playbooks" / "observability.yml") + "\n",
        "--check",
        inventory=inventory,
    )


def test_missing_az_names_host_and_variable(playbook, tmp_path):
    inventory = write_inventory(
        tmp_path, {"srv": {"region": "eu-central-1", "az": "eu-central-1a"}, "edge-7": {"region": "eu-central-1"}}
    )
    run = run_site(playbook, inventory)
    assert run.rc != 0
    assert any("host edge-7: variable 'az' is not set" in msg for msg in run.failures()), run.failures()
    plays = [play["play"]["name"] for play in run.json["plays"]]
    assert plays == ["Preflight every host before anything changes"], plays


def test_malformed_region_names_host_variable_and_value(playbook, tmp_path):
    inventory = write_inventory(tmp_path, {"srv": {"region": "EU_Central", "az": "eu-central-1a"}})
    run = run_site(playbook, inventory)
    assert run.rc != 0
    assert any("host srv: variable 'region' has value 'EU_Central'" in msg for msg in run.failures()), run.failures()
