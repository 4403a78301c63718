"""Both shipped inventories place every host in a region and an AZ, as preflight demands, and the example uses
only documentation addresses; the lab's MM2 team file is valid. Read with ansible-inventory and the preflight role;
no host is contacted."""

import ipaddress
import json
import os
import pathlib
import subprocess
import urllib.parse

import pytest
import yaml
from ansible_collections.infra.obs.plugins.plugin_utils.mm2 import load as load_mm2_flow
from ansible_collections.infra.obs.plugins.plugin_utils.userdata import read_documents
from ansible_collections.infra.obs.plugins.plugin_utils.whitelist import load

REPO = pathlib.Path(__file__).resolve().parent.parent
DOC_RANGES = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]


def listed(inventory: str) -> dict:
    """ansible-inventory --list of an inventory: its groups, and every host's variables under _meta."""
    out = subprocess.run(
        ["ansible-inventory", "-i", str(REPO / inventory), "--list"], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out)


def hostvars(inventory: str) -> dict:
    return listed(inventory)["_meta"]["hostvars"]


@pytest.mark.parametrize("inventory", ["inventories/lab/hosts.yml", "inventories/example/hosts.yml"])
def test_every_host_passes_preflight(preflight, inventory):
    run = preflight(str(REPO / inventory))
    assert run.rc == 0, run.failures()
    hosts = hostvars(inventory)
    assert len(hosts) >= 5
    tasks = [task for play in run.json["plays"] for task in play["tasks"]]
    checks = [task for task in tasks if task["task"]["name"].startswith("infra.obs.preflight : Check")]
    assert len(checks) == 3, [task["task"]["name"] for task in checks]
    for task in checks:
        ran = {host for host, result in task["hosts"].items() if not result.get("skipped")}
        assert ran == set(hosts), f"{task['task']['name']}: not run on {sorted(set(hosts) - ran)}"


def test_example_uses_documentation_addresses_only():
    for name, variables in hostvars("inventories/example/hosts.yml").items():
        address = ipaddress.ip_address(variables["ansible_host"])
        assert any(address in net for net in DOC_RANGES), f"{name}: {address} is not a documentation address"


def test_example_whitelists_compile():
    whitelists = REPO / "inventories/example/whitelists"
    documents = [(str(path), yaml.safe_load(path.read_text())) for path in sorted(whitelists.glob("*.yml"))]
    access = load(documents).access()
    assert access["payments-api"]["/admin"]["payments-oncall"] == [
        "192.0.2.64/27",
        "198.51.100.0/25",
        "2001:db8:64::/48",
    ]


def test_lab_mm2_team_file_is_valid():
    flow = load_mm2_flow(read_documents(str(REPO / "inventories/lab/mm2")))
    assert (flow.source.alias, flow.target.alias, flow.policy, flow.replication_factor) == (
        "primary",
        "standby",
        "identity",
        1,
    )


@pytest.mark.parametrize("inventory", ["inventories/lab", "inventories/example"])
def test_check_files_are_valid_and_name_checkers_of_their_inventory(inventory):
    from infra_obs_probe.quality.config import load_checks  # noqa: PLC0415 - the checker's own parser

    checks = load_checks(str(REPO / inventory / "checks"))
    assert len(checks) >= 3
    checkers = set(listed(f"{inventory}/hosts.yml")["quality_checkers"]["hosts"])
    for check in checks:
        assert set(check.runs_on) <= checkers, f"{check.path}: {check.name} runs on {check.runs_on}, not checkers"


def test_the_labs_whitelist_checks_expect_what_its_whitelist_decides():
    """A check through the lab's proxy expects 200 exactly when the whitelist lets in the address of the checker it
    runs on: the checks sample the whitelist's own decisions, so a flipped decision on the proxy fails them."""
    from infra_obs_probe.quality.config import load_checks  # noqa: PLC0415 - the checker's own parser

    hostvars_ = hostvars("inventories/lab/hosts.yml")
    whitelist = load(read_documents(str(REPO / "inventories/lab/whitelists")))
    proxies = {hostvars_[h]["lab_ipv4"] for h in hostvars_ if "nginx_whitelist_src" in hostvars_[h]}
    backends = {b.listen: name for name, b in whitelist.backends.items()}
    sampled = set()
    for check in load_checks(str(REPO / "inventories/lab/checks")):
        parts = urllib.parse.urlsplit(check.url)
        if check.kind != "http" or parts.hostname not in proxies or parts.port not in backends:
            continue
        for checker in check.runs_on:
            reached = whitelist.explain(hostvars_[checker]["lab_ipv4"])
            allowed = any(r["backend"] == backends[parts.port] and parts.path.startswith(r["path"]) for r in reached)
            assert (200 in check.status) == allowed, (check.name, checker, allowed)
            assert (403 in check.status) != allowed, (check.name, checker, allowed)
            sampled.add(allowed)
    assert sampled == {True, False}  # an allowed address and a denied one, at least


@pytest.mark.parametrize("inventory", ["inventories/lab/hosts.yml", "inventories/example/hosts.yml"])
def test_each_alertmanagers_config_from_its_inventory_passes_the_preflight_and_amtool(playbook, tmp_path, inventory):
    """The role's preflight and config template with the inventory's receivers and routes (nothing is contacted),
    the written file checked by the amtool the lab builds, as the role's `validate:` checks it."""
    role = REPO / "roles/alertmanager"
    amtool = pathlib.Path(os.environ.get("INFRA_OBS_CACHE", "/var/cache/infra-obs")) / "bin/amtool"
    play = [{
        "hosts": "alertmanagers", "gather_facts": False,
        # Play vars win over the inventory's connection: nothing leaves this machine.
        # The lab's sink address comes from its host's facts at deploy time: a stand-in here.
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                 "lab_alert_sink": "http://192.0.2.1:9099"},
        "tasks": [
            # The role's defaults under the inventory's values, as in a play (vars_files would override those).
            {"name": "Preflight", "ansible.builtin.include_role": {"name": "infra.obs.alertmanager",
                                                                   "tasks_from": "preflight", "public": True}},
            {"name": "Config", "ansible.builtin.template": {"src": str(role / "templates/alertmanager.yml.j2"),
                                                            "dest": str(tmp_path / "{{ inventory_hostname }}.yml"),
                                                            "validate": f"{amtool} check-config %s"}},
        ],
    }]  # fmt: skip
    run = playbook(yaml.safe_dump(play, sort_keys=False), inventory=str(REPO / inventory))
    assert run.rc == 0, run.output
    hosts = listed(inventory)["alertmanagers"]["hosts"]
    configs = [yaml.safe_load((tmp_path / f"{host}.yml").read_text()) for host in hosts]
    assert len(hosts) == 2 and all(config == configs[0] for config in configs)
    assert configs[0]["route"]["routes"][0]["matchers"][0] == 'team="network"', configs[0]
