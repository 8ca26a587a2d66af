"""
What one batch of records turns into besides its COPY lines: the ``Encoded``
container, and the aggregation of issue occurrences and users across it.

Owns the group record shared with the slow-record aggregation of
nightowl.issues.thresholds: a list ``[count, users (set), first_ts, last_ts,
a, b, latest_ts, deploy]`` where ``a`` and ``b`` belong to the caller
(issues: class and message of the latest occurrence; slow records: threshold
ms and worst duration).  ``new_group`` / ``seen_again`` count occurrences,
``copy_group`` / ``fold_group`` merge groups of several payloads.
Pure functions, no I/O.
"""

import hashlib

from nightowl.records.copytext import to_utf8
from nightowl.records.eventtime import event_time


def text_of(v):
    """A JSON value as plain text: None -> '', other non-strings -> str()."""
    if type(v) is str:
        return v
    if v is None:
        return ""
    return str(v)


# ---------------------------------------------------------------------------
# Groups of occurrences (issues here, slow records in nightowl.issues.thresholds)

def new_group(uid, ts, a, b, deploy):
    """The group of a first occurrence by user ``uid`` ('' for none) at ``ts``."""
    return [1, {uid} if uid else set(), ts, ts, a, b, ts, deploy]


def seen_again(cur, uid, ts):
    """Count one more occurrence in group ``cur``; True when ``ts`` is its latest
    (the caller then updates its own fields and ``cur[6]``)."""
    cur[0] += 1
    if uid:
        cur[1].add(uid)
    if ts < cur[2]:
        cur[2] = ts
    if ts > cur[3]:
        cur[3] = ts
    return ts >= cur[6]


def copy_group(agg):
    """A group to merge into (its user set not shared with ``agg``)."""
    return [agg[0], set(agg[1])] + agg[2:]


def fold_group(cur, agg):
    """Add group ``agg`` to ``cur``; True when ``agg`` holds the latest occurrence
    (the caller then takes its fields and ``agg[6]``)."""
    cur[0] += agg[0]
    cur[1] |= agg[1]
    if agg[2] < cur[2]:
        cur[2] = agg[2]
    if agg[3] > cur[3]:
        cur[3] = agg[3]
    return agg[6] >= cur[6]


# ---------------------------------------------------------------------------
# Issues and users

def fingerprint(rec):
    """The issue an exception record belongs to: the SDK's ``_group``, else a
    hash of class, code, file and line."""
    g = rec.get("_group")
    if type(g) is str and g:
        return g
    parts = "|".join(text_of(rec.get(k)) for k in ("class", "code", "file", "line"))
    return hashlib.md5(parts.encode("utf-8", "nightowl-fffd")).hexdigest()


def add_issue(issues, fp, rec, ts, user):
    """Count exception record ``rec`` (event time ``ts``) in issue ``fp``."""
    uid = text_of(user)
    cur = issues.get(fp)
    if cur is None:
        issues[fp] = new_group(uid, ts, text_of(rec.get("class")), text_of(rec.get("message")),
                               text_of(rec.get("deploy")))
    elif seen_again(cur, uid, ts):
        cur[4] = text_of(rec.get("class"))
        cur[5] = text_of(rec.get("message"))
        cur[6] = ts


def merge_issue(issues, fp, agg):
    cur = issues.get(fp)
    if cur is None:
        issues[fp] = copy_group(agg)
    elif fold_group(cur, agg):
        cur[4], cur[5], cur[6] = agg[4], agg[5], agg[6]


def merge_user(users, uid, agg):
    """users[uid] = [name, email, first_ts, last_ts, name_ts]: the latest name wins."""
    cur = users.get(uid)
    if cur is None:
        users[uid] = list(agg)
        return
    if agg[2] < cur[2]:
        cur[2] = agg[2]
    if agg[3] > cur[3]:
        cur[3] = agg[3]
    if agg[4] >= cur[4]:
        cur[0], cur[1], cur[4] = agg[0], agg[1], agg[4]


def add_user(rec, now, out):
    """Fold a ``user`` record into ``out.users``; returns records written (0 or 1)."""
    uid = text_of(rec.get("id"))
    if not uid:
        out.skipped["user-without-id"] = out.skipped.get("user-without-id", 0) + 1
        return 0
    ts, _ = event_time(rec.get("timestamp"), now)
    merge_user(out.users, uid, [text_of(rec.get("name")), text_of(rec.get("username")), ts, ts, ts])
    return 1


class Encoded:
    """What a list of records turns into.

    ``lines``: table -> list of COPY lines (str, newline-terminated);
    ``issues``: fingerprint -> group (see the module docstring; a, b = class,
    message); ``users``: user_id -> [name, email, first_ts, last_ts, name_ts];
    ``skipped``: reason -> count; ``records``: records written (skipped ones
    excluded).
    """

    __slots__ = ("lines", "issues", "users", "skipped", "records")

    def __init__(self):
        self.lines = {}
        self.issues = {}
        self.users = {}
        self.skipped = {}
        self.records = 0

    def rows_by_table(self):
        out = {table: len(lines) for table, lines in self.lines.items()}
        if self.users:
            out["nightowl_users"] = len(self.users)
        return out

    def copy_data(self):
        """table -> UTF-8 bytes ready for COPY."""
        return {table: to_utf8("".join(lines)) for table, lines in self.lines.items() if lines}

    @classmethod
    def merge(cls, parts):
        out = cls()
        for p in parts:
            for table, lines in p.lines.items():
                out.lines.setdefault(table, []).extend(lines)
            for key, n in p.skipped.items():
                out.skipped[key] = out.skipped.get(key, 0) + n
            out.records += p.records
            for fp, agg in p.issues.items():
                merge_issue(out.issues, fp, agg)
            for uid, agg in p.users.items():
                merge_user(out.users, uid, agg)
        return out
