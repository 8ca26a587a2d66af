"""nightowl.partitions against a real PostgreSQL."""

import datetime
import uuid

import orjson
import psycopg2
import pytest

from tests.conftest import fetch
from nightowl import migrate, partitions
from nightowl.pgwrite import BatchWriter
from nightowl.records import RAW_TABLES

UTC = datetime.timezone.utc
NOW = datetime.datetime(2024, 5, 3, 12, 0, tzinfo=UTC)


def children(dsn, table):
    return [c for c, in fetch(dsn, "SELECT c.relname FROM pg_inherits i JOIN pg_class c "
                                   "ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass "
                                   "ORDER BY 1", table)]


@pytest.fixture
def db(fresh_pg_dsn):
    conn = psycopg2.connect(fresh_pg_dsn)
    migrate.apply(conn, partitions=False)
    yield fresh_pg_dsn, conn
    conn.close()


def write_logs(dsn, stamps):
    w = BatchWriter(dsn, "production", str(uuid.uuid4()), clock=lambda: NOW.timestamp())
    recs = [{"t": "log", "timestamp": ts.timestamp(), "message": ts.isoformat()} for ts in stamps]
    assert w.write([(1, orjson.dumps(recs))]).quarantined == []
    w.close()


def test_ensure_creates_days_idempotently(db):
    dsn, conn = db
    created = partitions.ensure_partitions(conn, now=NOW, days_behind=1, days_ahead=2)
    days = ["20240502", "20240503", "20240504", "20240505"]
    assert sorted(created) == sorted("{}_p{}".format(t, d) for t in RAW_TABLES for d in days)
    for table in RAW_TABLES:
        assert children(dsn, table) == ["{}_p{}".format(table, d) for d in days] + [table + "_pdefault"]
    assert partitions.ensure_partitions(conn, now=NOW, days_behind=1, days_ahead=2) == []
    bound, = fetch(dsn, "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_class c "
                        "WHERE relname = 'nightowl_logs_p20240503'")
    assert bound == ("FOR VALUES FROM ('2024-05-03 00:00:00+00') TO ('2024-05-04 00:00:00+00')",)


def test_rows_in_default_are_moved(db):
    dsn, conn = db
    inside = [NOW, NOW.replace(hour=0, minute=0), NOW.replace(hour=23, minute=59, second=59)]
    outside = [NOW + datetime.timedelta(days=1)]
    write_logs(dsn, inside + outside)
    assert fetch(dsn, "SELECT count(*) FROM nightowl_logs_pdefault") == [(4,)]
    before = fetch(dsn, "SELECT id, message, created_at FROM nightowl_logs ORDER BY id")
    created = partitions.ensure_partitions(conn, now=NOW, days_behind=0, days_ahead=0)
    assert "nightowl_logs_p20240503" in created
    assert fetch(dsn, "SELECT count(*) FROM nightowl_logs_p20240503") == [(3,)]
    assert fetch(dsn, "SELECT message FROM nightowl_logs_pdefault") == [(outside[0].isoformat(),)]
    assert fetch(dsn, "SELECT id, message, created_at FROM nightowl_logs ORDER BY id") == before


def test_drop_expired(db):
    dsn, conn = db
    partitions.ensure_partitions(conn, now=NOW, days_behind=5, days_ahead=1)
    old_default = NOW - datetime.timedelta(days=30)
    write_logs(dsn, [old_default, NOW - datetime.timedelta(days=4), NOW])
    # cutoff = 2024-04-30 12:00: 04-28 and 04-29 are entirely older; 04-30 straddles it
    dropped = partitions.drop_expired(conn, retention_days=3, now=NOW)
    assert sorted(dropped) == sorted("{}_p{}".format(t, d) for t in RAW_TABLES
                                     for d in ("20240428", "20240429"))
    assert children(dsn, "nightowl_logs") == [
        "nightowl_logs_p202404{}".format(d) for d in ("30",)] + [
        "nightowl_logs_p202405{}".format(d) for d in ("01", "02", "03", "04")] + ["nightowl_logs_pdefault"]
    assert [m for m, in fetch(dsn, "SELECT message FROM nightowl_logs ORDER BY created_at")] == [
        NOW.isoformat()]
    assert partitions.drop_expired(conn, retention_days=3, now=NOW) == []


def test_never_touches_issues_users(db):
    dsn, conn = db
    w = BatchWriter(dsn, "production", str(uuid.uuid4()), clock=lambda: NOW.timestamp())
    w.write([(1, orjson.dumps([{"t": "user", "timestamp": NOW.timestamp() - 86400 * 100, "id": "u"},
                               {"t": "exception", "timestamp": NOW.timestamp() - 86400 * 100,
                                "class": "E", "_group": "g"}]))])
    w.close()
    partitions.drop_expired(conn, retention_days=1, now=NOW)
    assert fetch(dsn, "SELECT count(*) FROM nightowl_users") == [(1,)]
    assert fetch(dsn, "SELECT count(*) FROM nightowl_issues") == [(1,)]
    assert fetch(dsn, "SELECT count(*) FROM nightowl_exceptions") == [(0,)]


def test_busy_lock_skips(db):
    dsn, conn = db
    other = psycopg2.connect(dsn)
    try:
        cur = other.cursor()
        cur.execute("SELECT pg_advisory_xact_lock(hashtext('nightowl_partition_maintenance'))")
        assert partitions.ensure_partitions(conn, now=NOW, days_behind=0, days_ahead=0) == []
        assert partitions.drop_expired(conn, retention_days=1, now=NOW) == []
        other.rollback()
        assert len(partitions.ensure_partitions(conn, now=NOW, days_behind=0, days_ahead=0)) == \
            len(RAW_TABLES)
    finally:
        other.close()
