"""
The root service: explicit start order and stop order.

Start, in this order: health, retention, rollups, buffer writer, drain
supervisor, forwarder (``--forward``), frame checker, alert dispatcher,
ingest listener, dashboard (each only when configured; ``tap.makeService``
builds them).  Stop runs the other way, one at a time: the dashboard and
ingest stop accepting (frames in flight are finished), the checker hands
over what it holds, the forwarder stops sending and records what was
delivered (frames in flight go again after a restart), the drain workers finish
their batch and exit, the writer commits what is queued and closes the
file, retention and health last.
"""

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from nightowl.buffer.schema import BufferError
from nightowl.errors import StartupError

HOUSEKEEP_EVERY = 5.0
RECOUNT_EVERY = 12  # housekeeping rounds between full recounts (a table scan)

#: the children in start order (attributes of the root; None when not configured)
START_ORDER = ("health", "retention", "rollups", "buffer", "supervisor", "forward", "checker",
               "alerts", "ingest", "dashboard")


class NightowlService(service.MultiService):
    """
    The agent: its children by name (see L{START_ORDER}), started in that
    order and stopped in reverse.  ``listen``: the ingest endpoint as
    configured (shown until bound); ``token_enforced`` and ``drain_summary``
    go into the startup line.
    """

    log = Logger()

    def __init__(self, *, buffer, ingest, listen, token_enforced, drain_summary,
                 reactor, health=None, retention=None, supervisor=None, checker=None,
                 alerts=None, dashboard=None, rollups=None, forward=None):
        service.MultiService.__init__(self)
        self.health, self.retention, self.buffer = health, retention, buffer
        self.supervisor, self.checker, self.alerts = supervisor, checker, alerts
        self.ingest, self.dashboard = ingest, dashboard
        self.rollups, self.forward = rollups, forward
        self.listen = listen
        self.token_enforced = token_enforced
        self.drain_summary = drain_summary
        self.ordered = [s for s in (getattr(self, name) for name in START_ORDER)
                        if s is not None]
        for s in self.ordered:
            s.setServiceParent(self)
        self._rounds = 0
        self._housekeeper = task.LoopingCall(self._housekeep)
        self._housekeeper.clock = reactor

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
            raise StartupError("nightowl: {}".format(e))
        except CannotListenError as e:
            raise StartupError("nightowl: cannot listen on {}: {}".format(
                _describe(e), _reason(e)))

    def startService(self):
        if not self.buffer.is_open():
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
            token="enforced" if self.token_enforced else "not enforced (any hash)",
            drain=self.drain_summary)

    def listen_description(self):
        port = self.listening_port()
        if port is not None:
            host = port.getHost()
            return "{}:{}".format(getattr(host, "host", "?"), getattr(host, "port", "?"))
        return self.listen

    def listening_port(self):
        """The ingest IListeningPort once bound (tests use port 0)."""
        return self.ingest.port()

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
        self._rounds += 1
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
