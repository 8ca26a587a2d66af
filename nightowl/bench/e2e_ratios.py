"""
The three figures issue 12 sets for ``nightowl bench e2e``, measured in the
same run as the rate search:

* the agent's CPU per payload with the drain against without it, at the
  same fixed rate (half the sustained rate): <= 1.3;
* the sustained (confirmed flat) rate against the ingest-only rate, the
  full-speed ack rate of the same agent with no drain (``--drain-workers
  0``), same mix, same connections: >= 0.8;
* the ack p99 at half the sustained rate, with the drain running: <= 10 ms.

``ingest_only`` runs the agent without the drain (a second agent, after the
drained one stopped, on its own buffer); ``figures`` and ``table`` are pure.
"""

import os

from nightowl.bench import ingest as ingest_bench
from nightowl.bench.agent import Agent

TARGET = {"cpu_ratio": 1.3, "rate_ratio": 0.8, "p99_ms_at_half": 10.0}


def us_per_payload(cpu_pct, seconds, acked):
    """Agent CPU microseconds per acknowledged payload over a step."""
    if not acked or seconds <= 0:
        return None
    return round(1e4 * cpu_pct * seconds / acked, 1)


def ingest_only(tmp, frames_path, rate, seconds, concurrency, say):
    """
    The agent with no drain: its full-speed ack rate and, at ``rate``, its
    CPU per payload and p99.  A dict of figures.
    """
    agent = Agent(os.path.join(tmp, "ingest-only.sqlite"), ["--drain-workers", "0"],
                  health=False)
    if not agent.start():
        raise RuntimeError("the ingest-only agent did not start: " + agent.last_line())
    try:
        ingest_bench.measure(agent.port, frames_path, agent.pid, concurrency, 1.0, False)
        full = ingest_bench.measure(agent.port, frames_path, agent.pid, concurrency,
                                    seconds, False)
        fixed = ingest_bench.measure(agent.port, frames_path, agent.pid, concurrency,
                                     seconds, False, rate=rate) if rate else None
    finally:
        agent.stop()
    out = {"full_rate": round(full["payloads_per_s"], 1),
           "full_us_per_payload": full.get("server_cpu_us")}
    if fixed is not None:
        out.update({"rate": rate, "achieved": round(fixed["payloads_per_s"], 1),
                    "us_per_payload": fixed.get("server_cpu_us"),
                    "p99_ms": fixed["p99_ms"]})
    say("ingest only (no drain): full speed {:,.0f}/s at {} us per payload; at {}/s "
        "{} us per payload, p99 {} ms".format(out["full_rate"], out["full_us_per_payload"],
                                             rate, out.get("us_per_payload"),
                                             out.get("p99_ms")))
    return out


def figures(sustained, half_step, only):
    """
    The three figures from the confirmed rate ``sustained`` (None: none held),
    the drained agent's step at half of it (``e2e.step``'s dict, with
    ``agent_us_per_payload``) and L{ingest_only}'s dict.
    """
    out = {"sustained_rate": sustained, "ingest_only_rate": only.get("full_rate"),
           "cpu_us_with_drain": half_step and half_step.get("agent_us_per_payload"),
           "cpu_us_without_drain": only.get("us_per_payload"),
           # for reference: per payload costs less at full speed (fuller groups)
           "cpu_us_ingest_only_full_speed": only.get("full_us_per_payload"),
           "p99_ms_at_half": half_step and half_step.get("p99_ms")}
    with_, without = out["cpu_us_with_drain"], out["cpu_us_without_drain"]
    out["cpu_ratio"] = round(with_ / without, 3) if with_ and without else None
    rate = out["ingest_only_rate"]
    out["rate_ratio"] = round(sustained / rate, 3) if sustained and rate else None
    out["met"] = {
        "cpu_ratio": out["cpu_ratio"] is not None and out["cpu_ratio"] <= TARGET["cpu_ratio"],
        "rate_ratio": out["rate_ratio"] is not None and out["rate_ratio"] >= TARGET["rate_ratio"],
        "p99_ms_at_half": out["p99_ms_at_half"] is not None
        and out["p99_ms_at_half"] <= TARGET["p99_ms_at_half"],
    }
    return out


def table(f, say):
    def verdict(key):
        return "ok" if f["met"][key] else "MISS"
    say("agent CPU/payload with / without the drain   {} ({} / {} us)  <= {}  {}".format(
        f["cpu_ratio"], f["cpu_us_with_drain"], f["cpu_us_without_drain"],
        TARGET["cpu_ratio"], verdict("cpu_ratio")))
    say("  (for reference: the ingest-only agent at full speed {} us per payload)".format(
        f["cpu_us_ingest_only_full_speed"]))
    say("sustained rate / ingest-only rate            {} ({} / {})  >= {}  {}".format(
        f["rate_ratio"], f["sustained_rate"], f["ingest_only_rate"], TARGET["rate_ratio"],
        verdict("rate_ratio")))
    say("ack p99 at half the sustained rate           {} ms  <= {} ms  {}".format(
        f["p99_ms_at_half"], TARGET["p99_ms_at_half"], verdict("p99_ms_at_half")))
