"""
nightowl.buffer.states and nightowl.buffer.reader on a plain connection:
each transition moves only the rows in the state it starts from, and the
read-only side loads no Twisted (the drain workers import it at start).
"""

import subprocess
import sys

import pytest

from nightowl.buffer import states
from nightowl.buffer.reader import count_states, low_water, oldest_pending_age
from nightowl.buffer.schema import add_row, connect


@pytest.fixture
def conn(tmp_path):
    conn = connect(str(tmp_path / "b.sqlite"))
    yield conn
    conn.close()


def state_of(conn, id_):
    return conn.execute("SELECT state FROM payloads WHERE id = ?", (id_,)).fetchone()[0]


def test_claim_is_bounded_in_bytes_and_takes_at_least_one_row(conn):
    ids = [add_row(conn, b"[" + b"1," * 49 + b"1]", received_at=1.0) for _ in range(5)]
    assert states.claim(conn, 3, 10, now=2.0, max_bytes=250) == ids[:2]
    assert {state_of(conn, i) for i in ids[:2]} == {states.claimed_by(3)}
    assert states.claim(conn, 4, 10, now=2.0, max_bytes=1) == ids[2:3]   # one row anyway
    assert states.claim(conn, 5, 1, now=2.0) == ids[3:4]
    assert count_states(conn) == {"pending": 1, "claimed": 4, "drained": 0, "quarantined": 0}


def test_claim_takes_only_pending_rows_in_its_range_and_by_id_when_far_apart(conn):
    def row(state=states.PENDING):
        return add_row(conn, b"[]", state=state)
    a = row()
    quarantined = [row(states.QUARANTINED) for _ in range(10)]   # far more than the claim
    b, c = row(), row()
    other = row(states.claimed_by(7))
    d = row()
    drained = row(states.DRAINED)
    e = row()
    assert states.claim(conn, 1, 3, now=2.0) == [a, b, c]          # by id: 12 rows apart
    assert states.claim(conn, 2, 10, now=2.0) == [d, e]            # the range, skipping two
    assert [state_of(conn, i) for i in (a, b, c, d, e)] == [states.claimed_by(1)] * 3 + [
        states.claimed_by(2)] * 2
    assert {state_of(conn, i) for i in quarantined} == {states.QUARANTINED}
    assert (state_of(conn, other), state_of(conn, drained)) == (states.claimed_by(7),
                                                                states.DRAINED)
    assert states.claim(conn, 3, 10, now=2.0) == []


def test_quarantine_counts_by_origin_and_skips_finished_rows(conn):
    pending = add_row(conn, b"[]")
    claimed = add_row(conn, b"[]", state=states.claimed_by(0))
    drained = add_row(conn, b"[]", state=states.DRAINED)
    assert states.quarantine(conn, [(pending, "x"), (claimed, "y" * 500), (drained, "z"),
                                    (999, "gone")], now=5.0) == (1, 1)
    assert state_of(conn, drained) == states.DRAINED
    error, = conn.execute("SELECT error FROM payloads WHERE id = ?", (claimed,)).fetchone()
    assert error == "y" * states.ERROR_CHARS
    assert states.quarantine(conn, [(pending, "again")], now=6.0) == (0, 0)


def test_mark_release_requeue_and_expiry_move_only_their_own_rows(conn):
    a, b, c, d = (add_row(conn, b"[]", received_at=float(i)) for i in range(4))
    assert states.claim(conn, 0, 2, now=1.0) == [a, b]
    assert states.claim(conn, 1, 1, now=1.0) == [c]
    assert states.release(conn, 1, now=2.0) == 1          # worker 1's claim only
    assert state_of(conn, c) == states.PENDING and state_of(conn, a) == states.claimed_by(0)
    assert states.mark_drained(conn, [a, c], now=3.0) == (1, 1)   # released, then reported
    assert states.release(conn, None, now=3.0) == 1       # every worker's: b
    states.quarantine(conn, [(b, "bad"), (d, "bad")], now=3.0)
    assert states.requeue(conn, [b, a], now=4.0) == 1     # a is drained, not quarantined
    assert state_of(conn, b) == states.PENDING
    assert low_water(conn) == b
    assert oldest_pending_age(conn, now=10.0) == 9.0      # b was received at 1.0
    assert states.expire_quarantine(conn, before=3.5) == 1   # d
    assert states.delete_drained(conn, before=3.5, limit=1) == 1
    assert states.delete_drained(conn, before=3.5, limit=1) == 1
    assert count_states(conn) == {"pending": 1, "claimed": 0, "drained": 0, "quarantined": 0}
    assert states.requeue(conn, None, now=5.0) == 0


def test_the_read_side_loads_no_twisted():
    code = ("import sys, nightowl.buffer.reader, nightowl.drain.worker; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'twisted'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
