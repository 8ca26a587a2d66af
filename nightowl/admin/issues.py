"""
``nightowl issues list|show|resolve|ignore|reopen``: read issues and change
their status from the command line (actor ``cli`` in the activity table),
through nightowl.issues.lifecycle.

Issue text is telemetry, so attacker-controlled: the table format shows
control characters as escapes (no terminal escape sequences get through);
``--format json`` is JSON.
"""

import json
import os
import re

from nightowl.migrate import mask_dsn

STATUS_ACTIONS = {"resolve": "resolved", "ignore": "ignored", "reopen": "open"}


def add_dsn(parser):
    parser.add_argument("--dsn", default=None, help="PostgreSQL DSN (default: $NIGHTOWL_DSN)")


def configure(parser):
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("list", help="issues seen last first")
    p.add_argument("--status", default=None, help="open, resolved or ignored")
    p.add_argument("--limit", default="50", help="at most N issues (default 50)")
    p.add_argument("--format", default="table", help="table or json")
    add_dsn(p)
    p = sub.add_parser("show", help="one issue and its activity")
    p.add_argument("id")
    p.add_argument("--format", default="table", help="table or json")
    add_dsn(p)
    for name, status in STATUS_ACTIONS.items():
        p = sub.add_parser(name, help="set the issue's status to {}".format(status))
        p.add_argument("id")
        add_dsn(p)


def connect(args, application_name):
    """A psycopg2 connection from --dsn / $NIGHTOWL_DSN, or a one-line CommandError."""
    import psycopg2
    from nightowl.cli import CommandError
    dsn = args.dsn or os.environ.get("NIGHTOWL_DSN")
    if not dsn or not dsn.strip():
        raise CommandError("no DSN: pass --dsn or set NIGHTOWL_DSN")
    try:
        return psycopg2.connect(dsn, connect_timeout=10, application_name=application_name)
    except psycopg2.Error as e:
        raise CommandError("cannot connect to {}: {}".format(mask_dsn(dsn),
                                                              mask_dsn(first_line(str(e)))))


def first_line(text):
    return (text.strip().splitlines() or [""])[0]


def database_error(e):
    from nightowl.cli import CommandError
    return CommandError("PostgreSQL refused ({}): {}".format(
        getattr(e, "pgcode", None) or type(e).__name__, first_line(str(e))))


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def safe(value, width=None):
    """Text fit for a terminal: control characters as \\xNN escapes, cut to ``width``."""
    text = "" if value is None else str(value)
    text = _CONTROL.sub(lambda m: "\\x{:02x}".format(ord(m.group())) if ord(m.group()) < 256
                        else "\\u{:04x}".format(ord(m.group())), text)
    if width is not None and len(text) > width:
        text = text[:width - 3] + "..."
    return text


def _jsonable(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _title(issue):
    if issue["type"] == "performance":
        return "{} {}".format(issue["subtype"], issue["target"] or issue["exception_class"])
    return issue["exception_class"] or ""


def run(args):
    import psycopg2
    from nightowl.cli import CommandError
    from nightowl.issues import lifecycle
    fmt = getattr(args, "format", "table")
    if fmt not in ("table", "json"):
        raise CommandError("bad --format {!r}: expected table or json".format(fmt), code=2)
    if args.action == "list":
        if args.status is not None and args.status not in lifecycle.VALID_STATUSES:
            raise CommandError("bad status {!r}: expected one of {}".format(
                args.status, ", ".join(lifecycle.VALID_STATUSES)), code=2)
        try:
            limit = int(args.limit)
        except ValueError:
            limit = 0
        if limit <= 0:
            raise CommandError("bad --limit {!r}: expected a whole number > 0".format(args.limit),
                               code=2)
    conn = connect(args, "nightowl-issues")
    try:
        try:
            if args.action == "list":
                return _list(lifecycle.list_issues(conn, args.status, limit), fmt)
            if args.action == "show":
                return _show(lifecycle.get_issue(conn, args.id), fmt)
            old, new = lifecycle.set_status(conn, args.id, STATUS_ACTIONS[args.action], "cli")
        except LookupError as e:
            raise CommandError(str(e.args[0]))
        except psycopg2.Error as e:
            raise database_error(e)
    finally:
        conn.close()
    if old == new:
        print("issue {} is already {}".format(args.id, new))
    else:
        print("issue {}: {} -> {}".format(args.id, old, new))
    return 0


def _list(issues, fmt):
    if fmt == "json":
        print(json.dumps([{k: _jsonable(v) for k, v in i.items()} for i in issues],
                         sort_keys=True))
        return 0
    if not issues:
        print("no issues")
        return 0
    print("{:>6}  {:<8}  {:<11}  {:>8}  {:>6}  {:<20}  {}".format(
        "ID", "STATUS", "TYPE", "COUNT", "USERS", "LAST SEEN (UTC)", "ISSUE"))
    for i in issues:
        print("{:>6}  {:<8}  {:<11}  {:>8}  {:>6}  {:<20}  {}".format(
            i["id"], i["status"], i["type"], i["occurrences_count"], i["users_count"],
            i["last_seen_at"].astimezone(_utc()).strftime("%Y-%m-%d %H:%M:%S"),
            safe(_title(i), 60) + ("  " + safe(i["exception_message"], 60)
                                   if i["type"] == "exception" and i["exception_message"] else "")))
    return 0


def _utc():
    import datetime
    return datetime.timezone.utc


def _show(issue, fmt):
    if fmt == "json":
        activity = [{k: _jsonable(v) for k, v in a.items()} for a in issue.pop("activity")]
        out = {k: _jsonable(v) for k, v in issue.items()}
        out["activity"] = activity
        print(json.dumps(out, sort_keys=True))
        return 0
    for key in lifecycle_columns():
        value = issue[key]
        if value is None:
            continue
        print("{:<22} {}".format(key + ":", safe(_jsonable(value), 500)))
    print("activity:")
    if not issue["activity"]:
        print("  (none)")
    for a in issue["activity"]:
        print("  {}  {:<9} {:<9} {}".format(
            a["at"].astimezone(_utc()).strftime("%Y-%m-%d %H:%M:%S"), a["actor"], a["action"],
            safe(json.dumps(a["detail"], sort_keys=True) if a["detail"] is not None else "")))
    return 0


def lifecycle_columns():
    from nightowl.issues import lifecycle
    return lifecycle.COLUMNS
