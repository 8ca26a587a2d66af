"""
The real BufferWriter opening and closing its file: pragmas and identity,
startup checks (unwritable, missing directory, corrupt file), the sync
mode and the migration of an old layout.
"""

import os
import sqlite3
import stat

import pytest

from nightowl.buffer.schema import BufferError
from nightowl.buffer.writer import BufferWriter
from tests.buffer_support import rows
from tests.fakes import ThreadReactor


def test_pragmas_and_identity(writer):
    w, reactor = writer
    conn = sqlite3.connect(w.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    assert conn.execute("SELECT value FROM meta WHERE key='buffer_id'").fetchone()[0] == w.buffer_id
    assert len(w.buffer_id) == 36


def test_identity_is_stable_across_reopen(tmp_path):
    reactor = ThreadReactor()
    path = str(tmp_path / "b.sqlite")
    w = BufferWriter(path, reactor=reactor)
    w.open()
    first = w.buffer_id
    reactor.wait(w.close())
    w2 = BufferWriter(path, reactor=reactor)
    w2.open()
    assert w2.buffer_id == first
    reactor.wait(w2.close())


def test_unwritable_buffer_refuses_to_start(tmp_path):
    if os.geteuid() == 0:
        # root ignores permissions: use a read-only database file instead.
        path = str(tmp_path / "ro.sqlite")
        w = BufferWriter(path, reactor=ThreadReactor())
        w.open()
        ThreadReactor().wait  # noqa
        w.reactor.wait(w.close())
        import subprocess
        subprocess.run(["chattr", "+i", path], check=False)
        if subprocess.run(["lsattr", path], capture_output=True, text=True).stdout[:20].find("i") < 0:
            pytest.skip("cannot make a read-only file as root here")  # pragma: no cover
        try:
            with pytest.raises(BufferError) as e:
                BufferWriter(path, reactor=ThreadReactor()).open()
            assert path in str(e.value)
        finally:
            subprocess.run(["chattr", "-i", path], check=False)
    else:  # pragma: no cover
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(stat.S_IRUSR | stat.S_IXUSR)
        with pytest.raises(BufferError):
            BufferWriter(str(d / "b.sqlite"), reactor=ThreadReactor()).open()


def test_missing_directory_is_created(tmp_path):
    reactor = ThreadReactor()
    w = BufferWriter(str(tmp_path / "a" / "b" / "buf.sqlite"), reactor=reactor)
    w.open()
    reactor.wait(w.append(b"[]"))
    reactor.wait(w.close())


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_buffer_moved_aside_not_crash_loop(tmp_path, damage):
    reactor = ThreadReactor()
    path = str(tmp_path / "b.sqlite")
    w = BufferWriter(path, reactor=reactor)
    w.open()
    for i in range(300):
        reactor.wait(w.append(b"[" + b"1," * 200 + b"1]"))
    reactor.wait(w.close())
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        if damage == "garbage":
            f.write(b"this is not a sqlite file at all" * 10)
        else:
            f.truncate(size // 2)
    w2 = BufferWriter(path, reactor=reactor)
    w2.open()
    assert w2.moved_aside is not None and os.path.exists(w2.moved_aside)
    reactor.wait(w2.append(b"[]"))
    assert w2.pending == 1
    reactor.wait(w2.close())


def test_alive(tmp_path):
    reactor = ThreadReactor()
    w = BufferWriter(str(tmp_path / "b.sqlite"), reactor=reactor)
    assert not w.alive() and not w.is_open()
    w.open()
    assert w.alive() and w.is_open()
    reactor.wait(w.close())
    assert not w.alive() and not w.is_open()


@pytest.mark.parametrize("sync,expected", [("normal", 1), ("full", 2)])
def test_buffer_sync_mode(tmp_path, sync, expected):
    reactor = ThreadReactor()
    w = BufferWriter(str(tmp_path / "b.sqlite"), reactor=reactor, sync=sync)
    w.open()
    assert reactor.wait(w.run(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])) \
        == expected
    reactor.wait(w.close())


def test_layout_1_buffer_is_migrated_with_its_rows(tmp_path):
    # A buffer written by the first dev builds: the bytes in the payloads row.
    path = str(tmp_path / "old.sqlite")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript("""
        PRAGMA journal_mode=WAL;
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE payloads (id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL NOT NULL,
            state INTEGER NOT NULL DEFAULT 0, state_at REAL, error TEXT, payload BLOB NOT NULL);
        INSERT INTO meta VALUES ('buffer_id', 'b0b0b0b0-0000-4000-8000-000000000001');
        INSERT INTO meta VALUES ('schema', '1');
        INSERT INTO payloads (received_at, state, payload) VALUES (1, 0, x'5b315d');
        INSERT INTO payloads (received_at, state, error, payload) VALUES (1, 2, 'x', x'5b325d');
    """)
    conn.close()
    reactor = ThreadReactor()
    w = BufferWriter(path, reactor=reactor)
    w.open()
    assert w.buffer_id == "b0b0b0b0-0000-4000-8000-000000000001"
    assert (w.pending, w.quarantined) == (1, 1)
    reactor.wait(w.append(b"[3]"))
    reactor.wait(w.close())
    assert [(r[0], r[1], r[3]) for r in rows(path)] == [(1, 0, b"[1]"), (2, 2, b"[2]"),
                                                          (3, 0, b"[3]")]
