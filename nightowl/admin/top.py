"""
``nightowl top routes|queries|jobs|outgoing``: the slowest (or busiest)
groups over a recent range, read from the rollup tables only
(nightowl.rollups.query.top), as a table or as JSON.
"""

import json
import re
import sys
from datetime import timedelta

from nightowl.admin import pg

KINDS = {"routes": "request", "queries": "query", "jobs": "job", "outgoing": "outgoing"}
JSON_KEYS = ("target", "count", "errors", "p50_ms", "p95_ms", "p99_ms", "max_ms")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def parse_duration(text):
    """'90s', '15m', '1h', '7d', '2w' -> timedelta (ValueError otherwise)."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text or "")
    if not m or int(m.group(1)) <= 0:
        raise ValueError("expected a duration like 15m, 1h, 7d; got {!r}".format(text))
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def configure(parser):
    parser.add_argument("what", choices=sorted(KINDS), help="which groups")
    parser.add_argument("--since", default="1h",
                        help="how far back (15m, 1h, 7d...; default 1h; over 6h: from the whole "
                             "UTC hour)")
    parser.add_argument("--environment", default=None, help="only this environment")
    parser.add_argument("--limit", type=int, default=20, help="rows (default 20)")
    parser.add_argument("--order", default="p95", choices=("p95", "p99", "count", "sum", "errors"),
                        help="sort key (default p95)")
    parser.add_argument("--format", default="table", choices=("table", "json"))
    parser.add_argument("--dsn", default=None, help="PostgreSQL DSN (default: NIGHTOWL_DSN)")


def connect(args, name):
    return pg.connect_args(args, name)


def _cell(v, width=None):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "{:.1f}".format(v)
    text = _CONTROL.sub("?", str(v))
    if width and len(text) > width:
        text = text[:width - 1] + "~"
    return text


def render_table(rows, out):
    head = ("target", "count", "errors", "p50_ms", "p95_ms", "p99_ms", "max_ms")
    cells = [head] + [tuple(_cell(r[k], 60 if k == "target" else None) for k in head)
                      for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    for c in cells:
        out.write("  ".join(c[0].ljust(widths[0]) if i == 0 else c[i].rjust(widths[i])
                            for i in range(len(head)) if True).rstrip() + "\n")
    if not rows:
        out.write("(no rollups in this range)\n")


def run(args):
    import psycopg2

    from nightowl.errors import CommandError
    from nightowl.rollups import query
    try:
        span = parse_duration(args.since)
    except ValueError as e:
        raise CommandError("--since: {}".format(e), code=2)
    if args.limit <= 0:
        raise CommandError("--limit: must be greater than 0", code=2)
    conn = connect(args, "nightowl-top")
    try:
        now = query.db_now(conn)
        rows = query.top(conn, KINDS[args.what], now - span, now, environment=args.environment,
                         limit=args.limit, order=args.order)
    except psycopg2.Error as e:
        raise CommandError("query failed ({})".format(e.pgcode or type(e).__name__))
    finally:
        conn.close()
    if args.format == "json":
        sys.stdout.write(json.dumps([{k: r[k] for k in JSON_KEYS} for r in rows]) + "\n")
    else:
        render_table(rows, sys.stdout)
    return 0
