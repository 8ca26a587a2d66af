"""
``nightowl bench ingest --rounds N``: the whole sequence (bare server, one
agent process, several processes) N times over, and the median of each
ratio across the rounds.

Each ratio is taken inside one round, where the bare server and the agent
ran seconds apart; on a shared 2-core virtual machine (CPU stolen by the
host, 0-50 %) one round's ratios moved by a third from the next round's
(1 process / bare 0.39 against 0.57 half an hour apart), so one round is
an anecdote and the median of several is the figure.
"""

import statistics



def ratios():
    """(summary key path, label, target, "ge" or "le"), the medians table's rows."""
    from nightowl.bench import ingest_procs, ingest_report as report
    return (
        (("ratio",), "1 process / bare", ingest_procs.TARGET_ONE_VS_BARE, "ge"),
        (("cpu_ratio",), "CPU/payload / bare", report.TARGET_CPU_RATIO, "le"),
        (("scaling", "x2_vs_one"), "2 processes / 1 process", ingest_procs.TARGET_SCALING, "ge"),
        (("scaling", "x2_vs_bare"), "2 processes / bare", None, None),
        (("scaling", "x2_cpu_ratio"), "2 processes: CPU/payload / bare",
         report.TARGET_CPU_RATIO, "le"),
        (("p99_ms_at_fixed_rate",), "ack p99 at the fixed rate (ms)", report.TARGET_P99_MS, "le"),
    )


def _get(summary, path):
    for key in path:
        if not isinstance(summary, dict):
            return None
        summary = summary.get(key)
    return summary


def medians(summaries):
    """
    ``{label: {"median", "min", "max", "values", "target", "met"}}`` for
    every ratio measured in at least one round; ``met`` compares the median.
    """
    out = {}
    for path, label, target, sense in ratios():
        values = [v for v in (_get(s, path) for s in summaries) if v is not None]
        if not values:
            continue
        median = round(statistics.median(values), 3)
        met = None
        if target is not None:
            met = median >= target if sense == "ge" else median <= target
        out[label] = {"median": median, "min": min(values), "max": max(values),
                      "values": values, "target": target,
                      "sense": sense, "met": met}
    return out


def say_medians(found, rounds, say):
    say("")
    say("medians over {} rounds (each ratio taken within its round)".format(rounds))
    say("{:<34} {:>8}  {:<22} {}".format("", "median", "rounds (min-max)", "target"))
    for label, f in found.items():
        target = ""
        if f["target"] is not None:
            target = "{} {:g}  {}".format(">=" if f["sense"] == "ge" else "<=", f["target"],
                                          "ok" if f["met"] else "MISS")
        say("{:<34} {:>8.2f}  {:<22} {}".format(
            label, f["median"], "{:.2f}-{:.2f}".format(f["min"], f["max"]), target).rstrip())
