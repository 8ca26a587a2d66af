"""
Read-only access to the buffer, shared by the drain workers, the health
probes and the admin tools: payload bytes by id, state counts, the low-water
mark and the age of the oldest pending row.  Nothing here writes.

Importing this module costs no Twisted: the drain workers are plain
processes and load it at start.
"""

import sqlite3

from nightowl.buffer.schema import next_id
from nightowl.buffer.states import CLAIMED, DRAINED, PENDING, QUARANTINED, chunks

READ_CHUNK = 500  # ids per SELECT

_LOW_PENDING = "SELECT min(id) FROM payloads WHERE state = {}".format(PENDING)
_LOW_CLAIMED = "SELECT min(id) FROM payloads WHERE state >= {}".format(CLAIMED)
_OLDEST_PENDING = ("SELECT received_at FROM payloads WHERE state = {} "
                   "ORDER BY id LIMIT 1".format(PENDING))


class BufferReader:
    """Reads payload bytes by id from the SQLite buffer.  SELECT only."""

    def __init__(self, path):
        self.path = path
        self._conn = None

    def _connect(self):
        try:
            conn = sqlite3.connect("file:{}?mode=ro".format(self.path), uri=True,
                                   isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("SELECT 1 FROM payloads LIMIT 1").fetchall()
        except sqlite3.Error:
            # read-only open can fail on odd filesystems; we still only SELECT
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")
        return conn

    @property
    def conn(self):
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def buffer_id(self):
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'buffer_id'").fetchone()
        return row[0] if row else None

    def read(self, ids):
        """[(id, bytes)] for the ids that exist, in id order."""
        out = []
        ids = sorted(ids)
        conn = self.conn
        conn.execute("BEGIN")
        try:
            for chunk in chunks(ids, READ_CHUNK):
                out.extend(conn.execute(
                    "SELECT id, payload FROM payload_bodies WHERE id IN ({}) ORDER BY id".format(
                        ",".join("?" * len(chunk))), chunk).fetchall())
        finally:
            conn.execute("COMMIT")
        return [(i, bytes(p)) for (i, p) in out]

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def read_payloads(conn, ids=None):
    """``[(id, state, payload)]`` in id order (all rows, or those in ``ids``)."""
    sql = ("SELECT p.id, p.state, b.payload FROM payloads p JOIN payload_bodies b ON b.id = p.id")
    if ids is None:
        return conn.execute(sql + " ORDER BY p.id").fetchall()
    out = []
    ids = sorted(ids)
    for chunk in chunks(ids):
        out.extend(conn.execute(sql + " WHERE p.id IN ({}) ORDER BY p.id".format(
            ",".join("?" * len(chunk))), chunk).fetchall())
    return out


def count_states(conn):
    """Rows by state: ``{"pending", "claimed", "drained", "quarantined"}``."""
    counts = {"pending": 0, "claimed": 0, "drained": 0, "quarantined": 0}
    for state, n in conn.execute("SELECT state, count(*) FROM payloads GROUP BY state"):
        if state == PENDING:
            counts["pending"] += n
        elif state == DRAINED:
            counts["drained"] += n
        elif state == QUARANTINED:
            counts["quarantined"] += n
        elif state >= CLAIMED:
            counts["claimed"] += n
    return counts


def low_water(conn):
    """
    The smallest id not yet finished (pending or claimed), or one past the
    largest id ever given out when everything is finished.
    """
    candidates = [row[0] for row in (
        conn.execute(_LOW_PENDING).fetchone(), conn.execute(_LOW_CLAIMED).fetchone())
        if row[0] is not None]
    if candidates:
        return min(candidates)
    return next_id(conn)


def oldest_pending_age(conn, now):
    """Seconds since the oldest pending row was received (0.0 if none is pending)."""
    row = conn.execute(_OLDEST_PENDING).fetchone()
    return 0.0 if row is None else max(0.0, now - row[0])
