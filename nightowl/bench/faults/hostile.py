"""
The hostile-input trial: generated and hand-written hostile frames, idle
connections and slowloris clients beside valid SDK traffic; every hostile
frame must get the reference answer, valid payloads keep their acks, idle
and slow connections are closed, RSS stays bounded.
"""

import os
import random
import socket
import threading
import time

from nightowl.bench import loadgen, payloads
from nightowl.bench.agent import (
    ERROR, OK, Agent, exchange, id_payload, ping, send_payload)
from nightowl.bench.faults.frames import (
    TOKEN, RandomChooser, generate, hand_list, judge_hostile, reference)
from nightowl.bench.faults.oracle import Oracle, read_acked, read_buffer
from nightowl.bench.procfs import RssSampler, rss_kb


# -- trial 7: hostile input beside valid traffic -------------------------------

def _idle_holders(port, n):
    socks = []
    failed = 0
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
        except OSError:
            failed += 1
            s.close()
    return socks, failed


def _wait_closed(socks, timeout):
    """Wait until the agent closed every socket; (closed, got_data, still_open)."""
    import selectors
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    closed = data = 0
    deadline = time.monotonic() + timeout
    left = len(socks)
    while left and time.monotonic() < deadline:
        for key, _ev in sel.select(timeout=0.5):
            s = key.fileobj
            try:
                chunk = s.recv(64)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if chunk:
                data += 1
            closed += 1
            left -= 1
            sel.unregister(s)
    sel.close()
    for s in socks:
        s.close()
    return closed, data, left


def _slowloris(port, frame, every, results):
    """Trickle ``frame`` one byte per ``every`` seconds until the agent closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    start = time.monotonic()
    reply = b""
    how = "completed"
    try:
        s.settimeout(every)
        for i in range(len(frame)):
            try:
                s.send(frame[i:i + 1])
            except OSError:
                how = "closed"
                break
            try:
                chunk = s.recv(64)
                if not chunk:
                    how = "closed"
                    break
                reply += chunk
            except socket.timeout:
                pass
            except OSError:
                how = "closed"
                break
            if time.monotonic() - start > 60:
                how = "hang"
                break
    finally:
        s.close()
    results.append((how, reply, time.monotonic() - start))


def hostile_trial(workdir, generated=300, idle=500, slowloris=10, valid_rate=200,
                  seed=1, frame_timeout=2.0, chooser_frames=None, log=print):
    """
    Hostile input beside valid traffic, on an agent with ``--token`` and
    ``--frame-timeout 2``: the hand list, ``generated`` spoiled frames (seeded
    random; the tests pass hypothesis-made frames in ``chooser_frames``),
    slowloris clients and ``idle`` connections that never send a byte, while
    the C generator sends valid frames at ``valid_rate``/s.  Checks: the
    agent stays up, RSS comes back down, every bad frame gets 5:ERROR or a
    close (never 2:OK, never a hang past the frame timeout), every valid
    frame is acked and stored exactly once.
    """
    rng = random.Random(seed)
    path = os.path.join(workdir, "hostile-buffer.sqlite")
    frames_path = os.path.join(workdir, "hostile-frames.bin")
    acked_file = os.path.join(workdir, "hostile-acked.txt")
    loadgen.write_frames([payloads.frame(id_payload(0), TOKEN)], frames_path)
    oracle = Oracle()
    violations = []
    outcomes = {}
    hand = hand_list()
    frames = []
    for label, data, incomplete in hand:
        frames.append((label, data, incomplete))
    if chooser_frames is None:
        chooser = RandomChooser(rng)
        skipped = 0
        while len(frames) - len(hand) < generated:
            data = generate(chooser)
            verdict = reference(data)
            if verdict == "valid":
                skipped += 1
                continue
            frames.append(("generated", data, False))
    else:
        frames.extend(("generated", data, False) for data in chooser_frames)
    wait = frame_timeout + 5.0  # IngestFactory closes between timeout and timeout + 0.5 s
    agent = Agent(path, ["--drain-workers", "0", "--token", TOKEN,
                         "--frame-timeout", str(frame_timeout)])
    gen = None
    res = {"fault": "hostile", "frames": len(frames), "idle": idle, "slowloris": slowloris}
    try:
        if not agent.start():
            raise AssertionError("agent did not start:\n" + agent.log())
        for n in range(800000000001, 800000000051):  # warm up before the baseline
            oracle.send([n])
            if send_payload(agent.port, id_payload(n), TOKEN) == OK:
                oracle.ack([n])
        rss_before = rss_kb(agent.pid)
        duration = max(10.0, 4.0 + generated / 400.0)
        gen = loadgen.start_load("127.0.0.1", agent.port, frames_path, 8, duration=duration,
                                 rate=valid_rate, acked_file=acked_file, seq_start=1,
                                 timeout=10.0)
        with RssSampler(agent.pid) as sampler:
            socks, idle_failed = _idle_holders(agent.port, idle)
            slow_results = []
            slow_frame = payloads.frame(b'[{"t":"log","id":"slowloris"}]', TOKEN)
            slow_threads = [threading.Thread(target=_slowloris,
                                             args=(agent.port, slow_frame, 0.25, slow_results))
                            for _ in range(slowloris)]
            for t in slow_threads:
                t.start()
            lock = threading.Lock()
            queue = list(frames)
            rng.shuffle(queue)

            def sender():
                while True:
                    with lock:
                        if not queue:
                            return
                        label, data, incomplete = queue.pop()
                    reply, how = exchange(agent.port, data, timeout=wait,
                                          half_close=not incomplete)
                    outcome = judge_hostile(reply, how)
                    with lock:
                        outcomes[outcome] = outcomes.get(outcome, 0) + 1
                        if outcome not in ("error", "closed"):
                            violations.append("{} frame ({}) -> {} {!r}: {!r}".format(
                                label, len(data), outcome, reply[:20], data[:60]))

            senders = [threading.Thread(target=sender) for _ in range(4)]
            for t in senders:
                t.start()
            for t in senders:
                t.join()
            closed, idle_data, idle_open = _wait_closed(socks, wait + 10)
            for t in slow_threads:
                t.join()
            out, err = gen.communicate(timeout=duration + 120)
            gen = None
            valid = loadgen.parse_result(out, err)
            time.sleep(2.0)  # quiet: let the allocator settle
            rss_after = rss_kb(agent.pid)
        alive = agent.alive()
        pinged = alive and ping(agent.port)
        rejected = agent.rejected() or {}
        res["exit_code"] = agent.stop()
        tracebacks = agent.tracebacks()
    finally:
        agent.kill()
        if gen is not None:
            gen.kill()
            gen.wait()
    oracle.send(range(1, 1 + valid["started"]))
    oracle.ack(read_acked(acked_file))
    check = oracle.check(read_buffer(path))
    slow_bad = [(how, reply, round(t, 1)) for (how, reply, t) in slow_results
                if how != "closed" or reply not in (b"", ERROR) or t > wait]
    valid_lost = valid["started"] - valid["ok"]
    if not alive:
        violations.append("the agent died")
    elif not pinged:
        violations.append("PING failed after the hostile run")
    if tracebacks:
        violations.append("{} tracebacks in the agent's log".format(tracebacks))
    if valid_lost:
        violations.append("{} of {} valid frames not acked ({})".format(
            valid_lost, valid["started"], {k: valid[k] for k in (
                "bad_reply", "reset_or_eof", "timeouts", "connect_failures")}))
    if not valid["ok"]:
        violations.append("vacuous: no valid traffic acked beside the hostile frames")
    if idle_open or idle_data:
        violations.append("idle connections: {} still open after the frame timeout, {} got "
                          "bytes".format(idle_open, idle_data))
    if slow_bad:
        violations.append("slowloris clients not closed cleanly: {}".format(slow_bad[:5]))
    growth = (rss_after or 0) - (rss_before or 0)
    if growth > 100 * 1024:
        violations.append("RSS grew by {} MB and stayed".format(growth // 1024))
    violations += check["violations"]
    res.update({
        "outcomes": outcomes, "valid_sent": valid["started"], "valid_acked": valid["ok"],
        "valid_p99_ms": valid.get("p99_ms"), "valid_p50_ms": valid.get("p50_ms"),
        "idle_closed": closed, "idle_connect_failed": idle_failed,
        "slowloris_closed": sum(1 for r in slow_results if r[0] == "closed"),
        "slowloris_max_s": round(max([r[2] for r in slow_results] or [0]), 1),
        "rss_before_kb": rss_before, "rss_peak_kb": sampler.peak, "rss_after_kb": rss_after,
        "rejected": dict((k, v) for k, v in rejected.items() if v),
        "oracle": check, "violations": violations, "ok": not violations})
    log("hostile: {n} frames {o}, {v_ok}/{v_sent} valid acked, {ic}/{idle} idle closed, "
        "{sc}/{sl} slowloris closed, RSS {b}->{p} peak->{a} kB: {verdict}".format(
            n=len(frames), o=outcomes, v_ok=valid["ok"], v_sent=valid["started"], ic=closed,
            idle=idle, sc=res["slowloris_closed"], sl=slowloris, b=rss_before, p=sampler.peak,
            a=rss_after, verdict="ok" if not violations else "; ".join(
                v.splitlines()[0][:300] for v in violations[:10])))
    return res
