"""Servers the tests start on loopback (moto, Prometheus, our exporters): each a process with its log, ready when
a path answers 200 within a generous deadline (polled), stopped with its log printed."""

from __future__ import annotations

import os
import pathlib
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import requests

STARTUP_SECONDS = 180


def free_port() -> int:
    """A loopback TCP port free at the time of the call."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A server process on loopback: its base URL, process and log file."""

    url: str
    process: subprocess.Popen
    log: pathlib.Path

    def wait_ready(self, path: str, what: str) -> None:
        """Poll url + path until it answers 200; fail naming what and the log if the process exits or time runs out."""
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{what} exited ({self.process.returncode}):\n{self.log.read_text()[-4000:]}")
            try:
                if requests.get(self.url + path, timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{what} not ready after {STARTUP_SECONDS} s:\n{self.log.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        print(f"--- {self.log}\n{self.log.read_text()[-2000:]}")


def start(cmd: list[str], log: pathlib.Path, port: int) -> Server:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # pytest's pythonpath too
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    return Server(f"http://127.0.0.1:{port}", process, log)


class Started:
    """The servers a module's factory started, each logging into the factory's directory; stopped at its end."""

    def __init__(self, directory: pathlib.Path):
        self.directory, self.servers = directory, []

    def start(self, cmd: list[str], name: str, port: int, ready: str, what: str) -> Server:
        server = start(cmd, self.directory / f"{name}-{port}.log", port)
        self.servers.append(server)
        server.wait_ready(ready, what)
        return server

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


def exec_start(unit: pathlib.Path) -> list[str]:
    """A systemd unit's ExecStart as an argument list (its continuation lines joined): how the tests run a role's
    rendered unit as it is."""
    text = unit.read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    return shlex.split(line.removeprefix("ExecStart="))
