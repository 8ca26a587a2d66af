"""
Server-rendered SVG charts as ``twisted.web.template`` tags: a line/area
chart for time series, horizontal bars for top lists, a timeline for traces.

Every label and title goes into the tag tree as text or an attribute value,
so the template's flattener escapes it; no markup is ever built from
strings.  Colours and fonts come from presentation attributes and CSS
classes (the Content-Security-Policy forbids inline ``style``).
"""

from twisted.web.template import Tag

W, H = 720, 220
WIDE = 1120        # bars and timelines span the page: about one user unit per pixel
PAD_L, PAD_R, PAD_T, PAD_B = 84, 12, 12, 26


def _t(name, **attrs):
    tag = Tag(name)
    for key, value in attrs.items():
        tag.attributes[key.rstrip("_").replace("__", "-")] = str(value)
    return tag


def _fmt(value):
    if value is None:
        return ""
    if value >= 1000 and value == int(value):
        return "{:,}".format(int(value))
    if value >= 100:
        return "{:,.0f}".format(value)
    if value >= 10:
        return "{:.1f}".format(value)
    return "{:.2f}".format(value).rstrip("0").rstrip(".") or "0"


def _nice_max(value):
    if not value or value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1) if value >= 1 else 1
    for m in (1, 2, 2.5, 5, 10):
        if value <= m * magnitude:
            return float(m * magnitude)
    return float(value)


def _time_label(bucket, step):
    if step == "day":
        return bucket.strftime("%m-%d")
    if step == "hour":
        return bucket.strftime("%m-%d %H:00")
    return bucket.strftime("%H:%M")


def _step(buckets):
    if len(buckets) < 2:
        return "minute"
    gap = (buckets[1] - buckets[0]).total_seconds()
    return "minute" if gap < 3600 else "hour" if gap < 86400 else "day"


def line_chart(title, buckets, lines, unit="", area=False):
    """
    `lines`: [(name, css class, [value or None per bucket])].  The first line
    is drawn as a filled area when `area` is true.  Missing values break the
    line.
    """
    svg = _t("svg", xmlns="http://www.w3.org/2000/svg", viewBox="0 0 {} {}".format(W, H),
             class_="chart", role="img")
    svg(_t("title")(title))
    values = [v for (_n, _c, vs) in lines for v in vs if v is not None]
    top = _nice_max(max(values) if values else 0)
    inner_w, inner_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    n = max(len(buckets), 1)

    def x(i):
        return PAD_L + (inner_w * i / (n - 1) if n > 1 else inner_w / 2)

    def y(v):
        return PAD_T + inner_h - inner_h * (v / top)

    grid = _t("g", class_="grid")
    for k in range(5):
        v = top * k / 4
        grid(_t("line", x1=PAD_L, x2=W - PAD_R, y1="{:.1f}".format(y(v)),
                y2="{:.1f}".format(y(v))),
             _t("text", x=PAD_L - 6, y="{:.1f}".format(y(v) + 4), text__anchor="end")(
                 _fmt(v) + unit))
    step = _step(buckets)
    ticks = sorted(set([0, n - 1] + [int((n - 1) * k / 4) for k in range(1, 4)])) if buckets else []
    for i in ticks:
        anchor = "start" if i == 0 and n > 1 else "end" if i == n - 1 and n > 1 else "middle"
        grid(_t("text", x="{:.1f}".format(x(i)), y=H - 6, text__anchor=anchor)(
            _time_label(buckets[i], step)))
    svg(grid)
    for idx, (name, css, vs) in enumerate(lines):
        group = _t("g", class_="series " + css)
        group(_t("title")(name))
        runs, run = [], []
        for i, v in enumerate(vs):
            if v is None:
                if run:
                    runs.append(run)
                run = []
            else:
                run.append((x(i), y(v)))
        if run:
            runs.append(run)
        for run in runs:
            points = " ".join("{:.1f},{:.1f}".format(px, py) for (px, py) in run)
            if area and idx == 0:
                base = PAD_T + inner_h
                group(_t("polygon", class_="area", points="{:.1f},{:.1f} {} {:.1f},{:.1f}".format(
                    run[0][0], base, points, run[-1][0], base)))
            if len(run) == 1:
                group(_t("circle", cx="{:.1f}".format(run[0][0]), cy="{:.1f}".format(run[0][1]),
                         r=2.5))
            else:
                group(_t("polyline", points=points, fill="none"))
        svg(group)
    legend = Tag("p")(class_="legend")
    for name, css, _vs in lines:
        legend(Tag("span")(Tag("span")(class_="swatch " + css), " ", name), " ")
    return Tag("figure")(class_="chart")(svg, legend)


def bar_chart(title, rows, unit=""):
    """`rows`: [(label, value, href or None)], drawn largest first as given."""
    row_h = 22
    height = max(row_h * len(rows), row_h) + 8
    svg = _t("svg", xmlns="http://www.w3.org/2000/svg", viewBox="0 0 {} {}".format(WIDE, height),
             class_="chart bars", role="img")
    svg(_t("title")(title))
    top = max([v for (_l, v, _h) in rows if v is not None] or [0]) or 1.0
    label_w, value_w = 440, 90
    bar_w = WIDE - label_w - value_w - 16
    for i, (label, value, href) in enumerate(rows):
        y0 = 4 + i * row_h
        # ~7.5 px a character at the chart's font: longer labels would run
        # past the left edge of the 440 px label column
        text = label if len(label) <= 54 else label[:53] + "\u2026"
        label_tag = _t("text", x=label_w - 8, y=y0 + 15, text__anchor="end")(
            _t("title")(label), text)
        if href:
            label_tag = _t("a", href=href)(label_tag)
        width = bar_w * ((value or 0) / top)
        svg(label_tag,
            _t("rect", x=label_w, y=y0 + 3, height=row_h - 6,
               width="{:.1f}".format(max(width, 1)), class_="bar"),
            _t("text", x="{:.1f}".format(label_w + max(width, 1) + 6), y=y0 + 15)(
                _fmt(value) + unit))
    if not rows:
        svg(_t("text", x=WIDE / 2, y=18, text__anchor="middle")("no data in this range"))
    return Tag("figure")(class_="chart")(svg)


def timeline(title, events, start, span_us):
    """`events`: [(kind, label, offset µs, duration µs)] as a gantt."""
    row_h = 18
    height = row_h * len(events) + 24
    svg = _t("svg", xmlns="http://www.w3.org/2000/svg", viewBox="0 0 {} {}".format(WIDE, height),
             class_="chart timeline", role="img")
    svg(_t("title")(title))
    left, width = 110, WIDE - 110 - 12
    span = max(span_us, 1)
    for i, (kind, label, offset, duration) in enumerate(events):
        y0 = 4 + i * row_h
        x0 = left + width * max(offset, 0) / span
        w = max(width * max(duration or 0, 0) / span, 2)
        w = min(w, left + width - x0 + 2)
        short = label if len(label) <= 70 else label[:69] + "\u2026"
        if x0 - left < width * 0.6:
            caption = _t("text", x="{:.1f}".format(x0 + w + 5), y=y0 + 12, class_="caption")
        else:
            caption = _t("text", x="{:.1f}".format(x0 - 5), y=y0 + 12, text__anchor="end",
                         class_="caption")
        svg(_t("text", x=left - 6, y=y0 + 12, text__anchor="end", class_="kind")(kind),
            _t("rect", x="{:.1f}".format(x0), y=y0 + 3, height=row_h - 5,
               width="{:.1f}".format(w),
               class_="ev ev-" + kind.replace(" ", "-"))(_t("title")(label)),
            caption(short))
    svg(_t("text", x=left, y=height - 6)("0 ms"),
        _t("text", x=WIDE - 12, y=height - 6, text__anchor="end")(
            _fmt(span_us / 1000.0) + " ms"))
    return Tag("figure")(class_="chart")(svg)
