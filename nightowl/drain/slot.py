"""
What the supervisor knows about drain worker N across its restarts: the
running process, its claim, its restart backoff and its counters (the
current process's ``WorkerStats`` and those its predecessors carried).
"""

from twisted.application.internet import backoffPolicy

from nightowl.drain import ipc


def doubling(initial, maximum):
    """``backoffPolicy`` doubling from ``initial`` to ``maximum``, without jitter."""
    return backoffPolicy(initialDelay=initial, maxDelay=maximum, factor=2.0,
                         jitter=lambda: 0.0)


class Slot:
    def __init__(self, worker_id):
        self.worker_id = worker_id
        self.proto = None
        self.started_at = None
        self.delay = None          # the last respawn delay, None until a crash
        self.crashes = 0           # quick crashes in a row: the respawn backoff attempt
        self.restarts = 0
        self.respawn_call = None
        self.inflight = set()      # Deferreds of buffer operations for this worker
        self.claim = ()            # ids of the claim handed out and not yet reported
        self.carried = ipc.WorkerStats()   # counters of this slot's earlier processes
        self.current = ipc.WorkerStats()   # the current process's last reported counters

    def stats(self):
        """This worker's counters across its restarts."""
        return self.carried + self.current

    def reported(self, message):
        """The current process sent its counters (from 0 at its start); the totals."""
        self.current = self.current.updated(message)
        return self.stats()

    def carry(self):
        """The process ended: what it counted is carried into the next one's totals."""
        self.carried, self.current = self.stats(), ipc.WorkerStats()

    def crashed(self, stable, backoff):
        """Count a restart; the delay doubles per quick crash and resets once it was stable."""
        if stable or self.delay is None:
            self.crashes = 0
        else:
            self.crashes += 1
        self.delay = backoff(self.crashes)
        self.restarts += 1
