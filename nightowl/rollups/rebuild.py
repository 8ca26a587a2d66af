"""
Recompute rollups from the raw rows, and tier retention.

``rebuild_hour(conn, environment_rows...)``: for one UTC hour, in one
transaction holding ``ROLLUP_LOCK`` exclusively (drains wait; their rows are
then added on top), delete that hour's minute and hour rows, re-fold the raw
rows of the hour through the same ``aggregate.add_record`` the drain uses,
write them, and recompute the hour's day row from the hour tier.  Replacing,
never adding: running it twice gives the same rows.

``prune(conn, minute_days, hour_days, day_days)``: delete tier rows older
than their retention, by the DATABASE clock (``now()``), never the host's;
the hour and day rows under ``DERIVE_LOCK``, which a dashboard totals fill
holds (see ``prune``).
"""

from datetime import timedelta

from nightowl import records
from nightowl.rollups import aggregate, derive, span, write

HOUR = timedelta(hours=1)

#: raw columns needed per record type, as (record key, column)
_PREFIX = (("_group", "group_hash"), ("user", "user_id"))


def _needed(t):
    table, spec = records.TABLES[t]
    cols = list(_PREFIX) + [(k, c) for c, k, _ in spec
                            if c not in ("headers", "payload", "context", "trace", "extra",
                                         "message", "subject")]
    if t == "exception":
        cols[0] = ("_group", "fingerprint")
    return table, cols


def _sources():
    """[(table, type or None (jobs: record_type), [(key, column)])] one per raw table."""
    out = []
    for t in records.TABLES:
        if t == "job-attempt" or t not in aggregate.KINDS:
            continue
        table, cols = _needed(t)
        out.append((table, None if t == "queued-job" else t, cols))
    return out


def fold_raw(conn, environment, start, end):
    """The minute fold of the raw rows with created_at in [start, end)."""
    fold = {}
    for table, t, cols in _sources():
        select = ", ".join(c for _, c in cols)
        if t is None:
            select += ", record_type"
        cur = conn.cursor()
        cur.execute("SELECT (extract(epoch FROM date_trunc('minute', created_at)))::bigint, {} "
                    "FROM {} WHERE environment = %s AND created_at >= %s AND created_at < %s "
                    "ORDER BY created_at, id".format(select, table),
                    (environment, start, end))
        keys = [k for k, _ in cols]
        for row in cur:
            rec = dict(zip(keys, row[1:]))
            rec["t"] = row[-1] if t is None else t
            aggregate.add_record(fold, rec, int(row[0]))
    return fold


DAY_FROM_HOURS = """
INSERT INTO nightowl_rollups_day (bucket, kind, environment, group_key, label, attrs, count,
                                  errors, sum_us, min_us, max_us, sketch)
SELECT %(day)s, kind, environment, group_key, (array_agg(label ORDER BY bucket))[1],
       (array_agg(attrs ORDER BY bucket))[1], sum(count), sum(errors), sum(sum_us),
       min(min_us), max(max_us), nightowl_sketch_merge(sketch)
FROM nightowl_rollups_hour
WHERE environment = %(env)s AND bucket >= %(day)s AND bucket < %(day)s + interval '1 day'
GROUP BY kind, environment, group_key
ORDER BY kind, group_key
"""


def environments(conn, start, end):
    """Environments with raw rows or rollups in [start, end)."""
    parts = ["SELECT DISTINCT environment FROM {} WHERE created_at >= %(s)s AND "
             "created_at < %(e)s".format(t) for t in records.RAW_TABLES]
    parts.append("SELECT DISTINCT environment FROM nightowl_rollups_minute "
                 "WHERE bucket >= %(s)s AND bucket < %(e)s")
    cur = conn.cursor()
    cur.execute(" UNION ".join(parts), {"s": start, "e": end})
    return sorted(e for (e,) in cur.fetchall())


def rebuild_hour(conn, hour):
    """Replace the rollups of the UTC hour starting at ``hour`` (aware datetime);
    returns the number of minute rows written.  Commits."""
    end = hour + HOUR
    day = hour.replace(hour=0)
    n = 0
    try:
        cur = conn.cursor()
        cur.execute("SET LOCAL lock_timeout = '60s'; SET LOCAL TimeZone = 'UTC'")
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (write.ROLLUP_LOCK,))
        envs = environments(conn, hour, end)
        cur.execute("DELETE FROM nightowl_rollups_minute WHERE bucket >= %s AND bucket < %s",
                    (hour, end))
        cur.execute("DELETE FROM nightowl_rollups_hour WHERE bucket = %s", (hour,))
        # the hour rows written below are whole: a deriver's cut-off marker
        # (schema 0022) would make readers add its later minutes twice
        cur.execute("DELETE FROM " + write.PENDING + " WHERE hour = %s AND derived", (hour,))
        span.drop_around(cur, hour)
        for env in envs:
            minutes = fold_raw(conn, env, hour, end)
            tiers = aggregate.tiers(minutes)
            for tier in ("minute", "hour"):
                fold = tiers[tier]
                if fold:
                    write_tier(cur, tier, env, fold)
            n += len(minutes)
        cur.execute("DELETE FROM nightowl_rollups_day WHERE bucket = %s", (day,))
        for env in _hour_envs(cur, day):
            cur.execute(DAY_FROM_HOURS, {"day": day, "env": env})
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return n


def _hour_envs(cur, day):
    cur.execute("SELECT DISTINCT environment FROM nightowl_rollups_hour "
                "WHERE bucket >= %s AND bucket < %s + interval '1 day'", (day, day))
    return sorted(e for (e,) in cur.fetchall())


write_tier = write.write_tier


def hours(since, until):
    """The UTC hours touching [since, until)."""
    from nightowl.rollups.query import floor_time as _floor
    t = _floor(since, 3600)
    out = []
    while t < until:
        out.append(t)
        t += HOUR
    return out


def prune(conn, minute_days, hour_days, day_days):
    """Delete expired tier rows (database clock); returns {table: rows deleted}. Commits."""
    out = {}
    cur = conn.cursor()
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (write.TABLES["minute"],))
    if not cur.fetchone()[0]:
        conn.rollback()
        return out      # a database from before the rollups migration
    _delete_expired(cur, out, write.TABLES["minute"], minute_days)
    conn.commit()
    # The hour and day rows feed the dashboard's kept totals, which a fill
    # merges holding DERIVE_LOCK (nightowl.dashboard.totals.fill).  Deleted
    # under a fill in flight, their triggers would miss its uncommitted
    # total, and it would then commit a total of rows gone: wait for it
    # (derivers and fills only try this lock, so they skip a round instead).
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (derive.DERIVE_LOCK,))
    _delete_expired(cur, out, write.TABLES["hour"], hour_days)
    _delete_expired(cur, out, write.TABLES["day"], day_days)
    conn.commit()
    return out


def _delete_expired(cur, out, table, days):
    cur.execute("DELETE FROM {} WHERE bucket < now() - make_interval(days => %s)".format(table),
                (int(days),))
    out[table] = cur.rowcount


def verify(conn, since, until, tiers=("minute", "hour")):
    """The fault oracle: differences between the stored rollups of ``tiers`` in
    [since, until) and a fold of the raw rows ([] when exact).  First derives
    the pending hours (as the agent does every minute: ``derive.run``), the
    current one whole, then reads only.  Pass "day" only for a range of whole UTC days (a cut day
    cannot match)."""
    import time

    for _ in range(100):            # an agent's deriver may hold the lock for a moment
        if derive.run(conn, whole=True) is not None:
            break
        time.sleep(0.1)
    cur = conn.cursor()
    cur.execute("SET TimeZone = 'UTC'")
    diffs = []
    for env in environments(conn, since, until):
        minutes = fold_raw(conn, env, since, until)
        folds = aggregate.tiers(minutes)
        for tier in tiers:
            want = {k: (r.count, r.errors, r.min_us, r.max_us, r.sketch or {})
                    for k, r in folds[tier].items()}
            cur.execute("SELECT (extract(epoch FROM bucket))::bigint, kind, group_key, count, "
                        "errors, min_us, max_us, sketch FROM {} WHERE environment = %s "
                        "AND bucket >= %s AND bucket < %s".format(write.TABLES[tier]),
                        (env, since, until))
            from nightowl.rollups import sketch
            got = {(b, k, g): (n, e, mn, mx, sketch.decode(sk))
                   for b, k, g, n, e, mn, mx, sk in cur.fetchall()}
            for k in sorted(set(want) | set(got)):
                if want.get(k) != got.get(k):
                    diffs.append((tier, env, k, want.get(k), got.get(k)))
    conn.rollback()
    return diffs
