"""
The issues list (status and type filters) and one issue's page: its stack
trace, occurrences over the range, users affected, history, and the
resolve / ignore / reopen buttons (POST forms with the CSRF token).
"""

import json

from twisted.web.template import tags

from nightowl.dashboard import charts
from nightowl.dashboard.views.layout import (
    card, csrf_field, num, page, section, table, trace_link, when)

STATUSES = ("open", "resolved", "ignored")
TYPES = ("exception", "performance")


def render_list(ctx, data, status, type_):
    counts = data["counts"]
    pills = tags.p(class_="pills")
    for name in (None,) + STATUSES:
        label = "{} ({})".format(name or "all", num(sum(counts.values()) if name is None
                                                   else counts.get(name, 0)))
        pills(tags.a(label, href=ctx.href("/issues", status=name, type=type_),
                     class_="active" if name == status else ""), " ")
    for name in (None,) + TYPES:
        pills(tags.a(name or "all types", href=ctx.href("/issues", status=status, type=name),
                     class_="active" if name == type_ else ""), " ")
    rows = [[tags.a("#{}".format(i["id"]), href=ctx.href("/issues/{}".format(i["id"]))),
             tags.a(i["exception_class"] or i["subtype"] or i["type"],
                    href=ctx.href("/issues/{}".format(i["id"])), class_="code"),
             (i["exception_message"] or "")[:200], tags.span(i["status"], class_="st-" + i["status"]),
             i["type"], i["environment"], num(i["occurrences_count"]), num(i["users_count"]),
             when(i["last_seen_at"])] for i in data["issues"]]
    return page(ctx, "Issues", pills,
                table(["#", "Issue", "Message", "Status", "Type", "Environment", "Occurrences#",
                       "Users#", "Last seen"], rows, empty="No issue seen in this range."))


def _frames(raw):
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return [raw] if raw else []
    if not isinstance(raw, list):
        return [json.dumps(raw)] if raw else []
    out = []
    for frame in raw:
        if isinstance(frame, dict):
            out.append("{}  {}".format(frame.get("file") or "", frame.get("source") or "").strip())
        else:
            out.append(str(frame))
    return out


def stack(latest):
    if latest is None:
        return tags.p("No occurrence of this issue is left in the raw tables.", class_="muted")
    frames = _frames(latest["trace"])
    head = "{}: {}".format(latest["class"] or "", latest["message"] or "")
    where = "{}:{}".format(latest["file"] or "?", latest["line"] or "?")
    return tags.div(
        tags.pre(head, class_="exc-message"),
        tags.p("at ", tags.span(where, class_="code"), " \u00b7 ", when(latest["created_at"]),
               " \u00b7 server {}".format(latest["server"]) if latest["server"] else "",
               class_="muted"),
        tags.ol(*[tags.li(tags.span(f, class_="code")) for f in frames], class_="frames")
        if frames else tags.p("No stack trace recorded.", class_="muted"))


def actions(ctx, issue):
    form = tags.form(csrf_field(ctx), method="post",
                     action="/issues/{}/status".format(issue["id"]), class_="actions")
    for status, label in (("resolved", "Resolve"), ("ignored", "Ignore"), ("open", "Reopen")):
        if status != issue["status"]:
            form(tags.button(label, type="submit", name="status", value=status,
                             class_="btn-" + status), " ")
    return form


def render_issue(ctx, data):
    issue = data["issue"]
    latest = data["latest"]
    title = "#{} {}".format(issue["id"], issue["exception_class"] or issue["subtype"]
                            or issue["type"])
    buckets = [s["bucket"] for s in data["series"]]
    users = [[u["user_id"], u["name"] or "\u2013", u["email"] or "\u2013", when(u["last_seen_at"])]
             for u in data["users"]]
    history = [[when(a["at"]), a["actor"], a["action"],
                json.dumps(a["detail"]) if a["detail"] is not None else ""]
               for a in data["activity"]]
    body = [
        tags.p(tags.a("\u2190 all issues", href=ctx.href("/issues"))),
        tags.div(class_="cards")(
            card("Status", tags.span(issue["status"], class_="st-" + issue["status"],
                                     id="issue-status")),
            card("Occurrences", num(issue["occurrences_count"])),
            card("Users affected", num(issue["users_count"])),
            card("First seen", when(issue["first_seen_at"])),
            card("Last seen", when(issue["last_seen_at"]))),
        actions(ctx, issue),
    ]
    if latest is None:
        body.append(tags.pre(issue["exception_message"] or "", class_="exc-message"))
    if latest is not None and latest["trace_id"]:
        body.append(tags.p("Latest occurrence: ", trace_link(ctx, latest["trace_id"],
                                                              "its trace", latest["created_at"])))
    if issue["type"] == "exception":
        body.append(section("Stack trace", stack(latest)))
        body.append(section("Occurrences", tags.div(class_="charts")(charts.line_chart(
            "Occurrences per bucket", buckets,
            [("occurrences", "s-count", [s["count"] for s in data["series"]])], area=True))))
    else:
        body.append(section("Performance", tags.p(
            "Threshold {} ms, triggered at {} ms.".format(issue.get("threshold_ms"),
                                                         issue.get("triggered_duration_ms")))))
    body.append(section("Users affected", table(["User", "Name", "Email", "Last seen"], users,
                                                empty="No user recorded.")))
    body.append(section("History", table(["When", "Who", "Action", "Detail"], history,
                                         empty="No activity recorded.")))
    return page(ctx, title, *body)
