"""Rollup reads against a real PostgreSQL: top and series over the tiers,
pruned edges, pending hours, an empty database, the CLI's JSON."""

import json
import math
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import psycopg2
import pytest

from nightowl import migrate
from nightowl.pgwrite import BatchWriter
from nightowl.rollups import query
from tests.conftest import fetch
from tests.integration.test_rollups import derive_tiers, writer


@pytest.fixture
def db(fresh_pg_dsn):
    migrate.apply(fresh_pg_dsn)
    return fresh_pg_dsn


def test_top_and_series(db):
    recs = []
    for i in range(600):
        recs.append({"t": "request", "_group": "slow" if i % 3 == 0 else "fast",
                     "route_methods": ["GET", "HEAD"], "route_path": "/slow" if i % 3 == 0 else "/fast",
                     "method": "GET", "status_code": 500 if i % 30 == 0 else 200,
                     "duration": (100000 if i % 3 == 0 else 1000) + i, "user": "u%d" % (i % 4),
                     "timestamp": 1714694400 + i * 10})
    writer(db).write([(1, orjson.dumps(recs))])
    conn = psycopg2.connect(db)
    since = datetime.fromtimestamp(1714694400, timezone.utc)
    until = since + timedelta(seconds=6000)
    rows = query.top(conn, "request", since, until)
    assert rows[0]["target"] == "GET|HEAD /slow [2xx]"
    assert rows[0]["count"] == 180 and rows[0]["errors"] == 0
    assert abs(rows[0]["p95_ms"] - 100.57) / 100.57 < 0.02
    by_count = query.top(conn, "request", since, until, order="count", limit=1)
    assert by_count[0]["target"] == "GET|HEAD /fast [2xx]" and by_count[0]["count"] == 400
    errs = query.top(conn, "request", since, until, order="errors", limit=1)
    assert errs[0]["target"] == "GET|HEAD /slow [5xx]" and errs[0]["errors"] == 20
    assert len(query.top(conn, "user_request", since, until)) == 4
    assert query.top(conn, "request", since, until, environment="staging") == []
    # the same answer whether the range is served by minutes or by hours + edge minutes
    whole = query.top(conn, "request", since - timedelta(minutes=7), until + timedelta(hours=2))
    assert [(r["group_key"], r["count"], r["p95_ms"]) for r in whole] == \
        [(r["group_key"], r["count"], r["p95_ms"]) for r in query.top(
            conn, "request", since, until + timedelta(minutes=1))]
    points = query.series(conn, "request", since, until, group_key=rows[0]["group_key"])
    assert len(points) == 100 and sum(p["count"] for p in points) == 180
    assert query.series(conn, "request", since, until + timedelta(days=1))[0]["bucket"] == since
    # nothing derived yet (hours pending: read from minutes); deriving changes no answer
    hourly = query.series(conn, "request", since, until + timedelta(hours=3), step="hour")
    daily = query.series(conn, "request", since - timedelta(days=1), until + timedelta(days=1),
                         step="day")
    assert fetch(db, "SELECT count(*) FROM nightowl_rollups_hour")[0][0] == 0
    assert sum(p["count"] for p in hourly) == sum(p["count"] for p in daily) == 600
    derive_tiers(db)
    assert fetch(db, "SELECT count(*) FROM nightowl_rollups_pending")[0][0] == 0
    assert query.top(conn, "request", since - timedelta(minutes=7),
                     until + timedelta(hours=2)) == whole
    assert query.series(conn, "request", since, until + timedelta(hours=3), step="hour") == hourly
    assert query.series(conn, "request", since - timedelta(days=1), until + timedelta(days=1),
                        step="day") == daily
    conn.close()


def test_read_pending_routes_pending_hours_to_the_finer_tier():
    day = datetime(2024, 5, 3, tzinfo=timezone.utc)
    h = timedelta(hours=1)
    segs = [("minute", day - 30 * timedelta(minutes=1), day), ("day", day, day + 2 * 24 * h)]
    got = query.read_pending(segs, [day + 5 * h, day + 6 * h])
    assert got == [("minute", day - 30 * timedelta(minutes=1), day), ("hour", day, day + 5 * h),
                   ("minute", day + 5 * h, day + 6 * h), ("minute", day + 6 * h, day + 7 * h),
                   ("hour", day + 7 * h, day + 24 * h), ("day", day + 24 * h, day + 48 * h)]
    assert query.read_pending(segs, []) == segs


def test_top_reads_whole_hours_where_the_edge_minutes_are_pruned(db):
    recs = [{"t": "request", "_group": "g", "route_path": "/r", "method": "GET",
             "status_code": 200, "duration": 1000 + i, "timestamp": 1714694400 + i * 10}
            for i in range(600)]    # 00:00 to 01:40 UTC
    writer(db).write([(1, orjson.dumps(recs))])
    derive_tiers(db)
    t0 = datetime.fromtimestamp(1714694400, timezone.utc)
    conn = psycopg2.connect(db)
    half = (t0 + timedelta(minutes=30), t0 + timedelta(minutes=90))
    assert query.top(conn, "request", *half)[0]["count"] == 360     # from minutes
    cur = conn.cursor()
    cur.execute("DELETE FROM nightowl_rollups_minute WHERE bucket < %s", (t0 + timedelta(hours=1),))
    conn.commit()
    # the minutes of 00:30-01:00 are gone: the edge widens to the hours 00:00-02:00
    assert query.top(conn, "request", *half)[0]["count"] == 600
    cur.execute("DELETE FROM nightowl_rollups_minute; DELETE FROM nightowl_rollups_hour")
    conn.commit()
    got = query.top(conn, "request", t0 + timedelta(minutes=30), t0 + timedelta(days=3))
    assert got[0]["count"] == 600       # one day row, read once for both edges
    conn.close()


def test_fall_back_never_reads_a_coarse_bucket_twice():
    t0 = datetime(2024, 5, 3, 0, 30, tzinfo=timezone.utc)
    segs = query.segments(t0, t0 + timedelta(hours=30))
    assert [s[0] for s in segs] == ["minute", "minute", "hour"]
    late = t0 + timedelta(days=30)
    assert query.fall_back(segs, {"minute": None, "hour": late}) == [
        ("day", datetime(2024, 5, 3, tzinfo=timezone.utc), datetime(2024, 5, 5, tzinfo=timezone.utc))]
    assert query.fall_back(segs, {"minute": t0, "hour": t0}) == sorted(segs)



def test_fall_back_never_reads_a_range_from_two_tiers():
    # data only in the last hour: a 24 h range's older edge widens into whole
    # days, and the minutes and hours inside those days must not be read again
    until = datetime(2024, 5, 3, 23, 39, tzinfo=timezone.utc)
    segs = query.segments(until - timedelta(hours=24), until)
    oldest = {"minute": datetime(2024, 5, 3, 22, 49, tzinfo=timezone.utc),
              "hour": datetime(2024, 5, 3, 22, 0, tzinfo=timezone.utc)}
    got = query.fall_back(segs, oldest)
    covered = []
    for _tier, start, end in got:
        t = start
        while t < end:
            covered.append(t)
            t += timedelta(minutes=1)
    assert len(covered) == len(set(covered)), got
    assert min(covered) <= until - timedelta(hours=24) and max(covered) >= until - timedelta(minutes=1)

def test_top_on_an_empty_database(db):
    for fmt in ("json", "table"):
        out = subprocess.run([sys.executable, "-m", "nightowl.cli", "top", "routes", "--since", "7d",
                              "--format", fmt, "--dsn", db], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert (out.stdout == "[]\n") if fmt == "json" else ("no rollups" in out.stdout)


def test_top_json_keys(db):
    now = fetch(db, "SELECT extract(epoch FROM now())")[0][0]
    rec = {"t": "outgoing-request", "host": "api.example.com", "status_code": 200,
           "duration": 12000, "timestamp": float(now) - 30}
    BatchWriter(db, "production", str(uuid.uuid4())).write([(1, orjson.dumps([rec]))])
    out = subprocess.run([sys.executable, "-m", "nightowl.cli", "top", "outgoing", "--format",
                          "json", "--dsn", db], capture_output=True, text=True)
    got = json.loads(out.stdout)
    assert [sorted(g) for g in got] == [sorted(["target", "count", "errors", "p50_ms", "p95_ms",
                                                "p99_ms", "max_ms"])]
    assert got[0]["count"] == 1 and got[0]["target"] == "api.example.com [2xx]"
    assert math.isclose(got[0]["max_ms"], 12.0)
    # a bucket's midpoint above every duration seen (494.0 ms for 489.5 ms) is capped
    rec.update(host="slow.example.com", duration=489500)
    BatchWriter(db, "production", str(uuid.uuid4())).write([(2, orjson.dumps([rec]))])
    out = subprocess.run([sys.executable, "-m", "nightowl.cli", "top", "outgoing", "--format",
                          "json", "--dsn", db], capture_output=True, text=True)
    slow = [g for g in json.loads(out.stdout) if g["target"] == "slow.example.com [2xx]"][0]
    assert slow["p50_ms"] == slow["p95_ms"] == slow["p99_ms"] == slow["max_ms"] == 489.5
