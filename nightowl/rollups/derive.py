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

The current hour (any hour not over ``SETTLE`` before the database's
``now()``) is derived from its settled minutes only, before the cut-off
``date_trunc('minute', now()) - SETTLE``, and left a marker: a pending row
with ``derived`` true and ``minute`` the cut-off (schema 0022).  The marker
makes the next run derive that hour again (further), until a run's cut-off
passes the hour's end; until then a reader merges its hour row with the
minutes from the cut-off on (``hour_states``, ``plan.read_partial``).  An
hour that starts after the cut-off is left pending as it is.  The same
transaction keeps the span tier (``nightowl.rollups.span``): the merge of
the last 23 whole hours.

``nightowl.rollups.service.DeriveService`` calls ``run`` every minute off the
reactor; ``nightowl.rollups.query`` reads a still-pending hour from its
minutes, so answers never wait for a derivation.  Limit: a pending hour whose
minutes were already pruned by tier retention (a deriver stopped for longer
than the minute retention) is derived from the minutes left.
"""

from datetime import timedelta

from nightowl.rollups import span
from nightowl.rollups.plan import HOUR
from nightowl.rollups.write import PENDING, TABLES

#: the minutes a batch may still write: the deriver stops this far before
#: now() in the current hour (a batch later than that makes the hour stale,
#: read from its minutes until the next run: slower, never wrong)
SETTLE = timedelta(minutes=2)

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
     AND f.bucket < LEAST(p.b + %(width)s::interval, %(until)s::timestamptz)
     AND f.environment = p.e
GROUP BY p.b, f.kind, f.environment, f.group_key
ORDER BY f.kind, p.b, f.environment, f.group_key;
"""


def _replace(cur, tier, finer, width, pairs, until="infinity"):
    pairs = sorted(pairs)
    cur.execute(REPLACE.format(tier=TABLES[tier], finer=TABLES[finer], columns=COLUMNS), {
        "envs": [e for e, _ in pairs], "buckets": [b for _, b in pairs],
        "kinds": list(KINDS), "width": width, "until": until})


def run(conn, cutoff=None, whole=False):
    """Derive every pending hour (and its day); returns the number of
    (environment, hour) pairs derived, or None when another deriver holds
    the lock or the schema predates 0021.  ``cutoff`` (tests): the minute the
    current hour is derived up to, instead of the database's now() - SETTLE.
    ``whole`` (oracles, benchmarks): every pending hour up to its end, the
    current one too, no markers.  Commits; raises psycopg2.Error (a
    serialisation failure against a concurrent rebuild: try again later)."""
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
        cur.execute("SELECT id, environment, hour, derived, minute, "
                    "date_trunc('minute', now()) - %s FROM " + PENDING, (SETTLE,))
        rows = cur.fetchall()
        if not rows:
            conn.rollback()
            return 0
        cutoff = cutoff if cutoff is not None else rows[0][5]
        until = "infinity" if whole else cutoff
        ids, news = {}, set()
        for i, env, hour, derived, minute, _ in rows:
            if whole or hour < cutoff:      # an hour with settled minutes
                ids.setdefault((env, hour), []).append(i)
                # a marker alone, already at this run's cut-off, is nothing new
                if whole or not derived or minute < cutoff:
                    news.add((env, hour))
        work = {pair: ids[pair] for pair in news}
        if not work:
            conn.rollback()
            return 0
        _replace(cur, "hour", "minute", "1 hour", work, until=until)
        days = {(e, h.replace(hour=0, minute=0, second=0, microsecond=0)) for e, h in work}
        _replace(cur, "day", "hour", "1 day", days)
        cur.execute("DELETE FROM " + PENDING + " WHERE id = ANY(%s)",
                    ([i for ids in work.values() for i in ids],))
        span.refresh(cur, cutoff, {h for _, h in work})
        partial = [] if whole else sorted((e, h) for e, h in work if h + HOUR > cutoff)
        if partial:
            cur.execute("INSERT INTO " + PENDING + " (environment, hour, minute, derived) "
                        "SELECT e, h, %s, true FROM unnest(%s::text[], %s::timestamptz[]) "
                        "AS p (e, h)", (cutoff, [e for e, _ in partial], [h for _, h in partial]))
        conn.commit()
        return len(work)
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


def hour_states(conn, since, until, environment=None):
    """``(stale, partial)`` for the UTC hours in [since, until) of
    ``environment`` (None: all): ``stale``, the set of hours whose hour rows
    lack minutes a reader cannot add (read them from their minutes);
    ``partial``, {hour: cut-off} for hours whose hour rows hold exactly the
    minutes before the cut-off (read the rest from the minutes)."""
    cur = conn.cursor()
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (PENDING,))
    if not cur.fetchone()[0]:
        return set(), {}
    sql = ("SELECT hour, environment, max(minute) FILTER (WHERE derived), "
           "min(coalesce(minute, hour)) FILTER (WHERE NOT derived) FROM " + PENDING +
           " WHERE hour >= %s AND hour < %s")
    args = [since, until]
    if environment is not None:
        sql += " AND environment = %s"
        args.append(environment)
    cur.execute(sql + " GROUP BY hour, environment", args)
    stale, cuts = set(), {}
    for hour, _env, cut, touched in cur.fetchall():
        if cut is None or (touched is not None and touched < cut):
            stale.add(hour)         # never derived since a write, or written before the cut
        else:
            cuts.setdefault(hour, set()).add(cut)
    # one cut-off per hour across environments (a run derives them all at once);
    # otherwise the hour is read from its minutes
    partial = {}
    for hour, seen in cuts.items():
        if hour not in stale and len(seen) == 1:
            partial[hour] = seen.pop()
        else:
            stale.add(hour)
    return stale, partial
