"""
The admin commands through ``nightowl.cli.main``: real agents on port 0, real
buffer files, real Postgres.  Every error path is one line and an exit code.
"""

import datetime
import io
import json
import os
import sqlite3
import time

import psycopg2
import pytest

from nightowl.buffer import schema as nbuffer
from nightowl import cli, migrate, partitions
from nightowl.admin import ping, send
from nightowl.admin.progress import Progress
from tests.integration.agent import AgentProcess


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("NIGHTOWL_LISTEN", "NIGHTOWL_HEALTH", "NIGHTOWL_TOKEN", "NIGHTWATCH_TOKEN",
                "NIGHTOWL_BUFFER", "NIGHTOWL_DSN", "NIGHTOWL_RETENTION_DAYS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def agent(tmp_path):
    a = AgentProcess(str(tmp_path / "agent.sqlite"), health=True,
                     args=["--health", "tcp:0:interface=127.0.0.1", "--token", "s3cret"]).start()
    deadline = time.monotonic() + 10
    while a.health_port is None and time.monotonic() < deadline:
        time.sleep(0.05)
    yield a
    a.kill()


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def one_line(text):
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


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


# -- buffer ----------------------------------------------------------------------

def make_buffer(path, pending=3, quarantined=2):
    conn = nbuffer.connect(str(path))
    nbuffer.buffer_identity(conn)
    now = time.time()
    for i in range(pending):
        nbuffer.add_row(conn, b"[" + b"1," * i + b"0]", received_at=now - 100 + i)
    for i in range(quarantined):
        nbuffer.add_row(conn, b"[]", received_at=now - 50, state=2, state_at=now,
                        error="DataError (22P02) #%d" % i)
    nbuffer.add_row(conn, b"[]", received_at=now, state=101)
    conn.close()
    return str(path)


def states(path):
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT state, count(*) FROM payloads GROUP BY state"))
    finally:
        conn.close()


def test_buffer_inspect(tmp_path, capsys):
    path = make_buffer(tmp_path / "b.sqlite")
    assert cli.main(["buffer", "inspect", "--buffer", path, "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert "(id " in out and "schema 3)" in out
    lines = out.splitlines()
    assert any(line.split()[:2] == ["pending", "3"] for line in lines)
    assert any(line.split()[:2] == ["quarantined", "2"] for line in lines)
    assert any(line.split()[:6] == ["claimed", "by", "worker", "1", "1", "rows"]
               for line in lines)
    oldest = [line for line in lines if line.startswith("  id ") and "error:" not in line]
    assert [line.split()[1] for line in oldest] == ["1", "2"]
    assert "age" in oldest[0] and oldest[0].endswith("size 3 B")
    assert "error: DataError (22P02) #0" in out and "error: DataError (22P02) #1" in out
    assert states(path) == {0: 3, 2: 2, 101: 1}      # read-only


def test_buffer_inspect_default_path_from_environment(tmp_path, monkeypatch, capsys):
    path = make_buffer(tmp_path / "env.sqlite")
    monkeypatch.setenv("NIGHTOWL_BUFFER", path)
    assert cli.main(["buffer", "inspect"]) == 0
    assert path in capsys.readouterr().out


def test_buffer_commands_default_to_the_agents_buffer(tmp_path, monkeypatch, capsys):
    """Without --buffer or NIGHTOWL_BUFFER: tap's default, not the current directory."""
    from nightowl import tap
    monkeypatch.chdir(tmp_path)
    make_buffer(tmp_path / "nightowl-buffer.sqlite")     # the old cwd default: ignored
    assert tap.parse([], environ={})["buffer"] == tap.DEFAULT_BUFFER
    assert tap.DEFAULT_BUFFER == "/var/lib/nightowl/buffer.sqlite"
    for action in ("inspect", "verify"):   # read-only: never touch a real buffer
        code = cli.main(["buffer", action])
        captured = capsys.readouterr()
        if os.path.isfile(tap.DEFAULT_BUFFER):
            assert tap.DEFAULT_BUFFER in captured.out + captured.err
        else:
            assert code == 1
            assert captured.err == "nightowl buffer: no buffer file at {}\n".format(
                tap.DEFAULT_BUFFER)
        assert "nightowl-buffer.sqlite" not in captured.out + captured.err


def test_buffer_requeue(tmp_path, capsys):
    path = make_buffer(tmp_path / "b.sqlite")
    assert cli.main(["buffer", "requeue", "--buffer", path]) == 0
    captured = capsys.readouterr()
    assert "requeued 2 quarantined rows" in captured.out
    assert "requeue: 2 rows moved to pending" in captured.err     # progress, not a tty
    assert states(path) == {0: 5, 101: 1}
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM payloads WHERE error IS NOT NULL").fetchone()[0] == 0
    conn.close()
    assert cli.main(["buffer", "requeue", "--buffer", path]) == 0
    assert "no quarantined rows" in capsys.readouterr().out


def test_buffer_requeue_while_the_agent_runs(tmp_path, capsys):
    path = make_buffer(tmp_path / "live.sqlite", pending=0, quarantined=3)
    a = AgentProcess(path).start()
    try:
        from tests.integration.agent import send_frame
        from nightowl import wire
        assert send_frame(a.port, wire.encode_frame(b"[]")) == b"2:OK"
        assert cli.main(["buffer", "requeue", "--buffer", path]) == 0
        assert send_frame(a.port, wire.encode_frame(b"[1]")) == b"2:OK"
    finally:
        a.stop()
    capsys.readouterr()
    assert states(path).get(2) is None
    assert states(path)[0] == 5


def test_buffer_verify_ok(tmp_path, capsys):
    path = make_buffer(tmp_path / "b.sqlite")
    assert cli.main(["buffer", "verify", "--buffer", path]) == 0
    assert one_line(capsys.readouterr().out).endswith(
        ": ok (integrity_check ok, buffer id present, schema 3)")


def test_buffer_verify_missing_identity(tmp_path, capsys):
    path = make_buffer(tmp_path / "b.sqlite")
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM meta WHERE key = 'buffer_id'")
    conn.commit()
    conn.close()
    assert cli.main(["buffer", "verify", "--buffer", path]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM meta buffer_id is missing" in out
    assert out.splitlines()[-1].endswith(": 1 problem(s)")


def test_buffer_corrupt_file(tmp_path, capsys):
    path = tmp_path / "corrupt.sqlite"
    path.write_bytes(b"this is not a database at all" * 200)
    assert cli.main(["buffer", "verify", "--buffer", str(path)]) == 1
    assert "PROBLEM" in capsys.readouterr().out
    assert cli.main(["buffer", "inspect", "--buffer", str(path)]) == 1
    err = one_line(capsys.readouterr().err)
    assert err.startswith("nightowl buffer: ") and "not" in err and "database" in err
    assert cli.main(["buffer", "requeue", "--buffer", str(path)]) == 1
    assert one_line(capsys.readouterr().err).startswith("nightowl buffer: cannot ")


def test_buffer_truncated_database_fails_verify(tmp_path, capsys):
    path = make_buffer(tmp_path / "t.sqlite", pending=200, quarantined=0)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2] + b"\xff" * 512 + data[len(data) // 2 + 512:])
    assert cli.main(["buffer", "verify", "--buffer", path]) == 1
    assert "PROBLEM" in capsys.readouterr().out


def test_buffer_missing_file(tmp_path, capsys):
    missing = str(tmp_path / "nope.sqlite")
    for action in ("inspect", "requeue", "verify"):
        assert cli.main(["buffer", action, "--buffer", missing]) == 1
        assert one_line(capsys.readouterr().err) == "nightowl buffer: no buffer file at " + missing
    assert not (tmp_path / "nope.sqlite").exists()


# -- prune -----------------------------------------------------------------------

def test_prune_without_dsn(capsys):
    assert cli.main(["prune"]) == 1
    assert one_line(capsys.readouterr().err) == (
        "nightowl prune: no DSN: pass --dsn or set NIGHTOWL_DSN")


def test_prune_bad_dsn_masks_the_password(capsys):
    port = free_port()
    assert cli.main(["prune", "--dsn", "host=127.0.0.1 port={} user=u password=hunter2 "
                     "dbname=x connect_timeout=2".format(port)]) == 1
    err = one_line(capsys.readouterr().err)
    assert err.startswith("nightowl prune: cannot connect to host=127.0.0.1")
    assert "hunter2" not in err and "password=***" in err


def test_prune_bad_retention(capsys):
    assert cli.main(["prune", "--dsn", "x", "--retention-days", "0"]) == 2
    assert "must be greater than 0" in one_line(capsys.readouterr().err)


def test_prune_drops_expired_partitions(fresh_pg_dsn, capsys):
    conn = psycopg2.connect(fresh_pg_dsn)
    try:
        migrate.apply(conn, partitions=False)
        now = datetime.datetime.now(datetime.timezone.utc)
        old = partitions.ensure_partitions(conn, now=now - datetime.timedelta(days=20),
                                           days_behind=0, days_ahead=0)
        recent = partitions.ensure_partitions(conn, now=now, days_behind=0, days_ahead=0)
    finally:
        conn.close()
    assert old and recent
    assert cli.main(["prune", "--dsn", fresh_pg_dsn, "--retention-days", "7"]) == 0
    out = capsys.readouterr().out
    assert sorted(line.split()[1] for line in out.splitlines()
                  if line.startswith("dropped ")) == sorted(old)
    conn = psycopg2.connect(fresh_pg_dsn)
    try:
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM pg_class WHERE relname = ANY(%s)", (old,))
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT count(*) FROM pg_class WHERE relname = ANY(%s)", (recent,))
        assert cur.fetchone()[0] == len(recent)
    finally:
        conn.close()
    assert cli.main(["prune", "--dsn", fresh_pg_dsn, "--retention-days", "7"]) == 0
    assert "nothing older than 7 days to drop" in capsys.readouterr().out


def test_prune_applies_each_rollup_tier_retention(fresh_pg_dsn, capsys):
    migrate.apply(fresh_pg_dsn)
    conn = psycopg2.connect(fresh_pg_dsn)
    cur = conn.cursor()
    for tier in ("minute", "hour", "day"):
        # 8 days, 100 days and 800 days old: each just past one tier's default
        cur.execute("INSERT INTO nightowl_rollups_{} (bucket, kind, environment, group_key, "
                    "count) SELECT now() - make_interval(days => d), 'log', 'p', 'k' || d, 1 "
                    "FROM unnest(ARRAY[1, 8, 100, 800]) d".format(tier))
    conn.commit()
    assert cli.main(["prune", "--dsn", fresh_pg_dsn]) == 0
    assert ("rollups deleted: 3 minute rows (older than 7 days), 2 hour rows (older than 90 "
            "days), 1 day rows (older than 730 days)") in capsys.readouterr().out
    kept = {}
    for tier in ("minute", "hour", "day"):
        cur.execute("SELECT group_key FROM nightowl_rollups_{} ORDER BY 1".format(tier))
        kept[tier] = [k for (k,) in cur.fetchall()]
    assert kept == {"minute": ["k1"], "hour": ["k1", "k8"], "day": ["k1", "k100", "k8"]}
    conn.close()
    assert cli.main(["prune", "--dsn", fresh_pg_dsn, "--rollup-retention-days", "0"]) == 2
    assert "--rollup-retention-days: must be greater than 0" in capsys.readouterr().err


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


# -- progress --------------------------------------------------------------------

class TTY(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_redraws_one_line():
    stream = TTY()
    p = Progress("send", total=4, stream=stream, clock=lambda: 0.0)
    for n in range(4):
        p.advance()
    p.finish("4 ok")
    text = stream.getvalue()
    assert text.count("\n") == 2                      # end of bar, summary
    assert "\rsend: [##############################] 4/4" in text
    assert text.rstrip().endswith("send: 4 ok in 0.0 s")


def test_progress_in_a_log_writes_plain_lines():
    stream = io.StringIO()
    p = Progress("prune", total=20, stream=stream, clock=lambda: 0.0)
    for n in range(20):
        p.advance()
    p.finish()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "prune: started (20 to do)"
    assert lines[1] == "prune: 2/20 (10%)"
    assert lines[-2] == "prune: 18/20 (90%)"
    assert lines[-1] == "prune: 20 done in 0.0 s"
    assert "\r" not in stream.getvalue()
