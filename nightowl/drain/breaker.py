"""
The quarantine circuit breaker: a systematic data error stops the drain
instead of setting the stream aside payload after payload.

Quarantine is for the odd poison payload: ``pgwrite`` bisects a batch that
Postgres refuses with a data error (SQLSTATE classes 21, 22, 23, 54) down to
the payload alone and quarantines it.  When a new SDK version sends a value
that overflows a column in *every* request, that would quarantine the whole
stream with only a warning.  The breaker tells the two apart:

* **Opens** when ``THRESHOLD`` (5) distinct payloads were quarantined with the
  same ``(SQLSTATE, table)`` within ``WINDOW`` (10 minutes) with no row
  written to that table in between.  A table that still takes rows has a
  sporadic problem; one that takes none has a systematic one.
* **While open** a batch failing with that key is not bisected: it is *held*,
  its rows go back to pending (never quarantined), and the payloads this
  breaker had already quarantined for the key are requeued.  The worker
  waits ``PROBE_BACKOFF`` (``backoffPolicy``: 1 s doubling to 30 s) before its
  next claim, so the held rows are retried periodically.  ``/status`` is
  critical (``quarantine-breaker``), naming the table and the SQLSTATE.
* **Closes** by itself once a batch is written without that error (the cause
  was fixed: a migration, an ``ALTER TABLE``, a new version): everything held
  drains, nothing was lost and nothing needs ``nightowl buffer requeue``.
  It also closes when the table takes rows in a batch that had the error:
  then the problem is sporadic, and bisecting quarantines the few culprits.

Each drain worker keeps its own breaker (no shared state): with N workers at
most N x THRESHOLD payloads are quarantined before every breaker is open, and
all of them are requeued.  Pure logic, no I/O; ``clock`` is a parameter.
"""

import time

from twisted.application.internet import backoffPolicy

THRESHOLD = 5
WINDOW = 600.0
PROBE_BACKOFF = backoffPolicy(initialDelay=1.0, maxDelay=30.0, factor=2.0)


def key_of(reason):
    """``"22001 nightowl_requests"`` (a quarantine reason) -> (sqlstate, table), or None."""
    sqlstate, _, table = str(reason).partition(" ")
    if len(sqlstate) != 5 or not table:
        return None   # e.g. "invalid-json": poison by definition, never systematic
    return sqlstate, table


class QuarantineBreaker:

    def __init__(self, threshold=THRESHOLD, window=WINDOW, clock=time.monotonic,
                 backoff=PROBE_BACKOFF):
        self.threshold = threshold
        self.window = window
        self.clock = clock
        self.backoff = backoff
        self.suspects = {}     # key -> {payload id: time quarantined}
        self.requeued = {}     # key -> ids already handed back for requeue
        self.opened = {}       # key -> {"since": time, "held": payloads held so far}
        self.failed = set()    # keys that failed in the current batch
        self.attempt = 0       # consecutive batches that held rows

    # -- during a batch (called by pgwrite.BatchWriter) ----------------------

    def holds(self, sqlstate, table):
        """Is a sub-batch failing with this error to be held rather than bisected?"""
        key = (sqlstate, table)
        if key in self.opened:
            self.failed.add(key)
            return True
        return False

    def quarantined(self, sqlstate, table, payload_id):
        """A payload alone failed with this error and was quarantined."""
        key = (sqlstate, table)
        self.failed.add(key)
        now = self.clock()
        seen = self.suspects.setdefault(key, {})
        seen[payload_id] = now
        for i in [i for i, t in seen.items() if now - t > self.window]:
            del seen[i]
        if len(seen) >= self.threshold and key not in self.opened:
            self.opened[key] = {"since": now, "held": 0}

    # -- after a batch (called by the worker) ---------------------------------

    def settle(self, drained, quarantined, held, rows_by_table):
        """
        Sort a written batch's outcome.  Returns ``(quarantined, held,
        requeue)``: quarantine reasons to mark, ids to put back to pending,
        ids quarantined earlier to requeue.
        """
        failed, self.failed = self.failed, set()
        # 1. a table that took rows in this batch has a sporadic problem, not a
        #    systematic one: forget its suspects and close its keys (what was
        #    quarantined stays quarantined, what was held is retried and bisected)
        written = set(t for t, n in (rows_by_table or {}).items() if n)
        for key in list(self.suspects) + list(self.opened):
            if key[1] in written:
                self.suspects.pop(key, None)
                self.requeued.pop(key, None)
                self.opened.pop(key, None)
        # 2. a batch went through without the error: the cause is gone
        for key in list(self.opened):
            if key not in failed and drained:
                del self.opened[key]
                self.requeued.pop(key, None)
        # 3. still open: this batch's quarantines of that key are held instead
        held = list(held)
        keep = []
        for item in quarantined:
            key = key_of(item[1])
            if key is not None and key in self.opened:
                held.append(item[0])
            else:
                keep.append(item)
        # 4. ... and the ones quarantined before are requeued, once
        batch = set(held)
        requeue = []
        for key in self.opened:
            done = self.requeued.setdefault(key, set())
            for i in self.suspects.get(key, {}):
                if i not in done:
                    done.add(i)
                    if i not in batch:
                        requeue.append(i)
            if key in failed:
                self.opened[key]["held"] += len(held)
        self.attempt = self.attempt + 1 if held else 0
        return keep, sorted(held), sorted(requeue)

    def delay(self):
        """Seconds to wait before the next claim after a batch that held rows."""
        return self.backoff(max(0, self.attempt - 1))

    def state(self):
        """For /status: one entry per open key."""
        now = self.clock()
        return [{"sqlstate": s, "table": t, "open_seconds": round(now - v["since"], 3),
                 "held": v["held"], "threshold": self.threshold}
                for (s, t), v in sorted(self.opened.items())]
