"""Issue lifecycle, alert outbox and threshold issues through the real BatchWriter
against a real PostgreSQL."""

import uuid

import orjson
import psycopg2
import pytest

from tests.conftest import fetch
from nightowl import migrate
from nightowl.issues import lifecycle, thresholds
from nightowl.pgwrite import BatchWriter

NOW = 1714694500.0
ENV = "production"


class FakeClock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def writer(dsn, buffer_id=None, **kw):
    kw.setdefault("clock", lambda: NOW)
    return BatchWriter(dsn, ENV, buffer_id or str(uuid.uuid4()), **kw)


def execute(dsn, sql, *args):
    conn = psycopg2.connect(dsn)
    try:
        with conn:
            conn.cursor().execute(sql, args)
    finally:
        conn.close()


def set_status(dsn, issue_id, status, actor="cli"):
    conn = psycopg2.connect(dsn)
    try:
        return lifecycle.set_status(conn, issue_id, status, actor)
    finally:
        conn.close()


@pytest.fixture
def db(fresh_pg_dsn):
    migrate.apply(fresh_pg_dsn)
    return fresh_pg_dsn


def exc(ts=NOW - 10, group="g-one", user="u1", msg="boom"):
    return {"t": "exception", "timestamp": ts, "class": "App\\Boom", "message": msg, "code": "0",
            "file": "a.php", "line": 3, "_group": group, "user": user, "handled": False,
            "trace": "[]"}


def payload(*recs):
    return orjson.dumps(list(recs))


def outbox(dsn):
    return fetch(dsn, "SELECT event, issue_id, environment, payload FROM nightowl_alert_outbox "
                      "ORDER BY id")


def activity(dsn):
    return fetch(dsn, "SELECT issue_id, actor, action, detail FROM nightowl_issue_activity "
                      "ORDER BY id")


def test_new_issue_gets_activity_and_one_outbox_row(db):
    writer(db).write([(1, payload(exc(user="u1"), exc(user="u2"), exc(group="g-two", user=None)))])
    issues = fetch(db, "SELECT id, group_hash, status, occurrences_count, users_count "
                       "FROM nightowl_issues ORDER BY group_hash")
    assert [r[1:] for r in issues] == [("g-one", "open", 2, 2), ("g-two", "open", 1, 0)]
    ids = dict((r[1], r[0]) for r in issues)
    assert activity(db) == [(ids["g-one"], "agent", "created", None),
                            (ids["g-two"], "agent", "created", None)]
    rows = outbox(db)
    assert [(e, i, env) for e, i, env, _ in rows] == [
        ("issue.new", ids["g-one"], ENV), ("issue.new", ids["g-two"], ENV)]
    body = rows[0][3]
    assert body["event"] == "issue.new" and body["at"].endswith("Z")
    issue = body["issue"]
    assert {k: issue[k] for k in ("id", "type", "subtype", "status", "exception_class", "message",
                                  "environment", "group_hash", "occurrences", "users", "kind",
                                  "target", "threshold_ms", "duration_ms")} == {
        "id": ids["g-one"], "type": "exception", "subtype": None, "status": "open",
        "exception_class": "App\\Boom", "message": "boom", "environment": ENV,
        "group_hash": "g-one", "occurrences": 2, "users": 2, "kind": None, "target": None,
        "threshold_ms": None, "duration_ms": None}
    assert issue["first_seen_at"] == "2024-05-03T00:01:30.000000Z" == issue["last_seen_at"]
    # it occurs again while open: counts, no new event
    writer(db).write([(1, payload(exc(user="u3")))])
    assert fetch(db, "SELECT occurrences_count, users_count FROM nightowl_issues "
                     "WHERE group_hash = 'g-one'") == [(3, 3)]
    assert len(outbox(db)) == 2 and len(activity(db)) == 2


def test_retried_batch_after_crash_counts_and_alerts_once(db):
    buffer_id = str(uuid.uuid4())
    rows = [(10, payload(exc(user="u1"), exc(user="u2"))), (11, payload(exc(group="g-two")))]
    first = writer(db, buffer_id).write(rows)
    # the worker died between the commit and the buffer mark: the same ids come again
    again = writer(db, buffer_id).write(rows + [(12, payload(exc(user="u9")))])
    assert (first.ledger_skipped, again.ledger_skipped) == (0, 2)
    assert fetch(db, "SELECT group_hash, occurrences_count, users_count FROM nightowl_issues "
                     "ORDER BY group_hash") == [("g-one", 3, 3), ("g-two", 1, 1)]
    assert [e for e, _, _, _ in outbox(db)] == ["issue.new", "issue.new"]
    assert [a for _, _, a, _ in activity(db)] == ["created", "created"]
    assert fetch(db, "SELECT count(*) FROM nightowl_exceptions") == [(4,)]


def test_resolved_issue_that_occurs_again_is_reopened(db):
    writer(db).write([(1, payload(exc()))])
    (issue_id,), = fetch(db, "SELECT id FROM nightowl_issues")
    assert set_status(db, issue_id, "resolved") == ("open", "resolved")
    assert fetch(db, "SELECT status, resolved_at IS NOT NULL FROM nightowl_issues") == [
        ("resolved", True)]
    writer(db).write([(1, payload(exc(ts=NOW - 5, user="u2"), exc(ts=NOW - 4, user="u2")))])
    assert fetch(db, "SELECT status, occurrences_count, users_count, reopened_at IS NOT NULL "
                     "FROM nightowl_issues") == [("open", 3, 2, True)]
    assert activity(db) == [
        (issue_id, "agent", "created", None),
        (issue_id, "cli", "resolved", {"from": "open", "to": "resolved"}),
        (issue_id, "agent", "reopened", {"from": "resolved", "to": "open"})]
    rows = outbox(db)
    assert [(e, i) for e, i, _, _ in rows] == [("issue.new", issue_id),
                                               ("issue.reopened", issue_id)]
    assert rows[1][3]["event"] == "issue.reopened"
    assert rows[1][3]["issue"]["status"] == "open" and rows[1][3]["issue"]["occurrences"] == 3
    # open again: a further occurrence is silent
    writer(db).write([(1, payload(exc()))])
    assert len(outbox(db)) == 2 and len(activity(db)) == 3


def test_ignored_issue_keeps_counting_silently(db):
    writer(db).write([(1, payload(exc()))])
    (issue_id,), = fetch(db, "SELECT id FROM nightowl_issues")
    assert set_status(db, issue_id, "ignored") == ("open", "ignored")
    for n in range(3):
        writer(db).write([(1, payload(exc(user="u{}".format(n + 5))))])
    assert fetch(db, "SELECT status, occurrences_count, users_count FROM nightowl_issues") == [
        ("ignored", 4, 4)]
    assert [e for e, _, _, _ in outbox(db)] == ["issue.new"]
    assert [a for _, _, a, _ in activity(db)] == ["created", "ignored"]


def test_set_status_errors_and_manual_reopen(db):
    writer(db).write([(1, payload(exc()))])
    (issue_id,), = fetch(db, "SELECT id FROM nightowl_issues")
    with pytest.raises(ValueError):
        set_status(db, issue_id, "closed")
    with pytest.raises(LookupError):
        set_status(db, issue_id + 1000, "resolved")
    assert set_status(db, issue_id, "open") == ("open", "open")  # no change, nothing recorded
    assert set_status(db, issue_id, "resolved", actor="dashboard") == ("open", "resolved")
    assert set_status(db, issue_id, "open") == ("resolved", "open")
    assert [(actor, a) for _, actor, a, _ in activity(db)] == [
        ("agent", "created"), ("dashboard", "resolved"), ("cli", "reopen")]
    # a manual reopen alerts nothing
    assert len(outbox(db)) == 1


def test_concurrent_writers_alert_a_new_issue_once(db):
    # two workers (different buffers) see the same new fingerprint in one round
    import threading
    barrier = threading.Barrier(4)
    errors = []

    def run(i):
        try:
            barrier.wait()
            writer(db).write([(1, payload(exc(user="w{}".format(i)), exc(group="g-{}".format(i))))])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert fetch(db, "SELECT occurrences_count, users_count FROM nightowl_issues "
                     "WHERE group_hash = 'g-one'") == [(4, 4)]
    assert fetch(db, "SELECT event, count(*) FROM nightowl_alert_outbox GROUP BY event") == [
        ("issue.new", 5)]


# -- thresholds ----------------------------------------------------------------

def request(duration_ms, path="/api/users", methods=("GET", "HEAD"), user=None, ts=NOW - 30):
    return {"t": "request", "timestamp": ts, "method": methods[0], "url": "https://x" + path,
            "route_path": path, "route_methods": list(methods), "duration": duration_ms * 1000,
            "status_code": 200, "user": user}


def query(duration_ms, sql):
    return {"t": "query", "timestamp": NOW - 20, "sql": sql, "duration": duration_ms * 1000,
            "connection": "pgsql"}


def perf_issues(dsn):
    return fetch(dsn, """SELECT subtype, target, occurrences_count, users_count, threshold_ms,
        triggered_duration_ms, status, group_hash FROM nightowl_issues
        WHERE type = 'performance' ORDER BY subtype, target""")


def save(dsn, kind, target, ms):
    conn = psycopg2.connect(dsn)
    try:
        thresholds.save(conn, kind, target, ms)
    finally:
        conn.close()


def test_thresholds_default_and_target_overrides(db):
    save(db, "request", "", 500)
    save(db, "request", "GET|HEAD /slow-ok", 2000)    # higher than the default: suppresses
    save(db, "request", "POST /checkout", 100)        # lower than the default: triggers
    save(db, "query", "", 50)
    w = writer(db, thresholds=thresholds.ThresholdCache(clock=FakeClock()))
    w.write([(1, payload(
        request(499), request(500, user="u1"), request(900, user="u2"), request(700, user="u1"),
        request(1500, "/slow-ok"), request(2500, "/slow-ok"),
        request(150, "/checkout", ("POST",)), request(99, "/checkout", ("POST",)),
        query(60, "select * from t where id = 5"), query(70, "select *  from t where id = 6;"),
        query(10, "select 1")))])
    rows = perf_issues(db)
    assert [r[:7] for r in rows] == [
        ("query", "select * from t where id = ?", 2, 0, 50, 70, "open"),
        ("request", "GET|HEAD /api/users", 3, 2, 500, 900, "open"),
        ("request", "GET|HEAD /slow-ok", 1, 0, 2000, 2500, "open"),
        ("request", "POST /checkout", 1, 0, 100, 150, "open")]
    assert rows[1][7] == thresholds.group_hash("request", "GET|HEAD /api/users")
    # the raw rows are all there
    assert fetch(db, "SELECT count(*) FROM nightowl_requests") == [(8,)]
    events = outbox(db)
    assert [e for e, _, _, _ in events] == ["performance.new"] * 4
    body = [p["issue"] for _, _, _, p in events if p["issue"]["target"] == "GET|HEAD /api/users"][0]
    assert (body["type"], body["kind"], body["subtype"], body["threshold_ms"], body["duration_ms"],
            body["occurrences"], body["users"]) == ("performance", "request", "request", 500, 900,
                                                    3, 2)
    assert [a for _, _, a, _ in activity(db)] == ["created"] * 4


def test_performance_issue_counts_exactly_and_reopens(db):
    save(db, "job", "", 100)
    buffer_id = str(uuid.uuid4())
    job = {"t": "job-attempt", "timestamp": NOW - 5, "name": "App\\Jobs\\Slow", "duration": 300000}
    rows = [(1, payload(job, dict(job, duration=50000))), (2, payload(dict(job, duration=800000)))]
    writer(db, buffer_id, thresholds=thresholds.ThresholdCache(clock=FakeClock())).write(rows)
    # crash before the mark: retried, skipped by the ledger
    writer(db, buffer_id, thresholds=thresholds.ThresholdCache(clock=FakeClock())).write(rows)
    assert [r[:7] for r in perf_issues(db)] == [("job", "App\\Jobs\\Slow", 2, 0, 100, 800, "open")]
    (issue_id,), = fetch(db, "SELECT id FROM nightowl_issues")
    set_status(db, issue_id, "resolved")
    save(db, "job", "", 200)
    writer(db, thresholds=thresholds.ThresholdCache(clock=FakeClock())).write(
        [(3, payload(dict(job, duration=250000)))])
    # threshold_ms is the latest in force, triggered_duration_ms the worst seen
    assert [r[:7] for r in perf_issues(db)] == [("job", "App\\Jobs\\Slow", 3, 0, 200, 800, "open")]
    assert [(e, i) for e, i, _, _ in outbox(db)] == [("performance.new", issue_id),
                                                     ("issue.reopened", issue_id)]


def test_thresholds_reload_within_the_interval(db):
    clock = FakeClock(1000.0)
    cache = thresholds.ThresholdCache(interval=30.0, clock=clock)
    w = writer(db, thresholds=cache)
    w.write([(1, payload(request(300)))])
    assert perf_issues(db) == [] and cache.loads == 1
    save(db, "request", "", 200)
    clock.t += 29.0
    w.write([(2, payload(request(300)))])
    assert perf_issues(db) == [] and cache.loads == 1      # not yet re-read
    clock.t += 1.5
    w.write([(3, payload(request(300)))])
    assert cache.loads == 2
    assert [r[:3] for r in perf_issues(db)] == [("request", "GET|HEAD /api/users", 1)]
    # removal is picked up the same way
    conn = psycopg2.connect(db)
    thresholds.remove(conn, "request", "")
    conn.close()
    clock.t += 31.0
    w.write([(4, payload(request(300)))])
    assert [r[:3] for r in perf_issues(db)] == [("request", "GET|HEAD /api/users", 1)]


def test_issues_off_writes_raw_rows_only(db):
    save(db, "request", "", 1)
    writer(db, issues=False).write([(1, payload(exc(), request(500)))])
    assert fetch(db, "SELECT count(*) FROM nightowl_issues") == [(0,)]
    assert fetch(db, "SELECT count(*) FROM nightowl_exceptions") == [(1,)]
    assert outbox(db) == []
