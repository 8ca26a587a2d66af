"""
The span tier (schema 0022): per (kind, environment, group), the merge of
the last 24 and of the last 23 whole UTC hours (``SPAN_HOURS``), so that a
24 h read merges one span row and a few hour and minute rows per group
instead of ~25 hour rows (the ``sum()`` of ~2 KB numeric sketches is most
of a ``top``'s time).  The 24-hour window serves a 24 h range; in the first
minutes of an hour, before the deriver has made the last hour whole, the
23-hour window does, beside that hour's own row.

``refresh`` runs inside the deriver's transaction (``derive.run``), after
the hour rows of that run are written: it replaces the whole table by the
windows ending at the first hour not yet whole at the run's cut-off,
whenever they moved or one of their hours (or of the stored windows') was
just derived.  So a span row always equals the merge of the hour rows of its
window as of that transaction.  ``windows`` tells a reader the stored
windows of a kind; ``nightowl.rollups.plan`` uses one only where none of its
hours is stale or partial, and ``rebuild`` drops the span when it replaces
an hour inside it.
"""

from nightowl.rollups.plan import HOUR, floor_time
from nightowl.rollups.write import TABLES

TABLE = "nightowl_rollups_span"
SPAN_HOURS = (24, 23)

MERGE = """
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


def _exists(cur):
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (TABLE,))
    return cur.fetchone()[0]


def windows(cur, kind):
    """The stored windows ``[(start, until)]`` of ``kind``, longest first ([]: none)."""
    if not _exists(cur):
        return []
    out = []
    for order in ("", " DESC"):     # the primary key (kind, bucket, ...) finds both at once
        cur.execute("SELECT bucket, until FROM " + TABLE + " WHERE kind = %s "
                    "ORDER BY bucket" + order + " LIMIT 1", (kind,))
        row = cur.fetchone()
        if row and (row[0], row[1]) not in out:
            out.append((row[0], row[1]))
    return sorted(out, key=lambda w: w[0] - w[1])


def targets(cutoff):
    """The windows a deriver with this cut-off keeps: the SPAN_HOURS whole
    hours before the hour holding ``cutoff``."""
    until = floor_time(cutoff, 3600)
    return [(until - n * HOUR, until) for n in SPAN_HOURS]


def refresh(cur, cutoff, derived_hours):
    """Replace the span when its windows moved or an hour inside them is among
    ``derived_hours`` (just re-derived); True if replaced."""
    wanted = targets(cutoff)
    lo, hi = wanted[0]
    cur.execute("SELECT min(bucket), max(until) FROM " + TABLE)
    stored = cur.fetchone()
    if tuple(stored) == (lo, hi) and not any(lo <= h < hi for h in derived_hours):
        return False
    cur.execute("DELETE FROM " + TABLE)
    for start, until in wanted:
        cur.execute(MERGE.format(span=TABLE, hour=TABLES["hour"]),
                    {"start": start, "until": until})
    return True


def drop_around(cur, hour):
    """Forget the span if ``hour`` is inside its windows (a rebuild replaced it)."""
    if _exists(cur):
        cur.execute("DELETE FROM " + TABLE + " WHERE bucket <= %s AND until > %s", (hour, hour))
