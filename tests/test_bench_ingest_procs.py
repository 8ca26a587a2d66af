"""The several-processes part of ``nightowl bench ingest``: counts, CPU over a tree, ratios."""

import os
import subprocess
import sys

import pytest

from nightowl.bench import ingest_procs
from nightowl.errors import CommandError


def test_process_counts():
    assert ingest_procs.parse_counts("2") == [2]
    assert ingest_procs.parse_counts("4,2,2") == [2, 4]
    assert ingest_procs.parse_counts("none") == []
    for bad in ("two", "0,2"):
        with pytest.raises(CommandError):
            ingest_procs.parse_counts(bad)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc")
def test_tree_counts_children():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in ingest_procs.tree_pids(os.getpid())
        assert ingest_procs.tree_cpu_seconds(os.getpid()) >= 0.0
    finally:
        child.kill()
        child.wait()


def test_ratios_against_one_process_and_bare():
    lines = []
    run = {"processes": 2, "payloads_per_s": 150.0, "buffered": 10, "acked": 10}
    out = ingest_procs.scaling({"bare_payloads_per_s": 200.0, "payloads_per_s": 100.0},
                               [run], lines.append)
    assert (out["one_vs_bare"], out["x2_vs_one"], out["x2_vs_bare"]) == (0.5, 1.5, 0.75)
    assert any(line.startswith("2 processes / 1 process") and line.endswith("ok")
               for line in lines)
    slow = dict(run, payloads_per_s=120.0, buffered=9)
    ingest_procs.scaling({"bare_payloads_per_s": 200.0, "payloads_per_s": 100.0},
                         [slow], lines.append)
    assert lines[-2].endswith("MISS") and "rows / acked" in lines[-3] and \
        lines[-3].endswith("MISS")


def test_cpu_per_payload_against_the_bare_server():
    from nightowl.bench import ingest
    assert ingest.cpu_per_reply_us(0.5, 2500) == 200.0
    assert ingest.cpu_per_reply_us(0.5, 0) is None
    assert ingest.cpu_ratio(200.0, 125.0) == 1.6
    assert ingest.cpu_ratio(None, 125.0) is None
    lines = []
    run = {"processes": 2, "payloads_per_s": 150.0, "buffered": 10, "acked": 10,
           "agent_cpu_us_per_payload": 250.0}
    out = ingest_procs.scaling({"bare_payloads_per_s": 200.0, "payloads_per_s": 100.0,
                                "bare_cpu_us_per_connection": 125.0}, [run], lines.append)
    assert out["x2_cpu_ratio"] == 2.0
    assert lines[-1].startswith("2 processes: CPU/payload / bare") and lines[-1].endswith("MISS")
