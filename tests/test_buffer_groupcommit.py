"""
The real BufferWriter's group commit: appends acknowledged only after their
commit, back-pressure, and a failure that errbacks its own payloads only.
"""

import sqlite3

import pytest

from nightowl.buffer.writer import BufferWriter
from tests.buffer_support import rows
from tests.fakes import ThreadReactor


def test_append_fires_after_commit_and_is_visible(writer):
    w, reactor = writer
    ds = [w.append(b'[{"n":%d}]' % i) for i in range(50)]
    for d in ds:
        reactor.wait(d)
        # Visible to another connection the moment the Deferred fired.
    assert [r[3] for r in rows(w.path)] == [b'[{"n":%d}]' % i for i in range(50)]
    assert w.pending == 50
    assert w.commits < 50  # grouped


def test_payload_bytes_kept_exactly(writer):
    w, reactor = writer
    odd = b'[{"m":"\\u0000 \xc3\xa9 \\t"},  1.50, "\\/"]'
    reactor.wait(w.append(odd))
    assert rows(w.path)[0][3] == odd


def test_back_pressure_on_pending(writer):
    w, reactor = writer
    assert w.refusal() is None
    for i in range(101):
        reactor.wait(w.append(b"[]"))
    assert w.refusal() == "back-pressure"
    ids = reactor.wait(w.claim(0, 50))
    reactor.wait(w.mark_drained(ids))
    assert w.refusal() is None


def test_failed_operation_fails_alone(writer):
    w, reactor = writer
    def boom(conn):
        raise sqlite3.OperationalError("disk I/O error")
    bad = w.run(boom)
    good = w.append(b"[1]")
    with pytest.raises(sqlite3.OperationalError):
        reactor.wait(bad)
    assert reactor.wait(good) is None
    assert [r[3] for r in rows(w.path)] == [b"[1]"]
    assert w.write_errors == 1


def test_close_commits_what_is_queued(tmp_path):
    reactor = ThreadReactor()
    w = BufferWriter(str(tmp_path / "b.sqlite"), reactor=reactor)
    w.open()
    ds = [w.append(b"[%d]" % i) for i in range(200)]
    closed = w.close()
    reactor.wait(closed)
    for d in ds:
        reactor.wait(d)
    assert len(rows(w.path)) == 200


def test_recount_grouped_with_appends_does_not_double_count(writer):
    w, reactor = writer
    ds = [w.append(b"[]") for _ in range(5)]
    w._flush()  # hand the appends over before the recount, same group
    r = w.recount()
    ds += [w.append(b"[]") for _ in range(3)]
    for d in ds:
        reactor.wait(d)
    reactor.wait(r)
    assert w.pending == 8
    assert reactor.wait(w.recount())["pending"] == 8


def test_failed_append_errbacks_every_payload_and_releases_inflight(writer):
    w, reactor = writer
    import sqlite3 as _sqlite3

    def fill_disk(conn):
        # Cap the file at its current size: the next growth fails like a full disk.
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute("PRAGMA max_page_count = {}".format(pages)).fetchall()
    reactor.wait(w.run(fill_disk))
    ds = [w.append(b"[" + b"1," * 3000 + b"1]") for _ in range(3)]
    failures = []
    for d in ds:
        try:
            reactor.wait(d)
        except _sqlite3.DatabaseError as e:
            failures.append(str(e))
    assert len(failures) == 3 and "full" in failures[0]
    assert w.inflight == 0
    assert w.write_errors >= 1


def test_invalid_payload_refused_alone_in_its_group(writer):
    w, reactor = writer
    from nightowl import wire
    ds = [w.append(b"[1]"), w.append(b'{"not":"array"}'), w.append(b"[2"), w.append(b"[3]")]
    assert reactor.wait(ds[0]) is None and reactor.wait(ds[3]) is None
    for d, reason in ((ds[1], "not-array"), (ds[2], "bad-json")):
        with pytest.raises(wire.FrameError) as e:
            reactor.wait(d)
        assert e.value.reason == reason
    assert [r[3] for r in rows(w.path)] == [b"[1]", b"[3]"]
    assert w.inflight == 0 and w.pending == 2 and w.appended == 2


def test_a_bug_in_the_writer_fails_the_group_and_the_thread_lives(writer, monkeypatch):
    w, reactor = writer
    from twisted.logger import globalLogPublisher
    events = []
    globalLogPublisher.addObserver(events.append)
    original = w._commit_group
    monkeypatch.setattr(w, "_commit_group", lambda ops: 1 / 0)
    try:
        d = w.append(b"[1]")
        with pytest.raises(ZeroDivisionError):
            reactor.wait(d)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert any(e.get("log_failure") for e in events)
    monkeypatch.setattr(w, "_commit_group", original)
    assert reactor.wait(w.append(b"[2]")) is None
    assert w.alive() and w.inflight == 0


def test_groups_committed_while_the_reactor_is_busy_wake_it_once(writer):
    import time
    w, reactor = writer

    def committed(n):
        deadline = time.time() + 5
        while w.appended < n and time.time() < deadline:
            time.sleep(0.001)
        return w.appended == n

    first = w.append(b"[1]")
    f, args, kwargs = reactor.calls.get(timeout=5)   # the flush: hand the batch over
    f(*args, **kwargs)
    assert committed(1)
    second = w.append(b"[2]")
    back = reactor.calls.get(timeout=5)              # the first group's results, waiting
    f, args, kwargs = reactor.calls.get(timeout=5)   # the second batch's flush
    f(*args, **kwargs)
    assert committed(2) and w.commits == 2
    time.sleep(0.05)
    # the second group's results joined the first's: no second wake-up
    assert reactor.calls.qsize() == 0
    assert not first.called and not second.called
    f, args, kwargs = back
    f(*args, **kwargs)
    assert first.called and second.called
    assert w.inflight == 0


def test_appends_beside_bookkeeping_are_committed_and_acked_first(writer):
    import threading
    w, reactor = writer
    hold = threading.Event()
    held = w.run(lambda conn: hold.wait(5))     # the writer is busy: the next ops group up
    seen = {}

    class Waiter:
        called = False

        def __init__(self):
            self.acked = threading.Event()

        def committed(self):                     # writer thread, after the commit
            self.acked.set()

        def callback(self, _):
            self.called = True

        def errback(self, _):
            self.called = True

    waiter = Waiter()

    def bookkeeping(conn):                       # queued before the append
        seen["acked"] = waiter.acked.is_set()
        other = sqlite3.connect(w.path)
        seen["visible"] = other.execute("SELECT count(*) FROM payloads").fetchone()[0]
        other.close()
    booked = w.run(bookkeeping)
    w.append(b"[1]", waiter=waiter)
    f, args, kwargs = [c for c in iter_calls(reactor) if c[0] == w._flush][0]
    f(*args, **kwargs)                           # hand the append over behind the run
    hold.set()
    reactor.wait(held)
    reactor.wait(booked)
    # the append was committed, and its ack sent, before the bookkeeping ran
    assert seen == {"acked": True, "visible": 1}


def iter_calls(reactor):
    """Every call queued for the reactor so far (taken off the queue)."""
    calls = []
    while not reactor.calls.empty():
        calls.append(reactor.calls.get())
    return calls
