"""
The health service: the HTTP listener of /status, /metrics and /healthz,
and the periodic check (a TimerService) that probes the buffer's writer
thread, samples the figures' history and tells the status observers.

Nothing here blocks the reactor: the one SQLite figure that needs a query
(the oldest pending row's age) is asked of the writer thread every
L{CHECK_EVERY} seconds and cached; that same probe tells a stalled writer
from a busy one.
"""

from twisted.application import internet, service
from twisted.internet import defer
from twisted.logger import Logger

from nightowl.health import prometheus, rules
from nightowl.health.snapshot import Snapshot
from nightowl.health.web import make_site
from nightowl.listen import ListenerService

CHECK_EVERY = 5.0           # writer probe / history sampling period


class HealthService(service.MultiService):
    """
    ``endpoint``: where to listen (strports).  ``metrics``, ``buffer``,
    ``drain`` (the DrainSupervisor), ``dsn_configured``, ``workers_configured``
    ``retention`` and ``forward`` (callables ``now -> dict``, or None) feed the
    L{Snapshot}.  ``status_observers`` are called with ``(status, reasons)``
    after every check (the health alerts).
    """

    name = "health"
    log = Logger()

    def __init__(self, endpoint, *, metrics, buffer, drain, dsn_configured,
                 workers_configured, retention=None, reactor=None, check_every=CHECK_EVERY,
                 forward=None):
        service.MultiService.__init__(self)
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.buffer = buffer
        self.figures = Snapshot(metrics=metrics, buffer=buffer, drain=drain,
                                dsn_configured=dsn_configured,
                                workers_configured=workers_configured, retention=retention,
                                forward=forward)
        self._probe = None
        self.status_observers = []
        self.registry = prometheus.make_registry(
            lambda: (self.snapshot(), self.reactor.seconds()))
        self.http = ListenerService(endpoint, make_site(self), reactor, name="health-http")
        self.http.setServiceParent(self)
        self.timer = internet.TimerService(check_every, self._check)
        self.timer.clock = reactor
        self.timer.setServiceParent(self)

    # -- lifecycle -----------------------------------------------------------

    def startService(self):
        service.MultiService.startService(self)
        port = self.http.port()
        if port is not None:
            host = port.getHost()
            self.log.info("nightowl health on {host}:{port} (/status, /metrics, /healthz)",
                          host=getattr(host, "host", "?"), port=getattr(host, "port", "?"))

    def port(self):
        """The bound IListeningPort (tests listen on port 0), or None."""
        return self.http.port()

    # -- the periodic check ----------------------------------------------------

    def _check(self):
        if not self.running:
            return
        try:
            now = self.reactor.seconds()
            self.observe(now)
            self.probe()
            if self.status_observers:
                status, reasons = rules.evaluate(self.snapshot(), now)
                for observer in self.status_observers:
                    observer(status, reasons)
        except Exception:
            self.log.failure("health check")

    def observe(self, now):
        """Sample the counters whose history matters (rates, restarts, errors)."""
        self.figures.observe(now)

    def probe(self):
        """
        Ask the writer thread for the oldest pending row's age.  While a
        probe is unanswered no other is sent; its age is the stall measure.
        Returns the probe's Deferred (fires with the age, or None).
        """
        if self._probe is not None:
            return self._probe
        buf, figures = self.buffer, self.figures
        if not buf.alive():     # not open yet, or closed: writer-dead says why
            return defer.succeed(None)
        figures.probe_since = self.reactor.seconds()
        d = defer.maybeDeferred(buf.run, lambda conn: _probe_figures(conn, buf.clock()))
        self._probe = d

        def answered(result):
            age, quarantined = result
            figures.oldest_pending_age = float(age or 0.0)
            figures.quarantined_counted = quarantined
            figures.oldest_checked_at = self.reactor.seconds()
            return age

        def failed(f):
            if self.running and buf.alive():
                self.log.error("buffer probe failed: {error}", error=f.getErrorMessage())
            return None

        def done(result):
            self._probe = None
            figures.probe_since = None
            return result
        d.addCallbacks(answered, failed)
        d.addBoth(done)
        return d

    # -- the documents -----------------------------------------------------------

    def snapshot(self):
        """Every figure of /status except ``status`` and ``reasons``."""
        return self.figures.snapshot(self.reactor.seconds(), running=self.running)

    def status(self):
        """The /status document: the snapshot with ``status`` and ``reasons`` first."""
        snap = self.snapshot()
        status, reasons = rules.evaluate(snap, self.reactor.seconds())
        out = {"status": status, "reasons": reasons}
        out.update(snap)
        return out

    def healthz(self):
        """(ok, reason): can the agent accept and commit payloads right now?"""
        _status, reasons = rules.evaluate(self.snapshot(), self.reactor.seconds())
        return rules.healthz(reasons)


def _probe_figures(conn, now):
    """
    On the writer thread: the oldest pending row's age, and the quarantined
    rows counted from the file (rows requeued by `nightowl buffer requeue`,
    another process, are not in the writer's in-memory counters).
    """
    from nightowl.buffer.reader import oldest_pending_age
    from nightowl.buffer.states import QUARANTINED
    quarantined = conn.execute("SELECT count(*) FROM payloads WHERE state = ?",
                               (QUARANTINED,)).fetchone()[0]
    return oldest_pending_age(conn, now), quarantined
