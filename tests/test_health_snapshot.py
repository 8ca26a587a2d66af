"""
nightowl.health's HealthService without sockets: the snapshot from fakes
(a stalled buffer, a drain with per-worker statistics) on a
MemoryReactorClock, read through status(), healthz() and the Prometheus
collector.
"""

import dataclasses

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from nightowl import health, tap
from nightowl.health import prometheus
from nightowl.metrics import Metrics
from tests.health_support import NOW, codes


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


def test_the_drain_last_error_says_how_long_ago_it_was():
    """An outage's last error stays in /status after the drain recovers:
    its age tells an operator it is history (nightowl status prints it)."""
    from nightowl.admin.status import summary
    reactor, root, h = fake_health(dsn="host=nowhere", **{"drain-workers": 2})
    now = reactor.seconds()
    drain = root.metrics.drain
    drain[0] = {"worker": 0, "alive": True, "pg_reachable": True, "updated_at": now - 10,
                "last_error": "connection refused (old)", "last_error_at": now - 300}
    drain[1] = {"worker": 1, "alive": True, "pg_reachable": True, "updated_at": now - 20,
                "last_error": "connection refused (newer)", "last_error_at": now - 40}
    doc = h.status()
    assert doc["drain"]["last_error"] == "connection refused (newer)"
    assert doc["drain"]["last_error_age_seconds"] == 40.0
    [line] = [x for x in summary(doc) if x.startswith("drain ")]
    assert line.endswith(", last error (40 s ago): connection refused (newer)")
