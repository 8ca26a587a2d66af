"""
Issue status changes made by people (CLI, dashboard), and reading issues.

``set_status`` is the one way a person changes an issue's status: in one
transaction it locks the issue, changes the status, stamps ``resolved_at`` /
``reopened_at`` and records an activity row.  The drain's own changes
(created, reopened on recurrence) are nightowl.issues.upsert's.

Statuses: ``open`` | ``resolved`` | ``ignored``.  Activity actions written
here: ``resolved``, ``ignored``, ``reopen`` (a manual reopen).
"""

import json

VALID_STATUSES = ("open", "resolved", "ignored")
ACTIONS = {"resolved": "resolved", "ignored": "ignored", "open": "reopen"}


def set_status(conn, issue_id, status, actor):
    """In one transaction on psycopg2 connection `conn`: change the issue's status, record an activity
    row (action 'resolved' | 'ignored' | 'reopen'), return (old_status, new_status).
    Raises LookupError if there is no such issue, ValueError for a bad status.

    Setting the status an issue already has changes nothing and records nothing.
    """
    if status not in VALID_STATUSES:
        raise ValueError("bad status {!r}: expected one of {}".format(
            status, ", ".join(VALID_STATUSES)))
    if not isinstance(actor, str) or not actor:
        raise ValueError("actor must be a non-empty string")
    issue_id = _issue_id(issue_id)
    with conn:
        cur = conn.cursor()
        cur.execute("SELECT status FROM nightowl_issues WHERE id = %s FOR UPDATE", (issue_id,))
        row = cur.fetchone()
        if row is None:
            raise LookupError("no issue {}".format(issue_id))
        old = row[0]
        if old == status:
            return old, status
        cur.execute("""
            UPDATE nightowl_issues SET status = %(s)s,
                resolved_at = CASE WHEN %(s)s = 'resolved' THEN now() ELSE resolved_at END,
                reopened_at = CASE WHEN %(s)s = 'open' THEN now() ELSE reopened_at END,
                updated_at = now()
            WHERE id = %(id)s""", {"s": status, "id": issue_id})
        cur.execute("INSERT INTO nightowl_issue_activity (issue_id, actor, action, detail) "
                    "VALUES (%s, %s, %s, %s)",
                    (issue_id, actor, ACTIONS[status], json.dumps({"from": old, "to": status})))
    return old, status


def _issue_id(value):
    if isinstance(value, bool):
        raise LookupError("no issue {!r}".format(value))
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise LookupError("no issue {!r}: an issue id is a whole number".format(value))
    if n <= 0 or n > (1 << 63) - 1:
        raise LookupError("no issue {}".format(n))
    return n


COLUMNS = ("id", "type", "subtype", "status", "environment", "exception_class",
           "exception_message", "target", "group_hash", "occurrences_count", "users_count",
           "threshold_ms", "triggered_duration_ms", "first_seen_at", "last_seen_at",
           "resolved_at", "reopened_at", "deploy")


def list_issues(conn, status=None, limit=50):
    """The issues seen last first, as dicts; ``status`` filters (ValueError if bad)."""
    if status is not None and status not in VALID_STATUSES:
        raise ValueError("bad status {!r}: expected one of {}".format(
            status, ", ".join(VALID_STATUSES)))
    if limit <= 0:
        raise ValueError("limit must be greater than 0")
    with conn:
        cur = conn.cursor()
        cur.execute("SELECT {} FROM nightowl_issues WHERE (%(s)s::text IS NULL OR status = %(s)s) "
                    "ORDER BY last_seen_at DESC, id DESC LIMIT %(n)s".format(", ".join(COLUMNS)),
                    {"s": status, "n": limit})
        return [dict(zip(COLUMNS, row)) for row in cur.fetchall()]


def get_issue(conn, issue_id, activity=20):
    """One issue as a dict with its latest ``activity`` rows; LookupError if none."""
    issue_id = _issue_id(issue_id)
    with conn:
        cur = conn.cursor()
        cur.execute("SELECT {} FROM nightowl_issues WHERE id = %s".format(", ".join(COLUMNS)),
                    (issue_id,))
        row = cur.fetchone()
        if row is None:
            raise LookupError("no issue {}".format(issue_id))
        issue = dict(zip(COLUMNS, row))
        cur.execute("SELECT at, actor, action, detail FROM nightowl_issue_activity "
                    "WHERE issue_id = %s ORDER BY at DESC, id DESC LIMIT %s", (issue_id, activity))
        issue["activity"] = [dict(zip(("at", "actor", "action", "detail"), r))
                             for r in cur.fetchall()]
    return issue
