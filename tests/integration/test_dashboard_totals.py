"""
nightowl.dashboard.totals on real Postgres: a kind's series from the kept
per-bucket totals (schema 0031) equals nightowl.rollups.query.series, before
and after the table is filled, per environment, after a rebuild changes a
kept hour (the triggers forget it), with a pending hour, and while a deriver
holds its lock (nothing kept, the answer still right), and when tier
retention prunes an hour under a fill in flight (no stale total stays).
"""

import datetime

import psycopg2
import pytest

from nightowl import migrate
from nightowl.dashboard import totals
from nightowl.rollups import aggregate, derive, query, rebuild, write

NOW = datetime.datetime.now(datetime.timezone.utc).replace(minute=30, second=0, microsecond=0)
#: (hours ago, environment, group, status, duration us)
ROWS = [(h, env, "g%d" % (h % 3), 500 if h % 5 == 0 else 200, 1000 + 37 * h + i)
        for h in (1, 2, 3, 7, 30, 49, 100, 170, 400) for env in ("production", "staging")
        for i in range(3)]


def _insert(cur, hours_ago, env, group, status, duration, minute=5):
    at = NOW - datetime.timedelta(hours=hours_ago) + datetime.timedelta(minutes=minute)
    cur.execute("INSERT INTO nightowl_requests (created_at, timestamp, environment, group_hash, "
                "method, route_path, status_code, duration) VALUES (%s, %s, %s, %s, 'GET', "
                "'/x', %s, %s)", (at, at.timestamp(), env, group, status, duration))
    return at


@pytest.fixture(scope="module")
def db(pg_dsn):
    migrate.apply(pg_dsn)
    conn = psycopg2.connect(pg_dsn, options="-c TimeZone=UTC")
    cur = conn.cursor()
    hours = set()
    for row in ROWS:
        at = _insert(cur, *row)
        hours.add(at.replace(minute=0))
    conn.commit()
    for hour in sorted(hours):
        rebuild.rebuild_hour(conn, hour)
    yield conn
    conn.close()


RANGES = [datetime.timedelta(hours=24), datetime.timedelta(days=7), datetime.timedelta(days=30)]


def both(conn, since, until, env=None):
    want = query.series(conn, "request", since, until=until, environment=env)
    got = totals.series(conn, "request", since, until, env)
    return want, got


def kept(conn):
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM nightowl_dashboard_totals")
    n = cur.fetchone()[0]
    conn.rollback()
    return n


@pytest.mark.parametrize("env", [None, "production", "staging", "nowhere"])
def test_series_equals_query_series_cold_and_kept(db, env):
    until = NOW + datetime.timedelta(minutes=7)
    for span in RANGES:
        want, cold = both(db, until - span, until, env)
        assert sum(p["count"] for p in want) > 0 or env == "nowhere"
        assert cold == want
        assert kept(db) > 0
        assert totals.series(db, "request", until - span, until, env) == want


def test_a_rebuilt_hour_is_forgotten_and_read_anew(db):
    until = NOW + datetime.timedelta(minutes=7)
    since = until - datetime.timedelta(days=7)
    before = totals.series(db, "request", since, until)
    cur = db.cursor()
    at = _insert(cur, 30, "production", "g0", 200, 99999999, minute=40)
    db.commit()
    rebuild.rebuild_hour(db, at.replace(minute=0))
    want, got = both(db, since, until)
    assert got == want and got != before
    assert sum(p["count"] for p in got) == sum(p["count"] for p in before) + 1


def test_a_pending_hour_is_read_from_its_minutes(db):
    until = NOW + datetime.timedelta(minutes=7)
    since = until - datetime.timedelta(days=7)
    totals.series(db, "request", since, until)          # fill
    minute = int((NOW - datetime.timedelta(hours=7)).timestamp()) // 60 * 60
    fold = {}
    aggregate.add_record(fold, {"t": "request", "_group": "g9", "method": "GET",
                                "route_path": "/late", "status_code": 200,
                                "duration": 5000}, minute)
    cur = db.cursor()
    write.upsert(cur, "production", fold)              # minute row + pending hour
    db.commit()
    want, got = both(db, since, until)
    assert got == want
    derive.run(db)
    want2, got2 = both(db, since, until)
    assert got2 == want2 == want


def test_a_busy_deriver_means_nothing_is_kept_but_the_answer_is_right(db, pg_dsn):
    other = psycopg2.connect(pg_dsn)
    cur = db.cursor()
    cur.execute("DELETE FROM nightowl_dashboard_totals")
    db.commit()
    try:
        o = other.cursor()
        o.execute("SELECT pg_advisory_lock(%s)", (derive.DERIVE_LOCK,))
        until = NOW + datetime.timedelta(minutes=7)
        want, got = both(db, until - datetime.timedelta(days=30), until)
        assert got == want
        assert kept(db) == 0
    finally:
        other.close()


def test_truncating_a_tier_forgets_its_totals(db, pg_dsn):
    conn = psycopg2.connect(pg_dsn)
    try:
        cur = conn.cursor()
        cur.execute("INSERT INTO nightowl_dashboard_totals (tier, kind, bucket, all_envs, "
                    "environment) VALUES ('hour', 'request', now(), true, ''), "
                    "('day', 'request', now(), true, '')")
        cur.execute("TRUNCATE nightowl_rollups_hour")
        cur.execute("SELECT tier FROM nightowl_dashboard_totals WHERE bucket = now()")
        assert cur.fetchall() == [("day",)]
    finally:
        conn.rollback()
        conn.close()


@pytest.mark.parametrize("env", [None, "staging"])
def test_by_sum_is_query_top_by_sum_without_percentiles(db, env):
    from nightowl.dashboard import sums
    until = NOW + datetime.timedelta(minutes=7)
    for span in RANGES + [datetime.timedelta(minutes=90)]:
        want = query.top(db, "request", until - span, until=until, environment=env, limit=4,
                         order="sum")
        got = sums.by_sum(db, "request", until - span, until, env, limit=4)
        assert want, span
        keys = ("group_key", "target", "count", "errors", "sum_ms", "max_ms")
        assert [{k: r[k] for k in keys} for r in got] == [{k: r[k] for k in keys} for r in want]


def test_long_ranges_are_read_in_whole_steps_of_their_chart():
    from nightowl.dashboard.data import whole_steps
    utc = datetime.timezone.utc
    t = datetime.datetime(2026, 12, 2, 1, 49, 30, tzinfo=utc)
    assert whole_steps(t - datetime.timedelta(hours=1), t) == (t - datetime.timedelta(hours=1), t)
    assert whole_steps(t - datetime.timedelta(days=1), t) == (
        datetime.datetime(2026, 12, 1, 1, tzinfo=utc), datetime.datetime(2026, 12, 2, 2, tzinfo=utc))
    h = t.replace(minute=0, second=0)
    assert whole_steps(h - datetime.timedelta(days=7), h) == (h - datetime.timedelta(days=7), h)
    assert whole_steps(t - datetime.timedelta(days=30), t) == (
        datetime.datetime(2026, 11, 2, tzinfo=utc), datetime.datetime(2026, 12, 3, tzinfo=utc))


def test_a_prune_under_a_fill_in_flight_leaves_no_stale_total(fresh_pg_dsn):
    """A fill reads an old hour's rows and has not committed its total when
    tier retention deletes that hour: the prune waits for the fill's lock,
    so the triggers see the total and forget it (it used to stay)."""
    import threading

    migrate.apply(fresh_pg_dsn)
    conn = psycopg2.connect(fresh_pg_dsn, options="-c TimeZone=UTC")
    filler = psycopg2.connect(fresh_pg_dsn, options="-c TimeZone=UTC")
    pruner = psycopg2.connect(fresh_pg_dsn)
    try:
        cur = conn.cursor()
        at = _insert(cur, 400, "production", "g1", 200, 1234)  # ~17 days ago
        conn.commit()
        hour = at.replace(minute=0)
        rebuild.rebuild_hour(conn, hour)
        # a fill in flight, as totals.fill runs it: the lock, the merge, no commit yet
        f = filler.cursor()
        f.execute("SELECT pg_try_advisory_lock(%s)", (derive.DERIVE_LOCK,))
        assert f.fetchone()[0]
        filler.commit()
        f.execute(totals.TUNING + totals.FILL.format(
            totals=totals.TABLE, pending=write.PENDING, tier_table=write.TABLES["hour"]),
            {"lo": hour, "hi": hour + datetime.timedelta(hours=1), "w": "3600 seconds",
             "tier": "hour", "kind": "request"})
        assert f.rowcount == 2  # the bucket's all-environments total and production's
        done = []
        pruning = threading.Thread(target=lambda: done.append(rebuild.prune(pruner, 30, 10, 400)))
        pruning.start()
        pruning.join(0.5)
        assert not done, "the prune did not wait for the fill in flight"
        filler.commit()
        f.execute("SELECT pg_advisory_unlock(%s)", (derive.DERIVE_LOCK,))
        filler.commit()
        pruning.join(10)
        assert done and done[0]["nightowl_rollups_hour"] == 1
        cur.execute("SELECT count(*) FROM nightowl_dashboard_totals WHERE bucket = %s", (hour,))
        assert cur.fetchone()[0] == 0
        conn.rollback()
    finally:
        for c in (conn, filler, pruner):
            c.close()
