"""
Every read and write the dashboard makes against Postgres, one function per
page.  Each takes a psycopg2 connection first and runs on the dashboard's
thread pool (``pool.QueryPool.run``), never on the reactor.

Every aggregate (series, top groups, cache hit ratios, the environments
seen, an issue's occurrences over time) comes from the rollups through
``nightowl.rollups.query.top`` / ``series`` (CONTRACTS.md).  Raw telemetry
rows are read only by ``rawreads`` (samples, N+1 candidates, traces), each
read bounded by an index and a LIMIT; issues come from their own tables.  All SQL is parameterised; the only text formatted into SQL is fixed
in this module (table and column names).  Issue status changes go through
``nightowl.issues.lifecycle.set_status`` with actor 'dashboard'.
"""

import datetime

from nightowl.dashboard import rawreads, sums, totals
from nightowl.issues.lifecycle import set_status
from nightowl.rollups import query
from nightowl.rollups.query import series

#: the rollup kinds whose environments the filter offers
ENV_KINDS = ["request", "job", "command", "scheduled_task", "exception"]
ENV_SPAN = datetime.timedelta(days=31)


class Scope:
    """The time range and environment a page shows."""

    def __init__(self, since, until, environment=None):
        self.since = since
        self.until = until
        self.environment = environment

    def kw(self):
        return {"until": self.until, "environment": self.environment}


def whole_steps(since, until):
    """The range widened to whole steps of its chart (``query.choose_step``:
    minutes up to 6 h, hours up to 14 d, UTC days beyond), as its series
    is: the groups' figures then add up to the series', and a 30-day top
    reads ~31 day rows a group instead of ~77 hour and minute rows.  (The
    current step's rows are all before now.)"""
    width = query.STEPS[query.choose_step(since, until)]
    if width == 60:
        return since, until
    step = datetime.timedelta(seconds=width)
    lo = since - datetime.timedelta(seconds=since.timestamp() % width)
    hi = until - datetime.timedelta(seconds=until.timestamp() % width)
    return lo, hi if hi == until else hi + step


def top(conn, kind, since, until=None, order="p95", **kw):
    """``query.top`` over ``whole_steps``, made fit to show: a percentile is a
    sketch bucket's midpoint, up to 1 % above the largest duration seen, so
    it is capped at the group's max; a cache group is named by its store and
    event type.  order='sum' merges no sketch (``sums.by_sum``)."""
    since, until = whole_steps(since, until)
    if order == "sum":
        rows = sums.by_sum(conn, kind, since, until, kw.get("environment"), kw.get("limit", 20))
    else:
        rows = query.top(conn, kind, since, until=until, order=order, **kw)
    for r in rows:
        if r["max_ms"] is not None:
            for p in ("p50_ms", "p95_ms", "p99_ms"):
                if r[p] is not None and r[p] > r["max_ms"]:
                    r[p] = r["max_ms"]
        if kind == "cache":
            store, _, event = r["group_key"].rpartition("|")
            r["target"] = "{} {}".format(store or "(default)", event or "(none)")
    return rows


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
    """Environments with issues, or with rollups of the last ENV_SPAN (day rows,
    through the primary key: a few thousand rows at most)."""
    rows = _rows(conn, "SELECT environment FROM nightowl_issues UNION "
                 "SELECT DISTINCT environment FROM nightowl_rollups_day WHERE kind = ANY(%s) "
                 "AND bucket >= %s ORDER BY 1",
                 [ENV_KINDS, until - ENV_SPAN])
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
        "series": totals.series(conn, "request", scope.since, scope.until, scope.environment),
        "slowest": top(conn, "request", scope.since, limit=10, order="p95", **scope.kw()),
        "newest": _issues(conn, scope, "i.first_seen_at >= %s AND i.first_seen_at < %s",
                          "i.first_seen_at DESC", [scope.since, scope.until], 10),
        "reopened": reopened_issues(conn, scope),
        "alerts": alerts_pending(conn, scope),
        "environments": environments(conn, scope.until),
    }


# -- one kind of telemetry: requests, jobs, outgoing, commands, ... -------------

#: groups listed on a kind page (by p95)
GROUPS = 50


class Parts(list):
    """A page's reads as independent parts [(fn, args)], each fn(conn, *args)
    -> dict: the dashboard runs them on its pool at once (its three
    connections) and merges the dicts, so a page takes as long as its
    slowest read, not the sum (each part has its own snapshot)."""

    def run(self, conn):
        """All parts on one connection, one after another (tools, tests)."""
        out = {}
        for fn, args in self:
            out.update(fn(conn, *args))
        return out


def _series_part(conn, kind, scope):
    return {"series": totals.series(conn, kind, scope.since, scope.until, scope.environment)}


def _groups_part(conn, kind, scope):
    groups = top(conn, kind, scope.since, limit=GROUPS, order="p95", **scope.kw())
    out = {"groups": groups, "all_groups": len(groups) < GROUPS}
    if kind == "cache":
        out["stores"] = _stores(groups if out["all_groups"] else top(
            conn, "cache", scope.since, limit=1000, order="count", **scope.kw()))
    return out


def _by_sum_part(conn, kind, scope):
    return {"by_sum": top(conn, kind, scope.since, limit=10, order="sum", **scope.kw())}


def _environments_part(conn, scope):
    return {"environments": environments(conn, scope.until)}


def _n_plus_one_part(conn, scope):
    return {"n_plus_one": rawreads.n_plus_one(conn, scope.since, scope.until, scope.environment),
            "n_plus_one_since": rawreads.n_plus_one_since(scope.since, scope.until)}


def kind_parts(kind, scope):
    """The kind's series, its GROUPS slowest groups, its 10 most
    time-consuming (no sketch merged: ``sums.by_sum``); queries add N+1
    candidates, cache its hit ratios per store."""
    parts = Parts([(_groups_part, (kind, scope)), (_series_part, (kind, scope)),
                   (_by_sum_part, (kind, scope)), (_environments_part, (scope,))])
    if kind == "query":
        parts.append((_n_plus_one_part, (scope,)))
    return parts


def kind_page(conn, kind, scope):
    return kind_parts(kind, scope).run(conn)


def _group_series_part(conn, kind, scope, key):
    return {"series": series(conn, kind, scope.since, group_key=key, **scope.kw())}


def _samples_part(conn, kind, scope, key):
    return {"samples": rawreads.samples(conn, kind, scope.since, scope.until, scope.environment,
                                        key),
            "samples_since": rawreads.samples_since(kind, scope.since, scope.until),
            "samples_scan": rawreads.SAMPLE_SCAN}


def group_parts(kind, scope, key):
    return Parts([(_group_series_part, (kind, scope, key)), (_samples_part, (kind, scope, key)),
                  (_environments_part, (scope,))])


def group_page(conn, kind, scope, key, target=None):
    return group_parts(kind, scope, key).run(conn)


def queries_page(conn, scope):
    return kind_page(conn, "query", scope)


def cache_page(conn, scope):
    return kind_page(conn, "cache", scope)


def _stores(rows):
    """Hits, misses and writes per store, from the cache groups (group key
    ``store|event type``)."""
    stores = {}
    for row in rows:
        store, _, event = row["group_key"].rpartition("|")
        s = stores.setdefault(store, {"store": store, "hits": 0, "misses": 0, "writes": 0,
                                      "events": 0})
        s["events"] += row["count"]
        if event == "hit":
            s["hits"] += row["count"]
        elif event == "miss":
            s["misses"] += row["count"]
        elif event.startswith("write"):
            s["writes"] += row["count"]
    return sorted(stores.values(), key=lambda s: (-s["events"], s["store"]))[:20]


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

trace = rawreads.trace
