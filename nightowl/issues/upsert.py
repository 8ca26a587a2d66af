"""
The issue statements of one drain batch, inside the batch's transaction.

``write(cur, environment, issues, perf)`` runs, on the caller's cursor and so
in the same transaction as the batch's COPYs and its ledger row:

1. one upsert of every issue of the batch, exceptions and performance issues
   together, sorted by (type, group_hash) so that concurrent workers lock rows
   in one order (hazard 42).  ``RETURNING (xmax = 0)`` says which rows this
   statement created; ``prior_status`` (set to the old status by the same
   statement) says which ones it reopened, on the row version it locked;
2. one insert of the batch's distinct (issue, user) pairs, adding the pairs
   actually new to ``users_count`` (exact);
3. only when step 1 found events: one statement writing an activity row
   (actor ``agent``, action ``created`` | ``reopened``) and an outbox row
   (``issue.new`` | ``performance.new`` | ``issue.reopened``) per event.

Status rules: a new issue is ``open``; a ``resolved`` one that occurs again
is set ``open`` (reopened); an ``ignored`` one stays ignored and keeps
counting; an ``open`` one just counts.  A batch the ledger skips never gets
here, so a retry after a crash neither counts nor alerts twice.

Performance issues: ``threshold_ms`` is the threshold in force at the latest
occurrence, ``triggered_duration_ms`` the worst duration seen (it only grows).
Their ``users_count`` is the most distinct users seen in one batch (a lower
bound, as the PHP agent keeps it): slow records are many, and one
``nightowl_issue_users`` row per (issue, user) for them cost the drain ~10 %
in ``nightowl bench drain``.  Exceptions keep their exact count.
"""

import psycopg2.extras

from nightowl import records
from nightowl.issues import thresholds

PERFORMANCE_MESSAGE = "Duration exceeded threshold"

UPSERT = """
    INSERT INTO nightowl_issues AS i (type, subtype, status, group_hash, environment,
        exception_class, exception_message, deploy, first_seen_at, last_seen_at,
        occurrences_count, users_count, target, threshold_ms, triggered_duration_ms,
        created_at, updated_at)
    SELECT v.type, v.subtype, 'open', v.fp, v.env, v.cls, v.msg, v.deploy, to_timestamp(v.first),
           to_timestamp(v.last), v.n, v.users, v.target, v.thr, v.dur, now(), now()
    FROM (VALUES %s) AS v (type, subtype, fp, env, cls, msg, deploy, first, last, n, msg_ts,
                           target, thr, dur, users)
    ORDER BY v.type, v.fp
    ON CONFLICT (group_hash, type, environment) DO UPDATE SET
        exception_message = CASE WHEN EXCLUDED.last_seen_at >= i.last_seen_at
                                 THEN EXCLUDED.exception_message ELSE i.exception_message END,
        first_seen_at = LEAST(i.first_seen_at, EXCLUDED.first_seen_at),
        last_seen_at = GREATEST(i.last_seen_at, EXCLUDED.last_seen_at),
        occurrences_count = i.occurrences_count + EXCLUDED.occurrences_count,
        users_count = CASE WHEN i.type = 'performance'
                           THEN GREATEST(i.users_count, EXCLUDED.users_count)
                           ELSE i.users_count END,
        threshold_ms = COALESCE(EXCLUDED.threshold_ms, i.threshold_ms),
        triggered_duration_ms = GREATEST(i.triggered_duration_ms, EXCLUDED.triggered_duration_ms),
        status = CASE WHEN i.status = 'resolved' THEN 'open' ELSE i.status END,
        reopened_at = CASE WHEN i.status = 'resolved' THEN now() ELSE i.reopened_at END,
        prior_status = i.status,
        updated_at = now()
    RETURNING i.id, i.type, i.group_hash, (i.xmax = 0), i.prior_status"""

UPSERT_TEMPLATE = ("(%s, %s, %s, %s, %s, %s, %s, %s::float8, %s::float8, %s::bigint, %s::float8, "
                   "%s, %s::integer, %s::integer, %s::bigint)")

#: the pairs travel as two arrays: one parameter each, not thousands of VALUES tuples
USERS = """
    WITH ins AS (
        INSERT INTO nightowl_issue_users (issue_id, user_id)
        SELECT * FROM unnest(%s::bigint[], %s::text[])
        ON CONFLICT DO NOTHING RETURNING issue_id),
    c AS (SELECT issue_id, count(*) AS n FROM ins GROUP BY issue_id)
    UPDATE nightowl_issues i SET users_count = i.users_count + c.n
    FROM c WHERE i.id = c.issue_id"""

#: the outbox payload (shape fixed in CONTRACTS.md); times as ISO-8601 UTC
PAYLOAD = """jsonb_build_object(
        'event', e.event,
        'at', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'issue', jsonb_build_object(
            'id', i.id, 'type', i.type, 'subtype', i.subtype, 'status', i.status,
            'exception_class', i.exception_class, 'message', i.exception_message,
            'environment', i.environment, 'group_hash', i.group_hash,
            'first_seen_at', to_char(i.first_seen_at AT TIME ZONE 'UTC',
                                     'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'last_seen_at', to_char(i.last_seen_at AT TIME ZONE 'UTC',
                                    'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
            'occurrences', i.occurrences_count, 'users', i.users_count,
            'kind', CASE WHEN i.type = 'performance' THEN i.subtype END,
            'target', i.target, 'threshold_ms', i.threshold_ms,
            'duration_ms', i.triggered_duration_ms))"""

EVENTS = """
    WITH e (id, event, action) AS (VALUES %s),
    a AS (
        INSERT INTO nightowl_issue_activity (issue_id, actor, action, detail)
        SELECT e.id, 'agent', e.action,
               CASE WHEN e.action = 'reopened'
                    THEN '{"from": "resolved", "to": "open"}'::jsonb END
        FROM e ORDER BY e.id)
    INSERT INTO nightowl_alert_outbox (event, issue_id, environment, payload)
    SELECT e.event, i.id, i.environment, """ + PAYLOAD + """
    FROM e JOIN nightowl_issues i ON i.id = e.id
    ORDER BY e.id"""


def _rows(environment, issues, perf):
    """(VALUES rows sorted by (type, group hash), [(key, type, fp, users)])."""
    env = environment
    rows, keyed = [], []
    for fp, agg in issues.items():
        n, users, first, last, cls, msg, msg_ts, deploy = agg
        fp = records.clean(fp)
        rows.append(("exception", None, fp, env, records.clean(cls), records.clean(msg),
                     records.clean(deploy), first, last, n, msg_ts, None, None, None, 0))
        keyed.append(("exception", fp, users))
    for (kind, target), agg in perf.items():
        n, users, first, last, thr_ms, worst_us, latest, deploy = agg
        target = records.clean(target)
        fp = thresholds.group_hash(kind, target)
        rows.append(("performance", kind, fp, env, target, PERFORMANCE_MESSAGE,
                     records.clean(deploy), first, last, n, latest, target, thr_ms,
                     min(round(worst_us / 1000.0), thresholds.DURATION_MAX_MS), len(users)))
        keyed.append(("performance", fp, ()))
    order = sorted(range(len(rows)), key=lambda k: (rows[k][0], rows[k][2]))
    return [rows[k] for k in order], [keyed[k] for k in order]


def write(cur, environment, issues, perf):
    """Upsert the batch's issues; returns {'created': n, 'reopened': n}."""
    rows, keyed = _rows(environment, issues, perf)
    if not rows:
        return {"created": 0, "reopened": 0}
    got = psycopg2.extras.execute_values(cur, UPSERT, rows, template=UPSERT_TEMPLATE,
                                         page_size=len(rows), fetch=True)
    ids = {}
    events = []
    for issue_id, type_, fp, created, prior in got:
        ids[(type_, fp)] = issue_id
        if created:
            events.append((issue_id, "performance.new" if type_ == "performance" else "issue.new",
                           "created"))
        elif prior == "resolved":
            events.append((issue_id, "issue.reopened", "reopened"))
    pairs = sorted(set((ids[(type_, fp)], records.clean(uid))
                       for type_, fp, users in keyed for uid in users))
    if pairs:
        cur.execute(USERS, ([p[0] for p in pairs], [p[1] for p in pairs]))
    if events:
        events.sort()
        psycopg2.extras.execute_values(cur, EVENTS, events, template="(%s::bigint, %s, %s)",
                                       page_size=len(events))
    created = sum(1 for e in events if e[2] == "created")
    return {"created": created, "reopened": len(events) - created}
