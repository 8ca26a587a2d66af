"""
A kind's most time-consuming groups (the "Most time-consuming" bars) from
the rollups without merging a sketch: ``query.top(order='sum')`` also sums
every group's sketches and takes percentiles the bars do not show, which
was half of a kind page's time at 200 groups.  The same tiers, pruned
edges and pending hours as ``query.top`` (``nightowl.rollups.plan.plan``),
in one REPEATABLE READ snapshot; rows as query.top's with the percentiles
None.
"""


import psycopg2.extensions

from nightowl.rollups.plan import plan, where
from nightowl.rollups.query import TUNING, target_name as _target


def _begin(conn):
    if conn.autocommit or (conn.get_transaction_status()
                           != psycopg2.extensions.TRANSACTION_STATUS_IDLE):
        return False
    conn.cursor().execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    return True


def _union(kind, environment, segs, columns, extra=""):
    parts, args = [], []
    for tier, start, end in segs:
        table, cond, cond_args = where(tier, start, end)
        parts.append("SELECT {} FROM {} WHERE kind = %s AND {}{}{}"
                     .format(columns, table, cond,
                             "" if environment is None else " AND environment = %s", extra))
        args += [kind] + cond_args + ([] if environment is None else [environment])
    return " UNION ALL ".join(parts), args



def by_sum(conn, kind, since, until, environment=None, limit=10):
    """[{'group_key','target','count','errors','sum_ms','max_ms', p*_ms: None}...]"""
    began = _begin(conn)
    try:
        segs = plan(conn, kind, since, until, environment)
        if not segs:
            return []
        rows_sql, args = _union(kind, environment, segs,
                                "group_key, count, errors, sum_us, max_us")
        cur = conn.cursor()
        cur.execute(TUNING + "SELECT group_key, sum(count)::bigint, "
                    "sum(errors)::bigint, sum(sum_us), max(max_us) FROM ({}) AS r "
                    "GROUP BY group_key ORDER BY 4 DESC NULLS LAST, group_key LIMIT %s".format(
                        rows_sql), args + [int(limit)])
        found = cur.fetchall()
        labels = {}
        if found:
            label_sql, label_args = _union(kind, environment, segs,
                                           "bucket, group_key, label, attrs::text AS attrs",
                                           " AND group_key = ANY(%s)")
            keys = [r[0] for r in found]
            label_args = _with_keys(label_args, len(segs), keys)
            cur.execute("SELECT DISTINCT ON (group_key) group_key, label, attrs FROM ({}) AS l "
                        "ORDER BY group_key, bucket DESC".format(label_sql), label_args)
            labels = {g: (lab, attrs) for g, lab, attrs in cur.fetchall()}
    finally:
        if began:
            conn.rollback()
    out = []
    for group_key, count, errors, sum_us, max_us in found:
        label, attrs = labels.get(group_key, (None, None))
        out.append({"group_key": group_key, "target": _target(kind, label, attrs),
                    "count": int(count), "errors": int(errors),
                    "sum_ms": None if sum_us is None else float(sum_us) / 1000.0,
                    "max_ms": None if max_us is None else float(max_us) / 1000.0,
                    "p50_ms": None, "p95_ms": None, "p99_ms": None})
    return out


def _with_keys(args, n, keys):
    """The per-segment argument lists of ``_union(..., extra=' ... ANY(%s)')``,
    each followed by ``keys``."""
    per = len(args) // n
    out = []
    for i in range(n):
        out += args[i * per:(i + 1) * per] + [keys]
    return out

