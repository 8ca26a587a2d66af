"""
Fault trials of several ingest processes (``--ingest-processes 2``).

``child_kill_trial``: the agent takes load with two ingest processes and a
Postgres drain; one child is SIGKILLed mid-load.  Judged with the oracle of
``nightowl.bench.faults``: every acknowledged payload is in Postgres exactly
once, nothing stored was never sent, the killed child was restarted (a new
pid, running again), both processes took payloads (the kernel spread the
connections; from their /status), and SIGTERM to the parent stopped every child.
"""

import os
import signal
import time

from nightowl.bench import agent as launcher, loadgen, procfs
from nightowl.bench.faults import draining, oracle as fault_oracle


def multi_agent(buffer_path, processes=2, args=(), port=None):
    """A L{launcher.Agent} running ``processes`` ingest processes on a fixed free port."""
    port = port or launcher.free_port()
    return launcher.Agent(buffer_path, ["--ingest-processes", str(processes),
                                      "--listen", "tcp:{}:interface=127.0.0.1".format(port),
                                      "--dashboard", "none"]
                        + list(args))


def children(agent):
    """The per-process sections of the agent's /status ([] when it does not answer)."""
    s = agent.status() or {}
    return (s.get("ingest_processes") or {}).get("children") or []


def all_running(agent, n):
    kids = children(agent)
    return len(kids) == n and all(c["state"] == "running" and c["document"] for c in kids)


def accepted(child):
    """Payloads a child's /status section says it acknowledged (0 without one)."""
    return ((child.get("document") or {}).get("ingest") or {}).get("accepted") or 0


def ledger_buffers(dsn):
    """Payloads delivered per buffer identity, from the Postgres delivery ledger."""
    import psycopg2
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        cur.execute("SELECT buffer_id, count(*) FROM nightowl_ingest_ledger, unnest(ids) "
                    "GROUP BY 1 ORDER BY 1")
        return dict(cur.fetchall())
    finally:
        conn.close()


def child_kill_trial(workdir, dsn, rate=1500, concurrency=8, load_s=4.0, catchup=300.0,
                     victim_index=1, log=print):
    path = os.path.join(workdir, "mp-buffer.sqlite")
    frames_path = draining.id_frames_file(workdir, "mp-frames.bin")
    acked_file = os.path.join(workdir, "mp-acked.txt")
    agent = multi_agent(path, 2, draining.DRAIN_ARGS + ["--dsn", dsn])
    oracle = fault_oracle.Oracle()
    violations = []
    gen = None
    row = {"fault": "ingest-process-kill"}
    try:
        if not agent.start():
            raise AssertionError("agent did not start:\n" + "\n".join(agent.lines[-30:]))
        if not launcher.wait_for(lambda: all_running(agent, 2), 60.0, every=0.2):
            raise AssertionError("the two ingest processes did not both run: {}".format(
                children(agent)))
        draining.catch_up(agent, catchup, violations, "before the load")
        gen = loadgen.start_load("127.0.0.1", agent.port, frames_path, concurrency,
                                 duration=load_s, rate=rate, acked_file=acked_file,
                                 seq_start=1, timeout=2.0)
        time.sleep(load_s / 3.0)
        before = children(agent)
        victim = before[victim_index]["pid"]
        os.kill(victim, signal.SIGKILL)
        result = draining.finish_load(gen)
        gen = None
        restarted = launcher.wait_for(
            lambda: all_running(agent, 2) and children(agent)[victim_index]["pid"] != victim
            and children(agent)[victim_index]["restarts"] >= 1, 60.0, every=0.3)
        draining.catch_up(agent, catchup, violations, "after the kill")
        after = children(agent)
        pids = [c["pid"] for c in after]
        # what each process acknowledged: before the kill (the victim's count
        # starts again at its restart) and at the end
        row["accepted_per_process"] = [
            max(accepted(b), accepted(a)) for b, a in zip(before, after)]
        code = agent.stop()
        gone = launcher.wait_for(lambda: not any(procfs.pid_alive(p) for p in pids), 10.0)
        row.update({"victim": victim, "restarted": bool(restarted), "exit_code": code,
                    "children_stopped": bool(gone), "tracebacks": agent.tracebacks()})
    finally:
        agent.kill()
        draining.stop_load(gen)
    per_buffer = ledger_buffers(dsn)
    oracle.send(range(1, 1 + result["started"]))
    acked = fault_oracle.read_acked(acked_file)
    oracle.ack(acked)
    check = fault_oracle.pg_check(oracle, dsn)
    if not row["restarted"]:
        violations.append("the killed ingest process was not restarted")
    if not row["children_stopped"]:
        violations.append("SIGTERM to the parent left ingest processes running")
    # Both processes must have taken payloads (the kernel spread the
    # connections).  Counted from their /status: the Postgres ledger cannot
    # say, a worker prunes a buffer's entries below its low water (a restarted
    # one at its first claim), and every acked payload being in Postgres is the
    # oracle's check below.
    if min(row.get("accepted_per_process") or [0]) == 0:
        violations.append("not both ingest processes took payloads: {}".format(
            row.get("accepted_per_process")))
    if not acked:
        violations.append("vacuous: no acks")
    if row["tracebacks"]:
        violations.append("{} tracebacks in the agent's log".format(row["tracebacks"]))
    violations += check["violations"]
    row.update({"acked": len(acked), "pg_stored": check["stored"], "buffers": per_buffer,
                "violations": violations, "ok": not violations})
    row["trial"] = "2 processes, kill one"
    row["detail"] = ("{acked} acked, {pg_stored} in Postgres, accepted per process {n}, "
                     "restarted {restarted}".format(n=row.get("accepted_per_process"), **row))
    log("ingest process kill: {acked} acked, {pg_stored} payloads in Postgres, accepted per "
        "process {accepted_per_process}, ledger rows kept per buffer {buffers}, restarted "
        "{restarted}: {v}".format(
            v="ok" if row["ok"] else "; ".join(violations), **row))
    return row
