"""The forward-down health rule: a --forward upstream unreachable for a
minute degrades /status (the Postgres copy goes on; the backlog is named)."""

from nightowl import health
from tests.health_support import NOW, codes, healthy_snapshot


def forwarding(**figures):
    snap = healthy_snapshot()
    snap["forward"] = dict({"target": "10.0.0.5:2407", "upstream_up": True, "down_seconds": 0.0,
                            "backlog_rows": 0, "max_rows": 1000000, "dropped": 0,
                            "last_error": None}, **figures)
    return snap


def test_an_upstream_up_or_down_for_under_a_minute_is_healthy():
    assert health.evaluate(forwarding(), NOW) == ("healthy", [])
    assert health.evaluate(forwarding(upstream_up=False, down_seconds=59.0), NOW) == (
        "healthy", [])


def test_an_upstream_down_for_a_minute_degrades_and_names_the_backlog():
    status, reasons = health.evaluate(forwarding(
        upstream_up=False, down_seconds=75.0, backlog_rows=4200, dropped=7,
        last_error="Connection refused"), NOW)
    assert (status, codes(reasons)) == ("degraded", [("forward-down", "warning")])
    message = reasons[0]["message"]
    for part in ("10.0.0.5:2407", "75 s", "Connection refused", "4200 payloads",
                 "bound 1000000 rows", "7 dropped"):
        assert part in message, message


def test_no_forwarding_no_rule():
    snap = healthy_snapshot()
    snap["forward"] = None
    assert health.evaluate(snap, NOW) == ("healthy", [])
