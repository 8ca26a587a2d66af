"""
nightowl.retention: the sweep against real Postgres, the service driven by a
MemoryReactorClock and an inline pool, and its place in the service tree
(its own service: --health none keeps it running).
"""

import datetime

import psycopg2
import pytest
from twisted.internet.testing import MemoryReactorClock

from nightowl import migrate, partitions, retention, tap
from tests.fakes import MemoryThreadReactor


def test_sweep_drops_expired_partitions_only(fresh_pg_dsn):
    conn = psycopg2.connect(fresh_pg_dsn)
    try:
        migrate.apply(conn, partitions=False)
        old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=30)
        made_old = partitions.ensure_partitions(conn, now=old, days_behind=0, days_ahead=0)
    finally:
        conn.close()
    assert made_old and all(name.endswith(old.strftime("_p%Y%m%d")) for name in made_old)
    result = retention.sweep(fresh_pg_dsn, 14, ensure=True)
    assert sorted(result["dropped"]) == sorted(made_old)
    assert result["errors"] == []
    today = datetime.datetime.now(datetime.timezone.utc).strftime("_p%Y%m%d")
    assert any(name.endswith(today) for name in result["created"])
    again = retention.sweep(fresh_pg_dsn, 14, ensure=False)
    assert again == {"created": [], "dropped": [], "errors": []}


def test_sweep_with_a_bad_dsn_raises_a_psycopg2_error():
    with pytest.raises(psycopg2.Error):
        retention.sweep("host=127.0.0.1 port=1 dbname=x connect_timeout=2", 14)


def test_retention_service_logs_and_keeps_going():
    calls = []

    def failing_sweep(dsn, days, ensure, **kw):
        calls.append((dsn, days, ensure))
        raise psycopg2.OperationalError("connection refused")

    reactor = MemoryReactorClock()
    service = retention.RetentionService("host=x", 3, ensure=False, reactor=reactor,
                                         sweep=failing_sweep)
    # run the pool's work synchronously: a pool whose callInThread calls at once
    service.startService()
    service.pool.stop()
    service.pool = _InlinePool()
    reactor.callFromThread = lambda f, *a, **kw: f(*a, **kw)
    reactor.advance(retention.RETENTION_FIRST)
    assert calls == [("host=x", 3, False)]
    assert service.last["error"].startswith("OperationalError: connection refused")
    reactor.advance(retention.RETENTION_EVERY)
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


def test_retention_skips_ensure_when_the_supervisor_sweeps(tmp_path):
    base = ["--dsn", "host=x", "--buffer", str(tmp_path / "b.sqlite")]
    make = lambda args: tap.makeService(tap.parse(base + args, environ={}),   # noqa: E731
                                        reactor=MemoryReactorClock())
    assert make([]).retention.ensure is False       # 2 drain workers: their maintenance does
    assert make(["--drain-workers", "0"]).retention.ensure is True
    assert tap.makeService(tap.parse(["--buffer", str(tmp_path / "b.sqlite")], environ={}),
                           reactor=MemoryReactorClock()).retention is None


def test_health_none_keeps_retention_running(tmp_path):
    """Issue 8: retention lived inside the health service, so --health none turned it off."""
    reactor = MemoryThreadReactor()
    opts = tap.parse(["--buffer", str(tmp_path / "b.sqlite"), "--health", "none",
                      "--listen", "tcp:0:interface=127.0.0.1", "--drain-workers", "0",
                      "--alerts", "off", "--dashboard", "none", "--retention-days", "9",
                      "--dsn", "host=127.0.0.1 port=1 dbname=x connect_timeout=2"], environ={})
    svc = tap.makeService(opts, reactor=reactor)
    assert svc.health is None
    assert svc.retention is not None and svc.retention.parent is svc
    assert svc.retention.retention_days == 9
    svc.privilegedStartService()
    svc.startService()
    try:
        assert svc.retention.running
        assert svc.retention.sweeping() is None
        reactor.advance(retention.RETENTION_FIRST)
        sweep = svc.retention.sweeping()
        assert sweep is not None                     # the timer fired: a sweep runs
        reactor.wait(sweep)
        # it really ran: it tried the (unreachable) database and said so
        assert svc.retention.last["at"] is not None
        assert svc.retention.last["error"].startswith("OperationalError")
    finally:
        reactor.wait(svc.stopService())
    assert not svc.retention.running
