"""
The several-processes part of ``nightowl bench ingest``: the agent with
``--ingest-processes N`` (2 by default) at full speed, in the same run as
the bare server and the one-process agent, with the ratios the issue sets:
N processes >= 1.4 x one process, one process >= 0.5 x the bare server.

CPU is counted over the agent's whole process tree (parent and children)
from /proc; buffer rows over every child's buffer file.
"""

import os
import sqlite3

from nightowl.bench import ingest as bench, ingest_report as report, procfs
from nightowl.bench.agent import Agent, free_port
from nightowl.errors import CommandError

TARGET_SCALING = 1.4      # N processes / 1 process, for N = 2
TARGET_ONE_VS_BARE = 0.5


def tree_pids(pid):
    """``pid`` and its descendants, from /proc/PID/task/*/children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for tid in os.listdir("/proc/{}/task".format(p)):
                with open("/proc/{}/task/{}/children".format(p, tid)) as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def tree_cpu_seconds(pid):
    """User + system CPU seconds of a process and its descendants (alive ones)."""
    total = None
    for p in tree_pids(pid):
        cpu = procfs.cpu_seconds(p)
        if cpu is not None:
            total = (total or 0.0) + cpu
    return total


def parse_counts(text):
    """The process counts of ``--processes`` ('none': no several-process run)."""
    if text.strip().lower() in ("none", "", "1"):
        return []
    try:
        counts = sorted(set(int(x) for x in text.split(",") if x.strip()))
    except ValueError:
        raise CommandError("--processes: expected counts like 1,2, got {!r}".format(text))
    if not counts or counts[0] < 1:
        raise CommandError("--processes: counts must be 1 or more, got {!r}".format(text))
    return counts


def run_processes(args, tmp, frames_path, n, say):
    """The agent with ``n`` ingest processes, at full speed: a figures dict."""
    port = free_port()
    workdir = os.path.join(tmp, "procs-{}".format(n))
    os.makedirs(workdir)
    buffer_path = os.path.join(workdir, "buffer.sqlite")
    # one launcher for every agent; a fixed port (SO_REUSEPORT children cannot share port 0)
    agent = Agent(buffer_path, health=False, args=[
        "--listen", "tcp:{}:interface=127.0.0.1".format(port), "--drain-workers", "0",
        "--ingest-processes", str(n)])
    if not agent.start(args.startup_timeout):
        raise CommandError("the agent with {} ingest processes did not start: {}".format(
            n, agent.last_line()))
    try:
        warm = bench.measure(port, frames_path, agent.pid, args.concurrency, 1.0, args.split,
                             cpu=tree_cpu_seconds)
        full = bench.measure(port, frames_path, agent.pid, args.concurrency, args.duration,
                             args.split, cpu=tree_cpu_seconds)
        acked = warm["ok"] + full["ok"]
    finally:
        code = agent.stop()
    if code not in (0, -15, None):
        say("agent ({} processes) exited with code {}: {}".format(n, code, agent.last_line()))
    paths = [buffer_path] + ["{}.{}".format(buffer_path, i) for i in range(1, n)]
    try:
        per_buffer = [bench.count_rows(p) for p in paths]
    except sqlite3.Error as e:
        raise CommandError("cannot count the buffers' rows: {}".format(e))
    say("agent x{:<2}     {:>10}  p50 {:.2f} ms  p99 {:.2f} ms  failures {}  agent CPU {:.0f}% "
        "(all processes)  generator CPU {:.0f}%  rows per buffer {}{}".format(
            n, report.fmt_rate(full["payloads_per_s"]), full["p50_ms"], full["p99_ms"],
            report.failure_text(full), full.get("server_cpu_pct", 0),
            full["generator_cpu_pct"], per_buffer, report.box_text(full)))
    return {"processes": n, "payloads_per_s": round(full["payloads_per_s"], 1),
            "p50_ms": full["p50_ms"], "p99_ms": full["p99_ms"],
            "agent_cpu_pct": round(full.get("server_cpu_pct", 0), 1),
            "agent_cpu_us_per_payload": full.get("server_cpu_us"),
            "generator_cpu_pct": round(full["generator_cpu_pct"], 1), "box": full.get("box"),
            "failures": report.failures(full), "acked": acked,
            "buffered": sum(per_buffer), "rows_per_buffer": per_buffer}


def scaling(summary, runs, say):
    """Ratios of the process counts against one process and the bare server; table rows."""
    bare = summary["bare_payloads_per_s"]
    by_n = dict((r["processes"], r) for r in runs)
    one = by_n.get(1, {}).get("payloads_per_s") or summary.get("payloads_per_s")
    out = {"by_processes": dict((str(n), r) for n, r in sorted(by_n.items()))}
    rows = []
    if one:
        out["one_vs_bare"] = round(one / bare, 3)
        rows.append(("1 process / bare", "{:.2f}".format(out["one_vs_bare"]),
                     ">= {:.1f}".format(TARGET_ONE_VS_BARE),
                     report.verdict(out["one_vs_bare"] >= TARGET_ONE_VS_BARE)))
    for n, r in sorted(by_n.items()):
        rows.append(("{} processes: rows / acked".format(n), "{:,} / {:,}".format(
            r["buffered"], r["acked"]), "rows >= acked", report.verdict(r["buffered"] >= r["acked"])))
        if n == 1 or not one:
            continue
        ratio = round(r["payloads_per_s"] / one, 3)
        out["x{}_vs_one".format(n)] = ratio
        out["x{}_vs_bare".format(n)] = round(r["payloads_per_s"] / bare, 3)
        target = TARGET_SCALING if n == 2 else None
        rows.append(("{} processes / 1 process".format(n), "{:.2f}".format(ratio),
                     ">= {:.1f}".format(target) if target else "",
                     report.verdict(None if target is None else ratio >= target)))
        rows.append(("{} processes / bare".format(n), "{:.2f}".format(out["x{}_vs_bare".format(n)]),
                     "", ""))
        ratio = bench.cpu_ratio(r.get("agent_cpu_us_per_payload"),
                                summary.get("bare_cpu_us_per_connection"))
        if ratio is not None:
            out["x{}_cpu_ratio".format(n)] = ratio
            rows.append(("{} processes: CPU/payload / bare".format(n), "{:.2f}".format(ratio),
                         "<= {:.1f}".format(report.TARGET_CPU_RATIO),
                         report.verdict(ratio <= report.TARGET_CPU_RATIO)))
    for name, measured, target, verdict in rows:
        say("{:<28} {:>20}  {:<14} {}".format(name, measured, target, verdict).rstrip())
    return out

