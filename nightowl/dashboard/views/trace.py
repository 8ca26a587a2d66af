"""
The trace page: one request, command or job (by trace id or a job
attempt's execution id) with every query, cache event, outgoing request,
mail, notification, log line and exception recorded under it, on a timeline
and in a table.
"""

from twisted.web.template import tags

from nightowl.dashboard import charts
from nightowl.dashboard.views.layout import num, page, section, table, us, when


def _offsets(events):
    stamps = [e["timestamp"] for e in events if e["timestamp"] is not None]
    start = min(stamps) if stamps else None
    ends = [e["timestamp"] * 1e6 + (e["duration"] or 0) for e in events
            if e["timestamp"] is not None]
    span = (max(ends) - start * 1e6) if stamps else 0
    return start, span


def render(ctx, trace_id, data):
    events = data["events"]
    start, span = _offsets(events)
    timeline = [(e["kind"], e["label"] or "", ((e["timestamp"] - start) * 1e6)
                 if start is not None and e["timestamp"] is not None else 0, e["duration"] or 0)
                for e in events[:200]]
    rows = [[when(e["created_at"]),
             "+{:.1f} ms".format((e["timestamp"] - start) * 1000.0)
             if start is not None and e["timestamp"] is not None else "\u2013",
             tags.span(e["kind"], class_="kind k-" + e["kind"].replace(" ", "-")),
             tags.span((e["label"] or "")[:400], class_="code"), e["detail"] or "",
             us(e["duration"])] for e in events]
    kinds = {}
    for e in events:
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
    summary = ", ".join("{} {}".format(num(n), k) for k, n in sorted(kinds.items()))
    return page(
        ctx, "Trace {}".format(trace_id),
        tags.p(summary or "Nothing recorded under this id.", class_="muted"),
        section("Timeline", charts.timeline("Trace timeline", timeline, start, span))
        if events else "",
        section("Events", table(["When", "Offset#", "Kind", "What", "Detail", "Duration#"], rows,
                                empty="No rows carry this trace or execution id.")))
