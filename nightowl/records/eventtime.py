"""
Event time: which moment a record is stored under, and its ``created_at`` text.

A record's ``timestamp`` (Unix seconds) is used when it lies within
``PAST_LIMIT`` before and ``FUTURE_LIMIT`` after the drain clock; otherwise
the drain clock is used and the row is marked ``time_guarded``.
``format_time`` writes UTC with microseconds; ``created_text`` and the
``sec_text`` cache are the generated encoders' shortcut to the same text
(nightowl.records.codegen inlines the cache lookup).  Pure, no I/O.
"""

import time

PAST_LIMIT = 31622400.0   # ~366 days
FUTURE_LIMIT = 86400.0    # 1 day
_sec_cache = {}


def format_time(ts):
    """Unix seconds -> 'YYYY-MM-DD HH:MM:SS.ffffff+00' (UTC, microseconds)."""
    us = int(round(ts * 1000000.0))
    sec, frac = divmod(us, 1000000)
    prefix = _sec_cache.get(sec)
    if prefix is None:
        if len(_sec_cache) > 8192:
            _sec_cache.clear()
        g = time.gmtime(sec)
        prefix = _sec_cache[sec] = "%04d-%02d-%02d %02d:%02d:%02d." % g[:6]
    return "%s%06d+00" % (prefix, frac)


def event_time(raw, now):
    """(seconds used for created_at, guarded?) from a record's ``timestamp``."""
    t = type(raw)
    if t is float or t is int:
        ts = raw
    elif t is str:
        try:
            ts = float(raw)
        except ValueError:
            return now, True
    else:
        return now, True
    try:
        if now - PAST_LIMIT <= ts <= now + FUTURE_LIMIT:
            return float(ts), False
    except OverflowError:
        pass
    return now, True


#: repr(ts) before the '.' -> 'YYYY-MM-DD HH:MM:SS.' (bounded)
sec_text = {}


def created_text(ts, stamp):
    """format_time(ts) for a float ``ts`` whose repr is ``stamp``.

    For 2**20 <= ts < 2**32 whose repr has at most 6 decimals, round(ts * 1e6)
    is exactly those digits (ts is within half an ulp, <= 2.4e-7, of its repr),
    so created_at is the second's text plus the decimals: the encoders look
    ``sec_text`` up themselves and call here only on a miss.
    """
    text = format_time(ts)
    sec, _, frac = stamp.partition(".")
    if len(frac) <= 6 and sec.isdigit() and 1048576 <= int(sec) < 4294967296:
        if len(sec_text) >= 8192:
            sec_text.clear()
        sec_text[sec] = text[:20]
    return text
