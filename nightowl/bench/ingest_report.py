"""
The report of ``nightowl bench ingest``: its targets, how a run's figures
are written (rates, failures, the machine's CPU) and the closing table.
"""

TARGET_RATE = 20000
TARGET_RATIO = 0.7
TARGET_P99_MS = 20.0
TARGET_RSS_MB = 150.0
# the agent's CPU per acknowledged payload / the bare server's CPU per connection
TARGET_CPU_RATIO = 1.8


def box_text(result):
    """The machine during a run: idle, and what no process is charged for."""
    box = result.get("box")
    if not box:
        return ""
    return "  box idle {:.0f}%, softirq {:.0f}%, steal {:.0f}%".format(
        box["idle"] + box["iowait"], box["softirq"], box["steal"])


def failures(result):
    return result["errors"] + result["timeouts"] + result["connect_failures"]


def failure_text(result):
    if not failures(result):
        return "0"
    return "{} (bad reply {}, reset/EOF {}, reply timeout {}, connect {} of which timed out {})".format(
        failures(result), result["bad_reply"], result["reset_or_eof"], result["timeouts"],
        result["connect_failures"], result.get("connect_timeouts", 0))


def fmt_rate(value):
    return "{:,.0f}/s".format(value) if value is not None else "n/a"


def verdict(ok):
    return "" if ok is None else ("ok" if ok else "MISS")


def bound(server_cpu, generator_cpu):
    if server_cpu >= 85:
        return "server-bound (its one core is saturated)"
    if generator_cpu >= 85:
        return "CHECK: generator-bound"
    return "CPU contended: neither saturated, rerun on a quiet machine"


def table(s, say):
    rows = [("", "measured", "target", "")]
    rate = s["payloads_per_s"]
    rows.append(("bare Twisted server", fmt_rate(s["bare_payloads_per_s"]), "", ""))
    rows.append(("agent, full speed", fmt_rate(rate), ">= {:,}/s".format(TARGET_RATE),
                 verdict(None if rate is None else rate >= TARGET_RATE)))
    ratio = s["ratio"]
    rows.append(("agent / bare", "n/a" if ratio is None else "{:.2f}".format(ratio),
                 ">= {:.1f}".format(TARGET_RATIO),
                 verdict(None if ratio is None else ratio >= TARGET_RATIO)))
    cpu = s.get("cpu_ratio")
    rows.append(("agent CPU/payload / bare", "n/a" if cpu is None else "{:.2f} ({} / {} us)".format(
        cpu, s["agent_cpu_us_per_payload"], s["bare_cpu_us_per_connection"]),
        "<= {:.1f}".format(TARGET_CPU_RATIO), verdict(None if cpu is None else cpu <= TARGET_CPU_RATIO)))
    if s["p50_ms"] is not None:
        rows.append(("ack p50 / p99, full speed", "{:.2f} / {:.2f} ms".format(
            s["p50_ms"], s["p99_ms"]), "", ""))
    p99 = s["p99_ms_at_fixed_rate"]
    rows.append(("ack p99 at {:,}/s".format(s["fixed_rate"]),
                 "n/a" if p99 is None else "{:.2f} ms".format(p99),
                 "<= {:.0f} ms".format(TARGET_P99_MS),
                 verdict(None if p99 is None else p99 <= TARGET_P99_MS)))
    rss, peak = s["agent_rss_mb"], s["agent_peak_rss_mb"]
    rows.append(("agent RSS now / peak",
                 "n/a" if peak is None else "{:.0f} / {:.0f} MB".format(rss or 0, peak),
                 "<= {:.0f} MB".format(TARGET_RSS_MB),
                 verdict(None if peak is None else peak <= TARGET_RSS_MB)))
    if s["acked"] is not None:
        rows.append(("buffer rows / acked", "{:,} / {:,}".format(s["buffered"], s["acked"]),
                     "rows >= acked", verdict(s["buffered"] >= s["acked"])))
    rows.append(("generator CPU vs bare", "{:.0f}% of a core".format(
        s["generator_cpu_pct_vs_bare"]), "server {:.0f}%".format(s["bare_server_cpu_pct"]),
        bound(s["bare_server_cpu_pct"], s["generator_cpu_pct_vs_bare"])))
    say("")
    for name, measured, target, judged in rows:
        say("{:<28} {:>20}  {:<14} {}".format(name, measured, target, judged).rstrip())
