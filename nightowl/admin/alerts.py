"""
``nightowl alerts``: add, list, remove and test alert channels.

    nightowl alerts add webhook --name ops --url https://... --secret S
    nightowl alerts add slack|discord --name chat --url https://hooks...
    nightowl alerts add email --name mail --to a@x,b@x --from nightowl@x \\
        --smtp smtp.x:587 --tls starttls --user u --password-env SMTP_PASSWORD
    nightowl alerts list                 (secrets masked)
    nightowl alerts remove NAME
    nightowl alerts test [--channel NAME]  (a real message to each channel;
                                          PASS/FAIL each; exit 1 on any FAIL)

The SMTP password is never stored: ``--password-env`` names the environment
variable the sending agent (and ``alerts test``) reads it from.
"""

import os
import socket
import sys

from nightowl.admin import pg
from nightowl.alerts import channels as ch


def configure(parser):
    parser.add_argument("--dsn", default=os.environ.get("NIGHTOWL_DSN"),
                        help="PostgreSQL DSN (default: $NIGHTOWL_DSN)")
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    add = sub.add_parser("add", help="add a channel")
    add.add_argument("type", choices=ch.TYPES)
    add.add_argument("--name", required=True)
    add.add_argument("--url", help="webhook / slack / discord: the URL to POST to")
    add.add_argument("--secret", help="webhook: HMAC-SHA256 signing secret")
    add.add_argument("--to", help="email: recipients, comma separated")
    add.add_argument("--from", dest="sender", help="email: sender address")
    add.add_argument("--smtp", help="email: HOST:PORT of the SMTP server")
    add.add_argument("--tls", choices=ch.TLS_MODES, default="starttls",
                     help="email: starttls (default), ssl (implicit TLS) or none")
    add.add_argument("--user", help="email: SMTP AUTH user")
    add.add_argument("--password-env", help="email: NAME of the environment variable that "
                     "holds the SMTP password (the password itself is never stored)")
    add.add_argument("--ca-file", help="email: PEM file of the CA to trust for TLS")
    add.add_argument("--events", help="comma separated events this channel receives "
                     "(default: all): " + ", ".join(ch.EVENTS))
    add.add_argument("--rate-limit", type=int, default=ch.DEFAULT_RATE_LIMIT,
                     help="alerts per window before a digest (default %(default)s)")
    add.add_argument("--rate-window", type=int, default=ch.DEFAULT_RATE_WINDOW,
                     help="rate limit window in seconds (default %(default)s)")
    sub.add_parser("list", help="list channels (secrets masked)")
    rm = sub.add_parser("remove", help="remove a channel and its delivery history")
    rm.add_argument("name")
    test = sub.add_parser("test", help="send a real test alert to each enabled channel")
    test.add_argument("--channel", help="only this channel")
    test.add_argument("--timeout", type=float, default=15.0,
                      help="seconds per channel (default %(default)s)")
    test.add_argument("--environment", default=os.environ.get("NIGHTOWL_ENVIRONMENT",
                                                              "production"))


def _connect(dsn):
    return pg.connect(dsn, "nightowl-alerts-cli")


def run(args):
    from nightowl.errors import CommandError
    if not args.action:
        raise CommandError("expected an action: add, list, remove or test")
    conn = _connect(args.dsn)
    try:
        return {"add": _add, "list": _list, "remove": _remove, "test": _test}[args.action](
            conn, args)
    except ch.ChannelError as e:
        raise CommandError(str(e))
    except Exception as e:
        import psycopg2
        if isinstance(e, psycopg2.errors.UndefinedTable):
            raise CommandError("the alert tables are missing: run `nightowl migrate` first")
        raise
    finally:
        conn.close()


def _add(conn, args):
    if args.type == "email":
        host, port = ch.parse_hostport(args.smtp, args.tls)
        settings = {"to": args.to, "from": args.sender, "smtp_host": host, "smtp_port": port,
                    "tls": args.tls, "user": args.user, "password_env": args.password_env,
                    "ca_file": args.ca_file}
    else:
        settings = {"url": args.url}
        if args.type == "webhook":
            settings["secret"] = args.secret
    for flag, value, ok in (("--secret", args.secret, args.type == "webhook"),
                            ("--url", args.url, args.type != "email"),
                            ("--smtp", args.smtp, args.type == "email")):
        if value and not ok:
            raise ch.ChannelError("{} is not used by a {} channel".format(flag, args.type))
    events = [e.strip() for e in args.events.split(",")] if args.events else None
    if args.rate_limit < 1 or args.rate_window < 1:
        raise ch.ChannelError("--rate-limit and --rate-window must be at least 1")
    ch.add(conn, args.name, args.type, settings, events=events, rate_limit=args.rate_limit,
           rate_window=args.rate_window)
    print("added {} channel {}".format(args.type, args.name))
    return 0


def _list(conn, args):
    import orjson
    found = ch.load(conn, enabled_only=False)
    if not found:
        print("no alert channels (add one with `nightowl alerts add`)")
        return 0
    for channel in found:
        print("{}  {}  {}  events={}  rate={}/{}s  {}".format(
            channel.name, channel.type, "enabled" if channel.enabled else "disabled",
            ",".join(channel.events) if channel.events else "all", channel.rate_limit,
            channel.rate_window,
            orjson.dumps(ch.masked(channel), option=orjson.OPT_SORT_KEYS).decode()))
    return 0


def _remove(conn, args):
    from nightowl.errors import CommandError
    if not ch.remove(conn, args.name):
        raise CommandError("no channel named {!r}".format(args.name))
    print("removed {}".format(args.name))
    return 0


def _test(conn, args):
    from nightowl.errors import CommandError
    found = ch.load(conn, name=args.channel)
    if not found:
        raise CommandError("no enabled channel named {!r}".format(args.channel)
                           if args.channel else "no enabled channels")
    results = run_tests(found, environment=args.environment, timeout=args.timeout)
    failures = 0
    for channel, error in results:
        if error is None:
            print("PASS {} ({})".format(channel.name, channel.type))
        else:
            failures += 1
            print("FAIL {} ({}): {}".format(channel.name, channel.type, error))
    sys.stdout.flush()
    if failures:
        return 1
    print("all {} channels accepted the test alert (what happens after an SMTP 250 or "
          "an HTTP 2xx is up to the receiver)".format(len(results)))
    return 0


def run_tests(found, environment, timeout):
    """[(channel, error or None)]: one real test alert per channel, on a reactor."""
    import uuid

    from treq.client import HTTPClient
    from twisted.internet import defer, reactor
    from twisted.web.client import Agent

    from nightowl import quiethttp
    from nightowl.alerts import messages
    from nightowl.alerts.healthalerts import _utc
    from nightowl.alerts.transport import Transport

    pool = quiethttp.pool(reactor, persistent=False)
    transport = Transport(reactor, HTTPClient(Agent(reactor, pool=pool, connectTimeout=timeout)),
                          timeout=timeout)
    notice = messages.test_notice(environment, socket.gethostname(), _utc(reactor.seconds()))
    results = []

    def one(channel):
        d = defer.maybeDeferred(transport.send, channel, notice, str(uuid.uuid4()))
        d.addCallbacks(lambda _: None, lambda f: " ".join(f.getErrorMessage().split()))
        d.addCallback(lambda error: results.append((channel, error)))
        return d

    def go():
        d = defer.DeferredList([one(c) for c in found])
        d.addBoth(lambda _: pool.closeCachedConnections())
        d.addBoth(lambda _: reactor.stop())
    reactor.callWhenRunning(go)
    reactor.run(installSignalHandlers=False)
    order = dict((c.id, i) for i, c in enumerate(found))
    return sorted(results, key=lambda r: order[r[0].id])
