"""Preflight fails fast, naming the host and the variable, before any play changes anything."""

import pathlib

import pytest
import yaml

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


def test_an_az_outside_its_region_names_host_az_and_region(playbook, tmp_path):
    inventory = write_inventory(
        tmp_path,
        {
            "srv": {"region": "eu-central-1", "az": "eu-central-1a"},
            "edge-7": {"region": "eu-central-1", "az": "us-east-1a"},
        },
    )
    run = run_site(playbook, inventory)
    assert run.rc != 0
    expected = "host edge-7: az 'us-east-1a' is not in its region 'eu-central-1'"
    assert [msg for msg in run.failures() if msg.startswith("host ")] == [
        expected
        + ": an AZ's name begins with its region's (set preflight_az_within_region to false where yours do not)"
    ], run.failures()
    plays = [play["play"]["name"] for play in run.json["plays"]]
    assert plays == ["Preflight every host before anything changes"], plays


def test_an_az_outside_its_region_passes_where_the_check_is_turned_off(preflight, tmp_path):
    inventory = write_inventory(tmp_path, {"srv": {"region": "westeurope", "az": "zone-1"}})
    refused = preflight(inventory)
    assert refused.rc != 0, refused.output[-2000:]
    run = preflight(inventory, "-e", "preflight_az_within_region=false")
    assert run.rc == 0, run.failures()
    assert run.stats["srv"]["ok"] >= 2 and run.stats["srv"]["failures"] == 0, run.stats


def test_malformed_region_names_host_variable_and_value(playbook, tmp_path):
    inventory = write_inventory(tmp_path, {"srv": {"region": "EU_Central", "az": "eu-central-1a"}})
    run = run_site(playbook, inventory)
    assert run.rc != 0
    assert any("host srv: variable 'region' has value 'EU_Central'" in msg for msg in run.failures()), run.failures()


# The playbooks' batched plays, as whitelist.yml's second play has them: serial, max_fail_percentage, the batch check.
BATCHED = yaml.safe_load((REPO / "playbooks" / "whitelist.yml").read_text())[1]


def run_batched(playbook, tmp_path, values: dict[str, str], *args: str) -> tuple[object, list[list[str]]]:
    """Run the batched play's header over hosts a-d (values: each host's infra_obs_batch_size in the inventory) with a
    task in place of the role that records each batch; return the run and the batches the task saw."""
    play = {key: value for key, value in BATCHED.items() if key not in ("roles", "become")}
    play |= {"hosts": "all", "gather_facts": False}
    record = {"name": "Roll out", "ansible.builtin.debug": {"msg": "{{ ansible_play_batch }}"}, "run_once": True}
    play["tasks"] = [record]
    lines = ["[all]"] + [f"{host} infra_obs_batch_size={values[host]}" if host in values else host for host in "abcd"]
    (tmp_path / "hosts.ini").write_text("\n".join(lines) + "\n")
    run = playbook(yaml.safe_dump([play], sort_keys=False), *args, inventory=str(tmp_path / "hosts.ini"))
    batches = [
        next(iter(task["hosts"].values()))["msg"]
        for batch in run.json.get("plays", [])
        for task in batch["tasks"]
        if task["task"]["name"] == "Roll out"
    ]
    return run, batches


@pytest.mark.parametrize(
    ("values", "args", "expected"),
    [
        ({}, (), [["a"], ["b"], ["c"], ["d"]]),  # the default, 25%
        ({host: "2" for host in "abcd"}, ("-e", "infra_obs_batch_size=2"), [["a", "b"], ["c", "d"]]),
        ({"a": "25%"}, (), [["a"], ["b"], ["c"], ["d"]]),  # what the inventory asks is what Ansible made
        ({}, ("-e", "infra_obs_batch_size=3"), [["a", "b", "c"], ["d"]]),
        ({}, ("-e", "infra_obs_batch_size=50%", "--limit", "a,b,c"), [["a"], ["b"], ["c"]]),  # 50% of 3 hosts: 1
        ({}, ("-e", "infra_obs_batch_size=100%"), [["a", "b", "c", "d"]]),
    ],
)
def test_a_batch_of_the_size_asked_for_rolls_out(playbook, tmp_path, values, args, expected):
    run, batches = run_batched(playbook, tmp_path, values, *args)
    assert run.rc == 0, run.output[-3000:]
    assert batches == expected


def test_a_batch_size_set_in_the_inventory_alone_stops_the_rollout_before_its_first_batch(playbook, tmp_path):
    run, batches = run_batched(playbook, tmp_path, {host: "2" for host in "abcd"})
    assert run.rc != 0
    assert batches == []
    assert any(
        "infra_obs_batch_size is 2, 2 of the play's 4 hosts, but the first batch holds 1" in msg
        and "-e infra_obs_batch_size=2" in msg
        for msg in run.failures()
    ), run.failures()


@pytest.mark.parametrize(
    "value",
    [
        *("0", "0%", "101%", "2.5", "-1", "100000", "1e3", "True", "'1 2'", "'1;reboot'", "'25 %'", "50%%"),
        *("'\u0663'", "'\uff13'"),  # Arabic-Indic and fullwidth three
        # A newline and a quote (INI reads a quoted value as a Python literal), a brace, 501 digits.
        *("'1\\n'", "'1\"'", "'{1}'", "1" + "0" * 500),
    ],
)
def test_a_batch_size_outside_the_grammar_stops_the_rollout_naming_host_and_value(playbook, tmp_path, value):
    run, batches = run_batched(playbook, tmp_path, {"c": value})
    assert run.rc != 0
    assert batches == []
    assert any(msg.startswith('infra_obs_batch_size: {"c": ') for msg in run.failures()), run.failures()


def test_batch_sizes_that_differ_between_hosts_stop_the_rollout(playbook, tmp_path):
    run, batches = run_batched(playbook, tmp_path, {"a": "1", "d": "25%"})
    assert run.rc != 0
    assert batches == []
    assert any('infra_obs_batch_size: {"a": "1", "d": "25%"}: one value' in msg for msg in run.failures())
