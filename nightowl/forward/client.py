"""
One frame to the upstream agent: connect, write the frame, read the reply
(``<len>:<message>``, e.g. ``2:OK`` or ``5:ERROR``), close.  Pure protocol
and a ``send`` callable; the policy (what a reply means, retries) is the
service's.
"""

from twisted.internet import defer, error, protocol

MAX_REPLY = 64  # bytes of a reply read at most (the SDK's replies are 4 or 7)


class UpstreamError(Exception):
    """The upstream could not be reached, timed out or closed without a reply."""


def parse_host_port(text):
    """``HOST:PORT`` -> (host, port); raises ValueError with a one-line reason."""
    host, sep, port = (text or "").strip().rpartition(":")
    if not sep or not host:
        raise ValueError("expected HOST:PORT, got {!r}".format(text))
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("port must be 1-65535, got {!r}".format(port))
    return host, int(port)


def complete_reply(data):
    """The reply once ``data`` holds all of it (its length prefix says), else None."""
    colon = data.find(b":")
    if colon < 0:
        return data if len(data) >= MAX_REPLY else None
    prefix = data[:colon]
    if not prefix.isdigit():
        return data
    end = colon + 1 + int(prefix)
    return data[:end] if len(data) >= end else (data if len(data) >= MAX_REPLY else None)


class FrameSender(protocol.Protocol):
    """Writes one frame, fires ``done`` with the reply bytes or an L{UpstreamError}."""

    def __init__(self, frame, done):
        self.frame = frame
        self.done = done
        self._data = b""

    def connectionMade(self):
        self.transport.write(self.frame)

    def dataReceived(self, data):
        if self.done.called:
            return
        self._data += data
        reply = complete_reply(self._data)
        if reply is not None:
            self.done.callback(reply)
            self.transport.loseConnection()

    def connectionLost(self, reason):
        if not self.done.called:
            if self._data:
                self.done.callback(self._data)   # a partial or odd reply: the service judges
            else:
                self.done.errback(UpstreamError("closed without a reply"))


class _OneFrame(protocol.ClientFactory):
    """The factory of one connection (quiet: no log line per frame)."""

    noisy = False

    def __init__(self, frame, done):
        self.frame = frame
        self.done = done

    def buildProtocol(self, addr):
        proto = FrameSender(self.frame, self.done)
        proto.factory = self
        return proto

    def clientConnectionFailed(self, connector, reason):
        if not self.done.called:
            self.done.errback(UpstreamError(_describe(reason)))


class Sender:
    """
    ``send(frame) -> Deferred(reply bytes)`` to ``host:port`` over TCP, each
    try bounded by ``timeout`` seconds (connect, write and reply).  Tries
    past their time are found by one sweep every L{SWEEP_EVERY} seconds
    rather than a timer each (as the ingest listener does), so a try ends
    between ``timeout`` and ``timeout + SWEEP_EVERY``.
    """

    SWEEP_EVERY = 0.5

    def __init__(self, reactor, host, port, timeout=10.0):
        self.reactor = reactor
        self.host = host
        self.port = port
        self.timeout = timeout
        self._open = {}       # done Deferred -> (started, connector)
        self._sweeper = None

    def __call__(self, frame):
        done = defer.Deferred()
        connector = self.reactor.connectTCP(self.host, self.port, _OneFrame(frame, done),
                                            timeout=self.timeout)
        self._open[done] = (self.reactor.seconds(), connector)
        done.addBoth(self._finished, done)
        if self._sweeper is None:
            self._sweeper = self.reactor.callLater(self.SWEEP_EVERY, self._sweep)
        return done

    def _finished(self, result, done):
        self._open.pop(done, None)
        return result

    def _sweep(self):
        self._sweeper = None
        cutoff = self.reactor.seconds() - self.timeout
        for done, (started, connector) in list(self._open.items()):
            if started <= cutoff and not done.called:
                done.errback(UpstreamError("no reply within {:g} s".format(self.timeout)))
                connector.disconnect()
        if self._open:
            self._sweeper = self.reactor.callLater(self.SWEEP_EVERY, self._sweep)


def _describe(failure):
    if failure.check(error.ConnectionRefusedError):
        return "connection refused"
    if failure.check(error.TimeoutError, defer.CancelledError):
        return "connect timed out"
    return failure.getErrorMessage()
