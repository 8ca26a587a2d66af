"""
The Postgres-outage trial: a throwaway cluster stopped (``-m immediate``)
mid-drain and started again while ingest keeps acking; Postgres must end up
holding every acked id once.
"""

import os
import random
import sys
import time

from nightowl.bench import loadgen
from nightowl.bench.agent import REPO, Agent, wait_for
from nightowl.bench.faults.draining import (
    DRAIN_ARGS, catch_up, finish_load, id_frames_file, status_figures, stop_load)
from nightowl.bench.faults.oracle import Oracle, pg_check, read_acked


def _pgcluster():
    """tests/integration/pgcluster.py: the throwaway cluster (in the repository only)."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)
    from tests.integration.pgcluster import PgCluster
    return PgCluster


def outage_trial(workdir, seed=1, rate=1000, concurrency=8, outage_s=4.0, catchup=300.0,
                 cluster=None, log=print):
    """
    Stop Postgres (a throwaway cluster, ``pg_ctl stop -m immediate``) while
    the drain works under load, keep sending through the outage, start it
    again: ingest keeps acking into the buffer, the backlog drains by itself,
    and Postgres holds every acked id once.  Anti-vacuity: the drain had
    delivered before the stop, a worker saw Postgres unreachable, acks came
    in during the outage and the buffer grew, batches failed and were
    retried.
    """
    rng = random.Random(seed)
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "outage-buffer.sqlite")
    frames_path = id_frames_file(workdir, "outage-frames.bin")
    acked_file = os.path.join(workdir, "outage-acked.txt")
    oracle = Oracle()
    violations = []
    res = {"fault": "pg-outage", "outage_s": outage_s}
    own = cluster is None
    if own:
        cluster = _pgcluster()()
        cluster.init()
    gen = None
    agent = None
    try:
        if own or not cluster.running:
            cluster.start()
        dsn = cluster.create_database("outage_{}".format(rng.randrange(1 << 30)))
        agent = Agent(path, DRAIN_ARGS + ["--dsn", dsn])
        if not agent.start():
            raise AssertionError("agent did not start:\n" + "\n".join(agent.lines[-30:]))
        # long enough to span the stop, the outage and the restart (the
        # generator prints its result, and flushes the acked ids, only at the end)
        total = 6.0 + outage_s + 4.0
        gen = loadgen.start_load("127.0.0.1", agent.port, frames_path, concurrency,
                                 duration=total, rate=rate, acked_file=acked_file,
                                 seq_start=1, timeout=2.0)
        started = wait_for(lambda: (status_figures(agent)["drained"] or 0) > 0, 60.0, every=0.2)
        time.sleep(rng.random())
        cluster.stop("immediate")
        noticed = wait_for(lambda: status_figures(agent)["postgres_reachable"] is False,
                           60.0, every=0.2)
        during0 = status_figures(agent)
        time.sleep(outage_s)
        during1 = status_figures(agent)
        cluster.start()
        result = finish_load(gen)
        gen = None
        catch_up(agent, catchup, violations, "after Postgres came back")
        after = status_figures(agent)
        agent.stop()
        if agent.tracebacks():
            violations.append("{} tracebacks in the agent's log".format(agent.tracebacks()))
        acked = read_acked(acked_file)
        oracle.send(range(1, 1 + result["started"]))
        oracle.ack(acked)
        check = pg_check(oracle, dsn)
    finally:
        stop_load(gen)
        if agent is not None:
            agent.kill()
        if own:
            cluster.destroy()
    acked_during = (during1["accepted"] or 0) - (during0["accepted"] or 0)
    backlog0 = (during0["pending"] or 0) + (during0["claimed"] or 0)
    backlog1 = (during1["pending"] or 0) + (during1["claimed"] or 0)
    if not started:
        violations.append("vacuous: the drain delivered nothing before the stop")
    if not noticed:
        violations.append("vacuous: no worker reported Postgres unreachable")
    if acked_during <= 0:
        violations.append("ingest did not ack during the outage")
    if backlog1 <= backlog0:
        violations.append("vacuous: the buffer did not grow during the outage ({} -> {})".format(
            backlog0, backlog1))
    if not (after["batches_failed"] or 0):
        violations.append("vacuous: no failed batch (no retry happened)")
    if after["postgres_reachable"] is not True:
        violations.append("workers still report Postgres unreachable after the restart")
    violations += check["violations"]
    res.update({"acked": check["acked"], "pg_stored": check["stored"],
                "acked_during_outage": acked_during, "backlog_before": backlog0,
                "backlog_after": backlog1,
                "drained_during_outage": (during1["drained"] or 0) - (during0["drained"] or 0),
                "batches_failed": after["batches_failed"], "oracle": check,
                "violations": violations, "ok": not violations})
    log("pg outage: {acked_during_outage} acked during a {outage_s} s outage, backlog "
        "{backlog_before} -> {backlog_after}, {batches_failed} failed batches, {acked} acked, "
        "{pg_stored} in Postgres: {v}".format(v="ok" if res["ok"] else "; ".join(violations),
                                              **res))
    return res
