"""
Read the rollups: ``top`` (the slowest or busiest groups of a kind over a
range) and ``series`` (one point per minute / hour / day).  Synchronous,
on a psycopg2 connection; the dashboard runs them on its own thread pool.

A range is cut into tiers: whole UTC days from the day table, whole hours
from the hour table, the minutes at the edges from the minute table, so a
24-hour ``top`` merges ~23 hour rows and ~60 minute rows per group.  Where
the minutes (hours) at an edge are already pruned by tier retention, that
edge is read from whole hours (days) instead (``fall_back``).  The
range is widened to whole minutes; ``until=None`` is the database's
``now()``.  Percentiles come from merging sketches (``sum()`` of numeric)
and ``nightowl_sketch_quantile`` in SQL.

The drain writes minute rows only; the hour and day rows of an hour follow
within a minute (``nightowl.rollups.derive``).  Until then the hour is
pending, and ``read_pending`` reads it (and its day) from the finer tier, so
an answer is exact and current.  A call on an idle connection runs in one
REPEATABLE READ transaction (ended on return), so the pending hours and the
rows read come from the same snapshot.
"""

from datetime import datetime, timedelta, timezone

import psycopg2.extensions

from nightowl.rollups import derive
from nightowl.rollups.write import TABLES

ORDERS = {"p95": "p95_us", "p99": "p99_us", "count": "count", "sum": "sum_us",
          "errors": "errors"}
STEPS = {"minute": 60, "hour": 3600, "day": 86400}
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def floor_time(t, width):
    s = int((t - EPOCH).total_seconds())
    return EPOCH + timedelta(seconds=s - s % width)


def ceil_time(t, width):
    f = floor_time(t, width)
    return f if f == t else f + timedelta(seconds=width)


def db_now(conn):
    cur = conn.cursor()
    cur.execute("SELECT now()")
    return cur.fetchone()[0]


def segments(since, until):
    """[(tier, start, end)] covering the minutes that overlap [since, until)."""
    lo, hi = floor_time(since, 60), ceil_time(until, 60)
    if hi <= lo:
        return []
    h_lo, h_hi = ceil_time(lo, 3600), floor_time(hi, 3600)
    if h_hi <= h_lo:
        return [("minute", lo, hi)]
    out = [("minute", lo, h_lo), ("minute", h_hi, hi)]
    d_lo, d_hi = ceil_time(h_lo, 86400), floor_time(h_hi, 86400)
    if d_hi > d_lo:
        out += [("hour", h_lo, d_lo), ("hour", d_hi, h_hi), ("day", d_lo, d_hi)]
    else:
        out.append(("hour", h_lo, h_hi))
    return [s for s in out if s[2] > s[1]]


COARSER = (("minute", "hour", 3600), ("hour", "day", 86400))


def fall_back(segs, oldest):
    """``segs`` with every minute (hour) segment that starts before the oldest
    minute (hour) row still kept, ``oldest[tier]``, read from the whole hours
    (days) around it instead: the range widens at that edge, but nothing pruned
    is missed and nothing is counted twice (overlaps are merged per tier)."""
    segs = list(segs)
    for fine, coarse, width in COARSER:
        horizon = oldest.get(fine)
        out = []
        for tier, start, end in segs:
            if tier == fine and (horizon is None or start < horizon):
                out.append((coarse, floor_time(start, width), ceil_time(end, width)))
            else:
                out.append((tier, start, end))
        segs = out
    merged = []
    for tier, start, end in sorted(segs, key=lambda s: (s[0], s[1])):
        if merged and merged[-1][0] == tier and start <= merged[-1][2]:
            merged[-1] = (tier, merged[-1][1], max(end, merged[-1][2]))
        else:
            merged.append((tier, start, end))
    return _clip_finer(merged)


def _clip_finer(segs):
    """Cut out of every segment the parts a coarser tier's segment already
    covers: a minute edge widened into a whole day must not be read again
    from the minutes or hours inside that day."""
    rank = {"minute": 0, "hour": 1, "day": 2}
    out = []
    for tier, start, end in segs:
        pieces = [(start, end)]
        for other, o_start, o_end in segs:
            if rank[other] <= rank[tier]:
                continue
            cut = []
            for p_start, p_end in pieces:
                if o_end <= p_start or o_start >= p_end:
                    cut.append((p_start, p_end))
                    continue
                if p_start < o_start:
                    cut.append((p_start, o_start))
                if o_end < p_end:
                    cut.append((o_end, p_end))
            pieces = cut
        out.extend((tier, p_start, p_end) for p_start, p_end in pieces)
    return out


def read_pending(segs, hours):
    """``segs`` with every pending hour (``hours``, aware datetimes) read from
    its minutes: a day segment holding one becomes that day's hour segment,
    and a pending hour inside an hour segment becomes a minute segment."""
    hours = sorted(set(hours))
    if not hours:
        return list(segs)
    hour, day = timedelta(hours=1), timedelta(days=1)
    days = {floor_time(h, 86400) for h in hours}
    out = []
    for tier, start, end in segs:
        if tier != "day":
            out.append((tier, start, end))
            continue
        t = start
        while t < end:
            if t in days:
                out.append(("hour", t, t + day))
            else:
                out.append(("day", t, t + day))
            t += day
    segs, out = out, []
    for tier, start, end in segs:
        inside = [h for h in hours if start <= h < end] if tier == "hour" else []
        t = start
        for h in inside:
            if h > t:
                out.append(("hour", t, h))
            out.append(("minute", h, h + hour))
            t = h + hour
        if t < end:
            out.append((tier, t, end))
    return out


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
        sql = ("SELECT {} FROM {} WHERE kind = %s AND bucket >= %s AND bucket < %s".format(
            cols, TABLES[tier]))
        args += [kind, start, end]
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
#: so the default 4 MB work_mem spills 1,000 groups to disk
TUNING = "SET LOCAL jit = off; SET LOCAL work_mem = '64MB'; "


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
    segs = segments(since, until)
    if not segs:
        return []
    segs = fall_back(segs, oldest(conn, kind))
    segs = read_pending(segs, derive.pending(conn, min(s[1] for s in segs),
                                             max(s[2] for s in segs)))
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
        segs = read_pending(segs, derive.pending(conn, lo, hi))
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
