"""
The dashboard's raw-row reads (nightowl.dashboard.rawreads) on real
Postgres: a group page's samples are exactly the raw rows of the rollup group
it links from, for every kind; every read stays within its bound (rows
scanned, time window); a trace is found with and without its time hint.
"""

import datetime
import uuid

import psycopg2
import pytest

from nightowl import migrate
from nightowl.dashboard import data, rawreads
from nightowl.rollups import rebuild

NOW = datetime.datetime.now(datetime.timezone.utc).replace(second=0, microsecond=0)


def ago(minutes):
    return NOW - datetime.timedelta(minutes=minutes)


def _insert(cur, table, rows):
    for row in rows:
        cols = ["created_at", "timestamp", "environment"] + list(row[1])
        cur.execute("INSERT INTO {} ({}) VALUES ({})".format(
            table, ", ".join(cols), ", ".join(["%s"] * len(cols))),
            [row[0], row[0].timestamp(), "production"] + list(row[1].values()))


def _many(n, start, fields):
    """n rows a minute apart from `start` minutes ago, durations 1000 + i us."""
    return [(ago(start + i), dict(fields, duration=1000 + i)) for i in range(n)]


#: kind -> (table, [(n, fields)]): each (n, fields) is one rollup group of n rows
GROUPS = {
    "request": ("nightowl_requests", [
        (3, {"group_hash": "g1", "method": "GET", "route_path": "/a", "status_code": 200}),
        (2, {"group_hash": "g1", "method": "GET", "route_path": "/a", "status_code": 500}),
        (4, {"group_hash": "g2", "method": "POST", "route_path": "/b", "status_code": 201})]),
    "query": ("nightowl_queries", [
        (3, {"group_hash": "q1", "sql_query": "select 1", "connection": "pgsql"}),
        (5, {"group_hash": "q2", "sql_query": "select 2", "connection": "pgsql"})]),
    "job": ("nightowl_jobs", [
        (3, {"job_class": "A", "queue": "default", "status": "processed",
             "record_type": "job-attempt"}),
        (2, {"job_class": "A", "queue": "default", "status": "failed",
             "record_type": "job-attempt"}),
        (4, {"job_class": "A", "queue": "default", "record_type": "queued-job"})]),
    "outgoing": ("nightowl_outgoing_requests", [
        (3, {"host": "h1", "method": "GET", "url": "https://h1/x", "status_code": 200}),
        (2, {"host": "h1", "method": "GET", "url": "https://h1/x", "status_code": 503}),
        (1, {"host": "h2", "method": "GET", "url": "https://h2/x", "status_code": 200})]),
    "cache": ("nightowl_cache_events", [
        (3, {"store": "redis", "event_type": "hit", "key": "k"}),
        (2, {"store": "redis", "event_type": "miss", "key": "k"}),
        (1, {"event_type": "hit", "key": "k"})]),
    "command": ("nightowl_commands", [
        (2, {"group_hash": "c1", "name": "migrate", "command": "php artisan migrate",
             "exit_code": 0}),
        (3, {"group_hash": "c2", "name": "seed", "command": "php artisan seed", "exit_code": 1})]),
    "scheduled_task": ("nightowl_scheduled_tasks", [
        (2, {"group_hash": "s1", "command": "php artisan report", "status": "processed"})]),
}


@pytest.fixture(scope="module")
def db(pg_dsn):
    migrate.apply(pg_dsn)
    conn = psycopg2.connect(pg_dsn, options="-c TimeZone=UTC")
    cur = conn.cursor()
    for kind, (table, groups) in GROUPS.items():
        for n, fields in groups:
            _insert(cur, table, _many(n, 2, fields))
    conn.commit()
    for hour in rebuild.hours(ago(120), NOW + datetime.timedelta(minutes=1)):
        rebuild.rebuild_hour(conn, hour)
    yield conn
    conn.close()


def scope(minutes=90):
    return data.Scope(ago(minutes), NOW + datetime.timedelta(minutes=1))


@pytest.mark.parametrize("kind", sorted(GROUPS))
def test_samples_are_the_rows_of_the_linked_group(db, kind):
    s = scope()
    groups = data.top(db, kind, s.since, until=s.until, limit=50, order="count")
    db.rollback()
    want = sorted(n for n, _ in GROUPS[kind][1])
    assert sorted(g["count"] for g in groups) == want
    for g in groups:
        got = rawreads.samples(db, kind, s.since, s.until, None, g["group_key"])
        db.rollback()
        assert len(got) == g["count"], (g["group_key"], got)
        durations = [r["duration"] for r in got]
        assert durations == sorted(durations, reverse=True)


def test_samples_scan_only_the_newest_rows(db):
    s = scope()
    got = rawreads.samples(db, "query", s.since, s.until, None, "q2", scan=2)
    db.rollback()
    # q2's rows are 2..6 minutes old with durations 1000..1004: the newest two
    # are 1000 (2 min) and 1001 (3 min), the slowest first
    assert [r["duration"] for r in got] == [1001, 1000]


def test_a_group_key_that_parses_to_nothing_has_no_samples(db):
    s = scope()
    assert rawreads.samples(db, "request", s.since, s.until, None, "no-pipes") == []
    assert rawreads.samples(db, "outgoing", s.since, s.until, None, "h1|weird") == []
    db.rollback()


def test_cache_samples_come_from_the_last_hour_only(db):
    until = NOW + datetime.timedelta(hours=3)     # the rows are 3 h older than `until`
    got = rawreads.samples(db, "cache", until - datetime.timedelta(hours=4), until, None,
                           "redis|hit")
    db.rollback()
    assert got == []
    assert rawreads.samples_since("cache", until - datetime.timedelta(hours=4), until) == \
        until - datetime.timedelta(hours=1)


@pytest.fixture(scope="module")
def traced(db):
    cur = db.cursor()
    recent, old, root = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
    # 6 runs of one group in one recent execution, 6 in one 2 hours ago
    for execution, minutes in ((recent, 5), (old, 125)):
        _insert(cur, "nightowl_queries", [
            (ago(minutes), {"group_hash": "nplus", "sql_query": "select * from t where id = ?",
                            "execution_id": execution, "trace_id": execution,
                            "duration": 10}) for _ in range(6)])
    _insert(cur, "nightowl_requests", [(ago(10), {"trace_id": root, "method": "GET",
                                                   "url": "/t", "duration": 5})])
    _insert(cur, "nightowl_logs", [(ago(10), {"trace_id": root, "execution_id": root,
                                              "level": "info", "message": "hello"})])
    db.commit()
    return {"recent": recent, "old": old, "root": root}


def test_n_plus_one_looks_at_the_last_hour_of_the_range(db, traced):
    s = scope(24 * 60)
    got = rawreads.n_plus_one(db, s.since, s.until, None)
    db.rollback()
    assert [(r["group_hash"], r["max_per_execution"], str(r["sample"])) for r in got] == [
        ("nplus", 6, traced["recent"])]
    assert got[0]["sample_at"] == ago(5)


def test_n_plus_one_scans_a_bounded_number_of_rows(db, traced):
    s = scope(24 * 60)
    # the newest 3 queries hold 3 runs of the group: below the minimum of 5
    assert rawreads.n_plus_one(db, s.since, s.until, None, scan=3) == []
    db.rollback()


def test_trace_with_and_without_its_time(db, traced):
    root = traced["root"]
    kinds = sorted(e["kind"] for e in rawreads.trace(db, root)["events"])
    assert kinds == ["log", "request"]
    assert rawreads.trace_time(db, root) == ago(10)
    hinted = rawreads.trace(db, root, ago(10) + datetime.timedelta(hours=20))["events"]
    assert sorted(e["kind"] for e in hinted) == ["log", "request"]
    # a hint two days off reads only partitions around it: nothing
    assert rawreads.trace(db, root, ago(10) - datetime.timedelta(days=2))["events"] == []
    db.rollback()
