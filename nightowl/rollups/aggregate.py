"""
Records -> rollup rows: which kind, group, label and error rule each SDK
record feeds (``KINDS``), and the in-memory fold of a batch into minute
rows, re-collapsed into hour and day rows.

Pure functions, no I/O.  The drain feeds the decoded records of each payload
(``fold``); ``nightowl rollups rebuild`` feeds records rebuilt from raw rows
(``add_record``), so both paths share every rule here.  The minute of a
record is the minute of its raw row's ``created_at`` (same event-time guard).

A fold is a dict ``(bucket, kind, group_key) -> Row`` (bucket: Unix seconds,
the start of the minute / hour / UTC day).
"""

import hashlib

from nightowl import records
from nightowl.rollups import sketch
from nightowl.rollups.rows import Row, columns, merge, tiers  # noqa: F401 (re-exported)

LABEL_MAX = 1024        # characters kept of a label
KEY_MAX = 256           # longer group keys keep a prefix and an md5 of the whole
ERROR_LEVELS = frozenset(("error", "critical", "alert", "emergency"))


def text(v):
    """A readable, storable label: str, no NUL, valid UTF-8, <= LABEL_MAX chars."""
    if type(v) is str and v.isascii() and len(v) <= LABEL_MAX and "\x00" not in v:
        return v    # the common case (isascii is O(1) in CPython)
    if type(v) is not str:
        v = "" if v is None else str(v)
    if len(v) > LABEL_MAX:
        v = v[:LABEL_MAX]
    return records.clean(v)


def key(*parts):
    """A group key from its parts (sanitised; long keys are hashed)."""
    k = "|".join(text(p) for p in parts)
    if len(k) > KEY_MAX:
        k = k[:200] + "~" + hashlib.md5(records.to_utf8(k)).hexdigest()
    return k


def _duration(rec):
    d = rec.get("duration")
    if type(d) is int and records.INT64_MIN <= d <= records.INT64_MAX:
        return d
    return records.to_int(d)


def _status_class(code):
    code = records.to_int(code)
    if code is None or code < 100 or code > 599:
        return "other"
    return "{}xx".format(code // 100)


def _methods(rec):
    methods = rec.get("route_methods")
    if isinstance(methods, list) and methods:
        return "|".join(text(m) for m in methods)
    return text(rec.get("method")).upper()


def _request(rec):
    cls = _status_class(rec.get("status_code"))
    methods = _methods(rec)
    path = text(rec.get("route_path")) or text(rec.get("url"))
    label = text("{} {}".format(methods, path).strip())
    group = text(rec.get("_group")) or hashlib.md5(records.to_utf8(label)).hexdigest()
    return (("request", key(group, methods, cls), label, {"status_class": cls}, cls == "5xx"),)


def _user_request(rec):
    uid = text(rec.get("user"))
    if not uid:
        return ()
    return (("user_request", key(uid), uid, None, _status_class(rec.get("status_code")) == "5xx"),)


def _query(rec):
    sql = text(rec.get("sql"))
    conn = text(rec.get("connection"))
    group = text(rec.get("_group")) or hashlib.md5(records.to_utf8(conn + "," + sql)).hexdigest()
    return (("query", key(group), sql, {"connection": conn}, False),)


def _job(rec):
    name = text(rec.get("name"))
    queue = text(rec.get("queue"))
    status = text(rec.get("status")) or ("queued" if rec.get("t") == "queued-job" else "")
    return (("job", key(name, queue, status), name, {"queue": queue, "status": status},
             status == "failed"),)


def _outgoing(rec):
    host = text(rec.get("host"))
    cls = _status_class(rec.get("status_code"))
    return (("outgoing", key(host, cls), host, {"status_class": cls},
             cls in ("4xx", "5xx", "other")),)


def _cache(rec):
    store = text(rec.get("store"))
    kind = text(rec.get("type"))
    return (("cache", key(store, kind), store, {"type": kind}, "fail" in kind),)


def _command(rec):
    name = text(rec.get("name")) or text(rec.get("command"))
    code = records.to_int(rec.get("exit_code"))
    return (("command", key(text(rec.get("_group")) or name), name, None,
             code is not None and code != 0),)


def _scheduled(rec):
    name = text(rec.get("name"))
    cron = text(rec.get("cron"))
    return (("scheduled_task", key(text(rec.get("_group")) or key(name, cron)), name,
             {"cron": cron}, text(rec.get("status")) == "failed"),)


def _mail(rec):
    cls = text(rec.get("class")) or text(rec.get("mailer"))
    return (("mail", key(text(rec.get("_group")) or cls), cls, None, rec.get("failed") is True),)


def _notification(rec):
    cls = text(rec.get("class"))
    channel = text(rec.get("channel"))
    return (("notification", key(text(rec.get("_group")) or cls, channel), cls,
             {"channel": channel}, rec.get("failed") is True),)


def _exception(rec):
    handled = records.c_bool(rec.get("handled"))
    return (("exception", key(records.fingerprint(rec)), text(rec.get("class")), None,
             handled == "f"),)


def _log(rec):
    level = text(rec.get("level")).lower()
    return (("log", key(level), level, None, level in ERROR_LEVELS),)


#: record type -> (function rec -> ((kind, group_key, label, attrs, error), ...), has duration)
KINDS = {
    "request": (lambda rec: _request(rec) + _user_request(rec), True),
    "query": (_query, True),
    "queued-job": (_job, True),
    "job-attempt": (_job, True),
    "outgoing-request": (_outgoing, True),
    "cache-event": (_cache, True),
    "command": (_command, True),
    "scheduled-task": (_scheduled, True),
    "mail": (_mail, True),
    "notification": (_notification, True),
    "exception": (_exception, False),
    "log": (_log, False),
}


#: record type -> the record keys its KINDS function reads (the memo's key;
#: tests/test_rollup_aggregate.py checks that every key read is listed)
FIELDS = {
    "request": ("status_code", "route_methods", "method", "route_path", "url", "_group", "user"),
    "query": ("sql", "connection", "_group"),
    "queued-job": ("name", "queue", "status", "t"),
    "job-attempt": ("name", "queue", "status", "t"),
    "outgoing-request": ("host", "status_code"),
    "cache-event": ("store", "type"),
    "command": ("name", "command", "exit_code", "_group"),
    "scheduled-task": ("name", "cron", "_group", "status"),
    "mail": ("class", "mailer", "_group", "failed"),
    "notification": ("class", "channel", "_group", "failed"),
    "exception": ("handled", "class", "code", "file", "line", "_group"),
    "log": ("level",),
}
_PLAIN = frozenset((str, int, bool, type(None)))
_PLAIN_OR_LIST = _PLAIN | {list}
MEMO_MAX = 65536        # (type, fields) -> groups entries kept; cleared when full
_memo = {}


def signature(t, rec):
    """A hashable key equal only for records the KINDS function of ``t`` maps
    to the same groups (values with their exact types, lists of plain values
    as (type, value) pairs; floats and objects have no signature: None)."""
    vals = tuple(map(rec.get, FIELDS[t]))
    types = tuple(map(type, vals))
    if not _PLAIN.issuperset(types):
        if not _PLAIN_OR_LIST.issuperset(types):
            return None
        frozen = []
        for v in vals:
            if type(v) is list:
                v = _frozen(v)
                if v is None:
                    return None
            frozen.append(v)
        vals = tuple(frozen)
    return (t, vals, types)


def _frozen(v):
    if len(v) > 16 or any(type(x) not in _PLAIN for x in v):
        return None
    return tuple((type(x), x) for x in v)


def groups_of(t, rec, groups):
    """``groups(rec)``, memoised by ``signature``: most records of a batch
    repeat a few routes, queries and jobs, so their keys and labels are built
    once (bounded: cleared at MEMO_MAX entries)."""
    sig = signature(t, rec)
    if sig is None:
        return groups(rec)
    got = _memo.get(sig)
    if got is None:
        got = groups(rec)
        if len(_memo) >= MEMO_MAX:
            _memo.clear()
        _memo[sig] = got
    return got


def minute_of(ts):
    """Start of the minute (Unix seconds) of the created_at written for ``ts``."""
    return (int(round(ts * 1000000.0)) // 60000000) * 60


def add_record(fold, rec, minute):
    """Count one record (type ``rec['t']``) into ``fold`` at ``minute``."""
    t = rec.get("t")
    spec = KINDS.get(t)
    if spec is None:
        return
    groups, timed = spec
    duration = _duration(rec) if timed else None
    for kind, group_key, label, attrs, error in groups_of(t, rec, groups):
        k = (minute, kind, group_key)
        row = fold.get(k)
        if row is None:
            row = fold[k] = Row(label, attrs)
        row.add(duration, error)


def fold(recs, now, out=None):
    """Fold one payload's decoded records; ``now``: the drain clock (seconds)."""
    return fold_many((recs,), now, out)


def fold_many(payloads, now, out=None):
    """Fold the decoded records of several payloads (a batch) into one fold
    (``add_record`` inlined: this runs once per record of every batch)."""
    if out is None:
        out = {}
    event_time = records.event_time
    index = sketch.index
    kinds = KINDS
    get = out.get
    for recs in payloads:
        for rec in recs:
            if type(rec) is not dict:
                continue
            t = rec.get("t")
            spec = kinds.get(t)
            if spec is None:
                continue
            groups, timed = spec
            ts, _ = event_time(rec.get("timestamp"), now)
            minute = (int(round(ts * 1000000.0)) // 60000000) * 60
            d = _duration(rec) if timed else None
            i = None if d is None else index(d)
            for kind, group_key, label, attrs, error in groups_of(t, rec, groups):
                k = (minute, kind, group_key)
                row = get(k)
                if row is None:
                    row = out[k] = Row(label, attrs)
                # Row.add, inlined
                row.count += 1
                if error:
                    row.errors += 1
                if d is not None:
                    row.sum_us += d
                    if row.min_us is None or d < row.min_us:
                        row.min_us = d
                    if row.max_us is None or d > row.max_us:
                        row.max_us = d
                    s = row.sketch
                    if s is None:
                        row.sketch = {i: 1}
                    else:
                        s[i] = s.get(i, 0) + 1
    return out
