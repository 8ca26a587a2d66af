"""nightowl.rollups.plan without a database: which tier reads which part of
a range once hours are partial (schema 0022) and a span is kept."""

from datetime import datetime, timedelta, timezone

from nightowl.rollups import plan, span

D = datetime(2024, 5, 3, tzinfo=timezone.utc)
H = timedelta(hours=1)
M = timedelta(minutes=1)


def covered(segs):
    """Every minute the segments read, once per tier row kind (a span or an
    hour segment counts its minutes)."""
    out = []
    for _tier, start, end in segs:
        t = start
        while t < end:
            out.append(t)
            t += M
    return out


def test_a_partial_current_hour_is_its_row_plus_the_live_minutes():
    now = D + 10 * H + 37 * M
    segs = plan.segments(now - 3 * H, now)
    got = plan.read_partial(segs, set(), {D + 10 * H: D + 10 * H + 35 * M})
    assert sorted(got) == [("hour", D + 8 * H, D + 10 * H), ("hour", D + 10 * H, D + 11 * H),
                           ("minute", D + 7 * H + 37 * M, D + 8 * H),
                           ("minute", D + 10 * H + 35 * M, now)]


def test_a_stale_hour_wins_over_its_marker():
    now = D + 10 * H + 37 * M
    segs = plan.segments(now - 3 * H, now)
    got = plan.read_partial(segs, {D + 10 * H}, {D + 10 * H: D + 10 * H + 35 * M})
    assert got == plan.read_pending(segs, [D + 10 * H])
    assert ("minute", D + 10 * H, now) in got


def test_a_cut_off_after_the_range_end_is_not_used():
    # the hour row holds minutes past the range's end: read the minutes instead
    until = D + 10 * H + 20 * M
    segs = plan.segments(D + 9 * H, until)
    assert plan.read_partial(segs, set(), {D + 10 * H: D + 10 * H + 35 * M}) == segs


def test_a_partial_hour_inside_a_day_reads_that_day_from_hours():
    segs = [("day", D, D + 24 * H)]
    got = plan.read_partial(segs, set(), {D + 5 * H: D + 5 * H + 40 * M})
    assert got == [("hour", D, D + 5 * H), ("hour", D + 5 * H, D + 6 * H),
                   ("minute", D + 5 * H + 40 * M, D + 6 * H), ("hour", D + 6 * H, D + 24 * H)]


def test_the_span_replaces_its_hours_once_and_only_when_usable():
    segs = [("hour", D, D + 30 * H)]
    window = (D + 5 * H, D + 28 * H)
    got = plan.use_span(segs, [window], set())
    assert got == [("hour", D, D + 5 * H), ("span", D + 5 * H, D + 28 * H),
                   ("hour", D + 28 * H, D + 30 * H)]
    assert sorted(covered(got)) == covered(segs)
    assert plan.use_span(segs, [window], {D + 7 * H}) == segs        # a stale hour inside
    assert plan.use_span(segs, [window], {D + 29 * H}) == got        # outside: no matter
    assert plan.use_span(segs, [], set()) == segs
    assert plan.use_span([("hour", D + 6 * H, D + 30 * H)], [window], set()) == [
        ("hour", D + 6 * H, D + 30 * H)]                              # not held whole
    # the longest window that fits wins; a shorter one where the longer does not fit
    longer = (D + 4 * H, D + 28 * H)
    assert plan.use_span(segs, [longer, window], set())[1] == ("span", D + 4 * H, D + 28 * H)
    assert plan.use_span([("hour", D + 5 * H, D + 30 * H)], [longer, window], set())[0] == (
        "span", D + 5 * H, D + 28 * H)


def test_the_span_windows_follow_the_cut_off():
    assert span.targets(D + 10 * H + 12 * M) == [(D - 14 * H, D + 10 * H),
                                                 (D - 13 * H, D + 10 * H)]
    assert span.targets(D + 10 * H) == span.targets(D + 10 * H + 59 * M)


def test_where_reads_a_span_by_its_exact_window():
    table, cond, args = plan.where("span", D, D + 23 * H)
    assert table == span.TABLE and cond == "bucket = %s AND until = %s" and args == [D, D + 23 * H]
    assert plan.where("hour", D, D + H)[0] == "nightowl_rollups_hour"
