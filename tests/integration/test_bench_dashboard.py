"""
``nightowl bench dashboard`` end to end at a tiny scale (one day, ~2,000
rows): it seeds raw rows and their rollups, serves the dashboard from them
and times every page, each answered 200; a second run reuses the seed.
"""

import subprocess
import sys

from tests.conftest import ADMIN_DSN, create_database, drop_database, fetch

CLI = "import sys; from nightowl.cli import main; sys.exit(main(sys.argv[1:]))"
PAGES = {"overview", "requests", "route", "queries", "query", "jobs", "job", "outgoing", "host",
         "cache", "cache-key", "commands", "scheduled", "issues", "issue", "trace"}


def bench(name):
    return subprocess.run(
        [sys.executable, "-c", CLI, "bench", "dashboard", "--admin-dsn", ADMIN_DSN,
         "--database", name, "--scale", "0.0002", "--days", "1", "--jobs", "1",
         "--iterations", "1"], capture_output=True, text=True, timeout=600)


def test_bench_dashboard_seeds_and_times_every_page():
    name, dsn = create_database()
    try:
        first = bench(name)
        assert first.returncode == 0, first.stderr[-3000:]
        lines = [line.split() for line in first.stdout.splitlines()]
        timed = [parts for parts in lines if parts and parts[0] in PAGES]
        assert {parts[0] for parts in timed} == PAGES
        assert len(timed) == 4 * (len(PAGES) - 1) + 2        # every range, two traces
        assert "HTTP" not in first.stdout, first.stdout
        # the rollups hold what the raw rows hold: the hour tier, and the current
        # hour's minutes after the deriver's cut-off (its marker), as a reader adds them
        raw = fetch(dsn, "SELECT count(*) FROM nightowl_requests")[0][0]
        rolled = fetch(dsn, "SELECT (SELECT sum(count) FROM nightowl_rollups_hour "
                       "WHERE kind = 'request') + (SELECT coalesce(sum(m.count), 0) "
                       "FROM nightowl_rollups_minute m JOIN nightowl_rollups_pending p "
                       "ON p.derived AND m.environment = p.environment AND m.bucket >= p.minute "
                       "AND m.bucket < p.hour + interval '1 hour' WHERE m.kind = 'request')")[0][0]
        assert raw > 0 and rolled == raw
        again = bench(name)
        assert again.returncode == 0, again.stderr[-3000:]
        assert "reusing the raw rows" in again.stdout and "reusing the rollups" in again.stdout
    finally:
        drop_database(name)
