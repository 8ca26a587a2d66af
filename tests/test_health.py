"""
nightowl.health: the status rules without sockets, the snapshot with fakes
and a MemoryReactorClock, then every endpoint of a real agent (twistd on
port 0) including a real drain into a fresh Postgres database.
"""

import datetime
import json
import threading
import time
import urllib.error
import urllib.request

import psycopg2
import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from nightowl import buffer as nbuffer
from nightowl import health, migrate, partitions, tap, wire
from nightowl.bench import payloads
from nightowl.metrics import Metrics
from tests.integration.agent import AgentProcess, send_frame

NOW = 1000000.0


def healthy_snapshot(**changes):
    snap = {
        "buffer": {"writer_alive": True, "probe_outstanding_since": None,
                   "last_write_error_seen_at": None, "last_error": None,
                   "back_pressure": False, "pending": 0, "claimed": 0, "max_pending": 100,
                   "quarantined": 0, "oldest_pending_age_seconds": 0.0},
        "drain": {"enabled": True, "dsn_configured": True, "workers_configured": 2,
                  "postgres_reachable": True, "last_error": None},
        "workers": [{"worker": 0, "restart_times": []}, {"worker": 1, "restart_times": []}],
    }
    for path, value in changes.items():
        section, key = path.split("__")
        if section == "workers":
            snap["workers"][0][key] = value
        else:
            snap[section][key] = value
    return snap


def codes(reasons):
    return [(r["code"], r["level"]) for r in reasons]


# -- evaluate(): the rules one by one -------------------------------------------

def test_healthy_when_nothing_is_wrong():
    assert health.evaluate(healthy_snapshot(), NOW) == ("healthy", [])


def test_writer_dead_is_critical():
    status, reasons = health.evaluate(healthy_snapshot(buffer__writer_alive=False), NOW)
    assert status == "critical"
    assert codes(reasons) == [("writer-dead", "critical")]


def test_writer_stalled_after_30_seconds_unanswered():
    snap = healthy_snapshot(buffer__probe_outstanding_since=NOW - 29)
    assert health.evaluate(snap, NOW)[0] == "healthy"
    snap = healthy_snapshot(buffer__probe_outstanding_since=NOW - 30)
    status, reasons = health.evaluate(snap, NOW)
    assert status == "critical"
    assert codes(reasons) == [("writer-stalled", "critical")]
    assert "30 s" in reasons[0]["message"]


def test_recent_write_error_is_critical_then_clears():
    snap = healthy_snapshot(buffer__last_write_error_seen_at=NOW - 10,
                            buffer__last_error="OperationalError: disk I/O error")
    status, reasons = health.evaluate(snap, NOW)
    assert status == "critical"
    assert codes(reasons) == [("write-errors", "critical")]
    assert "disk I/O error" in reasons[0]["message"]
    assert health.evaluate(snap, NOW + 60)[0] == "healthy"


def test_back_pressure_is_critical():
    snap = healthy_snapshot(buffer__back_pressure=True, buffer__pending=150)
    status, reasons = health.evaluate(snap, NOW)
    assert status == "critical"
    assert codes(reasons) == [("back-pressure", "critical")]
    assert "150 rows pending (limit 100)" in reasons[0]["message"]


def test_drain_lag_over_60_seconds_is_degraded():
    assert health.evaluate(healthy_snapshot(buffer__oldest_pending_age_seconds=60.0),
                           NOW)[0] == "healthy"
    status, reasons = health.evaluate(
        healthy_snapshot(buffer__oldest_pending_age_seconds=61.0), NOW)
    assert status == "degraded"
    assert codes(reasons) == [("drain-lag", "warning")]


def test_postgres_unreachable_is_degraded_unknown_is_not():
    status, reasons = health.evaluate(
        healthy_snapshot(drain__postgres_reachable=False, drain__last_error="OperationalError"),
        NOW)
    assert status == "degraded"
    assert codes(reasons) == [("postgres-unreachable", "warning")]
    assert "OperationalError" in reasons[0]["message"]
    assert health.evaluate(healthy_snapshot(drain__postgres_reachable=None), NOW)[0] == "healthy"


def test_crash_loop_is_three_restarts_in_ten_minutes():
    two = healthy_snapshot(workers__restart_times=[NOW - 100, NOW - 50])
    assert health.evaluate(two, NOW)[0] == "healthy"
    old = healthy_snapshot(workers__restart_times=[NOW - 700, NOW - 100, NOW - 50])
    assert health.evaluate(old, NOW)[0] == "healthy"
    three = healthy_snapshot(workers__restart_times=[NOW - 500, NOW - 100, NOW - 50])
    status, reasons = health.evaluate(three, NOW)
    assert status == "degraded"
    assert codes(reasons) == [("worker-crash-loop", "warning")]
    assert "drain worker 0 restarted 3 times" in reasons[0]["message"]


def test_quarantined_rows_are_a_warning():
    status, reasons = health.evaluate(healthy_snapshot(buffer__quarantined=4), NOW)
    assert status == "degraded"
    assert codes(reasons) == [("quarantined", "warning")]
    assert reasons[0]["message"].startswith("4 payloads are quarantined")


def test_no_dsn_is_info_only_and_lag_does_not_count():
    snap = healthy_snapshot(drain__enabled=False, drain__dsn_configured=False,
                            drain__postgres_reachable=None,
                            buffer__oldest_pending_age_seconds=3600.0)
    status, reasons = health.evaluate(snap, NOW)
    assert status == "healthy"
    assert codes(reasons) == [("drain-disabled", "info")]


def test_zero_workers_is_info_only():
    snap = healthy_snapshot(drain__enabled=False, drain__workers_configured=0)
    status, reasons = health.evaluate(snap, NOW)
    assert (status, codes(reasons)) == ("healthy", [("drain-disabled", "info")])


def test_critical_wins_over_warnings():
    snap = healthy_snapshot(buffer__back_pressure=True, buffer__quarantined=1,
                            drain__postgres_reachable=False)
    status, reasons = health.evaluate(snap, NOW)
    assert status == "critical"
    assert set(codes(reasons)) == {("back-pressure", "critical"), ("quarantined", "warning"),
                                   ("postgres-unreachable", "warning")}


# -- the snapshot with fakes (no sockets) -------------------------------------------

class StuckBuffer:
    """A BufferWriter stand-in whose run() never answers (a stalled writer)."""

    def __init__(self, clock):
        self.clock = clock
        self.ran = []
        self.write_errors = 0
        self.quarantined = 0

    def alive(self):
        return True

    def run(self, fn):
        self.ran.append(fn)
        return defer.Deferred()

    def refusal(self):
        return None

    def stats(self):
        return {"path": "/x", "buffer_id": "b", "pending": 3, "claimed": 0,
                "quarantined": self.quarantined, "drained_kept": 0, "queued": 1,
                "appended": 3, "commits": 2, "write_errors": self.write_errors,
                "last_error": "OperationalError: disk I/O error" if self.write_errors else None,
                "last_commit_at": None, "file_bytes": 4096, "wal_bytes": 0,
                "back_pressure": False, "max_pending": 10}


class FakeRoot:
    def __init__(self, reactor, buffer):
        self.metrics = Metrics(reactor)
        self.buffer = buffer
        self.supervisor = None


def fake_health(**option_changes):
    reactor = MemoryReactorClock()
    reactor.advance(NOW)
    options = tap.parse(["--health", "tcp:0:interface=127.0.0.1", "--buffer", "/x"],
                        environ={})
    options.update(option_changes)
    root = FakeRoot(reactor, StuckBuffer(lambda: reactor.seconds()))
    h = health.HealthService(options, root, reactor=reactor)
    return reactor, root, h


def test_unanswered_probe_becomes_writer_stalled():
    reactor, root, h = fake_health()
    h.startService()
    reactor.advance(0)
    assert len(root.buffer.ran) == 1
    assert h.status()["status"] == "healthy"
    reactor.advance(29)
    assert len(root.buffer.ran) == 1            # no second probe while one is out
    reactor.advance(1)
    doc = h.status()
    assert doc["status"] == "critical"
    assert [r["code"] for r in doc["reasons"] if r["level"] == "critical"] == ["writer-stalled"]
    assert doc["buffer"]["writer_unanswered_seconds"] == 30.0
    ok, reason = h.healthz()
    assert not ok and reason.startswith("writer-stalled")
    h.stopService()


def test_write_error_seen_is_critical_for_a_minute():
    reactor, root, h = fake_health()
    h.observe(reactor.seconds())
    root.buffer.write_errors = 1
    reactor.advance(5)
    doc = h.status()
    assert [r["code"] for r in doc["reasons"]] == ["write-errors", "drain-disabled"]
    reactor.advance(61)
    assert h.status()["status"] == "healthy"


def test_worker_figures_restarts_and_totals_across_restarts():
    reactor, root, h = fake_health(dsn="host=nowhere", **{"drain-workers": 1})
    drain = root.metrics.drain
    drain[0] = {"worker": 0, "alive": True, "pid": 11, "restarts": 0, "payloads": 40,
                "rows": 200, "batches": 4, "failures": 1, "pg_reachable": True,
                "rows_by_table": {"nightowl_requests": 40}}
    doc = h.status()
    assert doc["drain"]["payloads"] == 40 and doc["drain"]["rows"] == 200
    assert doc["drain"]["batches_failed"] == 1
    assert doc["drain"]["rows_by_table"] == {"nightowl_requests": 40}
    # the worker dies three times in a few minutes; its replacement starts from 0
    for n, done in ((1, 5), (2, 4), (3, 3)):
        reactor.advance(60)
        drain[0].update({"alive": n < 3, "restarts": n, "pid": 11 + n, "payloads": done,
                         "rows": 5 * done})
        h.observe(reactor.seconds())
    doc = h.status()
    w = doc["workers"][0]
    assert (w["pid"], w["restarts"], w["restarts_last_10min"]) == (14, 3, 3)
    assert w["state"] == "stopped"   # health is not running: nothing will respawn it
    assert w["crash_loop"] is True
    assert doc["drain"]["payloads"] == 40 + 5 + 4 + 3
    assert doc["drain"]["rows"] == 200 + 25 + 20 + 15
    assert ("worker-crash-loop", "warning") in codes(doc["reasons"])
    assert doc["status"] == "degraded"


# -- a real agent -----------------------------------------------------------------

def get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:{}{}".format(port, path), timeout=10) as r:
            return r.status, r.headers.get("content-type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type"), e.read()


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


@pytest.fixture
def agent(tmp_path):
    a = AgentProcess(str(tmp_path / "buffer.sqlite"), health=True,
                     args=["--health", "tcp:0:interface=127.0.0.1", "--token", "s3cret"]).start()
    wait_for(lambda: a.health_port, what="the health port")
    yield a
    a.kill()


STATUS_FIELDS = {
    "status", "reasons", "version", "uptime_seconds", "ingest", "buffer", "drain", "workers",
    "process", "retention"}
INGEST_FIELDS = {"accepted", "accepted_bytes", "rejected", "rejected_total", "accept_rate",
                 "reject_rate", "connections_open", "inflight_bytes", "pings"}
BUFFER_FIELDS = {"path", "buffer_id", "pending", "claimed", "quarantined", "drained_kept",
                 "queued", "oldest_pending_age_seconds", "oldest_pending_checked_age_seconds",
                 "file_bytes", "wal_bytes", "back_pressure", "max_pending", "appended",
                 "commits", "write_errors", "last_error", "last_write_error_seen_at",
                 "last_commit_age_seconds", "writer_alive", "probe_outstanding_since",
                 "writer_unanswered_seconds"}
DRAIN_FIELDS = {"enabled", "dsn_configured", "workers_configured", "payloads", "rows",
                "records", "rows_by_table", "batches", "batches_failed", "quarantined",
                "skipped", "ledger_skipped", "payload_rate", "row_rate", "postgres_reachable", "last_error",
                "lag_seconds", "migrated", "migration_error", "mode", "blocked", "breaker"}


def test_status_counts_what_the_agent_did(agent):
    good = wire.encode_frame(payloads.realistic_payload(), token="s3cret")
    for _ in range(3):
        assert send_frame(agent.port, good) == b"2:OK"
    assert send_frame(agent.port, wire.encode_frame(b"[]", token="wrong")) == b"5:ERROR"
    assert send_frame(agent.port, wire.encode_frame(b"PING", token="s3cret")) == b"2:OK"
    code, ctype, body = get(agent.health_port, "/status")
    assert code == 200 and ctype == "application/json"
    doc = json.loads(body)
    assert set(doc) == STATUS_FIELDS
    assert set(doc["ingest"]) == INGEST_FIELDS
    assert set(doc["buffer"]) == BUFFER_FIELDS
    assert set(doc["drain"]) == DRAIN_FIELDS
    assert doc["status"] == "healthy"
    assert doc["reasons"] == [{"code": "drain-disabled", "level": "info", "message":
                               "no DSN configured: payloads stay in the buffer "
                               "(set --dsn / NIGHTOWL_DSN)"}]
    # no --dsn: buffer-only, said in /status and in the startup line
    assert (doc["drain"]["mode"], doc["drain"]["blocked"], doc["drain"]["breaker"]) == (
        "buffer-only", None, [])
    assert "drain off: buffer-only mode, no --dsn / NIGHTOWL_DSN" in agent.log()
    assert doc["version"] == __import__("nightowl").__version__
    ing = doc["ingest"]
    assert ing["accepted"] == 3
    assert ing["accepted_bytes"] == 3 * len(payloads.realistic_payload())
    assert ing["rejected"]["bad-token"] == 1 and ing["rejected_total"] == 1
    assert set(wire.REASONS) <= set(ing["rejected"])
    assert ing["pings"] == 1
    assert ing["accept_rate"] == pytest.approx(3 / 60.0, abs=1e-3)
    assert ing["reject_rate"] == pytest.approx(1 / 60.0, abs=1e-3)
    assert ing["connections_open"] == 0
    buf = doc["buffer"]
    assert buf["pending"] == 3 and buf["claimed"] == 0 and buf["quarantined"] == 0
    assert buf["appended"] == 3
    assert buf["writer_alive"] is True and buf["back_pressure"] is False
    assert buf["write_errors"] == 0 and buf["last_error"] is None
    assert buf["file_bytes"] > 0 and buf["wal_bytes"] > 0
    assert buf["path"] == agent.buffer_path
    assert buf["last_commit_age_seconds"] >= 0
    drain = doc["drain"]
    assert (drain["enabled"], drain["dsn_configured"], drain["payloads"]) == (False, False, 0)
    assert doc["workers"] == []
    assert doc["process"]["rss_bytes"] > 10 * 1024 * 1024
    assert doc["process"]["threads"] >= 2
    assert doc["uptime_seconds"] >= 0
    assert doc["retention"] is None


def test_oldest_pending_age_comes_from_the_writer_probe(agent):
    assert send_frame(agent.port, wire.encode_frame(b"[]", token="s3cret")) == b"2:OK"
    # the probe runs every 5 s; wait for one that saw the row
    doc = wait_for(lambda: (lambda d: d if d["buffer"]["oldest_pending_age_seconds"] > 0
                            else None)(json.loads(get(agent.health_port, "/status")[2])),
                   timeout=15, what="a probe that saw the pending row")
    assert doc["buffer"]["oldest_pending_checked_age_seconds"] is not None
    assert doc["drain"]["lag_seconds"] == doc["buffer"]["oldest_pending_age_seconds"]


EXPECTED_METRICS = {name for (name, _t, _h) in health.METRICS}


def metric_families(port):
    code, ctype, body = get(port, "/metrics")
    assert code == 200 and ctype.startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(body.decode("utf-8"))}


def sample(families, name, **labels):
    family = families[name[:-len("_total")] if name.endswith("_total") else name]
    for s in family.samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError((name, labels))


def test_metrics_parse_and_carry_the_documented_names(agent):
    assert send_frame(agent.port, wire.encode_frame(b"[]", token="s3cret")) == b"2:OK"
    assert send_frame(agent.port, wire.encode_frame(b"[]", token="nope")) == b"5:ERROR"
    families = metric_families(agent.health_port)
    names = set()
    for family in families.values():
        names.add(family.name + "_total" if family.type == "counter" else family.name)
    assert EXPECTED_METRICS - {"nightowl_worker_up", "nightowl_worker_restarts_total",
                               "nightowl_drain_table_rows_total",
                               "nightowl_health_reason"} <= names
    assert names <= EXPECTED_METRICS
    assert sample(families, "nightowl_ingest_accepted_total") == 1
    assert sample(families, "nightowl_ingest_rejected_total", reason="bad-token") == 1
    assert sample(families, "nightowl_ingest_rejected_total", reason="bad-json") == 0
    assert sample(families, "nightowl_buffer_pending_rows") == 1
    assert sample(families, "nightowl_buffer_back_pressure") == 0
    assert sample(families, "nightowl_buffer_writer_up") == 1
    assert sample(families, "nightowl_health_status") == 0
    assert sample(families, "nightowl_health_reason", code="drain-disabled", level="info") == 1
    assert sample(families, "nightowl_drain_postgres_up") == -1
    assert sample(families, "nightowl_info", version=__import__("nightowl").__version__) == 1
    assert families["nightowl_ingest_accepted"].type == "counter"
    assert families["nightowl_buffer_pending_rows"].type == "gauge"


def test_healthz_ok_and_unknown_paths(agent):
    assert get(agent.health_port, "/healthz")[::2] == (200, b"ok\n")
    assert get(agent.health_port, "/nothing")[0] == 404


def test_back_pressure_makes_healthz_503_and_status_critical(tmp_path):
    a = AgentProcess(str(tmp_path / "b.sqlite"), health=True,
                     args=["--health", "tcp:0:interface=127.0.0.1", "--max-pending", "1"]).start()
    try:
        wait_for(lambda: a.health_port, what="the health port")
        replies = [send_frame(a.port, wire.encode_frame(b"[]")) for _ in range(3)]
        assert replies == [b"2:OK", b"2:OK", b"5:ERROR"]
        code, _ctype, body = get(a.health_port, "/healthz")
        assert code == 503
        assert body.decode().startswith("back-pressure: refusing new payloads: 2 rows pending")
        doc = json.loads(get(a.health_port, "/status")[2])
        assert doc["status"] == "critical"
        assert doc["buffer"]["back_pressure"] is True
        assert doc["ingest"]["rejected"]["back-pressure"] == 1
        assert sample(metric_families(a.health_port), "nightowl_health_status") == 2
    finally:
        a.kill()


def test_quarantined_rows_degrade_a_real_agent(tmp_path):
    path = str(tmp_path / "b.sqlite")
    conn = nbuffer.connect(path)
    nbuffer.buffer_identity(conn)
    nbuffer.add_row(conn, b"[]", state=2, state_at=time.time(), error="DataError (22P02)")
    conn.close()
    a = AgentProcess(path, health=True, args=["--health", "tcp:0:interface=127.0.0.1"]).start()
    try:
        wait_for(lambda: a.health_port, what="the health port")
        doc = json.loads(get(a.health_port, "/status")[2])
        assert doc["status"] == "degraded"
        assert doc["buffer"]["quarantined"] == 1
        assert ("quarantined", "warning") in codes(doc["reasons"])
        assert get(a.health_port, "/healthz")[0] == 200   # degraded still accepts
    finally:
        a.kill()


def test_drain_figures_from_real_workers(tmp_path, fresh_pg_dsn):
    a = AgentProcess(str(tmp_path / "b.sqlite"), health=True,
                     args=["--health", "tcp:0:interface=127.0.0.1", "--drain-workers", "1"],
                     env={"NIGHTOWL_DSN": fresh_pg_dsn}).start()
    try:
        wait_for(lambda: a.health_port, what="the health port")
        for body in payloads.fixture_mix(10):
            assert send_frame(a.port, wire.encode_frame(body)) == b"2:OK"

        def drained():
            doc = json.loads(get(a.health_port, "/status")[2])
            return doc if doc["drain"]["payloads"] >= 10 and doc["buffer"]["pending"] == 0 \
                else None
        try:
            doc = wait_for(drained, timeout=120, what="the drain")
        except AssertionError:
            raise AssertionError("no drain: {}\n{}".format(
                get(a.health_port, "/status")[2].decode(), a.log()))
        assert doc["drain"]["enabled"] is True and doc["drain"]["dsn_configured"] is True
        assert doc["drain"]["postgres_reachable"] is True
        assert doc["drain"]["rows"] > 0 and doc["drain"]["batches"] >= 1
        assert doc["drain"]["batches_failed"] == 0
        [worker] = doc["workers"]
        assert worker["state"] == "running" and worker["pid"] > 0 and worker["restarts"] == 0
        assert doc["retention"]["ensures_partitions"] is False   # the supervisor does
        assert doc["status"] == "healthy", doc["reasons"]
        families = metric_families(a.health_port)
        assert sample(families, "nightowl_drain_payloads_total") >= 10
        assert sample(families, "nightowl_drain_postgres_up") == 1
        assert sample(families, "nightowl_worker_up", worker="0") == 1
    finally:
        a.kill()


# -- retention -----------------------------------------------------------------------

def test_sweep_drops_expired_partitions_only(fresh_pg_dsn):
    conn = psycopg2.connect(fresh_pg_dsn)
    try:
        migrate.apply(conn, partitions=False)
        old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=30)
        made_old = partitions.ensure_partitions(conn, now=old, days_behind=0, days_ahead=0)
    finally:
        conn.close()
    assert made_old and all(name.endswith(old.strftime("_p%Y%m%d")) for name in made_old)
    result = health.sweep(fresh_pg_dsn, 14, ensure=True)
    assert sorted(result["dropped"]) == sorted(made_old)
    assert result["errors"] == []
    today = datetime.datetime.now(datetime.timezone.utc).strftime("_p%Y%m%d")
    assert any(name.endswith(today) for name in result["created"])
    again = health.sweep(fresh_pg_dsn, 14, ensure=False)
    assert again == {"created": [], "dropped": [], "errors": []}


def test_sweep_with_a_bad_dsn_raises_a_psycopg2_error():
    with pytest.raises(psycopg2.Error):
        health.sweep("host=127.0.0.1 port=1 dbname=x connect_timeout=2", 14)


def test_retention_service_logs_and_keeps_going():
    calls = []

    def failing_sweep(dsn, days, ensure, **kw):
        calls.append((dsn, days, ensure))
        raise psycopg2.OperationalError("connection refused")

    reactor = MemoryReactorClock()
    service = health.RetentionService({"dsn": "host=x", "retention-days": 3}, ensure=False,
                                      reactor=reactor, sweep=failing_sweep)
    # run the pool's work synchronously: a pool whose callInThread calls at once
    service.startService()
    service.pool.stop()
    service.pool = _InlinePool()
    reactor.callFromThread = lambda f, *a, **kw: f(*a, **kw)
    reactor.advance(health.RETENTION_FIRST)
    assert calls == [("host=x", 3, False)]
    assert service.last["error"].startswith("OperationalError: connection refused")
    reactor.advance(health.RETENTION_EVERY)
    assert len(calls) == 2
    service.stopService()
    assert not reactor.getDelayedCalls()


class _InlinePool:
    def callInThreadWithCallback(self, onResult, f, *a, **kw):
        try:
            result = f(*a, **kw)
        except BaseException:
            from twisted.python.failure import Failure
            onResult(False, Failure())
        else:
            onResult(True, result)

    def stop(self):
        pass


def test_health_service_skips_ensure_when_the_supervisor_sweeps():
    reactor = MemoryReactorClock()
    options = tap.parse(["--dsn", "host=x", "--buffer", "/x"], environ={})
    root = FakeRoot(reactor, StuckBuffer(lambda: reactor.seconds()))
    root.supervisor = object()
    assert health.HealthService(options, root, reactor=reactor).retention.ensure is False
    root.supervisor = None
    assert health.HealthService(options, root, reactor=reactor).retention.ensure is True
    options["dsn"] = None
    assert health.HealthService(options, root, reactor=reactor).retention is None


def test_refusals_and_the_breaker_are_critical_in_status_but_not_in_healthz():
    """The agent still accepts and commits: /healthz stays 200; /status names SQLSTATE and table."""
    reactor, root, h = fake_health(dsn="host=nowhere", **{"drain-workers": 1})
    root.supervisor = type("Sup", (), {"migrated": True, "migration_error": None})()
    drain = root.metrics.drain
    drain[0] = {"worker": 0, "alive": True, "pid": 11, "pg_reachable": True,
                "last_error": "permission denied (SQLSTATE 42501): permission denied for "
                              "table nightowl_requests (writing nightowl_requests)",
                "blocked": {"kind": "permission-denied", "sqlstate": "42501",
                            "table": "nightowl_requests", "error": "permission denied ..."}}
    doc = h.status()
    assert doc["status"] == "critical"
    assert [(r["code"], r["level"]) for r in doc["reasons"]] == [
        ("permission-denied", "critical")]
    assert "SQLSTATE 42501 on nightowl_requests" in doc["reasons"][0]["message"]
    assert doc["drain"]["last_error"].startswith("permission denied (SQLSTATE 42501)")
    assert doc["drain"]["blocked"]["table"] == "nightowl_requests"
    assert doc["drain"]["mode"] == "draining"
    assert h.healthz() == (True, "ok")
    drain[0]["blocked"] = {"kind": "schema-missing", "sqlstate": "42P01",
                           "table": "nightowl_requests", "error": "schema missing ..."}
    root.supervisor.migration_error = "permission denied (SQLSTATE 42501): for schema public"
    [reason] = h.status()["reasons"]
    assert reason["code"] == "schema-missing"
    assert "which failed: permission denied (SQLSTATE 42501)" in reason["message"]
    drain[0]["blocked"] = None
    drain[0]["breaker"] = [{"sqlstate": "22001", "table": "nightowl_requests",
                            "open_seconds": 3.0, "held": 40, "threshold": 5}]
    doc = h.status()
    assert [(r["code"], r["level"]) for r in doc["reasons"]] == [
        ("quarantine-breaker", "critical")]
    assert "SQLSTATE 22001 on nightowl_requests" in doc["reasons"][0]["message"]
    assert doc["workers"][0]["breaker"] == drain[0]["breaker"]
    assert h.healthz() == (True, "ok")
    drain[0]["alive"] = False      # a dead worker's report no longer counts
    assert h.status()["drain"]["breaker"] == []
