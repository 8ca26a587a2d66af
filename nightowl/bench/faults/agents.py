"""
Several agents into one Postgres (``several_agents_trial``).

``agents`` agents, each with its own buffer, port and ``workers`` drain
workers, all drain into ONE database while a load generator feeds each of
them the same record mix (so they contend on the same issue, user and
rollup keys), with disjoint payload ids.  Judged with the oracle of
``nightowl.bench.faults`` over the union: every acknowledged payload is in
Postgres exactly once, nothing stored was never sent, no payload torn, the
rollups equal a re-fold of the raw rows; and no deadlock: Postgres's own
counter (``pg_stat_database.deadlocks``) does not move and no agent logs a
40P01.
"""

import os
import time

from nightowl.bench import agent as launcher, loadgen
from nightowl.bench.faults import draining, oracle as fault_oracle

#: payload ids of agent k start at 1 + k * ID_STRIDE
ID_STRIDE = 10 ** 9


def deadlocks(dsn):
    """Deadlocks Postgres has detected in this database since its stats were reset."""
    import psycopg2
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        return int(cur.fetchone()[0] or 0)
    finally:
        conn.close()


def several_agents_trial(workdir, dsn, agents=3, workers=2, rate=400, concurrency=4,
                         load_s=5.0, batch_size=50, catchup=300.0, log=print):
    frames_path = draining.id_frames_file(workdir, "agents-frames.bin")
    args = ["--dsn", dsn, "--drain-workers", str(workers), "--batch-size", str(batch_size)]
    fleet = [launcher.Agent(os.path.join(workdir, "agent-{}.sqlite".format(k)), args)
             for k in range(agents)]
    oracle = fault_oracle.Oracle()
    violations = []
    gens = []
    row = {"fault": "several-agents", "trial": "{} agents x {} workers".format(agents, workers)}
    before = deadlocks(dsn)
    started, codes = [], []
    try:
        for agent in fleet:
            if not agent.start():
                raise AssertionError("an agent did not start:\n" + "\n".join(agent.lines[-30:]))
        for agent in fleet:
            draining.catch_up(agent, catchup, violations, "migrations before the load")
        for k, agent in enumerate(fleet):
            acked_file = os.path.join(workdir, "agents-acked-{}.txt".format(k))
            gens.append((acked_file, loadgen.start_load(
                "127.0.0.1", agent.port, frames_path, concurrency, duration=load_s, rate=rate,
                acked_file=acked_file, seq_start=1 + k * ID_STRIDE, timeout=2.0)))
        for k, (acked_file, gen) in enumerate(gens):
            result = draining.finish_load(gen)
            started.append(result["started"])
            oracle.send(range(1 + k * ID_STRIDE, 1 + k * ID_STRIDE + result["started"]))
            oracle.ack(fault_oracle.read_acked(acked_file))
        gens = []
        t0 = time.monotonic()
        for agent in fleet:
            draining.catch_up(agent, catchup, violations, "after the load")
        row["catch_up_s"] = round(time.monotonic() - t0, 1)
        codes = [agent.stop() for agent in fleet]
    finally:
        for _, gen in gens:
            draining.stop_load(gen)
        for agent in fleet:
            agent.kill()
    check = fault_oracle.pg_check(oracle, dsn)
    moved = deadlocks(dsn) - before
    logged = sum(1 for agent in fleet for line in agent.lines
                 if "40P01" in line or "deadlock detected" in line)
    tracebacks = sum(agent.tracebacks() for agent in fleet)
    if moved:
        violations.append("Postgres detected {} deadlocks".format(moved))
    if logged:
        violations.append("the agents logged {} deadlock lines".format(logged))
    if tracebacks:
        violations.append("{} tracebacks in the agents' logs".format(tracebacks))
    if not oracle.acked:
        violations.append("vacuous: no acks")
    if any(code not in (0, -15) for code in codes):
        violations.append("exit codes {}".format(codes))
    violations += check["violations"]
    row.update({"acked": len(oracle.acked), "pg_stored": check["stored"],
                "deadlocks": moved, "violations": violations, "ok": not violations})
    row["detail"] = ("{acked} acked across {n} agents, {pg_stored} in Postgres, {d} deadlocks, "
                     "caught up in {catch_up_s} s".format(n=agents, d=moved, **row))
    log("several agents: {}: {}".format(row["detail"], "ok" if row["ok"] else
                                         "; ".join(violations)))
    return row
