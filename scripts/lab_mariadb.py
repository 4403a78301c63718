"""A real MariaDB server (Debian's mariadb-server) on loopback with a data directory of its own, for the cost
collector's tests and benchmark: its database, as PolarDB for MySQL is in production."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import subprocess
import time

import pymysql
from lab_servers import free_port

DATABASE, USER, PASSWORD = "infra_obs_cost", "infra_obs_cost", "lab-cost-password"


class MariaDB:
    def __init__(self, directory: pathlib.Path):
        self.directory = directory
        self.datadir = directory / "data"
        self.socket = directory / "mysqld.sock"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.password_file = directory / "password"

    def install(self) -> None:
        if shutil.which("mariadbd", path="/usr/sbin:/usr/bin") is None:
            raise RuntimeError("mariadbd not installed: scripts/setup-host.sh installs mariadb-server")
        subprocess.run(
            ["mariadb-install-db", "--no-defaults", "--user=root", f"--datadir={self.datadir}",
             "--skip-test-db", "--auth-root-authentication-method=socket"],
            check=True, capture_output=True,
        )  # fmt: skip
        self.start()
        with self.root() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4")
            cur.execute(f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'")
            cur.execute(f"GRANT ALL PRIVILEGES ON {DATABASE}.* TO '{USER}'@'127.0.0.1'")
            cur.execute("GRANT PROCESS ON *.* TO 'root'@'localhost'")
        self.password_file.write_text(PASSWORD + "\n")
        self.password_file.chmod(0o600)

    def start(self) -> None:
        log = (self.directory / "mariadb.log").open("ab")
        self.proc = subprocess.Popen(
            ["/usr/sbin/mariadbd", "--no-defaults", "--user=root", f"--datadir={self.datadir}",
             f"--socket={self.socket}", f"--port={self.port}", "--bind-address=127.0.0.1",
             f"--pid-file={self.directory / 'mysqld.pid'}", "--innodb-buffer-pool-size=64M",
             "--innodb-flush-log-at-trx-commit=1", "--skip-name-resolve"],
            stdout=log, stderr=log, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(pymysql.MySQLError), self.root():
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"MariaDB did not start: {(self.directory / 'mariadb.log').read_text()[-2000:]}")
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=120)
        self.proc = None

    def root(self) -> pymysql.Connection:
        return pymysql.connect(unix_socket=str(self.socket), user="root", autocommit=True)

    def reset(self) -> None:
        """An empty database for the next test."""
        with self.root() as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {DATABASE}")
            cur.execute(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4")

    def database(self):
        """The collector's Database for this server."""
        from infra_obs_cost.store import Database  # noqa: PLC0415 (scripts/ is on the path without cost/src too)

        return Database("mysql", host="127.0.0.1", port=self.port, name=DATABASE, user=USER, password=PASSWORD)

    def config(self) -> dict:
        """The collector's `database:` section for this server."""
        return {"driver": "mysql", "host": "127.0.0.1", "port": self.port, "name": DATABASE, "user": USER,
                "password_file": str(self.password_file)}  # fmt: skip


@contextlib.contextmanager
def running(directory: pathlib.Path):
    server = MariaDB(directory)
    os.makedirs(directory, exist_ok=True)
    try:
        server.install()
        yield server
    finally:
        server.stop()
