"""Role grafana_provisioning, run by Ansible on this machine into a temporary directory (no Grafana server can be had
here): the data source and dashboard provider files are Grafana's provisioning format, every dashboard the roles ship
lands in its system's folder unchanged and valid against Grafana's dashboard schema (scripts/dashboards.py), any
other dashboard there is removed, a second run changes nothing, check mode writes nothing, and hostile values are
refused by the preflight, naming each, with nothing written."""

import json
import pathlib
import re
import shutil

import jsonschema
import pytest
import yaml
from dashboards import dashboards, for_schema, schema_path
from labinfo import PlaybookRun, run_playbook

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULTS = yaml.safe_load((REPO / "roles/grafana_provisioning/defaults/main.yml").read_text())
FOLDERS = DEFAULTS["grafana_provisioning_folders"]
URL = "http://192.0.2.10:10904"
SHIPPED = dashboards()


def system(dashboard: pathlib.Path) -> str:
    """The role that ships a dashboard (roles/ROLE/files/dashboards/NAME.json)."""
    return dashboard.parent.parent.parent.name


def provision(host: pathlib.Path, *args: str, **variables) -> PlaybookRun:
    """Run the role on this machine with every path it writes under host (which it creates), with the given
    variables; the play and its variables are kept beside host, not in it."""
    run_dir = host.with_name(host.name + "-run")
    run_dir.mkdir(exist_ok=True)
    values = {
        "grafana_provisioning_dir": str(host / "provisioning"),
        "grafana_provisioning_dashboards_dir": str(host / "dashboards"),
        "grafana_provisioning_datasource_url": URL,
        **variables,
    }
    (run_dir / "vars.json").write_text(json.dumps(values))
    play = [{"name": "Grafana", "hosts": "all", "gather_facts": False, "roles": ["infra.obs.grafana_provisioning"]}]
    return run_playbook(run_dir, yaml.safe_dump(play), "-e", f"@{run_dir / 'vars.json'}", *args)


def files_under(directory: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# Already in the dashboards directory before the role runs: a retired system's folder with a dashboard and a note,
# and a stray dashboard in a folder the role keeps. The dashboards must go, the note stay.
BEFORE = {
    "Retired system/old.json": "{}",
    "Retired system/notes.txt": "kept",
    f"{FOLDERS['probe_exporter']}/stray.json": "{}",
}


@pytest.fixture(scope="module")
def provisioned(tmp_path_factory):
    """A host directory holding BEFORE, provisioned twice with the role's defaults: (host, first run, second run)."""
    host = tmp_path_factory.mktemp("grafana") / "host"
    for name, text in BEFORE.items():
        (host / "dashboards" / name).parent.mkdir(parents=True, exist_ok=True)
        (host / "dashboards" / name).write_text(text)
    first = provision(host)
    assert first.rc == 0, first.output
    second = provision(host)
    return host, first, second


@pytest.fixture(scope="module")
def validator():
    return jsonschema.Draft7Validator(json.loads(schema_path().read_text()))


def test_the_data_source_file_is_thanos_query_in_grafanas_provisioning_format(provisioned):
    host, _, _ = provisioned
    config = yaml.safe_load((host / "provisioning/datasources/infra-obs.yml").read_text())
    assert config["apiVersion"] == 1
    [source] = config["datasources"]
    assert {"name", "type", "access", "url", "uid"} <= set(source)
    assert source["name"] == "Thanos Query" and source["uid"] == "infra-obs-thanos-query"
    assert (source["type"], source["access"], source["url"]) == ("prometheus", "proxy", URL)
    assert source["isDefault"] is True and source["editable"] is False
    assert source["jsonData"] == {"timeInterval": "15s", "httpMethod": "POST", "prometheusType": "Thanos"}


def test_the_dashboard_provider_makes_a_folder_of_each_directory(provisioned):
    host, _, _ = provisioned
    config = yaml.safe_load((host / "provisioning/dashboards/infra-obs.yml").read_text())
    assert config["apiVersion"] == 1
    [provider] = config["providers"]
    assert provider["name"] == "infra-obs" and provider["type"] == "file"
    assert provider["options"] == {"path": str(host / "dashboards"), "foldersFromFilesStructure": True}
    # Grafana refuses a provider with both a fixed folder and folders from the files' structure.
    assert "folder" not in provider and "folderUid" not in provider
    assert provider["disableDeletion"] is False and provider["allowUiUpdates"] is False
    assert provider["updateIntervalSeconds"] == 30


def test_every_shipped_dashboard_is_in_its_systems_folder_unchanged_and_no_other_dashboard(provisioned):
    host, _, _ = provisioned
    expected = {f"{FOLDERS[system(path)]}/{path.name}": path.read_bytes() for path in SHIPPED}
    assert files_under(host / "dashboards") == {**expected, "Retired system/notes.txt": b"kept"}


def test_every_provisioned_dashboard_is_valid_against_grafanas_schema(provisioned, validator):
    host, _, _ = provisioned
    provisioned_dashboards = sorted((host / "dashboards").glob("*/*.json"))
    assert len(provisioned_dashboards) == len(SHIPPED)
    for path in provisioned_dashboards:
        errors = [error.message for error in validator.iter_errors(for_schema(json.loads(path.read_text())))]
        assert not errors, (path.name, errors)


def test_every_system_shipping_a_dashboard_has_a_folder_title():
    assert {system(path) for path in SHIPPED} <= set(FOLDERS)


def test_the_dashboards_open_on_the_default_data_source():
    """Grafana opens a dashboard on the data source its variable was saved with; saved as `default` (the synthetic
    option Grafana offers for the org's default), that is the one the role makes Thanos query."""
    assert DEFAULTS["grafana_provisioning_datasource_default"] is True
    for path in SHIPPED:
        [variable] = [v for v in json.loads(path.read_text())["templating"]["list"] if v["type"] == "datasource"]
        assert variable["query"] == "prometheus", path.name
        assert variable["current"] == {"text": "default", "value": "default"}, path.name


def test_a_second_run_changes_nothing(provisioned):
    _, first, second = provisioned
    assert first.stats["localhost"]["changed"] > 0
    assert second.rc == 0, second.output
    assert second.stats["localhost"]["changed"] == 0, second.output


def test_check_mode_on_a_fresh_host_writes_nothing(tmp_path):
    host = tmp_path / "host"
    run = provision(host, "--check", "--diff")
    assert run.rc == 0, run.output
    assert run.stats["localhost"]["changed"] > 0
    assert not host.exists()
    assert "[WARNING]" not in run.output


def test_a_system_without_a_title_gets_a_folder_of_its_name_and_its_old_folder_is_emptied(provisioned, tmp_path):
    host = tmp_path / "host"
    shutil.copytree(provisioned[0], host)
    untitled = {role: title for role, title in FOLDERS.items() if role != "quality_checker"}
    run = provision(host, grafana_provisioning_folders=untitled)
    assert run.rc == 0, run.output
    assert (host / "dashboards/quality_checker/quality_checker.json").is_file()
    assert not list((host / "dashboards" / FOLDERS["quality_checker"]).iterdir())


# Each run sets hostile values of three variables at once: the message must name those three, each with its value,
# and no other.
@pytest.mark.parametrize(
    "hostile",
    [
        {
            "grafana_provisioning_datasource_url": "http://thanos:10904\nhttp://evil",
            "grafana_provisioning_folders": {"mm2": "Kafka/MM2"},
            "grafana_provisioning_dashboards_dir": "var/lib/grafana/dashboards",
        },
        {
            "grafana_provisioning_datasource_url": "http://thanos query:10904",
            "grafana_provisioning_folders": {"mm2": ".."},
            "grafana_provisioning_dir": "etc/grafana/provisioning",
        },
    ],
    ids=["newline-slash-relative", "space-dotdot-relative"],
)
def test_hostile_values_are_refused_by_the_preflight_naming_the_variable(tmp_path, hostile):
    host = tmp_path / "host"
    run = provision(host, **hostile)
    assert run.rc != 0 and "Check the Grafana provisioning settings" in run.output, run.output
    [message] = run.failures()
    for variable, value in hostile.items():
        assert f"{variable}={json.dumps(value)}" in message, message
    assert set(re.findall(r"(grafana_provisioning_\w+)=", message)) == set(hostile), message
    assert not host.exists()
