"""
L{ForwardService}: delivers the forward queue (L{nightowl.buffer.forwardq})
upstream, at least once, without ever holding up an ack or the drain.

The guarantee and its limits:

- every acknowledged payload has a forward row committed in the same
  transaction as the payload; a row is deleted only after the upstream
  answered ``2:OK`` (or its frame was given up, below), so a frame is sent
  again after a restart or a kill if its ack from upstream was not recorded:
  at least once, possibly twice;
- the upstream down (refused, timed out, closed without a reply): the frame
  goes back to the queue and sending pauses, with backoff
  (``twisted.application.internet.backoffPolicy``), one probe at a time until the
  upstream answers again;
- the backlog is bounded (``--forward-max-rows`` / ``--forward-max-bytes``):
  past the bound the oldest rows are deleted in the commit that adds new
  ones, and counted (``dropped``); the Postgres copy is never touched; a
  dropped frame is not sent, except one already in flight (at most
  ``max_inflight``, one while the upstream is down);
- an upstream reply other than ``2:OK`` (e.g. ``5:ERROR``: it refused the
  frame) is counted in ``rejected`` and the frame is retried after a backoff
  delay, up to L{ForwardService.reject_attempts} answers in all; then it is
  given up (deleted and counted in ``given_up``), so a frame the upstream
  will never take cannot block the queue.

All SQLite work goes through the writer thread (``buffer.run``); sending
runs on the reactor, at most ``max_inflight`` connections at a time.
"""

import heapq
from functools import partial

from twisted.application import service
from twisted.application.internet import backoffPolicy
from twisted.internet import defer, task
from twisted.logger import Logger

OK = b"2:OK"


class ForwardService(service.Service):
    """
    ``buffer``: the BufferWriter (``run(fn) -> Deferred``); ``queue``: its
    L{nightowl.buffer.forwardq.ForwardQueue}; ``send``: ``frame ->
    Deferred(reply bytes)`` (L{nightowl.forward.client.Sender}, or a fake);
    ``target``: ``HOST:PORT`` as configured (for figures and logs).
    """

    log = Logger()
    name = "forward"

    # policy, as class attributes (procmon style)
    tick = 0.05            # seconds between looks at the queue
    fetch_rows = 256       # rows read from the buffer at a time
    fetch_bytes = 4 * 1024 * 1024
    delete_every = 0.25    # seconds between deletes of delivered rows (batched)
    reject_attempts = 3    # upstream answers other than 2:OK before a frame is given up
    initial_delay = 0.5
    max_delay = 30.0

    def __init__(self, buffer, queue, send, target, reactor=None, max_inflight=8):
        if reactor is None:
            from twisted.internet import reactor
        self.buffer = buffer
        self.queue = queue
        self.send = send
        self.target = target
        self.reactor = reactor
        self.max_inflight = max_inflight
        self.backoff = backoffPolicy(self.initial_delay, self.max_delay, 2.0)
        self._cursor = 0          # highest row id read from the buffer
        self._ready = []          # heap of (id, frame): oldest first
        self._inflight = set()
        self._attempts = {}       # id -> answers other than 2:OK so far
        self._done = []           # ids to delete (delivered or given up)
        self._fetching = False
        self._deleting = False
        self._last_delete = 0.0
        self._down_since = None
        self._failures_in_row = 0
        self._resume_at = 0.0
        self._loop = None
        self.upstream_up = None   # unknown until the first answer
        self.forwarded = 0
        self.forwarded_bytes = 0
        self.rejected = 0
        self.given_up = 0
        self.failures = 0
        self.last_error = None

    # -- lifecycle -------------------------------------------------------

    def startService(self):
        service.Service.startService(self)
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.reactor
        self._loop.start(self.tick, now=True).addErrback(
            lambda f: self.log.failure("forwarding stopped", f))
        self.log.info("forwarding every acknowledged payload to {target} "
                      "({rows} rows, {size} bytes waiting)",
                      target=self.target, rows=self.queue.rows, size=self.queue.bytes)

    def stopService(self):
        """Stop sending; delete what was delivered.  Frames in flight are sent again later."""
        service.Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        return self._flush_deletes()

    # -- the loop (reactor thread) ------------------------------------------

    def _tick(self):
        try:
            now = self.reactor.seconds()
            if self._done and now - self._last_delete >= self.delete_every:
                self._flush_deletes()
            self._pump(now)
        except Exception:
            self.log.failure("forwarding: unexpected error (the loop goes on)")

    def _pump(self, now=None):
        if not self.running:
            return
        now = self.reactor.seconds() if now is None else now
        if now >= self._resume_at:
            # while the upstream is down: one probe at a time
            limit = 1 if self.upstream_up is False else self.max_inflight
            while self._ready and len(self._inflight) < limit:
                row_id, frame = heapq.heappop(self._ready)
                if row_id < self.queue.trimmed_below:
                    continue     # dropped past the bound while it waited here
                self._send(row_id, frame)
        if (not self._fetching and len(self._ready) < self.fetch_rows // 2
                and self.queue.last_id > self._cursor):
            self._fetch()

    def _fetch(self):
        self._fetching = True
        d = self.buffer.run(partial(self.queue.take, after=self._cursor,
                                    limit=self.fetch_rows, max_bytes=self.fetch_bytes))
        d.addCallbacks(self._fetched, self._fetch_failed)
        d.addErrback(self._bug)

    def _fetched(self, rows):
        self._fetching = False
        held = self._inflight.union(self._attempts)
        for row_id, frame in rows:
            if row_id not in held:
                heapq.heappush(self._ready, (row_id, frame))
        if rows:
            self._cursor = max(self._cursor, rows[-1][0])
        self._pump()

    def _fetch_failed(self, failure):
        self._fetching = False
        self.last_error = "buffer read failed: {}".format(failure.getErrorMessage())
        self.log.error("forwarding: cannot read the forward queue: {error}",
                       error=failure.getErrorMessage())

    def _send(self, row_id, frame):
        self._inflight.add(row_id)
        d = defer.maybeDeferred(self.send, frame)
        d.addCallbacks(self._answered, self._unreachable,
                       callbackArgs=(row_id, frame), errbackArgs=(row_id, frame))
        d.addErrback(self._bug)

    def _answered(self, reply, row_id, frame):
        self._inflight.discard(row_id)
        if not self.running:
            return  # not recorded: sent again after the restart
        self._mark_up()
        if reply == OK:
            self.forwarded += 1
            self.forwarded_bytes += len(frame)
            self._attempts.pop(row_id, None)
            self._done.append(row_id)
        else:
            self.rejected += 1
            attempts = self._attempts.get(row_id, 0) + 1
            shown = repr(reply[:16])
            self.last_error = "upstream replied {}".format(shown)
            if attempts >= self.reject_attempts:
                self._attempts.pop(row_id, None)
                self.given_up += 1
                self._done.append(row_id)
                self.log.warn("forwarding: upstream {target} replied {reply} {n} times to "
                              "frame {id}; given up", target=self.target, reply=shown,
                              n=attempts, id=row_id)
            else:
                self._attempts[row_id] = attempts
                self.reactor.callLater(self.backoff(attempts - 1), self._retry, row_id, frame)
        self._pump()

    def _retry(self, row_id, frame):
        if self.running:
            heapq.heappush(self._ready, (row_id, frame))
            self._pump()

    def _unreachable(self, failure, row_id, frame):
        self._inflight.discard(row_id)
        if not self.running:
            return
        self.failures += 1
        self._failures_in_row += 1
        heapq.heappush(self._ready, (row_id, frame))
        delay = self.backoff(min(self._failures_in_row - 1, 30))
        self._resume_at = self.reactor.seconds() + delay
        self.last_error = failure.getErrorMessage()
        if self.upstream_up is not False:
            self.upstream_up = False
            self._down_since = self.reactor.seconds()
            self.log.error("forwarding: upstream {target} is down ({error}); frames wait in "
                           "the buffer and are retried with backoff", target=self.target,
                           error=self.last_error)

    def _mark_up(self):
        self._failures_in_row = 0
        self._resume_at = 0.0
        if self.upstream_up is False:
            self.log.info("forwarding: upstream {target} answers again after {seconds:.1f} s",
                          target=self.target,
                          seconds=self.reactor.seconds() - (self._down_since or 0.0))
        self.upstream_up = True
        self._down_since = None

    def _flush_deletes(self):
        if not self._done or self._deleting:
            return defer.succeed(None)
        ids, self._done = self._done, []
        self._deleting = True
        self._last_delete = self.reactor.seconds()

        def failed(f):
            self._done.extend(ids)   # tried again next round
            self.log.error("forwarding: cannot delete delivered rows: {error}",
                           error=f.getErrorMessage())

        def finished(result):
            self._deleting = False
            return result
        d = self.buffer.run(partial(self.queue.delete, ids=ids))
        d.addCallback(lambda _n: None)
        d.addErrback(failed)
        d.addBoth(finished)
        return d

    def _bug(self, failure):
        self.log.failure("forwarding: unexpected error", failure)

    # -- figures (the /status ``forward`` section) --------------------------

    def figures(self, now=None):
        now = self.reactor.seconds() if now is None else now
        q = self.queue
        return {
            "target": self.target,
            "upstream_up": self.upstream_up,
            "down_seconds": (round(now - self._down_since, 3)
                             if self._down_since is not None else 0.0),
            "backlog_rows": q.rows,
            "backlog_bytes": q.bytes,
            "max_rows": q.max_rows,
            "max_bytes": q.max_bytes,
            "forwarded": self.forwarded,
            "forwarded_bytes": self.forwarded_bytes,
            "dropped": q.dropped,
            "dropped_bytes": q.dropped_bytes,
            "rejected": self.rejected,
            "given_up": self.given_up,
            "failures": self.failures,
            "inflight": len(self._inflight),
            "max_inflight": self.max_inflight,
            "last_error": self.last_error,
        }
