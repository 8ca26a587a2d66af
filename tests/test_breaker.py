"""nightowl.drain.breaker (pure) and nightowl.pgerrors (pure)."""

import psycopg2

from nightowl import pgerrors
from nightowl.drain.breaker import QuarantineBreaker, key_of


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def breaker(**kw):
    clock = Clock()
    return QuarantineBreaker(clock=clock, backoff=lambda n: [1.0, 2.0, 4.0, 8.0][min(n, 3)],
                             **kw), clock


def test_key_of_reasons():
    assert key_of("22001 nightowl_requests") == ("22001", "nightowl_requests")
    assert key_of("invalid-json") is None


def test_opens_at_the_threshold_and_converts_this_batch_to_held():
    b, _ = breaker()
    for i in range(1, 5):
        b.quarantined("22001", "nightowl_requests", i)
    assert not b.holds("22001", "nightowl_requests")
    b.quarantined("22001", "nightowl_requests", 5)
    assert b.holds("22001", "nightowl_requests")
    q = [(i, "22001 nightowl_requests") for i in range(1, 6)] + [(9, "invalid-json")]
    keep, held, requeue = b.settle([], q, [6, 7], {})
    assert keep == [(9, "invalid-json")]           # poison stays poison
    assert held == [1, 2, 3, 4, 5, 6, 7]
    assert requeue == []
    assert b.delay() == 1.0
    assert [(s["sqlstate"], s["table"]) for s in b.state()] == [("22001", "nightowl_requests")]


def test_earlier_quarantines_are_requeued_once_when_it_opens():
    b, _ = breaker()
    for i in (1, 2):
        b.quarantined("22001", "t", i)
    assert b.settle([], [(1, "22001 t"), (2, "22001 t")], [], {}) == (
        [(1, "22001 t"), (2, "22001 t")], [], [])
    for i in (3, 4, 5):
        b.quarantined("22001", "t", i)
    keep, held, requeue = b.settle([], [(i, "22001 t") for i in (3, 4, 5)], [], {})
    assert (keep, held, requeue) == ([], [3, 4, 5], [1, 2])
    assert b.holds("22001", "t")
    assert b.settle([], [], [1, 2, 3, 4, 5], {})[2] == []   # not requeued twice
    assert b.delay() == 2.0                            # backoff grows per held batch


def test_a_table_that_still_takes_rows_has_a_sporadic_problem():
    b, _ = breaker()
    for i in range(1, 5):
        b.quarantined("22001", "t", i)
    b.settle([10], [(i, "22001 t") for i in range(1, 5)], [], {"t": 3})
    b.quarantined("22001", "t", 5)
    assert not b.holds("22001", "t")    # the count restarted after rows reached t


def test_old_quarantines_fall_out_of_the_window():
    b, clock = breaker(window=60.0)
    for i in range(1, 5):
        b.quarantined("22001", "t", i)
    clock.now = 61.0
    b.quarantined("22001", "t", 5)
    assert not b.holds("22001", "t")


def test_closes_once_a_batch_goes_through_without_the_error():
    b, _ = breaker()
    for i in range(1, 6):
        b.quarantined("22001", "t", i)
    b.settle([], [(i, "22001 t") for i in range(1, 6)], [], {})
    assert b.holds("22001", "t")
    b.settle([], [], [1, 2, 3, 4, 5], {})
    assert b.state()
    assert b.holds("22001", "t")   # the next probe fails again
    b.settle([], [], [1, 2, 3, 4, 5], {})
    keep, held, requeue = b.settle([1, 2, 3, 4, 5], [], [], {"t": 5})
    assert (keep, held, requeue, b.state(), b.attempt) == ([], [], [], [], 0)


def test_sporadic_poison_in_one_batch_is_quarantined_not_held_forever():
    b, _ = breaker()
    for i in range(1, 6):                 # 5 culprits in one big batch ...
        b.quarantined("22001", "t", i)
    assert b.holds("22001", "t")          # ... opened it mid-batch, 6-7 held
    q = [(i, "22001 t") for i in range(1, 6)]
    keep, held, requeue = b.settle([10, 11], q, [6, 7], {"t": 40})   # ... but t took rows
    assert (keep, held, requeue, b.state()) == (q, [6, 7], [], [])


def test_pgerrors_describe_connection_failures():
    class E(psycopg2.OperationalError):
        pass

    def err(text):
        return E(text)
    assert pgerrors.describe(err('connection to server at "h", port 5432 failed: FATAL:  '
                                 'role "nightowl" does not exist\n')) == \
        'role missing (SQLSTATE 28000): role "nightowl" does not exist'
    assert pgerrors.describe(err('connection to server at "h", port 5432 failed: FATAL:  '
                                 'database "x" does not exist\n')) == \
        'database missing (SQLSTATE 3D000): database "x" does not exist'
    assert pgerrors.describe(err('connection to server at "h", port 5432 failed: FATAL:  '
                                 'password authentication failed for user "u"\n')).startswith(
        "authentication failed (SQLSTATE 28P01): password authentication failed")
    assert pgerrors.describe(err('connection to server at "h", port 1 failed: Connection '
                                 'refused\n\tIs the server running on that host?')) == \
        'connection refused (SQLSTATE 08001): connection to server at "h", port 1 failed: ' \
        'Connection refused'
    assert pgerrors.kind("28000") == pgerrors.UNREACHABLE
    assert pgerrors.kind("42P01") == pgerrors.SCHEMA_MISSING
    assert pgerrors.kind("42501") == pgerrors.PERMISSION_DENIED


def test_pgerrors_never_shows_data_values_or_non_postgres_messages():
    class DataError(psycopg2.DataError):
        pgcode = "22P02"
    e = DataError('invalid input syntax for type uuid: "secret-customer-value"\nLINE 1')
    assert pgerrors.describe(e) == "data error (SQLSTATE 22P02): invalid input syntax for type uuid"
    assert pgerrors.describe(ValueError("payload says hello")) == "ValueError"
