"""
The buffer's state machine: the named states of a payload row and the SQL
that moves rows between them (claim, mark drained, quarantine, release,
requeue, delete when finished).

    PENDING --claim--> CLAIMED + worker --mark_drained--> DRAINED --delete--> gone
       ^                   |    \\--quarantine--> QUARANTINED --expire--> gone
       |                   |                         |
       +----release--------+                         |
       +----requeue----------------------------------+

Every function runs inside the caller's transaction on the caller's
connection (the writer thread's, or an admin tool's); none commits.  The
state numbers appear only in the constants below: the SQL is built from them.
"""

PENDING = 0
DRAINED = 1
QUARANTINED = 2
CLAIMED = 100  # + worker number

CHUNK = 500  # ids per statement (SQLite host parameters)

ERROR_CHARS = 200  # a quarantine reason is cut to this many characters

_NAMES = dict(PENDING=PENDING, DRAINED=DRAINED, QUARANTINED=QUARANTINED, CLAIMED=CLAIMED)


def _sql(text):
    """``text`` with ``{PENDING}`` and the other state names filled in."""
    return text.format(**_NAMES)


_CLAIM = _sql(
    "UPDATE payloads SET state = ?, state_at = ? WHERE id IN "
    "(SELECT id FROM payloads WHERE state = {PENDING} ORDER BY id LIMIT ?) RETURNING id")
# bounded in bytes too (a running total; always at least one row)
_CLAIM_BYTES = _sql(
    "UPDATE payloads SET state = ?, state_at = ? WHERE id IN "
    "(SELECT id FROM (SELECT id, sum(coalesce(size, 0)) OVER (ORDER BY id) AS total, "
    "row_number() OVER (ORDER BY id) AS n FROM (SELECT id, size FROM payloads "
    "WHERE state = {PENDING} ORDER BY id LIMIT ?)) WHERE total <= ? OR n = 1) RETURNING id")
_MARK_CLAIMED = _sql("UPDATE payloads SET state = {DRAINED}, state_at = ? "
                     "WHERE state >= {CLAIMED} AND id IN ({{}})")
_MARK_PENDING = _sql("UPDATE payloads SET state = {DRAINED}, state_at = ? "
                     "WHERE state = {PENDING} AND id IN ({{}})")
_QUARANTINE = _sql("UPDATE payloads SET state = {QUARANTINED}, state_at = ?, error = ? "
                   "WHERE id = ?")
_RELEASE_ALL = _sql("UPDATE payloads SET state = {PENDING}, state_at = ? "
                    "WHERE state >= {CLAIMED}")
_RELEASE_ONE = _sql("UPDATE payloads SET state = {PENDING}, state_at = ? WHERE state = ?")
_REQUEUE_ALL = _sql("UPDATE payloads SET state = {PENDING}, state_at = ?, error = NULL "
                    "WHERE state = {QUARANTINED}")
_REQUEUE_IDS = _sql("UPDATE payloads SET state = {PENDING}, state_at = ?, error = NULL "
                    "WHERE state = {QUARANTINED} AND id IN ({{}})")
_DELETE_DRAINED = _sql(
    "DELETE FROM payloads WHERE id IN (SELECT id FROM payloads WHERE state = {DRAINED} "
    "AND state_at < ? ORDER BY id LIMIT ?)")
_EXPIRE_QUARANTINE = _sql("DELETE FROM payloads WHERE state = {QUARANTINED} AND state_at < ?")


def claimed_by(worker):
    """The state of a row claimed by worker number ``worker``."""
    return CLAIMED + worker


def chunks(seq, size=CHUNK):
    """``seq`` in slices of at most ``size`` (one statement each)."""
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def _marks(chunk):
    return ",".join("?" * len(chunk))


def claim(conn, worker, limit, now, max_bytes=None):
    """
    Claim for ``worker`` up to ``limit`` pending rows, oldest first, and at
    most ``max_bytes`` of payload (always at least one row); their ids, sorted.
    """
    if max_bytes is None:
        cursor = conn.execute(_CLAIM, (claimed_by(worker), now, limit))
    else:
        cursor = conn.execute(_CLAIM_BYTES, (claimed_by(worker), now, limit, max_bytes))
    ids = [row[0] for row in cursor]
    ids.sort()
    return ids


def mark_drained(conn, ids, now):
    """
    Mark ``ids`` drained; returns ``(from_claimed, from_pending)``.  A row
    whose claim was released (its worker presumed dead) may be reported by a
    later batch while pending again: it is drained too.
    """
    claimed = pending = 0
    for chunk in chunks(ids):
        params = [now] + list(chunk)
        n = conn.execute(_MARK_CLAIMED.format(_marks(chunk)), params).rowcount
        claimed += n
        if n < len(chunk):   # the usual batch was all still claimed: one statement
            pending += conn.execute(_MARK_PENDING.format(_marks(chunk)), params).rowcount
    return claimed, pending


def quarantine(conn, items, now):
    """
    Quarantine each ``(id, reason)`` unless it is already drained or
    quarantined (or gone); returns ``(from_claimed, from_pending)``.
    """
    claimed = pending = 0
    for id_, reason in items:
        row = conn.execute("SELECT state FROM payloads WHERE id = ?", (id_,)).fetchone()
        if row is None or row[0] in (QUARANTINED, DRAINED):
            continue
        conn.execute(_QUARANTINE, (now, str(reason)[:ERROR_CHARS], id_))
        if row[0] == PENDING:
            pending += 1
        else:
            claimed += 1
    return claimed, pending


def release(conn, worker, now):
    """Give ``worker``'s claims (every worker's if None) back to pending; how many."""
    if worker is None:
        return conn.execute(_RELEASE_ALL, (now,)).rowcount
    return conn.execute(_RELEASE_ONE, (now, claimed_by(worker))).rowcount


def requeue(conn, ids, now):
    """Move quarantined rows (``ids``, or all if None) back to pending; how many."""
    if ids is None:
        return conn.execute(_REQUEUE_ALL, (now,)).rowcount
    n = 0
    for chunk in chunks(list(ids)):
        n += conn.execute(_REQUEUE_IDS.format(_marks(chunk)), [now] + list(chunk)).rowcount
    return n


def delete_drained(conn, before, limit):
    """Delete up to ``limit`` drained rows finished before ``before`` (their bodies too)."""
    return conn.execute(_DELETE_DRAINED, (before, limit)).rowcount


def expire_quarantine(conn, before):
    """Delete the quarantined rows quarantined before ``before``; how many."""
    return conn.execute(_EXPIRE_QUARANTINE, (before,)).rowcount
