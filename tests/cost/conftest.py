"""Fixtures for the cost system's tests: free loopback ports, moto servers (the lab's AWS account) and Prometheus
servers started from the release tarball the lab deploys, a MariaDB server (a module's) and the databases a test
runs on (SQLite and that MariaDB). Servers get generous startup deadlines (polled), and are
stopped, with their log printed, when their scope ends."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import requests
from infra_obs_cost.store import Database
from lab_mariadb import running

CACHE = pathlib.Path(os.environ.get("INFRA_OBS_CACHE", "/var/cache/infra-obs"))
PROMETHEUS_TARBALL = CACHE / "artifacts/prometheus/prometheus-3.16.0.linux-amd64.tar.gz"
STARTUP_SECONDS = 180


def _free_port() -> int:
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


def _start(cmd: list[str], log: pathlib.Path, port: int) -> Server:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # pytest's pythonpath too
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    return Server(f"http://127.0.0.1:{port}", process, log)


class Started:
    """The servers a module's factory started, each logging into the factory's directory; stopped at its end."""

    def __init__(self, directory: pathlib.Path):
        self.directory, self.servers = directory, []

    def start(self, cmd: list[str], name: str, port: int, ready: str, what: str) -> Server:
        server = _start(cmd, self.directory / f"{name}-{port}.log", port)
        self.servers.append(server)
        server.wait_ready(ready, what)
        return server

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """A function returning a loopback TCP port free at the time of the call."""
    return _free_port


@pytest.fixture(scope="module")
def start_moto(tmp_path_factory) -> Iterator[Callable[[], Server]]:
    """Factory of moto servers (`moto_server -H 127.0.0.1 -p PORT`, an empty account each), stopped at the end of
    the module."""
    started = Started(tmp_path_factory.mktemp("moto"))
    moto = pathlib.Path(sys.executable).with_name("moto_server")

    def start() -> Server:
        port = _free_port()
        return started.start([str(moto), "-H", "127.0.0.1", "-p", str(port)], "moto", port, "/moto-api/",
                             "moto_server")  # fmt: skip

    yield start
    started.stop()


@pytest.fixture(scope="module")
def start_cost_exporter(tmp_path_factory) -> Iterator[Callable[[pathlib.Path, int], Server]]:
    """Factory of the collector's exporters (`infra-obs-cost serve`, its metrics and reports) on loopback:
    start(config, port) runs one, ready when /metrics answers; all are stopped at the end of the module."""
    started = Started(tmp_path_factory.mktemp("cost-exporter"))

    def start(config: pathlib.Path, port: int) -> Server:
        cmd = [sys.executable, "-m", "infra_obs_cost", "serve", "--config", str(config)]
        return started.start(cmd, "exporter", port, "/metrics", "infra-obs-cost serve")

    yield start
    started.stop()


@pytest.fixture(scope="module")
def moto_server(start_moto) -> str:
    """The endpoint URL of a moto server the module shares."""
    return start_moto().url


@pytest.fixture(scope="session")
def prometheus_binary(tmp_path_factory) -> pathlib.Path:
    """The prometheus binary of the release tarball the lab deploys, extracted into a temporary directory."""
    if not PROMETHEUS_TARBALL.is_file():
        pytest.fail(f"{PROMETHEUS_TARBALL} is missing: scripts/fetch-artifacts.sh fetches it")
    directory = tmp_path_factory.mktemp("prometheus-bin")
    with tarfile.open(PROMETHEUS_TARBALL) as tar:
        member = next(m for m in tar.getmembers() if m.isfile() and pathlib.PurePath(m.name).name == "prometheus")
        source = tar.extractfile(member)
        assert source is not None
        binary = directory / "prometheus"
        binary.write_bytes(source.read())
    binary.chmod(0o755)
    return binary


@pytest.fixture(scope="module")
def start_prometheus(prometheus_binary, tmp_path_factory) -> Iterator[Callable[..., Server]]:
    """Factory of Prometheus servers on loopback: start(data_dir, *extra_args, config="...") runs one with its TSDB
    in data_dir (a backfilled one, say) and the given configuration (default: no scrape jobs), ready when /-/ready
    answers; all are stopped at the end of the module."""
    started = Started(tmp_path_factory.mktemp("prometheus"))

    def start(data_dir: pathlib.Path, *extra: str, config: str = "global:\n  scrape_interval: 1m\n") -> Server:
        port = _free_port()
        config_file = started.directory / f"prometheus-{port}.yml"
        config_file.write_text(config)
        cmd = [
            str(prometheus_binary),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address=127.0.0.1:{port}",
            *extra,
        ]
        return started.start(cmd, "prometheus", port, "/-/ready", "prometheus")

    yield start
    started.stop()


@pytest.fixture(scope="module")
def mariadb(tmp_path_factory):
    with running(tmp_path_factory.mktemp("mariadb")) as server:
        yield server


@pytest.fixture(params=["sqlite", "mysql"])
def database(request, tmp_path) -> Database:
    """An empty database of each driver: a SQLite file, or the module's MariaDB emptied."""
    if request.param == "sqlite":
        return Database("sqlite", path=str(tmp_path / "cost.db"))
    server = request.getfixturevalue("mariadb")
    server.reset()
    return server.database()
