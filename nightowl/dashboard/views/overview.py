"""
The overview page: request rate, error rate and latency over the range, the
slowest routes, newest and reopened issues, and the running agent's health
(from its own /status snapshot, not from Postgres).
"""

from twisted.web.template import tags

from nightowl.dashboard import charts
from nightowl.dashboard.views.layout import (
    card, group_label, ms, num, page, pct, section, table, when)

PARTIAL_MIN_SECONDS = 15


def per_minute(series, until=None):
    """
    Per minute in each bucket, and the bucket's width in minutes.  The
    bucket holding ``until`` (now) has only its elapsed part behind it: it
    is divided by its elapsed minutes (None in its first 15 s, too few to
    say), so the rate does not dip at the chart's end as a count would.
    """
    width = 60.0 if len(series) < 2 else (
        series[1]["bucket"] - series[0]["bucket"]).total_seconds()
    rates = []
    for s in series:
        seconds = width
        if until is not None:
            seconds = min(width, (until - s["bucket"]).total_seconds())
        rates.append(s["count"] * 60.0 / seconds if seconds >= PARTIAL_MIN_SECONDS else None)
    return rates, width / 60.0


def latency_charts(series, title, until=None):
    buckets = [s["bucket"] for s in series]
    rate, minutes = per_minute(series, until)
    errors = [(100.0 * s["errors"] / s["count"]) if s["count"] else None for s in series]
    label = "per minute (averaged over {:g} min buckets{})".format(
        minutes, "; the last one so far" if minutes > 1 and until is not None else "")
    return tags.div(class_="charts")(
        charts.line_chart(title + ": per minute", buckets, [(label, "s-count", rate)], area=True),
        charts.line_chart(title + ": error rate", buckets, [("error rate", "s-err", errors)],
                          unit="%"),
        charts.line_chart(title + ": latency", buckets,
                          [("p50", "s-p50", [s["p50_ms"] for s in series]),
                           ("p95", "s-p95", [s["p95_ms"] for s in series]),
                           ("p99", "s-p99", [s["p99_ms"] for s in series])], unit=" ms"))


def totals(series, label):
    count = sum(s["count"] for s in series)
    errors = sum(s["errors"] for s in series)
    p95s = [s["p95_ms"] for s in series if s["p95_ms"] is not None]
    p99s = [s["p99_ms"] for s in series if s["p99_ms"] is not None]
    return tags.div(class_="cards")(
        card(label, num(count)),
        card("Errors", num(errors), pct(errors, count)),
        card("Worst p95", ms(max(p95s) if p95s else None), "of any bucket"),
        card("Worst p99", ms(max(p99s) if p99s else None), "of any bucket"))


def issue_rows(ctx, issues, at_key="first_seen_at"):
    return [[tags.a(i["exception_class"] or i["type"], href=ctx.href("/issues/{}".format(i["id"]))),
             (i["exception_message"] or "")[:160], i["status"], i["environment"],
             num(i["occurrences_count"]), when(i[at_key])]
            for i in issues]


def agent_health(status):
    if status is None:
        return section("Agent health", tags.p("The health service is off (--health none): "
                                              "no figures from the agent.", class_="muted"))
    buf, drain, ingest = status["buffer"], status["drain"], status["ingest"]
    reasons = [tags.li("{}: {}".format(r["code"], r["message"]), class_=r["level"])
               for r in status.get("reasons") or ()]
    return section(
        "Agent health",
        tags.div(class_="cards")(
            card("Status", status.get("status", "?")),
            card("Buffer depth", num(buf.get("pending")), "payloads waiting"),
            card("Drain lag", "{:.1f} s".format(drain.get("lag_seconds") or 0.0),
                 "oldest pending payload"),
            card("Ingest rate", "{:.1f}/s".format(ingest.get("accept_rate") or 0.0),
                 "payloads accepted"),
            card("Drain rate", "{:.1f}/s".format(drain.get("row_rate") or 0.0), "rows")),
        tags.ul(*reasons) if reasons else "")


def render(ctx, data, health):
    series = data["series"]
    slowest = data["slowest"]
    alerts = data.get("alerts")
    bars = [(group_label(r), r["p95_ms"], ctx.href(
        "/requests/group", key=r["group_key"], target=r["target"])) for r in slowest]
    alert_note = ("no alert outbox in this database" if alerts is None else "alert events queued")
    return page(
        ctx, "Overview",
        totals(series, "Requests"),
        latency_charts(series, "Requests", ctx.until),
        section("Slowest routes (p95)", charts.bar_chart("Slowest routes by p95", bars, " ms")),
        section("Newest issues", table(["Issue", "Message", "Status", "Environment",
                                        "Occurrences#", "First seen"],
                                       issue_rows(ctx, data["newest"]),
                                       empty="No new issues in this range.")),
        section("Reopened issues", table(["Issue", "Message", "Status", "Environment",
                                          "Occurrences#", "Reopened"],
                                         issue_rows(ctx, data["reopened"], "reopened_at"),
                                         empty="No issue was reopened in this range.")),
        agent_health(health),
        section("Alerts", tags.div(class_="cards")(
            card("Alerts", "\u2013" if alerts is None else num(alerts), alert_note))))
