"""
Frozen drain workers: heard nothing for too long, so kill them.

A worker stopped by SIGSTOP (or wedged in a kernel call, or swapped to
death) while holding a claim used to be invisible: alive to the process
table, silent on its pipe, its claim held forever.  Every worker sends a
heartbeat line every ``HEARTBEAT_EVERY`` seconds from its own thread, and
every other message counts too.  L{Watchdog} remembers when each worker
was last heard; the supervisor asks it every few seconds which ones have
been silent longer than the timeout, reports them (``/status``
``worker-frozen``), and kills them (SIGKILL works on a stopped process).
The supervisor then releases the claim as for any dead worker; the
delivery ledger makes sure rows the frozen worker already committed are
not written twice.

Pure bookkeeping: times are given by the caller (reactor.seconds()).
"""

HEARTBEAT_EVERY = 2.0
DEFAULT_TIMEOUT = 60.0


class Watchdog:
    def __init__(self, timeout=DEFAULT_TIMEOUT):
        self.timeout = timeout
        self._heard = {}
        self.killed = 0

    def heard(self, worker_id, now):
        self._heard[worker_id] = now

    def forget(self, worker_id):
        self._heard.pop(worker_id, None)

    def silent(self, now):
        """``[(worker_id, seconds silent)]`` for every worker past the timeout."""
        return [(w, now - t) for w, t in sorted(self._heard.items())
                if now - t > self.timeout]

    def silence(self, worker_id, now):
        t = self._heard.get(worker_id)
        return None if t is None else round(now - t, 3)
