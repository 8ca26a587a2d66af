"""
``nightowl rollups rebuild --since T [--until T]``: recompute the rollups of
a range from the raw rows, hour by hour (nightowl.rollups.rebuild), with
progress.  Idempotent: each hour's rollups are replaced, not added to.
"""

from datetime import datetime, timezone


def configure(parser):
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("rebuild", help="recompute rollups from raw rows (idempotent)")
    p.add_argument("--since", required=True,
                   help="start: an ISO time (UTC if no offset) or an age like 6h, 3d")
    p.add_argument("--until", default=None, help="end (default: now); same forms")
    p.add_argument("--dsn", default=None, help="PostgreSQL DSN (default: NIGHTOWL_DSN)")


def parse_time(text, now):
    from nightowl.admin.top import parse_duration
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError("expected an ISO time or an age like 6h; got {!r}".format(text))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def run(args):
    import psycopg2

    from nightowl.admin.progress import Progress
    from nightowl.admin.top import connect
    from nightowl.errors import CommandError
    from nightowl.rollups import query, rebuild
    if getattr(args, "action", None) != "rebuild":
        raise CommandError("choose an action: rebuild", code=2)
    conn = connect(args, "nightowl-rollups")
    try:
        now = query.db_now(conn)
        conn.rollback()
        try:
            since = parse_time(args.since, now)
            until = parse_time(args.until, now) if args.until else now
        except ValueError as e:
            raise CommandError(str(e), code=2)
        if until <= since:
            raise CommandError("--until must be after --since", code=2)
        hours = rebuild.hours(since, until)
        progress = Progress("rollups rebuild", total=len(hours))
        rows = 0
        for hour in hours:
            try:
                rows += rebuild.rebuild_hour(conn, hour)
            except psycopg2.Error as e:
                progress.finish("failed")
                raise CommandError("rebuild of {} failed ({})".format(
                    hour.isoformat(), e.pgcode or type(e).__name__))
            progress.advance(1)
        progress.finish("{} hours rebuilt, {} minute rows".format(len(hours), rows))
    finally:
        conn.close()
    print("rebuilt {} hours from {} to {}: {} minute rows".format(
        len(hours), hours[0].isoformat() if hours else "-",
        (hours[-1] + rebuild.HOUR).isoformat() if hours else "-", rows))
    return 0
