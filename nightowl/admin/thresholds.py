"""
``nightowl thresholds set|list|remove``: the duration thresholds that turn
slow records into performance issues (nightowl.issues.thresholds).  Running
drain workers pick a change up within 30 s.
"""

import json

from nightowl.admin.issues import add_dsn, connect, database_error, safe


def configure(parser):
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("set", help="set the default of a kind, or a target's override")
    p.add_argument("kind", help="request, query, job, outgoing, command or scheduled_task")
    p.add_argument("duration", help="e.g. 500ms, 2s, or a number of milliseconds")
    p.add_argument("--target", default="", help="route, SQL, job class, host, command or task")
    add_dsn(p)
    p = sub.add_parser("list", help="every threshold, defaults first")
    p.add_argument("--format", default="table", help="table or json")
    add_dsn(p)
    p = sub.add_parser("remove", help="remove the default of a kind, or a target's override")
    p.add_argument("kind")
    p.add_argument("--target", default="")
    add_dsn(p)


def run(args):
    import psycopg2
    from nightowl.cli import CommandError
    from nightowl.issues import thresholds
    fmt = getattr(args, "format", "table")
    if fmt not in ("table", "json"):
        raise CommandError("bad --format {!r}: expected table or json".format(fmt), code=2)
    kind = target = ms = None
    try:
        if args.action in ("set", "remove"):
            kind = thresholds.canonical_kind(args.kind)
            target = thresholds.clean_target(kind, args.target)
        if args.action == "set":
            ms = thresholds.parse_duration(args.duration)
    except ValueError as e:
        raise CommandError(str(e), code=2)
    what = "{} default".format(kind) if not target else "{} {}".format(kind, safe(target, 200))
    conn = connect(args, "nightowl-thresholds")
    try:
        try:
            if args.action == "set":
                thresholds.save(conn, kind, target, ms)
                print("threshold {}: {}".format(what, thresholds.format_ms(ms)))
                return 0
            if args.action == "remove":
                if not thresholds.remove(conn, kind, target):
                    raise CommandError("no threshold for {}".format(what))
                print("removed threshold {}".format(what))
                return 0
            rows = thresholds.listing(conn)
        except psycopg2.Error as e:
            raise database_error(e)
    finally:
        conn.close()
    if fmt == "json":
        print(json.dumps([{"kind": k, "target": t or None, "duration_ms": ms,
                           "updated_at": u.isoformat()} for k, t, ms, u in rows]))
        return 0
    if not rows:
        print("no thresholds (no performance issues are made)")
        return 0
    print("{:<15} {:>10}  {}".format("KIND", "DURATION", "TARGET"))
    for k, t, ms, _ in rows:
        print("{:<15} {:>10}  {}".format(k, thresholds.format_ms(ms),
                                         safe(t, 200) if t else "(default)"))
    return 0
