"""
The alert dispatcher service: every ``poll_interval`` seconds (a
TimerService; a round waits for the previous one), on its own thread pool:
fan new outbox rows out into delivery rows, claim the due ones under a
lease (``outbox.py`` holds the protocol and the guarantee), then send them
from the reactor (``transport.py``) and record each outcome.  Failed sends
are retried with ``backoffPolicy`` delays until ``max_age``, then dead.

It also keeps, in memory, the enabled channels from the last successful
read, for the agent-health alerts (``healthalerts.py``) that must work when
Postgres does not, and publishes per-channel figures on ``metrics.alerts``
for /status and /metrics.

Owns: a thread pool (Postgres), an ``HTTPConnectionPool`` (treq), both
released on stop after the round in flight has finished.
"""

import random
import threading

from twisted.application import service
from twisted.application.internet import TimerService, backoffPolicy
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from nightowl import pgerrors
from nightowl.alerts import channels as channels_mod
from nightowl.alerts import messages, outbox
from nightowl.alerts.healthalerts import HealthAlerter
from nightowl.alerts.transport import DEFAULT_TIMEOUT, Transport

POLL_INTERVAL = 2.0
LEASE_SECONDS = 120.0       # several times the send timeout
MAX_AGE = 86400.0           # retry for a day, then dead
RETRY_INITIAL = 5.0
RETRY_MAX = 3600.0
STATS_EVERY = 15.0
#: a missing database or table is the drain's boot still migrating (info) for
#: this long after start; past it, an error once (a wrong --dsn database)
SCHEMA_GRACE = 120.0

CONNECT_OPTIONS = dict(
    connect_timeout=10, keepalives=1, keepalives_idle=10, keepalives_interval=5,
    keepalives_count=3, tcp_user_timeout=20000, application_name="nightowl-alerts",
    options="-c statement_timeout=30000 -c lock_timeout=5000 "
            "-c idle_in_transaction_session_timeout=60000")


class AlertDispatcher(service.MultiService):
    """See the module docstring.  ``metrics``: the agent's Metrics (or None)."""

    name = "alerts"
    log = Logger()

    def __init__(self, dsn, metrics=None, reactor=None, poll_interval=POLL_INTERVAL,
                 lease_seconds=LEASE_SECONDS, max_age=MAX_AGE, send_timeout=DEFAULT_TIMEOUT,
                 retry_initial=RETRY_INITIAL, retry_max=RETRY_MAX, stats_every=STATS_EVERY,
                 health_hold=30.0, health_every=600.0, environ=None):
        service.MultiService.__init__(self)
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.dsn = dsn
        self.metrics = metrics
        self.lease_seconds = lease_seconds
        self.max_age = max_age
        self.send_timeout = send_timeout
        self.stats_every = stats_every
        self.environ = environ
        self.backoff = backoffPolicy(initialDelay=retry_initial, maxDelay=retry_max,
                                          factor=2.0,
                                          jitter=lambda: random.uniform(0.0, retry_initial))
        self.channels = []              # enabled channels, last successful read
        self.channels_read_at = None
        self.figures = {"channels": {}, "sent": 0, "failed": 0, "dead": 0,
                        "last_error": None, "rounds": 0}
        self.transport = None
        self.pool = None
        self._http_pool = None
        self._conns = []
        self._local = threading.local()
        self._lock = threading.Lock()
        self._round = None
        self._stats_at = None
        self._started_at = reactor.seconds()
        self._grace_over = False
        self.timer = TimerService(poll_interval, self.tick)
        self.timer.clock = reactor
        self.timer.setServiceParent(self)
        self.health_alerts = HealthAlerter(
            send=self._send_health, channels=lambda: self.channels, clock=reactor,
            hold=health_hold, every=health_every, backoff=self.backoff)
        self._publish()

    # -- lifecycle -------------------------------------------------------------

    def startService(self):
        from treq.client import HTTPClient
        from twisted.web.client import Agent

        from nightowl import quiethttp
        self.pool = ThreadPool(minthreads=0, maxthreads=2, name="nightowl-alerts")
        self.pool.start()
        self._http_pool = quiethttp.pool(self.reactor, persistent=True)
        self._http_pool.maxPersistentPerHost = 4
        agent = Agent(self.reactor, pool=self._http_pool, connectTimeout=self.send_timeout)
        self.transport = Transport(self.reactor, HTTPClient(agent), timeout=self.send_timeout,
                                   environ=self.environ)
        self._started_at = self.reactor.seconds()
        service.MultiService.startService(self)

    @defer.inlineCallbacks
    def stopService(self):
        yield defer.maybeDeferred(service.MultiService.stopService, self)
        self.health_alerts.stop()
        if self._round is not None:
            try:
                yield self._round
            except Exception:
                pass
        if self._http_pool is not None:
            yield self._http_pool.closeCachedConnections()
        pool, self.pool = self.pool, None
        if pool is not None:
            yield threads.deferToThread(pool.stop)
        with self._lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.close()
            except Exception:
                pass

    # -- Postgres on our pool ----------------------------------------------------

    def _db(self, fn, *args, **kwargs):
        if self.pool is None:
            return defer.fail(RuntimeError("the alert dispatcher is stopped"))
        return threads.deferToThreadPool(self.reactor, self.pool, self._in_thread, fn,
                                         *args, **kwargs)

    def _in_thread(self, fn, *args, **kwargs):
        import psycopg2
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg2.connect(self.dsn, **CONNECT_OPTIONS)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        try:
            return fn(conn, *args, **kwargs)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            self._discard(conn)
            raise
        except Exception:
            # Any other error (a table not migrated yet, a bad row) left the
            # transaction aborted: without a rollback every later round on
            # this connection failed with InFailedSqlTransaction, for good.
            try:
                conn.rollback()
            except Exception:
                self._discard(conn)
            raise

    def _discard(self, conn):
        """Forget and close this thread's connection (a new one is made next time)."""
        self._local.conn = None
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)
        try:
            conn.close()
        except Exception:
            pass

    # -- one round -----------------------------------------------------------------

    def tick(self):
        """One round; never fails (a failure is logged and counted, the timer goes on)."""
        if self._round is not None:
            return self._round
        d = self._db(self._claim_round)
        d.addCallback(self._send_all)
        d.addErrback(self._round_failed)

        def done(_):
            self._round = None
            self.figures["rounds"] += 1
            self._publish()
        d.addBoth(done)
        self._round = d
        return d

    def _claim_round(self, conn):
        """On the pool: channels (cached), fan-out, claim, and now and then the figures."""
        found = channels_mod.load(conn)
        fanned = outbox.fan_out(conn)
        token, jobs = outbox.claim(conn, self.lease_seconds)
        figures = None
        now = self.reactor.seconds()
        if self._stats_at is None or now - self._stats_at >= self.stats_every or jobs or fanned:
            figures = outbox.stats(conn)
            self._stats_at = now
        return found, token, jobs, figures

    def _send_all(self, result):
        found, token, jobs, figures = result
        self.channels = found
        self.channels_read_at = self.reactor.seconds()
        self.figures["last_error"] = None
        if figures is not None:
            self.figures["channels"] = figures
        if not jobs:
            return None
        return defer.DeferredList([self._send_one(token, job) for job in jobs],
                                  consumeErrors=True)

    def _round_failed(self, failure):
        error = _one_line(failure)
        waiting = self.channels_read_at is None and _schema_missing(failure)
        if waiting and self.reactor.seconds() - self._started_at < SCHEMA_GRACE:
            # a fresh install: the drain's boot creates the database and the
            # alert tables in the same seconds; not an operator's problem
            if error != self.figures["last_error"]:
                self.log.info("alerts wait for the schema (the drain migrates it): {error}",
                              error=error)
        elif error != self.figures["last_error"] or (waiting and not self._grace_over):
            self._grace_over = self._grace_over or waiting
            self.log.error("alert round failed (will retry): {error}", error=error)
        self.figures["last_error"] = error

    def notice_for(self, job):
        if job["kind"] == "digest":
            return messages.digest_notice(job["payload"])
        return messages.issue_notice(job["payload"], event=job["event"])

    def _send_one(self, token, job):
        channel = job["channel"]
        d = defer.maybeDeferred(lambda: self.transport.send(
            channel, self.notice_for(job), job["delivery_id"]))

        def sent(_):
            self.figures["sent"] += 1
            return None, 0.0

        def failed(f):
            self.figures["failed"] += 1
            return _one_line(f), self.backoff(max(0, job["attempts"] - 1))

        def record(outcome):
            error, delay = outcome
            r = self._db(outbox.finish, job["id"], token, error, delay, self.max_age)
            r.addCallback(self._recorded, job, error, delay)
            return r
        d.addCallbacks(sent, failed)
        d.addCallback(record)
        d.addErrback(lambda f: self.log.error(
            "could not record the outcome of alert {delivery} to {channel}: {error}",
            delivery=job["delivery_id"], channel=channel.name, error=_one_line(f)))
        return d

    def _recorded(self, status, job, error, delay):
        fields = dict(delivery=job["delivery_id"], channel=channel_label(job["channel"]),
                      event=job["event"], attempt=job["attempts"], error=error)
        if status is None:
            self.log.warn("alert {delivery} to {channel}: lease lost (another agent took it "
                          "over); it may be sent twice", **fields)
        elif error is None:
            self.log.info("alert {delivery} ({event}) sent to {channel}", **fields)
        elif status == "dead":
            self.figures["dead"] += 1
            self.log.error("alert {delivery} ({event}) to {channel} is dead after {attempt} "
                           "attempts: {error}", **fields)
        else:
            self.log.warn("alert {delivery} ({event}) to {channel} failed (attempt {attempt}), "
                          "retry in {delay:.0f} s: {error}", delay=delay, **fields)

    # -- health alerts: from memory ----------------------------------------------

    def _send_health(self, channel, notice, delivery_id):
        if self.transport is None:
            return defer.fail(RuntimeError("the alert dispatcher is not running"))
        return self.transport.send(channel, notice, delivery_id)

    def _publish(self):
        if self.metrics is not None:
            self.metrics.alerts = self.status()

    def status(self):
        """The /status ``alerts`` document."""
        return {
            "enabled": True,
            "channels": dict(self.figures["channels"]),
            "channels_cached": len(self.channels),
            "channels_read_age_seconds": (None if self.channels_read_at is None else round(
                self.reactor.seconds() - self.channels_read_at, 3)),
            "sends_ok": self.figures["sent"],
            "sends_failed": self.figures["failed"],
            "last_error": self.figures["last_error"],
            "health": self.health_alerts.status(),
        }


def channel_label(channel):
    return "{} ({})".format(channel.name, channel.type)


def _schema_missing(failure):
    """The round failed on a table (42P01) or on the database (3D000: the
    drain's boot creates it, as the README's first run does) that does not
    exist yet."""
    return pgerrors.sqlstate(failure.value) in ("42P01", "3D000")


def _one_line(failure):
    value = failure.value
    text = " ".join(str(value).split())
    if not text or type(value).__name__ not in ("SendError",):
        text = "{}: {}".format(type(value).__name__, text) if text else type(value).__name__
    return text[:500]
