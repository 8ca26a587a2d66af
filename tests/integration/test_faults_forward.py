"""
The forwarding fault, short version (``nightowl bench faults --only
upstream-kill`` is the long one): the --forward upstream SIGKILLed under
load and started again; every acked id forwarded at least once, nothing
dropped beyond the bound, Postgres exactly once.
"""

from nightowl.bench.faults.forwarding import upstream_kill_trial
from tests.integration.faultlib import assert_trial, workdir


def test_upstream_killed_and_restarted_under_load(tmp_path, fresh_pg_dsn):
    result = upstream_kill_trial(workdir(tmp_path, "fwd"), fresh_pg_dsn, rate=300,
                                 concurrency=4, outage_s=2.0)
    assert_trial(result)
    assert result["dropped"] == 0 and result["missing_upstream"] == 0
    assert result["upstream_distinct"] == result["acked"] > 0


def test_a_small_bound_drops_only_past_it_and_counts(tmp_path, fresh_pg_dsn):
    result = upstream_kill_trial(workdir(tmp_path, "fwd-small"), fresh_pg_dsn, rate=300,
                                 concurrency=4, outage_s=2.0, max_rows=100)
    assert_trial(result)
    assert result["dropped"] > 0     # the outage backlog went past 100 rows
