"""
``nightowl bench drain`` end to end at a tiny size: the command runs against
real Postgres, every payload's rows arrive in each run, and the last line is
the JSON of figures the note quotes (a smoke test: the figures themselves are
for the bench, never asserted as timings here).
"""

import json
import os
import subprocess
import sys

from tests.conftest import ADMIN_DSN

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir)


def test_bench_drain_small_run_drains_everything_and_prints_its_figures(tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-m", "nightowl.cli", "bench", "drain", "--payloads", "60",
         "--workers", "1", "--batch-size", "25", "--no-ledger-run",
         "--admin-dsn", ADMIN_DSN],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["payloads"] == 60
    assert figures["rows"] >= 60 * 5            # 5-7 records a payload, all written
    assert figures["rows_per_s"] > 0 and figures["pg_intake_rows_per_s"] > 0
    assert "drain, ledger on: 60 payloads" in out.stdout
    assert os.listdir(str(tmp_path)) == []       # its temporary buffers are gone
