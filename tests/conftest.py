"""
Shared test fixtures.

Postgres: tests that need it take the ``pg_dsn`` fixture, which creates a
fresh database for the test module and drops it afterwards.  If Postgres is
unreachable the test fails with one clear line; it never skips.
"""

import os
import shutil
import tempfile
import uuid

import pytest

#: SDK-shaped records, one file per record type, carried by the repository.
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "nightwatch")
ADMIN_DSN = os.environ.get(
    "NIGHTOWL_TEST_ADMIN_DSN",
    "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5")


_OWN_BASETEMP = []


def pytest_configure(config):
    """
    tmp_path directories live in a base directory of this run only, removed
    when the run ends: the suite leaves nothing behind in /tmp (pytest's own
    default keeps the last runs under /tmp/pytest-of-<user>).
    """
    if config.option.basetemp is None:
        base = tempfile.mkdtemp(prefix="nightowl-pytest-")
        _OWN_BASETEMP.append(base)
        config.option.basetemp = base


def pytest_unconfigure(config):
    while _OWN_BASETEMP:
        shutil.rmtree(_OWN_BASETEMP.pop(), ignore_errors=True)


def fixtures_dir():
    """tests/fixtures/nightwatch: the in-repo copy, never anything outside the checkout."""
    if not os.path.isdir(FIXTURES):
        pytest.fail("fixtures not found at {}".format(FIXTURES), pytrace=False)
    return FIXTURES


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


@pytest.fixture
def writer(tmp_path):
    """
    An open BufferWriter on a fresh file and its ThreadReactor, for the
    tests/test_buffer_*.py modules; closed afterwards if the test left it open.
    """
    from nightowl.buffer.writer import BufferWriter
    from tests.fakes import ThreadReactor
    reactor = ThreadReactor()
    w = BufferWriter(str(tmp_path / "b.sqlite"), reactor=reactor, max_pending=100)
    w.open()
    yield w, reactor
    if w.is_open():
        reactor.wait(w.close())


@pytest.fixture
def clean_env(monkeypatch):
    """
    No NIGHTOWL_* defaults from the caller's environment: the tests/test_admin_*.py
    modules use it for every test (``pytestmark = pytest.mark.usefixtures("clean_env")``).
    """
    for var in ("NIGHTOWL_LISTEN", "NIGHTOWL_HEALTH", "NIGHTOWL_TOKEN", "NIGHTWATCH_TOKEN",
                "NIGHTOWL_BUFFER", "NIGHTOWL_DSN", "NIGHTOWL_RETENTION_DAYS"):
        monkeypatch.delenv(var, raising=False)
