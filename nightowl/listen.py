"""
A listening port as a service that keeps its port: bind in
``privilegedStartService`` (a failed bind raises there, so startup stops
with one line), ask ``port()`` for the bound IListeningPort, close on stop.
"""

from twisted.application import service
from twisted.internet import endpoints
from twisted.logger import Logger


class ListenerService(service.Service):
    """Listen on the strports ``description`` with ``factory``; ``port()`` once bound."""

    log = Logger()

    def __init__(self, description, factory, reactor, name=None):
        self.description = description
        self.factory = factory
        self.reactor = reactor
        self._port = None
        self._listening = None
        if name is not None:
            self.setName(name)

    def privilegedStartService(self):
        if self._listening is not None:
            return
        endpoint = endpoints.serverFromString(self.reactor, self.description)
        failures = []
        self._listening = endpoint.listen(self.factory)
        self._listening.addCallbacks(self._bound, self._failed, errbackArgs=(failures,))
        if failures:    # TCP, unix and ssl endpoints answer at once: stop startup here
            self._listening = None
            failures[0].raiseException()
        failures.append(None)   # from now on a failure is only logged

    def _failed(self, failure, failures):
        if not failures:
            failures.append(failure)
        else:
            self.log.error("cannot listen on {where}: {error}", where=self.description,
                           error=failure.getErrorMessage())

    def _bound(self, port):
        self._port = port
        return port

    def startService(self):
        self.privilegedStartService()
        service.Service.startService(self)

    def port(self):
        """The bound IListeningPort (tests listen on port 0), or None before binding."""
        return self._port

    def stopService(self):
        service.Service.stopService(self)
        port, self._port, self._listening = self._port, None, None
        if port is None:
            return None
        return port.stopListening()


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
