"""
nightowl.health: the status rules without sockets, the snapshot with fakes
and a MemoryReactorClock, then every endpoint of a real agent (twistd on
port 0) including a real drain into a fresh Postgres database.
"""

import dataclasses
import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from nightowl.buffer import schema as nbuffer
from nightowl import health, tap, wire
from nightowl.bench import payloads
from nightowl.health import prometheus
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


def _counter(**metadata):
    return dataclasses.field(default=0, metadata=metadata)


@dataclasses.dataclass
class ToyStats:
    """A stand-in for nightowl.drain.ipc.WorkerStats, with the same metadata convention."""

    payloads: int = _counter(metric="nightowl_drain_payloads_total", help="Payloads.")
    rows: int = _counter(metric="nightowl_drain_rows_total", help="Rows.")
    rows_by_table: dict = dataclasses.field(default_factory=dict, metadata={
        "metric": "nightowl_drain_table_rows_total", "help": "Rows by table.", "label": "table"})
    batches: int = _counter(metric="nightowl_drain_batches_total", help="Batches.")
    failures: int = _counter(metric="nightowl_drain_batches_failed_total", help="Failed.",
                             status="batches_failed")
    quarantined: int = _counter()
    ledger_skipped: int = _counter()
    records: int = _counter()
    skipped: int = _counter()

    @classmethod
    def of(cls, counters):
        return cls(**{f.name: counters.get(f.name, f.default if f.name != "rows_by_table"
                                            else {}) for f in dataclasses.fields(cls)})

    def __add__(self, other):
        out = {f.name: getattr(self, f.name) + getattr(other, f.name)
               for f in dataclasses.fields(self) if f.name != "rows_by_table"}
        tables = dict(self.rows_by_table)
        for table, n in other.rows_by_table.items():
            tables[table] = tables.get(table, 0) + n
        return type(self)(rows_by_table=tables, **out)


class FakeDrain:
    """
    The DrainSupervisor as health sees it: per-worker statistics (carried
    across restarts by the supervisor: tests/test_supervisor_ipc.py) and its flags.
    """

    def __init__(self, metrics):
        self.metrics = metrics
        self.carried = {}        # worker -> ToyStats of its earlier processes
        self.stopping = False
        self.migrated = None
        self.migration_error = None

    def worker_stats(self):
        return {w: self.carried.get(w, ToyStats()) + ToyStats.of(m)
                for w, m in self.metrics.drain.items()}

    def totals(self):
        return sum(self.worker_stats().values(), ToyStats())

    def restarted(self, worker):
        """What a worker process counted, kept when its replacement starts from 0."""
        self.carried[worker] = self.worker_stats()[worker]


class FakeRoot:
    def __init__(self, reactor, buffer):
        self.metrics = Metrics(reactor)
        self.buffer = buffer
        self.supervisor = FakeDrain(self.metrics)


def make_health(options, root, reactor, retention=None):
    """A HealthService wired as tap.makeService wires it, from fakes."""
    return health.HealthService(
        options["health"], metrics=root.metrics, buffer=root.buffer, drain=root.supervisor,
        dsn_configured=bool(options["dsn"]), workers_configured=options["drain-workers"],
        retention=retention, reactor=reactor)


def fake_health(**option_changes):
    reactor = MemoryReactorClock()
    reactor.advance(NOW)
    options = tap.parse(["--health", "tcp:0:interface=127.0.0.1", "--buffer", "/x"],
                        environ={})
    options.update(option_changes)
    root = FakeRoot(reactor, StuckBuffer(lambda: reactor.seconds()))
    h = make_health(options, root, reactor)
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
        root.supervisor.restarted(0)
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


def test_a_new_counter_is_one_field_in_status_and_metrics():
    """Snapshot and Prometheus read the statistics dataclass field by field."""
    @dataclasses.dataclass
    class MoreStats(ToyStats):
        widgets: int = _counter(metric="nightowl_drain_widgets_total", help="Widgets.")

    reactor, root, h = fake_health(dsn="host=nowhere", **{"drain-workers": 1})
    root.metrics.drain[0] = {"worker": 0, "alive": True, "payloads": 7, "failures": 2,
                             "rows_by_table": {"nightowl_requests": 3, "nightowl_jobs": 1}}
    root.supervisor.totals = lambda: MoreStats(payloads=7, failures=2, widgets=11,
                                               rows_by_table={"nightowl_requests": 3,
                                                              "nightowl_jobs": 1})
    drain = h.status()["drain"]
    assert (drain["payloads"], drain["batches_failed"], drain["widgets"]) == (7, 2, 11)
    assert "failures" not in drain
    assert drain["rows_by_table"] == {"nightowl_requests": 3, "nightowl_jobs": 1}
    names = [row[0] for row in prometheus.metric_table(MoreStats)]
    assert "nightowl_drain_widgets_total" in names and "nightowl_drain_records_total" not in names
    collector = prometheus.Collector(lambda: (h.snapshot(), reactor.seconds()), MoreStats)
    families = {f.name: f for f in collector.collect()}
    assert [s.value for s in families["nightowl_drain_widgets"].samples
            if s.name == "nightowl_drain_widgets_total"] == [11]
    assert [s.value for s in families["nightowl_drain_batches_failed"].samples
            if s.name == "nightowl_drain_batches_failed_total"] == [2]
    tables = {s.labels["table"]: s.value for s in families["nightowl_drain_table_rows"].samples
              if s.name == "nightowl_drain_table_rows_total"}
    assert tables == {"nightowl_requests": 3, "nightowl_jobs": 1}
    assert families["nightowl_drain_widgets"].documentation == "Widgets."


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


EXPECTED_METRICS = {name for (name, _t, _h) in prometheus.METRICS}


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
                               "nightowl_health_reason"} - {
        n for n in EXPECTED_METRICS if n.startswith("nightowl_forward_")} <= names  # --forward only
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


def test_refusals_and_the_breaker_are_critical_in_status_but_not_in_healthz():
    """The agent still accepts and commits: /healthz stays 200; /status names SQLSTATE and table."""
    reactor, root, h = fake_health(dsn="host=nowhere", **{"drain-workers": 1})
    root.supervisor.migrated = True
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
