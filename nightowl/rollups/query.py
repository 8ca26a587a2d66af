"""
Read the rollups: ``top`` (the slowest or busiest groups of a kind over a
range) and ``series`` (one point per minute / hour / day).  Synchronous,
on a psycopg2 connection; the dashboard runs them on its own thread pool.

A range is cut into tiers (``nightowl.rollups.plan``): whole UTC days from
the day table, whole hours from the hour table, the minutes at the edges
from the minute table; where the minutes (hours) at an edge are already
pruned by tier retention, that edge is read from whole hours (days) instead.
The range is widened to whole minutes, and for ``top`` a range over 6 h to
a whole UTC hour at its start; ``until=None`` is the database's ``now()``.
Percentiles come from merging sketches (``sum()`` of numeric) and
``nightowl_sketch_quantile`` in SQL.

The drain writes minute rows only; the hour and day rows of an hour follow
within a minute (``nightowl.rollups.derive``), the current hour's from its
settled minutes.  An hour not derived since a batch wrote into it is read
(with its day) from the finer tier, and the current hour as its hour row
plus the minutes after the deriver's cut-off, so an answer is exact and
current.  A call on an idle connection runs in one REPEATABLE READ
transaction (ended on return), so the hours' states and the rows read come
from the same snapshot.  A 24 h ``top`` merges ~25 hour rows and 2-4 minute
rows per group.
"""

from datetime import timedelta

import psycopg2.extensions

from nightowl.rollups import derive
from nightowl.rollups.plan import (  # noqa: F401 (public here too)
    COARSER, EPOCH, ceil_time, fall_back, floor_time, plan, read_partial, read_pending, segments,
    use_span, where)
from nightowl.rollups.write import TABLES

ORDERS = {"p95": "p95_us", "p99": "p99_us", "count": "count", "sum": "sum_us",
          "errors": "errors"}
STEPS = {"minute": 60, "hour": 3600, "day": 86400}


def db_now(conn):
    cur = conn.cursor()
    cur.execute("SELECT now()")
    return cur.fetchone()[0]


def _begin(conn):
    """Begin a REPEATABLE READ transaction if ``conn`` is idle; True if begun
    (the caller ends it)."""
    if conn.autocommit or (conn.get_transaction_status()
                           != psycopg2.extensions.TRANSACTION_STATUS_IDLE):
        return False
    conn.cursor().execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    return True


def oldest(conn, kind):
    """The oldest minute and hour bucket kept for ``kind`` (None: none)."""
    cur = conn.cursor()
    cur.execute("SELECT (SELECT min(bucket) FROM {} WHERE kind = %s), "
                "(SELECT min(bucket) FROM {} WHERE kind = %s)".format(
                    TABLES["minute"], TABLES["hour"]), (kind, kind))
    minute, hour = cur.fetchone()
    return {"minute": minute, "hour": hour}


#: _rows_sql(group_key=LATERAL): the rows of the outer query's group ``t.group_key``
LATERAL = object()


def _rows_sql(kind, environment, segs, group_key=None,
              columns="bucket, group_key, count, errors, sum_us, min_us, max_us, sketch",
              width=None):
    """One UNION ALL branch per segment; ``width``: report a finer tier's
    bucket as the start of its ``width``-second step (``columns`` must then
    begin with ``bucket``)."""
    parts, args = [], []
    for tier, start, end in segs:
        cols = columns
        if width is not None and STEPS[tier] < width:
            cols = ("date_bin('{} seconds', bucket, timestamptz '1970-01-01 00:00:00+00') "
                    "AS bucket".format(int(width)) + columns[len("bucket"):])
        table, cond, cond_args = where(tier, start, end)
        sql = "SELECT {} FROM {} WHERE kind = %s AND {}".format(cols, table, cond)
        args += [kind] + cond_args
        if environment is not None:
            sql += " AND environment = %s"
            args.append(environment)
        if group_key is not None and group_key is LATERAL:
            sql += " AND group_key = t.group_key"
        elif group_key is not None:
            sql += " AND group_key = %s"
            args.append(group_key)
        parts.append(sql)
    return " UNION ALL ".join(parts), args


#: in the statement's own (implicit or caller's) transaction: JIT compiles these
#: aggregations for ~200 ms and saves nothing; merged sketches are ~2 KB each,
#: so the default 4 MB work_mem spills 1,000 groups to disk; a parallel plan
#: ships every partial sketch sum between processes and combines them again
#: (a 24 h top of 1,000 routes: 123 ms parallel, 76 ms serial, on a loaded
#: 2-core box), and its workers take the core the agent ingests on
TUNING = ("SET LOCAL jit = off; SET LOCAL work_mem = '64MB'; "
          "SET LOCAL max_parallel_workers_per_gather = 0; ")


def _q(q):
    """The quantile of the merged sketch ``sk``, its search narrowed by min/max."""
    return "nightowl_sketch_quantile(sk, {}, min_us, max_us)".format(q)


def to_ms(us):
    return None if us is None else float(us) / 1000.0


def top(conn, kind, since, until=None, environment=None, limit=20, order="p95"):
    """[{'group_key','target','count','errors','p50_ms','p95_ms','p99_ms','max_ms','sum_ms'}...]
    order: 'p95' | 'count' | 'sum' | 'p99' | 'errors'. since/until: aware datetimes."""
    if order not in ORDERS:
        raise ValueError("order must be one of {}".format(", ".join(sorted(ORDERS))))
    began = _begin(conn)
    try:
        return _top(conn, kind, since, until, environment, limit, order)
    finally:
        if began:
            conn.rollback()


def _top(conn, kind, since, until, environment, limit, order):
    until = until if until is not None else db_now(conn)
    segs = plan(conn, kind, since, until, environment)
    if not segs:
        return []
    rows_sql, args = _rows_sql(kind, environment, segs)
    # the label of the kept groups only, from their latest row (index lookups):
    # min(label) over every row cost more than merging the sketches
    label_sql, label_args = _rows_sql(kind, environment, segs, LATERAL,
                                      columns="bucket, label, attrs::text AS attrs")
    first = _q(0.95 if order == "p95" else 0.99) if order in ("p95", "p99") else "NULL::float8"
    sql = """
        SELECT t.group_key, lab.label, lab.attrs, count, errors, sum_us, max_us,
               {p50}, {p95}, {p99}
        FROM (SELECT group_key, count, errors, sum_us, min_us, max_us, sk, {first} AS q1
              FROM (SELECT group_key, sum(count)::bigint AS count, sum(errors)::bigint AS errors,
                           sum(sum_us) AS sum_us, min(min_us) AS min_us, max(max_us) AS max_us,
                           sum(sketch) AS sk
                    FROM ({rows}) AS r GROUP BY group_key) AS g
              ORDER BY {key} DESC NULLS LAST, group_key LIMIT %s) AS t
        LEFT JOIN LATERAL (SELECT label, attrs FROM ({labels}) AS l
                           ORDER BY bucket DESC LIMIT 1) AS lab ON true
        ORDER BY {key} DESC NULLS LAST, t.group_key""".format(
        rows=rows_sql, labels=label_sql, first=first, p50=_q(0.5),
        key={"p95": "q1", "p99": "q1"}.get(order, ORDERS[order]),
        p95="q1" if order == "p95" else _q(0.95),
        p99="q1" if order == "p99" else _q(0.99))
    cur = conn.cursor()
    cur.execute(TUNING + sql, args + [int(limit)] + label_args)
    out = []
    for (group_key, label, attrs, count, errors, sum_us, max_us, p50, p95, p99) in cur.fetchall():
        # a percentile is its sketch bucket's midpoint, up to 1 % above the
        # largest duration seen: never show one above the max
        p50, p95, p99 = (p if p is None or max_us is None else min(p, float(max_us))
                         for p in (p50, p95, p99))
        out.append({"group_key": group_key, "target": target_name(kind, label, attrs),
                    "count": int(count), "errors": int(errors), "p50_ms": to_ms(p50),
                    "p95_ms": to_ms(p95), "p99_ms": to_ms(p99), "max_ms": to_ms(max_us),
                    "sum_ms": to_ms(sum_us)})
    return out


def target_name(kind, label, attrs):
    import json
    if attrs and kind in ("request", "outgoing"):
        cls = json.loads(attrs).get("status_class")
        if cls:
            return "{} [{}]".format(label, cls)
    if attrs and kind == "job":
        a = json.loads(attrs)
        return "{} ({}, {})".format(label, a.get("queue") or "-", a.get("status") or "-")
    return label


def choose_step(since, until):
    span = (until - since).total_seconds()
    if span <= 6 * 3600:
        return "minute"
    if span <= 14 * 86400:
        return "hour"
    return "day"


def series(conn, kind, since, until=None, environment=None, group_key=None, step=None):
    """[{'bucket': datetime, 'count','errors','p50_ms','p95_ms','p99_ms'}...] one per step
    (step chosen from the range if None: minute <= 6 h, hour <= 14 d, day beyond)."""
    began = _begin(conn)
    try:
        return _series(conn, kind, since, until, environment, group_key, step)
    finally:
        if began:
            conn.rollback()


def _series(conn, kind, since, until, environment, group_key, step):
    until = until if until is not None else db_now(conn)
    if isinstance(step, timedelta):
        step = {60: "minute", 3600: "hour", 86400: "day"}[int(step.total_seconds())]
    step = step or choose_step(since, until)
    width = STEPS[step]
    lo, hi = floor_time(since, width), ceil_time(until, width)
    segs = [(step, lo, hi)]
    if step != "minute":
        segs = read_partial(segs, *derive.hour_states(conn, lo, hi, environment))
    rows_sql, args = _rows_sql(kind, environment, segs, group_key, width=width)
    cur = conn.cursor()
    cur.execute(TUNING + """
        SELECT bucket, count, errors, {}, {}, {}
        FROM (SELECT bucket, sum(count)::bigint AS count, sum(errors)::bigint AS errors,
                     min(min_us) AS min_us, max(max_us) AS max_us, sum(sketch) AS sk
              FROM ({}) AS r GROUP BY bucket) AS g ORDER BY bucket""".format(
        _q(0.5), _q(0.95), _q(0.99), rows_sql), args)
    got = {b: (n, e, p50, p95, p99) for b, n, e, p50, p95, p99 in cur.fetchall()}
    out = []
    t = lo
    while t < hi:
        n, e, p50, p95, p99 = got.get(t) or (0, 0, None, None, None)
        out.append({"bucket": t, "count": int(n), "errors": int(e), "p50_ms": to_ms(p50),
                    "p95_ms": to_ms(p95), "p99_ms": to_ms(p99)})
        t += timedelta(seconds=width)
    return out
