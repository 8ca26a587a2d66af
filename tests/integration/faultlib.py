"""
What only the fault-injection tests need beside the trials themselves
(nightowl/bench/faults/, shared with ``nightowl bench faults`` so the CI
tests and the long run reach the same verdicts): skipping without root,
failing with every violation of a trial, a work directory per trial.
"""

import os

import pytest

from nightowl.bench.faults.ingest import can_mount


def require_root_for_tmpfs():
    """The disk-full test mounts a tmpfs: it needs root (CI containers run as root)."""
    if not can_mount():
        pytest.skip("mounting a tmpfs needs root")


def assert_trial(result):
    """Fail with every violation of a trial result, one per line."""
    assert result["ok"], "\n".join(["{} trial failed:".format(result.get("fault"))]
                                   + ["  " + v for v in result["violations"]])


def workdir(tmp_path, name):
    d = os.path.join(str(tmp_path), name)
    os.makedirs(d, exist_ok=True)
    return d
