"""
Partition and rollup-tier retention, as its own service in the agent's tree.

L{sweep} is one blocking pass (ensure the daily partitions ahead, drop the
expired ones, prune the rollup tiers); L{RetentionService} runs it in a
one-thread pool it owns, a few seconds after start and then every hour, so
it runs whether or not the health listener is configured.
"""

import sys

from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

RETENTION_EVERY = 3600.0
RETENTION_FIRST = 5.0


class RecordingLog:
    """
    A stand-in for a twisted Logger, handed to nightowl.partitions: keeps
    what it was told (safe to use from any thread), so the caller can report
    it on its own thread.
    """

    def __init__(self):
        self.infos = []
        self.errors = []

    def _format(self, format, kw):
        try:
            return format.format(**kw)
        except Exception:
            return format

    def info(self, format, **kw):
        self.infos.append(self._format(format, kw))

    debug = info

    def warn(self, format, **kw):
        self.errors.append(self._format(format, kw))

    error = warn

    def failure(self, format, failure=None, **kw):
        if failure is None:
            error = sys.exc_info()[1]
        else:
            error = failure.value
        text = self._format(format, kw)
        if error is not None:
            text += ": {}{}".format(type(error).__name__, _pgcode(error))
        self.errors.append(text)


def _pgcode(error):
    code = getattr(error, "pgcode", None)
    return " ({})".format(code) if code else ""


def _first_line(text):
    return (str(text).strip().splitlines() or [""])[0]


def sweep(dsn, retention_days, ensure=True, log=None, connect=None, now=None, clock=None,
          rollup_days=None, alert_days=None):
    """
    One retention pass (blocking: run it in a thread): ensure the daily
    partitions ahead (when ``ensure``), drop the expired ones.  Returns
    ``{"created": [...], "dropped": [...], "errors": [...], "rollups_pruned":
    {table: rows}, "alerts_pruned": {...}}``; ``rollup_days``: (minute, hour,
    day) tier retention in days, or None; ``alert_days``: days of ended alert
    history kept (nightowl.alerts.prune), or None.  Connection errors raise (psycopg2.Error).
    """
    from nightowl import partitions
    if connect is None:
        import psycopg2
        connect = psycopg2.connect
    log = log if log is not None else RecordingLog()
    conn = connect(dsn, connect_timeout=10, application_name="nightowl-retention")
    skew = None
    try:
        created = partitions.ensure_partitions(conn, now=now, log=log) if ensure else []
        try:
            dropped = partitions.drop_expired(conn, retention_days, now=now, log=log,
                                              **({"clock": clock} if clock else {}))
        except partitions.ClockSkew as e:
            dropped, skew = [], e
        pruned = None
        if rollup_days:
            from nightowl.rollups import rebuild
            pruned = rebuild.prune(conn, *rollup_days)   # tier retention, database clock
        alerts = None
        if alert_days:
            from nightowl.alerts import prune
            alerts = prune.prune(conn, alert_days)
    finally:
        conn.close()
    result = {"created": list(created), "dropped": list(dropped),
              "errors": list(getattr(log, "errors", ()))}
    if pruned is not None:
        result["rollups_pruned"] = pruned
    if alerts is not None:
        result["alerts_pruned"] = alerts
    if skew is not None:
        # only present when retention refused: the clocks disagree
        result["clock_skew"] = {"seconds": round(skew.skew, 1), "message": str(skew)}
    return result


class RetentionService(service.Service):
    """
    Every ``every`` seconds (first ``first`` seconds after start): L{sweep} in
    our own one-thread pool, never on the reactor.  Every error is caught and
    logged; the timer goes on.  ``ensure``: also create the partitions ahead
    (False when the drain supervisor's maintenance child already does).
    """

    name = "retention"
    log = Logger()

    def __init__(self, dsn, retention_days, *, ensure, reactor, rollup_days=None,
                 alert_days=None, every=RETENTION_EVERY, first=RETENTION_FIRST, sweep=sweep):
        self.dsn = dsn
        self.retention_days = retention_days
        self.rollup_days = tuple(rollup_days) if rollup_days else None
        self.alert_days = alert_days
        self.ensure = ensure
        self.reactor = reactor
        self.every = every
        self.first = first
        self._sweep = sweep
        self.pool = None
        self._first_call = None
        self._loop = None
        self._busy = None
        self.last = {"at": None, "created": [], "dropped": [], "errors": [], "error": None}

    def startService(self):
        service.Service.startService(self)
        self.pool = ThreadPool(minthreads=0, maxthreads=1, name="nightowl-retention")
        self.pool.start()
        self._loop = task.LoopingCall(self.run_once)
        self._loop.clock = self.reactor
        self._first_call = self.reactor.callLater(self.first, self._startLoop)

    def _startLoop(self):
        self._first_call = None
        # run_once never fails, so the loop never stops on an error
        self._loop.start(self.every, now=True).addErrback(
            lambda f: self.log.failure("retention timer stopped", f))

    def run_once(self):
        """One sweep in the pool; fires with the result dict (never fails)."""
        if self._busy is not None:
            return defer.succeed(None)
        d = threads.deferToThreadPool(self.reactor, self.pool, self._sweep, self.dsn,
                                      self.retention_days, self.ensure,
                                      rollup_days=self.rollup_days,
                                      alert_days=self.alert_days)
        self._busy = d
        d.addCallbacks(self._done, self._failed)
        d.addErrback(lambda f: self.log.failure("retention bookkeeping", f))
        d.addBoth(self._idle)
        return d

    def sweeping(self):
        """The Deferred of the sweep in progress (fires when it ends), or None."""
        return self._busy

    def _done(self, result):
        skewed = self.last.get("clock_skew")
        self.last = dict(result, at=self.reactor.seconds(), error=None)
        if result.get("clock_skew") and not skewed:
            # once per occurrence; /status reports it while it lasts
            self.log.error("retention refused to drop partitions: {message}",
                           message=result["clock_skew"]["message"])
        elif skewed and not result.get("clock_skew"):
            self.log.info("retention: the clocks agree again")
        for name in result.get("created") or ():
            self.log.info("retention: created partition {name}", name=name)
        if result.get("dropped"):
            self.log.info("retention: dropped {count} expired partitions: {names}",
                          count=len(result["dropped"]), names=", ".join(result["dropped"]))
        for text in result.get("errors") or ():
            self.log.error("retention: {error}", error=text)
        return result

    def _failed(self, f):
        error = "{}{}: {}".format(f.type.__name__, _pgcode(f.value),
                                  _first_line(f.getErrorMessage()))
        self.last = {"at": self.reactor.seconds(), "created": [], "dropped": [],
                     "errors": [], "error": error}
        self.log.error("retention sweep failed: {error}", error=error)
        return self.last

    def _idle(self, result):
        self._busy = None
        return result

    def figures(self, now):
        """The /status ``retention`` section."""
        last = self.last
        return {
            "ensures_partitions": self.ensure,
            "last_run_age_seconds": (None if last.get("at") is None
                                     else round(max(0.0, now - last["at"]), 3)),
            "last_dropped": list(last.get("dropped") or ()),
            "last_error": last.get("error") or (last.get("errors") or [None])[-1],
            "retention_days": self.retention_days,
            "clock_skew_seconds": (last.get("clock_skew") or {}).get("seconds"),
        }

    def stopService(self):
        service.Service.stopService(self)
        if self._first_call is not None and self._first_call.active():
            self._first_call.cancel()
        self._first_call = None
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        pool, self.pool = self.pool, None
        if pool is None:
            return None
        if self._busy is None:
            pool.stop()
            return None
        # a sweep is running: wait for it off the reactor thread
        return threads.deferToThread(pool.stop)
