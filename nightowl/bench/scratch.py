"""
Scratch databases for the benchmarks and fault trials: the ``--admin-dsn``
option (a DSN allowed to CREATE DATABASE, local cluster by default), and a
uniquely named database created on it and dropped after (its backends
terminated first).
"""

import os
import re
import uuid

DEFAULT_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5"


def add_admin_dsn(parser, env="NIGHTOWL_BENCH_ADMIN_DSN",
                  help="a Postgres DSN allowed to CREATE DATABASE (a scratch database is "
                       "made and dropped)"):
    """``--admin-dsn``, defaulting to ``$env`` or the local cluster."""
    parser.add_argument("--admin-dsn", default=os.environ.get(env, DEFAULT_ADMIN_DSN), help=help)


def _admin(admin_dsn):
    import psycopg2
    conn = psycopg2.connect(admin_dsn)
    conn.autocommit = True
    return conn


def create_database(admin_dsn):
    """A fresh ``nightowl_bench_*`` database; ``(name, its dsn)``."""
    name = "nightowl_bench_" + uuid.uuid4().hex[:10]
    conn = _admin(admin_dsn)
    try:
        conn.cursor().execute("CREATE DATABASE " + name)
    finally:
        conn.close()
    if "dbname=" in admin_dsn:
        dsn = re.sub(r"dbname=\S+", "dbname=" + name, admin_dsn)
    else:
        dsn = admin_dsn + " dbname=" + name
    return name, dsn


def drop_database(admin_dsn, name):
    conn = _admin(admin_dsn)
    try:
        cur = conn.cursor()
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (name,))
        cur.execute("DROP DATABASE IF EXISTS " + name)
    finally:
        conn.close()
