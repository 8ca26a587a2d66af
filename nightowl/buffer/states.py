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


# A claim: the ids and sizes of the oldest pending rows (the (state, id)
# index), cut to the byte budget here, then one UPDATE of that id range.  The
# pending rows with ids in [first, last] are exactly those selected (they are
# the oldest), and nothing else writes meanwhile (the caller's transaction
# holds the write lock); a range far wider than the rows claimed is updated
# by id instead.  The earlier single UPDATE with a window-function
# running total took twice the writer's time: 12 ms of CPU per 1,300 rows
# against ~5, during which no ack could be committed.
_PENDING_HEAD = _sql("SELECT id, size FROM payloads WHERE state = {PENDING} "
                     "ORDER BY id LIMIT ?")
_CLAIM_RANGE = _sql("UPDATE payloads SET state = ?, state_at = ? "
                    "WHERE id BETWEEN ? AND ? AND state = {PENDING}")
_CLAIM_IDS = _sql("UPDATE payloads SET state = ?, state_at = ? "
                  "WHERE state = {PENDING} AND id IN ({{}})")
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
    rows = conn.execute(_PENDING_HEAD, (limit,)).fetchall()
    if not rows:
        return []
    if max_bytes is not None:
        total = 0
        for n, (_id, size) in enumerate(rows):
            total += size or 0
            if total > max_bytes and n:
                del rows[n:]
                break
    ids = [row[0] for row in rows]
    state = claimed_by(worker)
    if ids[-1] - ids[0] < 2 * len(ids):
        # the usual case: the range holds few rows in other states
        conn.execute(_CLAIM_RANGE, (state, now, ids[0], ids[-1]))
    else:
        # an old pending row far below the rest (a released claim beside
        # quarantined rows): by id, so the range's other rows are not scanned
        for chunk in chunks(ids):
            conn.execute(_CLAIM_IDS.format(_marks(chunk)), [state, now] + chunk)
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
