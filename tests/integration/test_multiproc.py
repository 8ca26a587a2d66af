"""
``twistd -n nightowl --ingest-processes 2`` for real: two children on one
SO_REUSEPORT port (a free port picked here: with port 0 each child would
bind its own), each with its own buffer; /status and /metrics over both;
SIGTERM stops all; SIGKILL of a child under load loses nothing acked
(Postgres, exactly once) and the child is restarted; a bad value stops
startup with one line.
"""

import subprocess
import sys
import urllib.request

import pytest

from nightowl.bench import agent as launcher, procfs
from nightowl.bench.faults import multiproc as faults_multiproc
from nightowl.bench.faults import oracle as fault_oracle
from tests.integration.faultlib import assert_trial, workdir

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="several ingest processes need Linux SO_REUSEPORT")


def _metrics(agent):
    url = "http://127.0.0.1:{}/metrics".format(agent.health_port)
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def test_both_processes_accept_and_status_covers_both(tmp_path):
    path = str(tmp_path / "buffer.sqlite")
    agent = faults_multiproc.multi_agent(path, 2)
    with launcher.running(agent):
        assert launcher.wait_for(lambda: faults_multiproc.all_running(agent, 2), 60.0), \
            faults_multiproc.children(agent)
        # one connection per frame: the kernel hashes each to one of the two sockets
        acked = [n for n in range(1, 401)
                 if launcher.send_payload(agent.port, launcher.id_payload(n)) == launcher.OK]
        assert len(acked) == 400
        assert launcher.wait_for(lambda: agent.status()["ingest"]["accepted"] == 400, 10.0)
        status = agent.status()
        kids = status["ingest_processes"]["children"]
        assert [c["index"] for c in kids] == [0, 1]
        assert status["ingest_processes"]["running"] == 2
        per_child = [c["document"]["ingest"]["accepted"] for c in kids]
        assert sum(per_child) == 400 and all(per_child), per_child
        assert len(set(c["pid"] for c in kids)) == 2
        assert len(set(c["buffer_id"] for c in kids)) == 2
        text = _metrics(agent)
        for index, n in enumerate(per_child):
            assert 'nightowl_ingest_accepted_total{{process="{}"}} {}'.format(index, float(n)) \
                in text
        assert text.count("# TYPE nightowl_ingest_accepted_total counter") == 1
        assert 'nightowl_ingest_process_up{process="1"} 1.0' in text
        pids = [c["pid"] for c in kids]
        assert agent.stop() in (0, -15)
    assert agent.stopped_cleanly()
    assert not any(procfs.pid_alive(p) for p in pids)
    # each child kept its own buffer file: child 0 the configured path, child 1 <path>.1
    stored = [sorted(seq for (_r, _s, seq) in fault_oracle.read_buffer(p)) for p in (path, path + ".1")]
    assert [len(s) for s in stored] == per_child
    assert sorted(stored[0] + stored[1]) == acked


def test_sigkill_of_a_process_under_load_loses_nothing_acked(tmp_path, pg_dsn):
    assert_trial(faults_multiproc.child_kill_trial(workdir(tmp_path, "mp"), pg_dsn))


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_a_bad_value_stops_startup_with_one_line(tmp_path, value):
    proc = subprocess.run(
        launcher.TWISTD + ["-n", "--pidfile=", "nightowl", "--ingest-processes", value,
                         "--buffer", str(tmp_path / "b.sqlite")],
        capture_output=True, text=True, timeout=60, cwd=launcher.REPO)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("nightowl: --ingest-processes:"), lines
    assert not (tmp_path / "b.sqlite").exists()


def test_a_child_that_cannot_start_stops_the_agent_with_its_reason(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    agent = faults_multiproc.multi_agent(str(tmp_path / "file" / "buffer.sqlite"), 2)
    assert not agent.start()
    assert agent.proc.returncode == 1
    assert any("ingest process" in line and "could not start" in line
               for line in agent.lines), agent.log()
