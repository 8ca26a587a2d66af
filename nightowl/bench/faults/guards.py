"""
Fault trials for the guards of issue 14, in the style of the other fault trials
(a set-membership oracle, anti-vacuity checks, a result dict with ``ok`` and
``violations``), run by ``nightowl bench faults`` and, small, by
tests/integration/test_faults_guards.py:

* ``clock-skew``: a retention sweep whose local clock runs 30 days ahead,
  against a database another agent filled: every acked payload is still in
  Postgres, and the sweep reported the skew.
* ``second-agent``: a second agent on a buffer an agent under load holds
  refuses with one line naming the holder; the first goes on; the oracle
  holds over the buffer.
* ``big-frames``: 9.9 MB ``[[],[],...]`` frames and 58 KB gzip bombs
  (60 MB inflated) beside SDK-like traffic: valid payloads keep their acks
  (p99 and the count over the SDK's 0.5 s timeout reported), agent RSS
  sampled (items 3 and 5).
* ``poison-claim``: a payload that kills every worker that claims it (the
  ``kill-on-payload`` hook): it is isolated (quarantined), every other acked
  payload lands in Postgres exactly once.
* ``frozen-worker``: a worker SIGSTOPped under load is found by its silent
  heartbeat, reported (``worker-frozen``), killed and respawned; every acked
  payload lands in Postgres exactly once.
"""

import os
import subprocess
import threading
import time

from nightowl.bench import payloads
from nightowl.bench.agent import OK, Agent, id_payload, send_payload, wait_for
from nightowl.bench.faults.draining import catch_up
from nightowl.bench.faults.oracle import Oracle, pg_check, read_buffer
from nightowl.bench.procfs import RssSampler, rss_kb

DAY = 86400.0
SDK_TIMEOUT = 0.5


def _send_ids(port, ids, oracle, timeout=5.0):
    for n in ids:
        oracle.send([n])
        if send_payload(port, id_payload(n), timeout=timeout) == OK:
            oracle.ack([n])


def clock_skew_trial(workdir, dsn, payload_count=200, log=print):
    """Retention with a local clock 30 days ahead drops nothing another agent wrote."""
    from nightowl import partitions, retention
    import psycopg2
    violations = []
    oracle = Oracle()
    agent = Agent(os.path.join(workdir, "skew.sqlite"),
                  args=["--dsn", dsn, "--drain-workers", "1"])
    try:
        if not agent.start():
            raise AssertionError("agent did not start:\n" + agent.log()[-3000:])
        _send_ids(agent.port, range(1, payload_count + 1), oracle)
        catch_up(agent, 120, violations, "before the skewed sweep")
        conn = psycopg2.connect(dsn)
        try:
            db_now = partitions.database_now(conn).timestamp()
        finally:
            conn.close()
        ahead = lambda: time.time() + 30 * DAY  # noqa: E731  (what FAKETIME=+30d did)
        result = retention.sweep(dsn, 14, ensure=False, clock=ahead)
        check = pg_check(oracle, dsn)
    finally:
        agent.stop()
    violations.extend(check["violations"])
    if result["dropped"]:
        violations.append("the skewed sweep dropped {}".format(result["dropped"][:5]))
    if not result.get("clock_skew"):
        violations.append("the skewed sweep did not report the skew")
    if not oracle.acked:
        violations.append("vacuous: nothing was acked")
    if check["stored"] < len(oracle.acked):
        violations.append("vacuous: the drain had not delivered before the sweep")
    log("clock-skew: {} acked, {} in Postgres after a +30 d sweep (skew {} s, db now {:.0f})"
        .format(len(oracle.acked), check["stored"],
                (result.get("clock_skew") or {}).get("seconds"), db_now))
    return {"fault": "clock-skew", "trial": "+30 d", "ok": not violations,
            "violations": violations, "acked": len(oracle.acked), "stored": check["stored"],
            "skew_seconds": (result.get("clock_skew") or {}).get("seconds"),
            "detail": "{} acked, {} in Postgres after a +30 d sweep, dropped {}".format(
                len(oracle.acked), check["stored"], len(result["dropped"]))}


def second_agent_trial(workdir, payload_count=300, log=print):
    """A second agent on a held buffer refuses in one line; nothing lost or doubled."""
    violations = []
    oracle = Oracle()
    path = os.path.join(workdir, "owned.sqlite")
    first = Agent(path, health=False)
    refusal = []
    try:
        if not first.start():
            raise AssertionError("agent did not start:\n" + first.log()[-3000:])
        sender = threading.Thread(target=_send_ids,
                                  args=(first.port, range(1, payload_count + 1), oracle))
        sender.start()
        time.sleep(0.2)
        before = sorted(os.listdir(workdir))
        second = Agent(path, health=False)
        started = second.start(timeout=60)
        if started:
            second.stop()
        sender.join(120)
        text = second.log()
        refusal = [line for line in text.splitlines() if "in use by another" in line]
        if started or second.returncode == 0:
            violations.append("the second agent started (exit {})".format(second.returncode))
        if len(refusal) != 1 or "(pid {})".format(first.pid) not in refusal[0]:
            violations.append("no one-line refusal naming pid {}: {!r}".format(
                first.pid, text[-500:]))
        if "Traceback" in text:
            violations.append("the second agent printed a traceback")
        left = set(os.listdir(workdir)) - set(before) - {"owned.sqlite-wal", "owned.sqlite-shm"}
        if left:
            violations.append("the second agent left files behind: {}".format(sorted(left)))
        if send_payload(first.port, id_payload(payload_count + 1)) == OK:
            oracle.send([payload_count + 1])
            oracle.ack([payload_count + 1])
        else:
            violations.append("the first agent stopped acking")
    finally:
        first.stop()
    check = oracle.check(read_buffer(path))
    violations.extend(check["violations"])
    if len(oracle.acked) < payload_count // 2:
        violations.append("vacuous: only {} acked".format(len(oracle.acked)))
    log("second-agent: {}; {} acked, {} stored".format(
        refusal[0].split("] ", 1)[-1] if refusal else "no refusal", check["acked"],
        check["stored"]))
    return {"fault": "second-agent", "trial": "same buffer", "ok": not violations,
            "violations": violations, "acked": check["acked"], "stored": check["stored"],
            "detail": "refused in {} line(s); {} acked, {} stored, {} dup".format(
                len(refusal), check["acked"], check["stored"], check["duplicates"])}


def _flat_frame():
    return payloads.frame(b"[" + b",".join([b"[]"] * 3300000) + b"]")


def _bomb_frame(inflated=60 * 1000 * 1000):
    import gzip
    return payloads.frame(gzip.compress(b"[" + b"[]," * (inflated // 3 - 1) + b"[]]", 9))


# A hostile sender in its own process (so its loop does not compete with
# the valid sender for the harness's GIL): sends the frame in FILE to PORT
# until SECONDS pass, prints "ok error other".
_BLASTER = """
import socket, sys, time
port, path, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
frame = open(path, "rb").read()
counts = [0, 0, 0]
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        s.sendall(frame)
        reply = s.recv(16)
        s.close()
    except OSError:
        reply = b""
    counts[0 if reply == b"2:OK" else 1 if reply == b"5:ERROR" else 2] += 1
print(*counts)
"""


def big_frames_trial(workdir, seconds=10.0, valid_rate=100, bomb_senders=4, late_allowed=0.0,
                     log=print):
    """
    Big and gzip frames beside SDK-like traffic: every valid payload acked,
    their ack latency p99, how many missed the SDK's 0.5 s timeout, agent RSS.
    ``late_allowed``: the fraction of valid payloads that may miss it (the
    client, the blasters and the agent share two cores; the bench allows none).
    """
    import sys
    violations = []
    oracle = Oracle()
    path = os.path.join(workdir, "big.sqlite")
    agent = Agent(path)
    frames = {}
    for name, frame in (("flat", _flat_frame()), ("bomb", _bomb_frame())):
        frames[name] = os.path.join(workdir, name + ".frame")
        with open(frames[name], "wb") as f:
            f.write(frame)
    hostile = {"ok": 0, "error": 0, "other": 0}
    latencies = []
    try:
        if not agent.start():
            raise AssertionError("agent did not start:\n" + agent.log()[-3000:])
        base = rss_kb(agent.pid)
        with RssSampler(agent.pid) as rss:
            blasters = [subprocess.Popen(
                [sys.executable, "-c", _BLASTER, str(agent.port), frames[name], str(seconds)],
                stdout=subprocess.PIPE, text=True)
                for name in ["flat"] + ["bomb"] * bomb_senders]
            n = 0
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                n += 1
                oracle.send([n])
                t0 = time.monotonic()
                reply = send_payload(agent.port, id_payload(n), timeout=5.0)
                latencies.append(time.monotonic() - t0)
                if reply == OK:
                    oracle.ack([n])
                time.sleep(max(0.0, 1.0 / valid_rate - latencies[-1]))
            for b in blasters:
                out, _err = b.communicate(timeout=180)
                for key, value in zip(("ok", "error", "other"), (out or "0 0 0").split()):
                    hostile[key] += int(value)
        status = agent.status() or {}
    finally:
        agent.stop()
    check = oracle.check([r for r in read_buffer(path) if r[2] is not None])
    violations.extend(check["violations"])
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else None
    late = sum(1 for x in latencies if x > SDK_TIMEOUT)
    unacked = len(oracle.sent) - len(oracle.acked)
    if unacked:
        violations.append("{} valid payloads refused or unanswered".format(unacked))
    if late > late_allowed * len(latencies):
        violations.append("{} valid payloads missed the SDK's 0.5 s timeout".format(late))
    if not hostile["ok"] + hostile["error"]:
        violations.append("vacuous: no big frame was answered")
    figures = {"valid_sent": len(oracle.sent), "valid_p99_ms": round(1000 * (p99 or 0), 1),
               "valid_p50_ms": round(1000 * latencies[len(latencies) // 2], 1)
               if latencies else None,
               "valid_late": late, "big": dict(hostile), "rss_peak_kb": rss.peak,
               "rss_base_kb": base,
               "back_pressure": ((status.get("ingest") or {}).get("rejected") or {}).get(
                   "back-pressure")}
    log("big-frames: {}".format(figures))
    return dict(figures, fault="big-frames", trial="{} s".format(seconds), ok=not violations,
                violations=violations,
                detail="valid {}/{} acked, p50 {} ms, p99 {} ms, {} late; big ok/5:ERROR "
                       "{}/{}; RSS {} -> peak {} MB".format(
                           len(oracle.acked), len(oracle.sent), figures["valid_p50_ms"],
                           figures["valid_p99_ms"], late, hostile["ok"], hostile["error"],
                           (base or 0) // 1024, rss.peak // 1024))


def poison_claim_trial(workdir, dsn, payload_count=120, log=print):
    """A payload that kills every worker is isolated; everything else drains once."""
    violations = []
    oracle = Oracle()
    path = os.path.join(workdir, "poison.sqlite")
    agent = Agent(path, args=["--dsn", dsn, "--drain-workers", "1", "--batch-size", "8"],
                  worker_faults=True, env={"NIGHTOWL_FAULT": "kill-on-payload:POISON-14"})
    try:
        if not agent.start():
            raise AssertionError("agent did not start:\n" + agent.log()[-3000:])
        half = payload_count // 2
        _send_ids(agent.port, range(1, half + 1), oracle)
        poison = b'[{"t":"log","timestamp":1.0,"message":"POISON-14"}]'
        if send_payload(agent.port, poison) != OK:
            violations.append("the poison payload was not acked")
        _send_ids(agent.port, range(half + 1, payload_count + 1), oracle)
        catch_up(agent, 240, violations, "with a poison payload")
        status = agent.status() or {}
    finally:
        agent.stop()
    rows = read_buffer(path)
    quarantined = [r for r in rows if r[1] == 2]
    check = pg_check(oracle, dsn)
    violations.extend(check["violations"])
    if len(quarantined) != 1 or quarantined[0][2] is not None:
        violations.append("expected the poison payload alone quarantined, got {}".format(
            quarantined[:5]))
    restarts = sum(int(w.get("restarts") or 0) for w in status.get("workers") or ())
    if not restarts:
        violations.append("vacuous: no worker died")
    isolated = any("quarantining it so the drain goes on" in line for line in agent.lines)
    if not isolated:
        violations.append("the supervisor never logged isolating the payload")
    log("poison-claim: {} restarts, {} quarantined, {} acked, {} in Postgres".format(
        restarts, len(quarantined), check["acked"], check["stored"]))
    return {"fault": "poison-claim", "trial": "kill-on-payload", "ok": not violations,
            "violations": violations, "restarts": restarts,
            "detail": "{} worker deaths, {} isolated; {} acked, {} in Postgres, {} missing, "
                      "{} dup".format(restarts, len(quarantined), check["acked"],
                                      check["stored"], check["missing"], check["duplicates"])}


def frozen_worker_trial(workdir, dsn, payload_count=300, timeout=3.0, log=print):
    """A SIGSTOPped worker is found by its silence, killed, its claim drained once."""
    import signal
    violations = []
    oracle = Oracle()
    path = os.path.join(workdir, "frozen.sqlite")
    agent = Agent(path, args=["--dsn", dsn, "--drain-workers", "2", "--batch-size", "20",
                              "--worker-timeout", str(timeout)])
    stopped = None
    frozen_seen = reason_seen = False
    try:
        if not agent.start():
            raise AssertionError("agent did not start:\n" + agent.log()[-3000:])

        def workers():
            return dict((w["worker"], w) for w in (agent.status() or {}).get("workers") or ())
        if not wait_for(lambda: len([w for w in workers().values() if w.get("pid")]) == 2, 60):
            raise AssertionError("the workers did not come up")
        stopped = workers()[0]["pid"]
        sender = threading.Thread(target=_send_ids,
                                  args=(agent.port, range(1, payload_count + 1), oracle))
        sender.start()
        time.sleep(0.3)
        os.kill(stopped, signal.SIGSTOP)

        def frozen():
            w = workers().get(0) or {}
            return w.get("frozen_at") is not None and w.get("pid") != stopped and w.get("alive")
        frozen_seen = bool(wait_for(frozen, timeout + 30, every=0.2))
        reason_seen = any(r["code"] == "worker-frozen"
                          for r in (agent.status() or {}).get("reasons") or ())
        sender.join(120)
        catch_up(agent, 120, violations, "after a frozen worker")
    finally:
        agent.stop()
        if stopped is not None:
            try:
                os.kill(stopped, signal.SIGKILL)   # only if the agent did not (it should)
            except OSError:
                pass
    import re
    held = [int(m.group(1)) for m in (re.search(r"holding (\d+) claimed payloads", line)
                                      for line in agent.lines) if m]
    check = pg_check(oracle, dsn)
    violations.extend(check["violations"])
    if not frozen_seen:
        violations.append("the stopped worker was not detected, killed and respawned")
    if not reason_seen:
        violations.append("/status did not show worker-frozen")
    if len(oracle.acked) < payload_count // 2:
        violations.append("vacuous: only {} acked".format(len(oracle.acked)))
    log("frozen-worker: detected {}, reason {}, {} acked, {} in Postgres".format(
        frozen_seen, reason_seen, check["acked"], check["stored"]))
    return {"fault": "frozen-worker", "trial": "SIGSTOP", "ok": not violations,
            "violations": violations,
            "claimed_when_frozen": held[0] if held else None,
            "detail": "killed after {} s of silence: {} (held {} claimed); {} acked, {} in "
                      "Postgres, {} missing, {} dup".format(
                          timeout, frozen_seen, held[0] if held else "?", check["acked"],
                          check["stored"], check["missing"], check["duplicates"])}


def run_all(tmp, only, dsn_for, log, attempt):
    """Called by L{nightowl.bench.faults.command.run}: the trials in ``only``."""
    if "clock-skew" in only:
        with dsn_for("clock-skew") as dsn:
            if dsn:
                attempt("clock-skew", clock_skew_trial, _dir(tmp, "skew"), dsn, log=log)
    if "second-agent" in only:
        attempt("second-agent", second_agent_trial, _dir(tmp, "owner"), log=log)
    if "big-frames" in only:
        attempt("big-frames", big_frames_trial, _dir(tmp, "big"), log=log)
    if "frozen-worker" in only:
        with dsn_for("frozen-worker") as dsn:
            if dsn:
                attempt("frozen-worker", frozen_worker_trial, _dir(tmp, "frozen"), dsn, log=log)
    if "poison-claim" in only:
        with dsn_for("poison-claim") as dsn:
            if dsn:
                attempt("poison-claim", poison_claim_trial, _dir(tmp, "poison"), dsn, log=log)


def _dir(tmp, name):
    path = os.path.join(tmp, name)
    os.makedirs(path, exist_ok=True)
    return path


# re-exported for the trial table
GUARD_FAULTS = ("clock-skew", "second-agent", "big-frames", "poison-claim", "frozen-worker")
__all__ = ["clock_skew_trial", "second_agent_trial", "big_frames_trial", "poison_claim_trial",
           "frozen_worker_trial", "run_all", "GUARD_FAULTS"]
