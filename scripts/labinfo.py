"""Facts about the running lab that scripts and tests share: host addresses and Prometheus queries."""

import json
import subprocess
import time

import requests


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


def active_targets(prometheus_url: str) -> list[dict]:
    response = requests.get(f"{prometheus_url}/api/v1/targets", params={"state": "active"}, timeout=5)
    response.raise_for_status()
    return response.json()["data"]["activeTargets"]


def wait_for(predicate, timeout: float, interval: float = 2.0):
    """Call predicate until it returns something truthy or timeout seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
