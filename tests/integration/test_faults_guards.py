"""
The issue-14 guards under fault injection, short version (``nightowl bench
faults --only clock-skew,second-agent,big-frames,poison-claim`` is the long
one): the trials live in nightowl/bench/guards.py; these tests run
them small and fail with their violations.
"""

from nightowl.bench.faults import guards
from tests.integration.faultlib import assert_trial, workdir


def test_a_skewed_clock_drops_nothing_another_agent_wrote(tmp_path, fresh_pg_dsn):
    assert_trial(guards.clock_skew_trial(workdir(tmp_path, "skew"), fresh_pg_dsn,
                                                payload_count=60))


def test_a_second_agent_on_a_held_buffer_refuses_and_nothing_is_doubled(tmp_path):
    assert_trial(guards.second_agent_trial(workdir(tmp_path, "owner"), payload_count=150))


def test_big_frames_and_bombs_beside_valid_traffic(tmp_path):
    # Here every valid payload must be acked, exactly once, beside the flood.
    # Its latency is reported, not asserted: on a 2-core box the test's own
    # client, three blasters and the agent share the CPU, and a few valid
    # replies take longer than the SDK's 0.5 s (`nightowl bench faults --only
    # big-frames` holds the agent to zero late replies).
    result = guards.big_frames_trial(workdir(tmp_path, "big"), seconds=6.0,
                                            bomb_senders=2, late_allowed=1.0)
    assert_trial(result)
    assert result["big"]["ok"] + result["big"]["error"] > 0


def test_a_payload_that_kills_every_worker_is_isolated(tmp_path, fresh_pg_dsn):
    result = guards.poison_claim_trial(workdir(tmp_path, "poison"), fresh_pg_dsn,
                                              payload_count=40)
    assert_trial(result)
    assert result["restarts"] >= 1


def test_a_frozen_worker_is_killed_and_its_claim_drained_once(tmp_path, fresh_pg_dsn):
    assert_trial(guards.frozen_worker_trial(workdir(tmp_path, "frozen"), fresh_pg_dsn,
                                                   payload_count=200, timeout=3.0))
