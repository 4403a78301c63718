"""infra.obs.mm2_config run by ansible-playbook: check mode writes nothing, the diff hides every password, a second
run changes nothing, and a bad team file or a missing password variable fails naming file, key and value."""

import json
import stat

import yaml

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - infra.obs.mm2_config:
        src: "{src}"
        dest: "{dest}"
"""

TEAM = {
    "clusters": {
        "primary": {"bootstrap_servers": ["127.0.0.1:19092"], "brokers": 1},
        "standby": {
            "bootstrap_servers": ["127.0.0.1:29093"],
            "brokers": 1,
            "security": {
                "protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-256",
                "username": "mm2-orders",
                "password_var": "lab_mm2_standby_password",
                "truststore": "/etc/mm2/truststore.p12",
                "truststore_password_var": "lab_mm2_truststore_password",
            },
        },
    },
    "flow": {"source": "primary", "target": "standby", "topics": {"include": [r"orders\..*"]}},
}
SECRETS = {"lab_mm2_standby_password": "Scram-Pw-0001", "lab_mm2_truststore_password": "Trust-Pw-0002"}


def result_of(run):
    (task,) = run.json["plays"][0]["tasks"]
    return task["hosts"]["localhost"]


def setup(tmp_path, secrets=SECRETS, team=TEAM):
    src, dest, extra = tmp_path / "mm2" / "orders.yml", tmp_path / "mm2-host" / "mm2.properties", tmp_path / "vars.json"
    src.parent.mkdir(exist_ok=True)
    dest.parent.mkdir(exist_ok=True)
    src.write_text(yaml.safe_dump(team))
    extra.write_text(json.dumps(secrets))
    return src, dest, f"@{extra}"


def test_check_mode_then_write_then_no_change_and_passwords_only_in_the_file(playbook, tmp_path):
    src, dest, extra = setup(tmp_path)
    check = playbook(PLAY.format(src=src, dest=dest), "-e", extra, "--check", "--diff")
    assert check.rc == 0, check.output
    result = result_of(check)
    assert result["changed"] is True and not dest.exists()
    (diff,) = result["diff"]
    assert diff["before"] == "" and diff["after_header"] == f"{src} (rendered)"
    assert 'username="mm2-orders" password=********' in diff["after"]
    assert "standby.ssl.truststore.password = ********" in diff["after"]
    assert not any(secret in check.output for secret in SECRETS.values())
    assert result["flow"]["enabled"] == ["primary->standby"]
    assert result["flow"]["replication_factors"]["replication.factor"] == 1

    write = playbook(PLAY.format(src=src, dest=dest), "-e", extra)
    assert write.rc == 0, write.output
    assert result_of(write)["changed"] is True
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    text = dest.read_text()
    assert 'password="Scram-Pw-0001";' in text and "standby.ssl.truststore.password = Trust-Pw-0002" in text
    assert not any(secret in write.output for secret in SECRETS.values())

    again = playbook(PLAY.format(src=src, dest=dest), "-e", extra)
    assert again.rc == 0, again.output
    assert again.stats["localhost"]["changed"] == 0
    # With --diff an unchanged file gets the copy's attribute diff (a dict, not a list of text diffs).
    again_diff = playbook(PLAY.format(src=src, dest=dest), "-e", extra, "--diff")
    assert again_diff.rc == 0, again_diff.output
    assert again_diff.stats["localhost"]["changed"] == 0

    # A rotated password: the diff shows that the line changed, neither the old nor the new password.
    rotated = SECRETS | {"lab_mm2_standby_password": "Scram-Pw-0003"}
    _src, _dest, extra = setup(tmp_path, rotated)
    check = playbook(PLAY.format(src=src, dest=dest), "-e", extra, "--check", "--diff")
    assert check.rc == 0, check.output
    result = result_of(check)
    assert result["changed"] is True
    (diff,) = result["diff"]
    assert diff["before"].count("********") == diff["after"].count("********") == 2
    assert not any(secret in check.output for secret in ("Scram-Pw-0001", "Scram-Pw-0003", "Trust-Pw-0002"))
    assert dest.read_text() == text


def test_owner_and_group_are_set(playbook, tmp_path):
    src, dest, extra = setup(tmp_path)
    play = PLAY.format(src=src, dest=dest) + '        group: "0"\n        mode: "0640"\n'
    run = playbook(play, "-e", extra)
    assert run.rc == 0, run.output
    assert (dest.stat().st_gid, stat.S_IMODE(dest.stat().st_mode)) == (0, 0o640)
    again = playbook(play, "-e", extra, "--diff")
    assert again.rc == 0 and again.stats["localhost"]["changed"] == 0, again.output


def test_bad_team_file_fails_naming_file_key_and_value(playbook, tmp_path):
    bad = json.loads(json.dumps(TEAM))
    bad["flow"]["replication_factor"] = 3
    bad["clusters"]["standby"]["security"]["password"] = "Typed-In-0004"
    src, dest, extra = setup(tmp_path, team=bad)
    run = playbook(PLAY.format(src=src, dest=dest), "-e", extra)
    assert run.rc != 0
    message = run.failures()[-1]
    assert f"{src}: flow.replication_factor: 3: larger than standby's 1 broker(s)" in message
    assert f"{src}: clusters.standby.security.password: '********': secrets never go in this file" in message
    assert "Typed-In-0004" not in run.output
    assert not dest.exists()


def test_missing_password_variable_is_named(playbook, tmp_path):
    src, dest, extra = setup(tmp_path, secrets={"lab_mm2_truststore_password": "Trust-Pw-0002"})
    run = playbook(PLAY.format(src=src, dest=dest), "-e", extra)
    assert run.rc != 0
    message = run.failures()[-1]
    assert (
        f"{src}: clusters.standby.security.password_var: 'lab_mm2_standby_password': "
        "no variable lab_mm2_standby_password is defined"
    ) in message
    assert "Trust-Pw-0002" not in run.output
    assert not dest.exists()
