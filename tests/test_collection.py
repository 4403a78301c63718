"""The collection as users get it: the tarball built by `ansible-galaxy collection build`, installed into a clean path
(scripts/install-collection.sh), lists every role and module with its documentation, and every playbook we ship and
every YAML example in the docs passes against that installed tree, never the checkout."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
import yaml
from ansible_collections.infra.obs.plugins.plugin_utils.whitelist import load as load_whitelist
from infra_obs_cost import config as cost_config
from infra_obs_cost.findings import Prices, parse_policy
from infra_obs_probe.quality.config import parse_checks

REPO = pathlib.Path(__file__).resolve().parent.parent
COLLECTION = REPO / "collections/ansible_collections/infra/obs"
ROLES = sorted(p.name for p in (COLLECTION / "roles").iterdir() if p.is_dir())
MODULES = sorted(p.stem for p in (COLLECTION / "plugins/modules").glob("*.py"))
PLAYBOOKS = sorted(p.name for p in (REPO / "playbooks").glob("*.yml"))
ROLE_OPTIONS = {
    option
    for spec in (COLLECTION / "roles").glob("*/meta/argument_specs.yml")
    for entry in yaml.safe_load(spec.read_text())["argument_specs"].values()
    for option in entry.get("options", {})
}
DOCS = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    COLLECTION / "README.md",
    *sorted((COLLECTION / "roles").glob("*/README.md")),
]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The installed tree and an environment whose only collection path is it, run from outside the checkout."""
    dest = pathlib.Path(
        subprocess.run(
            [str(REPO / "scripts/install-collection.sh"), str(tmp_path_factory.mktemp("collection"))],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    env = dict(os.environ, ANSIBLE_CONFIG=str(dest / "ansible.cfg"))
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    return dest, env


def ansible(installed, *args: str) -> subprocess.CompletedProcess:
    dest, env = installed
    return subprocess.run(list(args), capture_output=True, text=True, env=env, cwd=dest, check=False)


def test_every_role_is_listed_and_documented_from_the_installed_tree(installed):
    listed = json.loads(ansible(installed, "ansible-doc", "-t", "role", "-l", "--json", "infra.obs").stdout)
    assert sorted(listed) == [f"infra.obs.{role}" for role in ROLES]
    docs = json.loads(ansible(installed, "ansible-doc", "-t", "role", "--json", *listed).stdout)
    for name, doc in docs.items():
        assert doc["path"].startswith(str(installed[0])), (name, doc["path"])
        main = doc["entry_points"]["main"]
        assert main["short_description"] and main.get("options"), name


def test_every_module_is_listed_and_documented_from_the_installed_tree(installed):
    listed = json.loads(ansible(installed, "ansible-doc", "-l", "--json", "infra.obs").stdout)
    assert sorted(listed) == [f"infra.obs.{module}" for module in MODULES]
    docs = json.loads(ansible(installed, "ansible-doc", "--json", *listed).stdout)
    for name, doc in docs.items():
        assert doc["doc"]["filename"].startswith(str(installed[0])), name
        assert doc["doc"]["short_description"] and doc["examples"] and doc["return"], name
        assert {"check_mode", "diff_mode"} <= set(doc["doc"]["attributes"]), name


def test_the_tarball_ships_no_test_output_or_caches(installed):
    listed = subprocess.run(
        ["tar", "tzf", *map(str, installed[0].glob("infra-obs-*.tar.gz"))], capture_output=True, text=True, check=True
    ).stdout.split()
    unwanted = [n for n in listed if re.search(r"(^|/)(tests/output|__pycache__|\.pytest_cache|molecule)(/|$)", n)]
    assert not unwanted
    assert "tests/unit/plugins/plugin_utils/test_whitelist.py" in listed
    assert "roles/mm2/files/mm2_readiness.py" in listed


def test_internal_roles_refuse_a_play(installed, tmp_path):
    play = tmp_path / "play.yml"
    play.write_text("- hosts: localhost\n  roles:\n    - {role: infra.obs._consul_service, _consul_service_name: x}\n")
    interpreter = f"ansible_python_interpreter={sys.executable}"
    run = ansible(installed, "ansible-playbook", "-i", "localhost,", "-c", "local", "-e", interpreter, str(play))
    assert run.returncode != 0
    assert "infra.obs._consul_service is internal" in run.stdout


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_playbook_passes_syntax_check_against_the_installed_tree(installed, playbook):
    run = ansible(
        installed,
        "ansible-playbook",
        "--syntax-check",
        "-i",
        str(REPO / "inventories/lab/hosts.yml"),
        str(REPO / "playbooks" / playbook),
    )
    assert run.returncode == 0, run.stdout + run.stderr


def yaml_blocks():
    for doc in DOCS:
        for number, match in enumerate(re.finditer(r"^```ya?ml\n(.*?)^```", doc.read_text(), re.S | re.M), 1):
            yield pytest.param(doc, match.group(1), id=f"{doc.relative_to(REPO)}#{number}")


@pytest.mark.parametrize(("doc", "text"), list(yaml_blocks()))
def test_yaml_example_in_the_docs_checks(installed, tmp_path, doc, text):
    data = yaml.safe_load(text)
    if isinstance(data, dict) and {"service", "checks"} <= set(data):
        # A quality check file: the checker's own parser must accept it.
        parse_checks(data, str(doc))
        return
    if isinstance(data, dict) and {"collector", "database"} <= set(data):
        # A cost collector config: the collector's own parser must accept it (with a password file of the test's).
        password = tmp_path / "db-password"
        password.write_text("example\n")
        if "password_file" in data["database"]:
            data["database"]["password_file"] = str(password)
        cost_config.parse(data, str(doc))
        return
    if isinstance(data, dict) and data and set(data) <= {"rules", "teams", "budgets"}:
        # A findings policy: the collector's own parser must accept it.
        parse_policy(data, str(doc), Prices())
        return
    if isinstance(data, dict) and set(data) <= ROLE_OPTIONS:
        # Inventory variables: each one an option some role declares in its argument_specs.
        return
    if isinstance(data, dict):
        # A whitelist file: the module's own loader must accept it.
        assert {"backends", "rules"} <= set(data), f"{doc}: a YAML block that is neither a play, a whitelist nor checks"
        load_whitelist([(str(doc), data)])
        return
    assert isinstance(data, list) and data, doc
    if all("hosts" in item for item in data):
        play = text
    else:  # a list of tasks, as shown inside a role
        play = yaml.safe_dump([{"name": "Example", "hosts": "localhost", "gather_facts": False, "tasks": data}])
    path = tmp_path / "example.yml"
    path.write_text(play)
    run = ansible(installed, "ansible-playbook", "--syntax-check", "-i", "localhost,", str(path))
    assert run.returncode == 0, run.stdout + run.stderr
