"""infra.obs.nginx_whitelist run by ansible-playbook: errors name the file, compiled files are written once,
check mode changes nothing, and the diff is the change in effective access."""

import json

import yaml

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - infra.obs.nginx_whitelist:
        src: "{src}"
        dest: "{dest}"
        explain: 198.51.100.20
"""

DATA = {
    "groups": {"vpn": {"cidrs": ["198.51.100.0/24"]}, "office": {"cidrs": ["192.0.2.0/28"], "include": ["vpn"]}},
    "backends": {"billing": {"protocol": "http", "listen": 8443, "upstreams": ["10.89.60.5:8080"]}},
    "rules": [{"backend": "billing", "groups": ["office"]}],
}


def result_of(run):
    (task,) = [t for t in run.json["plays"][0]["tasks"] if t["task"]["name"] != "Gathering Facts"]
    return task["hosts"]["localhost"]


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))


def test_writes_once_then_reports_no_change(playbook, tmp_path):
    src, dest = tmp_path / "wl" / "teams.yml", tmp_path / "staging"
    write(src, DATA)
    dest.mkdir()
    first = playbook(PLAY.format(src=src.parent, dest=dest))
    assert first.rc == 0, first.output
    result = result_of(first)
    assert result["changed"] is True
    assert sorted(p.name for p in dest.iterdir()) == ["access.json", "http.conf", "stream.conf"]
    assert json.loads((dest / "access.json").read_text()) == result["access"]
    assert "198.51.100.0/24 1;" in (dest / "http.conf").read_text()
    assert {r["group"] for r in result["explain"]} == {"office"}

    second = playbook(PLAY.format(src=src.parent, dest=dest))
    assert result_of(second)["changed"] is False


def test_check_mode_shows_who_gains_and_loses_and_writes_nothing(playbook, tmp_path):
    src, dest = tmp_path / "wl.yml", tmp_path / "staging"
    write(src, DATA)
    dest.mkdir()
    assert playbook(PLAY.format(src=src, dest=dest)).rc == 0
    before = (dest / "http.conf").read_text()

    changed = json.loads(json.dumps(DATA))
    changed["groups"]["vpn"]["cidrs"] = ["203.0.113.0/24"]
    write(src, changed)
    run = playbook(PLAY.format(src=src, dest=dest), "--check", "--diff")
    assert run.rc == 0, run.output
    result = result_of(run)
    assert result["changed"] is True
    assert result["access_changes"] == [
        {
            "backend": "billing",
            "path": "/",
            "group": "office",
            "gains": ["203.0.113.0/24"],
            "loses": ["198.51.100.0/24"],
        }
    ]
    (diff,) = result["diff"]
    assert "billing / office 198.51.100.0/24" in diff["before"] and "billing / office 203.0.113.0/24" in diff["after"]
    assert (dest / "http.conf").read_text() == before


def test_invalid_whitelist_fails_naming_file_key_and_value(playbook, tmp_path):
    src, dest = tmp_path / "wl" / "payments.yml", tmp_path / "staging"
    bad = json.loads(json.dumps(DATA))
    bad["groups"]["vpn"]["cidrs"] = ["198.51.100.7/24"]
    write(src, bad)
    run = playbook(PLAY.format(src=src.parent, dest=dest))
    assert run.rc != 0
    message = run.failures()[-1]
    assert f"{src}: groups.vpn.cidrs[0]: '198.51.100.7/24': host bits set" in message
    assert not dest.exists()
