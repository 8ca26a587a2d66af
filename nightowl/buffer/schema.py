"""
The buffer file's layout: its DDL and pragmas, opening it (``connect``), the
migration of older layouts, its identity (``meta.buffer_id``), how payload
rows are written, and the startup checks of the writer's file (quick check,
a corrupt file moved aside, a writability probe).

Durability: WAL mode with ``synchronous=NORMAL``.  A committed transaction
survives the agent being killed at any moment; after an OS crash or power
loss the last commits may roll back (the file is never corrupted).
``--buffer-sync full`` (``synchronous=FULL``: every commit waits for the
disk) trades throughput for durability across power loss.
"""

import os
import sqlite3
import time
import uuid

from nightowl.buffer.forwardq import DDL as FORWARD_DDL
from nightowl.buffer.states import PENDING

SCHEMA_VERSION = "3"  # meta.schema: 2 the payload bytes in payload_bodies; 3 forwards

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS payloads (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL    NOT NULL,
    state       INTEGER NOT NULL DEFAULT {PENDING},
    state_at    REAL,
    error       TEXT,
    size        INTEGER
);
CREATE INDEX IF NOT EXISTS payloads_state_id ON payloads (state, id);
CREATE TABLE IF NOT EXISTS payload_bodies (
    id          INTEGER PRIMARY KEY,
    payload     BLOB    NOT NULL
);
CREATE TRIGGER IF NOT EXISTS payloads_delete_body AFTER DELETE ON payloads
BEGIN
    DELETE FROM payload_bodies WHERE id = OLD.id;
END;
""".format(PENDING=PENDING) + FORWARD_DDL
# The payload bytes live in their own table: a claim or a mark rewrites the
# (small) state row only.  With the bytes in the same row every state change
# rewrote ~4 KB per payload: 20 MB of WAL and ~40 ms of writer time for each
# claim or mark of 5,000 payloads, during which no ack could be committed.

# Pragmas in the order that matters: busy_timeout and auto_vacuum must come
# before journal_mode=WAL (auto_vacuum lives in the header and is silently
# ignored once the file has been written in WAL mode).
PRAGMAS = (
    "PRAGMA busy_timeout=5000",
    "PRAGMA auto_vacuum=INCREMENTAL",
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA cache_size=-32000",
    "PRAGMA temp_store=MEMORY",
)

INSERT_CHUNK = 300  # rows per statement (4 host parameters each; SQLite allows 999+)
_INSERT_SQL = {}


class BufferError(Exception):
    """The buffer cannot be opened or written."""


def connect(path, timeout=5.0, sync="normal"):
    """Open a connection with the pragmas in the right order; create the schema."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None,
                           check_same_thread=False)
    for pragma in PRAGMAS:
        if pragma == "PRAGMA synchronous=NORMAL" and sync == "full":
            pragma = "PRAGMA synchronous=FULL"
        if pragma.startswith("PRAGMA journal_mode"):
            for attempt in range(10):
                try:
                    mode = conn.execute(pragma).fetchone()[0]
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) or attempt == 9:
                        raise
                    time.sleep(0.1 * (attempt + 1))
            if mode.lower() != "wal":
                raise BufferError("could not switch {} to WAL mode (got {})".format(path, mode))
        else:
            conn.execute(pragma)
    columns = [row[1] for row in conn.execute("PRAGMA table_info(payloads)")]
    if columns and "payload" in columns:
        migrate_layout_1(conn)
    conn.executescript(SCHEMA)
    upgrade_schema(conn)
    return conn


def upgrade_schema(conn):
    """
    An older file's ``meta.schema`` brought up to L{SCHEMA_VERSION} (layout
    2 to 3: the ``forwards`` table, created above by ``CREATE TABLE IF NOT
    EXISTS``; nothing else changes).  Read-only files are left alone.
    """
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    if row is not None and row[0] in ("1", "2"):
        try:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (SCHEMA_VERSION,))
        except sqlite3.OperationalError:
            pass


def migrate_layout_1(conn):
    """A buffer written by nightowl 0.1 dev builds: move the bytes to payload_bodies."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS payload_bodies "
                     "(id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")
        conn.execute("INSERT OR IGNORE INTO payload_bodies (id, payload) "
                     "SELECT id, payload FROM payloads")
        conn.execute("ALTER TABLE payloads ADD COLUMN size INTEGER")
        conn.execute("UPDATE payloads SET size = length(payload)")
        conn.execute("ALTER TABLE payloads DROP COLUMN payload")
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)",
                     (SCHEMA_VERSION,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def buffer_identity(conn):
    """The buffer file's UUID, created on first use."""
    row = conn.execute("SELECT value FROM meta WHERE key='buffer_id'").fetchone()
    if row:
        return row[0]
    new = str(uuid.uuid4())
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('buffer_id', ?)", (new,))
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)",
                 (SCHEMA_VERSION,))
    return conn.execute("SELECT value FROM meta WHERE key='buffer_id'").fetchone()[0]


def next_id(conn):
    """The id the next payload gets (AUTOINCREMENT's counter: ids are never reused)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'payloads'").fetchone()
    return (row[0] if row else 0) + 1


def insert_many(conn, rows, state=PENDING, first_id=None):
    """
    Insert ``(received_at, payload)`` rows, inside the caller's transaction,
    with explicit consecutive ids and multi-row statements: one sqlite3_step
    per few hundred rows, so the writer thread gives up and re-takes the GIL
    a few times per commit instead of once per row.  Returns the first id.
    ``first_id``: the caller knows the next id (the writer thread keeps it).
    """
    first = start_id = next_id(conn) if first_id is None else first_id
    for start in range(0, len(rows), INSERT_CHUNK):
        chunk = rows[start:start + INSERT_CHUNK]
        n = len(chunk)
        sqls = _INSERT_SQL.get(n)
        if sqls is None:
            sqls = _INSERT_SQL[n] = (
                "INSERT INTO payloads (id, received_at, state, size) VALUES "
                + ",".join(["(?,?,?,?)"] * n),
                "INSERT INTO payload_bodies (id, payload) VALUES " + ",".join(["(?,?)"] * n))
        meta, bodies = [], []
        for offset, (received_at, payload) in enumerate(chunk):
            row_id = start_id + offset
            meta.extend((row_id, received_at, state, len(payload)))
            bodies.extend((row_id, payload))
        conn.execute(sqls[0], meta)
        conn.execute(sqls[1], bodies)
        start_id += n
    return first


def add_row(conn, payload, received_at=None, state=PENDING, state_at=None, error=None):
    """One row with its body, in any state (tools and tests); returns its id."""
    row_id = insert_many(conn, [(time.time() if received_at is None else received_at,
                                 payload)], state=state)
    if state_at is not None or error is not None:
        conn.execute("UPDATE payloads SET state_at = ?, error = ? WHERE id = ?",
                     (state_at, error, row_id))
    return row_id


def move_aside(path, now):
    """Rename a corrupt buffer (and its WAL/SHM) out of the way; return the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    target = "{}.corrupt-{}".format(path, stamp)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.rename(path + suffix, target + suffix)
    return target


def open_checked(path, sync, now):
    """
    The writer's connection to ``path``: its directory created, the file
    quick-checked (a corrupt one moved aside, nothing deleted, and a fresh
    buffer started).  Returns ``(conn, moved_aside, corrupt_reason)``; the
    last two are None unless the file was moved aside.  Raises L{BufferError}.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        try:
            os.makedirs(directory, 0o750, exist_ok=True)
        except OSError as e:
            raise BufferError("cannot create buffer directory {}: {}".format(
                directory, e.strerror))
    aside = corrupt = None
    try:
        conn = connect(path, sync=sync)
        check = conn.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            conn.close()
            raise sqlite3.DatabaseError("quick_check: " + check[:200])
    except sqlite3.DatabaseError as e:
        message = str(e)
        if isinstance(e, sqlite3.OperationalError) and (
                "unable to open" in message or "readonly" in message
                or "read-only" in message or "disk I/O" in message):
            raise BufferError("cannot open buffer {}: {}".format(path, message))
        if not os.path.exists(path):
            raise BufferError("cannot open buffer {}: {}".format(path, message))
        # Corrupt or not a database: never crash-loop on it.
        corrupt = message
        try:
            aside = move_aside(path, now)
        except OSError as e2:
            raise BufferError("buffer {} is corrupt ({}) and cannot be moved aside: {}"
                              .format(path, message, e2.strerror))
        conn = connect(path, sync=sync)
    return conn, aside, corrupt


def claim_identity(conn, path):
    """
    Make (or read) the buffer's identity and probe that a row can be written;
    a buffer we cannot mark would later duplicate data, so refuse to start
    on one (L{BufferError}).  Returns the buffer id.
    """
    try:
        conn.execute("BEGIN IMMEDIATE")
        buffer_id = buffer_identity(conn)
        conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        insert_many(conn, [(0.0, b"\x00")])
        conn.execute("ROLLBACK")
    except sqlite3.Error as e:
        conn.close()
        raise BufferError("buffer {} is not writable: {}".format(path, e))
    return buffer_id
