"""
The drain worker's loop with fakes (channel, buffer reader, batch writer),
its SQLite reader against a real file, and the process itself over pipes.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from typing import NamedTuple

import pytest

from nightowl.drain import ipc, worker as w
from nightowl.drain.config import Config

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))


class Result(NamedTuple):
    drained: list
    quarantined: list
    records: int
    rows_by_table: dict
    skipped: dict


class Unavailable(Exception):
    pass


class FakeChannel:
    def __init__(self, replies, stop=None, stop_after_sends=None):
        self.replies = list(replies)
        self.sent = []
        self.stop = stop
        self.stop_after_sends = stop_after_sends

    def send(self, message):
        self.sent.append(message)
        if self.stop_after_sends and len(self.sent) >= self.stop_after_sends:
            self.stop.set()

    def expect(self, op):
        if not self.replies:
            return None   # EOF
        message = self.replies.pop(0)
        assert message["op"] == op, (message, op)
        return message


class FakeStop:
    """threading.Event stand-in: records waits instead of sleeping."""

    def __init__(self, stop_on_wait=None):
        self.flag = False
        self.waits = []
        self.stop_on_wait = stop_on_wait

    def is_set(self):
        return self.flag

    def set(self):
        self.flag = True

    def wait(self, seconds):
        self.waits.append(seconds)
        if self.stop_on_wait is not None and len(self.waits) >= self.stop_on_wait:
            self.flag = True
        return self.flag


class FakeReader:
    def __init__(self, present):
        self.present = present
        self.reads = []

    def read(self, ids):
        self.reads.append(list(ids))
        return [(i, b"[]") for i in sorted(ids) if i in self.present]


class FakeWriter:
    def __init__(self, failures=0, poison=(), error=Unavailable):
        self.failures = failures
        self.poison = set(poison)
        self.error = error
        self.calls = []

    def write(self, rows):
        self.calls.append([i for i, _ in rows])
        if self.failures:
            self.failures -= 1
            raise self.error("down")
        ids = [i for i, _ in rows]
        return Result(drained=[i for i in ids if i not in self.poison],
                      quarantined=[(i, "22P02 requests") for i in ids if i in self.poison],
                      records=5 * len(ids), rows_by_table={"nightowl_requests": len(ids)},
                      skipped={})


def make(replies, writer=None, present=range(1, 100), stop=None, fault=None, **kw):
    stop = stop or FakeStop()
    channel = FakeChannel(replies, stop=stop, **kw)
    logs = []
    killed = []
    cfg = Config(dsn="x", buffer="/nonexistent", worker_id=3, batch_size=7, fault=fault)
    writer = writer or FakeWriter()
    worker = w.Worker(cfg, channel, FakeReader(set(present)), lambda: writer, stop,
                      lambda level, msg: logs.append((level, msg)),
                      clock=lambda: 100.0, unavailable=(Unavailable,),
                      kill=lambda: killed.append(True) or (_ for _ in ()).throw(SystemExit(-9)))
    return worker, channel, writer, stop, logs, killed


def ops(channel):
    return [m["op"] for m in channel.sent]


def test_claim_write_done_marked_cycle():
    worker, channel, writer, stop, logs, _ = make(
        [{"op": "claimed", "ids": [5, 6, 7]}, {"op": "marked"}],
        writer=FakeWriter(poison=[6]))
    assert worker.run() == 0          # EOF on the second claim
    assert ops(channel) == ["hello", "claim", "done", "claim"]
    assert channel.sent[0] == {"op": "hello", "worker": 3, "pid": os.getpid()}
    assert channel.sent[1] == {"op": "claim", "limit": 7}
    done = channel.sent[2]
    assert done["drained"] == [5, 7]
    assert done["quarantined"] == [[6, "22P02 requests"]]
    assert done["stats"]["batches"] == 1
    assert done["stats"]["payloads"] == 3
    assert done["stats"]["rows_by_table"] == {"nightowl_requests": 3}
    assert done["stats"]["pg_reachable"] is True
    assert writer.calls == [[5, 6, 7]]


def test_a_short_claim_waits_for_the_batch_to_fill_a_full_one_does_not():
    full = [{"op": "claimed", "ids": list(range(1, 8))}, {"op": "marked"}]
    short = [{"op": "claimed", "ids": [8, 9]}, {"op": "marked"}]
    worker, channel, writer, stop, logs, _ = make(full + short + full)
    assert worker.run() == 0
    assert ops(channel) == ["hello", "claim", "done", "claim", "done", "claim", "done", "claim"]
    # batch size 7: only the claim of 2 is followed by a wait
    assert stop.waits == [w.FILL_SECONDS]
    assert 0 < w.FILL_SECONDS <= w.IDLE_SECONDS


def test_missing_ids_are_reported_drained():
    worker, channel, writer, _, logs, _ = make(
        [{"op": "claimed", "ids": [1, 500]}, {"op": "marked"}])
    worker.run()
    assert channel.sent[2]["drained"] == [1, 500]
    assert writer.calls == [[1]]
    assert any("not in the buffer" in m for _, m in logs)


def test_empty_claim_idles_100ms_then_asks_again():
    stop = FakeStop()
    worker, channel, *_ = make([{"op": "claimed", "ids": []}] * 3, stop=stop)
    worker.run()
    assert ops(channel)[:2] == ["hello", "claim"]
    assert ops(channel).count("claim") == 4
    assert stop.waits == [0.1, 0.1, 0.1]


def test_outage_retries_same_rows_with_doubling_backoff_and_logs_at_doublings():
    stop = FakeStop()
    writer = FakeWriter(failures=9)
    worker, channel, writer, stop, logs, _ = make(
        [{"op": "claimed", "ids": [1, 2]}, {"op": "marked"}], writer=writer, stop=stop)
    worker.run()
    assert writer.calls == [[1, 2]] * 10
    # the write backoff, then the fill wait after a short claim
    assert stop.waits == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0, w.FILL_SECONDS]
    errors = [m for level, m in logs if level == "error"]
    assert len(errors) == 4                      # attempts 1, 2, 4, 8
    assert all("attempt" in m for m in errors)
    assert "down" not in " ".join(errors)         # class only, never the message
    done = [m for m in channel.sent if m["op"] == "done"][0]
    assert done["drained"] == [1, 2]
    assert done["stats"]["failures"] == 9
    assert done["stats"]["last_error"] == "Unavailable"
    assert done["stats"]["pg_reachable"] is True
    assert any("succeeded again after 9" in m for _, m in logs)
    # the ids were never reported while Postgres was away
    assert ops(channel).count("done") == 1


def test_stop_during_outage_exits_without_reporting():
    stop = FakeStop(stop_on_wait=3)
    worker, channel, writer, _, logs, _ = make(
        [{"op": "claimed", "ids": [1, 2]}], writer=FakeWriter(failures=100), stop=stop)
    assert worker.run() == 0
    assert "done" not in ops(channel)
    assert len(writer.calls) == 3
    assert any("safe in the buffer" in m for _, m in logs)


def test_stop_finishes_the_current_batch_then_exits():
    stop = FakeStop()
    worker, channel, writer, *_ = make(
        [{"op": "claimed", "ids": [1, 2]}, {"op": "marked"}, {"op": "claimed", "ids": [3]}],
        stop=stop, stop_after_sends=2)      # stop arrives right after the claim
    assert worker.run() == 0
    assert ops(channel) == ["hello", "claim", "done"]
    assert writer.calls == [[1, 2]]


def test_unexpected_error_discards_the_writer_and_retries():
    made = []

    class Broken(FakeWriter):
        def close(self):
            made.append("closed")
    first = Broken(failures=1, error=RuntimeError)
    second = FakeWriter()
    writers = [first, second]
    stop = FakeStop()
    channel = FakeChannel([{"op": "claimed", "ids": [4]}, {"op": "marked"}])
    cfg = Config(dsn="x", buffer="/x", worker_id=0)
    worker = w.Worker(cfg, channel, FakeReader({4}), lambda: writers.pop(0), stop,
                      lambda *a: None, unavailable=(Unavailable,))
    worker.run()
    assert made == ["closed"]
    assert second.calls == [[4]]
    [done] = [m for m in channel.sent if m["op"] == "done"]
    assert done["drained"] == [4]


def test_kill_after_commit_fault_kills_before_done():
    worker, channel, writer, stop, logs, killed = make(
        [{"op": "claimed", "ids": [1]}, {"op": "marked"},
         {"op": "claimed", "ids": [2]}, {"op": "marked"}],
        fault=("kill-after-commit", 2))
    with pytest.raises(SystemExit):
        worker.run()
    assert killed == [True]
    assert writer.calls == [[1], [2]]
    assert ops(channel) == ["hello", "claim", "done", "claim"]   # no done for batch 2


def make_buffer(path, count):
    from nightowl.buffer import schema as nbuffer
    conn = nbuffer.connect(path)
    conn.execute("BEGIN IMMEDIATE")
    buffer_id = nbuffer.buffer_identity(conn)
    nbuffer.insert_many(conn, [(time.time(), b'[{"n":%d}]' % i) for i in range(count)])
    conn.execute("COMMIT")
    return conn, buffer_id


def test_buffer_reader_reads_by_id_in_chunks_and_never_writes(tmp_path):
    path = str(tmp_path / "b.sqlite")
    conn, buffer_id = make_buffer(path, 1200)
    from nightowl.buffer.reader import BufferReader
    reader = BufferReader(path)
    assert reader.buffer_id() == buffer_id
    ids = list(range(1200, 0, -2))
    rows = reader.read(ids + [99999])
    assert [i for i, _ in rows] == sorted(ids)
    assert rows[0] == (2, b'[{"n":1}]')
    with pytest.raises(sqlite3.OperationalError):
        reader.conn.execute("DELETE FROM payloads")
    reader.close()
    conn.close()


def spawn_worker(tmp_path, extra=None):
    path = str(tmp_path / "b.sqlite")
    conn, _ = make_buffer(path, 3)
    conn.close()
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": REPO,
           "NIGHTOWL_DSN": "host=127.0.0.1 port=1 dbname=none connect_timeout=1",
           "NIGHTOWL_BUFFER": path, "NIGHTOWL_WORKER_ID": "0"}
    env.update(extra or {})
    proc = subprocess.Popen([sys.executable, "-m", "nightowl.drain.worker"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    return proc


def read_message(proc):
    """The next message, skipping heartbeats (sent every few seconds from a thread)."""
    while True:
        message = ipc.decode(proc.stdout.readline())
        if message["op"] != ipc.HEARTBEAT:
            return message


def test_process_exits_at_once_on_stdin_eof(tmp_path):
    proc = spawn_worker(tmp_path)
    try:
        assert read_message(proc)["op"] == "hello"
        assert read_message(proc) == {"op": "claim", "limit": 5000}
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
        assert proc.stdout.read() == b""      # wrote nothing more
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_process_stops_on_stop_message_and_on_sigterm(tmp_path):
    for how in ("stop", "TERM"):
        proc = spawn_worker(tmp_path)
        try:
            assert read_message(proc)["op"] == "hello"
            assert read_message(proc)["op"] == "claim"
            if how == "stop":
                proc.stdin.write(ipc.encode({"op": "stop"}))
            else:
                proc.send_signal(signal.SIGTERM)
            proc.stdin.write(ipc.encode({"op": "claimed", "ids": []}))
            proc.stdin.flush()
            assert proc.wait(timeout=30) == 0
            assert b"stopped" in proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        os.remove(str(tmp_path / "b.sqlite"))


def test_process_keeps_claim_while_postgres_is_unreachable(tmp_path):
    proc = spawn_worker(tmp_path)
    try:
        read_message(proc), read_message(proc)
        proc.stdin.write(ipc.encode({"op": "claimed", "ids": [1, 2, 3]}))
        proc.stdin.flush()
        # port 1 refuses: the worker backs off and reports stats, never done
        message = read_message(proc)
        while message["op"] == "stats" and message["stats"]["failures"] < 3:
            message = read_message(proc)
        assert message["op"] == "stats"
        assert message["stats"]["pg_reachable"] is False
        # the cause, with its SQLSTATE (issue 9: it used to be the class name alone)
        assert message["stats"]["last_error"].startswith(
            "connection refused (SQLSTATE 08001): connection to server at \"127.0.0.1\", "
            "port 1 failed: Connection refused"), message["stats"]["last_error"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        rest = proc.stdout.read().decode()
        assert '"done"' not in rest
        err = proc.stderr.read().decode()
        assert "postgres unavailable" in err
        assert "connect_timeout" not in err and "port=1" not in err   # no DSN in logs
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
