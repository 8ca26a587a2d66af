"""Partial hours and the span tier (schema 0022) against a real PostgreSQL:
a reader merging the current hour's row, the live minutes after the
deriver's cut-off and the span of the last 23 whole hours gets exactly
what the minutes alone give, through late batches, re-derivations,
several environments, a rebuild and an upgrade from 0021."""

import uuid
from datetime import datetime, timedelta, timezone

import orjson
import psycopg2
import pytest

from nightowl import migrate
from nightowl.dashboard import totals
from nightowl.pgwrite import BatchWriter
from nightowl.rollups import derive, plan, query, rebuild, span
from tests.conftest import fetch

H = datetime(2024, 5, 3, 10, tzinfo=timezone.utc)
MIN = timedelta(minutes=1)
HOUR = timedelta(hours=1)
TARGET = "GET /r [2xx]"


@pytest.fixture
def db(fresh_pg_dsn):
    migrate.apply(fresh_pg_dsn)
    return fresh_pg_dsn


def write(dsn, stamps, environment="production", route="/r"):
    """One batch of requests at the given datetimes (duration = its minute + 1 ms)."""
    recs = [{"t": "request", "_group": "g" + route, "route_path": route, "method": "GET",
             "status_code": 200, "duration": 1000 * (1 + t.minute), "timestamp": t.timestamp()}
            for t in stamps]
    w = BatchWriter(dsn, environment, str(uuid.uuid4()), clock=lambda: stamps[-1].timestamp())
    w.write([(1, orjson.dumps(recs))])
    w.close()


def run_derive(dsn, cutoff):
    conn = psycopg2.connect(dsn)
    try:
        return derive.run(conn, cutoff=cutoff)
    finally:
        conn.close()


def top_and_plan(dsn, since, until, environment=None):
    conn = psycopg2.connect(dsn)
    try:
        segs = query.plan(conn, "request", since, until, environment)
        conn.rollback()
        rows = query.top(conn, "request", since, until, environment=environment, limit=100)
        return {r["target"]: (r["count"], r["p50_ms"], r["max_ms"]) for r in rows}, segs
    finally:
        conn.close()


def minutes_only(dsn, since, until, environment=None):
    """The same answer read from the minute tier alone (the reference)."""
    conn = psycopg2.connect(dsn)
    real = plan.plan
    try:
        query.plan = lambda c, k, s, u, e=None: [("minute", plan.floor_time(s, 60),
                                                  plan.ceil_time(u, 60))]
        rows = query.top(conn, "request", since, until, environment=environment, limit=100)
        return {r["target"]: (r["count"], r["p50_ms"], r["max_ms"]) for r in rows}
    finally:
        query.plan = real
        conn.close()


def test_the_drain_marks_the_earliest_minute_it_wrote_in_each_hour(db):
    write(db, [H + 50 * MIN, H + 7 * MIN, H + HOUR + 3 * MIN])
    assert fetch(db, "SELECT hour, minute, derived FROM nightowl_rollups_pending ORDER BY hour") == [
        (H, H + 7 * MIN, False), (H + HOUR, H + HOUR + 3 * MIN, False)]


def test_a_partial_hour_plus_its_live_minutes_is_exact_through_late_batches(db):
    write(db, [H + m * MIN + timedelta(seconds=5) for m in range(40)])
    assert run_derive(db, H + 30 * MIN) == 1
    # the hour row holds the 30 settled minutes, a marker says so
    assert fetch(db, "SELECT sum(count) FROM nightowl_rollups_hour") == [(30,)]
    assert fetch(db, "SELECT minute, derived FROM nightowl_rollups_pending") == [
        (H + 30 * MIN, True)]
    since, until = H, H + 41 * MIN
    got, segs = top_and_plan(db, since, until)
    assert segs == [("hour", H, H + HOUR), ("minute", H + 30 * MIN, H + 41 * MIN)]
    assert got == minutes_only(db, since, until) and got[TARGET][0] == 40
    # an hourly and a daily series add the live minutes to the hour row too
    conn = psycopg2.connect(db)
    for step in ("hour", "day"):
        points = query.series(conn, "request", since, until, step=step)
        assert sum(p["count"] for p in points) == 40, step
        assert totals.series(conn, "request", since, until, step=step) == points, step
    conn.close()
    # a batch into a live minute: still hour row + minutes
    write(db, [H + 35 * MIN])
    got, segs = top_and_plan(db, since, until)
    assert segs[0] == ("hour", H, H + HOUR) and got[TARGET][0] == 41
    # a late batch before the cut-off: the hour is read from its minutes until derived again
    write(db, [H + 3 * MIN])
    got, segs = top_and_plan(db, since, until)
    assert segs == [("minute", H, H + 41 * MIN)]
    assert got == minutes_only(db, since, until) and got[TARGET][0] == 42
    assert run_derive(db, H + 36 * MIN) == 1
    got, segs = top_and_plan(db, since, until)
    assert segs == [("hour", H, H + HOUR), ("minute", H + 36 * MIN, H + 41 * MIN)]
    assert got == minutes_only(db, since, until)
    # nothing new and the same cut-off: nothing to do
    assert run_derive(db, H + 36 * MIN) == 0
    # the hour ends: whole, no marker, the same answer
    assert run_derive(db, H + HOUR + 5 * MIN) == 1
    assert fetch(db, "SELECT count(*) FROM nightowl_rollups_pending") == [(0,)]
    assert fetch(db, "SELECT sum(count) FROM nightowl_rollups_hour") == [(42,)]
    got, segs = top_and_plan(db, since, until)
    assert got == minutes_only(db, since, until)


def test_an_hour_younger_than_the_cut_off_stays_pending(db):
    write(db, [H + HOUR + MIN])
    assert run_derive(db, H + HOUR) == 0
    assert fetch(db, "SELECT derived FROM nightowl_rollups_pending") == [(False,)]
    assert fetch(db, "SELECT count(*) FROM nightowl_rollups_hour") == [(0,)]


def test_several_environments_share_one_cut_off(db):
    write(db, [H + m * MIN for m in range(0, 40, 3)], environment="production")
    write(db, [H + m * MIN for m in range(1, 40, 5)], environment="staging", route="/s")
    assert run_derive(db, H + 20 * MIN) == 2
    since, until = H, H + 40 * MIN
    for env in (None, "production", "staging"):
        got, segs = top_and_plan(db, since, until, env)
        assert segs[0] == ("hour", H, H + HOUR), env
        assert got == minutes_only(db, since, until, env)
    # an environment left at another cut-off (not what a deriver does): read from minutes
    conn = psycopg2.connect(db)
    conn.cursor().execute("UPDATE nightowl_rollups_pending SET minute = minute - interval '1 min' "
                          "WHERE environment = 'staging'")
    conn.commit()
    assert derive.hour_states(conn, H, H + HOUR) == ({H}, {})
    assert derive.hour_states(conn, H, H + HOUR, "production") == (set(), {H: H + 20 * MIN})
    conn.close()
    assert top_and_plan(db, since, until)[0] == minutes_only(db, since, until)


def test_the_span_holds_the_last_24_and_23_whole_hours_and_is_dropped_when_stale(db):
    start = H - 30 * HOUR
    write(db, [start + k * 17 * MIN for k in range(int(31 * 60 / 17))])
    # the first minutes of hour H: the hour before it is not whole yet, the
    # 23-hour window serves beside that hour's partial row
    run_derive(db, H - MIN)
    got, segs = top_and_plan(db, H + MIN - 24 * HOUR, H + MIN)
    assert segs[:3] == [("span", H - 24 * HOUR, H - HOUR), ("hour", H - HOUR, H),
                        ("minute", H - MIN, H)]
    assert got == minutes_only(db, H - 24 * HOUR, H + MIN)
    cutoff = H + 12 * MIN
    run_derive(db, cutoff)
    conn = psycopg2.connect(db)
    assert span.windows(conn.cursor(), "request") == [(H - 24 * HOUR, H), (H - 23 * HOUR, H)]
    conn.close()
    since, until = H + 13 * MIN - 24 * HOUR, H + 13 * MIN
    got, segs = top_and_plan(db, since, until)
    # a range over 6 h starts at a whole hour: the 24-hour window, the current hour
    assert segs[:2] == [("span", H - 24 * HOUR, H), ("hour", H, H + HOUR)]
    assert got == minutes_only(db, H - 24 * HOUR, until)
    # a late batch into an hour inside the span: not used until derived again
    write(db, [H - 5 * HOUR + 7 * MIN] * 3)
    got, segs = top_and_plan(db, since, until)
    assert "span" not in [s[0] for s in segs]
    assert got == minutes_only(db, H - 24 * HOUR, until)
    run_derive(db, cutoff)
    got, segs = top_and_plan(db, since, until)
    assert "span" in [s[0] for s in segs]
    assert got == minutes_only(db, H - 24 * HOUR, until)
    for hours in (23, 24):
        assert fetch(db, "SELECT sum(count) FROM nightowl_rollups_span WHERE bucket = %s",
                     H - hours * HOUR)[0][0] == fetch(
            db, "SELECT sum(count) FROM nightowl_rollups_minute WHERE bucket >= %s "
            "AND bucket < %s", H - hours * HOUR, H)[0][0]
    # the next hour: the window moves with the deriver's cut-off
    run_derive(db, H + HOUR + 2 * MIN)
    conn = psycopg2.connect(db)
    assert span.windows(conn.cursor(), "request") == [(H - 23 * HOUR, H + HOUR),
                                                      (H - 22 * HOUR, H + HOUR)]
    # a rebuild of an hour inside it forgets the span (and the hour's marker)
    rebuild.rebuild_hour(conn, H - 3 * HOUR)
    assert span.windows(conn.cursor(), "request") == []
    conn.close()
    got, segs = top_and_plan(db, since, until)
    assert "span" not in [s[0] for s in segs]
    assert got == minutes_only(db, H - 24 * HOUR, until)


def test_rebuild_of_a_partial_hour_removes_its_marker(db):
    write(db, [H + m * MIN for m in range(30)])
    run_derive(db, H + 10 * MIN)
    conn = psycopg2.connect(db)
    rebuild.rebuild_hour(conn, H)
    conn.close()
    assert fetch(db, "SELECT count(*) FROM nightowl_rollups_pending WHERE derived") == [(0,)]
    got, _ = top_and_plan(db, H, H + 30 * MIN)
    assert got == minutes_only(db, H, H + 30 * MIN) and got[TARGET][0] == 30


def test_upgrade_from_0021_reads_old_pending_rows_as_whole_hours(fresh_pg_dsn):
    conn = psycopg2.connect(fresh_pg_dsn)
    cur = conn.cursor()
    cur.execute(migrate.HISTORY_DDL)
    for name, sql in migrate.migrations():
        if name >= "0022":
            break
        cur.execute(sql)
        cur.execute("INSERT INTO nightowl_migrations (name) VALUES (%s)", (name,))
    conn.commit()
    cur.execute("INSERT INTO nightowl_rollups_pending (environment, hour) VALUES "
                "('production', %s)", (H,))
    conn.commit()
    assert "0022_rollup_partial_hours.sql" in migrate.apply(fresh_pg_dsn)
    assert derive.hour_states(conn, H, H + HOUR) == ({H}, {})
    assert derive.pending(conn, H, H + HOUR) == [H]
    conn.close()
    write(fresh_pg_dsn, [H + 5 * MIN, H + 25 * MIN])
    assert run_derive(fresh_pg_dsn, H + 20 * MIN) == 1
    got, segs = top_and_plan(fresh_pg_dsn, H, H + 30 * MIN)
    assert segs[0] == ("hour", H, H + HOUR) and got[TARGET][0] == 2
