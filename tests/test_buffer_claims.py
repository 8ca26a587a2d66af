"""
The claim state machine through the real BufferWriter: claim, mark,
quarantine and release, claims left by an earlier run, housekeeping of
drained rows and the low-water mark.
"""

from nightowl.buffer import groupcommit
from nightowl.buffer.writer import BufferWriter
from tests.buffer_support import rows
from tests.fakes import ThreadReactor


def test_claim_mark_quarantine_release(writer):
    w, reactor = writer
    for i in range(10):
        reactor.wait(w.append(b"[%d]" % i))
    ids = reactor.wait(w.claim(0, 4))
    assert ids == [1, 2, 3, 4]
    ids2 = reactor.wait(w.claim(1, 4))
    assert ids2 == [5, 6, 7, 8]
    assert (w.pending, w.claimed) == (2, 8)
    assert reactor.wait(w.mark_drained([1, 2, 3])) == 3
    assert reactor.wait(w.quarantine([(4, "22P05 nightowl_logs")])) == 1
    assert reactor.wait(w.release(1)) == 4
    assert (w.pending, w.claimed, w.quarantined, w.drained_kept) == (6, 0, 1, 3)
    states = {r[0]: (r[1], r[2]) for r in rows(w.path)}
    assert states[1] == (1, None)
    assert states[4] == (2, "22P05 nightowl_logs")
    assert states[5] == (0, None)
    # Released rows come back first.
    assert reactor.wait(w.claim(0, 100)) == [5, 6, 7, 8, 9, 10]
    assert reactor.wait(w.requeue_quarantined()) == 1
    assert w.quarantined == 0 and w.pending == 1
    counts = reactor.wait(w.recount())
    assert counts == {"pending": 1, "claimed": 6, "drained": 3, "quarantined": 0}


def test_release_all_at_startup(tmp_path):
    reactor = ThreadReactor()
    path = str(tmp_path / "b.sqlite")
    w = BufferWriter(path, reactor=reactor)
    w.open()
    for i in range(3):
        reactor.wait(w.append(b"[]"))
    reactor.wait(w.claim(7, 3))
    reactor.wait(w.close())
    w2 = BufferWriter(path, reactor=reactor)
    w2.open()
    assert (w2.pending, w2.claimed) == (0, 3)
    assert reactor.wait(w2.release(None)) == 3
    assert w2.pending == 3
    reactor.wait(w2.close())


def test_mark_drained_of_released_row_counts_right(writer):
    w, reactor = writer
    reactor.wait(w.append(b"[]"))
    reactor.wait(w.claim(0, 1))
    reactor.wait(w.release(0))
    assert reactor.wait(w.mark_drained([1])) == 1
    assert (w.pending, w.claimed, w.drained_kept) == (0, 0, 1)


def test_housekeeping_deletes_only_old_drained(writer):
    w, reactor = writer
    for i in range(5):
        reactor.wait(w.append(b"[]"))
    ids = reactor.wait(w.claim(0, 3))
    reactor.wait(w.mark_drained(ids[:2]))
    result = reactor.wait(w.housekeep(safety=3600))
    assert result["deleted"] == 0
    result = reactor.wait(w.housekeep(safety=-1))
    assert result["deleted"] == 2
    assert [r[0] for r in rows(w.path)] == [3, 4, 5]
    assert w.drained_kept == 0
    # ids are never reused
    reactor.wait(w.append(b"[]"))
    assert rows(w.path)[-1][0] == 6


def test_low_water_is_the_smallest_unfinished_id(writer):
    w, reactor = writer
    for i in range(6):
        reactor.wait(w.append(b"[]"))
    assert reactor.wait(w.claim(0, 2)) == [1, 2]
    reactor.wait(w.mark_drained([1]))
    assert reactor.wait(w.housekeep(safety=3600))["low_water"] == 2
    reactor.wait(w.mark_drained([2]))
    reactor.wait(w.claim(1, 4))                # 3-6 claimed
    reactor.wait(w.quarantine([(3, "x")]))
    assert reactor.wait(w.housekeep(safety=3600))["low_water"] == 4
    reactor.wait(w.mark_drained([4, 5, 6]))
    assert reactor.wait(w.housekeep(safety=-1))["low_water"] == 7  # all finished, even deleted
    assert w.low_water == 7


def test_housekeeping_deletes_in_chunks_until_done(writer, monkeypatch):
    w, reactor = writer
    monkeypatch.setattr(groupcommit, "DELETE_CHUNK", 7)
    for i in range(30):
        reactor.wait(w.append(b"[]"))
    ids = reactor.wait(w.claim(0, 30))
    reactor.wait(w.mark_drained(ids[:25]))
    commits = w.commits
    result = reactor.wait(w.housekeep(safety=-1))
    assert result["deleted"] == 25
    assert w.commits - commits >= 4   # 7 + 7 + 7 + 4, one transaction each
    assert [r[0] for r in rows(w.path)] == list(range(26, 31))
