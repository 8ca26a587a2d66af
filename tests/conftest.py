"""
Shared test fixtures.

Postgres: tests that need it take the ``pg_dsn`` fixture, which creates a
fresh database for the test module and drops it afterwards.  If Postgres is
unreachable the test fails with one clear line; it never skips.
"""

import os
import uuid

import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir,
                        "shared", "fixtures", "nightwatch")
ADMIN_DSN = os.environ.get(
    "NIGHTOWL_TEST_ADMIN_DSN",
    "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5")


def fixtures_dir():
    """../shared/fixtures/nightwatch, found from the repo or the CI clone."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.environ.get("NIGHTOWL_FIXTURES"),
                      os.path.join(here, "..", "..", "shared", "fixtures", "nightwatch"),
                      "/work/shared/fixtures/nightwatch"):
        if candidate and os.path.isdir(candidate):
            return os.path.abspath(candidate)
    pytest.fail("fixtures not found: set NIGHTOWL_FIXTURES to shared/fixtures/nightwatch",
                pytrace=False)


def _admin():
    import psycopg2
    try:
        conn = psycopg2.connect(ADMIN_DSN)
    except psycopg2.OperationalError as e:
        pytest.fail("PostgreSQL unreachable ({}): {}".format(
            ADMIN_DSN, str(e).strip().splitlines()[0]), pytrace=False)
    conn.autocommit = True
    return conn


def create_database():
    """Create an empty database; return (name, dsn)."""
    name = "nightowl_t_" + uuid.uuid4().hex[:12]
    conn = _admin()
    try:
        conn.cursor().execute("CREATE DATABASE " + name)
    finally:
        conn.close()
    dsn = ADMIN_DSN.replace("dbname=postgres", "dbname=" + name)
    if "dbname=" + name not in dsn:
        dsn = ADMIN_DSN + " dbname=" + name
    return name, dsn


def drop_database(name):
    conn = _admin()
    try:
        conn.cursor().execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (name,))
        conn.cursor().execute("DROP DATABASE IF EXISTS " + name)
    finally:
        conn.close()


def fetch(dsn, sql, *args):
    """Run one query on its own connection; all rows."""
    import psycopg2
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        cur.execute(sql, args)
        return cur.fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def pg_dsn():
    name, dsn = create_database()
    yield dsn
    drop_database(name)


@pytest.fixture
def fresh_pg_dsn():
    name, dsn = create_database()
    yield dsn
    drop_database(name)


@pytest.fixture
def fixtures():
    return fixtures_dir()
