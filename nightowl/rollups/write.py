"""
Upsert rollup folds inside the caller's transaction (the drain's batch
transaction, or a rebuild's).

The drain writes only the minute tier (``upsert``) and records the UTC hours
it touched in ``nightowl_rollups_pending`` (with the earliest minute written
in each); ``nightowl.rollups.derive``
replaces those hours' hour and day rows from the minutes later (schema 0021).
One statement per tier table, rows in primary-key order (ORDER BY in the
statement itself, so every writer locks keys in the same order: no 40P01
between workers or agents), merging additively: counts and sums add,
min/max fold, sketches add (``nightowl_sketch_add``), the first label stays.
Writers hold ``ROLLUP_LOCK`` shared for their transaction; ``rebuild`` takes
it exclusively while it replaces a range.
"""

from nightowl.rollups import aggregate

TABLES = {"minute": "nightowl_rollups_minute", "hour": "nightowl_rollups_hour",
          "day": "nightowl_rollups_day"}
PENDING = "nightowl_rollups_pending"

#: advisory lock key: pg_advisory_xact_lock(ROLLUP_LOCK)
ROLLUP_LOCK = 0x6e6f726f6c6c  # "norall"

UPSERT = """
INSERT INTO {table} AS r (bucket, kind, environment, group_key, label, attrs, count, errors,
                          sum_us, min_us, max_us, sketch)
SELECT to_timestamp(u.b), u.k, %(env)s, u.g, u.l, u.a::jsonb, u.n, u.e, u.s, u.mn, u.mx,
       u.sk::numeric
FROM unnest(%(b)s::bigint[], %(k)s::text[], %(g)s::text[], %(l)s::text[], %(a)s::text[],
            %(n)s::bigint[], %(e)s::bigint[], %(s)s::float8[], %(mn)s::bigint[],
            %(mx)s::bigint[], %(sk)s::text[]) AS u (b, k, g, l, a, n, e, s, mn, mx, sk)
ORDER BY u.k, u.b, u.g
ON CONFLICT (kind, bucket, environment, group_key) DO UPDATE SET
    count = r.count + EXCLUDED.count,
    errors = r.errors + EXCLUDED.errors,
    sum_us = r.sum_us + EXCLUDED.sum_us,
    min_us = LEAST(r.min_us, EXCLUDED.min_us),
    max_us = GREATEST(r.max_us, EXCLUDED.max_us),
    sketch = nightowl_sketch_add(r.sketch, EXCLUDED.sketch)
"""

MARK = ("INSERT INTO " + PENDING + " (environment, hour, minute) "
        "SELECT %s, to_timestamp(h), to_timestamp(m) FROM unnest(%s::bigint[], %s::bigint[]) AS u (h, m)")


def array_text(values):
    """A Postgres array literal (``'{...}'``) of ``values``: str (escaped),
    int, float or None.  Sent as one text parameter per column, it is parsed
    by array_in at C speed; a Python list becomes ``ARRAY[...]`` with one
    SQL constant per element, which cost the upsert more to parse and plan
    than to execute (a batch's minute rows are thousands of elements)."""
    out = []
    for v in values:
        if v is None:
            out.append("NULL")
        elif type(v) is str:
            out.append('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            out.append(repr(v))
    return "{" + ",".join(out) + "}"


def write_tier(cur, tier, environment, fold):
    """Upsert one tier's fold; returns the rows written."""
    b, k, g, lab, at, cnt, e, s, mn, mx, sk = aggregate.columns(fold)
    cur.execute(UPSERT.format(table=TABLES[tier]), dict(
        env=environment, b=array_text(b), k=array_text(k), g=array_text(g),
        l=array_text(lab), a=array_text(at), n=array_text(cnt), e=array_text(e),
        s=array_text(s), mn=array_text(mn), mx=array_text(mx), sk=array_text(sk)))
    return len(b)


def mark(cur, environment, minutes):
    """Record the UTC hours of the minute fold ``minutes`` as pending derivation,
    each with the earliest minute written in it (schema 0022)."""
    first = {}
    for bucket, _, _ in minutes:
        hour = bucket - bucket % 3600
        if bucket < first.get(hour, bucket + 1):
            first[hour] = bucket
    if first:
        hours = sorted(first)
        cur.execute(MARK, (environment, hours, [first[h] for h in hours]))


def upsert(cur, environment, minutes, lock=True):
    """Write the minute fold ``minutes`` and mark its hours pending (the hour
    and day tiers follow from ``derive``)."""
    if not minutes:
        return 0
    if lock:
        cur.execute("SELECT pg_advisory_xact_lock_shared(%s)", (ROLLUP_LOCK,))
    n = write_tier(cur, "minute", environment, minutes)
    mark(cur, environment, minutes)
    return n
