"""
BufferWriter, the service that owns the SQLite buffer: its lifecycle (the
ownership lock, the writer and checkpointer threads), the reactor-thread API
(append with back-pressure, claim, mark, quarantine, release, requeue,
housekeeping) and its counters.

Every payload is committed here before the SDK gets ``2:OK``; the drain
workers claim rows, copy them to Postgres and report back; only the writer
thread (L{nightowl.buffer.groupcommit}) ever changes the file while the agent
runs.  See docs/design.rst for the schema and the state machine.
"""

import os
import queue
import threading
import time

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from nightowl.buffer import groupcommit
from nightowl.buffer.checkpoint import Checkpointer, give_back_pages, wal_size
from nightowl.buffer.lock import own_buffer
from nightowl.buffer.schema import BufferError

# Drained rows are kept this long before deletion, so an operator can still
# see what was drained recently and a late duplicate report is harmless.
SAFETY_WINDOW = 2.0
QUARANTINE_KEEP = 7 * 86400.0


class BufferWriter(groupcommit.WriterThread, service.Service):
    """
    Owns the SQLite buffer through one dedicated thread.

    Methods are called on the reactor thread and return Deferreds that fire
    on the reactor thread once the transaction holding the operation has
    committed.  Operations queued while a transaction runs are committed
    together in the next one (group commit).
    """

    log = Logger()
    name = "buffer"

    def __init__(self, path, reactor=None, max_queue=20000, max_pending=1000000,
                 clock=time.time, sync="normal",
                 validate=None, max_queue_bytes=64 * 1024 * 1024, forward_queue=None):
        if reactor is None:
            from twisted.internet import reactor
        self.path = path
        self.reactor = reactor
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.max_pending = max_pending
        self.clock = clock
        self.sync = sync
        if validate is None:
            from nightowl.wire import check_json_array as validate
        # Run on the writer thread, on each payload before it is inserted:
        # raising refuses that payload alone (the SDK gets 5:ERROR).  Here,
        # parsing overlaps the reactor thread's socket system calls.
        self.validate = validate
        # nightowl.buffer.forwardq.ForwardQueue with --forward, else None
        self.forward_queue = forward_queue
        self.buffer_id = None
        self.moved_aside = None
        self._queue = queue.SimpleQueue()
        # results waiting for the reactor thread (groupcommit._hand_back)
        self._back = []
        self._back_lock = threading.Lock()
        self._back_scheduled = False
        self._batch = []
        self._checked = []  # appends already checked (nightowl.checker): not validated again
        self._flush_scheduled = False
        self.inflight = 0  # appends handed over and not yet committed (reactor thread)
        self.inflight_bytes = 0  # their bytes (reactor thread): --max-queue-bytes
        self._thread = None
        self._conn = None
        self._closed = False
        self._checkpointer = Checkpointer(path)
        # Counters kept by the writer thread after each commit; read anywhere.
        self.pending = 0
        self.claimed = 0
        self.quarantined = 0
        self.drained_kept = 0
        self.appended = 0
        self.commits = 0
        self.write_errors = 0
        self.last_commit_at = None
        self.last_error = None
        self.back_pressure = False
        # Every row with a smaller id is finished (drained, quarantined or
        # deleted): the drain may forget its Postgres ledger entries below it.
        self.low_water = None
        self._next_id = None  # writer thread: the next payload id, once known

    # -- lifecycle -------------------------------------------------------

    def open(self):
        """
        Start the writer thread, open the file, check it and probe that it
        is writable.  Blocks until done; raises L{BufferError} with a clear
        message on failure.  Idempotent.
        """
        if self._thread is not None:
            return
        self._lock = own_buffer(self.path)
        ready = threading.Event()
        outcome = {}
        self._thread = threading.Thread(target=self._run, args=(ready, outcome),
                                        name="nightowl-buffer-writer", daemon=True)
        self._thread.start()
        ready.wait()
        if "error" in outcome:
            self._thread.join()
            self._thread = None
            self._lock.release()
            raise outcome["error"]
        self._checkpointer.start()
        if self.moved_aside:
            self.log.error(
                "buffer {path} was corrupt ({reason}); moved aside to {aside} and started "
                "a fresh buffer. Inspect the old file with `nightowl buffer verify`.",
                path=self.path, aside=self.moved_aside, reason=outcome.get("corrupt"))

    def is_open(self):
        """True once L{open} has succeeded, until L{close}."""
        return self._thread is not None and not self._closed

    def startService(self):
        self.open()
        service.Service.startService(self)

    def stopService(self):
        """Commit what is queued, then close the file.  Fires when closed."""
        service.Service.stopService(self)
        return self.close()

    def close(self):
        if self._thread is None or self._closed:
            return defer.succeed(None)
        self._flush()
        self._closed = True
        self._checkpointer.stop()
        d = defer.Deferred()
        self._queue.put(("close", None, d))
        return d

    # -- results from the writer thread (reactor thread) ---------------------

    def _failUnfired(self, ops, failure):
        """Errback every Deferred of ``ops`` that has not fired yet (reactor thread)."""
        self.log.failure("buffer writer: unexpected error; failing the operations "
                         "of this group", failure)
        for op, arg, d in ops:
            targets = [pd for (_payload, pd) in arg] if op == "append" else [d]
            for n, target in enumerate(targets):
                if not target.called:
                    if op == "append":
                        self.inflight -= 1
                        self.inflight_bytes -= len(arg[n][0])
                    target.errback(failure)

    def _deliver(self, results):
        for target, value in results:
            if type(target) is list:  # a batch of appends
                self.inflight -= len(target)
                self.inflight_bytes -= sum(len(payload) for payload, _d in target)
                if isinstance(value, Failure):
                    for _payload, d in target:
                        d.errback(value)
                else:
                    for _payload, d in target:
                        d.callback(None)
            elif isinstance(value, Failure):
                target.errback(value)
            else:
                target.callback(value)

    # -- the API (reactor thread) -------------------------------------------

    def _submit(self, op, arg):
        if self._thread is None or self._closed:
            return defer.fail(BufferError("buffer is not open"))
        d = defer.Deferred()
        self._queue.put((op, arg, d))
        return d

    def refusal(self, size=0):
        """
        Why a new payload must be refused right now (back-pressure), or
        None.  Recovers by itself as the drain catches up.
        """
        if self.pending + self.claimed > self.max_pending:
            self.back_pressure = True
            return "back-pressure"
        if self.inflight >= self.max_queue:
            self.back_pressure = True
            return "back-pressure"
        if self.inflight_bytes + size > self.max_queue_bytes and self.inflight:
            # bounded in bytes too: 16 senders of gzip bombs must not queue gigabytes
            self.back_pressure = True
            return "back-pressure"
        self.back_pressure = False
        return None

    #: append() takes a ``waiter`` in place of the Deferred it would make
    takes_waiters = True

    def append(self, payload, checked=False, waiter=None, forward=None):
        """
        Queue a payload; fires (with None) once it is committed.  ``forward``:
        ``(token_hash, payload as received)`` to queue for --forward in the
        same commit (ignored without a forward queue).

        Payloads appended during one reactor iteration are handed to the
        writer thread together, so the threads meet once per iteration, not
        once per payload.  ``waiter``: fired in place of a new Deferred
        (anything with ``callback``, ``errback`` and ``called``; the ingest's
        per-payload ack, nightowl.ingest) and returned.
        """
        d = defer.Deferred() if waiter is None else waiter
        if forward is not None and self.forward_queue is not None:
            d.forward = forward
        (self._checked if checked else self._batch).append((payload, d))
        self.inflight += 1
        self.inflight_bytes += len(payload)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.reactor.callLater(0, self._flush)
        return d

    def _flush(self):
        self._flush_scheduled = False
        for batch, checked in ((self._batch, None), (self._checked, "checked")):
            if batch:
                self._hand_over(batch, checked)
        self._batch, self._checked = [], []

    def _hand_over(self, batch, checked):
        if self._thread is None or self._closed:
            self.inflight -= len(batch)
            self.inflight_bytes -= sum(len(payload) for payload, _d in batch)
            for _payload, d in batch:
                d.errback(BufferError("buffer is not open"))
            return
        self._queue.put(("append", batch, checked))

    def claim(self, worker, limit, max_bytes=None):
        """Claim up to ``limit`` pending rows, and up to ``max_bytes`` of payload (>= 1 row)."""
        return self._submit("claim", (worker, limit, max_bytes))

    def mark_drained(self, ids):
        return self._submit("mark_drained", list(ids))

    def quarantine(self, items):
        return self._submit("quarantine", [(i, r) for (i, r) in items])

    def release(self, worker=None):
        return self._submit("release", worker)

    def requeue_quarantined(self, ids=None):
        return self._submit("requeue", None if ids is None else list(ids))

    def run(self, fn):
        """Run ``fn(conn)`` on the writer thread inside a transaction."""
        return self._submit("run", fn)

    def housekeep(self, safety=SAFETY_WINDOW, quarantine_keep=QUARANTINE_KEEP):
        """
        Delete drained rows older than the safety window and expired
        quarantine, a chunk per transaction, then give freed pages back to
        the file system in small slices (checkpoints are the checkpointer
        thread's job).
        """
        total = {"deleted": 0}

        def chunk(result=None):
            if result is not None:
                total["deleted"] += result["deleted"]
                total.update((k, v) for k, v in result.items() if k != "deleted")
                if result["deleted"] < groupcommit.DELETE_CHUNK:
                    return self._submit("run", self._compact).addCallback(
                        lambda extra: dict(total, **extra))
            # one chunk per transaction; appends queued meanwhile go between
            return self._submit("housekeep", (safety, quarantine_keep)).addCallback(chunk)
        return chunk()

    def _compact(self, conn):
        freed, free_pages = give_back_pages(conn)
        return {"freed_pages": freed, "free_pages": free_pages,
                "wal_bytes": self.wal_size(), "checkpoint": self.last_checkpoint}

    def recount(self):
        """
        Recompute the state counters from the file (drift repair, e.g. after
        an operator ran `nightowl buffer requeue` beside the agent).  The
        counts are taken inside the group's transaction and replace the
        counters at their place in operation order, so appends committed in
        the same group are not counted twice.
        """
        return self._submit("recount", None)

    # -- figures (any thread) ----------------------------------------------

    def alive(self):
        """True while the writer thread runs and the buffer is open."""
        return self._thread is not None and self._thread.is_alive() and not self._closed

    def queued(self):
        return self._queue.qsize()

    def file_size(self):
        try:
            return os.path.getsize(self.path)
        except OSError:
            return 0

    def wal_size(self):
        return wal_size(self.path)

    @property
    def checkpoints(self):
        return self._checkpointer.checkpoints

    @property
    def rewinds(self):
        return self._checkpointer.rewinds

    @property
    def last_checkpoint(self):
        return self._checkpointer.last

    @property
    def checkpoint_error(self):
        return self._checkpointer.error

    def stats(self):
        return {
            "path": self.path,
            "buffer_id": self.buffer_id,
            "pending": self.pending,
            "claimed": self.claimed,
            "quarantined": self.quarantined,
            "drained_kept": self.drained_kept,
            "queued": self.inflight,
            "queued_bytes": self.inflight_bytes,
            "max_queue_bytes": self.max_queue_bytes,
            "appended": self.appended,
            "commits": self.commits,
            "write_errors": self.write_errors,
            "last_error": self.last_error,
            "last_commit_at": self.last_commit_at,
            "file_bytes": self.file_size(),
            "wal_bytes": self.wal_size(),
            "back_pressure": self.back_pressure,
            "checkpoints": self.checkpoints,
            "wal_rewinds": self.rewinds,
            "last_checkpoint": self.last_checkpoint,
            "checkpoint_error": self.checkpoint_error,
            "max_pending": self.max_pending,
        }
