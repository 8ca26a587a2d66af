"""
``nightowl buffer inspect|requeue|verify``: look into the SQLite buffer.

* ``inspect`` counts rows by state, lists the oldest pending rows and the
  quarantined ones with their error.  Read-only.
* ``requeue`` moves quarantined rows back to pending, in small transactions.
  Safe while the agent runs: SQLite's file locking serialises us with the
  agent's writer thread (each of our transactions is ``BEGIN IMMEDIATE``,
  and ``busy_timeout`` makes either side wait its turn instead of failing);
  the drain claims the rows on its next claim.  The running agent's counters
  (``/status``) catch up within a minute.
* ``verify`` runs ``PRAGMA integrity_check`` and checks the buffer's identity
  (``meta.buffer_id``) and schema; exit 1 on any problem.  Read-only.
"""

import os
import sqlite3
import time

from nightowl.buffer import schema as nbuffer, states as buffer_states
from nightowl.admin.progress import human_size

CHUNK = 500
SCHEMA_VERSION = nbuffer.SCHEMA_VERSION  # the layout verify expects (meta.schema)


def configure(parser):
    parser.add_argument("action", choices=("inspect", "requeue", "verify"),
                        help="inspect: counts and oldest/quarantined rows; requeue: "
                             "quarantined -> pending; verify: integrity check")
    from nightowl.tap import DEFAULT_BUFFER
    parser.add_argument("--buffer", default=None, metavar="PATH",
                        help="the buffer file (default: NIGHTOWL_BUFFER, else {}, as the "
                             "agent)".format(DEFAULT_BUFFER))
    parser.add_argument("--limit", type=int, default=10,
                        help="rows listed per section by inspect (default 10)")


def buffer_path(args):
    from nightowl.errors import CommandError
    from nightowl.tap import option_value
    path = option_value("buffer", args.buffer, os.environ)   # where the agent keeps it
    if not os.path.isfile(path):
        raise CommandError("no buffer file at {}".format(path))
    return path


def open_readonly(path):
    """A read-only connection (never creates or changes anything)."""
    from nightowl.errors import CommandError
    uri = "file:{}?mode=ro".format(os.path.abspath(path).replace("?", "%3f").replace("#", "%23"))
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None)
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as e:
        raise CommandError("{} is not a readable SQLite buffer: {}".format(path, e))
    return conn




def _state_name(state):
    if state == buffer_states.PENDING:
        return "pending"
    if state == buffer_states.DRAINED:
        return "drained"
    if state == buffer_states.QUARANTINED:
        return "quarantined"
    if state >= buffer_states.CLAIMED:
        return "claimed by worker {}".format(state - buffer_states.CLAIMED)
    return "unknown state {}".format(state)


def inspect(path, limit, out=print):
    from nightowl.errors import CommandError
    conn = open_readonly(path)
    now = time.time()
    try:
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta"))
            states = list(conn.execute(
                "SELECT state, count(*), coalesce(sum(size), 0) FROM payloads "
                "GROUP BY state ORDER BY state"))
            oldest = list(conn.execute(
                "SELECT id, received_at, size FROM payloads WHERE state = ? "
                "ORDER BY id LIMIT ?", (buffer_states.PENDING, limit)))
            quarantined = list(conn.execute(
                "SELECT id, received_at, state_at, size, error FROM payloads "
                "WHERE state = ? ORDER BY id LIMIT ?", (buffer_states.QUARANTINED, limit)))
        except sqlite3.DatabaseError as e:
            raise CommandError("cannot read {}: {}".format(path, e))
    finally:
        conn.close()
    wal = path + "-wal"
    out("buffer {} (id {}, schema {})".format(path, meta.get("buffer_id", "MISSING"),
                                              meta.get("schema", "?")))
    out("file {}, WAL {}".format(human_size(os.path.getsize(path)),
                                 human_size(os.path.getsize(wal) if os.path.exists(wal) else 0)))
    if not states:
        out("no rows")
    total = 0
    for state, count, nbytes in states:
        total += count
        out("  {:<22} {:>10} rows  {:>10}".format(_state_name(state), count, human_size(nbytes)))
    if oldest:
        out("oldest pending rows:")
        for id_, received_at, size in oldest:
            out("  id {:<10} age {:>10.1f} s  size {}".format(id_, now - received_at, human_size(size)))
    if quarantined:
        out("quarantined rows (fix the cause, then `nightowl buffer requeue`):")
        for id_, received_at, state_at, size, error in quarantined:
            out("  id {:<10} age {:>10.1f} s  size {:<10} error: {}".format(
                id_, now - received_at, human_size(size), error or "(none recorded)"))
    return total


def requeue(path, progress_stream=None):
    """Quarantined -> pending in small transactions; returns the number moved."""
    from nightowl.admin.progress import Progress
    from nightowl.errors import CommandError
    try:
        conn = nbuffer.connect(path)
    except (sqlite3.DatabaseError, nbuffer.BufferError) as e:
        raise CommandError("cannot open {}: {}".format(path, e))
    try:
        try:
            ids = [row[0] for row in conn.execute(
                "SELECT id FROM payloads WHERE state = ? ORDER BY id",
                (buffer_states.QUARANTINED,))]
        except sqlite3.DatabaseError as e:
            raise CommandError("cannot read {}: {}".format(path, e))
        if not ids:
            return 0
        progress = Progress("requeue", total=len(ids), stream=progress_stream)
        moved = 0
        for i in range(0, len(ids), CHUNK):
            chunk = ids[i:i + CHUNK]
            try:
                conn.execute("BEGIN IMMEDIATE")
                moved += buffer_states.requeue(conn, chunk, time.time())
                conn.execute("COMMIT")
            except sqlite3.DatabaseError as e:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                progress.finish("failed after {} rows".format(moved))
                raise CommandError("requeue stopped after {} rows: {}".format(moved, e))
            progress.update(i + len(chunk))
        progress.finish("{} rows moved to pending".format(moved))
        return moved
    finally:
        conn.close()


def verify(path):
    """A list of problems (empty when the buffer is sound)."""
    problems = []
    try:
        conn = open_readonly(path)
    except Exception as e:
        return [str(e)]
    try:
        try:
            result = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as e:
            return ["integrity_check failed: {}".format(e)]
        if result != ["ok"]:
            problems.extend("integrity: " + line for line in result[:20])
        tables = set(row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'"))
        for table in ("meta", "payloads"):
            if table not in tables:
                problems.append("table {} is missing".format(table))
        if "meta" in tables:
            meta = dict(conn.execute("SELECT key, value FROM meta"))
            if not meta.get("buffer_id"):
                problems.append("meta buffer_id is missing: the buffer has no identity")
            # "2": a file the agent upgrades in place at its next start (forwards table)
            if meta.get("schema") not in (SCHEMA_VERSION, "2"):
                problems.append("meta schema is {!r}, expected {!r}".format(
                    meta.get("schema"), SCHEMA_VERSION))
        if "payloads" in tables:
            bad = conn.execute(
                "SELECT count(*) FROM payloads WHERE state NOT IN (?, ?, ?) AND state < ?",
                (buffer_states.PENDING, buffer_states.DRAINED, buffer_states.QUARANTINED,
                 buffer_states.CLAIMED)).fetchone()[0]
            if bad:
                problems.append("{} rows have an unknown state".format(bad))
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if mode.lower() != "wal":
            problems.append("journal_mode is {}, expected wal".format(mode))
    except sqlite3.DatabaseError as e:
        problems.append("cannot read: {}".format(e))
    finally:
        conn.close()
    return problems


def run(args):
    path = buffer_path(args)
    if args.action == "inspect":
        inspect(path, max(0, args.limit))
        return 0
    if args.action == "requeue":
        from nightowl.buffer.lock import holder
        owner = holder(path)
        if owner is not None:
            # safe beside the agent: small transactions on quarantined rows only,
            # which the agent's writer does not change; it recounts them itself
            print("{} is owned by the running agent (pid {}): requeueing beside it; the "
                  "agent's counters catch up at its next recount".format(path, owner))
        moved = requeue(path)
        if not moved:
            print("no quarantined rows in {}".format(path))
        else:
            print("requeued {} quarantined rows in {}; the drain picks them up on its next "
                  "claim".format(moved, path))
        return 0
    problems = verify(path)
    if problems:
        for problem in problems:
            print("PROBLEM " + problem)
        print("{}: {} problem(s)".format(path, len(problems)))
        return 1
    print("{}: ok (integrity_check ok, buffer id present, schema {})".format(path, SCHEMA_VERSION))
    return 0
