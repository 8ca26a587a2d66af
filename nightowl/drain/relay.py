"""
The buffer side of the drain's claim protocol: what the supervisor asks the
agent's BufferWriter (its writer thread) on behalf of a worker.

``release_dead`` hands a dead worker's claim back (after quarantining the
one payload the claim shrinker isolated, if any).  ``claim`` hands out payload ids (a failed claim, disk full ..., is an empty
claim, logged at most once per ``log_every`` seconds).  ``settle`` applies a
worker's ``done``: mark drained, quarantine, release what the quarantine
breaker held, requeue what it set free.  The rows are already committed in
Postgres, so only the SQLite mark is retried, with ``backoff(attempt)``,
until it lands: committed rows are never re-drained because a mark failed.
"""

from twisted.internet import defer, task
from twisted.logger import Logger


class BufferRelay:
    log = Logger()

    def __init__(self, buffer_writer, reactor, backoff, log_every, stopping):
        self.buffer_writer = buffer_writer
        self.reactor = reactor
        self.backoff = backoff
        self.log_every = log_every
        self.stopping = stopping          # () -> bool: the supervisor is stopping
        self._claim_failures = 0          # since the last report
        self._claim_failure_logged = None

    def low_water(self):
        return getattr(self.buffer_writer, "low_water", None)

    def release(self, worker_id):
        return self.buffer_writer.release(worker_id)

    def release_dead(self, worker_id, pending, poison=None):
        """
        After ``pending`` (the buffer operations already asked for a dead
        worker): quarantine ``poison`` (payload id, reason) if the claim
        shrinker isolated one, then release the worker's claims.
        """
        d = defer.DeferredList(pending, consumeErrors=True) if pending else defer.succeed(None)
        if poison is not None:
            d.addCallback(lambda _: self._isolate(worker_id, *poison))
        d.addCallback(lambda _: self.buffer_writer.release(worker_id))
        d.addCallback(self._released, worker_id)
        d.addErrback(self._logFailure, "releasing the claims of drain worker {}".format(worker_id))
        return d

    def _isolate(self, worker_id, payload_id, reason):
        self.log.error("drain worker {worker} died again on payload {id} alone: quarantining "
                       "it so the drain goes on (`nightowl buffer inspect` shows it)",
                       worker=worker_id, id=payload_id)
        return self.buffer_writer.quarantine([(payload_id, reason)])

    def _released(self, count, worker_id):
        if count:
            self.log.info("released {count} payloads claimed by drain worker {worker}",
                          count=count, worker=worker_id)

    def _logFailure(self, f, what):
        self.log.failure("drain supervisor: {what}", f, what=what)

    def claim(self, worker_id, limit, max_bytes):
        """Deferred list of claimed ids; [] when the claim failed."""
        d = defer.maybeDeferred(self.buffer_writer.claim, worker_id, limit, max_bytes=max_bytes)

        def failed(f):
            self._claimFailed(f, worker_id)
            return []
        return d.addCallbacks(lambda ids: list(ids or ()), failed)

    def _claimFailed(self, f, worker_id):
        now = self.reactor.seconds()
        self._claim_failures += 1
        last = self._claim_failure_logged
        if last is not None and now - last < self.log_every:
            return
        self.log.error("claiming for drain worker {worker} failed: {error} ({count} failed "
                       "claims since the last report; retrying)", worker=worker_id,
                       error=_first_line(f), count=self._claim_failures)
        self._claim_failures = 0
        self._claim_failure_logged = now

    def settle(self, worker_id, drained, quarantined, held=(), requeue=(), attempt=0):
        """Apply one ``done``, retrying the mark until it lands (or the agent stops)."""
        delay = self.backoff(attempt)
        writer = self.buffer_writer

        def mark():
            d = defer.succeed(None)
            if drained:
                d.addCallback(lambda _: writer.mark_drained(drained))
            if quarantined:
                d.addCallback(lambda _: writer.quarantine(quarantined))
            if held:   # the worker's only claimed rows left are the held ones
                d.addCallback(lambda _: writer.release(worker_id))
            if requeue:
                d.addCallback(lambda _: writer.requeue_quarantined(requeue))
            return d

        def retry(f):
            if self.stopping():
                self.log.error("marking {count} committed payloads of drain worker {worker} "
                               "failed ({error}) during shutdown; the ledger skips them "
                               "on the next drain", count=len(drained) + len(quarantined),
                               worker=worker_id, error=f.type.__name__)
                return None
            self.log.error("marking {count} committed payloads of drain worker {worker} failed "
                           "({error}); retrying the mark in {delay} s",
                           count=len(drained) + len(quarantined), worker=worker_id,
                           error=f.type.__name__, delay=delay)
            return task.deferLater(self.reactor, delay, self.settle, worker_id, drained,
                                   quarantined, held, requeue, attempt + 1)
        d = defer.maybeDeferred(mark)
        d.addErrback(retry)
        return d


def _first_line(f):
    lines = (f.getErrorMessage() or "").splitlines()
    return "{}: {}".format(f.type.__name__, lines[0][:200] if lines else "")
