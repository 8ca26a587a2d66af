"""
``nightowl bench dashboard``: seed a database with 10 million raw rows over
30 days and the rollups the drain would have written for them
(``dashboard_seed``), serve the dashboard from it on 127.0.0.1, and time
every page: p50 / p99 of the server's answer per page and range, against
the 300 ms target.

The database (default ``nightowl_bench_dashboard``, ~3.5 GB) is kept and
reused by the next run unless ``--drop``; pages are timed at the seed's
anchor time (the dashboard's clock is pinned there), so a reused database
shows the same figures as a fresh one.  ``--scale 0.01`` seeds 100,000 rows
(a quick check of the command itself).
"""

import http.client
import statistics
import threading
import time
from urllib.parse import urlencode

import psycopg2

from nightowl.bench import dashboard_seed

DEFAULT_DB = "nightowl_bench_dashboard"
TARGET_MS = 300.0


def configure(parser):
    parser.add_argument("--admin-dsn", default="host=127.0.0.1 user=postgres dbname=postgres",
                        help="DSN of a database to create the bench database from")
    parser.add_argument("--database", default=DEFAULT_DB)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="fraction of the 10 million rows to seed (a new database only)")
    parser.add_argument("--days", type=float, default=30,
                        help="days the rows are spread over (a new database only)")
    parser.add_argument("--jobs", type=int, default=2, help="processes folding the rollups")
    parser.add_argument("--iterations", type=int, default=10, help="timed loads per page")
    parser.add_argument("--only", default=None, help="time only the pages named (a,b,...)")
    parser.add_argument("--drop", action="store_true", help="drop the database afterwards")


class PinnedClock:
    """The reactor's clock, moved back so that 'now' was the seed's anchor
    when the bench started."""

    def __init__(self, anchor):
        self.offset = time.time() - anchor.timestamp()

    def seconds(self):
        return time.time() - self.offset


def pages(dsn, anchor):
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    cur.execute("SELECT id FROM nightowl_issues ORDER BY id LIMIT 1")
    issue = cur.fetchone()[0]
    # a request that ran an N+1 query group (the richest trace)
    cur.execute("SELECT trace_id, created_at FROM nightowl_queries WHERE group_hash = "
                "'nplus1-0' AND created_at > %s - interval '1 hour' AND created_at < %s LIMIT 1",
                (anchor, anchor))
    found = cur.fetchone()
    if found is None:       # a small seed: any request of the last day
        cur.execute("SELECT trace_id, created_at FROM nightowl_requests WHERE created_at > %s "
                    "- interval '1 day' AND created_at < %s LIMIT 1", (anchor, anchor))
        found = cur.fetchone()
    trace, at = found
    conn.close()
    out = []
    for rng in ("1h", "24h", "7d", "30d"):
        q = "?range=" + rng
        out += [("overview", rng, "/" + q), ("requests", rng, "/requests" + q),
                ("route", rng, "/requests/group" + q + "&" + urlencode(
                    {"key": "g7|GET|2xx", "target": "GET /route/7 [2xx]"})),
                ("queries", rng, "/queries" + q),
                ("query", rng, "/queries/group" + q + "&" + urlencode(
                    {"key": "q7", "target": "select * from table_7 where id = ?"})),
                ("jobs", rng, "/jobs" + q),
                ("job", rng, "/jobs/group" + q + "&" + urlencode(
                    {"key": "App\\Jobs\\Job3|default|processed", "target": "App\\Jobs\\Job3"})),
                ("outgoing", rng, "/outgoing" + q),
                ("host", rng, "/outgoing/group" + q + "&" + urlencode(
                    {"key": "api3.example.com|2xx", "target": "api3.example.com [2xx]"})),
                ("cache", rng, "/cache" + q),
                ("cache-key", rng, "/cache/group" + q + "&" + urlencode(
                    {"key": "redis|hit", "target": "redis"})),
                ("commands", rng, "/commands" + q), ("scheduled", rng, "/scheduled" + q),
                ("issues", rng, "/issues" + q), ("issue", rng, "/issues/{}{}".format(issue, q))]
    # as the pages link it (with its time), and as typed (looked up first)
    out.append(("trace", "-", "/trace/{}?at={}".format(trace, int(at.timestamp()))))
    out.append(("trace", "no at", "/trace/{}".format(trace)))
    return out


def serve(dsn, anchor):
    from twisted.internet import reactor
    from nightowl.dashboard.service import DashboardService
    svc = DashboardService("tcp:0:interface=127.0.0.1", dsn, reactor=reactor,
                           statement_timeout_ms=120000, clock=PinnedClock(anchor))
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
    dsn, anchor = dashboard_seed.prepare(args.admin_dsn, args.database, args.scale, args.jobs,
                                         days=args.days)
    only = set(args.only.split(",")) if args.only else None
    reactor, svc, thread = serve(dsn, anchor)
    try:
        port = svc.port()
        print("{:<10} {:>6} {:>9} {:>9}  {}".format("page", "range", "p50 ms", "p99 ms",
                                                 "<= 300 ms"))
        for name, rng, path in pages(dsn, anchor):
            if only is not None and name not in only:
                continue
            status, _ = timed(port, path)          # warm the cache and the pool
            times = []
            for _ in range(args.iterations):
                status, ms = timed(port, path)
                times.append(ms)
            times.sort()
            p50 = statistics.median(times)
            p99 = times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))]
            print("{:<10} {:>6} {:>9.1f} {:>9.1f}  {}{}".format(
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
