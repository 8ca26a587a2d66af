"""
The /status figures: one snapshot of ingest, buffer, drain, workers,
process and retention, from the collaborators makeService hands in.

Holds the little history the rules need (drain rates, restart times, when
a write error was first seen, the writer probe's last answer).  The drain's
counters arrive as a statistics dataclass (``WorkerStats``: the supervisor's
``totals()`` and ``worker_stats()``) and are read generically, field by
field, so a new counter needs no change here.
"""

import collections
import dataclasses

import nightowl
from nightowl.drain import conditions
from nightowl.health.procfs import process_figures
from nightowl.health.rules import CRASH_LOOP_RESTARTS, CRASH_LOOP_WINDOW
from nightowl.wire import REASONS

RATE_WINDOW = 60.0          # drain rates are over the last minute

#: the per-worker counters /status shows (status keys of WorkerStats fields)
WORKER_COUNTERS = ("payloads", "rows", "batches", "batches_failed")


def stat_figures(stats):
    """
    ``{status key: value}`` of a statistics dataclass: every field, under
    its ``metadata["status"]`` name when it has one, else its own name.
    """
    if stats is None:
        return {}
    return {f.metadata.get("status", f.name): getattr(stats, f.name)
            for f in dataclasses.fields(stats)}


class Series:
    """(time, value) samples of a counter; the rate over a window."""

    def __init__(self, span):
        self.span = span
        self.samples = collections.deque()

    def add(self, now, value):
        self.samples.append((now, value))
        # keep one sample at or before the window's start as the reference
        while len(self.samples) > 2 and self.samples[1][0] <= now - self.span:
            self.samples.popleft()

    def rate(self, now):
        if len(self.samples) < 2:
            return 0.0
        t0, v0 = self.samples[0]
        t1, v1 = self.samples[-1]
        if t1 - t0 <= 0:
            return 0.0
        return max(0.0, (v1 - v0) / float(t1 - t0))


class Snapshot:
    """
    Builds the /status document (without ``status``/``reasons``).

    ``metrics``: nightowl.metrics.Metrics; ``buffer``: the BufferWriter;
    ``drain``: the DrainSupervisor (``totals()``, ``worker_stats()``,
    ``stopping``, ``migrated``, ``migration_error``); ``retention``: a
    callable ``now -> dict`` for the /status ``retention`` section, or None.
    """

    def __init__(self, *, metrics, buffer, drain, dsn_configured, workers_configured,
                 retention=None, forward=None):
        self.metrics = metrics
        self.forward = forward   # ForwardService.figures with --forward
        self.buffer = buffer
        self.drain = drain
        self.dsn_configured = bool(dsn_configured)
        self.workers_configured = int(workers_configured)
        self.retention = retention
        # the writer probe's last answer (set by the health service)
        self.oldest_pending_age = 0.0
        self.oldest_checked_at = None
        self.probe_since = None
        self.quarantined_counted = None
        self._seen_write_errors = None
        self.last_write_error_seen_at = None
        self._payload_series = Series(RATE_WINDOW)
        self._row_series = Series(RATE_WINDOW)
        self._restarts_seen = {}
        self._restart_times = {}

    def _workers(self):
        return getattr(self.metrics, "drain", None) or {}

    def observe(self, now):
        """Sample the counters whose history matters (rates, restarts, errors)."""
        errors = self.buffer.stats().get("write_errors") or 0
        if self._seen_write_errors is not None and errors > self._seen_write_errors:
            self.last_write_error_seen_at = now
        self._seen_write_errors = errors
        totals = stat_figures(self.drain.totals())
        self._payload_series.add(now, totals.get("payloads", 0))
        self._row_series.add(now, totals.get("rows", 0))
        for worker, m in list(self._workers().items()):
            restarts = int(m.get("restarts") or 0)
            seen = self._restarts_seen.get(worker, 0)
            if restarts > seen:
                times = self._restart_times.setdefault(worker, [])
                times.extend([now] * (restarts - seen))
                del times[:-20]
            self._restarts_seen[worker] = restarts

    def snapshot(self, now, running=True):
        """Every figure of /status except ``status`` and ``reasons``."""
        self.observe(now)
        return {
            "version": nightowl.__version__,
            "uptime_seconds": _round(now - self.metrics.started),
            "ingest": self._ingest(now),
            "buffer": self._buffer(now),
            "drain": self._drain(now),
            "workers": self._worker_list(now, running),
            "process": process_figures(),
            "retention": self.retention(now) if self.retention is not None else None,
            **({"forward": self.forward(now)} if self.forward is not None else {}),
            **({"alerts": self.metrics.alerts}     # only with an alert dispatcher
               if getattr(self.metrics, "alerts", None) is not None else {}),
        }

    def _ingest(self, now):
        metrics = self.metrics
        rejected = dict((reason, 0) for reason in REASONS)
        rejected.update(metrics.rejected)
        return {
            "accepted": metrics.accepted,
            "accepted_bytes": metrics.accepted_bytes,
            "rejected": rejected,
            "rejected_total": sum(rejected.values()),
            "accept_rate": _round(metrics.accept_rate.rate(now)),
            "reject_rate": _round(metrics.reject_rate.rate(now)),
            "connections_open": metrics.connections_open,
            "inflight_bytes": metrics.inflight_bytes,
            "pings": metrics.pings,
        }

    def _oldest(self, stats):
        return self.oldest_pending_age if (stats.get("pending") or 0) else 0.0

    def _buffer(self, now):
        buf = self.buffer
        stats = buf.stats()
        return {
            "path": stats.get("path"),
            "buffer_id": stats.get("buffer_id"),
            "pending": stats.get("pending") or 0,
            "claimed": stats.get("claimed") or 0,
            "quarantined": (self.quarantined_counted if self.quarantined_counted is not None
                            else stats.get("quarantined") or 0),
            "drained_kept": stats.get("drained_kept") or 0,
            "queued": stats.get("queued") or 0,
            "oldest_pending_age_seconds": _round(self._oldest(stats)),
            "oldest_pending_checked_age_seconds": _age(now, self.oldest_checked_at),
            "file_bytes": stats.get("file_bytes") or 0,
            "wal_bytes": stats.get("wal_bytes") or 0,
            "back_pressure": buf.refusal() is not None,
            "max_pending": stats.get("max_pending"),
            "appended": stats.get("appended") or 0,
            "commits": stats.get("commits") or 0,
            "write_errors": stats.get("write_errors") or 0,
            "last_error": stats.get("last_error"),
            "last_write_error_seen_at": self.last_write_error_seen_at,
            "last_commit_age_seconds": _age(buf.clock(), stats.get("last_commit_at")),
            "writer_alive": buf.alive(),
            "probe_outstanding_since": self.probe_since,
            "writer_unanswered_seconds": _age(now, self.probe_since) or 0.0,
        }

    def _drain(self, now):
        workers = self._workers()
        reachable = [bool(m["pg_reachable"]) for m in workers.values()
                     if m.get("alive") and m.get("pg_reachable") is not None]
        last_error = (None, -1.0, None)
        for m in workers.values():
            at = m.get("last_error_at")
            updated = at or m.get("updated_at") or 0.0
            if m.get("last_error") and updated >= last_error[1]:
                last_error = (m["last_error"], updated, at)
        blocking = conditions.gather(workers.values())
        draining = self.dsn_configured and self.workers_configured > 0
        oldest = self._oldest(self.buffer.stats())
        section = {
            "enabled": draining,
            "dsn_configured": self.dsn_configured,
            "workers_configured": self.workers_configured,
        }
        section.update(stat_figures(self.drain.totals()))
        section["rows_by_table"] = dict(section.get("rows_by_table") or {})
        section.update({
            "payload_rate": _round(self._payload_series.rate(now)),
            "row_rate": _round(self._row_series.rate(now)),
            "postgres_reachable": all(reachable) if reachable else None,
            "last_error": last_error[0],
            "last_error_age_seconds": _age(now, last_error[2]),
            "lag_seconds": _round(oldest),
            "migrated": getattr(self.drain, "migrated", None),
            "migration_error": getattr(self.drain, "migration_error", None),
            "mode": ("buffer-only" if not self.dsn_configured else
                     "draining" if draining else "disabled"),
            "blocked": blocking["blocked"],
            "breaker": blocking["breaker"],
        })
        return section

    def _worker_list(self, now, running):
        stopping = bool(getattr(self.drain, "stopping", False))
        per_worker = self.drain.worker_stats()
        out = []
        for worker, m in sorted(self._workers().items(), key=lambda kv: str(kv[0])):
            alive = bool(m.get("alive"))
            restart_times = list(m.get("restart_times") or self._restart_times.get(worker, ()))
            recent = [t for t in restart_times if now - t < CRASH_LOOP_WINDOW]
            if alive:
                state = "running"
            elif stopping or not running:
                state = "stopped"
            else:
                state = "restarting"
            counts = stat_figures(per_worker.get(worker))
            entry = {
                "worker": m.get("worker", worker),
                "pid": m.get("pid"),
                "state": state,
                "alive": alive,
                "restarts": int(m.get("restarts") or 0),
                "restarts_last_10min": len(recent),
                "crash_loop": len(recent) >= CRASH_LOOP_RESTARTS,
                "restart_times": restart_times,
                "exit_code": m.get("exit_code"),
                "exit_signal": m.get("exit_signal"),
            }
            entry.update((key, counts.get(key, 0)) for key in WORKER_COUNTERS)
            entry.update({
                "postgres_reachable": m.get("pg_reachable"),
                "last_error": m.get("last_error"),
                "blocked": m.get("blocked"),
                "breaker": list(m.get("breaker") or ()),
                "seconds_since_success": m.get("seconds_since_success"),
                "frozen_at": m.get("frozen_at"),
                "frozen_count": m.get("frozen_count", 0),
            })
            out.append(entry)
        return out


def _round(value, digits=3):
    return None if value is None else round(float(value), digits)


def _age(now, then):
    if then is None:
        return None
    return round(max(0.0, now - then), 3)
