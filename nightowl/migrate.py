"""
Apply nightowl/schema/*.sql in order, each once, under an advisory lock.

History lives in ``nightowl_migrations(name, applied_at)``.  Every migration
runs in its own transaction which first takes
``pg_advisory_xact_lock(MIGRATION_LOCK)``: two agents migrating at once
serialize, and the second finds the work done.  Re-running is a no-op.
After the migrations, the daily partitions are ensured.

Also the ``nightowl migrate`` subcommand (``configure`` / ``run``).
"""

import os
import re
from importlib import resources

import psycopg2
from twisted.logger import Logger

_log = Logger(namespace="nightowl.migrate")

#: any fixed 64-bit key; shared by every nightowl agent
MIGRATION_LOCK = 0x6E696768746F776C  # "nightowl"

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


def mask_dsn(dsn):
    """The DSN with any password replaced by ***."""
    dsn = re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", dsn or "")
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", dsn)


def apply(dsn_or_conn, log=None, partitions=True):
    """Apply pending migrations; return the names applied (maybe empty)."""
    log = log or _log
    own = isinstance(dsn_or_conn, str)
    conn = psycopg2.connect(dsn_or_conn, connect_timeout=10,
                            application_name="nightowl-migrate") if own else dsn_or_conn
    applied = []
    try:
        conn.autocommit = False
        with conn:
            cur = conn.cursor()
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            cur.execute(HISTORY_DDL)
        for name, sql in migrations():
            with conn:
                cur = conn.cursor()
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                cur.execute("SELECT 1 FROM nightowl_migrations WHERE name = %s", (name,))
                if cur.fetchone():
                    continue
                cur.execute(sql)
                cur.execute("INSERT INTO nightowl_migrations (name) VALUES (%s)", (name,))
            applied.append(name)
            log.info("applied migration {name}", name=name)
        if partitions:
            from nightowl.partitions import ensure_partitions
            ensure_partitions(conn, log=log)
    finally:
        if own:
            conn.close()
    return applied


# ---------------------------------------------------------------------------
# nightowl migrate

def configure(parser):
    parser.add_argument("--dsn", default=os.environ.get("NIGHTOWL_DSN"),
                        help="PostgreSQL DSN (default: $NIGHTOWL_DSN)")


def run(args):
    from nightowl.cli import CommandError
    if not args.dsn:
        raise CommandError("no DSN: pass --dsn or set NIGHTOWL_DSN")
    try:
        conn = psycopg2.connect(args.dsn, connect_timeout=10, application_name="nightowl-migrate")
    except psycopg2.Error as e:
        first = (str(e).strip().splitlines() or ["connection failed"])[0]
        raise CommandError("cannot connect to {}: {}".format(
            mask_dsn(args.dsn), mask_dsn(first)))
    try:
        try:
            applied = apply(conn)
        except psycopg2.Error as e:
            raise CommandError("migration failed ({}): {}".format(
                e.pgcode or "no SQLSTATE", (str(e).strip().splitlines() or [""])[0]))
    finally:
        conn.close()
    if applied:
        for name in applied:
            print("applied " + name)
    else:
        print("schema up to date")
    return 0
