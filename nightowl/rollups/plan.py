"""
Which tier answers which part of a range: the plan of a rollup read, as a
list of ``(tier, start, end)`` segments (``nightowl.rollups.query`` turns
it into one UNION ALL).

``segments`` cuts a range into whole UTC days from the day table, whole
hours from the hour table and the minutes at the edges from the minute
table.  ``fall_back`` reads an edge whose minutes (hours) are already pruned
by tier retention from whole hours (days) instead.  ``read_pending`` reads
every hour not yet derived (and its day) from the finer tier: exact, but an
hour of minutes is up to 60 rows per group.

``read_partial`` (schema 0022) does better for the hours the deriver wrote
from their settled minutes only (``nightowl.rollups.derive``): such an hour
is its hour row plus the few live minutes after the deriver's cut-off, as
long as no batch has written one of its minutes before that cut-off since
(``derive.hour_states`` says which hours are still stale).  ``plan`` puts
it together for ``top``: a range longer than ``WHOLE_HOURS_OVER`` starts at
a whole UTC hour, as its series steps by the hour, and the last 24 (or 23)
whole hours come from one span row per group (``use_span``,
``nightowl.rollups.span``), so a 24 h read is one span row, one or two hour
rows and a few live minutes per group instead of 23 hours and ~60 minutes.
"""

from datetime import datetime, timedelta, timezone

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)

#: a range longer than this starts at a whole UTC hour (query.choose_step's
#: minute/hour boundary: its series already steps by the hour)
WHOLE_HOURS_OVER = timedelta(hours=6)


def floor_time(t, width):
    s = int((t - EPOCH).total_seconds())
    return EPOCH + timedelta(seconds=s - s % width)


def ceil_time(t, width):
    f = floor_time(t, width)
    return f if f == t else f + timedelta(seconds=width)


def segments(since, until):
    """[(tier, start, end)] covering the minutes that overlap [since, until)."""
    lo, hi = floor_time(since, 60), ceil_time(until, 60)
    if hi <= lo:
        return []
    h_lo, h_hi = ceil_time(lo, 3600), floor_time(hi, 3600)
    if h_hi <= h_lo:
        return [("minute", lo, hi)]
    out = [("minute", lo, h_lo), ("minute", h_hi, hi)]
    d_lo, d_hi = ceil_time(h_lo, 86400), floor_time(h_hi, 86400)
    if d_hi > d_lo:
        out += [("hour", h_lo, d_lo), ("hour", d_hi, h_hi), ("day", d_lo, d_hi)]
    else:
        out.append(("hour", h_lo, h_hi))
    return [s for s in out if s[2] > s[1]]


COARSER = (("minute", "hour", 3600), ("hour", "day", 86400))


def fall_back(segs, oldest):
    """``segs`` with every minute (hour) segment that starts before the oldest
    minute (hour) row still kept, ``oldest[tier]``, read from the whole hours
    (days) around it instead: the range widens at that edge, but nothing pruned
    is missed and nothing is counted twice (overlaps are merged per tier)."""
    segs = list(segs)
    for fine, coarse, width in COARSER:
        horizon = oldest.get(fine)
        out = []
        for tier, start, end in segs:
            if tier == fine and (horizon is None or start < horizon):
                out.append((coarse, floor_time(start, width), ceil_time(end, width)))
            else:
                out.append((tier, start, end))
        segs = out
    merged = []
    for tier, start, end in sorted(segs, key=lambda s: (s[0], s[1])):
        if merged and merged[-1][0] == tier and start <= merged[-1][2]:
            merged[-1] = (tier, merged[-1][1], max(end, merged[-1][2]))
        else:
            merged.append((tier, start, end))
    return _clip_finer(merged)


def _clip_finer(segs):
    """Cut out of every segment the parts a coarser tier's segment already
    covers: a minute edge widened into a whole day must not be read again
    from the minutes or hours inside that day."""
    rank = {"minute": 0, "hour": 1, "day": 2}
    out = []
    for tier, start, end in segs:
        pieces = [(start, end)]
        for other, o_start, o_end in segs:
            if rank[other] <= rank[tier]:
                continue
            cut = []
            for p_start, p_end in pieces:
                if o_end <= p_start or o_start >= p_end:
                    cut.append((p_start, p_end))
                    continue
                if p_start < o_start:
                    cut.append((p_start, o_start))
                if o_end < p_end:
                    cut.append((o_end, p_end))
            pieces = cut
        out.extend((tier, p_start, p_end) for p_start, p_end in pieces)
    return out


def read_pending(segs, hours):
    """``segs`` with every pending hour (``hours``, aware datetimes) read from
    its minutes: a day segment holding one becomes that day's hour segment,
    and a pending hour inside an hour segment becomes a minute segment."""
    hours = sorted(set(hours))
    if not hours:
        return list(segs)
    hour, day = timedelta(hours=1), timedelta(days=1)
    days = {floor_time(h, 86400) for h in hours}
    out = []
    for tier, start, end in segs:
        if tier != "day":
            out.append((tier, start, end))
            continue
        t = start
        while t < end:
            if t in days:
                out.append(("hour", t, t + day))
            else:
                out.append(("day", t, t + day))
            t += day
    segs, out = out, []
    for tier, start, end in segs:
        inside = [h for h in hours if start <= h < end] if tier == "hour" else []
        t = start
        for h in inside:
            if h > t:
                out.append(("hour", t, h))
            out.append(("minute", h, h + hour))
            t = h + hour
        if t < end:
            out.append((tier, t, end))
    return out


def read_partial(segs, stale, partial):
    """``segs`` as ``read_pending`` with ``stale`` (hours read from minutes),
    except the hours of ``partial`` ({hour: cut-off}, not stale), each read as
    its hour row plus its minutes from the cut-off on; a minute segment at an
    hour's start inside a partial hour (the range's current hour) likewise,
    when it reaches the cut-off."""
    stale = set(stale)
    partial = {h: x for h, x in partial.items() if h not in stale}
    out = []
    for tier, start, end in read_pending(segs, sorted(stale | set(partial))):
        cut = partial.get(start) if tier == "minute" else None
        if cut is not None and cut <= end <= start + HOUR:
            out.append(("hour", start, start + HOUR))
            if end > cut:
                out.append(("minute", cut, end))
        else:
            out.append((tier, start, end))
    return out


def use_span(segs, windows, unusable):
    """``segs`` with the hours of one span window (the first of ``windows``,
    [(start, until)], that fits) read as one ``span`` segment: one hour
    segment holds the whole window and no hour in it is ``unusable`` (stale
    or partial)."""
    for start, until in windows:
        if any(start <= h < until for h in unusable):
            continue
        for i, (tier, s, e) in enumerate(segs):
            if tier == "hour" and s <= start and until <= e:
                cut = [seg for seg in (("hour", s, start), ("span", start, until),
                                       ("hour", until, e)) if seg[2] > seg[1]]
                return list(segs[:i]) + cut + list(segs[i + 1:])
    return list(segs)


def where(tier, start, end):
    """``(table, condition, args)`` selecting a segment's rows (before the
    kind / environment / group filters)."""
    from nightowl.rollups import span
    from nightowl.rollups.write import TABLES
    if tier == "span":
        return span.TABLE, "bucket = %s AND until = %s", [start, end]
    return TABLES[tier], "bucket >= %s AND bucket < %s", [start, end]


def plan(conn, kind, since, until, environment=None):
    """The segments ``top`` reads for [since, until) (``until`` given), after
    tier retention and derivation; [] for an empty range."""
    from nightowl.rollups import derive, span
    from nightowl.rollups.query import oldest
    if until - since > WHOLE_HOURS_OVER:
        since = floor_time(since, 3600)
    segs = segments(since, until)
    if not segs:
        return []
    segs = fall_back(segs, oldest(conn, kind))
    lo, hi = min(s[1] for s in segs), max(s[2] for s in segs)
    stale, partial = derive.hour_states(conn, lo, hi, environment)
    segs = read_partial(segs, stale, partial)
    return use_span(segs, span.windows(conn.cursor(), kind), stale | set(partial))
