"""The values the playbooks compute for a role (peers, endpoints, components) yield to one set in the inventory:
play vars outrank inventory vars, so each takes the host's own value from hostvars when there is one."""

import json
import pathlib

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
GROUPS = ("alertmanagers", "prometheus", "thanos_sidecars", "thanos_global")
# The role defaults the expressions read, as a host would have them.
ROLE_DEFAULTS = {
    "alertmanager_cluster_port": 9094,
    "thanos_sidecar_grpc_port": 10901,
    "thanos_store_grpc_port": 10911,
    "thanos_objstore_bucket": "infra-obs-thanos",
}


def play_vars(playbook: str, variable: str) -> dict:
    """The vars of the play in playbooks/PLAYBOOK that computes variable."""
    plays = yaml.safe_load((REPO / "playbooks" / playbook).read_text())
    return next(play["vars"] for play in plays if variable in play.get("vars", {}))


# (playbook, variable, host a's value in the inventory, what the playbook computes for b: a and b in every group)
@pytest.mark.parametrize(
    "case",
    [
        ("alerting.yml", "alertmanager_cluster_peers", ["10.9.0.1:9094"], ["{a}:9094"]),
        ("observability.yml", "prometheus_alertmanagers", ["alertmanager.example:9093"], ["{a}:9093", "{a}:9093"]),
        ("global.yml", "thanos_components", ["query"], ["sidecar", "store", "compact", "query"]),
        ("global.yml", "thanos_query_endpoints", ["10.9.0.2:10901"], [*["{a}:10901"] * 2, *["{a}:10911"] * 2]),
    ],
)
def test_a_value_in_the_inventory_wins_over_the_computed_one(playbook, tmp_path, case):
    playbook_file, variable, own, computed_for_b = case
    inventory = {
        "all": {
            "vars": ROLE_DEFAULTS,
            "children": {group: {"hosts": {"a": {}, "b": {}}} for group in GROUPS},
            "hosts": {"a": {variable: own}, "b": {}},
        }
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    play = {
        "hosts": "all",
        "gather_facts": True,
        "gather_subset": ["network"],
        "vars": play_vars(playbook_file, variable),
        "tasks": [{"name": "Show", "ansible.builtin.debug": {"msg": f"{{{{ {variable} | to_json }}}}"}}],
    }
    run = playbook(yaml.safe_dump([play]), inventory=str(tmp_path / "hosts.yml"))
    assert run.rc == 0, run.output[-3000:]
    results = {task["task"]["name"]: task["hosts"] for task in run.json["plays"][0]["tasks"]}
    address = results["Gathering Facts"]["a"]["ansible_facts"]["ansible_default_ipv4"]["address"]
    assert json.loads(results["Show"]["a"]["msg"]) == own
    assert json.loads(results["Show"]["b"]["msg"]) == [item.format(a=address) for item in computed_for_b]
