"""
The dashboard's reads of the rollups: ``top`` and ``series``, the same
answers as ``nightowl.rollups.query.top`` / ``series`` (the same tiers,
pruned edges, pending hours and snapshot: that module's ``segments``,
``fall_back`` and ``read_pending``), with the percentiles taken here.

Why not call query.py: there each percentile is one call of the PL/pgSQL
``nightowl_sketch_quantile`` (~0.3 ms on a 7-day sketch), three per point
and per group, so a 7-day series of 168 hours spent ~170 of its ~210 ms
there, and a ``top`` by p95 over 200 query groups ~200 ms.  Here Postgres
only merges the sketches (``sum()``, C speed) and returns each merged sketch
as text; one pass over its 12-digit fields gives all three percentiles
(``quantiles``: the bucket of rank max(1, ceil(q n)), the same float as the
SQL function and ``sketch.quantile``; tests/test_dashboard_rollreads.py
checks both agree).
"""

import json
import math
from datetime import datetime, timedelta, timezone

import psycopg2.extensions

from nightowl.rollups import derive, sketch
from nightowl.rollups.query import ORDERS, STEPS, choose_step, fall_back, read_pending, segments
from nightowl.rollups.write import TABLES

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
QS = (0.5, 0.95, 0.99)
TUNING = "SET LOCAL jit = off; SET LOCAL work_mem = '64MB'; "
_W = sketch.WIDTH


def quantiles(text, qs=QS):
    """The ``qs`` quantiles (microseconds) of a sketch given as numeric text,
    [None, ...] when it is empty."""
    if not text:
        return [None] * len(qs)
    text = text.split(".", 1)[0]
    low = len(text) - len(text.rstrip("0"))
    end = len(text) - (low - low % _W)
    i = (low - low % _W) // _W          # whole empty fields at the low end
    fields = []
    n = 0
    while end > 0:
        start = end - _W if end > _W else 0
        c = int(text[start:end])
        if c:
            fields.append((i, c))
            n += c
        i += 1
        end = start
    if n <= 0:
        return [None] * len(qs)
    out = []
    for q in qs:
        rank = max(1, math.ceil(min(1.0, max(0.0, float(q))) * float(n)))
        acc = 0
        for i, c in fields:
            acc += c
            if acc >= rank:
                break
        out.append(sketch.estimate(i))
    return out


def _floor(t, width):
    s = int((t - EPOCH).total_seconds())
    return EPOCH + timedelta(seconds=s - s % width)


def _ceil(t, width):
    f = _floor(t, width)
    return f if f == t else f + timedelta(seconds=width)


def _begin(conn):
    """REPEATABLE READ if ``conn`` is idle (True: the caller rolls back)."""
    if conn.autocommit or (conn.get_transaction_status()
                           != psycopg2.extensions.TRANSACTION_STATUS_IDLE):
        return False
    conn.cursor().execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    return True


def _rows_sql(kind, environment, segs, columns, group_sql="", group_args=(), width=None):
    parts, args = [], []
    for tier, start, end in segs:
        bucket = "bucket"
        if width is not None and STEPS[tier] < width:
            bucket = ("date_bin('{} seconds', bucket, timestamptz '1970-01-01 00:00:00+00') "
                      "AS bucket".format(int(width)))
        sql = "SELECT {}, {} FROM {} WHERE kind = %s AND bucket >= %s AND bucket < %s".format(
            bucket, columns, TABLES[tier])
        args += [kind, start, end]
        if environment is not None:
            sql += " AND environment = %s"
            args.append(environment)
        sql += group_sql
        args += list(group_args)
        parts.append(sql)
    return " UNION ALL ".join(parts), args


def _ms(us):
    return None if us is None else float(us) / 1000.0


def _now(conn):
    cur = conn.cursor()
    cur.execute("SELECT now()")
    return cur.fetchone()[0]


def series(conn, kind, since, until=None, environment=None, group_key=None, step=None):
    """As ``query.series``: one point per step of [since, until)."""
    began = _begin(conn)
    try:
        until = until if until is not None else _now(conn)
        step = step or choose_step(since, until)
        width = STEPS[step]
        lo, hi = _floor(since, width), _ceil(until, width)
        segs = [(step, lo, hi)]
        if step != "minute":
            segs = read_pending(segs, derive.pending(conn, lo, hi))
        group_sql, group_args = ("", []) if group_key is None else (" AND group_key = %s",
                                                                   [group_key])
        rows_sql, args = _rows_sql(kind, environment, segs, "count, errors, sketch",
                                   group_sql, group_args, width)
        cur = conn.cursor()
        cur.execute(TUNING + "SELECT bucket, sum(count)::bigint, sum(errors)::bigint, "
                    "sum(sketch)::text FROM ({}) AS r GROUP BY bucket".format(rows_sql), args)
        got = {b: (n, e, sk) for b, n, e, sk in cur.fetchall()}
    finally:
        if began:
            conn.rollback()
    out = []
    t = lo
    while t < hi:
        n, e, sk = got.get(t) or (0, 0, None)
        p50, p95, p99 = quantiles(sk)
        out.append({"bucket": t, "count": int(n), "errors": int(e), "p50_ms": _ms(p50),
                    "p95_ms": _ms(p95), "p99_ms": _ms(p99)})
        t += timedelta(seconds=width)
    return out


def _oldest(conn, kind):
    cur = conn.cursor()
    cur.execute("SELECT (SELECT min(bucket) FROM {} WHERE kind = %s), "
                "(SELECT min(bucket) FROM {} WHERE kind = %s)".format(
                    TABLES["minute"], TABLES["hour"]), (kind, kind))
    minute, hour = cur.fetchone()
    return {"minute": minute, "hour": hour}


def top(conn, kind, since, until=None, environment=None, limit=20, order="p95"):
    """As ``query.top``: the ``limit`` groups of a kind first by ``order``."""
    if order not in ORDERS:
        raise ValueError("order must be one of {}".format(", ".join(sorted(ORDERS))))
    began = _begin(conn)
    try:
        return _top(conn, kind, since, until, environment, int(limit), order)
    finally:
        if began:
            conn.rollback()


def _top(conn, kind, since, until, environment, limit, order):
    until = until if until is not None else _now(conn)
    segs = segments(since, until)
    if not segs:
        return []
    segs = fall_back(segs, _oldest(conn, kind))
    segs = read_pending(segs, derive.pending(conn, min(s[1] for s in segs),
                                             max(s[2] for s in segs)))
    rows_sql, args = _rows_sql(kind, environment, segs,
                               "group_key, count, errors, sum_us, max_us, sketch")
    by_sketch = order in ("p95", "p99")
    sql = ("SELECT group_key, sum(count)::bigint AS count, sum(errors)::bigint AS errors, "
           "sum(sum_us) AS sum_us, max(max_us) AS max_us, sum(sketch)::text AS sk "
           "FROM ({}) AS r GROUP BY group_key".format(rows_sql))
    if not by_sketch:
        sql += " ORDER BY {} DESC NULLS LAST, group_key LIMIT %s".format(ORDERS[order])
        args = args + [limit]
    cur = conn.cursor()
    cur.execute(TUNING + sql, args)
    rows = []
    for group_key, count, errors, sum_us, max_us, sk in cur.fetchall():
        p50, p95, p99 = quantiles(sk)
        rows.append({"group_key": group_key, "count": int(count), "errors": int(errors),
                     "p50_ms": _ms(p50), "p95_ms": _ms(p95), "p99_ms": _ms(p99),
                     "max_ms": _ms(max_us), "sum_ms": _ms(sum_us)})
    if by_sketch:
        field = order + "_ms"
        rows.sort(key=lambda r: r["group_key"])
        rows.sort(key=lambda r: (r[field] is not None, r[field] or 0.0), reverse=True)
        rows = rows[:limit]
    labels = _labels(conn, kind, environment, segs, [r["group_key"] for r in rows])
    for r in rows:
        label, attrs = labels.get(r["group_key"], (None, None))
        r["target"] = _target(kind, label, attrs)
    return rows


def _labels(conn, kind, environment, segs, keys):
    """group key -> (label, attrs text) of its latest row in the range."""
    if not keys:
        return {}
    rows_sql, args = _rows_sql(kind, environment, segs, "group_key, label, attrs::text AS attrs",
                               " AND group_key = ANY(%s)", [keys])
    cur = conn.cursor()
    cur.execute("SELECT DISTINCT ON (group_key) group_key, label, attrs FROM ({}) AS l "
                "ORDER BY group_key, bucket DESC".format(rows_sql), args)
    return {g: (label, attrs) for g, label, attrs in cur.fetchall()}


def _target(kind, label, attrs):
    if attrs and kind in ("request", "outgoing"):
        cls = json.loads(attrs).get("status_class")
        if cls:
            return "{} [{}]".format(label, cls)
    if attrs and kind == "job":
        a = json.loads(attrs)
        return "{} ({}, {})".format(label, a.get("queue") or "-", a.get("status") or "-")
    return label
