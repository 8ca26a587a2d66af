"""
``nightowl prune``: apply retention now.  Drops the daily partitions of the
raw tables that lie entirely before ``now - retention-days`` (and deletes
expired rows parked in the DEFAULT partitions), via nightowl.partitions,
the same code the agent runs every hour, and applies the rollup tiers'
retention (minutes 7 days, hours 90, days 730 by default; rows older than
that by the database clock are deleted) and the ended alert history's
(30 days; nightowl.alerts.prune).  Issues and users are never touched.
"""

import os

from nightowl.admin import pg


#: rollup tiers and their default retention in days (as tap.Options)
TIERS = (("minutes", 7), ("hours", 90), ("days", 730))


def configure(parser):
    parser.add_argument("--dsn", default=None,
                        help="PostgreSQL DSN (default: NIGHTOWL_DSN)")
    parser.add_argument("--retention-days", type=int, default=None, metavar="N",
                        help="keep this many days (default: NIGHTOWL_RETENTION_DAYS, else 14)")
    for tier, default in TIERS:
        parser.add_argument("--rollup-retention-" + tier, type=int, default=None, metavar="N",
                            help="days of per-{} rollups kept (default: "
                                 "NIGHTOWL_ROLLUP_RETENTION_{}, else {})".format(
                                     tier[:-1], tier.upper(), default))
    parser.add_argument("--alert-retention-days", type=int, default=None, metavar="N",
                        help="days of sent, dead and digested alert history kept (default: "
                             "NIGHTOWL_ALERT_RETENTION_DAYS, else 30)")


def _days(args, attr="retention_days", env="NIGHTOWL_RETENTION_DAYS", default=14):
    from nightowl.errors import CommandError
    value = getattr(args, attr)
    if value is None:
        text = os.environ.get(env, "").strip() or str(default)
        try:
            value = int(text)
        except ValueError:
            raise CommandError("{}: expected a whole number, got {!r}".format(env, text), code=2)
    if value <= 0:
        raise CommandError("--{}: must be greater than 0, got {}".format(
            attr.replace("_", "-"), value), code=2)
    return value


def run(args):
    import psycopg2

    from nightowl.admin.progress import Progress
    from nightowl.errors import CommandError
    from nightowl.retention import RecordingLog, sweep
    dsn = args.dsn or os.environ.get("NIGHTOWL_DSN")
    if not dsn or not dsn.strip():
        raise CommandError("no DSN: pass --dsn or set NIGHTOWL_DSN")
    days = _days(args)
    tier_days = tuple(_days(args, "rollup_retention_" + tier,
                            "NIGHTOWL_ROLLUP_RETENTION_" + tier.upper(), default)
                      for tier, default in TIERS)
    alert_days = _days(args, "alert_retention_days", "NIGHTOWL_ALERT_RETENTION_DAYS", 30)
    conn = pg.connect(dsn, "nightowl-prune")
    progress = Progress("prune", total=1)
    log = RecordingLog()
    try:
        result = sweep(dsn, days, ensure=False, log=log, connect=lambda *a, **kw: conn,
                       rollup_days=tier_days, alert_days=alert_days)
    except psycopg2.Error as e:
        progress.finish("failed")
        raise CommandError("retention failed ({}): {}".format(
            e.pgcode or e.__class__.__name__, _first_line(str(e))))
    progress.update(1)
    progress.finish("{} partitions dropped".format(len(result["dropped"])))
    for name in result["dropped"]:
        print("dropped " + name)
    for line in log.infos:
        if line.startswith("retention on"):
            print(line)
    if not result["dropped"]:
        print("nothing older than {} days to drop".format(days))
    pruned = result.get("rollups_pruned") or {}
    if pruned:
        print("rollups deleted: " + ", ".join(
            "{} {} rows (older than {} days)".format(pruned.get(table, 0), tier[:-1], n)
            for (tier, _), n, table in zip(TIERS, tier_days, sorted(pruned, key=_tier_order))))
    alerts = result.get("alerts_pruned") or {}
    if any(alerts.values()):
        print("alert history deleted: {} alerts, {} digests (ended more than {} days ago)".format(
            alerts.get("alert_outbox", 0), alerts.get("alert_digests", 0), alert_days))
    if result["errors"]:
        for text in result["errors"]:
            print("ERROR " + text)
        raise CommandError("{} table(s) could not be pruned (see above)".format(
            len(result["errors"])))
    return 0


def _tier_order(table):
    return ("minute", "hour", "day").index(table.rsplit("_", 1)[1])


def _first_line(text):
    return (text.strip().splitlines() or [""])[0]
