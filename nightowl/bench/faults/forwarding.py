"""
The forwarding trial (``--only upstream-kill``): the ``--forward`` upstream
(the recorder of L{nightowl.bench.faults.upstream}) SIGKILLed under load and
started again on the same port.  Verdict: every acked id reached the
upstream at least once (byte-identical frame) unless dropped past the
documented bound, nothing beyond that bound was dropped, and Postgres holds
every acked id exactly once.
"""

import os
import random
import time

from nightowl.bench import loadgen, payloads
from nightowl.bench.agent import Agent, id_payload, wait_for
from nightowl.bench.faults.draining import (
    DRAIN_ARGS, catch_up, finish_load, id_frames_file, stop_load)
from nightowl.bench.faults.oracle import ID_RE, Oracle, pg_check, read_acked
from nightowl.bench.faults.upstream import Upstream


def forward_figures(agent):
    return (agent.status() or {}).get("forward") or {}


def upstream_ids(frames):
    """(ids seen, frames not byte-identical to the SDK frame of their id, frames without an id)."""
    seen, altered, anonymous = [], 0, 0
    for f in frames:
        found = set(ID_RE.findall(f))
        if len(found) != 1:
            anonymous += 1
            continue
        n = int(found.pop())
        seen.append(n)
        if f != payloads.frame(id_payload(n)):
            altered += 1
    return seen, altered, anonymous


def upstream_kill_trial(workdir, dsn, seed=1, rate=800, concurrency=8, outage_s=3.0,
                        max_rows=1000000, catchup=180.0, log=print):
    """
    Load at ``rate`` for the whole trial; the upstream is killed a little
    after the start, kept down ``outage_s`` and started again; then wait
    for the forward backlog and the drain to empty.  ``max_rows``: the
    agent's --forward-max-rows (a small one checks the drop side).
    """
    rng = random.Random(seed)
    os.makedirs(workdir, exist_ok=True)
    frames_path = id_frames_file(workdir, "fwd-frames.bin")
    acked_file = os.path.join(workdir, "fwd-acked.txt")
    upstream = Upstream(os.path.join(workdir, "upstream.rec"))
    violations = []
    res = {"fault": "upstream-kill", "outage_s": outage_s, "max_rows": max_rows}
    agent = gen = None
    try:
        upstream.start()
        agent = Agent(os.path.join(workdir, "fwd-buffer.sqlite"), DRAIN_ARGS + [
            "--dsn", dsn, "--forward", "127.0.0.1:{}".format(upstream.port),
            "--forward-max-rows", str(max_rows)])
        if not agent.start():
            raise AssertionError("agent did not start:\n" + "\n".join(agent.lines[-30:]))
        total = 3.0 + outage_s + 3.0
        gen = loadgen.start_load("127.0.0.1", agent.port, frames_path, concurrency,
                                 duration=total, rate=rate, acked_file=acked_file,
                                 seq_start=1, timeout=2.0)
        forwarding = wait_for(lambda: (forward_figures(agent).get("forwarded") or 0) > 0,
                              30.0, every=0.1)
        time.sleep(1.0 + rng.random())
        upstream.kill()
        noticed = wait_for(lambda: forward_figures(agent).get("upstream_up") is False,
                           30.0, every=0.1)
        before = forward_figures(agent)
        time.sleep(outage_s)
        during = forward_figures(agent)
        upstream.start()
        result = finish_load(gen)
        gen = None
        emptied = wait_for(lambda: forward_figures(agent).get("backlog_rows") == 0
                           and forward_figures(agent).get("upstream_up") is True,
                           catchup, every=0.5)
        if not emptied:
            violations.append("the forward backlog did not empty in {:.0f} s ({})".format(
                catchup, forward_figures(agent)))
        catch_up(agent, catchup, violations, "after the upstream came back")
        after = forward_figures(agent)
        agent.stop()
        if agent.tracebacks():
            violations.append("{} tracebacks in the agent's log".format(agent.tracebacks()))
        acked = read_acked(acked_file)
        oracle = Oracle()
        oracle.send(range(1, 1 + result["started"]))
        oracle.ack(acked)
        check = pg_check(oracle, dsn)
        seen, altered, anonymous = upstream_ids(upstream.frames())
    finally:
        stop_load(gen)
        if agent is not None:
            agent.kill()
        upstream.kill()
    seen_set = set(seen)
    missing = acked - seen_set
    dropped = after.get("dropped") or 0
    allowed = max(0, len(acked) - max_rows) if max_rows < len(acked) else 0
    if not forwarding:
        violations.append("vacuous: nothing was forwarded before the kill")
    if not noticed:
        violations.append("vacuous: the agent never saw the upstream down")
    if (during.get("backlog_rows") or 0) <= (before.get("backlog_rows") or 0) and max_rows > 1000:
        violations.append("vacuous: the forward backlog did not grow while the upstream was "
                          "down ({} -> {})".format(before.get("backlog_rows"),
                                                   during.get("backlog_rows")))
    if len(missing) > dropped:
        violations.append("{} acked ids never reached the upstream, {} dropped counted "
                          "(e.g. {})".format(len(missing), dropped, sorted(missing)[:5]))
    if dropped > allowed:
        violations.append("{} forwards dropped, the bound allows {} ({} acked, max {} rows)"
                          .format(dropped, allowed, len(acked), max_rows))
    if altered or anonymous:
        violations.append("{} upstream frames differ from the SDK's, {} carry no id".format(
            altered, anonymous))
    if seen_set - oracle.sent:
        violations.append("{} ids reached the upstream that were never sent".format(
            len(seen_set - oracle.sent)))
    violations += check["violations"]
    res.update({"acked": len(acked), "upstream_frames": len(seen),
                "upstream_distinct": len(seen_set), "upstream_duplicates": len(seen) - len(seen_set),
                "missing_upstream": len(missing), "dropped": dropped, "allowed_drops": allowed,
                "backlog_during_outage": during.get("backlog_rows"),
                "failures": after.get("failures"), "pg_stored": check["stored"],
                "oracle": check, "violations": violations, "ok": not violations})
    res["detail"] = ("{acked} acked; upstream got {upstream_distinct} ({upstream_duplicates} "
                     "twice), {missing_upstream} missing, {dropped} dropped (bound allows "
                     "{allowed_drops}); backlog {backlog_during_outage} during a {outage_s} s "
                     "outage; {pg_stored} in Postgres".format(**res))
    res["trial"] = "max {} rows".format(max_rows)
    log("upstream kill: {}: {}".format(res["detail"], "ok" if res["ok"] else "; ".join(violations)))
    return res
