"""
The dashboard service: its HTTP listener, its Postgres thread pool and its
sessions.  Built by ``nightowl.tap.makeService`` from named values; it never
sees the Options.

Start: the pool, then the listener (bound in ``privilegedStartService`` so a
taken port stops startup with one line).  Stop: the listener, then the pool
(its threads finish their query off the reactor, then the connections close).
"""

from twisted.application import service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.web.server import Site

from nightowl.dashboard.auth import Auth
from nightowl.dashboard.pool import QueryPool
from nightowl.dashboard.resources import LOOPBACK_HOSTS, DashboardResource


class _QuietSite(Site):
    """No access log line per page view (the agent's log is for the agent)."""

    def log(self, request):
        pass


class DashboardService(service.Service):
    name = "dashboard"
    log = Logger()

    def __init__(self, endpoint, dsn, password=None, health_status=None, reactor=None,
                 threads=3, statement_timeout_ms=None, clock=None):
        """`clock`: has seconds(), the time pages show (default: the reactor;
        the dashboard bench pins it to its seeded data)."""
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.endpoint = endpoint
        pool_kw = {} if statement_timeout_ms is None else {
            "statement_timeout_ms": statement_timeout_ms}
        self.pool = QueryPool(dsn, reactor, maxthreads=threads, **pool_kw)
        self.auth = Auth(password)
        self.resource = DashboardResource(
            self.auth, self.pool.run, clock or reactor, health_status=health_status,
            allowed_hosts=None if password else LOOPBACK_HOSTS)
        self.site = _QuietSite(self.resource)
        self.site.noisy = False
        self.site.displayTracebacks = False
        self._port = None

    def privilegedStartService(self):
        if self._port is not None:
            return
        result = []
        serverFromString(self.reactor, self.endpoint).listen(self.site).addBoth(result.append)
        if not result:
            raise RuntimeError("dashboard endpoint {} does not bind synchronously".format(
                self.endpoint))
        if isinstance(result[0], Exception) or hasattr(result[0], "raiseException"):
            result[0].raiseException()
        self._port = result[0]

    def startService(self):
        self.privilegedStartService()
        self.pool.start()
        service.Service.startService(self)
        self.log.info("nightowl dashboard on {address} ({login})", address=self.address(),
                      login="password required" if self.auth.required
                      else "no login: loopback only")

    def address(self):
        """host:port of the bound listener (tests listen on port 0), or None."""
        if self._port is None:
            return None
        host = self._port.getHost()
        return "{}:{}".format(getattr(host, "host", "?"), getattr(host, "port", "?"))

    def port(self):
        return None if self._port is None else self._port.getHost().port

    @defer.inlineCallbacks
    def stopService(self):
        service.Service.stopService(self)
        port, self._port = self._port, None
        if port is not None:
            yield port.stopListening()
        yield self.pool.stop()
