"""
Apply nightowl/schema/*.sql in order, each once, under an advisory lock.

History lives in ``nightowl_migrations(name, applied_at)``.  One run holds
the session-level ``pg_advisory_lock(MIGRATION_LOCK)`` from before it reads
the history until after the partitions are ensured (each migration still
commits in its own transaction): two agents migrating at once serialize
whole, and the second finds the work done.  Re-running is a no-op.

``connect`` opens the DSN's database and, when it does not exist and the
role may create databases, creates it first (one log line).

Also the ``nightowl migrate`` subcommand (``configure`` / ``run``).
"""

import os
import re
from importlib import resources

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from twisted.logger import Logger

from nightowl.dsn import mask_dsn

_log = Logger(namespace="nightowl.migrate")

#: any fixed 64-bit key; shared by every nightowl agent
MIGRATION_LOCK = 0x6E696768746F776C  # "nightowl"
#: daily partitions created ahead by a migration (nightowl.partitions makes the
#: rest: the maintenance child and the retention sweep keep a week ahead)
MIGRATE_DAYS_AHEAD = 1

HISTORY_DDL = """CREATE TABLE IF NOT EXISTS nightowl_migrations (
    name text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


def migrations():
    """[(name, sql)] of the packaged migrations, in name order."""
    files = resources.files("nightowl") / "schema"
    out = []
    for entry in files.iterdir():
        if entry.name.endswith(".sql") and re.match(r"\d{4}_", entry.name):
            out.append((entry.name, entry.read_text(encoding="utf-8")))
    out.sort()
    return out


CONNECT_OPTIONS = dict(connect_timeout=10, application_name="nightowl-migrate")


def connect(dsn, log=None, create=True):
    """
    Connect to ``dsn``.  If its database does not exist (SQLSTATE 3D000) and
    ``create``, create it when the role may (superuser or CREATEDB) and log
    one line; otherwise the original error is raised.
    """
    log = log or _log
    try:
        return psycopg2.connect(dsn, **CONNECT_OPTIONS)
    except psycopg2.OperationalError as e:
        from nightowl import pgerrors
        if not create or pgerrors.sqlstate(e) != "3D000":
            raise
        missing = e
    params = psycopg2.extensions.parse_dsn(dsn)
    name = params.get("dbname") or params.get("user")
    if not name or not _create_database(dsn, name, log):
        raise missing
    return psycopg2.connect(dsn, **CONNECT_OPTIONS)


def _create_database(dsn, name, log):
    """CREATE DATABASE ``name`` from the maintenance database; False if not allowed."""
    from psycopg2 import sql
    admin = None
    for maintenance in ("postgres", "template1"):
        try:
            admin = psycopg2.connect(dsn, dbname=maintenance, **CONNECT_OPTIONS)
            break
        except psycopg2.OperationalError:
            continue
    if admin is None:
        return False
    try:
        admin.autocommit = True
        cur = admin.cursor()
        cur.execute("SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user")
        row = cur.fetchone()
        if not row or not row[0]:
            return False
        try:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except psycopg2.errors.DuplicateDatabase:
            return True   # another agent made it just now
        log.info("created database {name}: it did not exist and role {role} may create "
                 "databases", name=name, role=admin.info.user)
        return True
    finally:
        admin.close()


def apply(dsn_or_conn, log=None, partitions=True):
    """Apply pending migrations; return the names applied (maybe empty)."""
    log = log or _log
    own = isinstance(dsn_or_conn, str)
    conn = connect(dsn_or_conn, log=log) if own else dsn_or_conn
    applied = []
    try:
        conn.autocommit = False
        cur = conn.cursor()
        cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
        conn.commit()   # the session lock outlives this transaction
        try:
            with conn:
                conn.cursor().execute(HISTORY_DDL)
            for name, sql in migrations():
                with conn:
                    cur = conn.cursor()
                    cur.execute("SELECT 1 FROM nightowl_migrations WHERE name = %s", (name,))
                    if cur.fetchone():
                        continue
                    cur.execute(sql)
                    cur.execute("INSERT INTO nightowl_migrations (name) VALUES (%s)", (name,))
                applied.append(name)
                log.info("applied migration {name}", name=name)
            if partitions:
                from nightowl.partitions import ensure_partitions
                # today and its neighbours only: the drain's maintenance child (or
                # the retention sweep) creates the rest of the week ahead at start,
                # and a row for a day without its child waits in DEFAULT until then
                ensure_partitions(conn, days_ahead=MIGRATE_DAYS_AHEAD, log=log)
        finally:
            _unlock(conn)
    finally:
        if own:
            conn.close()
    return applied


def _unlock(conn):
    """Release the session lock (closing the connection would too)."""
    if conn.closed:
        return
    try:
        if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            conn.rollback()
        conn.cursor().execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
        conn.commit()
    except psycopg2.Error:
        pass


# ---------------------------------------------------------------------------
# nightowl migrate

def configure(parser):
    parser.add_argument("--dsn", default=os.environ.get("NIGHTOWL_DSN"),
                        help="PostgreSQL DSN (default: $NIGHTOWL_DSN)")


def run(args):
    from nightowl.errors import CommandError
    if not args.dsn:
        raise CommandError("no DSN: pass --dsn or set NIGHTOWL_DSN")
    from nightowl import pgerrors
    try:
        conn = connect(args.dsn)
    except psycopg2.Error as e:
        raise CommandError("cannot connect to {}: {}".format(
            mask_dsn(args.dsn), pgerrors.describe(e)))
    try:
        try:
            applied = apply(conn)
        except psycopg2.Error as e:
            raise CommandError("migration failed: {}".format(pgerrors.describe(e)))
    finally:
        conn.close()
    if applied:
        for name in applied:
            print("applied " + name)
    else:
        print("schema up to date")
    return 0
