"""
What each channel type sends: pure functions from an event to bytes.

An event (issue alert, digest, agent health, test) first becomes a
L{Notice}: a label, a name, a message, some fields and the webhook's JSON
body.  ``render(type, notice, delivery_id)`` turns it into what the channel
sends, escaping every piece of telemetry for that channel (``escape.py``).
The webhook signature is L{sign}; README "Alerts" shows how to verify it.
"""

import hashlib
import hmac

import orjson

from nightowl.alerts import escape

APP = "nightowl"
NAME_LIMIT = 200
MESSAGE_LIMIT = 200
WEBHOOK_STRING_LIMIT = 2000
DIGEST_LISTED = 3

STYLES = {
    # event: (label, emoji, colour)
    "issue.new": ("New Issue", "\U0001f6a8", 0xDC2626),
    "performance.new": ("Performance Alert", "\u26a1", 0xF59E0B),
    "issue.reopened": ("Reopened Issue", "\U0001f504", 0xD97706),
    "digest": ("Alerts held back by the rate limit", "\U0001f4e6", 0x6B7280),
    "health.degraded": ("Agent degraded", "\U0001f7e1", 0xF59E0B),
    "health.critical": ("Agent critical", "\U0001f534", 0xDC2626),
    "health.recovered": ("Agent recovered", "\u2705", 0x16A34A),
    "test": ("Test alert", "\U0001f9ea", 0x2563EB),
}
NOUNS = {"issue.new": ("new issue", "new issues"),
         "issue.reopened": ("reopened issue", "reopened issues"),
         "performance.new": ("new performance issue", "new performance issues")}


class Notice:
    """A channel-neutral alert: raw (unescaped) text and the webhook body."""

    def __init__(self, event, name, message, fields, at, body):
        self.event = event
        self.label, self.emoji, self.colour = STYLES[event]
        self.name = name
        self.message = message
        self.fields = fields          # [(label, value)], values raw text
        self.at = at                  # ISO-8601 text
        self.body = body              # dict: the webhook JSON (delivery_id added on render)


def _clip(value):
    if isinstance(value, str) and len(value) > WEBHOOK_STRING_LIMIT:
        return value[:WEBHOOK_STRING_LIMIT - 3] + "..."
    return value


def issue_notice(payload, event=None):
    """From an outbox payload (CONTRACTS.md shape)."""
    issue = dict(payload.get("issue") or {})
    event = event or payload.get("event") or "issue.new"
    if event == "issue.new" and issue.get("type") == "performance":
        event = "performance.new"
    if event not in STYLES:
        event = "issue.new"
    performance = issue.get("type") == "performance"
    name = (issue.get("target") if performance else issue.get("exception_class")) \
        or issue.get("exception_class") or issue.get("target") or "unknown"
    fields = [("Issue", "#{}".format(issue.get("id")) if issue.get("id") is not None else "-"),
              ("Environment", issue.get("environment") or payload.get("environment") or "-")]
    if performance:
        fields += [("Kind", issue.get("kind") or issue.get("subtype") or "-"),
                   ("Duration", _ms(issue.get("duration_ms"))),
                   ("Threshold", _ms(issue.get("threshold_ms")))]
    fields += [("Occurrences", str(issue.get("occurrences") or 0)),
               ("Users affected", str(issue.get("users") or 0)),
               ("First seen", issue.get("first_seen_at") or "-"),
               ("Last seen", issue.get("last_seen_at") or "-")]
    body = {"event": payload.get("event") or event, "at": payload.get("at"),
            "issue": dict((k, _clip(v)) for k, v in issue.items())}
    return Notice(event, name, issue.get("message") or "", fields, payload.get("at"), body)


def _ms(value):
    return "-" if value is None else "{} ms".format(value)


def digest_notice(digest):
    """
    ``digest``: {"count", "events": {event: n}, "listed": [{"event", "issue_id",
    "title"}], "rate_limit", "window_seconds", "at"}.
    """
    count = int(digest.get("count") or 0)
    listed = list(digest.get("listed") or ())[:DIGEST_LISTED]
    titles = "; ".join(escape.bound(item.get("title"), 80) for item in listed)
    message = (titles + "; " if titles else "") + more_phrase(count - len(listed),
                                                              digest.get("events") or {})
    name = "{} alerts over the limit of {} per {} s".format(
        count, digest.get("rate_limit"), digest.get("window_seconds"))
    fields = [(event, str(n)) for event, n in sorted((digest.get("events") or {}).items())]
    body = {"event": "digest", "at": digest.get("at"), "count": count,
            "events": digest.get("events") or {},
            "listed": [dict((k, _clip(v)) for k, v in item.items()) for item in listed],
            "rate_limit": {"limit": digest.get("rate_limit"),
                           "window_seconds": digest.get("window_seconds")}}
    return Notice("digest", name, message, fields, digest.get("at"), body)


def more_phrase(rest, events):
    """``and 37 more new issues`` (one kind) or ``and 37 more alerts (...)``."""
    kinds = [e for e, n in events.items() if n]
    if len(kinds) == 1 and kinds[0] in NOUNS:
        return "and {} more {}".format(rest, NOUNS[kinds[0]][rest != 1])
    parts = ", ".join("{} {}".format(n, NOUNS.get(e, (e, e))[n != 1])
                      for e, n in sorted(events.items()) if n)
    return "and {} more alerts ({})".format(rest, parts)


def health_notice(event, status, previous, reasons, instance, at):
    reasons = list(reasons or ())
    if event == "health.recovered":
        message = "the agent is healthy again (was {})".format(previous)
    else:
        message = "; ".join("{}: {}".format(r.get("code"), r.get("message"))
                            for r in reasons if r.get("level") != "info") or status
    fields = [("Status", status), ("Previous", previous or "-"), ("Instance", instance)]
    body = {"event": event, "at": at,
            "agent": {"instance": instance, "status": status, "previous_status": previous,
                      "reasons": [dict((k, _clip(v)) for k, v in r.items()) for r in reasons]}}
    return Notice(event, "nightowl agent " + instance, message, fields, at, body)


def test_notice(environment, instance, at):
    payload = {"event": "test", "at": at, "issue": {
        "id": None, "type": "exception", "subtype": None, "status": "open",
        "exception_class": "Nightowl\\TestNotification",
        "message": "Test alert from `nightowl alerts test`: if you are reading this, "
                   "the agent can reach your channel.",
        "environment": environment, "group_hash": "nightowl-test-notification",
        "first_seen_at": at, "last_seen_at": at, "occurrences": 1, "users": 0,
        "kind": None, "target": None, "threshold_ms": None, "duration_ms": None}}
    notice = issue_notice(payload, event="test")
    notice.fields.append(("Instance", instance))
    return notice


# -- rendering -----------------------------------------------------------------

def render(type, notice, delivery_id):
    """bytes (JSON) for webhook/slack/discord; (subject, text, html) for email."""
    return _RENDER[type](notice, delivery_id)


def _json(obj):
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def render_webhook(notice, delivery_id):
    body = dict(notice.body, delivery_id=delivery_id)
    return _json(body)


def render_slack(notice, delivery_id):
    name = escape.slack(notice.name, NAME_LIMIT)
    message = escape.slack(notice.message, MESSAGE_LIMIT)
    summary = escape.slack("{} {} \u00b7 {} \u00b7 {} \u00b7 {}".format(
        notice.emoji, notice.label, APP, escape.bound(notice.name, NAME_LIMIT),
        escape.bound(notice.message, MESSAGE_LIMIT)), 250)
    fields = [{"type": "plain_text", "text": "{}: {}".format(label, escape.slack(value, 100))}
              for label, value in notice.fields[:10]]
    blocks = [{"type": "header",
               "text": {"type": "plain_text", "text": "{} {}".format(notice.emoji, notice.label)}},
              {"type": "section", "text": {"type": "plain_text", "text": name}},
              {"type": "section", "text": {"type": "plain_text", "text": message or "-"}}]
    if fields:
        blocks.append({"type": "section", "fields": fields})
    blocks.append({"type": "context", "elements": [
        {"type": "plain_text", "text": "nightowl \u00b7 delivery {}".format(delivery_id)}]})
    return _json({"username": "nightowl", "text": summary, "mrkdwn": False,
                  "attachments": [{"color": "#{:06X}".format(notice.colour),
                                   "fallback": summary, "blocks": blocks}]})


def render_discord(notice, delivery_id):
    name = escape.discord(notice.name, NAME_LIMIT)
    message = escape.discord(notice.message, MESSAGE_LIMIT)
    embed = {"title": "{}  {}".format(notice.emoji, notice.label),
             "description": "**{}**\n{}".format(name, message),
             "color": notice.colour,
             "fields": [{"name": label, "value": escape.discord(value, 100) or "-",
                         "inline": True} for label, value in notice.fields[:25]],
             "footer": {"text": "nightowl \u00b7 delivery {}".format(delivery_id)}}
    if notice.at:
        embed["timestamp"] = notice.at
    return _json({"username": "nightowl", "allowed_mentions": {"parse": []},
                  "embeds": [embed]})


def render_email(notice, delivery_id):
    subject = escape.header("[{}] {}: {}".format(APP, notice.label, notice.name), 200)
    lines = [notice.label, "", escape.bound(notice.name, NAME_LIMIT),
             escape.bound(notice.message, 2000), ""]
    lines += ["{}: {}".format(label, escape.bound(value, 200)) for label, value in notice.fields]
    lines += ["", "delivery {}".format(delivery_id)]
    text = "\n".join(lines) + "\n"
    rows = "".join("<tr><th align=\"left\">{}</th><td>{}</td></tr>".format(
        escape.html(label, 100), escape.html(value, 200)) for label, value in notice.fields)
    html = ("<!DOCTYPE html><html><body><h2>{} {}</h2><p><strong>{}</strong></p>"
            "<p>{}</p><table>{}</table><p><small>nightowl &middot; delivery {}</small></p>"
            "</body></html>").format(
        notice.emoji, escape.html(notice.label), escape.html(notice.name, NAME_LIMIT),
        escape.html(notice.message, 2000), rows, escape.html(delivery_id))
    return subject, text, html


_RENDER = {"webhook": render_webhook, "slack": render_slack, "discord": render_discord,
           "email": render_email}


def sign(secret, body, timestamp):
    """``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``."""
    t = str(int(timestamp))
    mac = hmac.new(secret.encode("utf-8"), t.encode("ascii") + b"." + body, hashlib.sha256)
    return "t={},v1={}".format(t, mac.hexdigest())
