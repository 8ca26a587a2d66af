"""
The forward queue in the real buffer file: rows committed with their
payload, the exact frame rebuilt, the bound (oldest dropped and counted),
independence from the drain's deletes, the layout 2 -> 3 upgrade.
"""

import sqlite3

import pytest
from twisted.internet import defer

from nightowl import wire
from nightowl.buffer import forwardq, schema
from nightowl.buffer.forwardq import ForwardQueue
from nightowl.buffer.writer import BufferWriter
from tests.fakes import ThreadReactor


def open_writer(path, max_rows=100, max_bytes=10 ** 6):
    reactor = ThreadReactor()
    q = ForwardQueue(max_rows, max_bytes)
    w = BufferWriter(path, reactor=reactor, forward_queue=q)
    w.open()
    return w, q, reactor


@pytest.fixture
def fwd(tmp_path):
    w, q, reactor = open_writer(str(tmp_path / "b.sqlite"))
    yield w, q, reactor
    if w.is_open():
        reactor.wait(w.close())


def frame_of(payload, token="secret"):
    return wire.encode_frame(payload, token=token)


def append_frame(w, frame_bytes):
    f = wire.FrameParser(10 ** 7).feed(frame_bytes)
    payload = wire.open_frame(f, None, 10 ** 7)
    return w.append(payload, forward=(f.token_hash, f.payload))


def take_all(w, q):
    return w.run(lambda conn: q.take(conn, 0, 10 ** 6, 10 ** 9))


def test_frame_rebuilt_byte_identical(fwd):
    w, q, reactor = fwd
    frames = [frame_of(b'[{"n":%d}]' % i, token="t%d" % i) for i in range(5)]
    reactor.wait(defer.gatherResults([append_frame(w, f) for f in frames]))
    rows = reactor.wait(take_all(w, q))
    assert [frame for _id, frame in rows] == frames
    assert q.rows == 5 and q.bytes == sum(len(f) for f in frames)
    assert q.last_id == rows[-1][0]


def test_gzip_frame_forwarded_as_sent(fwd):
    import gzip
    w, q, reactor = fwd
    raw = frame_of(gzip.compress(b'[{"gz":1}]'))
    reactor.wait(append_frame(w, raw))
    assert [f for _i, f in reactor.wait(take_all(w, q))] == [raw]


def test_append_without_forward_info_is_not_queued(fwd):
    w, q, reactor = fwd
    reactor.wait(w.append(b"[1]"))
    assert reactor.wait(take_all(w, q))  == [] and q.rows == 0


def test_refused_payload_gets_no_forward_row(fwd):
    w, q, reactor = fwd
    bad = w.append(b"not json", forward=(b"abc1234", b"not json"))
    bad.addErrback(lambda f: f.trap(wire.FrameError))
    good = append_frame(w, frame_of(b"[2]"))
    reactor.wait(defer.gatherResults([bad, good]))
    assert [f for _i, f in reactor.wait(take_all(w, q))] == [frame_of(b"[2]")]
    assert q.rows == 1


def test_bound_drops_the_oldest_and_counts(tmp_path):
    w, q, reactor = open_writer(str(tmp_path / "b.sqlite"), max_rows=3)
    frames = [frame_of(b"[%d]" % i) for i in range(7)]
    for f in frames:
        reactor.wait(append_frame(w, f))
    rows = reactor.wait(take_all(w, q))
    assert [f for _i, f in rows] == frames[-3:]
    assert (q.rows, q.dropped) == (3, 4)
    assert q.dropped_bytes == sum(len(f) for f in frames[:4])
    reactor.wait(w.close())


def test_bound_in_bytes(tmp_path):
    size = len(frame_of(b"[0]"))
    w, q, reactor = open_writer(str(tmp_path / "b.sqlite"), max_bytes=size * 2 + 1)
    for i in range(5):
        reactor.wait(append_frame(w, frame_of(b"[%d]" % i)))
    assert q.rows == 2 and q.dropped == 3 and q.bytes <= size * 2 + 1
    reactor.wait(w.close())


def test_drain_deletes_never_touch_forward_rows(fwd):
    w, q, reactor = fwd
    for i in range(4):
        reactor.wait(append_frame(w, frame_of(b"[%d]" % i)))
    ids = reactor.wait(w.claim(1, 10))
    reactor.wait(w.mark_drained(ids))
    reactor.wait(w.housekeep(safety=-1.0))
    assert w.pending == 0 and w.drained_kept == 0
    assert len(reactor.wait(take_all(w, q))) == 4 and q.rows == 4


def test_delete_forgets_delivered_rows_only(fwd):
    w, q, reactor = fwd
    for i in range(4):
        reactor.wait(append_frame(w, frame_of(b"[%d]" % i)))
    rows = reactor.wait(take_all(w, q))
    n = reactor.wait(w.run(lambda conn: q.delete(conn, [rows[0][0], rows[2][0], 999])))
    assert n == 2 and q.rows == 2
    assert [i for i, _f in reactor.wait(take_all(w, q))] == [rows[1][0], rows[3][0]]
    # the payloads themselves are untouched
    assert w.pending == 4


def test_counters_survive_reopen(tmp_path):
    path = str(tmp_path / "b.sqlite")
    w, q, reactor = open_writer(path)
    for i in range(3):
        reactor.wait(append_frame(w, frame_of(b"[%d]" % i)))
    reactor.wait(w.close())
    w2, q2, reactor2 = open_writer(path)
    assert (q2.rows, q2.bytes, q2.last_id) == (q.rows, q.bytes, q.last_id)
    reactor2.wait(append_frame(w2, frame_of(b"[9]")))
    assert q2.last_id == q.last_id + 1
    reactor2.wait(w2.close())


def test_take_bounded_in_rows_and_bytes(fwd):
    w, q, reactor = fwd
    for i in range(10):
        reactor.wait(append_frame(w, frame_of(b"[%d]" % i)))
    size = len(frame_of(b"[0]"))
    assert len(reactor.wait(w.run(lambda c: q.take(c, 0, 4, 10 ** 6)))) == 4
    assert len(reactor.wait(w.run(lambda c: q.take(c, 0, 100, size * 3)))) == 3
    assert len(reactor.wait(w.run(lambda c: q.take(c, 0, 100, 1)))) == 1  # at least one
    first = reactor.wait(take_all(w, q))
    after = reactor.wait(w.run(lambda c: q.take(c, first[4][0], 100, 10 ** 6)))
    assert [i for i, _f in after] == [i for i, _f in first[5:]]


def test_layout_2_file_is_upgraded(tmp_path):
    path = str(tmp_path / "old.sqlite")
    conn = sqlite3.connect(path, isolation_level=None)
    old_ddl = schema.SCHEMA.replace(forwardq.DDL, "")
    assert "forwards" not in old_ddl
    conn.executescript(old_ddl)
    conn.execute("INSERT INTO meta VALUES ('schema', '2'), ('buffer_id', 'old-id')")
    conn.close()
    w, q, reactor = open_writer(path)
    assert w.buffer_id == "old-id"
    reactor.wait(append_frame(w, frame_of(b"[1]")))
    reactor.wait(w.close())
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == "3"
    assert conn.execute("SELECT count(*) FROM forwards").fetchone()[0] == 1
    conn.close()


def test_frame_size_matches_frame():
    for n in (0, 1, 9, 10, 95, 96, 1000, 99990):
        payload = b"x" * n
        assert forwardq.frame_size(b"abc1234", payload) == len(forwardq.frame(b"abc1234", payload))


def test_delete_in_a_group_that_rolls_back_is_counted_once(fwd):
    import threading
    w, q, reactor = fwd
    for i in range(4):
        reactor.wait(append_frame(w, frame_of(b"[%d]" % i)))
    rows = reactor.wait(take_all(w, q))
    hold = threading.Event()
    held = w.run(lambda conn: hold.wait(5))     # keeps the writer busy meanwhile

    def boom(conn):
        raise sqlite3.OperationalError("disk I/O error")
    # one group: the delete, then an operation that fails it; the writer
    # rolls back and retries them one by one
    deleted = w.run(lambda conn: q.delete(conn, [rows[0][0], rows[1][0]]))
    bad = w.run(boom)
    hold.set()
    reactor.wait(held)
    assert reactor.wait(deleted) == 2
    with pytest.raises(sqlite3.OperationalError):
        reactor.wait(bad)
    assert (q.rows, q.bytes) == forwardq.counts(sqlite3.connect(w.path))[:2]
    assert q.rows == 2
