"""
Drain-side fault injection, short version (``nightowl bench faults`` with
``--only agent-kill,worker-kill,pg-outage`` is the long one): the agent runs
with its drain workers and a real Postgres; every payload carries a unique
id, an id counts as acked only on ``2:OK``, and once the drain has caught up
Postgres must hold every acked id exactly once and no id never sent.  Each
trial also proves it was not vacuous (the kill hit a non-empty buffer, the
fault fired, the worker was respawned, the ledger skipped a committed
batch, Postgres really was unreachable while acks went on).

The trials live in nightowl/bench/faults/; these tests run them small and
fail with their violations.
"""

from nightowl.bench import agent
from nightowl.bench.faults import drain, outage
from nightowl.bench.faults.oracle import Oracle, PER_PAYLOAD, pg_check, pg_stored, rollup_diffs
from tests.integration.faultlib import assert_trial


# -- the Postgres oracle can fail ----------------------------------------------------

def test_pg_oracle_counts_copies_and_torn_payloads():
    full = dict(PER_PAYLOAD)
    twice = dict((t, 2 * n) for t, n in full.items())
    part = dict(full, nightowl_queries=1)
    rows, torn = pg_stored({1: full, 2: twice, 3: part, None: {"nightowl_logs": 4}})
    assert sorted(s for (_r, _st, s) in rows if s is not None) == [1, 2, 2, 3]
    assert torn == [3]
    oracle = Oracle()
    oracle.send([1, 2, 3, 4])
    oracle.ack([1, 2, 4])
    check = oracle.check(rows)
    assert (check["missing"], check["duplicates"], check["foreign"]) == (1, 1, 1)


def test_rollup_oracle_finds_a_batch_counted_twice_in_any_tier(fresh_pg_dsn):
    import time
    import uuid

    import psycopg2

    from nightowl import migrate
    from nightowl.pgwrite import BatchWriter
    migrate.apply(fresh_pg_dsn)
    w = BatchWriter(fresh_pg_dsn, "production", str(uuid.uuid4()), clock=time.time)
    w.write([(n, agent.id_payload(n)) for n in range(1, 6)])
    w.close()
    assert rollup_diffs(fresh_pg_dsn) == []
    conn = psycopg2.connect(fresh_pg_dsn)
    for tier in ("minute", "hour", "day"):
        table = "nightowl_rollups_" + tier
        cur = conn.cursor()
        cur.execute("SELECT kind, bucket, group_key FROM {} ORDER BY 1, 2, 3 LIMIT 1".format(table))
        key = cur.fetchone()
        bump = "UPDATE {} SET count = count + %s WHERE (kind, bucket, group_key) = (%s, %s, %s)"
        cur.execute(bump.format(table), (1,) + key)
        conn.commit()
        diffs = rollup_diffs(fresh_pg_dsn)
        assert [d[0] for d in diffs] == [tier]
        cur.execute(bump.format(table), (-1,) + key)
        conn.commit()
    conn.close()
    oracle = Oracle()
    oracle.send(range(1, 6))
    oracle.ack(range(1, 6))
    assert pg_check(oracle, fresh_pg_dsn)["violations"] == []


# -- 1. SIGKILL the agent with its workers under load ------------------------------------

def test_sigkill_agent_with_workers_loses_and_duplicates_nothing(tmp_path, fresh_pg_dsn):
    result = drain.agent_kill_drain_trials(str(tmp_path), fresh_pg_dsn, trials=3, seed=5)
    assert len(result["trials"]) == 3
    assert_trial(result)


# -- 2. SIGKILL a drain worker: from outside, mid-COPY, between commit and mark -------------

def test_sigkill_worker_loses_and_duplicates_nothing(tmp_path, fresh_pg_dsn):
    result = drain.worker_kill_trials(str(tmp_path), fresh_pg_dsn, trials=3, seed=7)
    assert [t["kind"] for t in result["trials"]] == list(drain.WORKER_FAULTS)
    assert_trial(result)
    hooked = [t for t in result["trials"] if t["kind"] != "external"]
    assert all(t["retried"] > 0 for t in hooked)


# -- 3. Postgres stopped (immediate) mid-drain and started again ---------------------------

def test_postgres_outage_mid_drain_keeps_acking_and_catches_up(tmp_path):
    result = outage.outage_trial(str(tmp_path), seed=3, outage_s=3.0)
    assert_trial(result)
    assert result["acked_during_outage"] > 0
