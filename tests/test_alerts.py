"""
Alerts without sockets: escaping, message shapes, the signature, channel
validation and the health-alert debounce on a task.Clock.
"""

import hashlib
import hmac

import orjson
import pytest
from twisted.internet import defer, task

from nightowl.alerts import channels, escape, messages
from nightowl.alerts.healthalerts import HealthAlerter

Z = "\u200b"


def test_bound_collapses_control_characters_and_cuts():
    assert escape.bound("a\r\nb\x00c\td", 100) == "a b c d"
    assert escape.bound("x" * 300, 200) == "x" * 197 + "..."
    assert escape.bound(None, 10) == ""


def test_slack_escape():
    assert escape.slack("<!channel> & @here <http://x|y>") == (
        "&lt;!channel&gt; &amp; @{z}here &lt;http:{z}//x|y&gt;".format(z=Z))


def test_discord_escape():
    assert escape.discord("@everyone **b** [l](https://e) <@&1>") == (
        "@{z}everyone \\*\\*b\\*\\* \\[l\\]\\(https\\:{z}//e\\) \\<@{z}&1\\>".format(z=Z))


def test_email_header_has_no_line_breaks():
    assert escape.header("a\r\nBcc: x@y") == "a Bcc: x@y"


def test_signature_is_hmac_of_timestamp_dot_body():
    body = b'{"a":1}'
    header = messages.sign("k", body, 1700000000.7)
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == "t=1700000000,v1=" + expected


def test_webhook_body_carries_the_delivery_id_and_the_issue():
    payload = {"event": "issue.new", "at": "2026-12-01T22:00:00Z",
               "issue": {"id": 12, "type": "exception", "message": "m" * 3000}}
    body = orjson.loads(messages.render("webhook", messages.issue_notice(payload), "d-1"))
    assert body["delivery_id"] == "d-1"
    assert body["event"] == "issue.new"
    assert body["issue"]["id"] == 12
    assert len(body["issue"]["message"]) == 2000


def test_performance_issue_is_a_performance_alert():
    payload = {"event": "issue.new", "issue": {"id": 1, "type": "performance", "kind": "query",
                                               "target": "select ?", "duration_ms": 900,
                                               "threshold_ms": 500}}
    notice = messages.issue_notice(payload)
    assert notice.event == "performance.new"
    assert notice.name == "select ?"
    assert ("Duration", "900 ms") in notice.fields


def test_digest_phrase():
    assert messages.more_phrase(37, {"issue.new": 40}) == "and 37 more new issues"
    assert messages.more_phrase(1, {"issue.new": 4}) == "and 1 more new issue"
    assert messages.more_phrase(5, {"issue.new": 4, "issue.reopened": 4}) == (
        "and 5 more alerts (4 new issues, 4 reopened issues)")


def test_channel_validation():
    with pytest.raises(channels.ChannelError, match="http:// or https://"):
        channels.validate("webhook", {"url": "file:///etc/passwd"})
    with pytest.raises(channels.ChannelError, match="environment variable NAME"):
        channels.validate("email", {"to": "a@b.c", "from": "n@b.c", "smtp_host": "h",
                                    "user": "u", "password_env": "hunter2 !"})
    s = channels.validate("email", {"to": "a@b.c, d@e.f", "from": "n@b.c", "smtp_host": "h",
                                    "tls": "ssl"})
    assert s["to"] == ["a@b.c", "d@e.f"] and s["smtp_port"] == 465
    assert channels.parse_hostport("smtp.x:2525", "none") == ("smtp.x", 2525)


def test_masking():
    c = channels.Channel(1, "n", "slack", {"url": "https://hooks.slack.com/services/T/B/SECRET"})
    assert channels.masked(c) == {"url": "https://hooks.slack.com/…"}
    w = channels.Channel(2, "w", "webhook", {"url": "https://x/y", "secret": "s"})
    assert channels.masked(w)["secret"] == "***"


class Recorder:
    def __init__(self, fail=0):
        self.sent = []
        self.fail = fail

    def __call__(self, channel, notice, delivery_id):
        self.sent.append((channel.name, notice.event, delivery_id))
        if self.fail:
            self.fail -= 1
            return defer.fail(RuntimeError("receiver down"))
        return defer.succeed(None)


def alerter(send, clock, **kw):
    chans = [channels.Channel(1, "ops", "webhook", {"url": "http://x"})]
    return HealthAlerter(send=send, channels=lambda: chans, clock=clock, hold=30, every=600,
                         instance="host", **kw)


def test_health_status_must_hold_before_it_alerts():
    clock, send = task.Clock(), Recorder()
    a = alerter(send, clock)
    a.observe("degraded")
    clock.advance(29)
    a.observe("degraded")
    assert send.sent == []
    clock.advance(1)
    assert [e for (_c, e, _d) in send.sent] == ["health.degraded"]


def test_a_flapping_rule_does_not_spam():
    clock, send = task.Clock(), Recorder()
    a = alerter(send, clock)
    for _ in range(100):          # flaps every 10 s for 1000 s: never holds 30 s
        a.observe("degraded")
        clock.advance(10)
        a.observe("healthy")
        clock.advance(10)
    assert send.sent == []
    a.observe("critical")
    clock.advance(30)
    assert [e for (_c, e, _d) in send.sent] == ["health.critical"]
    a.observe("healthy")           # recovers quickly: waits for the 10 minute spacing
    clock.advance(60)
    assert len(send.sent) == 1
    clock.advance(539)             # 599 s after the critical alert
    assert len(send.sent) == 1
    clock.advance(1)
    assert [e for (_c, e, _d) in send.sent] == ["health.critical", "health.recovered"]


def test_a_change_back_before_the_spacing_ends_sends_nothing():
    clock, send = task.Clock(), Recorder()
    a = alerter(send, clock)
    a.observe("degraded")
    clock.advance(30)
    a.observe("healthy")
    clock.advance(100)
    a.observe("degraded")          # back to what was announced before the spacing ended
    clock.advance(1000)
    assert [e for (_c, e, _d) in send.sent] == ["health.degraded"]


def test_health_alerts_retry_in_memory_with_the_same_delivery_id():
    clock, send = task.Clock(), Recorder(fail=2)
    a = alerter(send, clock, backoff=lambda attempt: 5.0)
    a.observe("critical")
    clock.advance(30)
    clock.advance(5)
    clock.advance(5)
    assert len(send.sent) == 3
    assert len(set(d for (_c, _e, d) in send.sent)) == 1
    assert a.status()["sent"] == 1 and a.status()["failed"] == 2
    clock.advance(100)
    assert len(send.sent) == 3


def test_make_service_wires_the_dispatcher_only_with_a_dsn(tmp_path):
    from twisted.internet.testing import MemoryReactorClock

    from nightowl import tap
    base = ["--buffer", str(tmp_path / "b.sqlite"), "--drain-workers", "0"]
    svc = tap.makeService(tap.parse(base, environ={}), reactor=MemoryReactorClock())
    assert svc.alerts is None
    opts = tap.parse(base + ["--dsn", "dbname=x", "--alerts-poll", "0.5",
                             "--health-alert-hold", "7"], environ={})
    svc = tap.makeService(opts, reactor=MemoryReactorClock())
    assert svc.alerts.name == "alerts"
    assert svc.alerts.timer.step == 0.5
    assert svc.alerts.health_alerts.hold == 7.0
    assert svc.ordered.index(svc.alerts) == svc.ordered.index(svc.ingest) - 1
    assert svc.alerts.health_alerts.observe in svc.health.status_observers
    off = tap.parse(base + ["--dsn", "dbname=x"], environ={"NIGHTOWL_ALERTS": "off"})
    assert tap.makeService(off, reactor=MemoryReactorClock()).alerts is None
    with pytest.raises(Exception, match="--alerts: expected one of on/off"):
        tap.parse(base + ["--alerts", "maybe"], environ={})
