"""
Daily partitions ahead, retention drops.

Raw tables are ``PARTITION BY RANGE (created_at)`` with a DEFAULT child
(created by the migrations).  ``ensure_partitions`` adds daily children
``<table>_pYYYYMMDD`` (UTC days); ``drop_expired`` drops whole expired days
and deletes expired rows that sit in the DEFAULT child.  Issues and users are
never touched.

Each table is handled in its own short transaction, guarded by
``pg_try_advisory_xact_lock`` (two agents never do this at once; the loser
skips that table and tries again on its next sweep) and a ``lock_timeout``
ceiling so a busy parent cannot stall the sweep (hazard 44).
"""

import datetime
import re
import time

from twisted.logger import Logger

from nightowl.records import RAW_TABLES

_log = Logger(namespace="nightowl.partitions")

LOCK_SQL = "SELECT pg_try_advisory_xact_lock(hashtext('nightowl_partition_maintenance'))"
_CHILD = re.compile(r"_p(\d{8})\Z")


def _utc_day(now):
    if now is None:
        return datetime.datetime.now(datetime.timezone.utc).date()
    if isinstance(now, datetime.datetime):
        if now.tzinfo is None:
            now = now.replace(tzinfo=datetime.timezone.utc)
        return now.astimezone(datetime.timezone.utc).date()
    if isinstance(now, datetime.date):
        return now
    return datetime.datetime.fromtimestamp(now, datetime.timezone.utc).date()


def _bound(day):
    return day.strftime("%Y-%m-%d 00:00:00+00")


def _locked_transaction(conn, lock_timeout_ms=3000):
    """Start a transaction holding the maintenance lock; False if taken."""
    cur = conn.cursor()
    cur.execute("SET LOCAL lock_timeout = %s", (str(int(lock_timeout_ms)) + "ms",))
    cur.execute(LOCK_SQL)
    return cur, cur.fetchone()[0]


def _existing(cur, table):
    cur.execute("SELECT to_regclass(%s)", (table,))
    return cur.fetchone()[0] is not None


def ensure_partitions(conn, now=None, days_behind=1, days_ahead=7, log=None):
    """Create the daily children for every raw table; return the names created.

    If rows for a new child's day already sit in the DEFAULT child, they are
    moved into it within the same transaction.
    """
    log = log or _log
    today = _utc_day(now)
    days = [today + datetime.timedelta(days=d) for d in range(-days_behind, days_ahead + 1)]

    def work(cur, table):
        made = []
        for day in days:
            child = "{}_p{}".format(table, day.strftime("%Y%m%d"))
            if not _existing(cur, child):
                _create_child(cur, table, child, day)
                made.append(child)
        return made
    return _each_raw_table(conn, log, work, "could not create partitions for {table}")


def _create_child(cur, table, child, day):
    lo, hi = _bound(day), _bound(day + datetime.timedelta(days=1))
    default = table + "_pdefault"
    cur.execute("SELECT EXISTS (SELECT 1 FROM {} WHERE created_at >= %s AND created_at < %s)"
                .format(default), (lo, hi))
    parked = cur.fetchone()[0]
    if parked:
        # rows of that day would violate the new child's range in DEFAULT (23514):
        # take them out, create the child, put them back (ids kept).
        cur.execute("CREATE TEMP TABLE nightowl_move ON COMMIT DROP AS "
                    "WITH moved AS (DELETE FROM {} WHERE created_at >= %s AND created_at < %s "
                    "RETURNING *) SELECT * FROM moved".format(default), (lo, hi))
    cur.execute("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM (%s) TO (%s)"
                .format(child, table), (lo, hi))
    if parked:
        cur.execute("INSERT INTO {} SELECT * FROM nightowl_move".format(table))
        cur.execute("DROP TABLE nightowl_move")


class ClockSkew(Exception):
    """
    The local clock and the database's disagree by more than the bound:
    retention refuses to drop anything (one wrong clock must not lose data).
    ``skew`` is local minus database, in seconds.
    """

    def __init__(self, skew, bound):
        Exception.__init__(self, skew, bound)
        self.skew = skew
        self.bound = bound

    def __str__(self):
        return ("local clock is {:+.0f} s off the database clock (bound {:.0f} s): "
                "retention drops nothing until the clocks agree".format(self.skew, self.bound))


# Retention refuses to drop while the clocks disagree by more than this.
MAX_CLOCK_SKEW = 300.0


def _as_datetime(now):
    if isinstance(now, datetime.datetime):
        return now if now.tzinfo else now.replace(tzinfo=datetime.timezone.utc)
    return datetime.datetime.fromtimestamp(now, datetime.timezone.utc)


def database_now(conn):
    """The database's clock, as an aware datetime (``now()``: the transaction start)."""
    cur = conn.cursor()
    cur.execute("SELECT now()")
    value = cur.fetchone()[0]
    conn.rollback()
    return _as_datetime(value)


def check_clock(conn, clock=time.time, max_skew=MAX_CLOCK_SKEW):
    """
    The database's clock, after checking that ``clock()`` (the local one)
    agrees with it within ``max_skew`` seconds; L{ClockSkew} otherwise.
    """
    db_now = database_now(conn)
    skew = float(clock()) - db_now.timestamp()
    if abs(skew) > max_skew:
        raise ClockSkew(skew, max_skew)
    return db_now


def drop_expired(conn, retention_days, now=None, log=None, clock=time.time,
                 max_skew=MAX_CLOCK_SKEW):
    """Drop daily children entirely older than the cutoff; delete expired DEFAULT rows.

    The cutoff is ``now - retention_days``, where ``now`` is the database's
    clock (``now()``), never the local one: a host whose clock runs ahead
    must not drop the data others wrote.  The local ``clock()`` is only
    compared with it, and L{ClockSkew} is raised (nothing dropped) when they
    disagree by more than ``max_skew`` seconds.  ``now`` given explicitly
    pins the reference time (tests and tools) and skips that comparison.

    A child is dropped only if both its name and its catalogue bounds end
    at or before the cutoff and a guard query finds no row at or after the
    cutoff in it (the data's own ``created_at``).  Returns the dropped names.
    """
    log = log or _log
    if now is None:
        now_dt = check_clock(conn, clock, max_skew)
    else:
        now_dt = _as_datetime(now)
    cutoff = now_dt - datetime.timedelta(days=retention_days)

    def work(cur, table):
        cur.execute("SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                    "JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = %s::regclass ORDER BY 1", (table,))
        made = []
        for (child, bound) in cur.fetchall():
            m = _CHILD.search(child)
            if not m or child != "{}_p{}".format(table, m.group(1)):
                continue
            day = datetime.datetime.strptime(m.group(1), "%Y%m%d").replace(
                tzinfo=datetime.timezone.utc)
            if day + datetime.timedelta(days=1) > cutoff:
                continue
            if not _expired_by_data(cur, child, bound, cutoff):
                log.warn("retention: kept {child}: its bounds or rows are newer than the "
                         "cutoff {cutoff}", child=child, cutoff=cutoff.isoformat())
                continue
            cur.execute("DROP TABLE {}".format(child))
            made.append(child)
        cur.execute("DELETE FROM {}_pdefault WHERE created_at < %s".format(table), (cutoff,))
        deleted = cur.rowcount
        if made or deleted:
            log.info("retention on {table}: dropped {dropped} partitions, "
                     "deleted {deleted} rows from the default partition",
                     table=table, dropped=len(made), deleted=deleted)
        return made
    return _each_raw_table(conn, log, work, "retention failed for {table}")


_UPPER = re.compile(r"TO \('([^']+)'\)")


def _expired_by_data(cur, child, bound, cutoff):
    """
    True if ``child`` may go: its catalogue upper bound is at or before
    ``cutoff`` and it holds no row created at or after it (an index probe).
    """
    m = _UPPER.search(bound or "")
    if not m:
        return False
    cur.execute("SELECT %s::timestamptz <= %s, EXISTS (SELECT 1 FROM {} WHERE created_at >= %s)"
                .format(child), (m.group(1), cutoff, cutoff))
    bounded, newer = cur.fetchone()
    return bool(bounded) and not newer


def _each_raw_table(conn, log, work, failed):
    """
    Run ``work(cursor, table) -> [names]`` for every existing raw table, one
    short transaction each under the maintenance lock (a table whose lock is
    taken elsewhere is skipped; one table's failure does not stop the
    others).  Returns every name the calls returned.
    """
    done = []
    old_autocommit = conn.autocommit
    conn.autocommit = False
    try:
        for table in RAW_TABLES:
            try:
                cur, got = _locked_transaction(conn)
                if not got:
                    conn.rollback()
                    log.info("partition maintenance busy elsewhere; skipped {table}", table=table)
                    continue
                if not _existing(cur, table):
                    conn.rollback()
                    continue
                made = work(cur, table)
                conn.commit()
                done.extend(made)
            except Exception:
                _rollback(conn)
                log.failure(failed, table=table)
    finally:
        conn.autocommit = old_autocommit
    return done


def _rollback(conn):
    try:
        conn.rollback()
    except Exception:
        pass
