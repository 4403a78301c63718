"""Facts about the running lab that scripts and tests share: host addresses and Prometheus queries."""

import contextlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap
import time

import requests
import yaml
from playwright.sync_api import Page, sync_playwright

_REPO = pathlib.Path(__file__).resolve().parent.parent
_SCREENSHOTS = _REPO / ".lab" / "screenshots"


def container_ip(name: str) -> str:
    """IPv4 address of a lab container on its (only) network."""
    out = subprocess.run(
        ["podman", "inspect", name, "--format", "{{json .NetworkSettings.Networks}}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    networks = json.loads(out)
    return next(iter(networks.values()))["IPAddress"]


@contextlib.contextmanager
def chromium_page(width: int = 1400, height: int = 1000):
    """A page of Debian's Chromium (setup-host.sh installs it; Playwright's own browser download is never used),
    headless through Playwright, closed on leaving."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page: Page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


def save_screenshot(page: Page, name: str) -> None:
    """The whole page as .lab/screenshots/NAME, for a person to look at after the run."""
    _SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(_SCREENSHOTS / name), full_page=True)


def http_status(container: str, url: str) -> str:
    """The HTTP status a lab container gets for url (curl inside it, from its own address); "" when none came."""
    return subprocess.run(
        ["podman", "exec", container, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url],
        capture_output=True,
        text=True,
    ).stdout


def project_repository(dest: pathlib.Path) -> pathlib.Path:
    """This project's files as they would be committed (tracked, and untracked but not ignored), copied into dest
    and made a git repository of their own with that first commit: where the pipeline's tests and benchmark commit
    and tag their changes."""
    listed = subprocess.check_output(
        ["git", "-C", str(_REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"], text=True
    )
    for name in filter(None, listed.split("\0")):
        source = _REPO / name
        if source.is_file() or source.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name, follow_symlinks=False)
    git_as_alice(dest, "init", "-q")
    git_as_alice(dest, "add", "-A")
    git_as_alice(dest, "commit", "-q", "-m", "the project")
    return dest


def git_as_alice(repository: pathlib.Path, *args: str) -> None:
    """git in that repository, as a committer named alice (tests and benchmarks commit as someone)."""
    identity = ("-c", "user.name=alice", "-c", "user.email=alice@example.com")
    subprocess.run(["git", "-C", str(repository), *identity, *args], check=True, capture_output=True)


def record_host_keys(known_hosts: pathlib.Path, containers: list[str]) -> None:
    """The ed25519 host keys of these lab containers, at their addresses, as known_hosts: what a fleet's
    provisioning records for a pipeline that checks host keys strictly (Mitogen's)."""
    addresses = [container_ip(name) for name in containers]
    keyscan = ["ssh-keyscan", "-t", "ed25519", *addresses]
    known_hosts.write_text(subprocess.run(keyscan, check=True, capture_output=True, text=True).stdout)


def rule_groups(prometheus_url: str) -> list[dict]:
    """The rule groups Prometheus has loaded, with each rule's health and each group's last evaluation."""
    response = requests.get(f"{prometheus_url}/api/v1/rules", timeout=5)
    response.raise_for_status()
    return response.json()["data"]["groups"]


def active_targets(prometheus_url: str) -> list[dict]:
    response = requests.get(f"{prometheus_url}/api/v1/targets", params={"state": "active"}, timeout=5)
    response.raise_for_status()
    return response.json()["data"]["activeTargets"]


def prometheus_query(prometheus_url: str, expr: str) -> list[dict]:
    """The result vector of an instant query."""
    response = requests.get(f"{prometheus_url}/api/v1/query", params={"query": expr}, timeout=10)
    response.raise_for_status()
    return response.json()["data"]["result"]


def wait_for(predicate, timeout: float, interval: float = 2.0):
    """Call predicate until it returns something truthy or timeout seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


class PlaybookRun:
    """An ansible-playbook run with the ansible.posix.json callback: its return code, output and parsed document."""

    def __init__(self, result: subprocess.CompletedProcess):
        self.rc = result.returncode
        self.output = result.stdout + result.stderr
        # Other enabled callbacks (profile_tasks) may print around the JSON document.
        start = 0 if result.stdout.startswith("{") else result.stdout.find("\n{\n") + 1
        self.json = json.JSONDecoder().raw_decode(result.stdout[start:])[0] if result.stdout.strip() else {}

    @property
    def stats(self) -> dict:
        return self.json.get("stats", {})

    def failures(self) -> list[str]:
        """The msg of every failed task result (and of each failed loop item), in order."""
        messages = []
        for play in self.json.get("plays", []):
            for task in play["tasks"]:
                for result in task["hosts"].values():
                    if result.get("failed"):
                        messages.append(result.get("msg", ""))
                        messages += [item.get("msg", "") for item in result.get("results", []) if item.get("failed")]
        return messages


def run_playbook(directory: pathlib.Path, text: str, *args: str, inventory: str = "localhost,") -> PlaybookRun:
    """Write a playbook (YAML text) into directory and run it with the repository's roles on this machine (the
    tests' controller), with the json callback."""
    path = directory / "play.yml"
    path.write_text(textwrap.dedent(text))
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(_REPO / "ansible.cfg"),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks",
        # Facts stay in memory: the shared cache (ansible.cfg) holds the lab's hosts, some named as test hosts are.
        ANSIBLE_CACHE_PLUGIN="ansible.builtin.memory",
        # Every host here is this machine: run modules with the controller's own interpreter.
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
    )
    result = subprocess.run(
        ["ansible-playbook", "-i", inventory, "-c", "local", str(path), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=_REPO,
    )
    return PlaybookRun(result)


def render_role(
    directory: pathlib.Path, role: str, templates: list[dict], extra: dict, *, placement: dict, preflight: bool = True
) -> tuple[pathlib.Path, PlaybookRun]:
    """A role's preflight (unless told), then some of its templates, rendered by Ansible with the role's defaults and
    vars into directory/out: each of templates is {"src": a file of the role's templates/, "dest": a file name in out},
    with "loop" or "no_log" passed on to its task. placement is the play's vars (a host's region, facts); extra goes
    in as extra vars, from a file. Returns out and the run."""
    out = directory / "out"
    out.mkdir(parents=True, exist_ok=True)
    role_dir = _REPO / "roles" / role
    tasks = [{"name": "Preflight", "ansible.builtin.include_tasks": str(role_dir / "tasks/preflight.yml")}]
    tasks = tasks if preflight else []
    for template in templates:
        task = {"name": f"Write {template['dest']}",
                "ansible.builtin.template": {"src": str(role_dir / "templates" / template["src"]),
                                             "dest": str(out / template["dest"])}}  # fmt: skip
        tasks.append(task | {key: template[key] for key in ("loop", "no_log") if key in template})
    vars_files = [str(path) for path in (role_dir / "defaults/main.yml", role_dir / "vars/main.yml") if path.exists()]
    play = [{"hosts": "all", "gather_facts": False, "vars": placement, "vars_files": vars_files, "tasks": tasks}]
    extra_file = directory / "extra.yml"
    extra_file.write_text(yaml.safe_dump(extra))
    return out, run_playbook(directory, yaml.safe_dump(play, sort_keys=False), "-e", f"@{extra_file}")


def molecule_playbook(playbook: str, *args: str, expect_success: bool = True) -> PlaybookRun:
    """Run a playbook of the current molecule scenario as a user would, with the scenario's inventory and config."""
    project = pathlib.Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
    scenario = pathlib.Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"])
    ephemeral = pathlib.Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"])
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ephemeral / "ansible.cfg"),
        # The scenario's own choice (the installed tarball for mm2), else the checkout.
        ANSIBLE_COLLECTIONS_PATH=os.environ.get("ANSIBLE_COLLECTIONS_PATH", str(project / "collections")),
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
    )
    result = subprocess.run(
        ["ansible-playbook", "-i", str(ephemeral / "inventory"), str(scenario / playbook), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode == 0) == expect_success, result.stdout[-4000:] + result.stderr[-2000:]
    return PlaybookRun(result)
