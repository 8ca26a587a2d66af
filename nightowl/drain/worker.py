"""
The drain worker's loop: ``python -m nightowl.drain.worker``.

A child process spawned by nightowl.drain.supervisor with an explicit
environment (nightowl.drain.config).  It is a plain blocking loop, no
reactor: ask the supervisor for a claim, read the claimed payload bytes from
the SQLite buffer (its own read-only connection: SELECT only, never a write),
hand them to ``pgwrite.BatchWriter.write``, report ``done`` (with its
``WorkerStats``) and wait for ``marked`` before claiming again.  Every claim,
mark and quarantine goes through the supervisor to the agent's single writer
thread.  The process around the loop (pipes, signals, wiring) is
nightowl.drain.process; ``python -m nightowl.drain.worker maintenance`` runs
nightowl.drain.maintenance instead.

Postgres outages: the claimed ids are kept (not reported), the same rows are
retried with exponential backoff 100 ms -> 10 s, and the outage is logged at
doublings only.  ``stop`` or SIGTERM: finish (and report) the current batch,
then exit 0.  EOF on stdin means the agent is gone: exit at once.

Logs: one line each on stderr (nightowl.drain.logbridge); the supervisor tags
them with the worker id.
"""

import os
import time


from nightowl.drain import ipc

IDLE_SECONDS = 0.1
# After a short claim (fewer ids than asked: the backlog is drained) the
# worker waits this long before claiming again, so the next batch fills up.
# Without it a worker keeping pace at 1,000 payloads/s claimed a few rows at
# a time, and each batch's claim, mark and IPC in the agent cost more than
# ingesting its payloads.  Never when the claim was full (a backlog): then
# the worker claims again at once.  Adds up to this much to the time from
# ack to Postgres; none to the ack.
FILL_SECONDS = 0.05
STATS_EVERY = 2.0
LEDGER_PRUNE_EVERY = 60.0  # seconds between ledger clean-ups
READ_CHUNK = 500
#: delay after failed write attempt N (0, 1, ...) of the same rows: 100 ms doubling to 10 s
def WRITE_BACKOFF(attempt):
    """Seconds before write retry ``attempt``: Twisted's backoffPolicy, 0.1 s
    doubling to 10 s, no jitter; imported on the first retry so that loading
    the worker's loop does not load Twisted."""
    from twisted.application.internet import backoffPolicy
    return backoffPolicy(initialDelay=0.1, maxDelay=10.0, factor=2.0,
                         jitter=lambda: 0.0)(attempt)


def batch_stats(result, payloads):
    """The counters of one committed batch, from pgwrite's result."""
    rows_by_table = {}
    for table, n in (getattr(result, "rows_by_table", None) or {}).items():
        rows_by_table[table] = rows_by_table.get(table, 0) + int(n)
    return ipc.WorkerStats(
        batches=1, payloads=payloads,
        records=int(getattr(result, "records", 0) or 0),
        rows=sum(rows_by_table.values()),
        quarantined=len(getattr(result, "quarantined", None) or ()),
        skipped=_count(getattr(result, "skipped", None)),
        ledger_skipped=int(getattr(result, "ledger_skipped", 0) or 0),
        rows_by_table=rows_by_table)


class Worker:
    """One worker's claim -> read -> write -> done -> marked loop."""

    backoff = staticmethod(WRITE_BACKOFF)

    def __init__(self, config, channel, reader, writer_factory, stop_event, log,
                 clock=time.monotonic, unavailable=(), kill=None, breaker=None):
        self.config = config
        self.breaker = breaker  # the QuarantineBreaker the writer consults, if any
        self.channel = channel
        self.reader = reader
        self.writer_factory = writer_factory
        self.stop_event = stop_event
        self.log = log
        self.clock = clock
        self.unavailable = tuple(unavailable)
        self.faults = None
        if config.fault:   # test-only hooks, never loaded in production
            from nightowl.drain.faults import FaultHooks
            self.faults = FaultHooks(config.fault, log, kill)
        self.writer = None
        self.current_batch = 0
        self.commits = 0
        self.last_success = None
        self.last_stats_sent = None
        self.last_prune = None
        self.counters = ipc.WorkerStats()
        self.status = {
            "worker": config.worker_id, "pid": os.getpid(),
            "last_error": None, "blocked": None,
            "pg_reachable": None, "seconds_since_success": None,
        }

    # -- stats -----------------------------------------------------------

    def snapshot(self):
        s = dict(self.status)
        s.update(self.counters.as_dict())
        if self.breaker is not None:
            s["breaker"] = self.breaker.state()
        if self.last_success is not None:
            s["seconds_since_success"] = round(self.clock() - self.last_success, 3)
        return s

    def _maybe_send_stats(self):
        now = self.clock()
        if self.last_stats_sent is None or now - self.last_stats_sent >= STATS_EVERY:
            self.last_stats_sent = now
            self.channel.send({"op": ipc.STATS, "stats": self.snapshot()})

    def _record(self, result, payloads):
        self.counters = self.counters + batch_stats(result, payloads)
        self.status["pg_reachable"] = True
        self.status["blocked"] = None
        self.last_success = self.clock()

    # -- the loop --------------------------------------------------------

    def run(self):
        self.channel.send({"op": ipc.HELLO, "worker": self.config.worker_id, "pid": os.getpid()})
        self.log("info", "worker {} started (pid {}, batch size {})".format(
            self.config.worker_id, os.getpid(), self.config.batch_size))
        while not self.stop_event.is_set():
            self.channel.send({"op": ipc.CLAIM, "limit": self.config.batch_size})
            reply = self.channel.expect(ipc.CLAIMED)
            if reply is None:
                return 0
            self._maybe_prune_ledger(reply.get("low_water"))
            ids = [int(i) for i in reply.get("ids") or ()]
            if not ids:
                self._maybe_send_stats()
                self.stop_event.wait(IDLE_SECONDS)
                continue
            done = self.drain(ids)
            if done is None:
                # stopping during an outage: the ids stay claimed; the
                # supervisor releases them when we exit
                self.log("info", "stopping with {} claimed payloads unwritten "
                                 "(safe in the buffer)".format(len(ids)))
                break
            self.channel.send(done)
            if self.channel.expect(ipc.MARKED) is None:
                return 0
            self.last_stats_sent = self.clock()
            if len(ids) < self.config.batch_size and not done.get("held"):
                if self.stop_event.wait(FILL_SECONDS):
                    break
            if done.get("held") and self.breaker is not None:
                # the breaker is open: the held rows are pending again; retry later
                if self.stop_event.wait(self.breaker.delay()):
                    break
        self.log("info", "worker {} stopped".format(self.config.worker_id))
        return 0

    def _maybe_prune_ledger(self, low_water):
        """Now and then, drop ledger rows of ids the buffer has finished with."""
        if low_water is None or self.writer is None:
            return
        now = self.clock()
        if self.last_prune is not None and now - self.last_prune < LEDGER_PRUNE_EVERY:
            return
        self.last_prune = now
        try:
            n = self.writer.prune_ledger(int(low_water))
        except Exception as e:
            self.log("warn", "pruning the delivery ledger failed ({}); will retry".format(
                describe_error(e)))
            return
        if n:
            self.log("info", "pruned {} delivery ledger rows below id {}".format(n, low_water))

    def drain(self, ids):
        """Write one claimed batch; the ``done`` message, or None when stopping."""
        rows = self.reader.read(ids)
        if self.faults is not None:
            self.faults.claimed(rows)
        found = set(i for (i, _p) in rows)
        missing = [i for i in ids if i not in found]
        if missing:
            self.log("warn", "{} claimed ids are not in the buffer; reporting them "
                             "drained".format(len(missing)))
        self.current_batch += 1
        result = self._write_with_retry(rows)
        if result is None:
            return None
        self.commits += 1
        if self.faults is not None:
            self.faults.committed(self.commits)
        quarantined = list(result.quarantined or ())
        held, requeue = [], []
        if self.breaker is not None:
            quarantined, held, requeue = self._settle(result, quarantined)
        result = result._replace(quarantined=quarantined) if hasattr(result, "_replace") \
            else result
        self._record(result, len(rows) - len(held))
        quarantined = [[int(i), str(reason)] for (i, reason) in quarantined]
        q_ids = set(i for (i, _r) in quarantined)
        drained = set(int(i) for i in (result.drained or ()))
        drained.update(missing)
        drained.difference_update(q_ids)
        drained.difference_update(held)
        # every id we wrote is either drained, quarantined or held back (pending again)
        for i in found:
            if i not in drained and i not in q_ids and i not in held:
                drained.add(i)
        done = {"op": ipc.DONE, "drained": sorted(drained), "quarantined": quarantined,
                "stats": self.snapshot()}
        if held or requeue:
            done["held"] = held
            done["requeue"] = requeue
        return done

    def _settle(self, result, quarantined):
        """The breaker's say on this batch: (quarantined, held, requeue)."""
        was_open = set((b["sqlstate"], b["table"]) for b in self.breaker.state())
        quarantined, held, requeue = self.breaker.settle(
            result.drained or (), quarantined, getattr(result, "held", None) or (),
            getattr(result, "rows_by_table", None) or {})
        now_open = set((b["sqlstate"], b["table"]) for b in self.breaker.state())
        for sqlstate, table in sorted(now_open - was_open):
            self.log("error", "quarantine breaker OPEN: payloads keep failing with SQLSTATE {} "
                              "on {}; the drain stops quarantining them, keeps them pending and "
                              "retries with backoff ({} requeued)".format(
                                  sqlstate, table, len(requeue)))
        for sqlstate, table in sorted(was_open - now_open):
            self.log("info", "quarantine breaker closed: SQLSTATE {} on {} cleared; draining "
                             "resumes".format(sqlstate, table))
        if held and now_open:
            self.log("warn", "held {} payloads back (breaker open); retrying in about "
                             "{:.0f} s".format(len(held), self.breaker.delay()))
        return quarantined, held, requeue

    def _write_with_retry(self, rows):
        attempt = 0
        while True:
            delay = self.backoff(attempt)
            try:
                if self.writer is None:
                    self.writer = self.writer_factory()
                result = self.writer.write(rows)
            except self.unavailable as e:
                attempt += 1
                self._failed(e, attempt, delay, outage=True)
            except Exception as e:
                attempt += 1
                self._failed(e, attempt, delay, outage=False)
                self._discard_writer()
            else:
                if attempt:
                    self.log("info", "postgres write succeeded again after {} failed "
                                     "attempts".format(attempt))
                return result
            self._maybe_send_stats()
            if self.stop_event.wait(delay):
                return None

    def _failed(self, error, attempt, delay, outage):
        self.counters.failures += 1
        cause = describe_error(error)
        self.status["last_error"] = cause
        self.status["last_error_at"] = time.time()  # /status: how long ago (it outlives recovery)
        if outage:
            self.status["pg_reachable"] = False
        elif getattr(error, "sqlstate", None):
            # Postgres answered and refuses every batch (schema missing, permission
            # denied ...): not an outage; /status shows it as critical until it clears
            from nightowl import pgerrors
            self.status["pg_reachable"] = True
            self.status["blocked"] = {"kind": pgerrors.kind(error.sqlstate),
                                     "sqlstate": error.sqlstate,
                                     "table": getattr(error, "table", None), "error": cause}
        if attempt & (attempt - 1) == 0:   # 1, 2, 4, 8 ...: doublings only
            self.log("error", "{} writing a batch of {} (attempt {}, retrying the same rows "
                              "in {:.1f} s): {}".format(
                                  "postgres unavailable" if outage else
                                  "postgres refused" if getattr(error, "sqlstate", None)
                                  else "unexpected error",
                                  "payloads", attempt, delay, describe_error(error)))

    def _discard_writer(self):
        writer, self.writer = self.writer, None
        close = getattr(writer, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                pass


def _count(value):
    """Skipped records: a count, a {reason: count} dict or a list."""
    if not value:
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return sum(int(v) for v in value.values())
    return len(value)


def describe_error(error):
    """
    One line: the cause's label, SQLSTATE and the first line of the message
    (nightowl.pgerrors: data values cut off, so no customer data).
    """
    cause = getattr(error, "cause", None)
    if cause:
        return str(cause)
    from nightowl import pgerrors
    return pgerrors.describe(error)


if __name__ == "__main__":
    from nightowl.drain import process
    process.run()
