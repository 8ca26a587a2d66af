"""
The span tier (schema 0022): per (kind, environment, group), the merge of
the last ``SPAN_HOURS`` whole UTC hours, so that a 24 h read merges one
span row and a few hour and minute rows per group instead of ~25 hour rows
(the ``sum()`` of ~2 KB numeric sketches is most of a ``top``'s time).

``refresh`` runs inside the deriver's transaction (``derive.run``), after
the hour rows of that run are written: it replaces the whole table by the
window ending at the first hour not yet whole at the run's cut-off, whenever
that window moved or one of its hours (or of the stored window's) was just
derived.  So a span row always equals the merge of the hour rows of its
window as of that transaction.  ``window`` tells a reader the stored window;
``nightowl.rollups.plan`` uses it only where none of its hours is stale or
partial, and ``rebuild`` drops it when it replaces an hour inside it.
"""

from datetime import timedelta

from nightowl.rollups.write import TABLES

TABLE = "nightowl_rollups_span"
SPAN_HOURS = 23
HOUR = timedelta(hours=1)

MERGE = """
DELETE FROM {span};
INSERT INTO {span} (bucket, until, kind, environment, group_key, label, attrs, count, errors,
                    sum_us, min_us, max_us, sketch)
SELECT %(start)s, %(until)s, kind, environment, group_key,
       (array_agg(label ORDER BY bucket))[1], (array_agg(attrs ORDER BY bucket))[1],
       sum(count), sum(errors), sum(sum_us), min(min_us), max(max_us),
       nightowl_sketch_merge(sketch)
FROM {hour} WHERE bucket >= %(start)s AND bucket < %(until)s
GROUP BY kind, environment, group_key
ORDER BY kind, environment, group_key
"""


def window(cur):
    """The stored window ``(start, until)``, or None (empty table or no table)."""
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,))
    if not cur.fetchone()[0]:
        return None
    cur.execute("SELECT bucket, until FROM " + TABLE + " LIMIT 1")
    row = cur.fetchone()
    return (row[0], row[1]) if row else None


def target(cutoff):
    """The window a deriver with this cut-off keeps: the SPAN_HOURS whole
    hours before the hour holding ``cutoff``."""
    from nightowl.rollups.plan import floor_time
    until = floor_time(cutoff, 3600)
    return until - SPAN_HOURS * HOUR, until


def refresh(cur, cutoff, derived_hours):
    """Replace the span when its window moved or an hour inside it is among
    ``derived_hours`` (just re-derived); True if replaced."""
    start, until = target(cutoff)
    if window(cur) == (start, until) and not any(start <= h < until for h in derived_hours):
        return False
    cur.execute(MERGE.format(span=TABLE, hour=TABLES["hour"]), {"start": start, "until": until})
    return True


def drop_around(cur, hour):
    """Forget the span if ``hour`` is inside its window (a rebuild replaced it)."""
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,))
    if cur.fetchone()[0]:
        cur.execute("DELETE FROM " + TABLE + " WHERE bucket <= %s AND until > %s", (hour, hour))
