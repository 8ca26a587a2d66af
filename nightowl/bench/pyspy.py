"""
Profiling the agent and its workers with py-spy for the benchmarks: a
``py-spy record --format raw`` of each target process, and the top frames
(self and inclusive samples) of the collapsed stacks it writes.
"""

import collections
import os
import shutil
import subprocess


def top_frames(raw_lines, n=15):
    """
    From py-spy ``--format raw`` (collapsed stacks: ``a;b;c COUNT``): the
    top ``n`` leaf frames by samples (self time) and the top ``n`` frames by
    inclusive samples, each ``[(frame, samples, pct)]``.
    """
    leaf, incl = collections.Counter(), collections.Counter()
    total = 0
    for line in raw_lines:
        line = line.rstrip("\n")
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        c = int(count)
        total += c
        frames = stack.split(";")
        leaf[frames[-1]] += c
        for f in set(frames):
            incl[f] += c

    def pct(counter):
        return [(f, c, round(100.0 * c / total, 1)) for f, c in counter.most_common(n)]

    return {"samples": total, "self": pct(leaf), "inclusive": pct(incl)}


def profile(targets, seconds, directory, say):
    """py-spy each ``(name, pid)`` of ``targets`` for ``seconds``; their top frames."""
    spy = shutil.which("py-spy")
    if not spy:
        say("py-spy not found: no profile")
        return None
    os.makedirs(directory, exist_ok=True)
    procs = []
    for name, pid in targets:
        out = os.path.join(directory, "{}-{}.txt".format(name, pid))
        procs.append((name, out, subprocess.Popen(
            [spy, "record", "-p", str(pid), "-f", "raw", "-d", str(int(seconds)), "-o", out,
             "--threads", "--nonblocking"], stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)))
    found = {}
    for name, out, proc in procs:
        try:
            _o, err = proc.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            err = "timed out"
        if os.path.exists(out):
            with open(out) as f:
                found[name] = dict(top_frames(f), file=out)
        else:
            say("py-spy on the {}: {}".format(name, (err or "").strip()[-300:]))
    return found


def say_profile(found, say):
    for name, prof in (found or {}).items():
        say("profile of the {} ({} samples, {}): top self time".format(
            name, prof["samples"], prof["file"]))
        for frame, _c, pct in prof["self"][:12]:
            say("  {:5.1f}%  {}".format(pct, frame[:150]))
        say("  ... inclusive:")
        for frame, _c, pct in prof["inclusive"][:12]:
            say("  {:5.1f}%  {}".format(pct, frame[:150]))
