"""Fixtures for the cost system's tests: the collector's exporter, a MariaDB server (a module's) and the databases a
test runs on (SQLite and that MariaDB); moto and Prometheus come from tests/conftest.py."""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Callable, Iterator

import pytest
from infra_obs_cost.store import Database
from lab_mariadb import running
from lab_servers import Server, Started


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
