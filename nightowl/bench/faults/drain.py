"""
Drain-side kill trials, judged over Postgres once the drain caught up:
SIGKILL of the agent with its workers under load, and SIGKILL of one drain
worker (from outside, mid-COPY, between commit and mark).
"""

import os
import random
import signal
import sqlite3
import time

from nightowl.bench import loadgen
from nightowl.bench.agent import Agent, wait_for
from nightowl.bench.faults.draining import (
    DRAIN_ARGS, catch_up, finish_load, id_frames_file, released, status_figures, stop_load)
from nightowl.bench.faults.oracle import Oracle, pg_check, read_acked, read_buffer
from nightowl.bench.procfs import pid_alive


def agent_kill_drain_trials(workdir, dsn, trials=3, seed=1, rate=1500, concurrency=8,
                            catchup=300.0, log=print):
    """
    SIGKILL the agent, with its drain workers and a real Postgres, at a
    random moment under load; restart it on the same buffer, let the drain
    catch up and judge Postgres; repeat.  Anti-vacuity per kill: acks were
    flowing and the buffer was not empty (pending or claimed rows in the
    file just after the kill); over the run: some kill caught a worker
    holding a claim (those rows had to be drained again) and the drain
    delivered between kills.
    """
    rng = random.Random(seed)
    path = os.path.join(workdir, "akill-buffer.sqlite")
    frames_path = id_frames_file(workdir, "akill-frames.bin")
    args = DRAIN_ARGS + ["--dsn", dsn]
    oracle = Oracle()
    rows = []
    violations = []
    orphans_total = 0
    for trial in range(trials + 1):
        agent = Agent(path, args)
        gen = None
        worker_pids = []
        try:
            if not agent.start():
                raise AssertionError("agent did not start:\n" + "\n".join(agent.lines[-30:]))
            caught = catch_up(agent, catchup, violations, "restart {}".format(trial))
            check = pg_check(oracle, dsn)
            if rows:  # judge the previous kill, now that its backlog is drained
                rows[-1].update({"caught_up": caught, "pg_stored": check["stored"],
                                 "released_on_restart": released(agent.lines)[1],
                                 "violations": rows[-1]["violations"] + check["violations"]})
                rows[-1]["ok"] = not rows[-1]["violations"]
                r = rows[-1]
                log("agent kill {trial}: kill at {kill_at_s}s, {acked} acked, buffer at kill "
                    "{pending_at_kill} pending + {claimed_at_kill} claimed, {pg_stored} payloads "
                    "in Postgres: {v}".format(v="ok" if r["ok"] else "; ".join(r["violations"]),
                                              **r))
            if trial == trials:
                agent.stop()
                if not agent.stopped_cleanly():
                    violations.append("no orderly shutdown on SIGTERM after the kills")
                break
            seq_start = (trial + 1) * 10000000 + 1
            kill_at = 1.0 + rng.random() * 2.5
            acked_file = os.path.join(workdir, "akill-acked-{}.txt".format(trial))
            # the last kill waits for a claim if no random one caught a worker holding
            # one (claims last tens of ms: three random kills can all miss)
            aim = trial == trials - 1 and not any(r["claimed_at_kill"] for r in rows)
            gen = loadgen.start_load("127.0.0.1", agent.port, frames_path, concurrency,
                                     duration=kill_at + (2.6 if aim else 0.6), rate=rate,
                                     acked_file=acked_file, seq_start=seq_start, timeout=1.0)
            time.sleep(kill_at)
            before = status_figures(agent)
            time.sleep(0.05)
            at = status_figures(agent)
            if aim:
                deadline = time.monotonic() + 2.0
                while not at["claimed"] and time.monotonic() < deadline:
                    time.sleep(0.005)
                    at = status_figures(agent)
            worker_pids = at["worker_pids"]
            agent.kill()
            result = finish_load(gen)
            gen = None
        finally:
            agent.kill()
            stop_load(gen)
            # the workers follow the agent (EOF on their stdin); never leave one behind
            if worker_pids:
                gone = wait_for(lambda: not any(pid_alive(p) for p in worker_pids), 30.0)
                if not gone:
                    left = [p for p in worker_pids if pid_alive(p)]
                    orphans_total += len(left)
                    violations.append("drain workers outlived the agent: {}".format(left))
                    for p in left:
                        try:
                            os.kill(p, signal.SIGKILL)
                        except OSError:
                            pass
        if trial == trials:
            break
        oracle.send(range(seq_start, seq_start + result["started"]))
        acked = read_acked(acked_file)
        oracle.ack(acked)
        states = [st for (_r, st, _s) in read_buffer(path)]
        pending = sum(1 for st in states if st == 0)
        claimed = sum(1 for st in states if st is not None and st >= 100)
        vacuous = []
        if not ((at["accepted"] or 0) > (before["accepted"] or 0) > 0):
            vacuous.append("acks were not flowing at the kill ({} then {})".format(
                before["accepted"], at["accepted"]))
        if pending + claimed == 0:
            vacuous.append("the buffer was empty at the kill")
        if not acked:
            vacuous.append("no acks in this trial")
        rows.append({"trial": trial, "kill_at_s": round(kill_at, 2), "acked": len(acked),
                     "pending_at_kill": pending, "claimed_at_kill": claimed,
                     "drained_before_kill": at["drained"], "violations": vacuous,
                     "ok": not vacuous})
    final = pg_check(oracle, dsn)
    if not any(r["claimed_at_kill"] for r in rows):
        violations.append("vacuous: no kill caught a worker holding a claim")
    for r in rows:
        if r["claimed_at_kill"] and r.get("released_on_restart", 0) < r["claimed_at_kill"]:
            r["violations"].append("{} rows were claimed at the kill but the restart released "
                                   "{}".format(r["claimed_at_kill"], r.get("released_on_restart")))
            r["ok"] = False
    if not final["stored"]:
        violations.append("vacuous: nothing reached Postgres")
    violations += final["violations"]
    return {"fault": "agent-kill-drain", "trials": rows, "final": final,
            "orphan_workers": orphans_total,
            "ok": all(r["ok"] for r in rows) and not violations,
            "violations": violations + [v for r in rows for v in r["violations"]]}


WORKER_FAULTS = ("external", "kill-mid-copy", "kill-after-commit")


def worker_kill_trials(workdir, dsn, trials=3, seed=1, rate=1500, concurrency=8,
                       kinds=WORKER_FAULTS, load_s=4.0, catchup=300.0, log=print):
    """
    SIGKILL one drain worker per trial while the agent takes load, kinds in
    turn: ``external`` (a SIGKILL from outside at a random moment, the pid
    from /status), ``kill-mid-copy`` (the worker's own hook: dies inside the
    Nth batch's COPY) and ``kill-after-commit`` (dies between the Postgres
    commit and the SQLite mark).  Then the drain catches up and Postgres is
    judged.  Anti-vacuity: the fault fired and the supervisor respawned the
    worker; an after-commit kill must show the ledger skipping the
    committed batch on its retry; some external kill hit with claimed rows.
    """
    rng = random.Random(seed)
    path = os.path.join(workdir, "wkill-buffer.sqlite")
    frames_path = id_frames_file(workdir, "wkill-frames.bin")
    oracle = Oracle()
    rows = []
    for trial in range(trials):
        kind = kinds[trial % len(kinds)]
        seq_start = (trial + 1) * 10000000 + 1
        acked_file = os.path.join(workdir, "wkill-acked-{}.txt".format(trial))
        marker = os.path.join(workdir, "wkill-fired-{}".format(trial))
        env = {}
        nth = None
        if kind != "external":
            nth = rng.randint(1, 4)
            env = {"NIGHTOWL_FAULT": "{}:{}".format(kind, nth), "NIGHTOWL_FAULT_ONCE": marker}
        agent = Agent(path, DRAIN_ARGS + ["--dsn", dsn], env=env, worker_faults=bool(env))
        gen = None
        violations = []
        row = {"trial": trial, "kind": kind, "nth": nth}
        try:
            if not agent.start():
                raise AssertionError("agent did not start:\n" + "\n".join(agent.lines[-30:]))
            catch_up(agent, catchup, violations, "before the load")
            gen = loadgen.start_load("127.0.0.1", agent.port, frames_path, concurrency,
                                     duration=load_s, rate=rate, acked_file=acked_file,
                                     seq_start=seq_start, timeout=2.0)
            if kind == "external":
                time.sleep(0.5 + rng.random() * (load_s - 2.0))
                victim, holding = _busy_worker(agent, path, 1.0)
                row["claimed_at_kill"] = holding
                if victim is not None:
                    os.kill(victim, signal.SIGKILL)
                fired = victim is not None
            else:
                fired = bool(wait_for(lambda: os.path.exists(marker), load_s + 30.0, every=0.1))
            result = finish_load(gen)
            gen = None
            respawned = wait_for(lambda: status_figures(agent)["restarts"] >= 1, 60.0, every=0.5)
            catch_up(agent, catchup, violations, "after the fault")
            fig = status_figures(agent)
            agent.stop()
            tracebacks = agent.tracebacks()
        finally:
            agent.kill()
            stop_load(gen)
        oracle.send(range(seq_start, seq_start + result["started"]))
        acked = read_acked(acked_file)
        oracle.ack(acked)
        check = pg_check(oracle, dsn)
        retried = released(agent.lines)[0]
        if not fired:
            violations.append("vacuous: the {} fault never fired".format(kind))
        if not respawned:
            violations.append("the killed worker was not respawned")
        if kind != "external" and fired and retried <= 0:
            # the hooks fire with a claimed batch (committed, for after-commit): its rows
            # must come back for a retry, which the ledger then makes a no-op
            violations.append("vacuous: the killed worker's claimed rows were never released "
                              "for a retry")
        if not acked:
            violations.append("vacuous: no acks in this trial")
        if tracebacks:
            violations.append("{} tracebacks in the agent's log".format(tracebacks))
        violations += check["violations"]
        row.update({"acked": len(acked), "pg_stored": check["stored"], "restarts": fig["restarts"],
                    "retried": retried, "violations": violations, "ok": not violations})
        rows.append(row)
        log("worker kill {trial} ({kind}{n}): {acked} acked, {pg_stored} payloads in Postgres, "
            "{restarts} restarts, {retried} claimed payloads released for a retry: {v}".format(
                n="" if nth is None else ":{}".format(nth),
                v="ok" if row["ok"] else "; ".join(violations), **row))
    final = pg_check(oracle, dsn)
    violations = list(final["violations"])
    external = [r for r in rows if r["kind"] == "external"]
    # one aimed kill can still land just after the batch was marked; over three or
    # more (the long run) at least one must force a retry
    if len(external) >= 3 and not any(r.get("claimed_at_kill") and r["retried"]
                                      for r in external):
        violations.append("vacuous: no external kill hit a worker holding a claim")
    return {"fault": "worker-kill", "trials": rows, "final": final,
            "ok": all(r["ok"] for r in rows) and not violations,
            "violations": violations + [v for r in rows for v in r["violations"]]}


def _busy_worker(agent, path, within):
    """
    A live worker's pid, preferring one that holds a claim right now (state
    100 + N in the buffer file, read-only), polled for up to ``within``
    seconds; ``(pid, rows it held when seen)``.  None when no worker is up.
    """
    s = agent.status() or {}
    pids = dict((w.get("worker"), w["pid"]) for w in s.get("workers") or ()
                if w.get("alive") and w.get("pid"))
    if not pids:
        return None, 0
    deadline = time.monotonic() + within
    conn = sqlite3.connect("file:{}?mode=ro".format(path), uri=True, timeout=5)
    try:
        while time.monotonic() < deadline:
            try:
                held = conn.execute("SELECT state - 100, count(*) FROM payloads "
                                    "WHERE state >= 100 GROUP BY state").fetchall()
            except sqlite3.OperationalError:
                held = []
            for worker, n in held:
                if worker in pids:
                    return pids[worker], n
            time.sleep(0.002)
    finally:
        conn.close()
    return random.choice(sorted(pids.values())), 0
