"""
One frame to the upstream agent: connect, write the frame, read the reply
(``<len>:<message>``, e.g. ``2:OK`` or ``5:ERROR``), close.  Pure protocol
and a ``send`` callable; the policy (what a reply means, retries) is the
service's.
"""

from twisted.internet import defer, error, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

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


class Sender:
    """
    ``send(frame) -> Deferred(reply bytes)`` to ``host:port`` over TCP, each
    try bounded by ``timeout`` seconds (connect, write and reply).
    """

    def __init__(self, reactor, host, port, timeout=10.0):
        self.reactor = reactor
        self.host = host
        self.port = port
        self.timeout = timeout

    def __call__(self, frame):
        done = defer.Deferred()
        endpoint = TCP4ClientEndpoint(self.reactor, self.host, self.port, timeout=self.timeout)
        proto = FrameSender(frame, done)
        connecting = connectProtocol(endpoint, proto)

        def failed(f):
            if not done.called:
                done.errback(UpstreamError(_describe(f)))
        connecting.addErrback(failed)

        def expire():
            if done.called:
                return
            done.errback(UpstreamError("no reply within {:g} s".format(self.timeout)))
            if proto.transport is not None:
                proto.transport.abortConnection()
            else:
                connecting.cancel()
        timer = self.reactor.callLater(self.timeout, expire)

        def finished(result):
            if timer.active():
                timer.cancel()
            return result
        done.addBoth(finished)
        return done


def _describe(failure):
    if failure.check(error.ConnectionRefusedError):
        return "connection refused"
    if failure.check(error.TimeoutError, defer.CancelledError):
        return "connect timed out"
    return failure.getErrorMessage()
