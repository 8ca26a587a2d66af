"""
Ingest-side fault trials on the buffer: SIGKILL of the agent under load,
back-pressure past ``--max-pending``, a full disk under the buffer (a tmpfs,
root only).  Each returns a result dict (``ok``, ``violations``, figures)
judged by the buffer oracle, with anti-vacuity checks.
"""

import contextlib
import os
import random
import shutil
import sqlite3
import subprocess
import time

from nightowl.bench import loadgen, payloads
from nightowl.bench.agent import (
    ERROR, OK, TRACEBACK, Agent, exchange, id_payload, ping, running, send_payload, wait_for)
from nightowl.bench.faults.oracle import Oracle, read_acked, read_buffer


# -- tmpfs -------------------------------------------------------------------

@contextlib.contextmanager
def tmpfs(path, size="2m"):
    """Mount a tmpfs of ``size`` on ``path`` (root only); always unmounted after."""
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size={}".format(size), "tmpfs", path],
                   check=True, capture_output=True)
    try:
        yield path
    finally:
        for _attempt in range(10):
            if subprocess.run(["umount", path], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)


def can_mount():
    return os.geteuid() == 0 and shutil.which("mount") is not None


# -- trial 1: SIGKILL under load ---------------------------------------------

def kill_trials(workdir, trials=3, seed=1, concurrency=8, log=print):
    """
    SIGKILL the agent at a random moment while the C load generator drives
    it (one frame per connection, acked ids written to a file), restart it
    on the same buffer, repeat.  After every kill the buffer (read from a
    copy) must satisfy the oracle; anti-vacuity: acks were flowing just
    before the kill and connections were broken by it.
    """
    rng = random.Random(seed)
    path = os.path.join(workdir, "kill-buffer.sqlite")
    frames_path = os.path.join(workdir, "kill-frames.bin")
    loadgen.write_frames([payloads.frame(id_payload(0))], frames_path)
    oracle = Oracle()
    rows = []
    for trial in range(trials):
        agent = Agent(path, ["--drain-workers", "0"])
        acked_file = os.path.join(workdir, "kill-acked-{}.txt".format(trial))
        seq_start = (trial + 1) * 10000000 + 1
        kill_at = 0.3 + rng.random() * 1.5
        gen = None
        row = {"trial": trial, "kill_at_s": round(kill_at, 2)}
        try:
            if not agent.start():
                raise AssertionError("agent did not start:\n" + "\n".join(agent.lines[-30:]))
            gen = loadgen.start_load("127.0.0.1", agent.port, frames_path, concurrency,
                                     duration=kill_at + 0.6, acked_file=acked_file,
                                     seq_start=seq_start, timeout=1.0)
            time.sleep(kill_at)
            a1 = agent.accepted() or 0
            time.sleep(0.05)
            a2 = agent.accepted() or 0
            agent.kill()
            out, err = gen.communicate(timeout=120)
            gen = None
            result = loadgen.parse_result(out, err)
        finally:
            agent.kill()
            if gen is not None:
                gen.kill()
                gen.wait()
        oracle.send(range(seq_start, seq_start + result["started"]))
        acked = read_acked(acked_file)
        oracle.ack(acked)
        stored = read_buffer(path)
        check = oracle.check(stored)
        new_ids = [s for (_r, _st, s) in stored if s is not None and s >= seq_start
                   and s < seq_start + 10000000]
        unacked_stored = len(set(new_ids) - acked)
        broken = result["reset_or_eof"] + result["bad_reply"] + result["timeouts"]
        vacuous = []
        if not (a2 > a1 > 0):
            vacuous.append("acks were not flowing at the kill ({} then {})".format(a1, a2))
        if broken + unacked_stored == 0:
            vacuous.append("the kill broke no connection in flight")
        if not acked:
            vacuous.append("no acks in this trial")
        row.update({"acked": len(acked), "stored": len(new_ids), "in_flight_broken": broken,
                    "stored_unacked": unacked_stored, "accepted_at_kill": a2,
                    "violations": check["violations"] + vacuous,
                    "ok": not (check["violations"] or vacuous)})
        rows.append(row)
        log("kill trial {trial}: kill at {kill_at_s}s, {acked} acked, {stored} stored, "
            "{in_flight_broken} connections broken, {stored_unacked} stored unacked: {v}".format(
                v="ok" if row["ok"] else "; ".join(row["violations"]), **row))
    # The buffer reopens after the last kill and takes traffic again.
    agent = Agent(path, ["--drain-workers", "0"])
    with running(agent):
        reopened = send_payload(agent.port, id_payload(1)) == OK
        oracle.send([1])
        if reopened:
            oracle.ack([1])
        agent.stop()
        clean_exit = agent.stopped_cleanly()
    final = oracle.check(read_buffer(path))
    violations = list(final["violations"])
    if not reopened:
        violations.append("the agent did not ack after the last restart")
    if not clean_exit:
        violations.append("no orderly shutdown on SIGTERM after the kills")
    return {"fault": "sigkill", "trials": rows, "final": final,
            "ok": all(r["ok"] for r in rows) and not violations,
            "violations": violations + [v for r in rows for v in r["violations"]]}


# -- trial 4: back-pressure ---------------------------------------------------

def backpressure_trial(workdir, max_pending=200, dsn=None, log=print):
    """
    Fill the buffer past ``--max-pending`` with no drain: further frames get
    ``5:ERROR`` (counted as back-pressure), the agent stays up and still
    answers PING.  Then let the rows leave the pending state through the
    real drain (restart with ``--dsn``) and check acks resume; without a
    DSN, mark them drained out of band instead and report whether that
    releases back-pressure (it need not: the counters are the writer's).
    """
    path = os.path.join(workdir, "bp-buffer.sqlite")
    oracle = Oracle()
    violations = []
    res = {"fault": "back-pressure", "max_pending": max_pending}
    seq = 0
    agent = Agent(path, ["--drain-workers", "0", "--max-pending", str(max_pending)])
    with running(agent):
        refused = 0
        for _ in range(max_pending + 100):
            seq += 1
            oracle.send([seq])
            reply = send_payload(agent.port, id_payload(seq))
            if reply == OK:
                oracle.ack([seq])
            elif reply == ERROR:
                refused += 1
            else:
                violations.append("frame {} got {!r}, neither 2:OK nor 5:ERROR".format(seq, reply))
        counted = agent.rejected("back-pressure")
        status = agent.status() or {}
        res.update({"acked_before_full": len(oracle.acked), "refused": refused,
                    "counted_back_pressure": counted,
                    "status_back_pressure": status.get("buffer", {}).get("back_pressure")})
        if refused == 0:
            violations.append("vacuous: the buffer never refused a frame")
        if counted != refused:
            violations.append("/status counted {} back-pressure refusals, we saw {}".format(
                counted, refused))
        if len(oracle.acked) > max_pending + 1:
            violations.append("acked {} frames with --max-pending {}".format(
                len(oracle.acked), max_pending))
        if not ping(agent.port):
            violations.append("PING failed while the buffer was full")
        if not agent.alive():
            violations.append("the agent died under back-pressure")
        if dsn is None:
            conn = sqlite3.connect(path, timeout=30)
            try:
                conn.execute("UPDATE payloads SET state = 1, state_at = 0 WHERE state = 0")
                conn.commit()
            finally:
                conn.close()
            seq += 1
            oracle.send([seq])
            resumed = wait_for(lambda: agent.status() is not None and send_payload(
                agent.port, id_payload(seq)) == OK, 10.0, every=0.5)
            if resumed:
                oracle.ack([seq])
            res["resumed_out_of_band"] = bool(resumed)
        agent.stop()
    if dsn is not None:
        agent = Agent(path, ["--drain-workers", "1", "--max-pending", str(max_pending),
                             "--dsn", dsn])
        with running(agent):
            # drained: neither pending nor claimed (a claimed batch still counts
            # against --max-pending until its mark commits)
            drained = wait_for(lambda: (lambda b: b.get("pending", 1) == 0 and b.get(
                "claimed", 1) == 0)((agent.status() or {}).get("buffer", {})), 120.0, every=0.5)
            resumed = 0
            for _ in range(20):
                seq += 1
                oracle.send([seq])
                if send_payload(agent.port, id_payload(seq)) == OK:
                    oracle.ack([seq])
                    resumed += 1
            res.update({"drained": bool(drained), "acked_after_drain": resumed})
            if not drained:
                violations.append("the drain did not empty the pending rows:\n" +
                                  "\n".join(agent.lines[-20:]))
            if resumed != 20:
                violations.append("only {} of 20 frames acked after the drain".format(resumed))
            agent.stop()
            if agent.tracebacks():
                violations.append("tracebacks in the agent's log")
    check = oracle.check(read_buffer(path))
    violations += check["violations"]
    res.update({"oracle": check, "violations": violations, "ok": not violations})
    log("back-pressure: {acked} acked, {refused} refused ({counted} counted): {v}".format(
        acked=check["acked"], refused=res["refused"], counted=res["counted_back_pressure"],
        v="ok" if not violations else "; ".join(violations)))
    return res


def _first_traceback(lines):
    """The first traceback's location and exception, as one line."""
    for i, line in enumerate(lines):
        if TRACEBACK in line:
            body = []
            for follow in lines[i + 1:]:
                if not follow.startswith("\t"):
                    break
                if follow.strip():
                    body.append(follow.strip())
            return " | ".join(body[-3:])
    return ""


# -- trial 5: disk full -------------------------------------------------------

def diskfull_trial(workdir, size="2m", ballast_bytes=700 * 1024, reply_timeout=5.0, log=print):
    """
    The buffer on a small tmpfs with a ballast file beside it: send until
    the disk is full and frames get ``5:ERROR``; the agent stays up; delete
    the ballast and acks resume; every acked id is in the buffer.
    """
    mnt = os.path.join(workdir, "diskfull")
    path = os.path.join(mnt, "buffer.sqlite")
    oracle = Oracle()
    violations = []
    res = {"fault": "disk-full", "tmpfs": size}
    with tmpfs(mnt, size):
        ballast = os.path.join(mnt, "ballast")
        with open(ballast, "wb") as f:
            f.write(b"\xa5" * ballast_bytes)
        agent = Agent(path, ["--drain-workers", "0"])
        try:
            if not agent.start():
                raise AssertionError("agent did not start:\n" + agent.log())
            seq = 0
            errors_in_row = 0
            refused = 0
            no_reply = []
            while errors_in_row < 5 and seq < 20000:
                seq += 1
                oracle.send([seq])
                reply, how = exchange(agent.port, payloads.frame(id_payload(seq)),
                                      timeout=reply_timeout, split=True)
                if reply == OK:
                    oracle.ack([seq])
                    errors_in_row = 0
                elif reply == ERROR:
                    refused += 1
                    errors_in_row += 1
                else:
                    no_reply.append((seq, how, reply))
                    errors_in_row += 1
            if no_reply:
                violations.append(
                    "{} frames on a full disk got no 5:ERROR: {}".format(
                        len(no_reply), ", ".join("{} {} {!r}".format(*x) for x in no_reply[:3])))
            res["no_reply"] = len(no_reply)
            res["acked_before_full"] = len(oracle.acked)
            res["refused"] = refused
            rejected = agent.rejected() or {}
            res["rejected"] = dict((k, v) for k, v in rejected.items() if v)
            if errors_in_row < 5:
                violations.append("vacuous: the disk never filled up")
            if not rejected.get("buffer-error"):
                violations.append("no buffer-error counted (rejected: {})".format(res["rejected"]))
            if not agent.alive():
                violations.append("the agent died on a full disk")
            elif not ping(agent.port):
                violations.append("PING failed on a full disk")
            os.unlink(ballast)
            resumed_at = [None]

            def acks_again():
                n = seq + 1000 + (resumed_at[0] or 0)
                resumed_at[0] = (resumed_at[0] or 0) + 1
                oracle.send([n])
                if send_payload(agent.port, id_payload(n)) == OK:
                    oracle.ack([n])
                    return True
                return False

            resumed = wait_for(acks_again, 30.0, every=0.2)
            after = 0
            if resumed:
                for k in range(20):
                    n = seq + 5000 + k
                    oracle.send([n])
                    if send_payload(agent.port, id_payload(n)) == OK:
                        oracle.ack([n])
                        after += 1
            res["resumed"] = bool(resumed)
            res["acked_after_freeing"] = after
            if not resumed or after != 20:
                violations.append("acks did not resume after freeing space ({} of 20)".format(
                    after))
            res["exit_code"] = agent.stop()
            if not agent.stopped_cleanly():
                violations.append("no orderly shutdown on SIGTERM (exit {}): {}".format(
                    res["exit_code"], agent.lines[-3:]))
            res["tracebacks"] = agent.tracebacks()
            if res["tracebacks"]:
                violations.append("{} tracebacks in the agent's log: {}".format(
                    res["tracebacks"], _first_traceback(agent.lines)))
        finally:
            agent.kill()
        check = oracle.check(read_buffer(path))
    violations += check["violations"]
    res.update({"oracle": check, "violations": violations, "ok": not violations})
    log("disk full: {a} acked before full, {r} refused, resumed={res}: {v}".format(
        a=res.get("acked_before_full"), r=res.get("refused"), res=res.get("resumed"),
        v="ok" if not violations else "; ".join(violations)))
    return res
