"""Rollups against a real PostgreSQL: exactly-once counts, SQL sketch functions,
concurrent writers, tiers, retention, rebuild, hostile labels, top/series."""

import json
import random
import subprocess
import sys
import threading
import uuid
from datetime import datetime, timezone

import orjson
import psycopg2
import pytest

from nightowl import migrate
from nightowl.bench import payloads
from nightowl.pgwrite import BatchWriter
from nightowl.rollups import derive, rebuild, sketch
from tests.conftest import fetch

NOW = 1714694500.0
T0 = datetime.fromtimestamp(1714694400 - 3600, timezone.utc)
T1 = datetime.fromtimestamp(1714694400 + 86400, timezone.utc)


@pytest.fixture
def db(fresh_pg_dsn):
    migrate.apply(fresh_pg_dsn)
    return fresh_pg_dsn


def writer(dsn, **kw):
    kw.setdefault("clock", lambda: NOW)
    return BatchWriter(dsn, kw.pop("environment", "production"),
                       kw.pop("buffer_id", str(uuid.uuid4())), **kw)


def raw_count(dsn, table, where="true"):
    return fetch(dsn, "SELECT count(*) FROM {} WHERE {}".format(table, where))[0][0]


def rollup_count(dsn, kind, tier="minute"):
    return fetch(dsn, "SELECT coalesce(sum(count), 0) FROM nightowl_rollups_{} WHERE kind = %s"
                 .format(tier), kind)[0][0]


def derive_tiers(dsn):
    """What the agent's DeriveService does every minute: hour and day rows from minutes."""
    conn = psycopg2.connect(dsn)
    try:
        return derive.run(conn)
    finally:
        conn.close()


def verify(dsn):
    conn = psycopg2.connect(dsn)
    try:
        return rebuild.verify(conn, T0, T1)
    finally:
        conn.close()


def test_sql_quantile_equals_python_quantile(db):
    rnd = random.Random(7)
    conn = psycopg2.connect(db)
    cur = conn.cursor()
    for trial in range(20):
        values = [int(rnd.paretovariate(1.2) * 1000) for _ in range(rnd.randint(1, 3000))]
        s = {}
        for v in values:
            sketch.add(s, v)
        enc = sketch.encode(s)
        for q in (0.0, 0.3, 0.5, 0.95, 0.99, 1.0):
            cur.execute("SELECT nightowl_sketch_quantile(%s::numeric, %s), "
                        "nightowl_sketch_count(%s::numeric)", (enc, q, enc))
            got, n = cur.fetchone()
            assert got == sketch.quantile(s, q)
            assert n == len(values)
            # the min/max hints narrow the search; wrong hints must not change the answer
            lo, hi = min(values), max(values)
            for hint in ((lo, hi), (None, hi), (lo, None), (lo * 3 + 5, hi // 3), (0, 10 ** 12)):
                cur.execute("SELECT nightowl_sketch_quantile(%s::numeric, %s, %s, %s)",
                            (enc, q) + hint)
                assert cur.fetchone()[0] == sketch.quantile(s, q), hint
        cur.execute("SELECT %s::numeric", (enc,))
        assert sketch.decode(cur.fetchone()[0]) == s
    cur.execute("SELECT nightowl_sketch_merge(x::numeric) FROM (VALUES (%s), (%s), (NULL)) v (x)",
                (sketch.encode({3: 2, 500: 1}), sketch.encode({3: 1, 7: 4})))
    assert sketch.decode(cur.fetchone()[0]) == {3: 3, 7: 4, 500: 1}
    cur.execute("SELECT nightowl_sketch_quantile(nightowl_sketch_merge(x), 0.5) "
                "FROM (SELECT NULL::numeric WHERE false) v (x)")
    assert cur.fetchone()[0] is None
    conn.close()


def test_rollup_counts_equal_raw_rows_and_a_ledger_retry_adds_nothing(db):
    rows = [(i + 1, p) for i, p in enumerate(payloads.fixture_mix(300, random.Random(3)))]
    buffer_id = str(uuid.uuid4())
    w = writer(db, buffer_id=buffer_id)
    w.write(rows[:200])
    # a crash between commit and mark: the same rows come again (plus new ones)
    w.write(rows[150:])
    w.close()
    assert rollup_count(db, "query") == raw_count(db, "nightowl_queries") > 0
    assert rollup_count(db, "request") == raw_count(db, "nightowl_requests") > 0
    assert rollup_count(db, "log") == raw_count(db, "nightowl_logs") > 0
    assert rollup_count(db, "exception") == raw_count(db, "nightowl_exceptions")
    assert rollup_count(db, "job") == raw_count(db, "nightowl_jobs")
    assert rollup_count(db, "query", "hour") == 0       # the drain writes minutes only
    assert derive_tiers(db) > 0
    for tier in ("hour", "day"):
        assert rollup_count(db, "query", tier) == rollup_count(db, "query")
    assert verify(db) == []


def test_a_bisected_batch_rolls_up_only_what_it_committed(db):
    # the batch's fold is built while decoding; a bisect (poison payload) or a
    # partial ledger hit folds its subsets again from their payload bytes
    rows = [(i + 1, p) for i, p in enumerate(payloads.fixture_mix(60, random.Random(5)))]
    # `v` is smallint: 70000 is refused by Postgres (22003), so the batch is bisected
    rows[17] = (18, orjson.dumps([{"t": "log", "timestamp": NOW, "v": 70000, "level": "info",
                                   "message": "poison"}]))
    result = writer(db).write(rows)
    assert [i for i, _ in result.quarantined] == [18]
    for kind, table in (("log", "nightowl_logs"), ("query", "nightowl_queries"),
                        ("request", "nightowl_requests")):
        assert rollup_count(db, kind) == raw_count(db, table) > 0, kind
    assert verify(db) == []


def test_tiers_equal_the_merge_of_their_minutes(db):
    rnd = random.Random(11)
    recs = []
    for i in range(3000):
        recs.append({"t": "query", "v": 1, "_group": "g%d" % (i % 5), "sql": "select %d" % (i % 5),
                     "connection": "pgsql", "duration": int(rnd.lognormvariate(7, 1.2)),
                     "timestamp": 1714694400 - 3000 + i * 2.1})
    w = writer(db)
    w.write([(i + 1, orjson.dumps(recs[i * 100:(i + 1) * 100])) for i in range(30)])
    w.close()
    derive_tiers(db)
    for tier, width in (("hour", "hour"), ("day", "day")):
        got = fetch(db, """
            SELECT t.group_key, t.count, m.count, t.sketch = m.sketch, t.min_us = m.min_us,
                   t.max_us = m.max_us, t.sum_us = m.sum_us
            FROM nightowl_rollups_{tier} t JOIN (
                SELECT date_trunc('{width}', bucket AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS b,
                       kind, environment, group_key, sum(count) AS count, sum(sketch) AS sketch,
                       min(min_us) AS min_us, max(max_us) AS max_us, sum(sum_us) AS sum_us
                FROM nightowl_rollups_minute GROUP BY 1, 2, 3, 4) m
            ON m.b = t.bucket AND m.kind = t.kind AND m.group_key = t.group_key""".format(
            tier=tier, width=width))
        assert got and all(r[1] == r[2] and r[3] and r[4] and r[5] and r[6] for r in got), got
    # percentiles from merged rows stay within 2 % of percentile_disc over the raw rows
    for q in (0.5, 0.95, 0.99):
        for tier in ("minute", "hour", "day"):
            exact, est = fetch(db, """
                SELECT (SELECT percentile_disc(%s) WITHIN GROUP (ORDER BY duration)
                        FROM nightowl_queries),
                       (SELECT nightowl_sketch_quantile(nightowl_sketch_merge(sketch), %s)
                        FROM nightowl_rollups_{})""".format(tier), q, q)[0]
            assert abs(est - exact) / exact <= 0.02, (tier, q, est, exact)


def test_concurrent_writers_on_contended_keys_never_deadlock(db):
    """Three writers (as three agents) upsert the same keys in different payload orders."""
    rnd = random.Random(5)
    groups = ["k%02d" % i for i in range(40)]

    def batch(seed, first):
        r = random.Random(seed)
        recs = [{"t": "query", "_group": r.choice(groups), "sql": "q", "duration": r.randint(1, 9999),
                 "timestamp": 1714694400 + r.randint(0, 600)} for _ in range(400)]
        r.shuffle(recs)
        return [(first + j, orjson.dumps(recs[j * 40:(j + 1) * 40])) for j in range(10)]

    errors = []
    written = [0]
    lock = threading.Lock()

    def agent(n):
        w = writer(db, buffer_id=str(uuid.uuid4()))
        try:
            for k in range(15):
                res = w.write(batch(n * 1000 + k + rnd.random(), 1 + 10 * k))
                with lock:
                    written[0] += res.records
        except Exception as e:  # noqa: BLE001 - the test reports it
            errors.append(repr(e))
        finally:
            w.close()

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert rollup_count(db, "query") == raw_count(db, "nightowl_queries") == written[0] == 3 * 15 * 400
    derive_tiers(db)
    assert rollup_count(db, "query", "day") == written[0]
    stats = fetch(db, "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
    assert stats[0][0] == 0


def test_rebuild_twice_gives_the_same_rows_and_matches_the_drain(db):
    rows = [(i + 1, p) for i, p in enumerate(payloads.fixture_mix(120, random.Random(9)))]
    writer(db).write(rows)
    derive_tiers(db)
    sql = ("SELECT bucket, kind, environment, group_key, label, attrs::text, count, errors, "
           "sum_us, min_us, max_us, sketch FROM nightowl_rollups_{} ORDER BY 1, 2, 3, 4")
    drained = {t: fetch(db, sql.format(t)) for t in ("minute", "hour", "day")}
    since, until = "2024-05-02T22:00:00", "2024-05-04T00:00:00"
    results = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-m", "nightowl.cli", "rollups", "rebuild",
                              "--since", since, "--until", until, "--dsn", db],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert "rebuilt 26 hours" in out.stdout
        results.append({t: fetch(db, sql.format(t)) for t in ("minute", "hour", "day")})
    assert results[0] == results[1]

    def counts(rows):
        return [(r[0], r[1], r[3], r[6], r[7], r[9], r[10], r[11]) for r in rows]
    for t in ("minute", "hour", "day"):
        assert counts(results[0][t]) == counts(drained[t])
    assert verify(db) == []


def test_array_text_parameters_round_trip_through_postgres(db):
    from nightowl.rollups.write import array_text
    texts = ["plain", "", " lead and trail ", 'quote " inside', "back\\slash\\", "{brace},comma",
             "NULL", "null", "'single'", "tab\tnew\nline", "\u00e9\u4e2d\U0001f600", None,
             '\\"', "x" * 5000]
    numbers = [0, -1, 2 ** 63 - 1, -2 ** 63, None]
    floats = [0.0, -2.5, 1e20, 123456789.125, None]
    conn = psycopg2.connect(db)
    cur = conn.cursor()
    cur.execute("SELECT %s::text[], %s::bigint[], %s::float8[], %s::numeric[]",
                (array_text(texts), array_text(numbers), array_text(floats),
                 array_text([sketch.encode({3: 2, 500: 1}), None, "0"])))
    got = cur.fetchone()
    conn.close()
    assert got[0] == texts and got[1] == numbers and got[2] == floats
    assert [sketch.decode(v) if v is not None else None for v in got[3]] == [{3: 2, 500: 1},
                                                                            None, {}]


def test_hostile_labels_are_stored_safely(db):
    huge = "SELECT '" + "x" * (1 << 20) + "'"
    recs = [
        {"t": "query", "_group": "huge", "sql": huge, "connection": "c", "duration": 5,
         "timestamp": 1714694400.5},
        {"t": "query", "_group": "nul\x00group", "sql": "select\x00 1", "duration": 6,
         "timestamp": 1714694400.5},
        {"t": "request", "_group": "", "route_path": "/\x00\ud800bad\t\n", "method": "GET",
         "status_code": 500, "duration": 7, "timestamp": 1714694400.5},
        {"t": "job-attempt", "name": "J" * 5000, "queue": "q\x00", "status": "failed",
         "duration": 1, "timestamp": 1714694400.5},
    ]
    payload = orjson.dumps(recs, option=orjson.OPT_NON_STR_KEYS) if False else \
        json.dumps(recs).encode("utf-8") + b""
    bad_utf8 = b'[{"t":"log","level":"err\xff\xfeor","message":"m","timestamp":1714694400.5}]'
    res = writer(db).write([(1, payload), (2, bad_utf8)])
    assert res.quarantined == []
    rows = fetch(db, "SELECT kind, group_key, label FROM nightowl_rollups_minute ORDER BY 1, 2")
    for kind, group_key, label in rows:
        assert "\x00" not in label and "\x00" not in group_key
        assert len(label) <= 1024 and len(group_key) <= 256
    labels = {k: l for k, _, l in rows}
    assert labels["query"].startswith("SELECT 'xxx") or labels["query"] == "select 1"
    assert any(l == "select 1" for k, _, l in rows if k == "query")
    assert any(l.startswith("SELECT 'xxx") and len(l) == 1024 for k, _, l in rows if k == "query")
    assert any(k == "log" and "\ufffd" in l for k, _, l in rows)
    assert verify(db) == []


def test_derive_replaces_and_a_concurrent_batch_stays_pending(db):
    recs = [{"t": "query", "_group": "g", "sql": "q", "duration": 1000 + i,
             "timestamp": 1714694400 + i * 10} for i in range(100)]
    w = writer(db)
    w.write([(1, orjson.dumps(recs))])
    assert derive_tiers(db) == 1 and derive_tiers(db) == 0
    before = fetch(db, "SELECT count, sketch FROM nightowl_rollups_hour")
    # a batch in flight while the deriver runs: its hour is derived on the next run
    conn = psycopg2.connect(db)
    cur = conn.cursor()
    cur.execute("INSERT INTO nightowl_rollups_pending (environment, hour) VALUES "
                "('production', to_timestamp(1714694400))")
    assert derive_tiers(db) == 0        # uncommitted: not seen, not deleted
    conn.commit()
    assert derive_tiers(db) == 1        # re-derived as a replacement: nothing added
    assert fetch(db, "SELECT count, sketch FROM nightowl_rollups_hour") == before
    w.write([(2, orjson.dumps(recs))])
    derive_tiers(db)
    assert fetch(db, "SELECT count FROM nightowl_rollups_hour") == [(200,)]
    assert fetch(db, "SELECT count FROM nightowl_rollups_day") == [(200,)]
    w.close()
    conn.close()
    assert verify(db) == []


def test_retention_per_tier_uses_the_database_clock(db):
    conn = psycopg2.connect(db)
    cur = conn.cursor()
    for tier, ages in (("minute", (6, 8)), ("hour", (89, 91)), ("day", (729, 731))):
        for age in ages:
            cur.execute("INSERT INTO nightowl_rollups_{} (bucket, kind, environment, group_key, count) "
                        "VALUES (now() - make_interval(days => %s), 'log', 'p', %s, 1)".format(tier),
                        (age, str(age)))
    conn.commit()
    deleted = rebuild.prune(conn, 7, 90, 730)
    assert deleted == {"nightowl_rollups_minute": 1, "nightowl_rollups_hour": 1,
                       "nightowl_rollups_day": 1}
    for tier, kept in (("minute", "6"), ("hour", "89"), ("day", "729")):
        assert fetch(db, "SELECT group_key FROM nightowl_rollups_{}".format(tier)) == [(kept,)]
    conn.close()
