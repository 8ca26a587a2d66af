"""
The database ``nightowl bench dashboard`` times pages against: 10 million
raw rows over the 30 days before an anchor time (generate_series inside
Postgres, not Python inserts), in the daily partitions the agent would have
made, and the rollup rows the drain (plus derive and tier retention) would
have written for exactly those rows.

The rollups are folded by the drain's own code (``rebuild.fold_raw`` ->
``aggregate.tiers`` -> ``write.write_tier``), hour by hour on ``jobs``
processes, so the pages' figures are the raw rows' figures.  Minute rows are
kept for the last ``MINUTE_DAYS`` days only (the default
``--rollup-retention-minutes``), as retention would leave them.

The anchor and the stages done are kept in ``nightowl_bench_seed``, so a
later run reuses the database (even one interrupted after the raw rows) and
times pages at the anchor, not at the wall clock (``clock_offset``).
"""

import datetime
import multiprocessing
import time

import psycopg2

SPAN = 30 * 86400
MINUTE_DAYS = 7

#: t(i) spreads rows evenly over the SPAN before the anchor, newest last
_T = ("timestamptz '{anchor}' - ((({n} - i)::float8 / {n}) * {span}) * interval '1 second' "
      "- interval '1 millisecond'")
_FROM = " FROM generate_series(1, {n}) i, LATERAL (SELECT " + _T + " AS t) x"
#: (table, rows, INSERT ... SELECT over generate_series(1, n) i; {n}, {span}, {anchor}, {m}:
#: the request count, so every other table's trace ids point at seeded requests)
SEED = [
    ("nightowl_requests", 3000000,
     "INSERT INTO nightowl_requests (created_at, timestamp, environment, group_hash, method, url, "
     "route_path, status_code, duration, trace_id, user_id) SELECT t, extract(epoch FROM t), "
     "CASE WHEN i % 10 = 0 THEN 'staging' ELSE 'production' END, 'g' || (i % 50), "
     "CASE WHEN i % 5 = 0 THEN 'POST' ELSE 'GET' END, '/route/' || (i % 50) || '/' || (i % 997), "
     "'/route/' || (i % 50), CASE WHEN i % 100 = 0 THEN 500 ELSE 200 END, "
     "(2000 + random() ^ 4 * 3000000)::bigint, md5('r' || i)::uuid, 'u' || (i % 5000)" + _FROM),
    ("nightowl_queries", 4700000,
     "INSERT INTO nightowl_queries (created_at, timestamp, environment, group_hash, trace_id, "
     "execution_id, execution_source, sql_query, duration, connection) SELECT t, "
     "extract(epoch FROM t), 'production', 'q' || (i % 200), md5('r' || (i % {m}))::uuid, "
     "md5('r' || (i % {m}))::uuid, 'request', 'select * from table_' || (i % 200) || "
     "' where id = ?', (100 + random() ^ 4 * 200000)::bigint, 'pgsql'" + _FROM),
    # N+1: 30,000 requests run one query group 10 times (the ten rows i of one
    # request share i / 10: its trace and its group)
    ("nightowl_queries", 300000,
     "INSERT INTO nightowl_queries (created_at, timestamp, environment, group_hash, trace_id, "
     "execution_id, execution_source, sql_query, duration, connection) SELECT t, "
     "extract(epoch FROM t), 'production', 'nplus1-' || (i / 10 % 7), "
     "md5('r' || (i / 10 * 100 % {m}))::uuid, md5('r' || (i / 10 * 100 % {m}))::uuid, 'request', "
     "'select * from items where order_id = ? /* ' || (i / 10 % 7) || ' */', 900, 'pgsql'"
     + _FROM),
    ("nightowl_cache_events", 1000000,
     "INSERT INTO nightowl_cache_events (created_at, timestamp, environment, group_hash, trace_id, "
     "execution_id, event_type, key, store, duration) SELECT t, extract(epoch FROM t), "
     "'production', 'c' || (i % 100), md5('r' || (i * 3 % {m}))::uuid, "
     "md5('r' || (i * 3 % {m}))::uuid, CASE WHEN i % 4 = 0 THEN 'miss' WHEN i % 9 = 0 "
     "THEN 'write' ELSE 'hit' END, 'key:' || (i % 100), CASE WHEN i % 3 = 0 THEN 'file' ELSE "
     "'redis' END, (50 + random() * 2000)::bigint" + _FROM),
    ("nightowl_exceptions", 200000,
     "INSERT INTO nightowl_exceptions (created_at, timestamp, environment, trace_id, execution_id, "
     "class, message, file, line, trace, handled, fingerprint, user_id) SELECT t, "
     "extract(epoch FROM t), 'production', md5('r' || (i * 7 % {m}))::uuid, "
     "md5('r' || (i * 7 % {m}))::uuid, 'App\\Exceptions\\E' || (i % 40), 'failure ' || (i % 40), "
     "'app/Services/S.php', i % 300, '[{{\"file\": \"app/Services/S.php:12\", \"source\": "
     "\"S->run()\"}}]', false, 'fp' || (i % 40), 'u' || (i % 5000)" + _FROM),
    ("nightowl_jobs", 300000,
     "INSERT INTO nightowl_jobs (created_at, timestamp, environment, group_hash, trace_id, "
     "attempt_id, job_class, queue, status, duration, record_type) SELECT t, "
     "extract(epoch FROM t), 'production', 'j' || (i % 30), md5('r' || (i * 11 % {m}))::uuid, "
     "md5('a' || i)::uuid, 'App\\Jobs\\Job' || (i % 30), 'default', CASE WHEN i % 50 = 0 "
     "THEN 'failed' ELSE 'processed' END, (1000 + random() ^ 3 * 5000000)::bigint, "
     "'job-attempt'" + _FROM),
    ("nightowl_outgoing_requests", 300000,
     "INSERT INTO nightowl_outgoing_requests (created_at, timestamp, environment, group_hash, "
     "trace_id, execution_id, host, method, url, status_code, duration) SELECT t, "
     "extract(epoch FROM t), 'production', 'o' || (i % 12), md5('r' || (i * 13 % {m}))::uuid, "
     "md5('r' || (i * 13 % {m}))::uuid, 'api' || (i % 12) || '.example.com', 'GET', "
     "'https://api' || (i % 12) || '.example.com/v1/x', CASE WHEN i % 70 = 0 THEN 502 ELSE 200 "
     "END, (5000 + random() ^ 3 * 900000)::bigint" + _FROM),
    ("nightowl_logs", 100000,
     "INSERT INTO nightowl_logs (created_at, timestamp, environment, trace_id, execution_id, level, "
     "message) SELECT t, extract(epoch FROM t), 'production', md5('r' || (i * 17 % {m}))::uuid, "
     "md5('r' || (i * 17 % {m}))::uuid, CASE WHEN i % 5 = 0 THEN 'error' ELSE 'info' END, "
     "'log line ' || i" + _FROM),
    ("nightowl_commands", 50000,
     "INSERT INTO nightowl_commands (created_at, timestamp, environment, group_hash, trace_id, name, "
     "command, exit_code, duration) SELECT t, extract(epoch FROM t), 'production', 'cmd' || (i % 8), "
     "md5('c' || i)::uuid, 'cmd:' || (i % 8), 'php artisan cmd:' || (i % 8), "
     "CASE WHEN i % 40 = 0 THEN 1 ELSE 0 END, (10000 + random() * 9000000)::bigint" + _FROM),
    ("nightowl_scheduled_tasks", 50000,
     "INSERT INTO nightowl_scheduled_tasks (created_at, timestamp, environment, group_hash, "
     "trace_id, command, expression, status, duration) SELECT t, extract(epoch FROM t), "
     "'production', 'st' || (i % 6), md5('s' || i)::uuid, 'php artisan task:' || (i % 6), "
     "'* * * * *', CASE WHEN i % 60 = 0 THEN 'failed' "
     "ELSE 'processed' END, (10000 + random() * 9000000)::bigint" + _FROM),
]
ISSUES = ("INSERT INTO nightowl_issues (type, status, exception_class, exception_message, group_hash, "
          "first_seen_at, last_seen_at, occurrences_count, users_count, environment) SELECT "
          "'exception', 'open', 'App\\Exceptions\\E' || k, 'failure ' || k, 'fp' || k, "
          "%(anchor)s - interval '30 days', %(anchor)s, 5000, 100, 'production' "
          "FROM generate_series(0, 39) k")
META = "nightowl_bench_seed"


def dsn_for(admin, name):
    return admin.replace("dbname=postgres", "dbname=" + name) if "dbname=postgres" in admin \
        else admin + " dbname=" + name


def _stages(cur):
    cur.execute("CREATE TABLE IF NOT EXISTS " + META + " (stage text PRIMARY KEY, "
                "anchor timestamptz NOT NULL, scale float8 NOT NULL, seconds float8)")
    cur.execute("SELECT stage, anchor, scale FROM " + META)
    return {stage: (anchor, scale) for stage, anchor, scale in cur.fetchall()}


def _done(cur, stage, anchor, scale, seconds):
    cur.execute("INSERT INTO " + META + " VALUES (%s, %s, %s, %s)",
                (stage, anchor, scale, seconds))


def prepare(admin, name, scale=1.0, jobs=2, out=print, days=SPAN // 86400):
    """Create, migrate and seed database ``name`` (each stage once) with rows
    over ``days`` days; returns (dsn, anchor): the rows end just before ``anchor``."""
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
    if not cur.fetchone():
        cur.execute("CREATE DATABASE " + name)
    conn.close()
    dsn = dsn_for(admin, name)
    from nightowl import migrate
    migrate.apply(dsn)
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    stages = _stages(cur)
    conn.commit()
    if "raw" in stages:
        anchor, scale = stages["raw"]
        cur.execute("SELECT extract(epoch FROM %s - min(created_at)) FROM nightowl_requests",
                    (anchor,))
        span = int(cur.fetchone()[0] or 0) + 1
        conn.commit()
        out("reusing the raw rows of {} (anchor {}, scale {})".format(name, anchor, scale))
    else:
        anchor, span = _now_minute(cur), int(days * 86400)
        conn.commit()
        _seed_raw(conn, anchor, scale, span, out)
    if "rollups" not in stages:
        _seed_rollups(conn, dsn, anchor, span, jobs, out)
    else:
        out("reusing the rollups of {}".format(name))
    conn.close()
    return dsn, anchor


def _now_minute(cur):
    cur.execute("SELECT date_trunc('minute', now())")
    return cur.fetchone()[0]


def _seed_raw(conn, anchor, scale, span, out):
    from nightowl import partitions
    started = time.monotonic()
    conn.commit()
    partitions.ensure_partitions(conn, now=anchor, days_behind=span // 86400 + 1, days_ahead=1)
    cur = conn.cursor()
    m = max(1, int(SEED[0][1] * scale))
    total = 0
    for table, n, sql in SEED:
        n = max(10, int(n * scale))
        t0 = time.monotonic()
        cur.execute(sql.format(n=n, m=m, span=span, anchor=anchor.isoformat()))
        conn.commit()
        total += n
        out("seeded {:>9,} rows into {} in {:.0f} s".format(n, table, time.monotonic() - t0))
    cur.execute(ISSUES, {"anchor": anchor})
    _done(cur, "raw", anchor, scale, time.monotonic() - started)
    conn.commit()
    conn.autocommit = True
    cur.execute("ANALYZE")
    conn.autocommit = False
    out("seeded {:,} raw rows in {:.0f} s".format(total, time.monotonic() - started))


def hours_of(anchor, span=SPAN):
    """The UTC hours the seeded rows fall in, oldest first."""
    from nightowl.rollups import rebuild
    return rebuild.hours(anchor - datetime.timedelta(seconds=span + 1), anchor)


def fold_hours(dsn, hours, minute_from):
    """Fold and write the rollups of ``hours`` (a worker process's share): the
    hour tier always, the minute tier from ``minute_from`` on.  Returns rows."""
    from nightowl.rollups import aggregate, rebuild, write
    conn = psycopg2.connect(dsn, options="-c TimeZone=UTC")
    rows = 0
    try:
        for hour in hours:
            cur = conn.cursor()
            for env in rebuild.environments(conn, hour, hour + rebuild.HOUR):
                tiers = aggregate.tiers(rebuild.fold_raw(conn, env, hour, hour + rebuild.HOUR))
                for tier in ("minute", "hour"):
                    if tiers[tier] and (tier == "hour" or hour >= minute_from):
                        rows += write.write_tier(cur, tier, env, tiers[tier])
            conn.commit()
    finally:
        conn.close()
    return rows


def _derive_at(conn, anchor):
    """Leave the tiers as a running agent's deriver leaves them at ``anchor``:
    the current hour derived up to two minutes back (its marker, schema 0022)
    and the span of the 23 whole hours before it."""
    from nightowl.rollups import derive
    hour = anchor.replace(minute=0, second=0, microsecond=0)
    cur = conn.cursor()
    cur.execute("INSERT INTO nightowl_rollups_pending (environment, hour, minute) "
                "SELECT DISTINCT environment, %s::timestamptz, %s::timestamptz "
                "FROM nightowl_rollups_minute WHERE bucket >= %s", (hour, hour, hour))
    conn.commit()
    derive.run(conn, cutoff=anchor.replace(second=0, microsecond=0) - derive.SETTLE)


def _seed_rollups(conn, dsn, anchor, span, jobs, out):
    from nightowl.rollups import rebuild
    started = time.monotonic()
    hours = hours_of(anchor, span)
    minute_from = anchor - datetime.timedelta(days=MINUTE_DAYS)
    cur = conn.cursor()
    for table in ("nightowl_rollups_minute", "nightowl_rollups_hour", "nightowl_rollups_day",
                  "nightowl_rollups_pending", "nightowl_rollups_span"):
        cur.execute("DELETE FROM " + table)     # an interrupted earlier attempt
    conn.commit()
    shares = [hours[i::jobs] for i in range(jobs)]
    if jobs > 1:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(jobs) as pool:
            rows = sum(pool.starmap(fold_hours, [(dsn, s, minute_from) for s in shares]))
    else:
        rows = fold_hours(dsn, hours, minute_from)
    days = sorted({h.replace(hour=0) for h in hours})
    for day in days:
        for env in rebuild._hour_envs(cur, day):
            cur.execute(rebuild.DAY_FROM_HOURS, {"day": day, "env": env})
    _derive_at(conn, anchor)
    _done(cur, "rollups", anchor, 0, time.monotonic() - started)
    conn.commit()
    conn.autocommit = True
    cur.execute("VACUUM ANALYZE nightowl_rollups_minute")
    cur.execute("VACUUM ANALYZE nightowl_rollups_hour")
    cur.execute("VACUUM ANALYZE nightowl_rollups_day")
    conn.autocommit = False
    out("wrote {:,} minute/hour rollup rows and {} days over {} hours in {:.0f} s".format(
        rows, len(days), len(hours), time.monotonic() - started))
