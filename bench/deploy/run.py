"""Deploy benchmark: how long a whitelist-only release takes from publish to answering on every proxy, and the
deploy stage with Ansible's defaults, with the SSH settings alone (pipelining, ControlPersist, forks) and with the
pipeline's settings (those and Mitogen's strategy), with the proxies next door and as far away as another region (a
round-trip time added by delay_relay.py).

Prints a Markdown report on stdout (progress on stderr). Exits 1 when a deployment fails or a change never answers;
a missed goal is reported as "goal missed". See README.md in this directory for the method.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import release  # noqa: E402
import yaml  # noqa: E402
from labinfo import (  # noqa: E402
    container_ip,
    git_as_alice,
    http_status,
    project_repository,
    record_host_keys,
    wait_for,
)

CACHE = pathlib.Path(os.environ.get("INFRA_OBS_CACHE", "/var/cache/infra-obs"))
IMAGE = os.environ.get("INFRA_OBS_BASE_IMAGE", "localhost/infra-obs-base:latest")
PREFIX = "infraobs-bench-deploy-"
NETWORK = f"{PREFIX}net"
INVENTORY = "inventories/bench/hosts.yml"
PLAYBOOK = "playbooks/whitelist.yml"
RELAY = pathlib.Path(__file__).resolve().parent / "delay_relay.py"
# Ansible's own defaults for what the pipeline tunes: its linear strategy, no pipelining, 5 forks, and ssh_args as
# ansible-core ships them; then the pipeline's SSH settings with Ansible's strategy; then the pipeline's config as is.
SETTINGS = {
    "defaults": {
        "strategy": "linear",
        "pipelining": "False",
        "forks": "5",
        "ssh_args": "-C -o ControlMaster=auto -o ControlPersist=60s",
    },
    "ssh": {"strategy": "linear"},
    "pipeline": {},
}
PIPELINE_CONFIG = release.ansible_config  # the pipeline's own config, which settings() rewrites


def log(message: str) -> None:
    print(f"[bench-deploy] {message}", file=sys.stderr, flush=True)


def sh(*command: str) -> str:
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def start_hosts(proxies: int, known_hosts: pathlib.Path) -> list[str]:
    """The proxies and a client (which also serves the origin's page), containers of the lab's base image, with the
    user `deploy`, the pipeline's key and sudo, and the proxies' host keys in known_hosts: a fleet as the pipeline
    reaches it."""
    names = [f"{PREFIX}proxy{i}" for i in range(1, proxies + 1)] + [f"{PREFIX}client"]
    subprocess.run(["scripts/lab.sh", "clean", PREFIX], cwd=ROOT, check=True)
    sh("podman", "network", "create", NETWORK)
    for name in names:
        sh("podman", "run", "-d", "--name", name, "--network", NETWORK, "--systemd=always", IMAGE, "/sbin/init")
    key = (CACHE / "ssh/deploy_ed25519.pub").read_text().strip()
    setup = (
        "until systemctl is-system-running --wait >/dev/null 2>&1 || systemctl is-system-running | grep -q degraded;"
        " do sleep 1; done; useradd -m -s /bin/bash deploy && install -d -m 700 -o deploy -g deploy ~deploy/.ssh &&"
        f" echo '{key}' > ~deploy/.ssh/authorized_keys && chown deploy: ~deploy/.ssh/authorized_keys &&"
        " echo 'deploy ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/deploy && chmod 440 /etc/sudoers.d/deploy"
    )
    for name in names:
        sh("podman", "exec", name, "sh", "-c", setup)
    client = names[-1]
    sh(
        "podman",
        "exec",
        "-d",
        client,
        "sh",
        "-c",
        "mkdir -p /srv && echo origin > /srv/index.html && exec python3 -m http.server 8080 --directory /srv",
    )
    record_host_keys(known_hosts, names[:-1])
    return names


def whitelist(client_ip: str, allowed: bool) -> str:
    """The release's whitelist: the client (also the origin) allowed or not; a TEST-NET address stays listed."""
    cidrs = ["192.0.2.1/32", *([f"{client_ip}/32"] if allowed else [])]
    document = {
        "groups": {"clients": {"cidrs": cidrs}},
        "backends": {"web": {"protocol": "http", "listen": 8080, "upstreams": [f"{client_ip}:8080"]}},
        "rules": [{"backend": "web", "groups": ["clients"]}],
    }
    return yaml.safe_dump(document, sort_keys=False)


def commit(repo: pathlib.Path, tag: str, proxies: list[str], client_ip: str, *, allowed: bool, rtt_ms: int = 0) -> None:
    """Commit and tag the inventory of the proxies (reached through delay_relay.py when rtt_ms) and a whitelist."""
    inventory = repo / INVENTORY
    ssh_args = f"-o UserKnownHostsFile={repo.parent / 'known_hosts'}"
    if rtt_ms:
        ssh_args += f" -o ProxyCommand='{sys.executable} {RELAY} %h %p {rtt_ms}'"
    if not inventory.exists():
        (inventory.parent / "whitelists").mkdir(parents=True)
        shutil.copytree(ROOT / "inventories/lab/group_vars", inventory.parent / "group_vars")
    hosts = {name: {"ansible_host": container_ip(name), "region": "bench", "az": "bench-a"} for name in proxies}
    document = {
        "all": {
            "vars": {
                "ansible_user": "deploy",
                "ansible_ssh_private_key_file": str(CACHE / "ssh/deploy_ed25519"),
                "ansible_ssh_common_args": ssh_args,
                "ansible_python_interpreter": "/usr/bin/python3",
                # Every deploy opens its connections, as a pipeline run does: no master kept open by the last one
                # (or by a run without the relay) is reused.
                "ansible_control_path_dir": "{{ lookup('ansible.builtin.env', 'BENCH_DEPLOY_CONTROL_DIR') }}",
                "nginx_whitelist_consul_register": False,  # no Consul on these hosts
            },
            "children": {"whitelist_proxies": {"hosts": hosts}},
        }
    }
    inventory.write_text(yaml.safe_dump(document, sort_keys=False))
    (inventory.parent / "whitelists/teams.yml").write_text(whitelist(client_ip, allowed))
    git_as_alice(repo, "add", "-A")
    git_as_alice(repo, "commit", "-q", "--allow-empty", "-m", tag)
    git_as_alice(repo, "tag", tag)


def answers(client: str, proxies: list[str], status: str) -> bool:
    for proxy in proxies:
        got = http_status(client, f"http://{container_ip(proxy)}:8080/")
        if got != status:
            return False
    return True


def settings(values: dict[str, str]):
    """release.ansible_config with these settings in place of the pipeline's."""

    def config(work: pathlib.Path, inventory: str) -> pathlib.Path:
        path = PIPELINE_CONFIG(work, inventory)
        lines = []
        for line in path.read_text().splitlines():
            name = line.split("=", 1)[0].strip()
            lines.append(f"{name} = {values[name]}" if name in values else line)
        path.write_text("\n".join(lines) + "\n")
        return path

    return config


def deploy(tag: str) -> float:
    """Seconds of one deploy stage; Ansible's output goes to stderr with the progress (stdout is the report's)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    os.environ["BENCH_DEPLOY_CONTROL_DIR"] = tempfile.mkdtemp(prefix="cp-", dir=release.DIST)
    try:
        started = time.monotonic()
        release.ansible_run("deploy", tag, INVENTORY, "", PLAYBOOK)
        return time.monotonic() - started
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def measure(
    repo: pathlib.Path, proxies: list[str], client: str, rounds: int, rtts: list[int]
) -> tuple[float, dict[tuple[int, str], list[float]]]:
    """Publish -> live for a change that allows the client, then the deploy stage under each setting."""
    client_ip = container_ip(client)
    log(f"{len(proxies)} proxies; first deploy (nginx installed), not measured")
    commit(repo, "b0", proxies, client_ip, allowed=False)
    release.package("b0")
    release.publish("b0")
    deploy("b0")
    if not answers(client, proxies, "403"):
        raise SystemExit("bench-deploy: the first release does not refuse the client")

    log("publish -> live: the client allowed")
    commit(repo, "b1", proxies, client_ip, allowed=True)
    release.package("b1")
    started = time.monotonic()
    release.publish("b1")
    deploy("b1")
    if not wait_for(lambda: answers(client, proxies, "200"), 60, interval=0.2):
        raise SystemExit("bench-deploy: the change never answered on every proxy")
    to_live = time.monotonic() - started

    times: dict[tuple[int, str], list[float]] = {}
    for rtt in rtts:
        tags = [f"rtt{rtt}-refused", f"rtt{rtt}-allowed"]  # each deploy changes the whitelist
        for i, tag in enumerate(tags):
            commit(repo, tag, proxies, client_ip, allowed=bool(i), rtt_ms=rtt)
            release.package(tag)
            release.publish(tag)
        for round_ in range(rounds):
            for name, values in SETTINGS.items():
                release.ansible_config = settings(values)
                for allowed, tag in enumerate(tags):
                    times.setdefault((rtt, name), []).append(deploy(tag))
                    log(f"RTT {rtt} ms, round {round_ + 1}, {name}, {tag}: {times[rtt, name][-1]:.1f} s")
                    if not wait_for(lambda a=allowed: answers(client, proxies, "200" if a else "403"), 10):
                        raise SystemExit(f"bench-deploy: {tag}, deployed with the {name} settings, is not live")
    return to_live, times


def report(proxies: int, to_live: float, times: dict[tuple[int, str], list[float]]) -> None:
    print("# Deploy benchmark\n")
    print(
        f"{proxies} proxies (containers of the lab's base image, reached over SSH as `deploy` with sudo), "
        f"`{PLAYBOOK}`, a whitelist-only release. Deploy stage: median seconds per setting.\n"
    )
    print(f"Publish -> the change answering on every proxy (next door): **{to_live:.1f} s**.\n")
    print(
        "| round trip to the proxies | Ansible's defaults | SSH settings alone | the pipeline's (SSH + Mitogen) "
        "| defaults / SSH | defaults / pipeline |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    ratios = {}
    for rtt in sorted({r for r, _ in times}):
        defaults, ssh, pipeline = (statistics.median(times[rtt, name]) for name in SETTINGS)
        ratios[rtt] = defaults / pipeline
        print(
            f"| {rtt} ms | {defaults:.1f} s | {ssh:.1f} s | {pipeline:.1f} s | {defaults / ssh:.2f}x "
            f"| {ratios[rtt]:.2f}x |"
        )
    print(f"\n- publish -> live within 60 s: {'goal met' if to_live <= 60 else 'goal missed'} ({to_live:.1f} s)")
    for rtt, ratio in ratios.items():
        print(
            f"- the pipeline's at least 2x faster than the defaults at {rtt} ms: "
            f"{'goal met' if ratio >= 2 else 'goal missed'} ({ratio:.2f}x)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--proxies", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="rounds per round-trip time: 2 deploys per setting")
    parser.add_argument("--rtt-ms", default="0,50", help="round-trip times to the proxies, comma-separated")
    args = parser.parse_args()
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-deploy-"))
    try:
        names = start_hosts(args.proxies, work / "known_hosts")
        repo = project_repository(work / "repo")
        release.REPO, release.DIST = repo, repo / "dist"
        release.BUCKET = f"bench-deploy-{uuid.uuid4().hex[:8]}"
        release.TEXTFILE = str(work / "infra_obs_deploy.prom")
        rtts = [int(v) for v in args.rtt_ms.split(",")]
        to_live, times = measure(repo, names[:-1], names[-1], args.rounds, rtts)
    finally:
        subprocess.run(["scripts/lab.sh", "clean", PREFIX], cwd=ROOT, check=False)
        shutil.rmtree(work, ignore_errors=True)
    report(args.proxies, to_live, times)
    return 0


if __name__ == "__main__":
    sys.exit(main())
