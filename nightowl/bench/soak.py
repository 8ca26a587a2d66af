"""
``nightowl bench soak``: a steady run that shows the buffer stays bounded.

The real agent with its drain workers and a scratch Postgres database is
driven at a fixed rate by the SDK-like load generator for ``--duration``
seconds (default 600: the 10-minute run the README quotes).  Every
``--every`` seconds it samples the buffer file, its WAL, the agent's RSS and
the pending rows (from /status).  It prints the samples, then the peaks, and
ends with one JSON line.  The bound it checks is the documented one:
file + WAL stay under ``--max-buffer-mb`` (default 256 MB) and the pending
backlog does not grow from the first half of the run to the second.
"""

import json
import os
import shutil
import tempfile
import time

from nightowl.bench import scratch
from nightowl.errors import CommandError

def configure(parser):
    parser.add_argument("--duration", type=float, default=600.0,
                        help="seconds of steady load (default 600)")
    parser.add_argument("--rate", type=float, default=2000.0,
                        help="payloads per second (default 2000)")
    parser.add_argument("--every", type=float, default=10.0,
                        help="seconds between samples (default 10)")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="most connections in flight (default 64)")
    parser.add_argument("--max-buffer-mb", type=float, default=256.0,
                        help="the documented bound on buffer file + WAL (default 256)")
    scratch.add_admin_dsn(parser, help="a Postgres DSN allowed to CREATE DATABASE")


def _size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def run(args):
    from nightowl.bench import loadgen, payloads, procfs
    from nightowl.bench.agent import Agent

    workdir = tempfile.mkdtemp(prefix="nightowl-soak-")
    try:
        name, dsn = scratch.create_database(args.admin_dsn)
    except Exception as e:
        raise CommandError("cannot create a scratch database ({}): {}".format(
            type(e).__name__, str(e).strip().splitlines()[0] if str(e).strip() else ""))
    buffer_path = os.path.join(workdir, "buffer.sqlite")
    agent = Agent(buffer_path, args=["--dsn", dsn])
    load = None
    samples = []
    try:
        if not agent.start():
            raise CommandError("the agent did not start:\n" + agent.log()[-2000:])
        frames = [payloads.frame(p) for p in payloads.fixture_mix(200)]
        frames_path = os.path.join(workdir, "frames.bin")
        loadgen.write_frames(frames, frames_path)
        load = loadgen.start_load("127.0.0.1", agent.port, frames_path, args.concurrency,
                                  duration=args.duration, rate=args.rate)
        started = time.monotonic()
        print("nightowl bench soak: {:.0f} payloads/s for {:.0f} s, sampling every {:.0f} s"
              .format(args.rate, args.duration, args.every))
        print("{:>7} {:>10} {:>10} {:>9} {:>9} {:>10}".format(
            "t (s)", "file MB", "wal MB", "pending", "rss MB", "accepted"))
        while load.poll() is None:
            time.sleep(args.every)
            status = agent.status() or {}
            sample = {
                "t": round(time.monotonic() - started, 1),
                "file_mb": round(_size(buffer_path) / 1048576.0, 1),
                "wal_mb": round(_size(buffer_path + "-wal") / 1048576.0, 1),
                "pending": (status.get("buffer") or {}).get("pending"),
                "rss_mb": round(procfs.rss_kb(agent.pid) / 1024.0, 1),
                "accepted": (status.get("ingest") or {}).get("accepted"),
            }
            samples.append(sample)
            print("{t:>7} {file_mb:>10} {wal_mb:>10} {pending!s:>9} {rss_mb:>9} {accepted!s:>10}"
                  .format(**sample))
        out, err = load.communicate()
        result = loadgen.parse_result(out, err)
    finally:
        if load is not None and load.poll() is None:
            load.kill()
        agent.stop()
        scratch.drop_database(args.admin_dsn, name)
        shutil.rmtree(workdir, ignore_errors=True)

    if not samples:
        raise CommandError("no samples taken (is --duration shorter than --every?)")
    peak_total = max(s["file_mb"] + s["wal_mb"] for s in samples)
    half = len(samples) // 2 or 1
    first = [s["pending"] or 0 for s in samples[:half]]
    second = [s["pending"] or 0 for s in samples[half:]] or first
    # Flat: the backlog in the second half is no larger than the first
    # half's worst plus a few seconds of traffic.
    flat = max(second) <= max(first) + 5 * args.rate
    bounded = peak_total <= args.max_buffer_mb
    summary = {
        "rate": args.rate, "duration_s": args.duration,
        "achieved_rate": result.get("payloads_per_s"), "ok": result.get("ok"),
        "failures": result.get("errors", 0) + result.get("connect_failures", 0),
        "p50_ms": result.get("p50_ms"), "p99_ms": result.get("p99_ms"),
        "peak_file_mb": max(s["file_mb"] for s in samples),
        "peak_wal_mb": max(s["wal_mb"] for s in samples),
        "peak_buffer_mb": round(peak_total, 1), "bound_mb": args.max_buffer_mb,
        "peak_rss_mb": max(s["rss_mb"] for s in samples),
        "peak_pending": max(s["pending"] or 0 for s in samples),
        "backlog_flat": flat, "bounded": bounded,
    }
    print()
    print("peak buffer file + WAL {:.1f} MB (bound {:.0f} MB: {}), peak pending {}, "
          "backlog {}".format(peak_total, args.max_buffer_mb, "ok" if bounded else "EXCEEDED",
                              summary["peak_pending"], "flat" if flat else "GROWING"))
    print(json.dumps(summary, sort_keys=True))
    return 0 if (flat and bounded) else 1
