"""
The root service: explicit start order and stop order.

Start: health, buffer writer, drain supervisor, frame checker, alert
dispatcher (with a DSN), ingest listener.
Stop, one at a time in reverse: ingest stops accepting (frames in flight
are finished), the checker hands over what it holds, the drain workers finish their batch and exit, the writer
commits what is queued and closes the file, health last.
"""

import os

from twisted.application import service, strports
from twisted.internet import defer, task
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from nightowl.buffer import BufferError, BufferWriter
from nightowl.checker import FrameChecker
from nightowl.ingest import IngestFactory
from nightowl.metrics import Metrics
from nightowl.wire import token_hash
from nightowl.migrate import mask_dsn

HOUSEKEEP_EVERY = 5.0
RECOUNT_EVERY = 12  # housekeeping rounds between full recounts (a table scan)


LISTEN_BACKLOG = 1024


def with_backlog(description, backlog=LISTEN_BACKLOG):
    """
    Twisted's default listen backlog is 50.  SDK clients connect in bursts
    and give up after 0.5 s, so a full accept queue loses their batches:
    use a deep one unless the endpoint names its own.
    """
    if description.split(":", 1)[0] in ("tcp", "tcp6", "unix") and "backlog=" not in description:
        return description + ":backlog={}".format(backlog)
    return description


class StartupError(Exception):
    """A reason the agent cannot start, as one line."""


class NightowlService(service.MultiService):
    log = Logger()

    def __init__(self, options, reactor=None, alerts=None):
        """``alerts``: None, or a factory ``alerts(metrics=, reactor=)`` of the
        alert dispatcher (tap.makeService binds its settings)."""
        service.MultiService.__init__(self)
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.options = options
        self.metrics = Metrics(reactor)
        self.buffer = BufferWriter(os.path.abspath(options["buffer"]), reactor=reactor,
                                   max_queue=options["max-queue"],
                                   max_pending=options["max-pending"],
                                   sync=options["buffer-sync"],
                                   max_queue_bytes=options["max-queue-bytes"])
        self.checker = FrameChecker(
            reactor, token_hash(options["token"]) if options["token"] is not None else None,
            max_inflated_bytes=options["max-inflated-bytes"],
            max_bytes=options["max-check-bytes"])
        self.factory = IngestFactory(
            self.buffer, self.metrics, token=options["token"],
            max_frame_bytes=options["max-frame-bytes"],
            max_inflated_bytes=options["max-inflated-bytes"],
            frame_timeout=options["frame-timeout"], reactor=reactor, checker=self.checker)
        self.supervisor = self._make_supervisor()
        self.health = self._make_health()
        self.alerts = alerts(metrics=self.metrics, reactor=reactor) if alerts else None
        if self.alerts is not None and self.health is not None:
            self.health.status_observers.append(self.alerts.health_alerts.observe)
        self.ingest = strports.service(with_backlog(options["listen"]), self.factory,
                                       reactor=reactor)
        self.ingest.setName("ingest")
        # Start order; stop runs the other way.
        self.ordered = [s for s in (self.health, self.buffer, self.supervisor, self.checker,
                                    self.alerts,
                                    self.ingest)
                        if s is not None]
        for s in self.ordered:
            s.setServiceParent(self)
        self._housekeeper = task.LoopingCall(self._housekeep)
        self._housekeeper.clock = reactor

    def add_service(self, svc):
        """Start `svc` after the others and stop it first (the dashboard)."""
        self.ordered.append(svc)
        svc.setServiceParent(self)

    def _make_supervisor(self):
        try:
            from nightowl.drain.supervisor import DrainSupervisor
        except ImportError:
            return None
        return DrainSupervisor(self.buffer, self.options, self.metrics, reactor=self.reactor)

    def _make_health(self):
        if not self.options.get("health"):
            return None
        try:
            from nightowl.health import HealthService
        except ImportError:
            return None
        return HealthService(self.options, self, reactor=self.reactor)

    # -- lifecycle ---------------------------------------------------------

    def privilegedStartService(self):
        """
        Bind the listeners, then open the buffer (writability probe), before
        anything else: a failure here stops startup with one line.
        """
        try:
            # listeners first: a port that cannot be bound leaves no buffer file behind
            for s in self.ordered:
                s.privilegedStartService()
            self.buffer.open()
        except BufferError as e:
            raise SystemExit("nightowl: {}".format(e))
        except CannotListenError as e:
            raise SystemExit("nightowl: cannot listen on {}: {}".format(
                _describe(e), _reason(e)))

    def startService(self):
        if not self.buffer._thread:
            self.privilegedStartService()
        service.Service.startService(self)
        for s in self.ordered:
            s.startService()
        self._housekeeper.start(HOUSEKEEP_EVERY, now=False).addErrback(
            lambda f: self.log.failure("housekeeping stopped", f))
        self.log.info(
            "nightowl listening on {listen}, buffer {buffer} (id {buffer_id}, {pending} pending), "
            "token {token}, drain {drain}",
            listen=self.listen_description(), buffer=self.buffer.path,
            buffer_id=self.buffer.buffer_id, pending=self.buffer.pending,
            token="enforced" if self.options["token"] is not None else "not enforced (any hash)",
            drain=("{} workers into {}".format(self.options["drain-workers"],
                                               mask_dsn(self.options["dsn"]))
                   if self.options["dsn"] else
                   "off: buffer-only mode, no --dsn / NIGHTOWL_DSN (payloads stay in the buffer)"))

    def listen_description(self):
        port = self.listening_port()
        if port is not None:
            host = port.getHost()
            return "{}:{}".format(getattr(host, "host", "?"), getattr(host, "port", "?"))
        return self.options["listen"]

    def listening_port(self):
        """The ingest IListeningPort once bound (tests use port 0)."""
        waiting = getattr(self.ingest, "_waitingForPort", None)
        if waiting is None:
            return None
        result = []
        waiting.addCallback(lambda port: result.append(port) or port)
        return result[0] if result else None

    @defer.inlineCallbacks
    def stopService(self):
        service.Service.stopService(self)
        if self._housekeeper.running:
            self._housekeeper.stop()
        for s in reversed(self.ordered):
            if not s.running:
                continue
            try:
                yield defer.maybeDeferred(s.stopService)
            except Exception:
                self.log.failure("error while stopping {name}", name=s.name)
        self.log.info("nightowl stopped; {pending} payloads pending in the buffer",
                      pending=self.buffer.pending)

    def _housekeep(self):
        self._rounds = getattr(self, "_rounds", 0) + 1
        d = self.buffer.housekeep()
        if self._rounds % RECOUNT_EVERY == 0:
            d.addCallback(lambda _: self.buffer.recount())
        d.addErrback(lambda f: self.log.error(
            "buffer housekeeping failed: {error}", error=f.getErrorMessage()))
        return d


def _describe(error):
    return "{}:{}".format(error.interface or "*", error.port)


def _reason(error):
    socket_error = error.socketError
    return getattr(socket_error, "strerror", None) or str(socket_error)
