"""
Retention against one wrong clock (issue 14, item 1), on a real PostgreSQL.

The local clock is injected (``clock=``), never changed for real: a host
whose clock runs 30 days ahead must drop nothing, the cutoff comes from the
database's ``now()``, and a child whose bounds or rows are newer than the
cutoff is kept whatever its name says.
"""

import datetime
import time
import uuid

import orjson
import psycopg2
import pytest

from tests.conftest import fetch
from nightowl import health, migrate, partitions
from nightowl.pgwrite import BatchWriter
from nightowl.records import RAW_TABLES

UTC = datetime.timezone.utc
DAY = 86400.0


@pytest.fixture
def db(fresh_pg_dsn):
    conn = psycopg2.connect(fresh_pg_dsn)
    migrate.apply(conn, partitions=False)
    yield fresh_pg_dsn, conn
    conn.close()


def write_logs_now(dsn, count=5):
    now = time.time()
    w = BatchWriter(dsn, "production", str(uuid.uuid4()), clock=lambda: now)
    recs = [{"t": "log", "timestamp": now - i, "message": "m%d" % i} for i in range(count)]
    assert w.write([(1, orjson.dumps(recs))]).quarantined == []
    w.close()


def log_count(dsn):
    return fetch(dsn, "SELECT count(*) FROM nightowl_logs")[0][0]


def test_a_clock_30_days_ahead_drops_nothing(db):
    dsn, conn = db
    partitions.ensure_partitions(conn, days_behind=3, days_ahead=2)
    write_logs_now(dsn)
    ahead = lambda: time.time() + 30 * DAY  # noqa: E731  (FAKETIME=+30d)
    with pytest.raises(partitions.ClockSkew) as e:
        partitions.drop_expired(conn, retention_days=14, clock=ahead)
    assert 30 * DAY - 60 < e.value.skew < 30 * DAY + 60
    assert log_count(dsn) == 5
    assert all(len(fetch(dsn, "SELECT 1 FROM pg_class WHERE relname = %s", "{}_p{}".format(
        t, datetime.datetime.now(UTC).strftime("%Y%m%d")))) == 1 for t in RAW_TABLES)


def test_a_small_skew_is_tolerated_and_the_database_clock_sets_the_cutoff(db):
    dsn, conn = db
    db_now = partitions.database_now(conn)
    partitions.ensure_partitions(conn, now=db_now - datetime.timedelta(days=5),
                                 days_behind=0, days_ahead=5)
    write_logs_now(dsn)
    # 4 minutes ahead: under the bound, the cutoff is the database's now - 2 days
    dropped = partitions.drop_expired(conn, retention_days=2, clock=lambda: time.time() + 240)
    cutoff = db_now - datetime.timedelta(days=2)
    expected = set()
    for t in RAW_TABLES:
        for back in range(0, 6):
            day = (db_now - datetime.timedelta(days=back)).date()
            end = datetime.datetime.combine(day, datetime.time(), UTC) + datetime.timedelta(days=1)
            if end <= cutoff:
                expected.add("{}_p{}".format(t, day.strftime("%Y%m%d")))
    assert set(dropped) == expected and expected
    assert log_count(dsn) == 5


def test_a_child_named_old_but_bounded_now_is_kept(db):
    dsn, conn = db
    today = datetime.datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    cur = conn.cursor()
    # a child whose name says 2020 but whose bounds (and rows) are today's
    cur.execute("CREATE TABLE nightowl_logs_p20200101 PARTITION OF nightowl_logs "
                "FOR VALUES FROM (%s) TO (%s)", (today, today + datetime.timedelta(days=1)))
    conn.commit()
    write_logs_now(dsn)
    dropped = partitions.drop_expired(conn, retention_days=14)
    assert "nightowl_logs_p20200101" not in dropped
    assert log_count(dsn) == 5


def test_sweep_reports_the_skew_instead_of_dropping(db):
    dsn, conn = db
    old = datetime.datetime.now(UTC) - datetime.timedelta(days=30)
    made_old = partitions.ensure_partitions(conn, now=old, days_behind=0, days_ahead=0)
    assert made_old
    result = health.sweep(dsn, 14, ensure=False, clock=lambda: time.time() - 2 * DAY)
    assert result["dropped"] == []
    assert result["clock_skew"]["seconds"] < -DAY
    assert "retention drops nothing" in result["clock_skew"]["message"]
    # with agreeing clocks the same sweep drops the expired children
    assert sorted(health.sweep(dsn, 14, ensure=False)["dropped"]) == sorted(made_old)
