"""
PROVISIONAL (branch i13): ``top()`` and ``series()`` of CONTRACTS.md computed
from the RAW tables with ``percentile_disc``, so that the dashboard can be
built and tested before the rollup tables exist.  Branch i11 owns the real
module (reading ``nightowl_rollups_minute/hour/day``); at merge this file is
replaced by it, with the same signatures and return shapes.

Timings measured with this module are timings of raw-table scans, not of
rollups.

Group keys (opaque to callers, stable within this module):
  request         the SDK's ``_group`` | method | status class ("2xx")
  outgoing        the host
  every other     the SDK's ``_group`` (for exceptions: the issue fingerprint)
"""

import datetime

#: kind -> (table, group key SQL, label SQL, error SQL, extra WHERE or None).
#: Fixed strings only: nothing here comes from a caller.
KINDS = {
    "request": ("nightowl_requests",
                "coalesce(group_hash, '') || '|' || coalesce(method, '') || '|' || "
                "coalesce((status_code / 100)::text || 'xx', '?')",
                "coalesce(route_path, url)", "status_code >= 500", None),
    "query": ("nightowl_queries", "coalesce(group_hash, '')", "left(sql_query, 300)",
              "false", None),
    "job": ("nightowl_jobs", "coalesce(group_hash, job_class, '')", "job_class",
            "status = 'failed'", "record_type = 'job-attempt'"),
    "outgoing": ("nightowl_outgoing_requests", "coalesce(host, '')", "host",
                 "status_code >= 500 OR status_code IS NULL", None),
    "cache": ("nightowl_cache_events", "coalesce(group_hash, key, '')", "key",
              "event_type LIKE '%%failure'", None),
    "command": ("nightowl_commands", "coalesce(group_hash, name, '')", "coalesce(name, command)",
                "exit_code <> 0", None),
    "scheduled_task": ("nightowl_scheduled_tasks", "coalesce(group_hash, command, '')",
                       "command", "status = 'failed'", None),
    "mail": ("nightowl_mail", "coalesce(group_hash, mailable, '')", "mailable", "failed", None),
    "notification": ("nightowl_notifications", "coalesce(group_hash, notification, '')",
                     "notification", "failed", None),
    "exception": ("nightowl_exceptions", "fingerprint", "class", "NOT coalesce(handled, false)",
                  None),
    "log": ("nightowl_logs", "coalesce(level, '')", "level",
            "level IN ('error', 'critical', 'alert', 'emergency')", None),
    "user_request": ("nightowl_requests", "coalesce(user_id, '')", "user_id",
                     "status_code >= 500", "user_id IS NOT NULL"),
}

#: kinds whose raw table has no duration column
_NO_DURATION = ("exception", "log")

_ORDERS = {"p95": "q[2] DESC", "p99": "q[3] DESC", "count": "count DESC",
           "sum": "sum_us DESC", "errors": "errors DESC"}

_STEPS = ("minute", "hour", "day")


def _utcnow():
    return datetime.datetime.now(datetime.timezone.utc)


def _where(kind, since, until, environment, group_key):
    table, group_sql, _label, _err, extra = KINDS[kind]
    clauses = ["created_at >= %s", "created_at < %s"]
    args = [since, until]
    if environment is not None:
        clauses.append("environment = %s")
        args.append(environment)
    if extra:
        clauses.append(extra)
    if group_key is not None:
        clauses.append("({}) = %s".format(group_sql))
        args.append(group_key)
    return table, " AND ".join(clauses), args


def _duration(kind):
    return "NULL::bigint" if kind in _NO_DURATION else "duration"


def _ms(us):
    return None if us is None else float(us) / 1000.0


def top(conn, kind, since, until=None, environment=None, limit=20, order="p95"):
    """[{'group_key','target','count','errors','p50_ms','p95_ms','p99_ms','max_ms','sum_ms'}...]
    order: 'p95' | 'count' | 'sum' | 'p99' | 'errors'. since/until: aware datetimes."""
    if kind not in KINDS:
        raise ValueError("unknown kind {!r}".format(kind))
    if order not in _ORDERS:
        raise ValueError("unknown order {!r}".format(order))
    until = until or _utcnow()
    table, where, args = _where(kind, since, until, environment, None)
    _t, group_sql, label_sql, err_sql, _x = KINDS[kind]
    sql = ("SELECT g, label, count, errors, q[1], q[2], q[3], mx, sum_us FROM ("
           " SELECT g, min(label) AS label, count(*) AS count,"
           " count(*) FILTER (WHERE err) AS errors,"
           " percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY d) AS q,"
           " max(d) AS mx, sum(d)::float8 AS sum_us FROM ("
           "  SELECT {g} AS g, {l} AS label, coalesce({e}, false) AS err,"
           "  coalesce({d}, 0) AS d FROM {t} WHERE {w}) s"
           " GROUP BY g) a").format(g=group_sql, l=label_sql, e=err_sql, t=table, w=where,
                                    d=_duration(kind))
    sql += " ORDER BY {}, g LIMIT %s".format(_ORDERS[order])
    cur = conn.cursor()
    cur.execute(sql, args + [int(limit)])
    return [{"group_key": g, "target": label, "count": n, "errors": errors,
             "p50_ms": _ms(p50), "p95_ms": _ms(p95), "p99_ms": _ms(p99),
             "max_ms": _ms(mx), "sum_ms": _ms(total)}
            for (g, label, n, errors, p50, p95, p99, mx, total) in cur.fetchall()]


def choose_step(since, until):
    """minute <= 6 h, hour <= 14 d, day beyond."""
    span = until - since
    if span <= datetime.timedelta(hours=6):
        return "minute"
    if span <= datetime.timedelta(days=14):
        return "hour"
    return "day"


def series(conn, kind, since, until=None, environment=None, group_key=None, step=None):
    """[{'bucket': datetime, 'count','errors','p50_ms','p95_ms','p99_ms'}...] one per step
    (step chosen from the range if None: minute <= 6 h, hour <= 14 d, day beyond)."""
    if kind not in KINDS:
        raise ValueError("unknown kind {!r}".format(kind))
    until = until or _utcnow()
    step = step or choose_step(since, until)
    if step not in _STEPS:
        raise ValueError("unknown step {!r}".format(step))
    table, where, args = _where(kind, since, until, environment, group_key)
    err_sql = KINDS[kind][3]
    sql = ("WITH b AS (SELECT generate_series(date_trunc('{s}', %s::timestamptz), %s::timestamptz, "
           "interval '1 {s}') AS bucket), "
           "r AS (SELECT date_trunc('{s}', created_at) AS bucket, count(*) AS n, "
           "count(*) FILTER (WHERE coalesce({e}, false)) AS errors, "
           "percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY coalesce({d}, 0)) AS q "
           "FROM {t} WHERE {w} GROUP BY 1) "
           "SELECT b.bucket, coalesce(r.n, 0), coalesce(r.errors, 0), r.q[1], r.q[2], r.q[3] "
           "FROM b LEFT JOIN r USING (bucket) WHERE b.bucket < %s ORDER BY 1").format(
               s=step, e=err_sql, t=table, w=where, d=_duration(kind))
    cur = conn.cursor()
    cur.execute(sql, [since, until] + args + [until])
    return [{"bucket": bucket, "count": n, "errors": errors,
             "p50_ms": _ms(p50), "p95_ms": _ms(p95), "p99_ms": _ms(p99)}
            for (bucket, n, errors, p50, p95, p99) in cur.fetchall()]
