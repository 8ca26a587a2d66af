"""nightowl.issues.thresholds: the pure parts (durations, SQL shapes, aggregation)."""

import pytest

from nightowl.issues import thresholds as th

NOW = 1714694500.0


@pytest.mark.parametrize("text, ms", [("500ms", 500), ("2s", 2000), ("1.5s", 1500), ("250", 250),
                                      (" 3 S ", 3000), ("1m", 60000), ("2.4ms", 2)])
def test_parse_duration(text, ms):
    assert th.parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "fast", "-5ms", "0", "0.4ms", "0.5ms", "5h", "3000000000"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError):
        th.parse_duration(text)


def test_canonical_kind():
    assert th.canonical_kind("Outgoing-Request") == "outgoing"
    assert th.canonical_kind("scheduled-task") == "scheduled_task"
    with pytest.raises(ValueError):
        th.canonical_kind("cache")


@pytest.mark.parametrize("sql, shape", [
    ("select * from t where id = 5", "select * from t where id = ?"),
    ("SELECT *\n  FROM \"t2\" WHERE a IN (1, 2, 3) AND b = 'x''y';", 'SELECT * FROM "t2" WHERE a IN (?) AND b = ?'),
    ("update t set n = -1.5e3 where k = ?", "update t set n = ? where k = ?"),
    ("select col1 from t1 where x = ?", "select col1 from t1 where x = ?"),
])
def test_normalise_sql(sql, shape):
    assert th.normalise_sql(sql) == shape


def rec(t, duration_us, **kw):
    out = {"t": t, "timestamp": NOW - 1, "duration": duration_us}
    out.update(kw)
    return out


def test_aggregate_by_kind_and_target():
    table = th.Thresholds([("request", "", 100), ("request", "GET /a", 1000), ("outgoing", "", 50),
                           ("command", "migrate", 10), ("job", "", 1), ("scheduled_task", "", 1)])
    recs = [rec("request", 100000, route_path="/b", route_methods=["GET"], user="u1"),
            rec("request", 999999, route_path="/a", route_methods=["GET"]),      # override: no
            rec("request", 1000000, route_path="/a", route_methods=["GET"], user=7),
            rec("request", 500000, method="POST"),                             # unrouted
            rec("outgoing-request", 49999, host="h"), rec("outgoing-request", 60000.5, host="h"),
            rec("command", 20000, name="migrate"), rec("command", 20000, name="other"),  # no default
            rec("queued-job", 5000, name="J"),     # dispatch time is not a job's duration
            rec("job-attempt", 5000, name="J"), rec("scheduled-task", 5000, name="php artisan x"),
            rec("query", 10 ** 9, sql="select 1"),  # no query threshold
            rec("request", "slow", route_path="/b"), rec("request", None, route_path="/b"),
            {"t": ["x"]}, "junk", rec("request", float("nan"), route_path="/b")]
    got = th.aggregate(recs, table, NOW)
    assert sorted((k, v[0], v[1], v[4], v[5]) for k, v in got.items()) == [
        (("command", "migrate"), 1, set(), 10, 20000),
        (("job", "J"), 1, set(), 1, 5000),
        (("outgoing", "h"), 1, set(), 50, 60000),
        (("request", "GET /a"), 1, {"7"}, 1000, 1000000),
        (("request", "GET /b"), 1, {"u1"}, 100, 100000),
        (("request", "POST (no route)"), 1, set(), 100, 500000),
        (("scheduled_task", "php artisan x"), 1, set(), 1, 5000)]


def test_aggregate_and_merge_keep_worst_and_latest():
    table = th.Thresholds([("job", "", 1)])
    a = th.aggregate([rec("job-attempt", 9000, name="J", timestamp=NOW - 50, user="u1"),
                      rec("job-attempt", 2000, name="J", timestamp=NOW - 10, deploy="v2")], table, NOW)
    b = th.aggregate([rec("job-attempt", 3000, name="J", timestamp=NOW - 90, user="u2",
                          deploy="v1")], table, NOW)
    merged = th.merge(th.merge({}, a), b)
    n, users, first, last, thr, worst, latest, deploy = merged[("job", "J")]
    assert (n, users, first, last, thr, worst, latest, deploy) == (
        3, {"u1", "u2"}, NOW - 90, NOW - 10, 1, 9000, NOW - 10, "v2")
    assert a[("job", "J")][0] == 2   # merge copies: the parts are unchanged


def test_empty_table_does_nothing():
    assert not th.EMPTY
    assert th.aggregate([rec("request", 10 ** 9, route_path="/")], th.EMPTY, NOW) == {}


def test_group_hash_is_of_kind_and_target():
    assert th.group_hash("request", "GET /a") == th.group_hash("request", "GET /a")
    assert len({th.group_hash("request", "GET /a"), th.group_hash("query", "GET /a"),
                th.group_hash("request", "GET /b")}) == 3
