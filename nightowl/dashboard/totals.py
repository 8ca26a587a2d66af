"""
A kind's series over hours or days (every group merged) from
``nightowl_dashboard_totals`` (schema 0031): one row per bucket instead of
one per group and bucket.  The answer is ``nightowl.rollups.query.series``'s
for the same arguments (tests/integration/test_dashboard_totals.py checks).

``series`` first fills the buckets of the range that are not in the table
(``fill``), then reads, in one REPEATABLE READ snapshot: a pending hour
(day) from the finer tier as query.series does (``read_partial``), a filled
bucket from the table, and a bucket still missing (the locks were busy)
from the tier itself.  A one-group series, and a minute step, go to
query.series unchanged: they read few rows.

``fill`` runs in its own transaction holding the deriver's lock
(``derive.DERIVE_LOCK``, tried: a deriver at work means "not now") and
``ROLLUP_LOCK`` shared (a rebuild holds it exclusively), so the rows merged
are not being replaced meanwhile; the table's triggers forget a bucket
whenever its tier rows change later.  Pending buckets are never filled.
"""

from datetime import datetime, timedelta, timezone

import psycopg2.extensions

from nightowl.rollups import derive, query
from nightowl.rollups.write import PENDING, ROLLUP_LOCK, TABLES

TABLE = "nightowl_dashboard_totals"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
TUNING = query.TUNING
QUANTILE = "nightowl_sketch_quantile(sk, {}, min_us, max_us)"

FILL = """
WITH wanted AS (
    SELECT b FROM generate_series(%(lo)s::timestamptz, %(hi)s::timestamptz - %(w)s::interval,
                                  %(w)s::interval) AS b
    WHERE NOT EXISTS (SELECT 1 FROM {totals} t WHERE t.tier = %(tier)s AND t.kind = %(kind)s
                      AND t.bucket = b AND t.all_envs)
      AND NOT EXISTS (SELECT 1 FROM {pending} p WHERE p.hour >= b AND p.hour < b + %(w)s::interval)
), per_env AS (
    SELECT r.bucket, r.environment, sum(r.count)::bigint AS count,
           sum(r.errors)::bigint AS errors, min(r.min_us) AS min_us, max(r.max_us) AS max_us,
           sum(r.sketch) AS sketch
    FROM wanted JOIN {tier_table} r ON r.kind = %(kind)s AND r.bucket = wanted.b
    GROUP BY r.bucket, r.environment
)
INSERT INTO {totals} (tier, kind, bucket, all_envs, environment, count, errors, min_us, max_us,
                      sketch)
SELECT %(tier)s, %(kind)s, bucket, false, environment, count, errors, min_us, max_us, sketch
FROM per_env
UNION ALL
SELECT %(tier)s, %(kind)s, wanted.b, true, '', coalesce(sum(count), 0), coalesce(sum(errors), 0),
       min(min_us), max(max_us), sum(sketch)
FROM wanted LEFT JOIN per_env ON per_env.bucket = wanted.b GROUP BY wanted.b
ON CONFLICT DO NOTHING
"""


_floor, _ceil, _ms = query.floor_time, query.ceil_time, query.to_ms


def fill(conn, tier, kind, lo, hi):
    """Merge the not yet kept, not pending buckets of [lo, hi) into the table;
    False when a deriver or a rebuild is at work (nothing done).  Commits."""
    cur = conn.cursor()
    cur.execute("SELECT pg_try_advisory_lock(%s)", (derive.DERIVE_LOCK,))
    got = cur.fetchone()[0]
    conn.commit()
    if not got:
        return False
    try:
        cur.execute("SELECT pg_try_advisory_xact_lock_shared(%s)", (ROLLUP_LOCK,))
        if not cur.fetchone()[0]:
            conn.rollback()
            return False
        cur.execute(TUNING + FILL.format(totals=TABLE, pending=PENDING, tier_table=TABLES[tier]),
                    {"lo": lo, "hi": hi, "w": "{} seconds".format(query.STEPS[tier]),
                     "tier": tier, "kind": kind})
        conn.commit()
        return True
    except BaseException:
        conn.rollback()
        raise
    finally:
        cur.execute("SELECT pg_advisory_unlock(%s)", (derive.DERIVE_LOCK,))
        conn.commit()


def series(conn, kind, since, until, environment=None, group_key=None, step=None):
    """As ``query.series`` (``until`` required)."""
    step = step or query.choose_step(since, until)
    if group_key is not None or step == "minute":
        return query.series(conn, kind, since, until=until, environment=environment,
                            group_key=group_key, step=step)
    width = query.STEPS[step]
    lo, hi = _floor(since, width), _ceil(until, width)
    began = (not conn.autocommit and conn.get_transaction_status()
             == psycopg2.extensions.TRANSACTION_STATUS_IDLE)
    if began:       # else: the caller's transaction, read as it is
        fill(conn, step, kind, lo, hi)
        conn.cursor().execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    try:
        return _read(conn, kind, step, width, lo, hi, environment)
    finally:
        if began:
            conn.rollback()


def _read(conn, kind, step, width, lo, hi, environment):
    segs = query.read_partial([(step, lo, hi)], *derive.hour_states(conn, lo, hi, environment))
    cur = conn.cursor()
    env_sql = " AND all_envs" if environment is None else " AND NOT all_envs AND environment = %s"
    env_args = [] if environment is None else [environment]
    kept = set()
    whole = [(s, e) for tier, s, e in segs if tier == step]
    for start, end in whole:
        cur.execute("SELECT bucket FROM " + TABLE + " WHERE tier = %s AND kind = %s AND "
                    "all_envs AND bucket >= %s AND bucket < %s", [step, kind, start, end])
        kept.update(b for (b,) in cur.fetchall())
    missing = []
    for start, end in whole:
        t = start
        while t < end:
            if t not in kept:
                missing.append(t)
            t += timedelta(seconds=width)
    parts, args = [], []
    if kept:
        parts.append("SELECT bucket, count, errors, min_us, max_us, sketch FROM " + TABLE
                     + " WHERE tier = %s AND kind = %s AND bucket = ANY(%s)" + env_sql)
        args += [step, kind, sorted(kept)] + env_args
    raw_env = "" if environment is None else " AND environment = %s"
    if missing:
        parts.append("SELECT bucket, count, errors, min_us, max_us, sketch FROM {} WHERE kind = %s "
                     "AND bucket = ANY(%s){}".format(TABLES[step], raw_env))
        args += [kind, missing] + env_args
    for tier, start, end in segs:
        if tier == step:
            continue
        parts.append("SELECT date_bin('{} seconds', bucket, timestamptz '1970-01-01 00:00:00+00') "
                     "AS bucket, count, errors, min_us, max_us, sketch FROM {} WHERE kind = %s "
                     "AND bucket >= %s AND bucket < %s{}".format(int(width), TABLES[tier],
                                                                  raw_env))
        args += [kind, start, end] + env_args
    got = {}
    if parts:
        cur.execute(TUNING + """
            SELECT bucket, count, errors, {}, {}, {}
            FROM (SELECT bucket, sum(count)::bigint AS count, sum(errors)::bigint AS errors,
                         min(min_us) AS min_us, max(max_us) AS max_us, sum(sketch) AS sk
                  FROM ({}) AS r GROUP BY bucket) AS g""".format(
            QUANTILE.format(0.5), QUANTILE.format(0.95), QUANTILE.format(0.99),
            " UNION ALL ".join(parts)), args)
        got = {b: (n, e, p50, p95, p99) for b, n, e, p50, p95, p99 in cur.fetchall()}
    out = []
    t = lo
    while t < hi:
        n, e, p50, p95, p99 = got.get(t) or (0, 0, None, None, None)
        out.append({"bucket": t, "count": int(n), "errors": int(e), "p50_ms": _ms(p50),
                    "p95_ms": _ms(p95), "p99_ms": _ms(p99)})
        t += timedelta(seconds=width)
    return out
