"""
Retention of the alert history: outbox rows and their deliveries once every
delivery of them has ended (sent, dead or folded into a digest), and ended
digests, after ``days`` by the database's clock.  A pending delivery, or an
outbox row not yet fanned out, is never deleted, however old: the guarantee
is that an alert is sent or marked dead, and retention must not break it.
Run by the retention sweep (nightowl.retention), one short transaction.
"""

OUTBOX = """
DELETE FROM nightowl_alert_outbox o
WHERE o.created_at < now() - make_interval(days => %(days)s)
  AND o.fanned_out_at IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM nightowl_alert_deliveries d
                  WHERE d.outbox_id = o.id AND d.status = 'pending')
"""

DIGESTS = """
DELETE FROM nightowl_alert_deliveries
WHERE kind = 'digest' AND status <> 'pending'
  AND created_at < now() - make_interval(days => %(days)s)
"""


def prune(conn, days):
    """Delete ended alert history older than ``days``; returns
    ``{"alert_outbox": rows, "alert_digests": rows}`` (deliveries of a deleted
    outbox row go with it: ON DELETE CASCADE).  Commits."""
    cur = conn.cursor()
    cur.execute("SELECT to_regclass('nightowl_alert_deliveries') IS NOT NULL")
    if not cur.fetchone()[0]:
        conn.rollback()
        return {}       # a database from before the alerts migration
    args = {"days": int(days)}
    cur.execute(OUTBOX, args)
    outbox = cur.rowcount
    cur.execute(DIGESTS, args)
    digests = cur.rowcount
    conn.commit()
    return {"alert_outbox": outbox, "alert_digests": digests}
