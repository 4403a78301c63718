"""Helpers for the probe exporter tests: exporter processes, network namespaces, Consul agents, metric parsing."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import pathlib
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import yaml
from lab_servers import free_port
from prometheus_client.parser import text_string_to_metric_families

REPO = pathlib.Path(__file__).resolve().parents[2]
SRC = REPO / "probe" / "src"
TOOLS = pathlib.Path(__file__).resolve().parent / "tools"
CONSUL = os.environ.get("INFRA_OBS_CONSUL", "/var/cache/infra-obs/bin/consul")
PROMTOOL = os.environ.get("INFRA_OBS_PROMTOOL", "/var/cache/infra-obs/bin/promtool")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


# How many times its timeout a wait gives a check. The timeouts are what a check takes alone with room to spare; CI
# runs these tests on 2 shared cores beside Kafka and a molecule scenario, where a starved exporter took over 15 s
# to do what takes 2. A check that holds returns at once, so only a failure waits the longer deadline.
SLACK = 6


def wait_for(check: Callable[[], Any], timeout: float = 10, interval: float = 0.1, what: str = "condition") -> Any:
    """Poll until check() returns something truthy; fail with `what` after SLACK times `timeout` seconds."""
    timeout *= SLACK
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = check()
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


def in_netns(ns: str | None, fn: Callable[[], Any]) -> Any:
    """Run fn in a thread that has joined network namespace `ns` (sockets it opens live there)."""
    if ns is None:
        return fn()
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            with open(f"/run/netns/{ns}") as f:
                if _libc.setns(f.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            out["value"] = fn()
        except BaseException as e:
            out["error"] = e

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def http_get(url: str, ns: str | None = None, timeout: float = 10) -> bytes:
    def fetch() -> bytes:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read()

    return in_netns(ns, fetch)


class Netns:
    """A network namespace of our own with loopback up; deleted (with its veths) on close."""

    def __init__(self, prefix: str = "iop"):
        self.name = f"{prefix}-{secrets.token_hex(4)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.run("ip", "link", "set", "lo", "up")

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ip", "netns", "exec", self.name, *cmd], check=check, capture_output=True, text=True, env=exporter_env()
        )

    def sysctl(self, key: str, value: str) -> None:
        self.run("sysctl", "-qw", f"{key}={value}")

    def popen(self, *cmd: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.name, *cmd], **kwargs)

    def responder(self, *args: str) -> subprocess.Popen:
        """tools/icmp_delay_responder.py answering echo requests in this namespace (whose kernel must not)."""
        self.sysctl("net.ipv4.icmp_echo_ignore_all", "1")
        process = self.popen(
            sys.executable, str(TOOLS / "icmp_delay_responder.py"), *args, stdout=subprocess.PIPE, text=True
        )
        assert process.stdout.readline().strip() == "ready"
        return process

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.name], check=False)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> int:
    """Signal a process, wait up to 15 s, then kill it."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def exporter_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "PYTHONUNBUFFERED": "1"}


def base_config(port: int, host: str = "127.0.0.1", **overrides: Any) -> dict:
    config = {
        "listen": f"{host}:{port}",
        "source": {"name": "node-a", "region": "eu-central-1", "az": "eu-central-1a"},
        "interval": 0.1,
        "timeout": 0.5,
        "window": 30,
        "icmp": {"enabled": True, "payload_size": 56},
        "tcp": {"enabled": True, "port": port},
        "mtr": {"enabled": False},
        "targets": {"static": [], "consul": {"enabled": False}},
        "register": {"enabled": False},
    }
    config.update(overrides)
    return config


class Exporter:
    """An infra-obs-probe process (optionally inside a network namespace) with its config file and log."""

    def __init__(self, config: dict, netns: Netns | None = None, workdir: pathlib.Path | None = None):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="iop-", dir=workdir))
        self.config_path = self.dir / "probe.yml"
        self.log_path = self.dir / "probe.log"
        self.netns = netns
        self.write_config(config)
        host, _, port = config["listen"].rpartition(":")
        self.base = f"http://{host}:{port}"
        cmd = [sys.executable, "-m", "infra_obs_probe", "--config", str(self.config_path)]
        if netns is not None:
            cmd = ["ip", "netns", "exec", netns.name, *cmd]
        self._log = open(self.log_path, "w")  # noqa: SIM115 - kept open for the process's lifetime
        self.proc = subprocess.Popen(cmd, env=exporter_env(), stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: self.get("/-/healthy") == b"Healthy\n", 15, what="exporter /-/healthy")
        except AssertionError:
            self.stop()
            raise AssertionError(f"exporter did not start:\n{self.log()}") from None

    def write_config(self, config: dict | str) -> None:
        text = config if isinstance(config, str) else yaml.safe_dump(config)
        self.config_path.write_text(text)

    @property
    def ns(self) -> str | None:
        return self.netns.name if self.netns else None

    def get(self, path: str, timeout: float = 10) -> bytes:
        return http_get(self.base + path, self.ns, timeout)

    def json(self, path: str) -> Any:
        return json.loads(self.get(path))

    def metrics(self) -> list:
        return list(text_string_to_metric_families(self.get("/metrics").decode()))

    def sample(self, name: str, metrics: list | None = None, **labels: str) -> float:
        """The sum of the samples of `name` whose labels include `labels`, from a new scrape or from `metrics` (one
        scrape read once, for numbers that must agree with each other)."""
        return sum(
            s.value
            for fam in (self.metrics() if metrics is None else metrics)
            for s in fam.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def path(self, target: str, dst_host: str | None = None) -> dict:
        for p in self.json("/paths.json")["paths"]:
            if p["target"] == target and (dst_host is None or p["dst_host"] == dst_host):
                return p
        raise KeyError(target)

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def send_signal(self, sig: int) -> None:
        """Signal the exporter itself (with a namespace, `ip netns exec` has exec'd into it: same pid)."""
        self.proc.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        code = stop_process(self.proc, sig)
        self._log.close()
        return code


class ConsulAgent:
    """A real Consul dev agent on free ports, data in a temporary directory."""

    def __init__(self, datacenter: str = "dc1") -> None:
        self.dir = tempfile.mkdtemp(prefix="iop-consul-")
        ports = [free_port() for _ in range(6)]
        self.http_port = ports[0]
        self.wan_address = f"127.0.0.1:{ports[4]}"
        self.url = f"http://127.0.0.1:{self.http_port}"
        self._log = open(pathlib.Path(self.dir) / "consul.log", "w")  # noqa: SIM115 - process lifetime
        # consul 1.8 picks the first private IPv4 as the node address unless told otherwise
        cmd = [CONSUL, "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1", "-data-dir", self.dir]
        cmd += ["-datacenter", datacenter]
        cmd += ["-http-port", str(ports[0]), "-dns-port", str(ports[1]), "-grpc-port", str(ports[2])]
        cmd += ["-serf-lan-port", str(ports[3]), "-serf-wan-port", str(ports[4]), "-server-port", str(ports[5])]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT)
        wait_for(self._leader, 30, 0.2, "Consul leader")

    def _leader(self) -> bool:
        return http_get(self.url + "/v1/status/leader", timeout=2).strip() not in (b"", b'""')

    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=5) as r:
            text = r.read()
        return json.loads(text) if text.strip() else None

    def register(self, service_id: str, address: str, port: int, meta: dict, *, address6: str = "", name: str = ""):
        body = {
            "ID": service_id,
            "Name": name or "infra-obs-probe",
            "Address": address,
            "Port": port,
            "Meta": meta,
        }
        if address6:
            body["TaggedAddresses"] = {"lan_ipv6": {"Address": address6, "Port": port}}
        self.api("PUT", "/v1/agent/service/register", body)

    def join_wan(self, other: ConsulAgent) -> None:
        """Federate with another datacenter's server, as retry_join_wan does."""
        self.api("PUT", f"/v1/agent/join/{other.wan_address}?wan=1")

    def deregister(self, service_id: str) -> None:
        self.api("PUT", f"/v1/agent/service/deregister/{service_id}")

    def services(self) -> dict:
        return self.api("GET", "/v1/agent/services")

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()
