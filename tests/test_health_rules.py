"""
nightowl.health's status rules one by one, without sockets: evaluate() on a
snapshot that differs from a healthy one by a figure or two.
"""

from nightowl import health
from tests.health_support import NOW, codes, healthy_snapshot


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
