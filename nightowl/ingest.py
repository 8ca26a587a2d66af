"""
The ingest listener: one SDK frame per TCP connection.

The ack rule: ``2:OK`` is written only after the transaction holding the
payload has committed to the buffer; every refusal is ``5:ERROR`` followed by
a close, except an incomplete frame at the frame timeout, which is closed
without a reply.  Bytes after the frame are ignored.
"""

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from nightowl import wire
from nightowl.fastaccept import DirectTransport

# Bytes held by all connections at once before new data is refused.
MAX_INFLIGHT_BYTES = 256 * 1024 * 1024
# A refusal reason is logged at most once per this many seconds.
LOG_EVERY = 10.0


class IngestProtocol(Protocol):
    """Reads one frame, hands the payload to the buffer, acks after commit."""

    _finished = False
    _held = 0
    _sized = False
    # bytes read at accept time by nightowl.fastaccept.IngestPort, or None
    early = None

    def connectionMade(self):
        factory = self.factory
        factory.metrics.connections_open += 1
        self._parser = wire.FrameParser(factory.max_frame_bytes)
        early = self.early
        if early is not None:
            self.early = None
            self.dataReceived(early)
        if not self._finished:
            factory.watch(self)  # a frame whole at accept time is never watched

    def dataReceived(self, data):
        if self._finished:
            return  # bytes after the frame are ignored
        factory = self.factory
        parser = self._parser
        try:
            frame = parser.feed(data)
        except wire.FrameError as e:
            self._refuse(e)
            return
        if frame is None:
            if not self._sized and parser.declared is not None:
                self._sized = True
                checker = factory.checker
                if (checker is not None and parser.declared > checker.threshold
                        and checker.refusal_for(parser.declared)):
                    # refused before its megabytes are read
                    self._refuse(wire.FrameError("back-pressure", "frame checker full"))
                    return
            held = parser.buffered
            metrics = factory.metrics
            metrics.inflight_bytes += held - self._held
            self._held = held
            if metrics.inflight_bytes > factory.max_inflight_bytes:
                self._refuse(wire.FrameError("memory"))
            return
        self._finish()
        if factory.forward:
            self._frame = frame  # --forward: the frame as sent goes upstream too
        checker = factory.checker
        if checker is not None and checker.wants(frame):
            # big or gzip: opened and checked off the reactor and the writer
            reason = factory.buffer.refusal() or checker.refusal(frame)
            if reason is not None:
                self._refuse(wire.FrameError(reason, "frame checker or writer queue full"))
                return
            d = checker.open(frame)
            d.addCallbacks(self._opened, self._notStored)
            return
        try:
            payload = wire.open_frame(frame, factory.token_hash, factory.max_inflated_bytes)
        except wire.FrameError as e:
            self._refuse(e)
            return
        self._opened(payload, checked=False)

    def _opened(self, payload, checked=True):
        factory = self.factory
        if payload is wire.PING:
            factory.metrics.pings += 1
            self._reply(wire.OK)
            return
        buffer = factory.buffer
        size = len(payload)
        reason = buffer.refusal(size)
        if reason is not None:
            self._refuse(wire.FrameError(reason))
            return
        if factory.forward:
            frame = self._frame
            forward = (frame.token_hash, frame.payload)
            if factory.waiters:
                buffer.append(payload, checked, _Stored(self, size), forward=forward)
                return
            d = buffer.append(payload, checked=checked, forward=forward)
        elif factory.waiters:
            buffer.append(payload, checked, _Stored(self, size))
            return
        else:
            d = buffer.append(payload, checked=checked) if checked else buffer.append(payload)
        d.addCallbacks(self._stored, self._notStored, callbackArgs=(size,))

    def _stored(self, _ignored, size):
        self.factory.metrics.accept(size)
        self._reply(wire.OK)

    def _notStored(self, failure):
        if failure.check(wire.FrameError):
            # the buffer refused the payload itself (not JSON, not an array)
            self.factory.refused(failure.value.reason, failure.value.detail)
        else:
            self.factory.refused("buffer-error", failure.getErrorMessage())
        self._reply(wire.ERROR)

    def _finish(self):
        self._finished = True
        self.factory.unwatch(self)
        if self._held:
            self.factory.metrics.inflight_bytes -= self._held
            self._held = 0

    def _refuse(self, error):
        self._finish()
        self.factory.refused(error.reason, error.detail)
        self._reply(wire.ERROR)

    def _reply(self, message):
        transport = self.transport
        if transport is not None and not transport.disconnecting:
            transport.write(message)
            transport.loseConnection()

    def timedOut(self):
        if self._finished:
            return
        self._finish()
        self.factory.refused("timeout", "")
        self.transport.loseConnection()

    def connectionLost(self, reason):
        self.factory.metrics.connections_open -= 1
        if not self._finished:
            self._finish()
            self._finished = True


class _Stored:
    """
    One payload's ack, fired by the buffer once the payload is committed (or
    not): a Deferred's callback and errback without the Deferred, which was
    the largest Python cost per payload on the reactor thread after parsing
    (cProfile: 5 of 16 us per connection).  Never raises into the buffer's
    delivery loop, which acks the rest of the group after it.
    """

    __slots__ = ("proto", "size", "called", "forward", "direct")
    log = Logger()

    def __init__(self, proto, size):
        self.proto = proto
        self.size = size
        self.called = False
        transport = proto.transport
        # a connection no reactor holds is acked by the writer thread itself
        self.direct = transport if type(transport) is DirectTransport else None

    def committed(self):
        """
        Called on the buffer's writer thread once the payload's transaction
        has committed: a direct connection gets its ``2:OK`` there and then,
        without waiting for the reactor; ``callback`` follows on the reactor
        for the bookkeeping.
        """
        direct = self.direct
        if direct is not None:
            direct.ack_from_thread(wire.OK)

    def callback(self, _ignored):
        self.called = True
        try:
            self.proto._stored(None, self.size)
        except Exception:
            self.log.failure("acking a stored payload")

    def errback(self, failure):
        self.called = True
        if not isinstance(failure, Failure):
            failure = Failure(failure)
        try:
            self.proto._notStored(failure)
        except Exception:
            self.log.failure("refusing a payload the buffer did not store")


class IngestFactory(Factory):
    # Incomplete frames are found by one sweep every SWEEP_EVERY seconds
    # rather than a timer per connection (a DelayedCall per payload costs
    # more than the rest of the bookkeeping together).  A connection is
    # closed between frame_timeout and frame_timeout + SWEEP_EVERY.
    """
    Builds L{IngestProtocol}s.  ``buffer`` is anything with
    ``refusal() -> reason or None`` and ``append(bytes) -> Deferred``
    (L{nightowl.buffer.writer.BufferWriter}, or an in-memory fake in tests).
    """

    protocol = IngestProtocol
    log = Logger()
    noisy = False

    def __init__(self, buffer, metrics, token=None, max_frame_bytes=10 * 1024 * 1024,
                 max_inflated_bytes=64 * 1024 * 1024, frame_timeout=10.0,
                 max_inflight_bytes=MAX_INFLIGHT_BYTES, reactor=None, checker=None,
                 forward=False):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.buffer = buffer
        self.metrics = metrics
        self.token_hash = None if token is None else wire.token_hash(token)
        self.max_frame_bytes = max_frame_bytes
        self.max_inflated_bytes = max_inflated_bytes
        self.frame_timeout = frame_timeout
        self.max_inflight_bytes = max_inflight_bytes
        # nightowl.checker.FrameChecker, or None: every frame opened here and
        # checked on the writer thread
        self.checker = checker
        # the buffer fires a light per-payload waiter rather than a Deferred
        self.waiters = bool(getattr(buffer, "takes_waiters", False))
        # --forward: hand each frame's token hash and raw payload to the buffer
        self.forward = forward
        self._last_logged = {}
        self._unlogged = {}
        self._watched = {}
        self._sweeper = None

    SWEEP_EVERY = 0.5

    def watch(self, proto):
        self._watched[proto] = self.reactor.seconds()
        if self._sweeper is None:
            self._sweeper = self.reactor.callLater(self.SWEEP_EVERY, self._sweep)

    def unwatch(self, proto):
        self._watched.pop(proto, None)

    def _sweep(self):
        self._sweeper = None
        cutoff = self.reactor.seconds() - self.frame_timeout
        expired = [p for p, started in self._watched.items() if started <= cutoff]
        for proto in expired:
            try:
                proto.timedOut()
            except Exception:
                self.log.failure("closing a timed-out connection")
                self._watched.pop(proto, None)
        if self._watched:
            self._sweeper = self.reactor.callLater(self.SWEEP_EVERY, self._sweep)

    def stopFactory(self):
        if self._sweeper is not None and self._sweeper.active():
            self._sweeper.cancel()
        self._sweeper = None

    def refused(self, reason, detail):
        """Count a refusal; log it, rate-limited per reason, never the payload."""
        self.metrics.reject(reason)
        now = self.reactor.seconds()
        last = self._last_logged.get(reason)
        if last is not None and now - last < LOG_EVERY:
            self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
            return
        suppressed = self._unlogged.pop(reason, 0)
        self._last_logged[reason] = now
        if reason == "buffer-error":
            self.log.error("buffer write failed, replied 5:ERROR: {detail} "
                           "({suppressed} more since last report)",
                           detail=detail, suppressed=suppressed)
        else:
            self.log.warn("refused a frame: {reason} {detail} "
                          "({suppressed} more since last report)",
                          reason=reason, detail=detail, suppressed=suppressed)
