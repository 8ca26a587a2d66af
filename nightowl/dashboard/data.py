"""
Every read and write the dashboard makes against Postgres, one function per
page.  Each takes a psycopg2 connection first and runs on the dashboard's
thread pool (``pool.QueryPool.run``), never on the reactor.

Figures that rollups can answer come from ``nightowl.rollups.query.top`` /
``series`` (CONTRACTS.md); the rest (samples, N+1 candidates, traces, cache
hit ratio, issues) read raw tables, always bounded by a time range and a
LIMIT.  All SQL is parameterised; the only text formatted into SQL is fixed
in this module (table and column names).  Issue status changes go through
``nightowl.issues.lifecycle.set_status`` with actor 'dashboard'.
"""

import datetime

from nightowl.issues.lifecycle import set_status
from nightowl.rollups.query import series, top

#: how far back the N+1 scan of raw queries looks at most
N_PLUS_ONE_SPAN = datetime.timedelta(hours=24)
N_PLUS_ONE_MIN = 5
SAMPLES = 20
TRACE_ROWS = 500


class Scope:
    """The time range and environment a page shows."""

    def __init__(self, since, until, environment=None):
        self.since = since
        self.until = until
        self.environment = environment

    def kw(self):
        return {"until": self.until, "environment": self.environment}


def _env(scope, column="environment"):
    if scope.environment is None:
        return "", []
    return " AND {} = %s".format(column), [scope.environment]


def _rows(conn, sql, args):
    cur = conn.cursor()
    cur.execute(sql, args)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def _exists(conn, table):
    cur = conn.cursor()
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
    return cur.fetchone()[0]


def environments(conn, until):
    """Environments seen recently (issues, and requests of the last hour)."""
    rows = _rows(conn, "SELECT environment FROM nightowl_issues UNION "
                 "SELECT DISTINCT environment FROM nightowl_requests "
                 "WHERE created_at >= %s AND created_at < %s ORDER BY 1",
                 [until - datetime.timedelta(hours=1), until])
    return [r["environment"] for r in rows]


# -- overview -------------------------------------------------------------------

def _issues(conn, scope, where, order, args, limit):
    env_sql, env_args = _env(scope, "i.environment")
    return _rows(conn, "SELECT i.id, i.type, i.subtype, i.status, i.exception_class, "
                 "i.exception_message, i.environment, i.first_seen_at, i.last_seen_at, "
                 "i.occurrences_count, i.users_count FROM nightowl_issues i WHERE "
                 + where + env_sql + " ORDER BY " + order + " LIMIT %s",
                 args + env_args + [limit])


def reopened_issues(conn, scope, limit=10):
    if not _exists(conn, "nightowl_issue_activity"):
        return []
    env_sql, env_args = _env(scope, "i.environment")
    return _rows(conn, "SELECT i.id, i.type, i.status, i.exception_class, i.exception_message, "
                 "i.environment, i.last_seen_at, i.occurrences_count, a.at AS reopened_at, "
                 "a.actor FROM nightowl_issues i JOIN LATERAL (SELECT at, actor FROM "
                 "nightowl_issue_activity a WHERE a.issue_id = i.id AND a.action IN "
                 "('reopened', 'reopen') AND a.at >= %s AND a.at < %s ORDER BY at DESC LIMIT 1) "
                 "a ON true WHERE true" + env_sql + " ORDER BY a.at DESC LIMIT %s",
                 [scope.since, scope.until] + env_args + [limit])


def alerts_pending(conn, scope):
    """Alert events queued in the range, or None when there is no outbox (yet)."""
    if not _exists(conn, "nightowl_alert_outbox"):
        return None
    env_sql, env_args = _env(scope)
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM nightowl_alert_outbox WHERE created_at >= %s "
                "AND created_at < %s" + env_sql, [scope.since, scope.until] + env_args)
    return cur.fetchone()[0]


def overview(conn, scope):
    return {
        "series": series(conn, "request", scope.since, **scope.kw()),
        "slowest": top(conn, "request", scope.since, limit=10, order="p95", **scope.kw()),
        "newest": _issues(conn, scope, "i.first_seen_at >= %s AND i.first_seen_at < %s",
                          "i.first_seen_at DESC", [scope.since, scope.until], 10),
        "reopened": reopened_issues(conn, scope),
        "alerts": alerts_pending(conn, scope),
        "environments": environments(conn, scope.until),
    }


# -- one kind of telemetry: requests, jobs, outgoing, commands, ... -------------

#: kind -> (table, sample label SQL, sample status SQL, trace id SQL, key filter SQL)
SAMPLE_SQL = {
    "request": ("nightowl_requests", "coalesce(method, '') || ' ' || coalesce(url, route_path, '')",
                "status_code::text", "trace_id", None),
    "query": ("nightowl_queries", "left(sql_query, 300)", "connection",
              "coalesce(execution_id, trace_id)", "group_hash = %s"),
    "job": ("nightowl_jobs", "job_class", "status", "coalesce(attempt_id, trace_id)",
            "coalesce(group_hash, job_class, '') = %s AND record_type = 'job-attempt'"),
    "outgoing": ("nightowl_outgoing_requests", "coalesce(method, '') || ' ' || coalesce(url, '')",
                 "status_code::text", "coalesce(execution_id, trace_id)", "host = %s"),
    "cache": ("nightowl_cache_events", "coalesce(event_type, '') || ' ' || coalesce(key, '')",
              "store", "coalesce(execution_id, trace_id)", "coalesce(group_hash, key, '') = %s"),
    "command": ("nightowl_commands", "coalesce(command, name)", "exit_code::text", "trace_id",
                "coalesce(group_hash, name, '') = %s"),
    "scheduled_task": ("nightowl_scheduled_tasks", "command", "status", "trace_id",
                       "coalesce(group_hash, command, '') = %s"),
}


def _request_filter(key, target):
    parts = (key or "").split("|")
    if len(parts) == 3 and parts[2].endswith("xx") and parts[2][:-2].isdigit():
        return ("group_hash = %s AND method = %s AND status_code / 100 = %s",
                [parts[0], parts[1], int(parts[2][:-2])])
    return "coalesce(route_path, url) = %s", [target]


def samples(conn, kind, scope, key, target, limit=SAMPLES):
    """The slowest rows of one group in the range, from the raw table."""
    table, label, status, trace, key_sql = SAMPLE_SQL[kind]
    if key_sql is None:
        key_sql, key_args = _request_filter(key, target)
    else:
        key_args = [key]
    env_sql, env_args = _env(scope)
    return _rows(conn, "SELECT created_at, {l} AS label, {s} AS status, duration, {t} AS trace "
                 "FROM {tb} WHERE created_at >= %s AND created_at < %s AND {k}{e} "
                 "ORDER BY duration DESC NULLS LAST LIMIT %s".format(
                     l=label, s=status, t=trace, tb=table, k=key_sql, e=env_sql),
                 [scope.since, scope.until] + key_args + env_args + [limit])


def kind_page(conn, kind, scope):
    return {
        "series": series(conn, kind, scope.since, **scope.kw()),
        "by_sum": top(conn, kind, scope.since, limit=10, order="sum", **scope.kw()),
        "groups": top(conn, kind, scope.since, limit=50, order="p95", **scope.kw()),
        "environments": environments(conn, scope.until),
    }


def group_page(conn, kind, scope, key, target):
    return {
        "series": series(conn, kind, scope.since, group_key=key, **scope.kw()),
        "samples": samples(conn, kind, scope, key, target),
        "environments": environments(conn, scope.until),
    }


def n_plus_one(conn, scope, minimum=N_PLUS_ONE_MIN, limit=20):
    """
    Query groups run many times within one execution (request, job, ...):
    raw nightowl_queries grouped by execution and group, over at most the
    last N_PLUS_ONE_SPAN of the range.
    """
    since = max(scope.since, scope.until - N_PLUS_ONE_SPAN)
    env_sql, env_args = _env(scope)
    return _rows(conn, "SELECT group_hash, min(sql) AS sql, count(*) AS executions, "
                 "max(n) AS max_per_execution, sum(n)::bigint AS total, sum(d)::float8 AS sum_us, "
                 "(array_agg(execution ORDER BY n DESC))[1] AS sample FROM ("
                 " SELECT coalesce(execution_id, trace_id) AS execution, group_hash, "
                 " min(left(sql_query, 300)) AS sql, count(*) AS n, sum(duration) AS d "
                 " FROM nightowl_queries WHERE created_at >= %s AND created_at < %s"
                 + env_sql + " AND coalesce(execution_id, trace_id) IS NOT NULL "
                 " GROUP BY 1, 2 HAVING count(*) >= %s) per "
                 "GROUP BY group_hash ORDER BY max(n) DESC, sum(n) DESC LIMIT %s",
                 [since, scope.until] + env_args + [minimum, limit])


def queries_page(conn, scope):
    out = kind_page(conn, "query", scope)
    out["n_plus_one"] = n_plus_one(conn, scope)
    out["n_plus_one_since"] = max(scope.since, scope.until - N_PLUS_ONE_SPAN)
    return out


def cache_page(conn, scope):
    """Hit ratio over time and per store from raw cache events, plus the slowest keys."""
    env_sql, env_args = _env(scope)
    out = kind_page(conn, "cache", scope)
    out["stores"] = _rows(
        conn, "SELECT coalesce(store, '') AS store, count(*) FILTER (WHERE event_type = 'hit') "
        "AS hits, count(*) FILTER (WHERE event_type = 'miss') AS misses, count(*) FILTER "
        "(WHERE event_type LIKE 'write%%') AS writes, count(*) AS events "
        "FROM nightowl_cache_events WHERE created_at >= %s AND created_at < %s" + env_sql
        + " GROUP BY 1 ORDER BY events DESC LIMIT 20", [scope.since, scope.until] + env_args)
    return out


# -- issues -------------------------------------------------------------------------

def issues_list(conn, scope, status=None, type_=None, limit=100):
    where, args = "i.last_seen_at >= %s AND i.last_seen_at < %s", [scope.since, scope.until]
    if status:
        where += " AND i.status = %s"
        args.append(status)
    if type_:
        where += " AND i.type = %s"
        args.append(type_)
    counts = _rows(conn, "SELECT status, count(*) AS n FROM nightowl_issues i WHERE "
                   "i.last_seen_at >= %s AND i.last_seen_at < %s" + _env(scope, "i.environment")[0]
                   + " GROUP BY 1", [scope.since, scope.until] + _env(scope)[1])
    return {"issues": _issues(conn, scope, where, "i.last_seen_at DESC", args, limit),
            "counts": dict((r["status"], r["n"]) for r in counts),
            "environments": environments(conn, scope.until)}


def issue_page(conn, issue_id, scope):
    rows = _rows(conn, "SELECT * FROM nightowl_issues WHERE id = %s", [issue_id])
    if not rows:
        return None
    issue = rows[0]
    out = {"issue": issue, "latest": None, "series": [], "users": [], "activity": []}
    if issue["type"] == "exception":
        latest = _rows(conn, "SELECT created_at, class, message, code, file, line, trace, "
                       "handled, trace_id, execution_id, server, deploy, php_version, "
                       "laravel_version FROM nightowl_exceptions WHERE fingerprint = %s AND "
                       "environment = %s ORDER BY created_at DESC LIMIT 1",
                       [issue["group_hash"], issue["environment"]])
        out["latest"] = latest[0] if latest else None
        out["series"] = series(conn, "exception", scope.since, until=scope.until,
                               environment=issue["environment"], group_key=issue["group_hash"])
    out["users"] = _rows(conn, "SELECT u.user_id, n.name, n.email, n.last_seen_at FROM "
                         "nightowl_issue_users u LEFT JOIN nightowl_users n USING (user_id) "
                         "WHERE u.issue_id = %s ORDER BY n.last_seen_at DESC NULLS LAST, "
                         "u.user_id LIMIT 50", [issue_id])
    if _exists(conn, "nightowl_issue_activity"):
        out["activity"] = _rows(conn, "SELECT at, actor, action, detail FROM "
                                "nightowl_issue_activity WHERE issue_id = %s ORDER BY at DESC, "
                                "id DESC LIMIT 50", [issue_id])
    return out


def change_issue_status(conn, issue_id, status):
    return set_status(conn, issue_id, status, actor="dashboard")


# -- one trace ------------------------------------------------------------------------

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


def trace(conn, trace_id):
    """Every row of one trace (or one execution: a job attempt), in time order."""
    parts, args = [], []
    for kind, table, label, detail, extra in TRACE_TABLES:
        where = "trace_id = %s" + (" OR {} = %s".format(extra) if extra else "")
        args += [kind, trace_id] + ([trace_id] if extra else [])
        duration = "NULL::bigint" if kind in ("log", "exception") else "duration"
        parts.append("(SELECT %s AS kind, created_at, timestamp, {u} AS duration, {l} AS label, "
                     "{d} AS detail, environment, trace_id FROM {t} WHERE {w} "
                     "ORDER BY created_at LIMIT {n})".format(
                         u=duration, l=label, d=detail, t=table, w=where, n=TRACE_ROWS))
    events = _rows(conn, " UNION ALL ".join(parts) + " ORDER BY timestamp NULLS LAST, created_at",
                   args)
    return {"events": events}
