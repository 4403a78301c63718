"""Helpers for the YACE role's tests: the controller's yace (scripts/build-yace.sh), the role's own template tasks run
by Ansible on this machine, and free ports."""

import os
import pathlib
import shutil
import subprocess

import pytest
import yaml
from lab_servers import free_port

REPO = pathlib.Path(__file__).resolve().parents[2]
ROLE = REPO / "roles" / "yace"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
PLACEMENT = {
    "region": "eu-central-1",
    "az": "eu-central-1a",
    "ansible_facts": {"default_ipv4": {"address": "192.0.2.10"}},
}


def yace_binary() -> pathlib.Path:
    """The yace scripts/build-yace.sh put on the controller; skips the test when it is not built."""
    found = shutil.which("yace") or str(
        pathlib.Path(os.environ.get("INFRA_OBS_CACHE", "/var/cache/infra-obs")) / "bin/yace"
    )
    if not os.access(found, os.X_OK):
        pytest.skip("yace is not built: run scripts/build-yace.sh (or scripts/fetch-artifacts.sh)")
    return pathlib.Path(found)


def role_task(task_file: str, name: str, dest: pathlib.Path) -> dict:
    """The named template task of the role, writing to dest instead of the host path, without owner and handlers."""
    tasks = yaml.safe_load((ROLE / "tasks" / task_file).read_text())
    task = dict(next(t for t in tasks if t["name"] == name))
    task.pop("notify", None)
    task.pop("register", None)
    args = {k: v for k, v in task["ansible.builtin.template"].items() if k not in ("owner", "group")}
    args.update(src=str(ROLE / "templates" / args["src"]), dest=str(dest))
    task["ansible.builtin.template"] = args
    return task


def render(playbook, directory: pathlib.Path, name: str, extra_vars: dict | None = None, yace=None):
    """Run one template task of tasks/configure.yml with the role's defaults (and vars/main.yml) plus extra_vars;
    the config's `validate:` runs the given yace. Returns (the file written, the run)."""
    dest = directory / "out" / name.replace(" ", "_")
    dest.parent.mkdir(parents=True, exist_ok=True)
    extra = dict(extra_vars or {})
    if yace is not None:
        extra["yace_binary_dir"] = str(pathlib.Path(yace).parent)
    play = [
        {
            "hosts": "all",
            "gather_facts": False,
            "vars": PLACEMENT,
            "vars_files": [str(ROLE / "defaults" / "main.yml"), str(ROLE / "vars" / "main.yml")],
            "tasks": [role_task("configure.yml", name, dest)],
        }
    ]
    (directory / "extra.yml").write_text(yaml.safe_dump(extra))
    run = playbook(yaml.safe_dump(play, sort_keys=False), "--diff", "-e", f"@{directory / 'extra.yml'}")
    return dest, run


def start_yace(yace, config, endpoint: str, workdir: pathlib.Path):
    """yace as the role's unit runs it (config, AWS_ENDPOINT_URL, keys in the environment), reading CloudWatch
    every 10 s instead of 300 so the polls below see a fresh read soon; its /metrics URL and process."""
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(workdir),
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    args = [str(yace), f"--config.file={config}", f"--listen-address=127.0.0.1:{port}", "--scraping-interval=10"]
    with (workdir / "yace.log").open("w") as out:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    return f"http://127.0.0.1:{port}/metrics", process
