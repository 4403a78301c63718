"""The records' database: PolarDB/MySQL (MariaDB in the lab) through PyMySQL, or SQLite, with the same versioned
migrations. A day is written as one batch in one transaction: the rows that are new or changed, then the batch row,
then COMMIT; a killed run leaves nothing of its batch, and a rerun that finds nothing new writes nothing. The digest
of everything a day's run produced is kept too: a rerun that produces the same skips the day without reading it."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import importlib.resources
import json
import math
import re
import sqlite3
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from .findings import Finding
from .model import Record, Reject, Resource, shown

MIGRATION = re.compile(r"([0-9]{4})_[a-z0-9_]+\.sql")
RECORD_KEY = ("account_id", "region", "service", "resource_id", "metric", "statistic", "day")
RECORD_VALUES = ("team", "value", "samples")
REJECT_KEY = ("account_id", "region", "service", "resource_id", "metric", "day", "reason")
REJECT_VALUES = ("samples", "example")
FINDING_KEY = ("account_id", "region", "service", "resource_id", "rule", "window_end")
FINDING_VALUES = ("team", "days", "matched_days", "evidence", "instance_type", "monthly_saving")
TABLES = (
    "utilisation_daily",
    "utilisation_rejects",
    "collection_batches",
    "collected_days",
    "findings",
    "findings_batches",
)
MYSQL_TABLE_OPTIONS = " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"


class StoreError(Exception):
    """The database refused or could not be reached; str() says which database and why."""


@dataclass(frozen=True)
class Database:
    driver: str  # "sqlite" | "mysql"
    path: str = ""  # sqlite
    host: str = ""
    port: int = 3306
    name: str = ""
    user: str = ""
    password: str = ""

    def __repr__(self) -> str:  # never the password
        where = self.path if self.driver == "sqlite" else f"{self.user}@{self.host}:{self.port}/{self.name}"
        return f"{self.driver}:{where}"


@dataclass(frozen=True)
class BatchResult:
    batch_id: str | None  # None: nothing new, nothing written
    records_added: int
    records_changed: int
    rejects_added: int
    rejects_changed: int

    @property
    def written(self) -> int:
        return self.records_added + self.records_changed


@dataclass(frozen=True)
class FindingsResult:
    batch_id: str | None  # None: the window's findings were already these
    added: int
    changed: int
    removed: int


def migrations() -> list[tuple[int, str]]:
    """(version, SQL) of every migration shipped in the package, in order."""
    found = []
    for entry in importlib.resources.files(__package__).joinpath("migrations").iterdir():
        match = MIGRATION.fullmatch(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)


def _statements(sql: str) -> list[str]:
    text = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


def _same(a: tuple, b: tuple) -> bool:
    """Stored and new values of a row: floats equal to the last stored digit."""
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            if x is not y:
                return False
        elif isinstance(x, float) or isinstance(y, float):
            if not math.isclose(float(x), float(y), rel_tol=1e-12, abs_tol=1e-9):
                return False
        elif x != y:
            return False
    return True


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _day_text(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime.date) else str(value)


class Store:
    def __init__(self, database: Database):
        self.database = database
        self.mysql = database.driver == "mysql"
        try:
            if self.mysql:
                import pymysql  # noqa: PLC0415 (SQLite users need not install it)

                self.errors: tuple[type[Exception], ...] = (pymysql.MySQLError,)
                self.conn = pymysql.connect(
                    host=database.host,
                    port=database.port,
                    user=database.user,
                    password=database.password,
                    database=database.name,
                    autocommit=False,
                    connect_timeout=10,
                    read_timeout=600,
                    write_timeout=600,
                    charset="utf8mb4",
                )
            else:
                self.errors = (sqlite3.Error,)
                self.conn = sqlite3.connect(database.path, isolation_level=None, timeout=60)
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=FULL")
        except Exception as e:
            raise StoreError(f"database {database!r}: cannot connect: {e}") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection: nothing left to tell
            self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # One SQL text for both: `?` placeholders become PyMySQL's `%s`.
    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.mysql else sql

    def _run(self, what: str, fn):
        try:
            return fn()
        except self.errors as e:
            self._rollback()
            raise StoreError(f"database {self.database!r}: {what}: {e}") from None

    def _rollback(self) -> None:
        try:
            if self.mysql:
                self.conn.rollback()
            elif self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except Exception:
            pass

    def _begin(self, cur) -> None:
        cur.execute("START TRANSACTION" if self.mysql else "BEGIN IMMEDIATE")

    def _commit(self) -> None:
        if self.mysql:
            self.conn.commit()
        else:
            self.conn.execute("COMMIT")

    def migrate(self) -> list[int]:
        """Applies the migrations this database lacks; returns their versions."""
        options = MYSQL_TABLE_OPTIONS if self.mysql else ""

        def run() -> list[int]:
            cur = self.conn.cursor()
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER NOT NULL PRIMARY KEY, "
                "applied_at VARCHAR(32) NOT NULL)" + options
            )
            cur.execute("SELECT version FROM schema_migrations")
            have = {int(row[0]) for row in cur.fetchall()}
            applied = []
            for version, sql in migrations():
                if version in have:
                    continue
                # MySQL commits each DDL statement itself; SQLite keeps a migration whole.
                self._begin(cur)
                for statement in _statements(sql.replace("{table_options}", options)):
                    cur.execute(statement)
                cur.execute(
                    self._sql("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)"),
                    (version, _now()),
                )
                self._commit()
                applied.append(version)
            return applied

        return self._run("migrating", run)

    def _existing(
        self, cur, table: str, key: Sequence[str], values: Sequence[str], day: str, *, day_column: str = "day"
    ) -> dict[tuple, tuple]:
        cur.execute(self._sql(f"SELECT {', '.join((*key, *values))} FROM {table} WHERE {day_column} = ?"), (day,))
        n = len(key)
        day_at = key.index(day_column)
        found = {}
        for row in cur.fetchall():
            k = list(row[:n])
            k[day_at] = _day_text(k[day_at])
            found[tuple(k)] = tuple(row[n:])
        return found

    def _upsert(self, cur, table: str, key: Sequence[str], values: Sequence[str], rows: list[tuple]) -> None:
        if not rows:
            return
        cols = (*key, *values)
        marks = ", ".join("?" for _ in cols)
        if self.mysql:
            update = ", ".join(f"{c} = VALUES({c})" for c in values)
            sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks}) ON DUPLICATE KEY UPDATE {update}"
        else:
            update = ", ".join(f"{c} = excluded.{c}" for c in values)
            sql = (
                f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks}) "
                f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {update}"
            )
        cur.executemany(self._sql(sql), rows)

    def write_day(self, source: str, day: datetime.date, records: list[Record], rejects: list[Reject]) -> BatchResult:
        """Writes what is new or changed of one day's records and rejects as one batch (one transaction)."""
        day_text = day.isoformat()
        new_records = {
            tuple(_day_text(k) for k in r.key()): (r.team, r.value, r.samples) for r in records if r.day == day
        }
        new_rejects = {
            tuple(shown(k) if i < 4 else _day_text(k) for i, k in enumerate(j.key())): (j.samples, j.example)
            for j in rejects
            if j.day == day
        }

        content = hashlib.sha256(repr((sorted(new_records.items()), sorted(new_rejects.items()))).encode()).hexdigest()

        def run() -> BatchResult:
            cur = self.conn.cursor()
            self._begin(cur)
            cur.execute(self._sql("SELECT content_digest FROM collected_days WHERE source = ? AND day = ?"),
                        (source, day_text))  # fmt: skip
            if [tuple(row) for row in cur.fetchall()] == [(content,)]:
                self._rollback()
                return BatchResult(None, 0, 0, 0, 0)
            have_records = self._existing(cur, "utilisation_daily", RECORD_KEY, RECORD_VALUES, day_text)
            have_rejects = self._existing(cur, "utilisation_rejects", REJECT_KEY, REJECT_VALUES, day_text)
            records_out, rejects_out = [], []
            counts = [0, 0, 0, 0]
            for new, have, out, at in (
                (new_records, have_records, records_out, 0),
                (new_rejects, have_rejects, rejects_out, 2),
            ):
                for key, values in sorted(new.items()):
                    old = have.get(key)
                    if old is None:
                        counts[at] += 1
                    elif _same(old, values):
                        continue
                    else:
                        counts[at + 1] += 1
                    out.append((key, values))
            self._upsert(cur, "collected_days", ("source", "day"), ("content_digest",), [(source, day_text, content)])
            if not records_out and not rejects_out:  # rows gone from the source are kept: only the digest is new
                self._commit()
                return BatchResult(None, 0, 0, 0, 0)
            batch_id = uuid.uuid4().hex  # unique even when a later batch writes the same values again
            for table, key, values, rows in (
                ("utilisation_daily", RECORD_KEY, RECORD_VALUES, records_out),
                ("utilisation_rejects", REJECT_KEY, REJECT_VALUES, rejects_out),
            ):
                self._upsert(cur, table, key, (*values, "batch_id"), [(*k, *v, batch_id) for k, v in rows])
            # Last: the batch row exists only if everything before it did.
            cur.execute(
                self._sql(
                    "INSERT INTO collection_batches (batch_id, source, day, finished_at, records_added, "
                    "records_changed, rejects_added, rejects_changed) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                ),
                (
                    batch_id,
                    source,
                    day_text,
                    datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                    *counts,
                ),
            )
            self._commit()
            return BatchResult(batch_id, *counts)

        return self._run(f"writing the batch of {day_text}", run)

    def daily_values(self, first: datetime.date, last: datetime.date) -> list[Record]:
        """The records of the days from first to last, inclusive."""

        def run() -> list[Record]:
            cur = self.conn.cursor()
            cur.execute(
                self._sql(
                    "SELECT account_id, region, service, resource_id, team, metric, statistic, day, value, samples "
                    "FROM utilisation_daily WHERE day >= ? AND day <= ?"
                ),
                (first.isoformat(), last.isoformat()),
            )
            rows = cur.fetchall()
            if self.mysql:
                self.conn.commit()
            return [
                Record(Resource(*row[:4]), row[4], row[5], row[6], datetime.date.fromisoformat(_day_text(row[7])),
                       float(row[8]), int(row[9]))
                for row in rows
            ]  # fmt: skip

        return self._run(f"reading the records of {first} to {last}", run)

    def write_findings(self, window_end: datetime.date, findings: list[Finding]) -> FindingsResult:
        """Makes the window's stored findings these (one transaction): new ones added, changed ones updated, those
        no longer found removed, and a findings batch row when anything changed."""
        window = window_end.isoformat()
        new = {
            f.key(): (f.team, f.days, f.matched_days, json.dumps([[d, dict(v)] for d, v in f.evidence], sort_keys=True),
                      f.instance_type, f.monthly_saving)
            for f in findings
            if f.window_end == window_end
        }  # fmt: skip

        def run() -> FindingsResult:
            cur = self.conn.cursor()
            self._begin(cur)
            have = self._existing(cur, "findings", FINDING_KEY, FINDING_VALUES, window, day_column="window_end")
            out = [(k, v) for k, v in sorted(new.items()) if k not in have or not _same(have[k], v)]
            gone = sorted(k for k in have if k not in new)
            if not out and not gone:
                self._rollback()
                return FindingsResult(None, 0, 0, 0)
            batch_id = uuid.uuid4().hex
            where = " AND ".join(f"{c} = ?" for c in FINDING_KEY)
            cur.executemany(self._sql(f"DELETE FROM findings WHERE {where}"), gone)
            self._upsert(
                cur, "findings", FINDING_KEY, (*FINDING_VALUES, "batch_id"), [(*k, *v, batch_id) for k, v in out]
            )
            added = sum(1 for k, _ in out if k not in have)
            cur.execute(
                self._sql("INSERT INTO findings_batches (batch_id, window_end, finished_at, added, changed, removed) "
                          "VALUES (?, ?, ?, ?, ?, ?)"),
                (batch_id, window, _now(), added, len(out) - added, len(gone)),
            )  # fmt: skip
            self._commit()
            return FindingsResult(batch_id, added, len(out) - added, len(gone))

        return self._run(f"writing the findings of the window ending {window}", run)

    def findings(self, team: str | None = None, window_end: datetime.date | None = None) -> list[dict]:
        """The stored findings of a window (default: the newest), of one team or all, as plain data."""

        def run() -> list[dict]:
            cur = self.conn.cursor()
            if window_end is None:
                cur.execute("SELECT MAX(window_end) FROM findings")
                newest = cur.fetchone()[0]
                window = _day_text(newest) if newest is not None else None
            else:
                window = window_end.isoformat()
            rows = []
            if window is not None:
                columns = (*FINDING_KEY, *FINDING_VALUES)
                sql = f"SELECT {', '.join(columns)} FROM findings WHERE window_end = ?"
                cur.execute(self._sql(sql + (" AND team = ?" if team else "")), (window, team) if team else (window,))
                rows = [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]
            if self.mysql:
                self.conn.commit()
            for row in rows:
                row["window_end"] = _day_text(row["window_end"])
                row["evidence"] = json.loads(row["evidence"])
            return sorted(rows, key=lambda r: (r["team"], r["rule"], r["region"], r["resource_id"]))

        return self._run("reading the findings", run)

    def rows(self, table: str) -> list[tuple]:
        """Every row of a table, sorted, dates as text: for reports and tests that compare databases."""
        if table not in TABLES:
            raise ValueError(table)

        def run() -> list[tuple]:
            cur = self.conn.cursor()
            cur.execute(f"SELECT * FROM {table}")
            rows = cur.fetchall()
            if self.mysql:
                self.conn.commit()
            return sorted(tuple(_day_text(v) if isinstance(v, datetime.date) else v for v in row) for row in rows)

        return self._run(f"reading {table}", run)
