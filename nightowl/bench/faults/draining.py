"""
Watching a draining agent for the drain-side trials: whether the drain has
caught up (from /status), the status figures a trial reports, the claims
the supervisor released for a retry (from its log), and the id-stamped load
those trials send (one frames file, the load generator finished or stopped).
"""

import os
import re

from nightowl.bench import loadgen, payloads
from nightowl.bench.agent import id_payload, wait_for


def caught_up(agent):
    """The drain has caught up: nothing pending, claimed or queued in the buffer."""
    s = agent.status()
    if not s:
        return False
    b = s["buffer"]
    migrated = s["drain"].get("migrated") or not s["drain"].get("enabled")
    return migrated and b["pending"] == 0 and b["claimed"] == 0 and not b.get("queued")


def status_figures(agent):
    s = agent.status() or {}
    b, d, w = s.get("buffer", {}), s.get("drain", {}), s.get("workers") or []
    return {"accepted": s.get("ingest", {}).get("accepted"),
            "pending": b.get("pending"), "claimed": b.get("claimed"),
            "drained": d.get("payloads"), "skipped": d.get("skipped"),
            "batches_failed": d.get("batches_failed"),
            "postgres_reachable": d.get("postgres_reachable"),
            "restarts": sum(int(x.get("restarts") or 0) for x in w),
            "worker_pids": [x["pid"] for x in w if x.get("alive") and x.get("pid")]}


DRAIN_ARGS = ["--drain-workers", "2", "--batch-size", "200"]
RELEASED = re.compile(r"released (\d+) payloads claimed by (drain worker|a previous run)")


def released(lines):
    """Payloads the supervisor handed back for a retry: (from dead workers, from a previous run)."""
    worker = previous = 0
    for line in lines:
        m = RELEASED.search(line)
        if m:
            if m.group(2) == "drain worker":
                worker += int(m.group(1))
            else:
                previous += int(m.group(1))
    return worker, previous


def catch_up(agent, timeout, violations, what):
    """Wait (generously) for the drain; a violation with the status if it never catches up."""
    if wait_for(lambda: caught_up(agent), timeout, every=0.5):
        return True
    violations.append("{}: the drain did not catch up in {:.0f} s (status {})".format(
        what, timeout, status_figures(agent)))
    return False


def id_frames_file(workdir, name):
    path = os.path.join(workdir, name)
    loadgen.write_frames([payloads.frame(id_payload(0))], path)
    return path


def finish_load(gen, timeout=120):
    out, err = gen.communicate(timeout=timeout)
    return loadgen.parse_result(out, err)


def stop_load(gen):
    if gen is not None and gen.poll() is None:
        gen.kill()
    if gen is not None:
        gen.wait()
