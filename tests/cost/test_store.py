"""The records' database, real MariaDB (as PolarDB for MySQL) and SQLite: the same migrations, idempotent batches,
a killed writer that leaves nothing of its batch, and a database that is down."""

import dataclasses
import datetime
import pathlib
import subprocess
import sys
import textwrap
import time

import pymysql
import pytest
from infra_obs_cost.model import METRICS, Observation, Policy, Resource, daily
from infra_obs_cost.store import TABLES, Database, Store, StoreError, migrations

DAY = datetime.date(2026, 11, 20)


def fleet(n: int, value: float = 30.0, day: datetime.date = DAY):
    """n EC2 instances with a full day of CPU each (and no samples of memory, disk and network in and out: four
    too_few_samples rejects each), all but every tenth owned by a team (a missing_team reject per metric then: five),
    one with a bad sample."""
    observations, teams = [], {}
    for i in range(n):
        r = Resource("123456789012", "eu-central-1", "ec2", f"i-{i:017x}")
        values = [value + i % 7] * 288
        if i == 3:
            values[0] = -1.0
        observations.append(Observation(r, METRICS[0], tuple(values)))
        teams[r] = None if i % 10 == 9 else ("payments", "search")[i % 2]
    return daily(day, observations, teams, Policy(144))


def test_the_same_migrations_make_the_same_tables_and_apply_once(database):
    with Store(database) as store:
        assert store.migrate() == [v for v, _ in migrations()]
        assert store.migrate() == []
        for table in TABLES:
            assert store.rows(table) == []


def test_a_rerun_adds_and_changes_nothing_and_a_changed_value_is_one_change(database):
    records, rejects = fleet(50)
    with Store(database) as store:
        store.migrate()
        first = store.write_day("prometheus", DAY, records, rejects)
        assert (first.records_added, first.records_changed, first.rejects_added) == (90, 0, 45 * 4 + 5 * 5 + 1)
        before = {t: store.rows(t) for t in TABLES}
        again = store.write_day("prometheus", DAY, records, rejects)
        assert again.batch_id is None and again.written == 0 and again.rejects_added == 0
        assert {t: store.rows(t) for t in TABLES} == before
        # The day's digest matched: it was skipped without its rows being read.
        read = []
        existing = store._existing
        store._existing = lambda *args: read.append(args[1]) or existing(*args)
        store.write_day("prometheus", DAY, records, rejects)
        assert read == []
        store._existing = existing
        changed = [dataclasses.replace(r, value=r.value + 1) if i == 0 else r for i, r in enumerate(records)]
        third = store.write_day("prometheus", DAY, changed, rejects)
        assert (third.records_added, third.records_changed, third.rejects_added) == (0, 1, 0)
        rows = store.rows("utilisation_daily")
        assert sum(1 for row in rows if row[-1] == third.batch_id) == 1
        assert len(store.rows("collection_batches")) == 2


def test_sqlite_and_mariadb_hold_the_same_rows(mariadb, tmp_path):
    records, rejects = fleet(30)
    held = []
    mariadb.reset()
    for database in (Database("sqlite", path=str(tmp_path / "cost.db")), mariadb.database()):
        with Store(database) as store:
            store.migrate()
            store.write_day("prometheus", DAY, records, rejects)
            # All but the batch ids, which are unique.
            held.append([[row[:-1] for row in store.rows(t)] for t in ("utilisation_daily", "utilisation_rejects")])
    assert held[0] == held[1]
    assert len(held[0][0]) == 54


WRITER = textwrap.dedent(
    """
    import datetime, sys
    sys.path[:0] = {paths!r}
    from infra_obs_cost.store import Database, Store
    from test_store import fleet
    records, rejects = fleet({n})
    with Store(Database(**{database!r})) as store:
        print(store.write_day("prometheus", datetime.date(2026, 11, 20), records, rejects), flush=True)
    """
)


def writer(database: Database, n: int) -> subprocess.Popen:
    paths = [str(pathlib.Path(__file__).parent), *(p for p in sys.path if p)]
    code = WRITER.format(paths=paths, n=n, database=dataclasses.asdict(database))
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(what: str, predicate, deadline: float = 120):
    end = time.monotonic() + deadline
    while not predicate():
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.1)


def test_a_writer_killed_in_the_middle_of_its_batch_leaves_nothing_and_the_next_run_completes(mariadb):
    """The batch row comes last: holding its table locked stops the writer after its records are in, where it is
    killed with SIGKILL."""
    mariadb.reset()
    database = mariadb.database()
    with Store(database) as store:
        store.migrate()
    with mariadb.root() as root, root.cursor() as cur:

        def modified() -> int:
            cur.execute("SELECT COALESCE(SUM(trx_rows_modified), 0) FROM information_schema.innodb_trx")
            return int(cur.fetchone()[0])

        locker = pymysql.connect(unix_socket=str(mariadb.socket), user="root", autocommit=True)
        with locker.cursor() as lock:
            lock.execute("LOCK TABLES infra_obs_cost.collection_batches WRITE")
            proc = writer(database, 2000)
            # 3600 records, 8201 rejects and the day's digest: all written, then it waits.
            wait_for("the writer's rows", lambda: modified() >= 3600 + 8201 + 1 or proc.poll() is not None)
            assert proc.poll() is None, proc.communicate()
            proc.kill()
            proc.wait()
            lock.execute("UNLOCK TABLES")
        locker.close()
        wait_for("the killed writer's transaction to roll back", lambda: modified() == 0)
    with Store(database) as store:
        for table in TABLES:
            assert store.rows(table) == [], table
        result = store.write_day("prometheus", DAY, *fleet(2000))
        assert (result.records_added, result.rejects_added) == (3600, 1800 * 4 + 200 * 5 + 1)
        assert len(store.rows("collection_batches")) == 1


def test_a_database_that_is_down_or_refuses_the_password_is_an_error_naming_it_and_not_the_password(mariadb):
    database = dataclasses.replace(mariadb.database(), password="wrong-password-1")
    with pytest.raises(StoreError) as refused:
        Store(database)
    assert f"infra_obs_cost@127.0.0.1:{mariadb.port}/infra_obs_cost" in str(refused.value)
    assert "wrong-password-1" not in str(refused.value)
    mariadb.stop()
    try:
        with pytest.raises(StoreError, match=r"cannot connect: .*Can't connect"):
            Store(mariadb.database())
    finally:
        mariadb.start()


def test_a_connection_the_server_ended_fails_the_batch_and_commits_nothing(mariadb):
    mariadb.reset()
    database = mariadb.database()
    with Store(database) as store:
        store.migrate()
    store = Store(database)
    try:
        with mariadb.root() as root, root.cursor() as cur:
            cur.execute(
                "SELECT id FROM information_schema.processlist WHERE user = 'infra_obs_cost' AND db = 'infra_obs_cost'"
            )
            victim = cur.fetchone()[0]
            # The server ends the writer's connection as it would on a failover: the write must fail whole.
            cur.execute(f"KILL CONNECTION {int(victim)}")
        with pytest.raises(StoreError, match="writing the batch of 2026-11-20"):
            store.write_day("prometheus", DAY, *fleet(20))
    finally:
        store.close()
    with Store(database) as store:
        assert store.rows("utilisation_daily") == []
