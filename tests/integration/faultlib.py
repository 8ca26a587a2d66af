"""
Shared helpers for the fault-injection tests (ingest side here, drain side
later): the agent runner, the set-membership oracle, RSS sampling, tmpfs
mounts and hostile frame generation.  They live in
L{nightowl.bench.faults} so that ``nightowl bench faults`` (the long run)
and the CI tests (the short run) use the same code and the same verdicts;
this module re-exports them and adds what only tests need.
"""

import os

import pytest

from nightowl.bench.faults import (  # noqa: F401 (re-exported)
    CORRUPTIONS, ERROR, OK, TOKEN, Agent, Oracle, RandomChooser, RssSampler, can_mount,
    exchange, generate, hand_list, hypothesis_frames, id_payload, judge_hostile, ping,
    read_acked, read_buffer, reference, rss_kb, running, send_payload, tmpfs, wait_for)


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
