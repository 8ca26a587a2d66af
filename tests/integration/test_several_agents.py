"""
Three agents, two drain workers each, one Postgres database, under load at
the same time with the same record mix (contended issue, user and rollup
keys): exactly once over the union and no deadlock (Postgres's own counter
and the agents' logs).  The small CI version of ``nightowl bench faults
--only several-agents``.
"""

from nightowl.bench.faults.agents import several_agents_trial
from tests.integration.faultlib import assert_trial, workdir


def test_three_agents_two_workers_one_database_exactly_once_no_deadlock(tmp_path, fresh_pg_dsn):
    result = several_agents_trial(workdir(tmp_path, "agents"), fresh_pg_dsn, agents=3,
                                  workers=2, rate=150, concurrency=3, load_s=4.0,
                                  batch_size=40)
    assert_trial(result)
    assert result["acked"] >= 3 * 150       # each agent took a real share of the load
    assert result["deadlocks"] == 0


def test_the_deadlock_counter_sees_a_real_deadlock(fresh_pg_dsn):
    """The trial's no-deadlock verdict can fail: two sessions locking two rows in
    opposite orders move pg_stat_database.deadlocks."""
    import threading

    import psycopg2

    from nightowl.bench.faults.agents import deadlocks
    setup = psycopg2.connect(fresh_pg_dsn)
    with setup, setup.cursor() as cur:
        cur.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2)")
    setup.close()
    before = deadlocks(fresh_pg_dsn)
    a, b = psycopg2.connect(fresh_pg_dsn), psycopg2.connect(fresh_pg_dsn)
    errors = []
    try:
        a.cursor().execute("UPDATE t SET id = id WHERE id = 1")
        b.cursor().execute("UPDATE t SET id = id WHERE id = 2")

        def cross(conn, key):
            try:
                conn.cursor().execute("UPDATE t SET id = id WHERE id = %s", (key,))
            except psycopg2.Error as e:
                errors.append(e.pgcode)
            conn.rollback()
        threads = [threading.Thread(target=cross, args=(a, 2)),
                   threading.Thread(target=cross, args=(b, 1))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        a.close()
        b.close()
    assert errors == ["40P01"]
    assert deadlocks(fresh_pg_dsn) == before + 1
