"""nightowl.pgwrite.BatchWriter against a real PostgreSQL."""

import glob
import os
import uuid

import orjson
import psycopg2
import pytest

from tests.conftest import fetch
from nightowl import migrate
from nightowl.batcherrors import PostgresSchemaError, PostgresUnavailable, classify
from nightowl.pgwrite import BatchWriter

NOW = 1714694500.0  # the fixtures' day (2024-05-03 UTC)
ENV = "production"


def load(fixtures, name):
    with open(os.path.join(fixtures, name)) as f:
        return [orjson.loads(line) for line in f if line.strip()]


def writer(dsn, **kw):
    kw.setdefault("clock", lambda: NOW)
    return BatchWriter(dsn, ENV, kw.pop("buffer_id", str(uuid.uuid4())), **kw)


@pytest.fixture
def db(fresh_pg_dsn):
    migrate.apply(fresh_pg_dsn)
    return fresh_pg_dsn


@pytest.fixture(scope="module")
def fixture_db(pg_dsn):
    """Every fixture file written once, one payload per file."""
    migrate.apply(pg_dsn)
    rows = []
    for i, path in enumerate(sorted(glob.glob(os.path.join(fixtures_path(), "*.jsonl")))):
        with open(path) as f:
            rows.append((i + 1, f.read().strip().replace("\n", ",").join("[]").encode()))
    w = writer(pg_dsn)
    result = w.write(rows)
    w.close()
    return pg_dsn, result


def fixtures_path():
    from tests.conftest import fixtures_dir
    return fixtures_dir()


def test_fixture_batch_result(fixture_db, fixtures):
    dsn, result = fixture_db
    total = sum(len(load(fixtures, os.path.basename(p)))
                for p in glob.glob(os.path.join(fixtures, "*.jsonl")))
    assert result.drained == list(range(1, 14))
    assert result.quarantined == []
    assert result.skipped == {}
    assert total == 91 and result.records == total  # every record of every file
    assert result.rows_by_table["nightowl_requests"] == 34
    assert result.rows_by_table["nightowl_jobs"] == 8
    assert result.rows_by_table["nightowl_users"] == 4


def test_request_values(fixture_db):
    dsn, _ = fixture_db
    row, = fetch(dsn, """SELECT status_code, route_methods, duration, url, user_id, environment,
        server, deploy, group_hash, created_at = to_timestamp(1714694400.123456), time_guarded,
        timestamp, v, bootstrap, peak_memory_usage, hydrated_models, headers->>'host', payload,
        context, extra_fields, trace_id::text
        FROM nightowl_requests WHERE group_hash = 'facf1af4af5480fa461e1027b323567b'""")
    assert row == (200, ["GET", "HEAD"], 489497, "https://app.example.com/api/users", None,
                   "production", "web-01", "production", "facf1af4af5480fa461e1027b323567b",
                   True, False, 1714694400.123456, 1, 2104, 18874368, 5, "app.example.com", None,
                   {}, None, "00000000-0000-0000-0000-000000000000")


def test_query_exception_values(fixture_db):
    dsn, _ = fixture_db
    row, = fetch(dsn, """SELECT sql_query, file, line, duration, connection, connection_type,
        execution_source, execution_preview, execution_stage
        FROM nightowl_queries WHERE group_hash = 'e7b5f2c3f6189b1cdef123456789012b'""")
    assert row == ('SELECT * FROM "users" WHERE "id" = ?', "app/Http/Controllers/UserController.php",
                   42, 1842, "pgsql", "read", "request", "GET /api/users", "action")
    row, = fetch(dsn, """SELECT class, handled, code, line, trace, trace->0->>'file',
        jsonb_typeof(trace), fingerprint, php_version
        FROM nightowl_exceptions WHERE group_hash = '28f33aac8a32b0b6f560bad3dbc77d17'
        ORDER BY id LIMIT 1""")
    assert row[:4] == ("RuntimeException", False, "0", 42)
    assert row[4] == [{"file": "app/Services/PaymentService.php:42", "source": "", "code": None}]
    assert row[5:] == ("app/Services/PaymentService.php:42", "array",
                       "28f33aac8a32b0b6f560bad3dbc77d17", "8.4.15")


def test_jobs_values(fixture_db):
    dsn, _ = fixture_db
    rows = fetch(dsn, """SELECT record_type, job_id, attempt_id IS NULL, attempt, job_class, queue,
        status, execution_source, files_read FROM nightowl_jobs WHERE job_id = '01HXYZ0123456789ABCDEF'
        ORDER BY record_type""")
    assert rows == [("job-attempt", "01HXYZ0123456789ABCDEF", False, 1, "App\\Jobs\\SendWelcomeEmail",
                     "emails", "processed", None, 0),
                    ("queued-job", "01HXYZ0123456789ABCDEF", True, None, "App\\Jobs\\SendWelcomeEmail",
                     "emails", None, "request", 0)]


def test_other_types_values(fixture_db, fixtures):
    dsn, _ = fixture_db
    assert fetch(dsn, "SELECT event_type, key, store, ttl, duration, user_id FROM nightowl_cache_events "
                      "ORDER BY timestamp") == [
        ("hit", "users:42", "redis", 0, 312, None), ("miss", "product:catalog", "redis", 0, 1841, None),
        ("put", "product:catalog", "redis", 3600, 2341, None)] + [
        (r["type"], r["key"], r["store"], r["ttl"], r["duration"], None)
        for r in load(fixtures, "cache-event.jsonl")[3:]]
    assert fetch(dsn, "SELECT mailable, mailer, recipients, cc, bcc, attachments, failed, subject "
                      "FROM nightowl_mail ORDER BY timestamp LIMIT 1") == [
        ("App\\Mail\\OrderConfirmation", "smtp", 1, 0, 1, 1, False,
         "Your order #1042 has been confirmed")]
    assert fetch(dsn, "SELECT notification, channel, duration FROM nightowl_notifications "
                      "ORDER BY timestamp LIMIT 1") == [("App\\Notifications\\OrderShipped", "mail", 48421)]
    assert fetch(dsn, "SELECT host, method, status_code, request_size, response_size "
                      "FROM nightowl_outgoing_requests ORDER BY timestamp LIMIT 1") == [
        ("api.stripe.com", "POST", 200, 421, 1842)]
    assert fetch(dsn, "SELECT command, expression, timezone, without_overlapping, on_one_server, "
                      "status, context FROM nightowl_scheduled_tasks ORDER BY timestamp LIMIT 2") == [
        ("php artisan inspire", "0 * * * *", "UTC", False, False, "processed", {}),
        ("php artisan reports:nightly", "0 2 * * *", "UTC", True, True, "processed", {})]
    assert fetch(dsn, "SELECT class, name, command, exit_code, files_read, files_written "
                      "FROM nightowl_commands ORDER BY timestamp LIMIT 1") == [
        ("Illuminate\\Database\\Console\\Migrations\\MigrateCommand", "migrate", "migrate --force",
         0, 4, 2)]
    assert fetch(dsn, "SELECT level, message, context, extra, group_hash FROM nightowl_logs "
                      "ORDER BY timestamp LIMIT 1") == [("info", "User profile loaded", {"user_id": 42}, {}, None)]
    assert fetch(dsn, "SELECT user_id, name, email, environment FROM nightowl_users ORDER BY user_id") == [
        ("user_118", "Bob Brown", "bob@example.com", ENV),
        ("user_204", "Dana Davis", "dana@example.com", ENV),
        ("user_42", "Alice Anderson", "alice@example.com", ENV),
        ("user_7", "Charlie Chen", "charlie@example.com", ENV)]


def test_every_table_count(fixture_db, fixtures):
    dsn, _ = fixture_db
    for name, table in [("request", "requests"), ("query", "queries"), ("exception", "exceptions"),
                        ("command", "commands"), ("cache-event", "cache_events"), ("mail", "mail"),
                        ("notification", "notifications"), ("outgoing-request", "outgoing_requests"),
                        ("scheduled-task", "scheduled_tasks"), ("log", "logs")]:
        recs = load(fixtures, name + ".jsonl")
        got = fetch(dsn, "SELECT timestamp FROM nightowl_" + table + " ORDER BY timestamp, id")
        assert [g for g, in got] == sorted(r["timestamp"] for r in recs), table


HOSTILE = ["tab\there", "new\nline", "cr\rhere", "back\\slash", "\\N", "\\\\N\\", "emoji \U0001F989",
           "quote \" and ' ", "x" * 1048576 + "\t\\\n", "", " ", "\u2028\u2029", "日本語"]


def test_hostile_strings_roundtrip(db):
    recs = [{"t": "log", "timestamp": NOW, "level": "info", "message": s, "channel": s}
            for s in HOSTILE]
    recs.append({"t": "log", "timestamp": NOW, "level": "info", "message": "nul\x00byte"})
    w = writer(db)
    result = w.write([(1, orjson.dumps(recs))])
    # invalid UTF-8 inside a JSON string: replaced, never refused
    bad = b'[{"t":"log","timestamp":1714694500,"level":"info","message":"bad \xff byte"}]'
    result2 = w.write([(2, bad)])
    assert result.quarantined == [] and result2.quarantined == []
    got = [m for m, in fetch(db, "SELECT message FROM nightowl_logs ORDER BY id")]
    assert got == HOSTILE + ["nulbyte", "bad \ufffd byte"]
    assert [e for e, in fetch(db, "SELECT extra_fields->>'channel' FROM nightowl_logs ORDER BY id")][
        :len(HOSTILE)] == HOSTILE


def test_issues_across_batches(db):
    def exc(ts, msg, user, group="g-one"):
        return {"t": "exception", "timestamp": ts, "class": "App\\E", "message": msg, "code": "0",
                "file": "a.php", "line": 3, "_group": group, "user": user, "handled": True,
                "trace": "[]", "deploy": "d1"}
    w = writer(db)
    w.write([(1, orjson.dumps([exc(NOW - 50, "first", "u1"), exc(NOW - 40, "second", "u2")])),
             (2, orjson.dumps([exc(NOW - 45, "x", "u1"), exc(NOW - 45, "other", None, "g-two")]))])
    w.write([(3, orjson.dumps([exc(NOW - 10, "latest", "u2"), exc(NOW - 60, "earliest", "u3")]))])
    w.write([(4, orjson.dumps([exc(NOW - 20, "not latest", "u1"), exc(NOW - 20, "", "")]))])
    rows = fetch(db, """SELECT group_hash, occurrences_count, users_count, exception_message,
        first_seen_at = to_timestamp(%s), last_seen_at = to_timestamp(%s), status, exception_class, deploy
        FROM nightowl_issues ORDER BY group_hash""", NOW - 60, NOW - 10)
    assert rows[0] == ("g-one", 7, 3, "latest", True, True, "open", "App\\E", "d1")
    assert rows[1][:4] == ("g-two", 1, 0, "other")
    assert fetch(db, "SELECT count(*) FROM nightowl_issue_users") == [(3,)]


def test_users_upsert_updates(db):
    w = writer(db)
    w.write([(1, orjson.dumps([{"t": "user", "timestamp": NOW - 100, "id": "9", "name": "Old",
                                "username": "old@x"}, {"t": "user", "id": "", "name": "nobody"}]))])
    r = w.write([(2, orjson.dumps([{"t": "user", "timestamp": NOW - 5, "id": "9", "name": "New",
                                    "username": "new@x"}]))])
    w.write([(3, orjson.dumps([{"t": "user", "timestamp": NOW - 50, "id": "9", "name": "Stale",
                                "username": "stale@x"}]))])
    assert r.rows_by_table == {"nightowl_users": 1}
    assert fetch(db, """SELECT user_id, name, email, first_seen_at = to_timestamp(%s),
        last_seen_at = to_timestamp(%s) FROM nightowl_users""", NOW - 100, NOW - 5) == [
        ("9", "New", "new@x", True, True)]


def _payloads(fixtures):
    reqs = load(fixtures, "request.jsonl")
    return [(i, orjson.dumps([reqs[i % len(reqs)], {"t": "log", "timestamp": NOW, "message": str(i)}]))
            for i in range(10, 20)]


def test_ledger_prevents_duplicates(db, fixtures):
    buffer_id = str(uuid.uuid4())
    rows = _payloads(fixtures)
    first = writer(db, buffer_id=buffer_id).write(rows[:6])
    # a crash before the buffer mark: the same ids come again, with more
    again = writer(db, buffer_id=buffer_id).write(rows)
    assert first.drained == list(range(10, 16))
    assert again.drained == list(range(10, 20))
    assert again.records == 8  # only the 4 new payloads were written
    assert (first.ledger_skipped, again.ledger_skipped) == (0, 6)
    assert fetch(db, "SELECT count(*), count(DISTINCT message) FROM nightowl_logs") == [(10, 10)]
    assert fetch(db, "SELECT count(*) FROM nightowl_requests") == [(10,)]
    assert fetch(db, "SELECT first_id, last_id, ids FROM nightowl_ingest_ledger ORDER BY first_id") == [
        (10, 15, [10, 11, 12, 13, 14, 15]), (16, 19, [16, 17, 18, 19])]
    # another buffer's ids are its own
    writer(db).write(rows[:1])
    assert fetch(db, "SELECT count(*) FROM nightowl_logs") == [(11,)]


def test_without_ledger_duplicates(db, fixtures):
    buffer_id = str(uuid.uuid4())
    rows = _payloads(fixtures)
    writer(db, buffer_id=buffer_id, ledger=False).write(rows)
    writer(db, buffer_id=buffer_id, ledger=False).write(rows)
    assert fetch(db, "SELECT count(*) FROM nightowl_logs") == [(20,)]
    assert fetch(db, "SELECT count(*) FROM nightowl_ingest_ledger") == [(0,)]


def test_poison_payload_quarantined_rest_lands(db, fixtures):
    rows = _payloads(fixtures)
    # `v` is smallint on purpose: 70000 is a value Postgres refuses (22003)
    poison = (15, orjson.dumps([{"t": "log", "timestamp": NOW, "v": 70000, "message": "poison"}]))
    rows[5] = poison
    rows.append((30, b"not json"))
    rows.append((31, b'{"an": "object, not an array"}'))
    result = writer(db).write(rows)
    assert result.quarantined == [(30, "invalid-json"), (31, "invalid-json"), (15, "22003 nightowl_logs")]
    assert result.drained == [10, 11, 12, 13, 14, 16, 17, 18, 19]
    assert [m for m, in fetch(db, "SELECT message FROM nightowl_logs ORDER BY message")] == \
        sorted(str(i) for i in result.drained)
    assert fetch(db, "SELECT count(*) FROM nightowl_requests") == [(9,)]
    # each committed subset has its own ledger row, and together they cover the drained ids
    ledger = fetch(db, "SELECT ids FROM nightowl_ingest_ledger")
    assert len(ledger) > 1
    assert sorted(i for ids, in ledger for i in ids) == result.drained


def test_schema_error_raises_never_quarantines(db, fixtures):
    conn = psycopg2.connect(db)
    conn.autocommit = True
    conn.cursor().execute("ALTER TABLE nightowl_logs DROP COLUMN extra")
    conn.close()
    w = writer(db)
    with pytest.raises(PostgresSchemaError) as e:
        w.write(_payloads(fixtures))
    assert e.value.sqlstate == "42703"
    assert e.value.table == "nightowl_logs"
    assert fetch(db, "SELECT count(*) FROM nightowl_requests") == [(0,)]


def test_unreachable_raises_unavailable():
    w = BatchWriter("host=127.0.0.1 port=1 user=postgres dbname=x", ENV, str(uuid.uuid4()))
    with pytest.raises(PostgresUnavailable):
        w.write([(1, b'[{"t":"log","message":"m"}]')])


def test_reconnects_after_backend_killed(db, fixtures):
    w = writer(db)
    w.write(_payloads(fixtures)[:2])
    pid = w._conn.get_backend_pid()
    fetch(db, "SELECT pg_terminate_backend(%s)", pid)
    result = w.write(_payloads(fixtures)[2:4])
    assert result.drained == [12, 13]
    assert fetch(db, "SELECT count(*) FROM nightowl_logs") == [(4,)]


def test_classify():
    class E(psycopg2.Error):
        def __init__(self, code):
            self._code = code

        pgcode = property(lambda self: self._code)
    assert classify(E("08006")) == "connection"
    assert classify(E("57P01")) == "connection"
    assert classify(E("53300")) == "connection"
    assert classify(E("40P01")) == "transient"
    assert classify(E("55P03")) == "transient"
    assert classify(E("22P05")) == "data"
    assert classify(E("23505")) == "data"
    assert classify(E("42P01")) == "schema"
    assert classify(E("25006")) == "schema"
    assert classify(E("3D000")) == "schema"
    assert classify(E("28P01")) == "schema"


def test_prune_ledger_forgets_only_finished_ids(db, fixtures):
    buffer_id = str(uuid.uuid4())
    rows = _payloads(fixtures)
    w = writer(db, buffer_id=buffer_id)
    w.write(rows[:3])   # ids 10-12
    w.write(rows[3:6])  # ids 13-15
    other = writer(db)
    other.write(rows[:1])
    # ids below 13 are finished in the buffer; 13.. may still be re-drained
    assert w.prune_ledger(13) == 1
    assert fetch(db, "SELECT buffer_id::text, first_id FROM nightowl_ingest_ledger "
                     "WHERE buffer_id = %s", buffer_id) == [(buffer_id, 13)]
    # the entry that is still needed keeps protecting against duplicates
    again = w.write(rows[3:6])
    assert again.records == 0 and again.drained == [13, 14, 15]
    # another buffer's rows survive until the long grace period
    assert fetch(db, "SELECT count(*) FROM nightowl_ingest_ledger WHERE buffer_id <> %s",
                 buffer_id) == [(1,)]
    with psycopg2.connect(db) as conn:
        conn.cursor().execute("UPDATE nightowl_ingest_ledger SET committed_at = now() - "
                              "interval '31 days' WHERE buffer_id <> %s", (buffer_id,))
    assert w.prune_ledger(13) == 1
