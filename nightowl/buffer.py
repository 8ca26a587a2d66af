"""
The SQLite buffer and the one thread that writes it.

Every payload is committed here before the SDK gets ``2:OK``; the drain
workers claim rows, copy them to Postgres and report back; only this module's
writer thread ever changes the file while the agent runs.  See
docs/design.rst for the schema and the state machine.

Durability: WAL mode with ``synchronous=NORMAL``.  A committed transaction
survives the agent being killed at any moment; after an OS crash or power
loss the last commits may roll back (the file is never corrupted).
``--buffer-sync full`` (``synchronous=FULL``: every commit waits for the
disk) trades throughput for durability across power loss.
"""

import os
import queue
import sqlite3
import threading
import time
import uuid

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

PENDING = 0
DRAINED = 1
QUARANTINED = 2
CLAIMED = 100  # + worker number

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS payloads (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at REAL    NOT NULL,
    state       INTEGER NOT NULL DEFAULT 0,
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
"""
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

# Drained rows are kept this long before deletion, so an operator can still
# see what was drained recently and a late duplicate report is harmless.
SAFETY_WINDOW = 2.0
# Drained rows deleted per transaction: small enough that the writer thread
# is never held long (acks queue behind it), repeated until none are left.
DELETE_CHUNK = 1000
QUARANTINE_KEEP = 7 * 86400.0
WAL_LIMIT_BYTES = 64 * 1024 * 1024
# A TRUNCATE checkpoint waits for the writer and stalls acks (~180 ms measured
# at 9,000 payloads/s): only when the WAL somehow ran away (a reader pinning
# old pages kept it from rewinding).
WAL_TRUNCATE_BYTES = 512 * 1024 * 1024
CHECKPOINT_EVERY = 0.1
REWIND_EVERY = 1.0
VACUUM_MIN_PAGES = 4096   # 16 MB of free pages before any is given back
VACUUM_SLICE = 1024       # pages per housekeeping round (short writer hold)
MAX_GROUP = 4096  # operations per transaction at most


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
        _migrate_layout_1(conn)
    conn.executescript(SCHEMA)
    return conn


def _migrate_layout_1(conn):
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
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', '2')")
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
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', '2')")
    return conn.execute("SELECT value FROM meta WHERE key='buffer_id'").fetchone()[0]


def count_states(conn):
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


_INSERT_SQL = {}
INSERT_CHUNK = 300  # rows per statement (3 host parameters each; SQLite allows 999+)


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


def read_payloads(conn, ids=None):
    """``[(id, state, payload)]`` in id order (all rows, or those in ``ids``)."""
    sql = ("SELECT p.id, p.state, b.payload FROM payloads p JOIN payload_bodies b ON b.id = p.id")
    if ids is None:
        return conn.execute(sql + " ORDER BY p.id").fetchall()
    out = []
    ids = sorted(ids)
    for chunk in _chunks(ids):
        out.extend(conn.execute(sql + " WHERE p.id IN ({}) ORDER BY p.id".format(
            ",".join("?" * len(chunk))), chunk).fetchall())
    return out


def _chunks(seq, size=500):
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def _move_aside(path, reason, now):
    """Rename a corrupt buffer (and its WAL/SHM) out of the way; return the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    target = "{}.corrupt-{}".format(path, stamp)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.rename(path + suffix, target + suffix)
    return target


def own_buffer(path):
    """Take the buffer's ownership lock (nightowl.bufferlock), or a one-line BufferError."""
    from nightowl.bufferlock import BufferLock, BufferLocked
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), 0o750, exist_ok=True)
        return BufferLock(path).acquire()
    except BufferLocked as e:
        raise BufferError(str(e))
    except OSError as e:
        raise BufferError("cannot lock buffer {}: {}".format(path, e.strerror or e))


class BufferWriter(service.Service):
    """
    Owns the SQLite buffer through one dedicated thread.

    Methods are called on the reactor thread and return Deferreds that fire
    on the reactor thread once the transaction holding the operation has
    committed.  Operations queued while a transaction runs are committed
    together in the next one (group commit).
    """

    log = Logger()
    name = "buffer"

    def __init__(self, path, reactor=None, max_queue=20000, max_pending=1000000,
                 clock=time.time, sync="normal",
                 validate=None, max_queue_bytes=64 * 1024 * 1024):
        if reactor is None:
            from twisted.internet import reactor
        self.path = path
        self.reactor = reactor
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.max_pending = max_pending
        self.clock = clock
        self.sync = sync
        if validate is None:
            from nightowl.wire import check_json_array as validate
        # Run on the writer thread, on each payload before it is inserted:
        # raising refuses that payload alone (the SDK gets 5:ERROR).  Here,
        # parsing overlaps the reactor thread's socket system calls.
        self.validate = validate
        self.buffer_id = None
        self.moved_aside = None
        self._queue = queue.SimpleQueue()
        self._batch = []
        self._checked = []  # appends already checked (nightowl.checker): not validated again
        self._flush_scheduled = False
        self.inflight = 0  # appends handed over and not yet committed (reactor thread)
        self.inflight_bytes = 0  # their bytes (reactor thread): --max-queue-bytes
        self._thread = None
        self._conn = None
        self._closed = False
        # Counters kept by the writer thread after each commit; read anywhere.
        self.pending = 0
        self.claimed = 0
        self.quarantined = 0
        self.drained_kept = 0
        self.appended = 0
        self.commits = 0
        self.write_errors = 0
        self.last_commit_at = None
        self.last_error = None
        self.back_pressure = False
        # Every row with a smaller id is finished (drained, quarantined or
        # deleted): the drain may forget its Postgres ledger entries below it.
        self.low_water = None
        self.checkpoints = 0
        self.rewinds = 0
        self._next_id = None  # writer thread: the next payload id, once known
        self._last_rewind = 0.0
        self.last_checkpoint = None
        self.checkpoint_error = None

    # -- lifecycle -------------------------------------------------------

    def open(self):
        """
        Start the writer thread, open the file, check it and probe that it
        is writable.  Blocks until done; raises L{BufferError} with a clear
        message on failure.  Idempotent.
        """
        if self._thread is not None:
            return
        self._lock = own_buffer(self.path)
        ready = threading.Event()
        outcome = {}
        self._thread = threading.Thread(target=self._run, args=(ready, outcome),
                                        name="nightowl-buffer-writer", daemon=True)
        self._thread.start()
        ready.wait()
        if "error" in outcome:
            self._thread.join()
            self._thread = None
            self._lock.release()
            raise outcome["error"]
        self._checkpoint_stop = threading.Event()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop,
                                              name="nightowl-buffer-checkpoint", daemon=True)
        self._checkpointer.start()
        if self.moved_aside:
            self.log.error(
                "buffer {path} was corrupt ({reason}); moved aside to {aside} and started "
                "a fresh buffer. Inspect the old file with `nightowl buffer verify`.",
                path=self.path, aside=self.moved_aside, reason=outcome.get("corrupt"))

    def startService(self):
        self.open()
        service.Service.startService(self)

    def stopService(self):
        """Commit what is queued, then close the file.  Fires when closed."""
        service.Service.stopService(self)
        return self.close()

    def close(self):
        if self._thread is None or self._closed:
            return defer.succeed(None)
        self._flush()
        self._closed = True
        stop = getattr(self, "_checkpoint_stop", None)
        if stop is not None:
            stop.set()
        d = defer.Deferred()
        self._queue.put(("close", None, d))
        return d

    # -- the writer thread -------------------------------------------------

    def _open_conn(self, outcome):
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            try:
                os.makedirs(directory, 0o750, exist_ok=True)
            except OSError as e:
                raise BufferError("cannot create buffer directory {}: {}".format(
                    directory, e.strerror))
        try:
            conn = connect(self.path, sync=self.sync)
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                conn.close()
                raise sqlite3.DatabaseError("quick_check: " + check[:200])
        except sqlite3.DatabaseError as e:
            message = str(e)
            if isinstance(e, sqlite3.OperationalError) and (
                    "unable to open" in message or "readonly" in message
                    or "read-only" in message or "disk I/O" in message):
                raise BufferError("cannot open buffer {}: {}".format(self.path, message))
            if not os.path.exists(self.path):
                raise BufferError("cannot open buffer {}: {}".format(self.path, message))
            # Corrupt or not a database: never crash-loop on it.  Move it
            # aside (nothing is deleted) and start a fresh buffer.
            outcome["corrupt"] = message
            try:
                self.moved_aside = _move_aside(self.path, message, self.clock())
            except OSError as e2:
                raise BufferError("buffer {} is corrupt ({}) and cannot be moved aside: {}"
                                  .format(self.path, message, e2.strerror))
            conn = connect(self.path, sync=self.sync)
        # Checkpoints copy WAL pages into the file and fsync it: done on the
        # writer thread (SQLite's auto-checkpoint runs inside COMMIT) they
        # stall every ack queued behind them.  The checkpointer thread does
        # them instead, on its own connection, beside the writer.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        # When a checkpoint has caught up, the next commit rewinds the WAL to
        # its start; this caps the file's size at that moment, so the WAL is
        # bounded without TRUNCATE checkpoints (which stall the writer).
        conn.execute("PRAGMA journal_size_limit={}".format(WAL_LIMIT_BYTES))
        try:
            conn.execute("BEGIN IMMEDIATE")
            self.buffer_id = buffer_identity(conn)
            conn.execute("COMMIT")
            # Writability probe: a buffer we cannot mark would later
            # duplicate data, so refuse to start on one.
            conn.execute("BEGIN IMMEDIATE")
            insert_many(conn, [(0.0, b"\x00")])
            conn.execute("ROLLBACK")
        except sqlite3.Error as e:
            conn.close()
            raise BufferError("buffer {} is not writable: {}".format(self.path, e))
        counts = count_states(conn)
        self.pending = counts["pending"]
        self.claimed = counts["claimed"]
        self.quarantined = counts["quarantined"]
        self.drained_kept = counts["drained"]
        return conn

    def _checkpoint_loop(self):
        """
        The checkpointer: every CHECKPOINT_EVERY seconds a PASSIVE checkpoint
        (never blocks the writer); the writer's journal_size_limit then keeps
        the WAL file small.  Only if the WAL has run past WAL_TRUNCATE_BYTES
        anyway, a TRUNCATE checkpoint (it waits for the writer, stalling
        acks for a moment).  It writes no rows.
        """
        try:
            conn = sqlite3.connect(self.path, timeout=1.0, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=1000")
        except sqlite3.Error as e:
            self.checkpoint_error = str(e)
            return
        stop = self._checkpoint_stop
        try:
            while not stop.wait(CHECKPOINT_EVERY):
                mode = "TRUNCATE" if self.wal_size() > WAL_TRUNCATE_BYTES else "PASSIVE"
                try:
                    busy, _frames, _done = conn.execute(
                        "PRAGMA wal_checkpoint({})".format(mode)).fetchone()
                    self.checkpoints += 1
                    self.last_checkpoint = mode if not busy else mode + " (busy)"
                    self.checkpoint_error = None
                except sqlite3.Error as e:
                    self.checkpoint_error = str(e)
        finally:
            conn.close()

    def _run(self, ready, outcome):
        try:
            self._conn = self._open_conn(outcome)
        except BufferError as e:
            outcome["error"] = e
            ready.set()
            return
        except Exception as e:  # unexpected: still fail startup clearly
            outcome["error"] = BufferError("cannot open buffer {}: {!r}".format(self.path, e))
            ready.set()
            return
        ready.set()
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        while True:
            # Group commit: everything queued while the last transaction ran
            # goes into the next one.  (A fixed gathering window was measured
            # and lengthened the ack cycle more than it saved: none.)
            ops = [get()]
            try:
                while len(ops) < MAX_GROUP:
                    ops.append(get_nowait())
            except queue.Empty:
                pass
            closing = [op for op in ops if op[0] == "close"]
            work = [op for op in ops if op[0] != "close"]
            if work:
                try:
                    self._commit_group(work)
                    self._maybe_rewind_wal()
                except Exception:
                    # A bug, not a database error (those are handled inside):
                    # never let the writer thread die with callers waiting.
                    self.write_errors += 1
                    self.reactor.callFromThread(self._failUnfired, work, Failure())
            if closing:
                # Anything queued behind the close still gets committed.
                try:
                    while True:
                        late = get_nowait()
                        if late[0] != "close":
                            self._commit_group([late])
                        else:
                            closing.append(late)
                except queue.Empty:
                    pass
                try:
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    pass
                self._conn.close()
                self._lock.release()
                self.reactor.callFromThread(
                    self._deliver, [(d, None) for (_op, _arg, d) in closing])
                return

    def _maybe_rewind_wal(self):
        """
        Under steady writes a checkpoint running beside the writer never
        quite catches up, so the WAL never rewinds and grows without bound.
        When it passes WAL_LIMIT_BYTES, the writer itself (no transaction
        open, so no new frames meanwhile) runs a PASSIVE checkpoint: the
        checkpointer thread has already copied all but the last ~0.1 s of
        frames, so this is short, and it lets the next commit rewind the WAL
        (journal_size_limit then trims the file).
        """
        if self.wal_size() <= WAL_LIMIT_BYTES:
            return
        now = time.monotonic()
        if now - self._last_rewind < REWIND_EVERY:
            return
        self._last_rewind = now
        try:
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.rewinds += 1
        except sqlite3.Error as e:
            self.checkpoint_error = str(e)

    def _commit_group(self, ops):
        conn = self._conn
        now = self.clock()
        results = []
        deltas = []
        validate = self.validate
        valid = {}
        for op, batch, checked in ops:
            if op != "append":
                continue
            if checked:
                valid[id(batch)] = batch
                continue
            good = []
            for item in batch:
                try:
                    validate(item[0])
                except Exception:
                    results.append(([item], Failure()))
                else:
                    good.append(item)
            valid[id(batch)] = good
        try:
            conn.execute("BEGIN IMMEDIATE")
            appends = [(now, payload) for (op, batch, _d) in ops if op == "append"
                       for (payload, _pd) in valid[id(batch)]]
            if appends:
                if self._next_id is None:
                    self._next_id = next_id(conn)
                insert_many(conn, appends, first_id=self._next_id)
                self._next_id += len(appends)
                deltas.append(("pending", len(appends)))
            for op, arg, d in ops:
                if op == "append":
                    results.append((valid[id(arg)], None))
                else:
                    value, delta = getattr(self, "_op_" + op)(conn, arg, now)
                    deltas.extend(delta)
                    results.append((d, value))
            conn.execute("COMMIT")
        except Exception:
            failure = Failure()
            self._next_id = None  # re-read after a rollback
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if len(ops) > 1:
                # Retry one by one so a single bad operation fails alone.
                for op in ops:
                    self._commit_group([op])
                return
            self.write_errors += 1
            self.last_error = "{}: {}".format(failure.type.__name__, failure.getErrorMessage())
            op, arg, d = ops[0]
            # An append op carries its batch of (payload, Deferred) in arg.
            target = arg if op == "append" else d
            self.reactor.callFromThread(self._deliver, [(target, failure)])
            return
        for key, n in deltas:
            if key[0] == "=":  # an absolute count (recount), in operation order
                setattr(self, key[1:], n)
            else:
                setattr(self, key, getattr(self, key) + n)
        self.appended += sum(len(valid[id(op[1])]) for op in ops if op[0] == "append")
        self.commits += 1
        self.last_commit_at = now
        self.reactor.callFromThread(self._deliver, results)

    def _failUnfired(self, ops, failure):
        """Errback every Deferred of ``ops`` that has not fired yet (reactor thread)."""
        self.log.failure("buffer writer: unexpected error; failing the operations "
                         "of this group", failure)
        for op, arg, d in ops:
            targets = [pd for (_payload, pd) in arg] if op == "append" else [d]
            for n, target in enumerate(targets):
                if not target.called:
                    if op == "append":
                        self.inflight -= 1
                        self.inflight_bytes -= len(arg[n][0])
                    target.errback(failure)

    def _deliver(self, results):
        for target, value in results:
            if type(target) is list:  # a batch of appends
                self.inflight -= len(target)
                self.inflight_bytes -= sum(len(payload) for payload, _d in target)
                if isinstance(value, Failure):
                    for _payload, d in target:
                        d.errback(value)
                else:
                    for _payload, d in target:
                        d.callback(None)
            elif isinstance(value, Failure):
                target.errback(value)
            else:
                target.callback(value)

    # -- operations (run on the writer thread, inside a transaction) --------

    def _op_claim(self, conn, arg, now):
        worker, limit, max_bytes = arg
        if max_bytes is None:
            ids = [row[0] for row in conn.execute(
                "UPDATE payloads SET state = ?, state_at = ? WHERE id IN "
                "(SELECT id FROM payloads WHERE state = 0 ORDER BY id LIMIT ?) RETURNING id",
                (CLAIMED + worker, now, limit))]
        else:
            # bounded in bytes too (a running total; always at least one row)
            ids = [row[0] for row in conn.execute(
                "UPDATE payloads SET state = ?, state_at = ? WHERE id IN "
                "(SELECT id FROM (SELECT id, sum(coalesce(size, 0)) OVER (ORDER BY id) AS total, "
                "row_number() OVER (ORDER BY id) AS n FROM (SELECT id, size FROM payloads "
                "WHERE state = 0 ORDER BY id LIMIT ?)) WHERE total <= ? OR n = 1) RETURNING id",
                (CLAIMED + worker, now, limit, max_bytes))]
        ids.sort()
        return ids, [("pending", -len(ids)), ("claimed", len(ids))]

    def _op_mark_drained(self, conn, ids, now):
        claimed = pending = 0
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            params = [now] + list(chunk)
            claimed += conn.execute(
                "UPDATE payloads SET state = 1, state_at = ? "
                "WHERE state >= 100 AND id IN ({})".format(marks), params).rowcount
            # A row whose claim was released (its worker presumed dead) may
            # be reported by a later batch while pending again: drained too.
            pending += conn.execute(
                "UPDATE payloads SET state = 1, state_at = ? "
                "WHERE state = 0 AND id IN ({})".format(marks), params).rowcount
        n = claimed + pending
        return n, [("claimed", -claimed), ("pending", -pending), ("drained_kept", n)]

    def _op_quarantine(self, conn, items, now):
        claimed = pending = 0
        for id_, reason in items:
            row = conn.execute("SELECT state FROM payloads WHERE id = ?", (id_,)).fetchone()
            if row is None or row[0] in (QUARANTINED, DRAINED):
                continue
            conn.execute("UPDATE payloads SET state = 2, state_at = ?, error = ? WHERE id = ?",
                         (now, str(reason)[:200], id_))
            if row[0] == PENDING:
                pending += 1
            else:
                claimed += 1
        n = claimed + pending
        return n, [("claimed", -claimed), ("pending", -pending), ("quarantined", n)]

    def _op_release(self, conn, worker, now):
        if worker is None:
            n = conn.execute("UPDATE payloads SET state = 0, state_at = ? WHERE state >= 100",
                             (now,)).rowcount
        else:
            n = conn.execute("UPDATE payloads SET state = 0, state_at = ? WHERE state = ?",
                             (now, CLAIMED + worker)).rowcount
        return n, [("claimed", -n), ("pending", n)]

    def _op_requeue(self, conn, ids, now):
        if ids is None:
            n = conn.execute("UPDATE payloads SET state = 0, state_at = ?, error = NULL "
                             "WHERE state = 2", (now,)).rowcount
        else:
            n = 0
            for chunk in _chunks(ids):
                n += conn.execute(
                    "UPDATE payloads SET state = 0, state_at = ?, error = NULL "
                    "WHERE state = 2 AND id IN ({})".format(",".join("?" * len(chunk))),
                    [now] + list(chunk)).rowcount
        return n, [("quarantined", -n), ("pending", n)]

    def _op_run(self, conn, fn, now):
        return fn(conn), []

    def _op_housekeep(self, conn, arg, now):
        safety, quarantine_keep = arg
        deleted = conn.execute(
            "DELETE FROM payloads WHERE id IN (SELECT id FROM payloads WHERE state = 1 "
            "AND state_at < ? ORDER BY id LIMIT ?)", (now - safety, DELETE_CHUNK)).rowcount
        expired = conn.execute(
            "DELETE FROM payloads WHERE state = 2 AND state_at < ?",
            (now - quarantine_keep,)).rowcount
        self.low_water = low_water(conn)
        return {"deleted": deleted, "expired_quarantine": expired,
                "low_water": self.low_water}, [
            ("drained_kept", -deleted), ("quarantined", -expired)]

    # -- the API (reactor thread) -------------------------------------------

    def _submit(self, op, arg):
        if self._thread is None or self._closed:
            return defer.fail(BufferError("buffer is not open"))
        d = defer.Deferred()
        self._queue.put((op, arg, d))
        return d

    def refusal(self, size=0):
        """
        Why a new payload must be refused right now (back-pressure), or
        None.  Recovers by itself as the drain catches up.
        """
        if self.pending + self.claimed > self.max_pending:
            self.back_pressure = True
            return "back-pressure"
        if self.inflight >= self.max_queue:
            self.back_pressure = True
            return "back-pressure"
        if self.inflight_bytes + size > self.max_queue_bytes and self.inflight:
            # bounded in bytes too: 16 senders of gzip bombs must not queue gigabytes
            self.back_pressure = True
            return "back-pressure"
        self.back_pressure = False
        return None

    def append(self, payload, checked=False):
        """
        Queue a payload; fires (with None) once it is committed.

        Payloads appended during one reactor iteration are handed to the
        writer thread together, so the threads meet once per iteration, not
        once per payload.
        """
        d = defer.Deferred()
        (self._checked if checked else self._batch).append((payload, d))
        self.inflight += 1
        self.inflight_bytes += len(payload)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.reactor.callLater(0, self._flush)
        return d

    def _flush(self):
        self._flush_scheduled = False
        for batch, checked in ((self._batch, None), (self._checked, "checked")):
            if batch:
                self._hand_over(batch, checked)
        self._batch, self._checked = [], []

    def _hand_over(self, batch, checked):
        if self._thread is None or self._closed:
            self.inflight -= len(batch)
            self.inflight_bytes -= sum(len(payload) for payload, _d in batch)
            for _payload, d in batch:
                d.errback(BufferError("buffer is not open"))
            return
        self._queue.put(("append", batch, checked))

    def claim(self, worker, limit, max_bytes=None):
        """Claim up to ``limit`` pending rows, and up to ``max_bytes`` of payload (>= 1 row)."""
        return self._submit("claim", (worker, limit, max_bytes))

    def mark_drained(self, ids):
        return self._submit("mark_drained", list(ids))

    def quarantine(self, items):
        return self._submit("quarantine", [(i, r) for (i, r) in items])

    def release(self, worker=None):
        return self._submit("release", worker)

    def requeue_quarantined(self, ids=None):
        return self._submit("requeue", None if ids is None else list(ids))

    def run(self, fn):
        """Run ``fn(conn)`` on the writer thread inside a transaction."""
        return self._submit("run", fn)

    def housekeep(self, safety=SAFETY_WINDOW, quarantine_keep=QUARANTINE_KEEP):
        """
        Delete drained rows older than the safety window and expired
        quarantine, a chunk per transaction, then give freed pages back to
        the file system in small slices (checkpoints are the checkpointer
        thread's job).
        """
        total = {"deleted": 0}

        def chunk(result=None):
            if result is not None:
                total["deleted"] += result["deleted"]
                total.update((k, v) for k, v in result.items() if k != "deleted")
                if result["deleted"] < DELETE_CHUNK:
                    return self._submit("run", self._compact).addCallback(
                        lambda extra: dict(total, **extra))
            # one chunk per transaction; appends queued meanwhile go between
            return self._submit("housekeep", (safety, quarantine_keep)).addCallback(chunk)
        return chunk()

    def _compact(self, conn):
        """
        Give free pages back to the file system, a slice at a time, once
        they are a large share of the file (after a backlog drained); in
        steady state new rows reuse them and there is nothing to do.
        """
        free_pages = conn.execute("PRAGMA freelist_count").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        freed = 0
        if free_pages > VACUUM_MIN_PAGES and free_pages * 4 > pages:
            # incremental_vacuum must run outside a transaction
            conn.execute("COMMIT")
            try:
                conn.execute("PRAGMA incremental_vacuum({})".format(VACUUM_SLICE)).fetchall()
                freed = min(free_pages, VACUUM_SLICE)
            finally:
                conn.execute("BEGIN IMMEDIATE")
        return {"freed_pages": freed, "free_pages": free_pages - freed,
                "wal_bytes": self.wal_size(), "checkpoint": self.last_checkpoint}

    def recount(self):
        """
        Recompute the state counters from the file (drift repair, e.g. after
        an operator ran `nightowl buffer requeue` beside the agent).  The
        counts are taken inside the group's transaction and replace the
        counters at their place in operation order, so appends committed in
        the same group are not counted twice.
        """
        return self._submit("recount", None)

    def _op_recount(self, conn, arg, now):
        counts = count_states(conn)
        return counts, [("=pending", counts["pending"]), ("=claimed", counts["claimed"]),
                        ("=quarantined", counts["quarantined"]),
                        ("=drained_kept", counts["drained"])]

    def alive(self):
        """True while the writer thread runs and the buffer is open."""
        return self._thread is not None and self._thread.is_alive() and not self._closed

    def queued(self):
        return self._queue.qsize()

    def file_size(self):
        try:
            return os.path.getsize(self.path)
        except OSError:
            return 0

    def wal_size(self):
        try:
            return os.path.getsize(self.path + "-wal")
        except OSError:
            return 0

    def stats(self):
        return {
            "path": self.path,
            "buffer_id": self.buffer_id,
            "pending": self.pending,
            "claimed": self.claimed,
            "quarantined": self.quarantined,
            "drained_kept": self.drained_kept,
            "queued": self.inflight,
            "queued_bytes": self.inflight_bytes,
            "max_queue_bytes": self.max_queue_bytes,
            "appended": self.appended,
            "commits": self.commits,
            "write_errors": self.write_errors,
            "last_error": self.last_error,
            "last_commit_at": self.last_commit_at,
            "file_bytes": self.file_size(),
            "wal_bytes": self.wal_size(),
            "back_pressure": self.back_pressure,
            "checkpoints": self.checkpoints,
            "wal_rewinds": self.rewinds,
            "last_checkpoint": self.last_checkpoint,
            "checkpoint_error": self.checkpoint_error,
            "max_pending": self.max_pending,
        }


def low_water(conn):
    """
    The smallest id not yet finished (pending or claimed), or one past the
    largest id ever given out when everything is finished.
    """
    candidates = [row[0] for row in (
        conn.execute("SELECT min(id) FROM payloads WHERE state = 0").fetchone(),
        conn.execute("SELECT min(id) FROM payloads WHERE state >= 100").fetchone())
        if row[0] is not None]
    if candidates:
        return min(candidates)
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'payloads'").fetchone()
    return (row[0] if row else 0) + 1


def oldest_pending_age(conn, now):
    row = conn.execute(
        "SELECT received_at FROM payloads WHERE state = 0 ORDER BY id LIMIT 1").fetchone()
    return 0.0 if row is None else max(0.0, now - row[0])
