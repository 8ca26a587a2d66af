"""
The pages of one kind of telemetry, all on one pattern: requests, queries,
jobs, outgoing requests, cache, commands and scheduled tasks.  A kind page
shows the series over the range, the most time-consuming groups and every
group with count, errors and percentiles; a group page shows that group's
series and its slowest recent rows, each linked to its trace.  Queries add
N+1 candidates; cache adds hit ratios.
"""

from twisted.web.template import tags

from nightowl.dashboard import charts
from nightowl.dashboard.views.layout import (
    card, group_label, ms, num, page, pct, section, table, trace_link, when)
from nightowl.dashboard.views.overview import latency_charts, totals

#: URL segment -> (rollup kind, page title, what one group is called)
KIND_PAGES = {
    "requests": ("request", "Requests", "Route"),
    "queries": ("query", "Queries", "Query"),
    "jobs": ("job", "Jobs", "Job"),
    "outgoing": ("outgoing", "Outgoing requests", "Host"),
    "cache": ("cache", "Cache", "Store and event"),
    "commands": ("command", "Commands", "Command"),
    "scheduled": ("scheduled_task", "Scheduled tasks", "Task"),
}


def _short(text, limit=140):
    text = text or "(none)"
    return text if len(text) <= limit else text[:limit - 1] + "\u2026"


def group_href(ctx, segment, row):
    return ctx.href("/{}/group".format(segment), key=row["group_key"], target=row["target"])


def groups_table(ctx, segment, noun, rows):
    body = [[tags.a(_short(group_label(r)), href=group_href(ctx, segment, r), class_="code"),
             num(r["count"]), num(r["errors"]), ms(r["p50_ms"]), ms(r["p95_ms"]),
             ms(r["p99_ms"]), ms(r["max_ms"]), ms(r["sum_ms"])] for r in rows]
    return table([noun, "Count#", "Errors#", "p50#", "p95#", "p99#", "Max#", "Total time#"], body)


def render_kind(ctx, segment, data):
    kind, title, noun = KIND_PAGES[segment]
    bars = [(group_label(r), r["sum_ms"], group_href(ctx, segment, r))
            for r in data["by_sum"]]
    body = [totals(data["series"], title), latency_charts(data["series"], title, ctx.until)]
    if segment == "cache":
        body.append(cache_section(data["stores"]))
    body.append(section("Most time-consuming", charts.bar_chart(
        "Most time-consuming " + title.lower(), bars, " ms")))
    if segment == "queries":
        body.append(n_plus_one_section(ctx, data))
    body.append(section("Slowest (by p95)", groups_table(ctx, segment, noun, data["groups"])))
    return page(ctx, title, *body)


def cache_section(stores):
    hits = sum(s["hits"] for s in stores)
    misses = sum(s["misses"] for s in stores)
    rows = [[s["store"] or "(default)", num(s["hits"]), num(s["misses"]), num(s["writes"]),
             num(s["events"]), pct(s["hits"], s["hits"] + s["misses"])] for s in stores]
    return section("Hit ratio",
                   tags.div(class_="cards")(card("Hit ratio", pct(hits, hits + misses),
                                                 "hits / (hits + misses)"),
                                            card("Hits", num(hits)), card("Misses", num(misses))),
                   table(["Store", "Hits#", "Misses#", "Writes#", "Events#", "Hit ratio#"], rows))


def n_plus_one_section(ctx, data):
    rows = [[tags.span(_short(r["sql"], 200), class_="code"), num(r["executions"]),
             num(r["max_per_execution"]), num(r["total"]), ms((r["sum_us"] or 0) / 1000.0),
             trace_link(ctx, r["sample"], "worst", r.get("sample_at"))] for r in data["n_plus_one"]]
    return section(
        "N+1 candidates",
        tags.p("One query group run 5 or more times within one execution (request, job, "
               "command), since ", when(data["n_plus_one_since"]), ".", class_="muted"),
        table(["Query", "Executions#", "Most in one#", "Runs#", "Time#", "Sample"], rows,
              empty="No query repeated within one execution in this range."))


def render_group(ctx, segment, target, data):
    kind, title, noun = KIND_PAGES[segment]
    rows = [[when(s["created_at"]), tags.span(_short(s["label"], 200), class_="code"),
             s["status"] or "\u2013", ms(None if s["duration"] is None else s["duration"] / 1000.0),
             trace_link(ctx, s["trace"], at=s["created_at"])] for s in data["samples"]]
    return page(
        ctx, "{}: {}".format(noun, _short(target, 80)),
        tags.p(tags.a("\u2190 all " + title.lower(), href=ctx.href("/" + segment))),
        tags.pre(target or "(none)", class_="target"),
        totals(data["series"], title),
        latency_charts(data["series"], noun, ctx.until),
        section("Slowest recent",
                tags.p("The slowest of this group's newest {:,} rows since ".format(
                    data.get("samples_scan") or 0), when(data.get("samples_since")), ".",
                    class_="muted"),
                table(["When", noun, "Status", "Duration#", "Trace"], rows,
                      empty="No row of this group in this range.")))
