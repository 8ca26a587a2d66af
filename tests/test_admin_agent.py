"""
The admin commands that talk to a running agent, through ``nightowl.cli.main``:
status, ping and send, against real agents on port 0.  Every error path is
one line and an exit code.
"""

import json
import sqlite3
import time

import pytest

from nightowl.buffer import schema as nbuffer
from nightowl import cli
from nightowl.admin import ping, send
from nightowl.bench.agent import free_port
from tests.admin_support import one_line
from tests.integration.agent import AgentProcess

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def agent(tmp_path):
    a = AgentProcess(str(tmp_path / "agent.sqlite"), health=True,
                     args=["--health", "tcp:0:interface=127.0.0.1", "--token", "s3cret"]).start()
    deadline = time.monotonic() + 10
    while a.health_port is None and time.monotonic() < deadline:
        time.sleep(0.05)
    yield a
    a.kill()


# -- status ----------------------------------------------------------------------

def test_status_healthy_exit_0(agent, capsys):
    code = cli.main(["status", "--url", "http://127.0.0.1:{}".format(agent.health_port)])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].startswith("nightowl {}: HEALTHY".format(
        __import__("nightowl").__version__))
    assert "drain-disabled" in out and "buffer   pending 0" in out


def test_status_json(agent, capsys):
    code = cli.main(["status", "--json", "--url",
                     "http://127.0.0.1:{}".format(agent.health_port)])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["status"] == "healthy"


def test_status_unreachable_exit_3(capsys):
    port = free_port()
    assert cli.main(["status", "--url", "http://127.0.0.1:{}".format(port)]) == 3
    err = one_line(capsys.readouterr().err)
    assert err.startswith("nightowl status: agent unreachable at http://127.0.0.1:{}/status"
                          .format(port))


def test_status_default_url_from_nightowl_health(monkeypatch, capsys):
    port = free_port()
    monkeypatch.setenv("NIGHTOWL_HEALTH", "tcp:{}:interface=127.0.0.1".format(port))
    assert cli.main(["status"]) == 3
    assert ":{}/status".format(port) in capsys.readouterr().err


def test_status_exit_codes_follow_degraded_and_critical(tmp_path, capsys):
    path = str(tmp_path / "q.sqlite")
    conn = nbuffer.connect(path)
    nbuffer.buffer_identity(conn)
    nbuffer.add_row(conn, b"[]", state=2, state_at=time.time(), error="DataError (22P02)")
    conn.close()
    a = AgentProcess(path, health=True, args=["--health", "tcp:0:interface=127.0.0.1",
                                              "--max-pending", "1"]).start()
    try:
        while a.health_port is None:
            time.sleep(0.05)
        url = "http://127.0.0.1:{}".format(a.health_port)
        assert cli.main(["status", "--url", url]) == 1
        assert "DEGRADED" in capsys.readouterr().out
        from tests.integration.agent import send_frame
        from nightowl import wire
        send_frame(a.port, wire.encode_frame(b"[]"))
        send_frame(a.port, wire.encode_frame(b"[]"))
        assert cli.main(["status", "--url", url]) == 2
        out = capsys.readouterr().out
        assert "CRITICAL" in out and "back-pressure" in out
    finally:
        a.kill()


# -- ping ------------------------------------------------------------------------

def test_ping_a_real_agent(agent, capsys):
    assert cli.main(["ping", "--to", "127.0.0.1:{}".format(agent.port),
                     "--token", "s3cret"]) == 0
    out = one_line(capsys.readouterr().out)
    assert out.startswith("2:OK from 127.0.0.1:{} in ".format(agent.port))
    assert out.endswith(" ms")


def test_ping_defaults_from_the_environment(agent, monkeypatch, capsys):
    monkeypatch.setenv("NIGHTOWL_LISTEN", "tcp:{}:interface=127.0.0.1".format(agent.port))
    monkeypatch.setenv("NIGHTWATCH_TOKEN", "s3cret")
    assert cli.main(["ping"]) == 0
    assert "2:OK" in capsys.readouterr().out


def test_ping_unreachable(capsys):
    port = free_port()
    assert cli.main(["ping", "--to", "127.0.0.1:{}".format(port)]) == 1
    err = one_line(capsys.readouterr().err)
    assert err.startswith("nightowl ping: no answer from 127.0.0.1:{}: ".format(port))


def test_ping_something_that_is_not_an_agent(capsys):
    import socket
    import threading
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def answer():
        conn, _ = server.accept()
        conn.recv(100)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()
    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        assert cli.main(["ping", "--to", "127.0.0.1:{}".format(server.getsockname()[1])]) == 1
    finally:
        t.join(5)
        server.close()
    assert "answered b'HTTP' instead of 2:OK" in one_line(capsys.readouterr().err)


def test_ping_bad_address(capsys):
    assert cli.main(["ping", "--to", "nonsense"]) == 2
    assert one_line(capsys.readouterr().err) == (
        "nightowl ping: --to: expected HOST:PORT, got 'nonsense'")


def test_endpoint_address():
    assert ping.endpoint_address("tcp:2407:interface=127.0.0.1") == ("127.0.0.1", 2407)
    assert ping.endpoint_address("tcp:port=2500:interface=0.0.0.0") == ("127.0.0.1", 2500)
    assert ping.endpoint_address("2407") == ("127.0.0.1", 2407)
    assert ping.endpoint_address("tcp:2407:interface=\\:\\:1") == ("::1", 2407)
    with pytest.raises(ValueError):
        ping.endpoint_address("unix:/tmp/x")
    assert ping.parse_address("[::1]:2407") == ("::1", 2407)


# -- send ------------------------------------------------------------------------

@pytest.mark.parametrize("scenario", send.SCENARIOS)
def test_send_every_scenario_lands(agent, scenario, capsys):
    code = cli.main(["send", "--to", "127.0.0.1:{}".format(agent.port), "--token", "s3cret",
                     "--count", "12", "--scenario", scenario, "--seed", "1"])
    captured = capsys.readouterr()
    assert code == 0, captured
    assert "ok 12, error 0" in captured.out
    conn = sqlite3.connect(agent.buffer_path)
    try:
        bodies = [row[0] for row in conn.execute("SELECT payload FROM payload_bodies")]
    finally:
        conn.close()
    assert len(bodies) == 12
    for body in bodies:
        records = json.loads(body)
        assert isinstance(records, list) and records
        assert all("t" in r for r in records)


def test_send_scenarios_have_their_records():
    import random
    rng = random.Random(3)
    errors = [json.loads(p) for p in send.payloads_for("errors", 5, rng)]
    for records in errors:
        types = [r["t"] for r in records]
        assert "exception" in types and "request" in types
        assert [r["status_code"] for r in records if r["t"] == "request"] == [500]
    jobs = [json.loads(p) for p in send.payloads_for("jobs", 3, rng)]
    assert all({"queued-job", "job-attempt"} <= set(r["t"] for r in records) for records in jobs)
    now = time.time()
    stamps = [r["timestamp"] for records in errors for r in records if "timestamp" in r]
    assert all(abs(t - now) < 600 for t in stamps)          # today's partition
    traces = set(r["trace_id"] for records in errors for r in records if "trace_id" in r)
    assert len(traces) == 5                                  # one trace per payload


def test_send_with_a_wrong_token_fails(agent, capsys):
    code = cli.main(["send", "--to", "127.0.0.1:{}".format(agent.port), "--token", "bad",
                     "--count", "3"])
    assert code == 1
    captured = capsys.readouterr()
    assert "ok 0, error 3 (reply '5:ER' 3)" in captured.out
    assert "send mixed: 0 ok, 3 failed in " in captured.err


def test_send_progress_counts_deliveries_not_attempts(capsys):
    """A receiver that acknowledges every other frame: progress shows 2:OK replies only."""
    import socket
    import threading
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    port = server.getsockname()[1]

    def serve():
        for n in range(10):
            conn, _ = server.accept()
            with conn:
                conn.settimeout(5)
                data = b""
                while b":" not in data or len(data) < int(data.split(b":", 1)[0]) + \
                        len(data.split(b":", 1)[0]) + 1:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(b"2:OK" if n % 2 == 0 else b"5:ERROR")
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        code = cli.main(["send", "--to", "127.0.0.1:{}".format(port), "--count", "10",
                         "--timeout", "5"])
    finally:
        thread.join(10)
        server.close()
    captured = capsys.readouterr()
    assert code == 1
    assert "ok 5, error 5" in captured.out
    progress = [line for line in captured.err.splitlines() if line.startswith("send mixed: ")]
    assert progress[0] == "send mixed: started (10 to do)"
    assert progress[-1].startswith("send mixed: 5 ok, 5 failed in ")
    counted = [int(line.split()[2].split("/")[0]) for line in progress[1:-1]]
    assert counted and max(counted) <= 5          # never the 10 attempts
    assert "send mixed: 5/10 (50%) 4 failed" in captured.err


def test_send_unreachable(capsys):
    port = free_port()
    assert cli.main(["send", "--to", "127.0.0.1:{}".format(port), "--count", "50"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("nightowl send: cannot connect to 127.0.0.1:{}: ".format(port))
