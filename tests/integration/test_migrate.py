"""nightowl.migrate against a real PostgreSQL."""

import threading

import psycopg2

from tests.conftest import fetch
from nightowl import cli, migrate
from nightowl.records import COLUMNS, RAW_TABLES

ALL = [name for name, _sql in migrate.migrations()]


def test_applies_then_noop(fresh_pg_dsn, capsys):
    names = [n for n, _ in migrate.migrations()]
    assert names[0] == "0001_base.sql"
    assert migrate.apply(fresh_pg_dsn) == names
    assert migrate.apply(fresh_pg_dsn) == []
    assert [n for n, in fetch(fresh_pg_dsn, "SELECT name FROM nightowl_migrations ORDER BY name")] == names
    # the schema matches the column mapping exactly
    for table in RAW_TABLES:
        cols = [c for c, in fetch(fresh_pg_dsn, "SELECT column_name FROM information_schema.columns "
                                  "WHERE table_name = %s ORDER BY ordinal_position", table)]
        assert cols == ["id"] + list(COLUMNS[table]), table
        kind, = fetch(fresh_pg_dsn, "SELECT relkind FROM pg_class WHERE relname = %s", table)
        assert kind == ("p",)
        assert fetch(fresh_pg_dsn, "SELECT to_regclass(%s) IS NOT NULL", table + "_pdefault") == [(True,)]
    assert fetch(fresh_pg_dsn, "SELECT relkind FROM pg_class WHERE relname IN "
                 "('nightowl_users', 'nightowl_issues', 'nightowl_issue_users', 'nightowl_ingest_ledger') "
                 "ORDER BY relname") == [("r",)] * 4
    # the CLI contract
    assert cli.main(["migrate", "--dsn", fresh_pg_dsn]) == 0
    assert capsys.readouterr().out == "schema up to date\n"


def test_cli_prints_applied(fresh_pg_dsn, capsys):
    assert cli.main(["migrate", "--dsn", fresh_pg_dsn]) == 0
    assert capsys.readouterr().out == "".join("applied {}\n".format(n) for n in ALL)


def test_cli_cannot_connect_masks_password(capsys):
    rc = cli.main(["migrate", "--dsn", "host=127.0.0.1 port=1 user=postgres password=s3cret dbname=x"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.startswith("nightowl migrate: cannot connect to ")
    assert "password=***" in err and "s3cret" not in err
    assert err.count("\n") == 1


def test_concurrent_apply(fresh_pg_dsn):
    results, errors = [], []
    start = threading.Barrier(4)

    def go():
        try:
            start.wait()
            results.append(migrate.apply(fresh_pg_dsn))
        except Exception as e:  # collected and asserted below
            errors.append(e)
    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # each migration is applied exactly once, in order within each thread; which thread
    # applies which one is a race (the advisory lock is taken per migration)
    assert len(results) == 4 and sorted(sum(results, [])) == ALL
    assert all(r == sorted(r) for r in results)
    assert fetch(fresh_pg_dsn, "SELECT name FROM nightowl_migrations ORDER BY name") == [
        (n,) for n in ALL]


def test_apply_accepts_a_connection(fresh_pg_dsn):
    conn = psycopg2.connect(fresh_pg_dsn)
    try:
        assert migrate.apply(conn) == ALL
        assert not conn.closed
    finally:
        conn.close()


def test_created_at_is_brin_indexed_not_btree(fresh_pg_dsn):
    migrate.apply(fresh_pg_dsn)
    rows = fetch(fresh_pg_dsn, """
        SELECT c.relname, am.amname FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam
        JOIN pg_class t ON t.oid = i.indrelid
        WHERE t.relname = 'nightowl_requests' AND c.relname LIKE '%%created_at%%'
        ORDER BY 1""")
    assert ("nightowl_requests_created_at_brin", "brin") in rows
    assert ("nightowl_requests_created_at_idx", "btree") not in rows


def test_concurrent_apply_many_rounds(fresh_pg_dsn):
    """
    One lock for the whole run: however three appliers interleave, exactly
    one of them applies every migration and the others find nothing to do.
    (With a lock per migration, about 1 run in 15 split the work.)
    """
    rounds, appliers = 30, 3
    for round_ in range(rounds):
        if round_:
            conn = psycopg2.connect(fresh_pg_dsn)
            conn.autocommit = True
            conn.cursor().execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
            conn.close()
        results, errors = [], []
        start = threading.Barrier(appliers)

        def go():
            try:
                start.wait()
                results.append(migrate.apply(fresh_pg_dsn, partitions=round_ % 10 == 0))
            except Exception as e:  # collected and asserted below
                errors.append(e)
        threads = [threading.Thread(target=go) for _ in range(appliers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [], "round {}".format(round_)
        assert sorted(results, key=len) == [[]] * (appliers - 1) + [ALL], "round {}".format(round_)
        assert fetch(fresh_pg_dsn, "SELECT name, count(*) FROM nightowl_migrations "
                     "GROUP BY name ORDER BY name") == [(n, 1) for n in ALL]


def test_creates_a_missing_database_when_the_role_may(capsys):
    from tests.conftest import ADMIN_DSN, drop_database
    name = "nightowl_t_missing_" + __import__("uuid").uuid4().hex[:8]
    dsn = ADMIN_DSN.replace("dbname=postgres", "dbname=" + name)
    try:
        assert cli.main(["migrate", "--dsn", dsn]) == 0
        assert fetch(dsn, "SELECT count(*) FROM nightowl_migrations") == [(len(ALL),)]
    finally:
        drop_database(name)


def test_a_missing_role_is_named_in_one_line(capsys):
    rc = cli.main(["migrate", "--dsn", "host=127.0.0.1 dbname=postgres user=nightowl_no_such_role"])
    err = capsys.readouterr().err
    assert rc == 1
    assert err.count("\n") == 1
    assert 'role missing (SQLSTATE 28000): role "nightowl_no_such_role" does not exist' in err
