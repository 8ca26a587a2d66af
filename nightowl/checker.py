"""
The frame checker: opens and checks big and gzip frames on its own thread,
within a byte budget, so one big payload never holds other payloads' acks.

Small plain frames (the SDK's usual ones) are opened on the reactor and
checked on the writer thread, as before: cheap.  A frame whose payload is
over ``threshold`` bytes, or gzipped, is handed here instead: inflating
(zlib lets go of the GIL), the token check and the JSON check
(L{nightowl.jsoncheck}, in pieces) run on this thread, and the payload then
goes to the writer already checked.  Meanwhile small payloads keep being
committed and acked.

Memory: every frame handed here reserves its payload's size (a gzip frame:
what it may inflate to, at most ``max_inflated_bytes``) against
``max_bytes``; a frame that does not fit is refused with ``back-pressure``
(the SDK gets ``5:ERROR`` and retries later) rather than queued.  An idle
checker always takes one frame, whatever its size.
"""

import queue
import threading

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from nightowl import wire

# deflate's largest possible ratio is about 1032:1
DEFLATE_RATIO = 1032


class FrameChecker(service.Service):
    name = "checker"
    log = Logger()

    def __init__(self, reactor, token_hash, max_inflated_bytes, max_bytes,
                 threshold=None, decode=wire.decode_payload):
        if threshold is None:
            from nightowl.jsoncheck import CHUNK as threshold
        self.reactor = reactor
        self.token_hash = token_hash
        self.max_inflated_bytes = max_inflated_bytes
        self.max_bytes = max_bytes
        self.threshold = threshold
        self._decode = decode
        self.reserved = 0          # reactor thread: bytes reserved by frames in here
        self.frames = 0            # frames in here now
        self.checked = 0
        self.refused = 0
        self._queue = queue.SimpleQueue()
        self._thread = None

    def wants(self, frame):
        """True if ``frame`` should be opened and checked here."""
        payload = frame.payload
        return len(payload) > self.threshold or payload[:2] == wire.GZIP_MAGIC

    def need(self, frame):
        payload = frame.payload
        if payload[:2] == wire.GZIP_MAGIC:
            return min(self.max_inflated_bytes, DEFLATE_RATIO * len(payload) + 65536)
        return len(payload)

    def refusal(self, frame):
        """``back-pressure`` if ``frame`` does not fit in the budget now, else None."""
        return self.refusal_for(self.need(frame))

    def refusal_for(self, size):
        """
        ``back-pressure`` if ``size`` bytes do not fit in the budget now; the
        ingest asks as soon as a frame's length prefix says it will come
        here, so a big frame is refused before its megabytes are read.
        """
        if self.frames and self.reserved + size > self.max_bytes:
            self.refused += 1
            return "back-pressure"
        return None

    def open(self, frame):
        """
        Inflate, token-check and JSON-check ``frame`` on the checker thread.
        Fires on the reactor thread with the payload bytes (or
        L{wire.PING}); fails with L{wire.FrameError}.
        """
        if self._thread is None:
            return defer.fail(RuntimeError("the frame checker is not running"))
        need = self.need(frame)
        self.reserved += need
        self.frames += 1
        d = defer.Deferred()

        def release(result):
            self.reserved -= need
            self.frames -= 1
            self.checked += 1
            return result
        d.addBoth(release)
        self._queue.put((frame, d))
        return d

    def startService(self):
        service.Service.startService(self)
        self._thread = threading.Thread(target=self._run, name="nightowl-frame-checker",
                                        daemon=True)
        self._thread.start()

    def stopService(self):
        """Finish the frames queued, then stop the thread; fires when done."""
        service.Service.stopService(self)
        if self._thread is None:
            return defer.succeed(None)
        d = defer.Deferred()
        self._queue.put((None, d))
        self._thread = None
        return d

    def _run(self):
        call = self.reactor.callFromThread
        while True:
            frame, d = self._queue.get()
            if frame is None:
                call(d.callback, None)
                return
            try:
                payload = self._decode(frame, self.token_hash, self.max_inflated_bytes)
            except Exception:
                call(d.errback, Failure())
            else:
                call(d.callback, payload)
            # hold nothing while waiting for the next frame
            frame = d = payload = None
