"""
``nightowl bench e2e [--duration 60] [--step-seconds 15]``

End to end on this machine: the real agent (``twistd -n nightowl``) with its
drain workers, a scratch database on the local cluster (``--admin-dsn``,
created and dropped here), driven at a fixed rate by the C load generator
(one SDK frame per connection) with the realistic payload mix
(bench.payloads.fixture_mix, 5-7 records each).

The question is the sustainable rate: the highest rate at which ingest and
drain keep pace, i.e. the buffer stays flat.  A rate search steps up from
``--start-rate`` by ``--rate-step`` in ``--step-seconds`` steps until a step
is not flat, bisects once between the last flat and the first unflat rate,
then confirms the best rate for ``--duration`` (falling back to the lower
rates that passed the search, highest first, when it does not hold).

A step is **flat** when the backlog (pending + claimed rows, from /status)
at the end of the step is no more than ``bound`` above the backlog at its
start, where ``bound = max(2 x batch size, 1 s of traffic)`` (a claim takes
up to a batch at a time per worker, so the backlog saws by about that much);
and **sustained** when the generator really sent at the rate (>= 95 %) and
every frame got ``2:OK``.  A step passes when it is both.

Per step: achieved rate, ack latency p50/p99 (from the generator), backlog
start/end/peak, CPU % of the agent, its workers and the Postgres backends of
the scratch database (plus the cluster's background processes), agent RSS
peak.  The last line printed is one JSON object with every figure.  When the
target is missed (or with ``--profile``) the agent and one worker are
sampled with py-spy at the first unflat rate and the top frames printed.
"""

import json
import os
import shutil
import sys
import tempfile
import threading
import time

from nightowl.bench import e2e_ratios, procfs, pyspy, scratch
from nightowl.bench.e2e_search import (
    confirmation_rates, flat_bound, is_flat, is_sustained, rate_search)
from nightowl.bench.agent import Agent, wait_for

TARGET = {"rate": 8000, "p99_ms": 20.0, "rss_mb": 150.0}


def configure(parser):
    parser.add_argument("--duration", type=float, default=60.0,
                        help="seconds of the confirmation run at the best rate (default 60)")
    parser.add_argument("--step-seconds", type=float, default=15.0,
                        help="seconds per rate-search step (default 15)")
    parser.add_argument("--start-rate", type=int, default=4000,
                        help="first rate tried, payloads/s (default 4000)")
    parser.add_argument("--rate-step", type=int, default=2000,
                        help="rate increase per step, payloads/s (default 2000)")
    parser.add_argument("--max-rate", type=int, default=30000,
                        help="stop searching above this rate (default 30000)")
    parser.add_argument("--rates", default=None,
                        help="comma-separated rates to measure instead of searching")
    parser.add_argument("--workers", type=int, default=2, help="drain workers (default 2)")
    parser.add_argument("--batch-size", type=int, default=5000,
                        help="payloads per claim (default 5000)")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="generator connections in flight at most (default 64)")
    parser.add_argument("--mix", type=int, default=500,
                        help="distinct payloads in the realistic mix (default 500)")
    scratch.add_admin_dsn(parser)
    parser.add_argument("--profile", metavar="DIR", default=None,
                        help="always profile (py-spy raw files in DIR); by default the agent "
                             "is profiled only when the target is missed, into a temp dir")
    parser.add_argument("--no-profile", action="store_true", help="never profile")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--no-ingest-only", action="store_true",
                        help="skip the half-rate step and the ingest-only agent (the three "
                             "issue 12 figures: CPU with/without drain, rate, p99 at half)")


def cpu_pct(ticks_before, ticks_after, seconds, clk_tck=100):
    """CPU % over ``seconds`` summed over the pids present in both samples."""
    common = set(ticks_before) & set(ticks_after)
    used = sum(ticks_after[p] - ticks_before[p] for p in common)
    return 100.0 * used / clk_tck / seconds if seconds > 0 else 0.0


# -- measurements ------------------------------------------------------------------

def _pg_pids(admin_dsn, dbname):
    """(backends of ``dbname``, the cluster's background processes) from pg_stat_activity."""
    import psycopg2
    conn = psycopg2.connect(admin_dsn)
    try:
        cur = conn.cursor()
        cur.execute("SELECT pid, datname, backend_type FROM pg_stat_activity "
                    "WHERE pid <> pg_backend_pid()")
        backends, background = [], []
        for pid, datname, backend_type in cur.fetchall():
            if datname == dbname:
                backends.append(pid)
            elif backend_type != "client backend":
                background.append(pid)
        return backends, background
    finally:
        conn.close()


class _Sampler(threading.Thread):
    """Backlog (pending + claimed) from /status and agent RSS, every ``every`` s."""

    def __init__(self, agent, every=0.5):
        threading.Thread.__init__(self, daemon=True)
        self.agent, self.every = agent, every
        self.backlog = []
        self.rss_peak_kb = 0
        self.workers = set()
        self._done = threading.Event()

    def run(self):
        while not self._done.is_set():
            s = self.agent.status()
            if s:
                b = s["buffer"]
                self.backlog.append((time.monotonic(), b["pending"] + b["claimed"]))
                self.workers.update(w["pid"] for w in s.get("workers") or () if w.get("pid"))
            rss = procfs.rss_kb(self.agent.pid)
            if rss:
                self.rss_peak_kb = max(self.rss_peak_kb, rss)
            self._done.wait(self.every)

    def stop(self):
        self._done.set()
        self.join()


def _backlog(agent):
    s = agent.status()
    if not s:
        return None
    return s["buffer"]["pending"] + s["buffer"]["claimed"]


def _settled(agent, limit, drained=True):
    """The backlog at most ``limit``, and (``drained``) the drained rows kept too."""
    s = agent.status()
    if not s:
        return False
    b = s["buffer"]
    return b["pending"] + b["claimed"] <= limit and (
        not drained or b.get("drained_kept", 0) <= limit)


def _workers(agent):
    s = agent.status() or {}
    return [w["pid"] for w in s.get("workers") or () if w.get("alive") and w.get("pid")]


def _profile_targets(agent):
    """The agent and one of its workers, as py-spy targets."""
    return [("agent", agent.pid)] + [("worker", p) for p in _workers(agent)[:1]]


def step(agent, frames_path, rate, seconds, concurrency, batch_size, admin_dsn, dbname,
         settle=120.0, start_backlog=None):
    """One fixed-rate step; the figures, with ``flat``, ``sustained`` and ``passed``.
    It starts once the backlog is at most ``start_backlog`` (default: one batch;
    given, the drained rows kept must be down to it too)."""
    from nightowl.bench import loadgen
    # start from a drained buffer, so a step does not inherit the last one's backlog
    # given start_backlog (steady state), the drained rows of the last step
    # deleted too: the housekeeping's deletes of a big backlog are writer
    # work no steady rate has
    limit = batch_size if start_backlog is None else start_backlog
    wait_for(lambda: _settled(agent, limit, drained=start_backlog is not None), settle,
             every=0.5)
    backends, background = _pg_pids(admin_dsn, dbname)
    workers = _workers(agent)
    t_agent, t_workers = procfs.ticks_of([agent.pid]), procfs.ticks_of(workers)
    t_pg, t_bg = procfs.ticks_of(backends), procfs.ticks_of(background)
    b0 = _backlog(agent) or 0
    sampler = _Sampler(agent)
    sampler.start()
    t0 = time.monotonic()
    gen = loadgen.start_load("127.0.0.1", agent.port, frames_path, concurrency,
                             duration=seconds, rate=rate, timeout=5.0)
    try:
        out, err = gen.communicate(timeout=seconds + 120)
    finally:
        if gen.poll() is None:
            gen.kill()
            gen.wait()
    elapsed = time.monotonic() - t0
    b1 = _backlog(agent) or 0
    backends2, background2 = _pg_pids(admin_dsn, dbname)
    sampler.stop()
    res = loadgen.parse_result(out, err)
    clk = os.sysconf("SC_CLK_TCK")
    cpu = {
        "agent": cpu_pct(t_agent, procfs.ticks_of([agent.pid]), elapsed, clk),
        "workers": cpu_pct(t_workers, procfs.ticks_of(workers), elapsed, clk),
        "postgres": cpu_pct(t_pg, procfs.ticks_of(backends), elapsed, clk),
        "pg_background": cpu_pct(t_bg, procfs.ticks_of(background), elapsed, clk),
        "generator": 100.0 * (res.get("cpu_user_s", 0) + res.get("cpu_sys_s", 0)) / elapsed,
    }
    if set(workers) != set(_workers(agent)) or set(backends) != set(backends2):
        cpu["note"] = "worker or backend pids changed during the step"
    achieved = res["payloads_per_s"]
    flat = is_flat(b0, b1, rate, batch_size)
    sustained = is_sustained(rate, achieved, res["ok"], res["started"])
    return {"rate": rate, "seconds": round(elapsed, 1), "achieved": round(achieved, 1),
            "ok": res["ok"], "started": res["started"], "not_ok": res["started"] - res["ok"],
            "p50_ms": res["p50_ms"], "p99_ms": res["p99_ms"], "max_ms": res["max_ms"],
            "backlog_start": b0, "backlog_end": b1,
            "backlog_peak": max([v for (_t, v) in sampler.backlog] or [0]),
            "bound": flat_bound(rate, batch_size),
            "cpu_pct": dict((k, round(v, 1) if isinstance(v, float) else v)
                            for k, v in cpu.items()),
            "rss_peak_mb": round(sampler.rss_peak_kb / 1024.0, 1),
            "agent_us_per_payload": e2e_ratios.us_per_payload(cpu["agent"], elapsed, res["ok"]),
            "flat": flat, "sustained": sustained, "passed": flat and sustained}


def _row(s):
    c = s["cpu_pct"]
    return ("{rate:>6} {achieved:>9.0f} {p50:>7.2f} {p99:>7.2f} {b0:>7} {b1:>7} {bp:>7} "
            "{ca:>6.0f} {cw:>6.0f} {cp:>6.0f} {cb:>5.0f} {cg:>5.0f} {rss:>6.0f}  {v}".format(
                rate=s["rate"], achieved=s["achieved"], p50=s["p50_ms"], p99=s["p99_ms"],
                b0=s["backlog_start"], b1=s["backlog_end"], bp=s["backlog_peak"],
                ca=c["agent"], cw=c["workers"], cp=c["postgres"], cb=c["pg_background"],
                cg=c["generator"], rss=s["rss_peak_mb"],
                v="ok" if s["passed"] else ", ".join(
                    x for x, bad in (("NOT FLAT", not s["flat"]),
                                     ("NOT SUSTAINED", not s["sustained"])) if bad)))


HEADER = ("  rate  achieved p50(ms) p99(ms) backlog   ->end    peak  agent% wrkrs%   pg%  "
          "bg%  gen%  rss(MB)")


def run(args):
    from nightowl.bench import loadgen, payloads

    def say(line):
        print(line, flush=True)

    tmp = tempfile.mkdtemp(prefix="nightowl-e2e-")
    name = None
    agent = None
    summary = {"target": TARGET}
    try:
        frames_path = os.path.join(tmp, "frames.bin")
        mix = payloads.fixture_mix(args.mix)
        loadgen.write_frames([payloads.frame(p) for p in mix], frames_path)
        avg_records = sum(len(json.loads(p)) for p in mix) / float(len(mix))
        avg_bytes = sum(len(p) for p in mix) / float(len(mix))
        name, dsn = scratch.create_database(args.admin_dsn)
        agent = Agent(os.path.join(tmp, "buffer.sqlite"),
                      ["--drain-workers", str(args.workers), "--batch-size",
                       str(args.batch_size), "--dsn", dsn])
        if not agent.start():
            raise RuntimeError("the agent did not start:\n" + "\n".join(agent.lines[-30:]))
        if not wait_for(lambda: (agent.status() or {}).get("drain", {}).get("migrated"),
                        120.0, every=0.5):
            raise RuntimeError("the scratch database was not migrated:\n" +
                               "\n".join(agent.lines[-30:]))
        say("e2e: agent pid {} + {} workers, scratch database {}, mix of {} payloads "
            "({:.1f} records, {:.0f} bytes each on average), {} connections".format(
                agent.pid, args.workers, name, len(mix), avg_records, avg_bytes,
                args.concurrency))
        # warm up: imports, partitions, first claims
        step(agent, frames_path, args.start_rate // 2, 5.0, args.concurrency,
             args.batch_size, args.admin_dsn, name)
        steps = []

        def probe(rate):
            s = step(agent, frames_path, rate, args.step_seconds, args.concurrency,
                     args.batch_size, args.admin_dsn, name)
            steps.append(s)
            say(_row(s))
            return s["passed"]

        say("rate search: {} s steps".format(args.step_seconds))
        say(HEADER)
        if args.rates:
            for rate in [int(r) for r in args.rates.split(",")]:
                probe(rate)
            best = max([s["rate"] for s in steps if s["passed"]] or [None],
                       key=lambda r: r or 0)
        else:
            best, _tried = rate_search(probe, args.start_rate, args.rate_step, args.max_rate)
        summary["steps"] = steps
        summary["best_flat_rate"] = best
        confirm = None
        for rate in confirmation_rates(best, [(s["rate"], s["passed"]) for s in steps]):
            say("confirmation at {}/s for {} s".format(rate, args.duration))
            say(HEADER)
            confirm = step(agent, frames_path, rate, args.duration, args.concurrency,
                           args.batch_size, args.admin_dsn, name)
            say(_row(confirm))
            best = rate
            if confirm["passed"]:
                break
        summary["confirmation"] = confirm
        summary["confirmed_rate"] = best if confirm is not None and confirm["passed"] else None
        held = confirm is not None and confirm["passed"]
        met = {
            "rate": bool(held and confirm["rate"] >= TARGET["rate"]),
            "p99_ms": bool(confirm and confirm["p99_ms"] <= TARGET["p99_ms"]),
            "rss_mb": bool(confirm and confirm["rss_peak_mb"] <= TARGET["rss_mb"]),
        }
        summary["target_met"] = met
        summary["sustained_rows_per_s"] = (round(best * avg_records) if held else None)
        summary["records_per_payload"] = round(avg_records, 2)
        say("best flat rate {} payloads/s (~{} records/s), confirmed: {}; p99 {} ms, "
            "agent RSS peak {} MB; target (>= {rate}/s, p99 <= {p99_ms} ms, RSS <= {rss_mb} "
            "MB): {}".format(best, round(best * avg_records) if best else 0, held,
                             confirm and confirm["p99_ms"], confirm and confirm["rss_peak_mb"],
                             "met" if all(met.values()) else "NOT met ({})".format(
                                 ", ".join(k for k, v in met.items() if not v)), **TARGET))
        if not args.no_profile and (args.profile or not all(met.values())):
            failing = [s["rate"] for s in steps if not s["passed"]]
            rate = min(failing) if failing else (best or args.start_rate)
            directory = args.profile or os.path.join(tmp, "profile")
            say("profiling at {}/s (py-spy, 10 s)".format(rate))
            from nightowl.bench import loadgen as lg
            gen = lg.start_load("127.0.0.1", agent.port, frames_path, args.concurrency,
                                duration=14.0, rate=rate, timeout=5.0)
            try:
                time.sleep(2.0)
                found = pyspy.profile(_profile_targets(agent), 10, directory, say)
            finally:
                gen.communicate(timeout=120)
            pyspy.say_profile(found, say)
            summary["profile"] = dict((k, {"self": v["self"][:10], "file": v["file"]})
                                      for k, v in (found or {}).items())
        summary["agent_tracebacks"] = agent.tracebacks()
        if not args.no_ingest_only:
            half = None
            if held:
                say("half the sustained rate, with the drain: {}/s".format(best // 2))
                say(HEADER)
                # steady state: not while the workers still catch up on the
                # backlog the search or the profile left (up to a batch), nor
                # while the housekeeping still deletes what they drained
                half = step(agent, frames_path, best // 2, args.step_seconds, args.concurrency,
                            args.batch_size, args.admin_dsn, name, start_backlog=100)
                say(_row(half))
            agent.stop()
            agent = None
            only = e2e_ratios.ingest_only(tmp, frames_path, best // 2 if held else None,
                                          args.step_seconds, args.concurrency, say)
            summary["issue12"] = e2e_ratios.figures(best if held else None, half, only)
            e2e_ratios.table(summary["issue12"], say)
    finally:
        if agent is not None:
            agent.stop()
        if name:
            scratch.drop_database(args.admin_dsn, name)
        if args.keep:
            print("kept {}".format(tmp), file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(summary, sort_keys=True, default=str))
    return 0
