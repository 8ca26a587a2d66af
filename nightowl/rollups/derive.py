"""
Derive the hour and day tiers from the minute tier, exactly.

The drain writes only minute rows and one ``nightowl_rollups_pending`` row
per (environment, UTC hour) a batch touched, in the batch transaction
(``write.upsert``).  ``run`` takes the pending rows visible in one
REPEATABLE READ snapshot, REPLACES each such hour's hour rows with the merge
of its minutes and each touched day's day rows with the merge of its hours,
and deletes exactly the pending rows it saw, then commits: a batch that
commits meanwhile left its own pending row, so its hour is derived next time.
Replacing, never adding, so a run repeated or cut off by a crash changes
nothing.  Derivers (one per agent) are serialised by a session advisory lock
taken before the snapshot; a busy lock means another deriver is at work, and
``run`` returns at once.

``nightowl.rollups.service.DeriveService`` calls ``run`` every minute off the
reactor; ``nightowl.rollups.query`` reads a still-pending hour from its
minutes, so answers never wait for a derivation.  Limit: a pending hour whose
minutes were already pruned by tier retention (a deriver stopped for longer
than the minute retention) is derived from the minutes left.
"""

from nightowl.rollups.write import PENDING, TABLES

#: pg_try_advisory_lock(DERIVE_LOCK): one deriver at a time per database
DERIVE_LOCK = 0x6e6f64657269  # "noderi"

#: every kind aggregate.KINDS produces: lets the tier tables' primary key
#: (kind, bucket, ...) serve a scan of one bucket range
KINDS = ("cache", "command", "exception", "job", "log", "mail", "notification", "outgoing",
         "query", "request", "scheduled_task", "user_request")

COLUMNS = ("bucket, kind, environment, group_key, label, attrs, count, errors, sum_us, "
           "min_us, max_us, sketch")

#: %(tier)s rows of the pending (environment, bucket) pairs, replaced by the
#: merge of the %(finer)s rows inside them (label and attrs: the earliest row's)
REPLACE = """
DELETE FROM {tier} t USING unnest(%(envs)s::text[], %(buckets)s::timestamptz[]) AS p (e, b)
WHERE t.kind = ANY(%(kinds)s) AND t.bucket = p.b AND t.environment = p.e;
INSERT INTO {tier} ({columns})
SELECT p.b, f.kind, f.environment, f.group_key, (array_agg(f.label ORDER BY f.bucket))[1],
       (array_agg(f.attrs ORDER BY f.bucket))[1], sum(f.count), sum(f.errors), sum(f.sum_us),
       min(f.min_us), max(f.max_us), nightowl_sketch_merge(f.sketch)
FROM unnest(%(envs)s::text[], %(buckets)s::timestamptz[]) AS p (e, b)
JOIN {finer} f ON f.kind = ANY(%(kinds)s) AND f.bucket >= p.b
     AND f.bucket < p.b + %(width)s::interval AND f.environment = p.e
GROUP BY p.b, f.kind, f.environment, f.group_key
ORDER BY f.kind, p.b, f.environment, f.group_key;
"""


def _replace(cur, tier, finer, width, pairs):
    pairs = sorted(pairs)
    cur.execute(REPLACE.format(tier=TABLES[tier], finer=TABLES[finer], columns=COLUMNS), {
        "envs": [e for e, _ in pairs], "buckets": [b for _, b in pairs],
        "kinds": list(KINDS), "width": width})


def run(conn):
    """Derive every pending hour (and its day); returns the number of
    (environment, hour) pairs derived, or None when another deriver holds
    the lock or the schema predates 0021.  Commits; raises psycopg2.Error
    (a serialisation failure against a concurrent rebuild: try again later)."""
    cur = conn.cursor()
    cur.execute("SELECT to_regclass(%s) IS NOT NULL AND pg_try_advisory_lock(%s)",
                (PENDING, DERIVE_LOCK))
    got = cur.fetchone()[0]
    conn.commit()           # the session lock outlives this transaction
    if not got:
        return None
    try:
        # the snapshot starts after the lock: it sees every earlier deriver's work
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("SET LOCAL TimeZone = 'UTC'; SET LOCAL jit = off")
        cur.execute("SELECT id, environment, hour FROM " + PENDING)
        rows = cur.fetchall()
        if not rows:
            conn.rollback()
            return 0
        hours = {(e, h) for _, e, h in rows}
        _replace(cur, "hour", "minute", "1 hour", hours)
        days = {(e, h.replace(hour=0, minute=0, second=0, microsecond=0)) for e, h in hours}
        _replace(cur, "day", "hour", "1 day", days)
        cur.execute("DELETE FROM " + PENDING + " WHERE id = ANY(%s)", ([i for i, _, _ in rows],))
        conn.commit()
        return len(hours)
    except BaseException:
        conn.rollback()
        raise
    finally:
        try:
            cur.execute("SELECT pg_advisory_unlock(%s)", (DERIVE_LOCK,))
            conn.commit()
        except Exception:
            conn.rollback()


def pending(conn, since, until):
    """The UTC hours in [since, until) not yet derived (any environment), sorted."""
    cur = conn.cursor()
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (PENDING,))
    if not cur.fetchone()[0]:
        return []
    cur.execute("SELECT DISTINCT hour FROM " + PENDING + " WHERE hour >= %s AND hour < %s "
                "ORDER BY 1", (since, until))
    return [h for (h,) in cur.fetchall()]
