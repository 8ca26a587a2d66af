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
import time

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from nightowl import wire

# deflate's largest possible ratio is about 1032:1
DEFLATE_RATIO = 1032
# Between the pieces of a big payload the checker sleeps as long as the
# piece took (times SHARE, at most MAX_PAUSE s).  orjson holds the GIL for
# a whole piece and CPython hands a waiting thread the GIL only after its
# 5 ms switch interval: a checker busy on gzip bombs back to back kept the
# reactor and the writer waiting ~5 ms at every system call, and an
# ordinary payload beside them took up to 3.3 s to be acked (bench faults,
# big-frames).  Paced, the checker takes about half the GIL at most.
SHARE = 1.0
MAX_PAUSE = 0.01


class Pacer:
    """The checker thread's pause between pieces (nightowl.jsoncheck)."""

    def __init__(self, share=SHARE, max_pause=MAX_PAUSE, clock=time.perf_counter,
                 sleep=time.sleep):
        self.share = share
        self.max_pause = max_pause
        self.clock = clock
        self.sleep = sleep
        self.mark = None
        self.paused = 0.0  # seconds slept in all

    def start(self):
        """A new payload: its first piece starts now."""
        self.mark = self.clock()

    def __call__(self):
        now = self.clock()
        if self.mark is not None:
            pause = min((now - self.mark) * self.share, self.max_pause)
            if pause > 0:
                self.sleep(pause)
                self.paused += pause
        self.mark = self.clock()


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
        self.pacer = None  # the checker thread's Pacer, once it runs

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
        from nightowl.jsoncheck import pace_this_thread
        call = self.reactor.callFromThread
        pacer = self.pacer = Pacer()
        pace_this_thread(pacer)
        while True:
            frame, d = self._queue.get()
            if frame is None:
                call(d.callback, None)
                return
            pacer.start()
            try:
                payload = self._decode(frame, self.token_hash, self.max_inflated_bytes)
            except Exception:
                call(d.errback, Failure())
            else:
                call(d.callback, payload)
            # hold nothing while waiting for the next frame
            frame = d = payload = None
