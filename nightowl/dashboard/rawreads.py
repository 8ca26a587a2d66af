"""
The dashboard's only reads of raw telemetry rows, each bounded whatever the
range and the table's size:

- ``samples``: the slowest of one group's newest ``SAMPLE_SCAN`` rows in the
  range, found through an index that leads with the group's column and ends
  with ``created_at`` (schema 0001 and 0030), so the scan stops after
  ``SAMPLE_SCAN`` matching rows.  Cache events have no such index (it would
  cost the drain more than the page is worth): their samples come from the
  last ``SAMPLE_SPAN['cache']`` of the range only.
- ``n_plus_one``: the newest ``N_PLUS_ONE_ROWS`` queries of at most the last
  ``N_PLUS_ONE_SPAN`` of the range (primary key order, newest first),
  grouped by execution and query group.
- ``trace``: one trace id's rows of every table, through the trace_id and
  execution_id indexes, at most ``TRACE_ROWS`` per table, within
  ``TRACE_WINDOW`` of the trace's time (a link's ``at``, or its root row's):
  planning the statement over every daily partition of eleven tables cost
  more than running it.

A group key is a rollup group key (``nightowl.rollups.aggregate``); its
parts are turned back into the raw columns they came from.  All SQL is
parameterised; only fixed text of this module is formatted into it.
"""

import datetime

N_PLUS_ONE_SPAN = datetime.timedelta(hours=1)
N_PLUS_ONE_ROWS = 50000
N_PLUS_ONE_MIN = 5
SAMPLES = 20
SAMPLE_SCAN = 1000
TRACE_ROWS = 500
#: kind -> the most recent part of the range its samples come from (default: all of it)
SAMPLE_SPAN = {"cache": datetime.timedelta(hours=1)}


def _env(environment):
    if environment is None:
        return "", []
    return " AND environment = %s", [environment]


def rows(conn, sql, args):
    cur = conn.cursor()
    cur.execute(sql, args)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def _eq(column, value):
    """column = value, where the rollups fold NULL and '' together."""
    if value:
        return "{} = %s".format(column), [value]
    return "coalesce({}, '') = ''".format(column), []


def _status_class(column, cls):
    if len(cls) == 3 and cls.endswith("xx") and cls[0].isdigit():
        return " AND {c} >= %s AND {c} < %s".format(c=column), [int(cls[0]) * 100,
                                                                 int(cls[0]) * 100 + 100]
    if cls == "other":
        return " AND ({c} IS NULL OR {c} < 100 OR {c} > 599)".format(c=column), []
    return None, None


def _request(key):
    parts = key.split("|")
    if len(parts) < 3:
        return None
    sql, args = "group_hash = %s", [parts[0]]
    cls_sql, cls_args = _status_class("status_code", parts[-1])
    if cls_sql is None:
        return None
    if len(parts) == 3 and parts[1]:      # one method (a route's list is not on the row)
        sql += " AND upper(method) = %s"
        args.append(parts[1])
    return sql + cls_sql, args + cls_args


def _job(key):
    parts = key.rsplit("|", 2)
    if len(parts) != 3:
        return None
    name, queue, status = parts
    sql, args = _eq("job_class", name)
    q_sql, q_args = _eq("queue", queue)
    # as aggregate._job: a queued-job record without a status is 'queued'
    return (sql + " AND " + q_sql + " AND coalesce(nullif(status, ''), CASE WHEN record_type "
            "= 'queued-job' THEN 'queued' ELSE '' END) = %s", args + q_args + [status])


def _outgoing(key):
    parts = key.rsplit("|", 1)
    if len(parts) != 2:
        return None
    sql, args = _eq("host", parts[0])
    cls_sql, cls_args = _status_class("status_code", parts[1])
    return None if cls_sql is None else (sql + cls_sql, args + cls_args)


def _cache(key):
    parts = key.rsplit("|", 1)
    if len(parts) != 2:
        return None
    sql, args = _eq("store", parts[0])
    t_sql, t_args = _eq("event_type", parts[1])
    return sql + " AND " + t_sql, args + t_args


def _group_hash(key):
    return "group_hash = %s", [key]


#: kind -> (table, sample label SQL, sample status SQL, trace id SQL, key -> (where, args))
SAMPLE_SQL = {
    "request": ("nightowl_requests", "coalesce(method, '') || ' ' || coalesce(url, route_path, '')",
                "status_code::text", "trace_id", _request),
    "query": ("nightowl_queries", "left(sql_query, 300)", "connection",
              "coalesce(execution_id, trace_id)", _group_hash),
    "job": ("nightowl_jobs", "job_class", "status", "coalesce(attempt_id, trace_id)", _job),
    "outgoing": ("nightowl_outgoing_requests", "coalesce(method, '') || ' ' || coalesce(url, '')",
                 "status_code::text", "coalesce(execution_id, trace_id)", _outgoing),
    "cache": ("nightowl_cache_events", "coalesce(event_type, '') || ' ' || coalesce(key, '')",
              "store", "coalesce(execution_id, trace_id)", _cache),
    "command": ("nightowl_commands", "coalesce(command, name)", "exit_code::text", "trace_id",
                _group_hash),
    "scheduled_task": ("nightowl_scheduled_tasks", "command", "status", "trace_id",
                       _group_hash),
}


def samples_since(kind, since, until):
    span = SAMPLE_SPAN.get(kind)
    return since if span is None else max(since, until - span)


def _days_back(since, until):
    """[since, until) cut at UTC midnights (the daily partitions' bounds), newest first."""
    out = []
    end = until
    while end > since:
        start = max(since, (end - datetime.timedelta(microseconds=1)).replace(
            hour=0, minute=0, second=0, microsecond=0))
        out.append((start, end))
        end = start
    return out


def samples(conn, kind, since, until, environment, key, limit=SAMPLES, scan=SAMPLE_SCAN):
    """The slowest of the newest ``scan`` rows of one group in [since, until):
    one statement per UTC day, newest first, each planned against its day's
    partition only, until ``scan`` rows are in hand (one statement over the
    whole range let the planner sort every row of the group first)."""
    table, label, status, trace_sql, where = SAMPLE_SQL[kind]
    found = where(key or "")
    if found is None:
        return []
    key_sql, key_args = found
    since = samples_since(kind, since, until)
    env_sql, env_args = _env(environment)
    sql = ("SELECT created_at, {l} AS label, {s} AS status, duration, {t} AS trace FROM {tb} "
           "WHERE {k} AND created_at >= %s AND created_at < %s{e} ORDER BY created_at DESC "
           "LIMIT %s".format(l=label, s=status, t=trace_sql, tb=table, k=key_sql, e=env_sql))
    got = []
    for start, end in _days_back(since, until):
        got += rows(conn, sql, key_args + [start, end] + env_args + [int(scan) - len(got)])
        if len(got) >= scan:
            break
    got.sort(key=lambda r: r["created_at"], reverse=True)
    got.sort(key=lambda r: (r["duration"] is not None, r["duration"] or 0), reverse=True)
    return got[:int(limit)]


def n_plus_one_since(since, until):
    return max(since, until - N_PLUS_ONE_SPAN)


def n_plus_one(conn, since, until, environment, minimum=N_PLUS_ONE_MIN, limit=20,
               scan=N_PLUS_ONE_ROWS):
    """
    Query groups run ``minimum`` or more times within one execution (request,
    job, ...), among the newest ``scan`` queries since ``n_plus_one_since``.
    """
    env_sql, env_args = _env(environment)
    return rows(conn, "SELECT group_hash, min(sql) AS sql, count(*) AS executions, "
                "max(n) AS max_per_execution, sum(n)::bigint AS total, sum(d)::float8 AS sum_us, "
                "(array_agg(execution ORDER BY n DESC))[1] AS sample, "
                "(array_agg(at ORDER BY n DESC))[1] AS sample_at FROM ("
                " SELECT execution, group_hash, min(left(sql_query, 300)) AS sql, count(*) AS n, "
                " sum(duration) AS d, max(created_at) AS at FROM (SELECT created_at, "
                " coalesce(execution_id, trace_id) AS execution, group_hash, sql_query, "
                " duration FROM nightowl_queries WHERE created_at >= %s "
                " AND created_at < %s" + env_sql + " ORDER BY id DESC LIMIT %s) AS recent "
                " WHERE execution IS NOT NULL GROUP BY 1, 2 HAVING count(*) >= %s) per "
                "GROUP BY group_hash ORDER BY max(n) DESC, sum(n) DESC LIMIT %s",
                [n_plus_one_since(since, until), until] + env_args
                + [int(scan), int(minimum), int(limit)])


#: (kind, table, label SQL, detail SQL, extra id column or None)
TRACE_TABLES = (
    ("request", "nightowl_requests", "coalesce(method, '') || ' ' || coalesce(url, '')",
     "status_code::text", None),
    ("command", "nightowl_commands", "coalesce(command, name)", "'exit ' || exit_code", None),
    ("scheduled task", "nightowl_scheduled_tasks", "command", "status", None),
    ("job", "nightowl_jobs", "job_class", "record_type || ' ' || coalesce(status, '')",
     "attempt_id"),
    ("query", "nightowl_queries", "sql_query",
     "coalesce(connection, '') || ' ' || coalesce(file || ':' || line, '')", "execution_id"),
    ("cache", "nightowl_cache_events", "coalesce(event_type, '') || ' ' || coalesce(key, '')",
     "store", "execution_id"),
    ("outgoing", "nightowl_outgoing_requests",
     "coalesce(method, '') || ' ' || coalesce(url, '')", "status_code::text", "execution_id"),
    ("mail", "nightowl_mail", "coalesce(mailable, '') || ' ' || coalesce(subject, '')",
     "mailer", "execution_id"),
    ("notification", "nightowl_notifications", "notification", "channel", "execution_id"),
    ("log", "nightowl_logs", "message", "level", "execution_id"),
    ("exception", "nightowl_exceptions", "coalesce(class, '') || ': ' || coalesce(message, '')",
     "coalesce(file || ':' || line, '')", "execution_id"),
)


#: a trace's rows are looked for within this much of its time hint (daily partitions
#: outside it are pruned when the statement is planned)
TRACE_WINDOW = datetime.timedelta(days=1)
#: the tables whose row starts a trace, to find its time when a link gave none
TRACE_ROOTS = (("nightowl_requests", "trace_id"), ("nightowl_jobs", "attempt_id"),
               ("nightowl_commands", "trace_id"), ("nightowl_scheduled_tasks", "trace_id"))


def trace_time(conn, trace_id):
    """When the request, job attempt, command or task of ``trace_id`` ran, or None."""
    for table, column in TRACE_ROOTS:       # most traces are requests: usually one statement
        got = rows(conn, "SELECT created_at AS at FROM {} WHERE {} = %s LIMIT 1".format(
            table, column), [trace_id])
        if got:
            return got[0]["at"]
    return None


def trace(conn, trace_id, at=None):
    """Every row of one trace (or one execution: a job attempt), in time order,
    within TRACE_WINDOW of ``at`` (aware datetime; looked up if None)."""
    if at is None:
        at = trace_time(conn, trace_id)
    window, window_args = "", []
    if at is not None:
        window, window_args = " AND created_at >= %s AND created_at < %s", [
            at - TRACE_WINDOW, at + TRACE_WINDOW]
    parts, args = [], []
    for kind, table, label, detail, extra in TRACE_TABLES:
        where = "(trace_id = %s" + (" OR {} = %s".format(extra) if extra else "") + ")"
        args += [kind, trace_id] + ([trace_id] if extra else []) + window_args
        duration = "NULL::bigint" if kind in ("log", "exception") else "duration"
        parts.append("(SELECT %s AS kind, created_at, timestamp, {u} AS duration, {l} AS label, "
                     "{d} AS detail, environment, trace_id FROM {t} WHERE {w}{win} "
                     "ORDER BY created_at LIMIT {n})".format(
                         u=duration, l=label, d=detail, t=table, w=where, win=window,
                         n=TRACE_ROWS))
    events = rows(conn, " UNION ALL ".join(parts) + " ORDER BY timestamp NULLS LAST, created_at",
                  args)
    return {"events": events}
