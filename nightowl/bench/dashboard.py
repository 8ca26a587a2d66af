"""
``nightowl bench dashboard``: seed a database with 10 million raw rows over
30 days (generate_series inside Postgres, not Python inserts), serve the
dashboard from it on 127.0.0.1, and time every page: p50 / p99 of the
server's answer per page and range, against the 300 ms target.

With the PROVISIONAL ``nightowl.rollups.query`` (branch i13) the figures
are those of raw-table percentile queries, not of rollups.

The database (default ``nightowl_bench_dashboard``) is kept for the next run
unless ``--drop``; a seeded one is reused.
"""

import http.client
import statistics
import threading
import time

import psycopg2

DEFAULT_DB = "nightowl_bench_dashboard"
TARGET_MS = 300.0

#: (table, rows, SELECT producing the rows from generate_series(1, n) i; {n}, {span})
#: t(i) spreads rows evenly over the last 30 days, newest last.
_T = "now() - ((({n} - i)::float8 / {n}) * {span}) * interval '1 second'"
SEED = [
    ("nightowl_requests", 3000000,
     "INSERT INTO nightowl_requests (created_at, timestamp, environment, group_hash, method, url, "
     "route_path, status_code, duration, trace_id, user_id) SELECT t, extract(epoch FROM t), "
     "CASE WHEN i % 10 = 0 THEN 'staging' ELSE 'production' END, 'g' || (i % 50), "
     "CASE WHEN i % 5 = 0 THEN 'POST' ELSE 'GET' END, '/route/' || (i % 50) || '/' || (i % 997), "
     "'/route/' || (i % 50), CASE WHEN i % 100 = 0 THEN 500 ELSE 200 END, "
     "(2000 + random() ^ 4 * 3000000)::bigint, md5('r' || i)::uuid, 'u' || (i % 5000) "
     "FROM generate_series(1, {n}) i, LATERAL (SELECT " + _T + " AS t) x"),
    ("nightowl_queries", 4700000,
     "INSERT INTO nightowl_queries (created_at, timestamp, environment, group_hash, trace_id, "
     "execution_id, execution_source, sql_query, duration, connection) SELECT t, "
     "extract(epoch FROM t), 'production', 'q' || (i % 200), md5('r' || (i % 3000000))::uuid, "
     "md5('r' || (i % 3000000))::uuid, 'request', 'select * from table_' || (i % 200) || "
     "' where id = ?', (100 + random() ^ 4 * 200000)::bigint, 'pgsql' "
     "FROM generate_series(1, {n}) i, LATERAL (SELECT " + _T + " AS t) x"),
    ("nightowl_queries", 300000,   # N+1: 30,000 requests run one query group 10 times
     "INSERT INTO nightowl_queries (created_at, timestamp, environment, group_hash, trace_id, "
     "execution_id, execution_source, sql_query, duration, connection) SELECT t, "
     "extract(epoch FROM t), 'production', 'nplus1-' || (i % 7), md5('r' || (i / 10 * 100))::uuid, "
     "md5('r' || (i / 10 * 100))::uuid, 'request', 'select * from items where order_id = ? /* ' "
     "|| (i % 7) || ' */', 900, 'pgsql' "
     "FROM generate_series(1, {n}) i, LATERAL (SELECT " + _T + " AS t) x"),
    ("nightowl_cache_events", 1000000,
     "INSERT INTO nightowl_cache_events (created_at, timestamp, environment, group_hash, trace_id, "
     "execution_id, event_type, key, store, duration) SELECT t, extract(epoch FROM t), "
     "'production', 'c' || (i % 100), md5('r' || (i * 3 % 3000000))::uuid, "
     "md5('r' || (i * 3 % 3000000))::uuid, CASE WHEN i % 4 = 0 THEN 'miss' WHEN i % 9 = 0 "
     "THEN 'write' ELSE 'hit' END, 'key:' || (i % 100), CASE WHEN i % 3 = 0 THEN 'file' ELSE "
     "'redis' END, (50 + random() * 2000)::bigint "
     "FROM generate_series(1, {n}) i, LATERAL (SELECT " + _T + " AS t) x"),
    ("nightowl_exceptions", 200000,
     "INSERT INTO nightowl_exceptions (created_at, timestamp, environment, trace_id, execution_id, "
     "class, message, file, line, trace, handled, fingerprint, user_id) SELECT t, "
     "extract(epoch FROM t), 'production', md5('r' || (i * 7 % 3000000))::uuid, "
     "md5('r' || (i * 7 % 3000000))::uuid, 'App\\Exceptions\\E' || (i % 40), 'failure ' || (i % 40), "
     "'app/Services/S.php', i % 300, '[{{\"file\": \"app/Services/S.php:12\", \"source\": "
     "\"S->run()\"}}]', false, 'fp' || (i % 40), 'u' || (i % 5000) "
     "FROM generate_series(1, {n}) i, LATERAL (SELECT " + _T + " AS t) x"),
    ("nightowl_jobs", 300000,
     "INSERT INTO nightowl_jobs (created_at, timestamp, environment, group_hash, trace_id, "
     "attempt_id, job_class, status, duration, record_type) SELECT t, extract(epoch FROM t), "
     "'production', 'j' || (i % 30), md5('r' || (i * 11 % 3000000))::uuid, md5('a' || i)::uuid, "
     "'App\\Jobs\\Job' || (i % 30), CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'processed' END, "
     "(1000 + random() ^ 3 * 5000000)::bigint, 'job-attempt' "
     "FROM generate_series(1, {n}) i, LATERAL (SELECT " + _T + " AS t) x"),
    ("nightowl_outgoing_requests", 300000,
     "INSERT INTO nightowl_outgoing_requests (created_at, timestamp, environment, group_hash, "
     "trace_id, execution_id, host, method, url, status_code, duration) SELECT t, "
     "extract(epoch FROM t), 'production', 'o' || (i % 12), md5('r' || (i * 13 % 3000000))::uuid, "
     "md5('r' || (i * 13 % 3000000))::uuid, 'api' || (i % 12) || '.example.com', 'GET', "
     "'https://api' || (i % 12) || '.example.com/v1/x', CASE WHEN i % 70 = 0 THEN 502 ELSE 200 "
     "END, (5000 + random() ^ 3 * 900000)::bigint "
     "FROM generate_series(1, {n}) i, LATERAL (SELECT " + _T + " AS t) x"),
    ("nightowl_logs", 100000,
     "INSERT INTO nightowl_logs (created_at, timestamp, environment, trace_id, execution_id, level, "
     "message) SELECT t, extract(epoch FROM t), 'production', md5('r' || (i * 17 % 3000000))::uuid, "
     "md5('r' || (i * 17 % 3000000))::uuid, CASE WHEN i % 5 = 0 THEN 'error' ELSE 'info' END, "
     "'log line ' || i FROM generate_series(1, {n}) i, LATERAL (SELECT " + _T + " AS t) x"),
    ("nightowl_commands", 50000,
     "INSERT INTO nightowl_commands (created_at, timestamp, environment, group_hash, trace_id, name, "
     "command, exit_code, duration) SELECT t, extract(epoch FROM t), 'production', 'cmd' || (i % 8), "
     "md5('c' || i)::uuid, 'cmd:' || (i % 8), 'php artisan cmd:' || (i % 8), "
     "CASE WHEN i % 40 = 0 THEN 1 ELSE 0 END, (10000 + random() * 9000000)::bigint "
     "FROM generate_series(1, {n}) i, LATERAL (SELECT " + _T + " AS t) x"),
    ("nightowl_scheduled_tasks", 50000,
     "INSERT INTO nightowl_scheduled_tasks (created_at, timestamp, environment, group_hash, "
     "trace_id, command, status, duration) SELECT t, extract(epoch FROM t), 'production', "
     "'st' || (i % 6), md5('s' || i)::uuid, 'php artisan task:' || (i % 6), CASE WHEN i % 60 = 0 "
     "THEN 'failed' ELSE 'processed' END, (10000 + random() * 9000000)::bigint "
     "FROM generate_series(1, {n}) i, LATERAL (SELECT " + _T + " AS t) x"),
]
ISSUES = ("INSERT INTO nightowl_issues (type, status, exception_class, exception_message, group_hash, "
          "first_seen_at, last_seen_at, occurrences_count, users_count, environment) SELECT "
          "'exception', 'open', 'App\\Exceptions\\E' || k, 'failure ' || k, 'fp' || k, "
          "now() - interval '30 days', now(), 5000, 100, 'production' FROM generate_series(0, 39) k")
SPAN = 30 * 86400


def configure(parser):
    parser.add_argument("--admin-dsn", default="host=127.0.0.1 user=postgres dbname=postgres",
                        help="DSN of a database to create the bench database from")
    parser.add_argument("--database", default=DEFAULT_DB)
    parser.add_argument("--iterations", type=int, default=10, help="timed loads per page")
    parser.add_argument("--drop", action="store_true", help="drop the database afterwards")


def _dsn(admin, name):
    return admin.replace("dbname=postgres", "dbname=" + name) if "dbname=postgres" in admin \
        else admin + " dbname=" + name


def prepare(admin, name, out=print):
    conn = psycopg2.connect(admin)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
    if not cur.fetchone():
        cur.execute("CREATE DATABASE " + name)
    conn.close()
    dsn = _dsn(admin, name)
    from nightowl import migrate
    migrate.apply(dsn)
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("SELECT count(*) FROM nightowl_issues")
    if cur.fetchone()[0]:
        out("reusing the seeded database {}".format(name))
        conn.close()
        return dsn
    total = 0
    started = time.monotonic()
    for table, n, sql in SEED:
        t0 = time.monotonic()
        cur.execute(sql.format(n=n, span=SPAN))
        conn.commit()
        total += n
        out("seeded {:>9,} rows into {} in {:.0f} s".format(n, table, time.monotonic() - t0))
    cur.execute(ISSUES)
    conn.commit()
    conn.autocommit = True
    cur.execute("ANALYZE")
    out("seeded {:,} raw rows in {:.0f} s".format(total, time.monotonic() - started))
    conn.close()
    return dsn


def pages(dsn):
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("SELECT id FROM nightowl_issues ORDER BY id LIMIT 1")
    issue = cur.fetchone()[0]
    cur.execute("SELECT trace_id FROM nightowl_requests WHERE created_at > now() - interval '1 hour' "
                "LIMIT 1")
    trace = cur.fetchone()[0]
    conn.close()
    out = []
    for rng in ("1h", "24h", "7d", "30d"):
        q = "?range=" + rng
        out += [("overview", rng, "/" + q), ("requests", rng, "/requests" + q),
                ("route", rng, "/requests/group" + q + "&key=g7%7CGET%7C2xx&target=%2Froute%2F7"),
                ("queries", rng, "/queries" + q), ("jobs", rng, "/jobs" + q),
                ("outgoing", rng, "/outgoing" + q), ("cache", rng, "/cache" + q),
                ("commands", rng, "/commands" + q), ("scheduled", rng, "/scheduled" + q),
                ("issues", rng, "/issues" + q), ("issue", rng, "/issues/{}{}".format(issue, q))]
    out.append(("trace", "-", "/trace/{}".format(trace)))
    return out


def serve(dsn):
    from twisted.internet import reactor
    from nightowl.dashboard.service import DashboardService
    svc = DashboardService("tcp:0:interface=127.0.0.1", dsn, reactor=reactor,
                           statement_timeout_ms=120000)
    svc.startService()
    thread = threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False},
                              daemon=True)
    thread.start()
    return reactor, svc, thread


def timed(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    t0 = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()
    response.read()
    elapsed = (time.perf_counter() - t0) * 1000.0
    conn.close()
    return response.status, elapsed


def run(args):
    dsn = prepare(args.admin_dsn, args.database)
    reactor, svc, thread = serve(dsn)
    try:
        port = svc.port()
        print("{:<10} {:>5} {:>9} {:>9}  {}".format("page", "range", "p50 ms", "p99 ms",
                                                 "<= 300 ms"))
        for name, rng, path in pages(dsn):
            status, _ = timed(port, path)          # warm the cache and the pool
            times = []
            for _ in range(args.iterations if rng in ("1h", "24h", "-") else
                           max(2, args.iterations // 4)):
                status, ms = timed(port, path)
                times.append(ms)
            times.sort()
            p50 = statistics.median(times)
            p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
            print("{:<10} {:>5} {:>9.1f} {:>9.1f}  {}{}".format(
                name, rng, p50, p99, "yes" if p99 <= TARGET_MS else "NO",
                "" if status == 200 else "  (HTTP {})".format(status)), flush=True)
    finally:
        # stop the service first: its pool threads would keep the process alive
        reactor.callFromThread(lambda: svc.stopService().addBoth(lambda _: reactor.stop()))
        thread.join(30)
        if args.drop:
            conn = psycopg2.connect(args.admin_dsn)
            conn.autocommit = True
            conn.cursor().execute("DROP DATABASE IF EXISTS " + args.database)
            conn.close()
    return 0
