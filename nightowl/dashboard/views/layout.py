"""
The page frame every dashboard page shares (head, navigation, range and
environment filter, logout form) and small template helpers: tables, links,
numbers, times.  Everything is a ``twisted.web.template`` tag, so every
string that reaches the page is escaped by the flattener.
"""

import datetime
from urllib.parse import urlencode

from twisted.web.template import Tag, tags

RANGES = (("1h", datetime.timedelta(hours=1)), ("24h", datetime.timedelta(hours=24)),
          ("7d", datetime.timedelta(days=7)), ("30d", datetime.timedelta(days=30)))
DEFAULT_RANGE = "24h"

NAV = (("/", "Overview"), ("/requests", "Requests"), ("/queries", "Queries"),
       ("/jobs", "Jobs"), ("/outgoing", "Outgoing"), ("/cache", "Cache"),
       ("/commands", "Commands"), ("/scheduled", "Scheduled tasks"), ("/issues", "Issues"))


class Context:
    """What the frame needs to know about this request."""

    def __init__(self, path, range_name, environment, csrf, logout, refresh=60, until=None):
        self.path = path
        self.until = until            # the range's end (now): the last bucket is partial
        self.range_name = range_name
        self.environment = environment
        self.environments = []
        self.csrf = csrf
        self.logout = logout          # show a logout button (a login is required)
        self.refresh = refresh

    def href(self, path, **params):
        """A link that keeps the range and environment."""
        query = [("range", self.range_name)]
        if self.environment is not None:
            query.append(("env", self.environment))
        query += [(k, v) for (k, v) in params.items() if v is not None]
        return path + "?" + urlencode(query)


def group_label(row):
    """A group's name: its target (for requests and outgoing requests it
    already carries the method and status class, e.g. 'GET /orders [2xx]')."""
    return row.get("target") or "(none)"


def csrf_field(ctx):
    return tags.input(type="hidden", name="csrf", value=ctx.csrf)


def page(ctx, title, *body):
    nav = tags.nav()
    for path, label in NAV:
        active = (ctx.path == path or (path != "/" and ctx.path.startswith(path + "/")))
        nav(tags.a(label, href=ctx.href(path), class_="active" if active else ""))
    header = tags.header(tags.a("nightowl", href=ctx.href("/"), class_="brand"), nav)
    if ctx.logout:
        header(tags.form(csrf_field(ctx), tags.button("Log out", type="submit"),
                         method="post", action="/logout", class_="logout"))
    return tags.html(lang="en")(
        tags.head(tags.meta(charset="utf-8"),
                  tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
                  tags.title(title, " \u00b7 nightowl"),
                  tags.link(rel="stylesheet", href="/static/style.css"),
                  tags.link(rel="icon", href="data:,"),
                  tags.script(src="/static/refresh.js", defer="defer")),
        tags.body(**{"data-refresh": str(ctx.refresh)})(
            header, Tag("main")(tags.h1(title), filters(ctx), *body)))


def filters(ctx):
    """The range and environment picker: a GET form, works without JavaScript."""
    form = tags.form(method="get", action=ctx.path, class_="filters")
    ranges = tags.select(name="range")
    for name, _delta in RANGES:
        option = tags.option(name, value=name)
        if name == ctx.range_name:
            option(selected="selected")
        ranges(option)
    envs = tags.select(name="env")(tags.option("all environments", value=""))
    names = list(ctx.environments)
    if ctx.environment is not None and ctx.environment not in names:
        names.append(ctx.environment)
    for name in names:
        option = tags.option(name, value=name)
        if name == ctx.environment:
            option(selected="selected")
        envs(option)
    form(tags.label("Range ", ranges), " ", tags.label("Environment ", envs), " ",
         tags.button("Show", type="submit"))
    return form


def table(headers, rows, empty="Nothing in this range."):
    """`rows`: lists of cells (tags or text); numeric headers end with '#'."""
    head = tags.tr()
    numeric = []
    for h in headers:
        num = h.endswith("#")
        numeric.append(num)
        head(tags.th(h.rstrip("#"), class_="num" if num else ""))
    body = tags.tbody()
    for row in rows:
        tr = tags.tr()
        for cell, num in zip(row, numeric):
            tr(tags.td(cell, class_="num" if num else ""))
        body(tr)
    if not rows:
        body(tags.tr(tags.td(empty, colspan=str(len(headers)), class_="empty")))
    return tags.table(tags.thead(head), body)


def ms(value):
    if value is None:
        return "\u2013"
    if value >= 1000:
        return "{:,.0f} ms".format(value)
    if value >= 10:
        return "{:.1f} ms".format(value)
    return "{:.2f} ms".format(value)


def us(value):
    return ms(None if value is None else value / 1000.0)


def num(value):
    return "\u2013" if value is None else "{:,}".format(value)


def pct(part, whole):
    if not whole:
        return "\u2013"
    return "{:.1f}%".format(100.0 * part / whole)


def when(value):
    if value is None:
        return "\u2013"
    if isinstance(value, (int, float)):
        value = datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    return tags.time(value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
                     datetime=value.isoformat())


def trace_link(ctx, trace_id, text="trace", at=None):
    """A link to a trace; ``at`` (when it ran) lets the page read only the
    partitions around it."""
    if not trace_id:
        return "\u2013"
    if isinstance(at, datetime.datetime):
        at = int(at.timestamp())
    return tags.a(text, href=ctx.href("/trace/{}".format(trace_id), at=at))


def section(title, *body):
    return tags.section(tags.h2(title), *body)


def card(label, value, note=None):
    return tags.div(class_="card")(tags.span(label, class_="label"),
                                   tags.span(value, class_="value"),
                                   tags.span(note or "", class_="note"))
