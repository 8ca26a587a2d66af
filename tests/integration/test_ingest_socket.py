"""
Real sockets: every fixture sent the way the SDK sends it lands in the
buffer byte-identical; malformed frames beside it change nothing else.
"""

import glob
import os
import sqlite3
import threading

import pytest

from nightowl import wire
from nightowl.bench.agent import TWISTD
from tests.integration.agent import AgentProcess, send_frame


@pytest.fixture
def agent(tmp_path):
    a = AgentProcess(str(tmp_path / "buffer.sqlite"), args=["--token", "s3cret"]).start()
    yield a
    a.kill()


def buffered(path):
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT payload FROM payload_bodies ORDER BY id")]
    finally:
        conn.close()


def fixture_payloads(fixtures):
    payloads = []
    for path in sorted(glob.glob(os.path.join(fixtures, "*.jsonl"))):
        with open(path, "rb") as f:
            lines = [line.rstrip(b"\n") for line in f if line.strip()]
        # One payload per fixture file, as the SDK batches an execution.
        payloads.append(b"[" + b",".join(lines) + b"]")
        # And each record alone, as writeNow() does.
        payloads.extend(b"[" + line + b"]" for line in lines)
    return payloads


def test_every_fixture_lands_byte_identical(agent, fixtures):
    payloads = fixture_payloads(fixtures)
    assert len(payloads) > 13
    for payload in payloads:
        assert send_frame(agent.port, wire.encode_frame(payload, token="s3cret")) == b"2:OK"
    assert buffered(agent.buffer_path) == payloads


def test_ping_and_token(agent):
    assert send_frame(agent.port, wire.encode_frame(b"PING", token="wrong")) == b"2:OK"
    assert send_frame(agent.port, wire.encode_frame(b"[]", token="wrong")) == b"5:ERROR"
    assert buffered(agent.buffer_path) == []


def test_malformed_traffic_beside_valid_loses_nothing(agent):
    good = [b'[{"t":"log","n":%d}]' % i for i in range(200)]
    bad = [b"x:", b"9:v2:abc:[]", wire.encode_frame(b"{}", token="s3cret"),
           wire.encode_frame(b"[", token="s3cret"), b"99999999999:", b"5:v1"]
    replies = {"good": [], "bad": []}

    def send_good():
        for p in good:
            replies["good"].append(send_frame(agent.port, wire.encode_frame(p, token="s3cret")))

    def send_bad():
        for _ in range(20):
            for frame in bad:
                if frame == b"5:v1":
                    continue  # incomplete: would wait for the timeout
                replies["bad"].append(send_frame(agent.port, frame))

    threads = [threading.Thread(target=send_good), threading.Thread(target=send_bad)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert replies["good"] == [b"2:OK"] * len(good)
    assert set(replies["bad"]) == {b"5:ERROR"}
    assert buffered(agent.buffer_path) == good


def test_sigterm_finishes_and_closes(tmp_path):
    a = AgentProcess(str(tmp_path / "b.sqlite")).start()
    for i in range(20):
        assert send_frame(a.port, wire.encode_frame(b"[%d]" % i)) == b"2:OK"
    # twistd re-raises the signal after a clean shutdown (exit status -15)
    assert a.stop() in (0, -15)
    assert "nightowl stopped; 20 payloads pending" in a.log()
    assert len(buffered(a.buffer_path)) == 20


def test_bad_option_is_one_line_no_traceback(tmp_path):
    import subprocess
    out = subprocess.run(TWISTD + ["-n", "--pidfile=", "nightowl",
                          "--max-pending", "many", "--buffer", str(tmp_path / "b")],
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr + out.stdout
    assert "--max-pending: expected a whole number, got 'many'" in out.stderr + out.stdout


def test_failed_bind_stops_startup(tmp_path):
    import socket
    import subprocess
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        out = subprocess.run(TWISTD + ["-n", "--pidfile=", "nightowl",
                              "--listen", "tcp:{}:interface=127.0.0.1".format(port),
                              "--buffer", str(tmp_path / "b"), "--health", "none"],
                             capture_output=True, text=True, timeout=30)
    finally:
        s.close()
    assert out.returncode != 0
    text = out.stderr + out.stdout
    assert "cannot listen on 127.0.0.1:{}".format(port) in text
    assert "Traceback" not in text


def test_unwritable_buffer_stops_startup(tmp_path):
    import subprocess
    target = tmp_path / "dir"
    target.write_text("a file where a directory should be")
    out = subprocess.run(TWISTD + ["-n", "--pidfile=", "nightowl",
                          "--listen", "tcp:0:interface=127.0.0.1",
                          "--buffer", str(target / "b.sqlite"), "--health", "none"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    text = out.stderr + out.stdout
    assert "nightowl: cannot" in text
    assert "Traceback" not in text
