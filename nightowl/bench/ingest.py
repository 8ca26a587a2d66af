"""
``nightowl bench ingest``: how many SDK payloads per second the agent
acknowledges, at what latency, against a bare Twisted server that stores
nothing.

1. The bare server (``nightowl.bench.bareserver``) at full speed: the
   baseline, and proof the load generator is not the bottleneck (its CPU and
   the server's CPU are both reported).
2. The agent (``twistd -n nightowl`` on a temporary buffer, no drain, no
   health endpoint) at full speed: payloads/s acknowledged, p50/p99 ack latency.
3. The agent at a fixed rate (10,000/s): p99 ack latency.
4. The agent's RSS (VmRSS, VmHWM), then the buffer's row count against the
   number of ``2:OK`` replies.
5. ``--processes``: the agent with several ingest processes (ingest_procs).

All of it ``--rounds`` times (default 3), each round on fresh buffers, and
then the median of each ratio across the rounds (ingest_rounds).  The last
line on stdout is one JSON object with the figures (``rounds`` and
``medians`` when there are several).
"""

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

from nightowl.bench import ingest_procs, ingest_rounds, loadgen, payloads, procfs
from nightowl.bench.agent import Agent, agent_env
from nightowl.bench.ingest_report import box_text, failure_text, failures, fmt_rate, table
from nightowl.errors import CommandError


def configure(parser):
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds per measured run (default 10)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="connections in flight at full speed (default 16)")
    parser.add_argument("--rate-for-latency", type=int, default=10000,
                        help="payloads/s for the fixed-rate latency run (default 10000)")
    parser.add_argument("--latency-concurrency", type=int, default=256,
                        help="most connections in flight during the fixed-rate run (default 256)")
    parser.add_argument("--split", action="store_true",
                        help="write '<len>:' and the body separately, like older SDKs")
    parser.add_argument("--mix", action="store_true",
                        help="round-robin 200 payloads mixed from every fixture type "
                             "instead of the one realistic 5-record payload")
    parser.add_argument("--token", default=None,
                        help="token whose hash the frames carry (default: none)")
    parser.add_argument("--bare-only", action="store_true",
                        help="measure the bare server only (no agent)")
    parser.add_argument("--startup-timeout", type=float, default=30.0,
                        help="seconds to wait for the agent to accept connections")
    parser.add_argument("--two-generators", action="store_true",
                        help="also drive the bare server from 2 generator processes "
                             "(half the connections each): if the total does not rise, "
                             "one generator was not the bottleneck")
    parser.add_argument("--processes", default="2",
                        help="also run the agent with --ingest-processes N for each N listed "
                             "(comma-separated; default 2; 'none' skips)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="run the whole sequence this many times and report the median "
                             "of each ratio (default 3; see nightowl.bench.ingest_rounds)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (buffer, logs)")


# -- processes -------------------------------------------------------------

def _stop(proc, grace=15.0):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def start_agent(tmp, startup_timeout):
    """The agent on a temporary buffer, no drain, no health endpoint; running."""
    agent = Agent(os.path.join(tmp, "buffer.sqlite"), args=["--drain-workers", "0"],
                  health=False)
    if not agent.start(startup_timeout):
        raise CommandError("the agent did not start within {:.0f} s (exit {}): {}".format(
            startup_timeout, agent.returncode, agent.last_line()))
    return agent


def start_bare_server():
    proc = subprocess.Popen([sys.executable, "-m", "nightowl.bench.bareserver", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=agent_env())
    line = proc.stdout.readline()
    if not line.startswith("listening "):
        _stop(proc)
        raise CommandError("the bare server did not start: {}".format(
            (proc.stderr.read().strip().splitlines() or ["?"])[-1]))
    return proc, int(line.split()[1])


# -- measuring -------------------------------------------------------------

def measure(port, frames_path, server_pid, concurrency, duration, split, rate=None,
            cpu=procfs.cpu_seconds):
    """One generator run; adds the server's CPU share (``cpu(pid)``) and the generator's."""
    cpu0, t0, box0 = cpu(server_pid), time.monotonic(), procfs.box_ticks()
    proc = loadgen.start_load("127.0.0.1", port, frames_path, concurrency,
                              duration=duration, rate=rate, split=split)
    out, err = proc.communicate()
    elapsed = time.monotonic() - t0
    cpu1 = cpu(server_pid)
    box = procfs.box_share(box0, procfs.box_ticks())
    if proc.returncode != 0:
        raise CommandError("the load generator failed: {}".format(
            (err.strip().splitlines() or ["exit {}".format(proc.returncode)])[-1]))
    result = loadgen.parse_result(out, err)
    result["generator_cpu_pct"] = 100.0 * (result["cpu_user_s"] + result["cpu_sys_s"]) / elapsed
    result["box"] = box
    if cpu0 is not None and cpu1 is not None:
        result["server_cpu_pct"] = 100.0 * (cpu1 - cpu0) / elapsed
        result["server_cpu_us"] = cpu_per_reply_us(cpu1 - cpu0, result["ok"])
    return result


def cpu_per_reply_us(cpu_seconds, replies):
    """Server CPU microseconds per ``2:OK`` (None without a reply)."""
    return round(1e6 * cpu_seconds / replies, 1) if replies else None


def cpu_ratio(agent_us, bare_us):
    """The agent's CPU per acked payload over the bare server's per connection."""
    if not agent_us or not bare_us:
        return None
    return round(agent_us / bare_us, 3)


def measure_parallel(port, frames_path, server_pid, concurrency, duration, split, n=2):
    """``n`` generator processes at once, ``concurrency / n`` connections each."""
    cpu0, t0 = procfs.cpu_seconds(server_pid), time.monotonic()
    procs = [loadgen.start_load("127.0.0.1", port, frames_path, max(1, concurrency // n),
                                duration=duration, split=split) for _ in range(n)]
    results = []
    for proc in procs:
        out, err = proc.communicate()
        results.append(loadgen.parse_result(out, err))
    elapsed = time.monotonic() - t0
    cpu1 = procfs.cpu_seconds(server_pid)
    return {
        "payloads_per_s": sum(r["payloads_per_s"] for r in results),
        "failures": sum(failures(r) for r in results),
        "p99_ms": max(r["p99_ms"] for r in results),
        "server_cpu_pct": 100.0 * (cpu1 - cpu0) / elapsed if cpu0 is not None and cpu1 else 0,
        "generator_cpu_pct": sum(100.0 * (r["cpu_user_s"] + r["cpu_sys_s"]) / elapsed
                                 for r in results),
    }


def count_rows(buffer_path):
    conn = sqlite3.connect("file:{}?mode=ro".format(buffer_path), uri=True, timeout=10)
    try:
        return conn.execute("SELECT count(*) FROM payloads").fetchone()[0]
    finally:
        conn.close()


def run(args):
    if (args.duration <= 0 or args.concurrency <= 0 or args.rate_for_latency <= 0
            or args.rounds <= 0):
        raise CommandError("--duration, --concurrency, --rate-for-latency and --rounds must be > 0")
    ingest_procs.parse_counts(args.processes)   # a bad list stops before anything starts
    loadgen.binary()  # compile first: a compiler problem stops before anything starts
    tmp = tempfile.mkdtemp(prefix="nightowl-bench-ingest-")
    try:
        summaries, code = [], 0
        for n in range(args.rounds):
            if args.rounds > 1:
                print("\nround {} of {}".format(n + 1, args.rounds), flush=True)
            workdir = os.path.join(tmp, "round-{}".format(n + 1))
            os.makedirs(workdir)
            summary, round_code = _run(args, workdir)
            if not args.keep:
                shutil.rmtree(workdir, ignore_errors=True)  # a round's buffers: ~0.5 GB
            summaries.append(summary)
            code = code or round_code
            if round_code and summary.get("agent_error"):
                break  # the agent cannot run: another round would say the same
        if len(summaries) == 1:
            final = summaries[0]
        else:
            found = ingest_rounds.medians(summaries)
            ingest_rounds.say_medians(found, len(summaries), print)
            final = {"rounds": summaries, "medians": found}
        print(json.dumps(final, sort_keys=True), flush=True)
        return code
    finally:
        if args.keep:
            print("kept {}".format(tmp))
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _run(args, tmp):
    if args.mix:
        bodies = payloads.fixture_mix(200)
    else:
        bodies = [payloads.realistic_payload()]
    frames = [payloads.frame(b, token=args.token) for b in bodies]
    frames_path = os.path.join(tmp, "frames.bin")
    loadgen.write_frames(frames, frames_path)
    payload_bytes = round(sum(len(b) for b in bodies) / len(bodies))
    say = lambda text: print(text, flush=True)  # noqa: E731
    say("nightowl bench ingest: {} payload bytes ({}), concurrency {}, {:g} s per run, {}"
        .format(payload_bytes, "fixture mix" if args.mix else "5 records",
                args.concurrency, args.duration,
                "'<len>:' and body as two writes" if args.split else "one write per frame"))

    # 1. The bare server.
    bare_proc, bare_port = start_bare_server()
    try:
        measure(bare_port, frames_path, bare_proc.pid, args.concurrency, 1.0, args.split)  # warm up
        bare = measure(bare_port, frames_path, bare_proc.pid, args.concurrency,
                       args.duration, args.split)
        two = None
        if args.two_generators:
            two = measure_parallel(bare_port, frames_path, bare_proc.pid, args.concurrency,
                                   args.duration, args.split)
    finally:
        _stop(bare_proc)
    say("bare server   {:>10}  p50 {:.2f} ms  p99 {:.2f} ms  failures {}  "
        "server CPU {:.0f}% ({} us per connection)  generator CPU {:.0f}%{}".format(
            fmt_rate(bare["payloads_per_s"]), bare["p50_ms"], bare["p99_ms"], failure_text(bare),
            bare.get("server_cpu_pct", 0), bare.get("server_cpu_us"), bare["generator_cpu_pct"],
            box_text(bare)))

    if two:
        say("bare, 2 gens  {:>10}  p99 {:.2f} ms  failures {}  server CPU {:.0f}%  "
            "generators CPU {:.0f}% together".format(
                fmt_rate(two["payloads_per_s"]), two["p99_ms"], two["failures"],
                two["server_cpu_pct"], two["generator_cpu_pct"]))

    summary = {
        "payloads_per_s": None, "bare_payloads_per_s": round(bare["payloads_per_s"], 1),
        "ratio": None, "p50_ms": None, "p99_ms": None, "p99_ms_at_fixed_rate": None,
        "fixed_rate": args.rate_for_latency, "agent_rss_mb": None, "agent_peak_rss_mb": None,
        "acked": None, "buffered": None, "payload_bytes": payload_bytes,
        "concurrency": args.concurrency, "duration_s": args.duration, "split": args.split,
        "bare_p99_ms": bare["p99_ms"], "bare_server_cpu_pct": round(bare.get("server_cpu_pct", 0), 1),
        "generator_cpu_pct_vs_bare": round(bare["generator_cpu_pct"], 1),
        "bare_cpu_us_per_connection": bare.get("server_cpu_us"), "box_vs_bare": bare.get("box"),
        "agent_cpu_us_per_payload": None, "cpu_ratio": None,
    }
    if two:
        summary["bare_payloads_per_s_two_generators"] = round(two["payloads_per_s"], 1)
    agent_error = None
    if not args.bare_only:
        try:
            summary.update(_agent_runs(args, tmp, frames_path, bare, say))
            runs = [ingest_procs.run_processes(args, tmp, frames_path, n, say)
                    for n in ingest_procs.parse_counts(args.processes) if n > 1]
            summary["scaling"] = ingest_procs.scaling(summary, runs, say)
        except CommandError as e:
            agent_error = str(e)
            say("agent: not measured: {}".format(agent_error))

    table(summary, say)
    if agent_error:
        summary["agent_error"] = agent_error
        return summary, 1
    if summary["buffered"] is not None and summary["buffered"] < summary["acked"]:
        return summary, 1
    if any(r["buffered"] < r["acked"] for r in
           (summary.get("scaling") or {}).get("by_processes", {}).values()):
        return summary, 1
    return summary, 0


def _agent_runs(args, tmp, frames_path, bare, say):
    agent = start_agent(tmp, args.startup_timeout)
    port, pid, buffer_path = agent.port, agent.pid, agent.buffer_path
    sampler = procfs.RssSampler(pid, every=0.1).start()
    acked = started = 0
    try:
        runs = []
        warm = measure(port, frames_path, pid, args.concurrency, 1.0, args.split)
        runs.append(warm)
        full = measure(port, frames_path, pid, args.concurrency, args.duration, args.split)
        runs.append(full)
        say("agent         {:>10}  p50 {:.2f} ms  p99 {:.2f} ms  failures {}  "
            "agent CPU {:.0f}% ({} us per payload)  generator CPU {:.0f}%{}".format(
                fmt_rate(full["payloads_per_s"]), full["p50_ms"], full["p99_ms"],
                failure_text(full), full.get("server_cpu_pct", 0), full.get("server_cpu_us"),
                full["generator_cpu_pct"], box_text(full)))
        time.sleep(1.0)  # let the writer catch up before the latency run
        fixed = measure(port, frames_path, pid, args.latency_concurrency, args.duration,
                        args.split, rate=args.rate_for_latency)
        runs.append(fixed)
        say("agent @{:>6}/s {:>9}  p50 {:.2f} ms  p99 {:.2f} ms  max {:.1f} ms  failures {}  "
            "late starts {}".format(args.rate_for_latency, fmt_rate(fixed["payloads_per_s"]),
                                    fixed["p50_ms"], fixed["p99_ms"], fixed["max_ms"],
                                    failure_text(fixed), fixed["late"]))
        memory = procfs.memory_kb(pid)
        rss, hwm = [memory[k] / 1024.0 if k in memory else None for k in ("VmRSS", "VmHWM")]
        for r in runs:
            acked += r["ok"]
            started += r["started"]
    finally:
        code = agent.stop(15.0)  # first: a failure below must never leave the agent running
        sampler.stop()
        with open(os.path.join(tmp, "agent.log"), "w") as f:
            f.write(agent.log())
    if code not in (0, -signal.SIGTERM):
        say("agent exited with code {} after SIGTERM: {}".format(code, agent.last_line()))
    try:
        buffered = count_rows(buffer_path)
    except sqlite3.Error as e:
        raise CommandError("cannot count the buffer's rows in {}: {}".format(buffer_path, e))
    peak = max(x for x in (hwm, sampler.peak / 1024.0, rss) if x is not None) if (hwm or rss) else None
    return {
        "payloads_per_s": round(full["payloads_per_s"], 1),
        "ratio": round(full["payloads_per_s"] / bare["payloads_per_s"], 3),
        "p50_ms": full["p50_ms"], "p99_ms": full["p99_ms"], "max_ms": full["max_ms"],
        "p50_ms_at_fixed_rate": fixed["p50_ms"],
        "p99_ms_at_fixed_rate": fixed["p99_ms"],
        "achieved_fixed_rate": round(fixed["payloads_per_s"], 1),
        "agent_rss_mb": round(rss, 1) if rss else None,
        "agent_peak_rss_mb": round(peak, 1) if peak else None,
        "agent_cpu_pct": round(full.get("server_cpu_pct", 0), 1),
        "agent_cpu_us_per_payload": full.get("server_cpu_us"),
        "cpu_ratio": cpu_ratio(full.get("server_cpu_us"), bare.get("server_cpu_us")),
        "generator_cpu_pct_vs_agent": round(full["generator_cpu_pct"], 1),
        "box_vs_agent": full.get("box"),
        "acked": acked, "frames_sent": started, "buffered": buffered,
        "failures": sum(failures(r) for r in runs),
    }
