"""
The forward queue in the buffer file (``--forward``): the table ``forwards``
holding, for every acknowledged payload, what rebuilds the exact frame the
SDK sent (its token hash and the payload bytes as received, gzip included),
its SQL (insert in the payload's own group commit, take, delete, trim to the
bound) and the writer thread's counters.

Rows live apart from ``payloads``: the drain's deletes never touch them, and
deleting a forward row never touches the Postgres copy.  Every function runs
on the writer thread inside its transaction (L{nightowl.buffer.groupcommit}
calls L{ForwardQueue.insert}; the forwarder reaches the others through
``BufferWriter.run``).
"""

VERSION = b"v1"  # nightowl.wire.VERSION (not imported: the drain workers load this file)

DDL = """
CREATE TABLE IF NOT EXISTS forwards (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL    NOT NULL,
    token_hash  BLOB    NOT NULL,
    payload     BLOB    NOT NULL,
    size        INTEGER NOT NULL
);
"""

INSERT_CHUNK = 200  # rows per statement (4 host parameters each)
DELETE_CHUNK = 500

_INSERT = {}


def frame(token_hash, payload):
    """The frame exactly as the SDK sent it: ``<len>:v1:<tokenHash>:<payload>``."""
    body = b"".join((VERSION, b":", token_hash, b":", payload))
    return b"%d:%b" % (len(body), body)


def frame_size(token_hash, payload):
    """len(frame(...)) without building it."""
    n = len(VERSION) + len(token_hash) + len(payload) + 2
    return n + len(str(n)) + 1


def counts(conn):
    """(rows, bytes, last id) of the forward queue as stored."""
    rows, size = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM forwards").fetchone()
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'forwards'").fetchone()
    return rows, size, (row[0] if row else 0)


class ForwardQueue:
    """
    The writer thread's side of forwarding.  ``max_rows`` / ``max_bytes``:
    the backlog bound; past it the oldest rows are deleted in the same
    transaction and counted in ``dropped`` / ``dropped_bytes``.

    Counters are changed on the writer thread only (after its commit) and
    read anywhere.
    """

    def __init__(self, max_rows, max_bytes):
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.rows = 0
        self.bytes = 0
        self.last_id = 0      # the newest forward row's id (the forwarder polls it)
        self.dropped = 0
        self.dropped_bytes = 0
        self.inserted = 0
        self.trimmed_below = 0   # every id below this was dropped or delivered
        self._deleted = [0, 0]   # rows, bytes deleted in the open transaction

    def opened(self, conn):
        """Read the counters of the file (writer thread, at open)."""
        self.rows, self.bytes, self.last_id = counts(conn)

    def insert(self, conn, items, now):
        """
        Insert the forward rows of ``items`` (``(payload, Deferred)`` as the
        writer holds them; a Deferred carrying ``forward = (token_hash,
        raw payload)`` is forwarded, others are not), then trim to the bound.
        Inside the caller's transaction; returns the counter changes to apply
        after its commit (L{applied}).
        """
        rows = []
        for _payload, d in items:
            info = getattr(d, "forward", None)
            if info is not None:
                rows.append(info)
        if not rows:
            return None
        first = self.last_id + 1
        added = 0
        for start in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[start:start + INSERT_CHUNK]
            n = len(chunk)
            sql = _INSERT.get(n)
            if sql is None:
                sql = _INSERT[n] = ("INSERT INTO forwards (id, received_at, token_hash, "
                                    "payload, size) VALUES " + ",".join(["(?,?,?,?,?)"] * n))
            values = []
            for offset, (token_hash, payload) in enumerate(chunk):
                size = frame_size(token_hash, payload)
                added += size
                values.extend((first + start + offset, now, token_hash, payload, size))
            conn.execute(sql, values)
        change = [len(rows), added, first + len(rows) - 1, 0, 0, None]
        over_rows = self.rows + len(rows) - self.max_rows
        over_bytes = self.bytes + added - self.max_bytes
        if over_rows > 0 or over_bytes > 0:
            n, size, below = self._trim(conn, max(over_rows, 0), max(over_bytes, 0))
            change[0] -= n
            change[1] -= size
            change[3], change[4], change[5] = n, size, below
        return change

    def _trim(self, conn, rows, size):
        """Delete the oldest rows: at least ``rows`` of them and ``size`` bytes."""
        cursor = conn.execute("SELECT id, size FROM forwards ORDER BY id")
        ids, total = [], 0
        for row_id, row_size in cursor:
            if len(ids) >= rows and total >= size:
                break
            ids.append(row_id)
            total += row_size
        cursor.close()
        delete(conn, ids)
        return len(ids), total, (ids[-1] + 1 if ids else None)

    def applied(self, change):
        """Apply L{insert}'s counter changes once its transaction committed."""
        if change is None:
            return
        rows, size, last_id, dropped, dropped_bytes, below = change
        if below is not None:
            self.trimmed_below = below   # the forwarder skips what it still holds below it
        self.rows += rows
        self.bytes += size
        self.last_id = last_id
        self.inserted += change[0] + dropped
        self.dropped += dropped
        self.dropped_bytes += dropped_bytes

    def rolled_back(self):
        """
        After a rollback: forget the deletes counted in the transaction (the
        writer retries its operations one by one, and a delete counted twice
        made the backlog drift below the table).  Insert changes need nothing:
        they are applied only after the commit.
        """
        self._deleted = [0, 0]

    def committed(self):
        """After a commit: the deletes of the transaction leave the backlog."""
        n, size = self._deleted
        if n:
            self.rows -= n
            self.bytes -= size
            self._deleted = [0, 0]

    # -- the forwarder's operations (BufferWriter.run: writer thread) ---------

    def take(self, conn, after, limit, max_bytes):
        """
        Up to ``limit`` rows (and about ``max_bytes``, at least one) with an
        id above ``after``, oldest first: ``[(id, frame bytes), ...]``.
        """
        out, total = [], 0
        for row_id, token_hash, payload, size in conn.execute(
                "SELECT id, token_hash, payload, size FROM forwards WHERE id > ? "
                "ORDER BY id LIMIT ?", (after, limit)):
            if out and total + size > max_bytes:
                break
            out.append((row_id, frame(bytes(token_hash), bytes(payload))))
            total += size
        return out

    def delete(self, conn, ids):
        """Forget delivered (or given up) rows; their count and bytes leave the backlog."""
        n, size = delete(conn, ids)
        # writer thread, inside the transaction: counted once it commits
        self._deleted[0] += n
        self._deleted[1] += size
        return n


def delete(conn, ids):
    """Delete forward rows by id; returns (rows, bytes) deleted."""
    n = size = 0
    ids = list(ids)
    for start in range(0, len(ids), DELETE_CHUNK):
        chunk = ids[start:start + DELETE_CHUNK]
        marks = ",".join("?" * len(chunk))
        row = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM forwards "
                           "WHERE id IN ({})".format(marks), chunk).fetchone()
        conn.execute("DELETE FROM forwards WHERE id IN ({})".format(marks), chunk)
        n += row[0]
        size += row[1]
    return n, size
