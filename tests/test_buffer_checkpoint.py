"""
The real BufferWriter's WAL: checkpoints off the writer thread, and the
rewinds that keep the WAL file bounded under steady writes.
"""

import os
import sqlite3
import time

from nightowl.buffer import checkpoint
from nightowl.buffer.writer import BufferWriter
from tests.fakes import ThreadReactor


def test_checkpoints_happen_off_the_writer_thread(writer, monkeypatch):
    w, reactor = writer
    assert reactor.wait(w.run(
        lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])) == 0
    size_before = os.path.getsize(w.path)
    for i in range(200):
        reactor.wait(w.append(b"[" + b"1," * 1000 + b"1]"))
    import time as _time
    deadline = _time.time() + 10
    while w.checkpoints < 2 and _time.time() < deadline:
        _time.sleep(0.1)
    assert w.checkpoints >= 2 and w.checkpoint_error is None
    # the checkpointer copied the WAL's pages into the main file
    assert os.path.getsize(w.path) > size_before + 200 * 2000


def _append_4kb_rows(tmp_path, n=400, pause=0.0):
    """A writer on a fresh buffer after ``n`` appends of a ~4 KB body."""
    reactor = ThreadReactor()
    w = BufferWriter(str(tmp_path / "b.sqlite"), reactor=reactor)
    w.open()
    body = b"[" + b"1," * 2000 + b"1]"
    for _ in range(n):
        reactor.wait(w.append(body))
        if pause:
            time.sleep(pause)
    return reactor, w


def test_wal_rewinds_under_steady_writes(tmp_path, monkeypatch):
    # Without the writer's own checkpoint the WAL only rewinds when the
    # background checkpointer happens to catch up, which it never does under
    # steady writes (here it is kept out of the way entirely, so this is the
    # fallback past WAL_FORCE_BYTES): 11 MB.
    monkeypatch.setattr(checkpoint, "WAL_LIMIT_BYTES", 128 * 1024)
    monkeypatch.setattr(checkpoint, "WAL_FORCE_BYTES", 256 * 1024)
    monkeypatch.setattr(checkpoint, "REWIND_EVERY", 0.0)
    monkeypatch.setattr(checkpoint, "CHECKPOINT_EVERY", 3600.0)
    reactor, w = _append_4kb_rows(tmp_path)
    assert w.rewinds > 0
    # bounded: the limit plus what a few groups add, nowhere near 400 x 4 KB
    assert w.wal_size() < 1024 * 1024


def test_wal_stays_bounded_by_rewinds_after_the_checkpointer_caught_up(tmp_path, monkeypatch):
    # The fallback is out of reach: only the cheap rewind, just after a
    # checkpoint that copied every frame, keeps the WAL near its limit.
    monkeypatch.setattr(checkpoint, "WAL_LIMIT_BYTES", 256 * 1024)
    monkeypatch.setattr(checkpoint, "WAL_FORCE_BYTES", 1024 * 1024 * 1024)
    monkeypatch.setattr(checkpoint, "CHECKPOINT_EVERY", 0.01)
    monkeypatch.setattr(checkpoint, "CATCH_UP_EVERY", 0.01)
    reactor, w = _append_4kb_rows(tmp_path, pause=0.002)  # the checkpointer gets its turns
    assert w.checkpoints > 0
    assert w.rewinds > 0
    # bounded: the file keeps its largest size, the limit plus what the groups
    # added while the checkpointer waited for its turn (~1 MB alone, 1.15 MB
    # seen under a loaded suite); without a rewind the same appends leave 2.35 MB
    assert w.wal_size() < 2 * 1024 * 1024
    reactor.wait(w.close())


def test_the_writer_rewinds_only_on_a_fresh_catch_up_cue(tmp_path):
    path = str(tmp_path / "b.sqlite")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    cp = checkpoint.Checkpointer(path)
    cp.rewind(conn)
    assert cp.rewinds == 0  # no cue, WAL far below WAL_FORCE_BYTES
    cp._caught_up = checkpoint.time.monotonic() - 10 * checkpoint.CAUGHT_UP_FRESH
    cp.rewind(conn)
    assert (cp.rewinds, cp._caught_up) == (0, None)  # stale: taken, not acted on
    cp._caught_up = checkpoint.time.monotonic()
    cp.rewind(conn)
    assert (cp.rewinds, cp._caught_up) == (1, None)
    conn.close()
