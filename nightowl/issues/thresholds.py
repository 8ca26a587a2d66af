"""
Duration thresholds and the per-batch aggregation of slow records.

The table ``nightowl_thresholds (kind, target, duration_ms)`` holds one
default per kind (target ``''``) and overrides per target; an override wins
over the default, whether higher (it suppresses) or lower (it triggers).

Kinds, the record type each reads and the target it groups by:

==============  ================  ==========================================
kind            record ``t``      target
==============  ================  ==========================================
request         request           ``"<route methods joined by |> <route path>"``,
                                  e.g. ``GET|HEAD /api/users``; a request no
                                  route matched: ``"<METHOD> (no route)"``
query           query             the SQL, normalised (``normalise_sql``)
job             job-attempt       the job class (``name``)
outgoing        outgoing-request  the host
command         command           the command name (``name``)
scheduled_task  scheduled-task    the task (``name``)
==============  ================  ==========================================

A record triggers when its ``duration`` (microseconds) is at or above its
threshold.  ``aggregate`` is pure: decoded records + a ``Thresholds`` ->
``{(kind, target): [count, users, first_ts, last_ts, threshold_ms, worst_us,
latest_ts, deploy]}``.  ``ThresholdCache`` reloads the table at most every
``interval`` seconds (30 s: running workers pick up a change within that).
"""

import hashlib
import re
import time

import psycopg2
from twisted.logger import Logger

from nightowl import records as _records

KINDS = ("request", "query", "job", "outgoing", "command", "scheduled_task")
#: spellings the CLI also accepts
ALIASES = {"route": "request", "outgoing_request": "outgoing", "outgoing-request": "outgoing",
           "scheduled-task": "scheduled_task", "task": "scheduled_task"}
#: target text longer than this is cut (the hash is of the cut text)
TARGET_MAX = 2000
RELOAD_INTERVAL = 30.0


def canonical_kind(text):
    """'request' .. 'scheduled_task' for a kind or alias; ValueError otherwise."""
    kind = ALIASES.get(text.strip().lower(), text.strip().lower())
    if kind not in KINDS:
        raise ValueError("unknown kind {!r}: expected one of {}".format(text, ", ".join(KINDS)))
    return kind


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*\Z", re.I)
_UNIT_MS = {None: 1, "ms": 1, "s": 1000, "m": 60000}
DURATION_MAX_MS = 2147483647  # nightowl_issues.threshold_ms is an integer


def parse_duration(text):
    """'500ms' | '2s' | '1.5s' | '1m' | '250' (ms) -> whole milliseconds > 0."""
    m = _DURATION.match(text or "")
    if not m:
        raise ValueError("bad duration {!r}: expected e.g. 500ms, 2s or a number of ms".format(text))
    ms = round(float(m.group(1)) * _UNIT_MS[m.group(2) and m.group(2).lower()])
    if ms <= 0 or ms > DURATION_MAX_MS:
        raise ValueError("bad duration {!r}: must be between 1 ms and {} ms".format(
            text, DURATION_MAX_MS))
    return ms


def format_ms(ms):
    return "{}s".format(ms // 1000) if ms % 1000 == 0 else "{}ms".format(ms)


# ---------------------------------------------------------------------------
# Targets

_SQL_STRING = re.compile(r"'(?:[^']|'')*'")
_SQL_NUMBER = re.compile(r"(?<![\w.\"`$?])-?\d+(?:\.\d+)?(?:e[+-]?\d+)?(?![\w\"`])", re.I)
_SQL_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")
_SPACE = re.compile(r"\s+")


def normalise_sql(sql):
    """One query shape per statement: literals -> ?, IN (?, ?, ?) -> (?),
    whitespace collapsed, trailing ';' dropped.  Identifiers keep their case."""
    s = _SQL_STRING.sub("?", sql)
    s = _SQL_NUMBER.sub("?", s)
    s = _SPACE.sub(" ", s).strip().rstrip(";").rstrip()
    return _SQL_LIST.sub("(?)", s)


def _text(v):
    return v if type(v) is str else ""


def _request_target(rec):
    path = _text(rec.get("route_path"))
    methods = rec.get("route_methods")
    if type(methods) is list and methods:
        verbs = "|".join(m for m in methods if type(m) is str)
    else:
        verbs = _text(rec.get("method"))
    if not path:
        return (_text(rec.get("method")) or "?") + " (no route)"
    return verbs + " " + path if verbs else path


def _query_target(rec):
    sql = _text(rec.get("sql"))
    return normalise_sql(sql) if sql else ""


def _key(name):
    return lambda rec: _text(rec.get(name))


#: record type -> (kind, target function)
RECORD_KINDS = {
    "request": ("request", _request_target),
    "query": ("query", _query_target),
    "job-attempt": ("job", _key("name")),
    "outgoing-request": ("outgoing", _key("host")),
    "command": ("command", _key("name")),
    "scheduled-task": ("scheduled_task", _key("name")),
}


def group_hash(kind, target):
    """The issue group of a performance target: derived from kind and target only."""
    return hashlib.blake2b("{}\x00{}".format(kind, target).encode("utf-8", "replace"),
                           digest_size=16).hexdigest()


# ---------------------------------------------------------------------------
# The table and the aggregation

class Thresholds:
    """An immutable threshold table: ``rows`` = [(kind, target, duration_ms)]."""

    def __init__(self, rows=()):
        self.rows = tuple(sorted(rows))
        by_kind = {}
        for kind, target, ms in self.rows:
            default, overrides = by_kind.setdefault(kind, [None, {}])
            if target:
                overrides[target] = ms * 1000
            else:
                by_kind[kind][0] = ms * 1000
        #: record type -> (kind, target fn, default us or None, {target: us}, lowest us)
        self.rules = {}
        for t, (kind, fn) in RECORD_KINDS.items():
            if kind in by_kind:
                default, overrides = by_kind[kind]
                lows = list(overrides.values()) + ([default] if default is not None else [])
                self.rules[t] = (kind, fn, default, overrides, min(lows))

    def __bool__(self):
        return bool(self.rules)

    def __eq__(self, other):
        return isinstance(other, Thresholds) and other.rows == self.rows

    def threshold_us(self, kind, target):
        """The threshold in force for (kind, target), in microseconds, or None."""
        for k, _, default, overrides, _ in self.rules.values():
            if k == kind:
                return overrides.get(target, default)
        return None


EMPTY = Thresholds()


def aggregate(recs, table, now, out=None):
    """Slow records of one decoded payload -> ``out`` (a dict, returned).

    ``recs`` is the decoded JSON array; ``now`` the drain clock (guarded event
    times as in nightowl.records).  Records without a usable duration or
    target are ignored: they still land in their raw table.
    """
    if out is None:
        out = {}
    rules = table.rules
    if not rules:
        return out
    for rec in recs:
        if type(rec) is not dict:
            continue
        t = rec.get("t")
        if type(t) is not str:
            continue
        rule = rules.get(t)
        if rule is None:
            continue
        d = rec.get("duration")
        if type(d) is not int:
            if type(d) is not float or d != d:
                continue
        kind, fn, default, overrides, lowest = rule
        if d < lowest:
            continue
        target = fn(rec)
        if not target:
            continue
        if len(target) > TARGET_MAX:
            target = target[:TARGET_MAX]
        limit = overrides.get(target, default)
        if limit is None or d < limit:
            continue
        ts, _ = _records.event_time(rec.get("timestamp"), now)
        user = rec.get("user")
        uid = user if type(user) is str else ("" if user is None else str(user))
        d = int(min(d, 1 << 62))
        key = (kind, target)
        cur = out.get(key)
        if cur is None:
            out[key] = [1, {uid} if uid else set(), ts, ts, limit // 1000, d, ts,
                        _text(rec.get("deploy"))]
            continue
        cur[0] += 1
        if uid:
            cur[1].add(uid)
        if ts < cur[2]:
            cur[2] = ts
        if ts > cur[3]:
            cur[3] = ts
        if d > cur[5]:
            cur[5] = d
        if ts >= cur[6]:
            cur[6] = ts
            cur[7] = _text(rec.get("deploy"))
    return out


def merge(into, part):
    """Fold one aggregate into another (several payloads of one batch)."""
    for key, agg in part.items():
        cur = into.get(key)
        if cur is None:
            into[key] = [agg[0], set(agg[1])] + agg[2:]
            continue
        cur[0] += agg[0]
        cur[1] |= agg[1]
        cur[2] = min(cur[2], agg[2])
        cur[3] = max(cur[3], agg[3])
        cur[5] = max(cur[5], agg[5])
        if agg[6] >= cur[6]:
            cur[4], cur[6], cur[7] = agg[4], agg[6], agg[7]
    return into


# ---------------------------------------------------------------------------
# Postgres

def load(cur):
    cur.execute("SELECT kind, target, duration_ms FROM nightowl_thresholds")
    return Thresholds((k, t, int(ms)) for k, t, ms in cur.fetchall())


class ThresholdCache:
    """The table as last read, reloaded at most every ``interval`` seconds of
    ``clock`` (monotonic by default): one small SELECT per interval per worker.
    A failed read keeps the previous table and is tried again next interval."""

    log = Logger()

    def __init__(self, interval=RELOAD_INTERVAL, clock=time.monotonic):
        self.interval = interval
        self.clock = clock
        self.table = EMPTY
        self.loads = 0
        self._next = None

    def get(self, connect):
        """The current table; ``connect()`` gives the psycopg2 connection to read it on."""
        now = self.clock()
        if self._next is not None and now < self._next:
            return self.table
        self._next = now + self.interval
        conn = None
        try:
            conn = connect()
            cur = conn.cursor()
            table = load(cur)
            conn.commit()
        except psycopg2.Error as e:
            self.log.warn("could not read nightowl_thresholds ({sqlstate}); keeping the "
                          "previous thresholds", sqlstate=getattr(e, "pgcode", None))
            if conn is not None and not conn.closed:
                try:
                    conn.rollback()
                except psycopg2.Error:
                    pass
            return self.table
        except Exception as e:   # PostgresUnavailable from connect(): the batch will say so
            self.log.warn("could not read nightowl_thresholds ({error})", error=type(e).__name__)
            return self.table
        self.loads += 1
        self.table = table
        return table


def save(conn, kind, target, ms):
    """Insert or replace one threshold (one transaction)."""
    with conn:
        conn.cursor().execute("""
            INSERT INTO nightowl_thresholds (kind, target, duration_ms) VALUES (%s, %s, %s)
            ON CONFLICT (kind, target) DO UPDATE SET duration_ms = EXCLUDED.duration_ms,
                                                     updated_at = now()""", (kind, target, ms))


def remove(conn, kind, target):
    """Delete one threshold; returns whether there was one."""
    with conn:
        cur = conn.cursor()
        cur.execute("DELETE FROM nightowl_thresholds WHERE kind = %s AND target = %s",
                    (kind, target))
        return cur.rowcount > 0


def listing(conn):
    """[(kind, target, duration_ms, updated_at)] in kind order, defaults first."""
    with conn:
        cur = conn.cursor()
        cur.execute("SELECT kind, target, duration_ms, updated_at FROM nightowl_thresholds")
        rows = cur.fetchall()
    order = dict((k, i) for i, k in enumerate(KINDS))
    return sorted(rows, key=lambda r: (order.get(r[0], 99), r[1] != "", r[1]))


def clean_target(kind, target):
    """The stored form of a CLI target: queries are normalised like records are."""
    target = _records.clean((target or "").strip())
    if kind == "query" and target:
        target = normalise_sql(target)
    return target[:TARGET_MAX]
