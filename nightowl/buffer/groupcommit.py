"""
The writer thread's side of L{nightowl.buffer.writer.BufferWriter}: the loop
that takes queued operations, commits everything queued while the last
transaction ran in one transaction (group commit), keeps the state counters,
and hands each result back to the reactor thread.

Only this thread changes the buffer file while the agent runs; it talks to
the reactor only through ``reactor.callFromThread``.
"""

import queue
import sqlite3

from twisted.python.failure import Failure

from nightowl.buffer import states
from nightowl.buffer.reader import count_states, low_water
from nightowl.buffer.schema import (
    BufferError, claim_identity, insert_many, next_id, open_checked)
from nightowl.buffer.checkpoint import prepare_writer

# Drained rows deleted per transaction: small enough that the writer thread
# is never held long (acks queue behind it), repeated until none are left.
# 1,000 rows (with their bodies) held it 12-15 ms of CPU on a loaded 2-core
# box; 250 held it 4.4 ms on average (max 12) at 1,000 payloads/s with the
# drain, 100 hold it 2.0 ms (max 10): the appends of the same group wait.
DELETE_CHUNK = 100
MAX_GROUP = 4096  # operations per transaction at most


def _committed(batch):
    """
    Tell each waiter of a committed batch that has a ``committed`` hook
    (nightowl.ingest's acks, which answer direct connections from here), on
    the writer thread, before the results go back to the reactor.
    """
    for _payload, waiter in batch:
        hook = getattr(waiter, "committed", None)
        if hook is not None:
            try:
                hook()
            except Exception:
                pass  # the ack still follows on the reactor


class WriterThread:
    """
    Mixed into BufferWriter, whose attributes it uses: ``path``, ``sync``,
    ``clock``, ``reactor``, ``validate``, ``_queue``, ``_checkpointer``, the
    counters, and ``_deliver`` / ``_failUnfired`` on the reactor thread.
    Queue items are ``(op, arg, deferred)``; an ``append`` carries its batch
    of ``(payload, Deferred)`` and, in place of the Deferred, whether the
    batch was already checked.
    """

    def _open_conn(self, outcome):
        conn, self.moved_aside, corrupt = open_checked(self.path, self.sync, self.clock())
        if corrupt is not None:
            outcome["corrupt"] = corrupt
        prepare_writer(conn)
        self.buffer_id = claim_identity(conn, self.path)
        counts = count_states(conn)
        self.pending = counts["pending"]
        self.claimed = counts["claimed"]
        self.quarantined = counts["quarantined"]
        self.drained_kept = counts["drained"]
        if self.forward_queue is not None:
            self.forward_queue.opened(conn)
        return conn

    def _run(self, ready, outcome):
        try:
            self._conn = self._open_conn(outcome)
        except BufferError as e:
            outcome["error"] = e
            ready.set()
            return
        except Exception as e:  # unexpected: still fail startup clearly
            outcome["error"] = BufferError("cannot open buffer {}: {!r}".format(self.path, e))
            ready.set()
            return
        ready.set()
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        while True:
            # Group commit: everything queued while the last transaction ran
            # goes into the next one.  (A fixed gathering window was measured
            # and lengthened the ack cycle more than it saved: none.)
            ops = [get()]
            try:
                while len(ops) < MAX_GROUP:
                    ops.append(get_nowait())
            except queue.Empty:
                pass
            closing = [op for op in ops if op[0] == "close"]
            work = [op for op in ops if op[0] != "close"]
            if work:
                try:
                    self._commit_group(work)
                    self._checkpointer.rewind(self._conn)
                except Exception:
                    # A bug, not a database error (those are handled inside):
                    # never let the writer thread die with callers waiting.
                    self.write_errors += 1
                    self._hand_back(self._failUnfired, (work, Failure()))
            if closing:
                # Anything queued behind the close still gets committed.
                try:
                    while True:
                        late = get_nowait()
                        if late[0] != "close":
                            self._commit_group([late])
                        else:
                            closing.append(late)
                except queue.Empty:
                    pass
                try:
                    self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    pass
                self._conn.close()
                self._lock.release()
                self._hand_back(self._deliver, ([(d, None) for (_op, _arg, d) in closing],))
                return

    def _commit_group(self, ops):
        """
        Commit ``ops`` in one transaction, except that the appends of a
        group that also holds the drain's bookkeeping (claims, marks,
        deletes, forward runs) are committed, and so acknowledged, first in
        a transaction of their own: an ack never waits for a claim or a mark
        of thousands of rows queued beside it.
        """
        appends = [op for op in ops if op[0] == "append"]
        if appends and len(appends) < len(ops):
            self._commit_ops(appends)
            self._commit_ops([op for op in ops if op[0] != "append"])
        else:
            self._commit_ops(ops)

    def _commit_ops(self, ops):
        conn = self._conn
        now = self.clock()
        results = []
        deltas = []
        validate = self.validate
        valid = {}
        forwarded = None
        for op, batch, checked in ops:
            if op != "append":
                continue
            if checked:
                valid[id(batch)] = batch
                continue
            good = []
            for item in batch:
                try:
                    validate(item[0])
                except Exception:
                    results.append(([item], Failure()))
                else:
                    good.append(item)
            valid[id(batch)] = good
        try:
            conn.execute("BEGIN IMMEDIATE")
            appends = [(now, payload) for (op, batch, _d) in ops if op == "append"
                       for (payload, _pd) in valid[id(batch)]]
            if appends:
                if self._next_id is None:
                    self._next_id = next_id(conn)
                insert_many(conn, appends, first_id=self._next_id)
                self._next_id += len(appends)
                deltas.append(("pending", len(appends)))
                if self.forward_queue is not None:  # --forward: rows in this same commit
                    forwarded = self.forward_queue.insert(conn, [
                        item for (op, batch, _d) in ops if op == "append"
                        for item in valid[id(batch)]], now)
            for op, arg, d in ops:
                if op == "append":
                    results.append((valid[id(arg)], None))
                else:
                    value, delta = getattr(self, "_op_" + op)(conn, arg, now)
                    deltas.extend(delta)
                    results.append((d, value))
            conn.execute("COMMIT")
        except Exception:
            failure = Failure()
            self._next_id = None  # re-read after a rollback
            if self.forward_queue is not None:
                self.forward_queue.rolled_back()
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if len(ops) > 1:
                # Retry one by one so a single bad operation fails alone.
                for op in ops:
                    self._commit_group([op])
                return
            self.write_errors += 1
            self.last_error = "{}: {}".format(failure.type.__name__, failure.getErrorMessage())
            op, arg, d = ops[0]
            # An append op carries its batch of (payload, Deferred) in arg.
            target = arg if op == "append" else d
            self._hand_back(self._deliver, ([(target, failure)],))
            return
        for key, n in deltas:
            if key[0] == "=":  # an absolute count (recount), in operation order
                setattr(self, key[1:], n)
            else:
                setattr(self, key, getattr(self, key) + n)
        if self.forward_queue is not None:
            self.forward_queue.applied(forwarded)
            self.forward_queue.committed()
        self.appended += sum(len(valid[id(op[1])]) for op in ops if op[0] == "append")
        self.commits += 1
        self.last_commit_at = now
        for op, batch, _checked in ops:
            if op == "append":
                _committed(valid[id(batch)])
        self._hand_back(self._deliver, (results,))

    def _hand_back(self, f, args):
        """
        Run ``f(*args)`` on the reactor thread, after everything handed back
        before it.  While an earlier hand-back still waits for the reactor,
        this one joins it instead of waking the reactor again (a pipe write
        per group, and the reactor wakes for new connections anyway when it
        is busy).
        """
        with self._back_lock:
            self._back.append((f, args))
            if self._back_scheduled:
                return
            self._back_scheduled = True
        self.reactor.callFromThread(self._run_handed_back)

    def _run_handed_back(self):
        """The reactor thread's side of L{_hand_back}."""
        with self._back_lock:
            calls, self._back = self._back, []
            self._back_scheduled = False
        for f, args in calls:
            try:
                f(*args)
            except Exception:
                self.log.failure("buffer writer: delivering results")

    # -- operations: (value, counter deltas), inside the group's transaction --

    def _op_claim(self, conn, arg, now):
        worker, limit, max_bytes = arg
        ids = states.claim(conn, worker, limit, now, max_bytes)
        return ids, [("pending", -len(ids)), ("claimed", len(ids))]

    def _op_mark_drained(self, conn, ids, now):
        claimed, pending = states.mark_drained(conn, ids, now)
        n = claimed + pending
        return n, [("claimed", -claimed), ("pending", -pending), ("drained_kept", n)]

    def _op_quarantine(self, conn, items, now):
        claimed, pending = states.quarantine(conn, items, now)
        n = claimed + pending
        return n, [("claimed", -claimed), ("pending", -pending), ("quarantined", n)]

    def _op_release(self, conn, worker, now):
        n = states.release(conn, worker, now)
        return n, [("claimed", -n), ("pending", n)]

    def _op_requeue(self, conn, ids, now):
        n = states.requeue(conn, ids, now)
        return n, [("quarantined", -n), ("pending", n)]

    def _op_run(self, conn, fn, now):
        return fn(conn), []

    def _op_housekeep(self, conn, arg, now):
        safety, quarantine_keep = arg
        deleted = states.delete_drained(conn, now - safety, DELETE_CHUNK)
        expired = states.expire_quarantine(conn, now - quarantine_keep)
        self.low_water = low_water(conn)
        return {"deleted": deleted, "expired_quarantine": expired,
                "low_water": self.low_water}, [
            ("drained_kept", -deleted), ("quarantined", -expired)]

    def _op_recount(self, conn, arg, now):
        counts = count_states(conn)
        return counts, [("=pending", counts["pending"]), ("=claimed", counts["claimed"]),
                        ("=quarantined", counts["quarantined"]),
                        ("=drained_kept", counts["drained"])]
