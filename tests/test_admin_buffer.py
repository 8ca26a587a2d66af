"""
``nightowl buffer inspect | requeue | verify`` through ``nightowl.cli.main``
on real buffer files: read-only where it says so, safe beside a running
agent, one line and an exit code for a missing or corrupt file.
"""

import os
import sqlite3
import time

import pytest

from nightowl.buffer import schema as nbuffer
from nightowl import cli
from tests.admin_support import one_line
from tests.integration.agent import AgentProcess

pytestmark = pytest.mark.usefixtures("clean_env")


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
