"""
Retention clock skew (issue 14, item 1) in /status and the log, without
sockets: the rule is a pure function, the service is driven by a
MemoryReactorClock and an inline pool.
"""

from twisted.internet.testing import MemoryReactorClock
from twisted.logger import globalLogPublisher

from nightowl import retention
from nightowl.health import rules
from tests.health_support import NOW, codes, healthy_snapshot
from tests.test_retention import _InlinePool


def test_clock_skew_is_a_warning_in_status():
    snap = healthy_snapshot()
    snap["retention"] = {"clock_skew_seconds": 2592000.0}
    status, reasons = rules.evaluate(snap, NOW)
    assert status == "degraded"
    assert ("clock-skew", "warning") in codes(reasons)
    snap["retention"]["clock_skew_seconds"] = None
    assert rules.evaluate(snap, NOW) == ("healthy", [])


def test_skew_is_logged_once_per_occurrence():
    results = []
    skewed = {"created": [], "dropped": [], "errors": [],
              "clock_skew": {"seconds": 2592000.0, "message": "local clock is off"}}
    fine = {"created": [], "dropped": [], "errors": []}

    def sweep(dsn, days, ensure, **kw):
        return results.pop(0)

    reactor = MemoryReactorClock()
    service = retention.RetentionService("host=x", 3, ensure=False, reactor=reactor,
                                         sweep=sweep)
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        service.startService()
        service.pool.stop()
        service.pool = _InlinePool()
        reactor.callFromThread = lambda f, *a, **kw: f(*a, **kw)
        results.extend([skewed, dict(skewed), fine])
        reactor.advance(retention.RETENTION_FIRST)
        reactor.advance(retention.RETENTION_EVERY)
        assert service.last["clock_skew"]["seconds"] == 2592000.0
        reactor.advance(retention.RETENTION_EVERY)
        assert "clock_skew" not in service.last
        service.stopService()
    finally:
        globalLogPublisher.removeObserver(events.append)
    refused = [e for e in events if "retention refused" in e.get("log_format", "")]
    agreed = [e for e in events if "clocks agree again" in e.get("log_format", "")]
    assert len(refused) == 1 and len(agreed) == 1
