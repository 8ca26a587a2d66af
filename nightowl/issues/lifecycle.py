"""
PROVISIONAL (branch i13): the issue lifecycle API of CONTRACTS.md, just
enough for the dashboard's resolve / ignore / reopen buttons.  Branch i10a
owns the real module; at merge this file is replaced by it.

``set_status(conn, issue_id, status, actor)`` changes an issue's status and
records one ``nightowl_issue_activity`` row in the same transaction.
"""

import json

VALID_STATUSES = ("open", "resolved", "ignored")

#: new status -> the activity action recorded for a manual change
_ACTIONS = {"resolved": "resolved", "ignored": "ignored", "open": "reopen"}


def set_status(conn, issue_id, status, actor):
    """
    In one transaction on psycopg2 connection `conn`: change the issue's
    status, record an activity row (action 'resolved' | 'ignored' |
    'reopen'), return (old_status, new_status).  Raises LookupError if there
    is no such issue, ValueError for a bad status.
    """
    if status not in VALID_STATUSES:
        raise ValueError("status must be one of {}, got {!r}".format(
            "/".join(VALID_STATUSES), status))
    with conn:
        cur = conn.cursor()
        cur.execute("SELECT status FROM nightowl_issues WHERE id = %s FOR UPDATE", (issue_id,))
        row = cur.fetchone()
        if row is None:
            raise LookupError("no issue {}".format(issue_id))
        old = row[0]
        cur.execute("UPDATE nightowl_issues SET status = %s, updated_at = now() WHERE id = %s",
                    (status, issue_id))
        cur.execute("INSERT INTO nightowl_issue_activity (issue_id, actor, action, detail) "
                    "VALUES (%s, %s, %s, %s)",
                    (issue_id, actor, _ACTIONS[status], json.dumps({"from": old, "to": status})))
    return old, status
