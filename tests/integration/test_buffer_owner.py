"""
One agent per buffer file (issue 14, item 2), with real processes: a
second agent on a buffer another agent holds refuses to start with one line
naming the holder's pid and leaves no file behind; read-only tools still
work beside the agent; the lock dies with its holder (kill -9).
"""

import os
import subprocess
import sys

from nightowl import bufferlock, cli, wire
from tests.integration.agent import TWISTD, AgentProcess, send_frame


def second_agent(path):
    return subprocess.run(TWISTD + ["-n", "--pidfile=", "nightowl", "--listen",
                                    "tcp:0:interface=127.0.0.1", "--buffer", path,
                                    "--health", "none"],
                          capture_output=True, text=True, timeout=60)


def test_a_second_agent_on_the_same_buffer_refuses(tmp_path, capsys):
    path = str(tmp_path / "shared.sqlite")
    a = AgentProcess(path).start()
    try:
        assert send_frame(a.port, wire.encode_frame(b"[1]")) == b"2:OK"
        before = sorted(os.listdir(tmp_path))
        out = second_agent(path)
        text = out.stdout + out.stderr
        assert out.returncode != 0
        assert "Traceback" not in text
        refusals = [line for line in text.splitlines() if "in use by another" in line]
        assert len(refusals) == 1, text
        assert "(pid {})".format(a.proc.pid) in refusals[0]
        assert sorted(os.listdir(tmp_path)) == before
        # the first agent is untouched and still acks
        assert send_frame(a.port, wire.encode_frame(b"[2]")) == b"2:OK"
        # read-only tools work beside it
        assert cli.main(["buffer", "inspect", "--buffer", path]) == 0
        assert cli.main(["buffer", "verify", "--buffer", path]) == 0
        # requeue coordinates: it names the owner and says what happens next
        assert cli.main(["buffer", "requeue", "--buffer", path]) == 0
        out_err = capsys.readouterr()
        assert "owned by the running agent (pid {})".format(a.proc.pid) in out_err.out
    finally:
        a.stop()
    assert not os.path.exists(path + ".lock")


CHILD = """
import sys, time
from nightowl.bufferlock import BufferLock, BufferLocked
try:
    BufferLock(sys.argv[1]).acquire()
except BufferLocked as e:
    print("locked", e.pid, flush=True)
    sys.exit(3)
print("ok", flush=True)
time.sleep(60)
"""


def test_the_lock_dies_with_its_holder(tmp_path):
    path = str(tmp_path / "b.sqlite")
    first = subprocess.Popen([sys.executable, "-c", CHILD, path], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert first.stdout.readline().strip() == "ok"
        assert bufferlock.holder(path) == first.pid
        out = subprocess.run([sys.executable, "-c", CHILD, path], capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 3
        assert out.stdout.split() == ["locked", str(first.pid)]
    finally:
        first.kill()
        first.wait()
    assert bufferlock.holder(path) is None   # the stale file holds no lock
    lock = bufferlock.BufferLock(path).acquire()
    try:
        assert bufferlock.holder(path) == os.getpid()
    finally:
        lock.release()
