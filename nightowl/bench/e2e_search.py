"""
The rate search of ``nightowl bench e2e`` (nightowl.bench.e2e), as pure
rules: when a step is flat and sustained, how the rates are stepped and
bisected, and which rates are confirmed.  Tested in tests/test_bench_e2e.py.
"""


def flat_bound(rate, batch_size):
    """How far the backlog may rise over a step and still count as flat."""
    return max(2 * batch_size, int(rate))


def is_flat(backlog_start, backlog_end, rate, batch_size):
    """The buffer kept pace: the backlog rose by no more than L{flat_bound}."""
    return backlog_end - backlog_start <= flat_bound(rate, batch_size)


def is_sustained(target_rate, achieved_rate, ok, started):
    """The generator really sent at the rate and every frame was acked."""
    return achieved_rate >= 0.95 * target_rate and started > 0 and ok == started


def rate_search(probe, start, step, max_rate):
    """
    Step up from ``start`` by ``step`` while ``probe(rate)`` is true (and
    the rate is at most ``max_rate``); after the first failure bisect once
    between the last good and the failing rate.  Returns ``(best, tried)``:
    best is the highest rate that passed (None if none did) and tried the
    ``[(rate, passed)]`` in order.
    """
    tried = []
    best = None
    rate = start
    while rate <= max_rate:
        ok = bool(probe(rate))
        tried.append((rate, ok))
        if not ok:
            low = best if best is not None else 0
            mid = (low + rate) // 2
            # one bisection, rounded to 100/s, only when it lands strictly inside
            mid = mid - mid % 100
            if mid > low and mid < rate:
                ok_mid = bool(probe(mid))
                tried.append((mid, ok_mid))
                if ok_mid:
                    best = mid
            break
        best = rate
        rate += step
    return best, tried


def confirmation_rates(best, tried, attempts=3):
    """
    The rates to confirm, in order, until one holds: the best rate of the
    search, then the lower rates that passed it, highest first (``attempts``
    at most).  A search step is short; a rate that passed it can still fail
    the longer confirmation, and the rate that does hold is the figure.
    """
    if best is None:
        return []
    lower = sorted({rate for rate, ok in tried if ok and rate < best}, reverse=True)
    return ([best] + lower)[:attempts]
