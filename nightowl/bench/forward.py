"""
``nightowl bench forward``: what ``--forward`` costs ingest.  The agent (no
drain, health on) runs with forwarding off and on, in alternating rounds,
beside the same upstream (the bare Twisted server of ``nightowl bench
ingest``, which answers ``2:OK`` and stores nothing):

1. full speed: payloads/s acknowledged and the agent's CPU per payload
   (from /proc), on / off;
2. a fixed rate (``--rate``): the agent's CPU per payload and the ack p99,
   on / off;
3. with forwarding on: the forward backlog empties and everything acked was
   forwarded (``forward.forwarded``), nothing dropped.

Ratios are measured within one run; the box is shared, so run it 2-3 times.
The last line on stdout is one JSON object with the figures.
"""

import json
import os
import shutil
import tempfile
import time

from nightowl.bench import loadgen, payloads
from nightowl.bench.agent import Agent, wait_for
from nightowl.bench.ingest import _stop, measure, start_bare_server
from nightowl.errors import CommandError


def configure(parser):
    parser.add_argument("--duration", type=float, default=8.0,
                        help="seconds per measurement (default 8)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="load generator connections (default 16)")
    parser.add_argument("--rate", type=int, default=3000,
                        help="fixed rate for the CPU-per-payload run (default 3000/s)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="off/on rounds, alternating (default 2)")


def run(args):
    if args.duration <= 0 or args.concurrency <= 0 or args.rate <= 0 or args.rounds <= 0:
        raise CommandError("--duration, --concurrency, --rate and --rounds must be > 0")
    loadgen.binary()
    tmp = tempfile.mkdtemp(prefix="nightowl-bench-forward-")
    try:
        return _run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _per_payload_us(result):
    rate = result["payloads_per_s"]
    return 10000.0 * result.get("server_cpu_pct", 0) / rate if rate else None


def _one(args, tmp, frames_path, upstream_port, forward, k, say):
    extra = ["--drain-workers", "0"]
    if forward:
        extra += ["--forward", "127.0.0.1:{}".format(upstream_port)]
    agent = Agent(os.path.join(tmp, "buffer-{}.sqlite".format(k)), args=extra)
    if not agent.start(60.0):
        raise CommandError("the agent did not start: {}".format(agent.last_line()))
    try:
        measure(agent.port, frames_path, agent.pid, args.concurrency, 1.0, False)  # warm up
        full = measure(agent.port, frames_path, agent.pid, args.concurrency, args.duration,
                       False)
        time.sleep(1.0)
        fixed = measure(agent.port, frames_path, agent.pid, 128, args.duration, False,
                        rate=args.rate)
        out = {"forward": forward, "payloads_per_s": round(full["payloads_per_s"], 1),
               "cpu_us_per_payload": _per_payload_us(full),
               "fixed_cpu_us_per_payload": _per_payload_us(fixed),
               "fixed_p99_ms": fixed["p99_ms"], "fixed_rate": round(fixed["payloads_per_s"], 1)}
        if forward:
            def done():
                f = (agent.status() or {}).get("forward") or {}
                return f.get("backlog_rows") == 0 and f.get("inflight") == 0
            out["forward_emptied"] = wait_for(done, 120.0, every=0.5)
            status = agent.status() or {}
            f = status.get("forward") or {}
            out.update({"acked": status.get("ingest", {}).get("accepted"),
                        "forwarded": f.get("forwarded"), "dropped": f.get("dropped"),
                        "failures": f.get("failures")})
    finally:
        agent.stop(30.0)
    say("forward {:<3}  {:>9,.0f}/s  CPU {:.0f} us/payload  @{}/s: CPU {:.0f} us/payload, "
        "p99 {:.2f} ms{}".format(
            "on" if forward else "off", out["payloads_per_s"], out["cpu_us_per_payload"] or 0,
            args.rate, out["fixed_cpu_us_per_payload"] or 0, out["fixed_p99_ms"],
            "  forwarded {forwarded}/{acked}, dropped {dropped}, failures {failures}".format(**out)
            if forward else ""))
    return out


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _run(args, tmp):
    say = lambda text: print(text, flush=True)  # noqa: E731
    frames_path = os.path.join(tmp, "frames.bin")
    loadgen.write_frames([payloads.frame(payloads.realistic_payload())], frames_path)
    upstream, upstream_port = start_bare_server()
    runs = []
    try:
        for k in range(args.rounds):
            for forward in ((False, True) if k % 2 == 0 else (True, False)):
                runs.append(_one(args, tmp, frames_path, upstream_port, forward, len(runs), say))
    finally:
        _stop(upstream)
    off = [r for r in runs if not r["forward"]]
    on = [r for r in runs if r["forward"]]

    def ratio(key):
        a, b = _mean(r[key] for r in on), _mean(r[key] for r in off)
        return round(a / b, 3) if a and b else None
    summary = {
        "rate_ratio_on_off": ratio("payloads_per_s"),
        "cpu_per_payload_ratio_on_off": ratio("cpu_us_per_payload"),
        "fixed_rate_cpu_per_payload_ratio_on_off": ratio("fixed_cpu_us_per_payload"),
        "all_forwarded": all(r.get("forward_emptied") and r.get("forwarded") == r.get("acked")
                             and not r.get("dropped") for r in on),
        "runs": runs,
    }
    say("forwarding on / off: full-speed rate x{rate_ratio_on_off}, CPU per payload "
        "x{cpu_per_payload_ratio_on_off}; at the fixed rate CPU per payload "
        "x{fixed_rate_cpu_per_payload_ratio_on_off}; everything forwarded: {all_forwarded}"
        .format(**summary))
    print(json.dumps(summary, sort_keys=True), flush=True)
    return 0 if summary["all_forwarded"] else 1
