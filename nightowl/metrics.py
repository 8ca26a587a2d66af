"""
In-process figures shared by ingest, buffer, drain and health.

Plain attributes and dicts, touched only on the reactor thread (the writer
thread reports through ``callFromThread``), so no locks.  health.py turns
them into /status JSON and Prometheus metrics.
"""

import collections


class RateWindow:
    """Events per second over the last ``span`` seconds, in 1 s buckets."""

    def __init__(self, span=60):
        self.span = span
        self._buckets = collections.deque()

    def add(self, now, count=1):
        second = int(now)
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += count
        else:
            self._buckets.append([second, count])
        self._trim(second)

    def _trim(self, second):
        while self._buckets and self._buckets[0][0] <= second - self.span:
            self._buckets.popleft()

    def rate(self, now):
        self._trim(int(now))
        return sum(c for _, c in self._buckets) / float(self.span)


class Metrics:
    """The agent's counters. One instance per agent, passed to every service."""

    def __init__(self, clock):
        self.clock = clock
        self.started = clock.seconds()
        # ingest
        self.accepted = 0            # payloads acknowledged with 2:OK after commit
        self.accepted_bytes = 0
        self.pings = 0
        self.rejected = collections.Counter()   # reason -> count (every 5:ERROR or silent close)
        self.accept_rate = RateWindow()
        self.reject_rate = RateWindow()
        self.connections_open = 0
        self.inflight_bytes = 0
        # drain (filled by the supervisor from worker stats)
        self.drain = {}
        # alerts (the dispatcher's status(), refreshed each round; None: no dispatcher)
        self.alerts = None

    def accept(self, nbytes):
        self.accepted += 1
        self.accepted_bytes += nbytes
        self.accept_rate.add(self.clock.seconds())

    def reject(self, reason):
        self.rejected[reason] += 1
        self.reject_rate.add(self.clock.seconds())
