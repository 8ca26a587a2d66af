"""
The Prometheus exposition of /metrics: the metric table (README documents
every name) and a collector that reads the health snapshot at scrape time.

The drain counters are not listed by hand: each field of the statistics
dataclass (``nightowl.drain.ipc.WorkerStats``) that carries
``metadata={"metric": name, "help": text}`` is one counter (a dict field is
labelled by ``metadata["label"]``), so a new counter is one field.
"""

import dataclasses

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from nightowl.drain.ipc import WorkerStats
from nightowl.health.rules import evaluate

STATUS_CODES = {"healthy": 0, "degraded": 1, "critical": 2}

#: (name, type, help) of the metrics before and after the drain counters
_BEFORE = [
    ("nightowl_info", "gauge", "Always 1; the version label says which nightowl runs."),
    ("nightowl_health_status", "gauge", "0 healthy, 1 degraded, 2 critical."),
    ("nightowl_health_reason", "gauge", "1 for each active reason, labelled code and level."),
    ("nightowl_uptime_seconds", "gauge", "Seconds since the agent started."),
    ("nightowl_ingest_accepted_total", "counter", "Payloads acknowledged with 2:OK."),
    ("nightowl_ingest_accepted_bytes_total", "counter", "Bytes of acknowledged payloads."),
    ("nightowl_ingest_rejected_total", "counter", "Frames refused, by reason."),
    ("nightowl_ingest_pings_total", "counter", "PING frames answered."),
    ("nightowl_ingest_connections_open", "gauge", "Ingest connections open now."),
    ("nightowl_ingest_inflight_bytes", "gauge", "Bytes held by connections in flight."),
    ("nightowl_buffer_pending_rows", "gauge", "Payload rows waiting to be drained."),
    ("nightowl_buffer_claimed_rows", "gauge", "Payload rows claimed by drain workers."),
    ("nightowl_buffer_quarantined_rows", "gauge", "Payload rows Postgres refused."),
    ("nightowl_buffer_drained_kept_rows", "gauge", "Drained rows kept for the safety window."),
    ("nightowl_buffer_queued_operations", "gauge", "Operations waiting for the writer thread."),
    ("nightowl_buffer_oldest_pending_age_seconds", "gauge", "Age of the oldest pending row."),
    ("nightowl_buffer_file_bytes", "gauge", "Size of the SQLite file."),
    ("nightowl_buffer_wal_bytes", "gauge", "Size of the SQLite WAL file."),
    ("nightowl_buffer_back_pressure", "gauge", "1 while new payloads are refused."),
    ("nightowl_buffer_writer_up", "gauge", "1 while the writer thread runs."),
    ("nightowl_buffer_writer_unanswered_seconds", "gauge",
     "How long the writer has left the current probe unanswered (0 when idle)."),
    ("nightowl_buffer_write_errors_total", "counter", "Failed buffer transactions."),
    ("nightowl_buffer_commits_total", "counter", "Committed buffer transactions."),
    ("nightowl_buffer_last_commit_age_seconds", "gauge", "Seconds since the last commit."),
]

_AFTER = [
    ("nightowl_drain_payload_rate", "gauge", "Payloads drained per second, last minute."),
    ("nightowl_drain_lag_seconds", "gauge", "Age of the oldest pending payload."),
    ("nightowl_drain_postgres_up", "gauge",
     "1 reachable, 0 unreachable, -1 unknown (no worker has tried yet or no DSN)."),
    ("nightowl_drain_workers_configured", "gauge", "drain-workers."),
    ("nightowl_worker_up", "gauge", "1 while drain worker N runs."),
    ("nightowl_worker_restarts_total", "counter", "Restarts of drain worker N."),
    ("nightowl_alert_deliveries", "gauge",
     "Alert deliveries by channel and state (pending, failed = retrying, sent, dead, digested)."),
    ("nightowl_alert_sends_total", "counter", "Alert sends by this agent, by result (ok, failed)."),
    ("nightowl_forward_backlog_rows", "gauge", "Frames waiting to be forwarded (--forward)."),
    ("nightowl_forward_backlog_bytes", "gauge", "Bytes of the frames waiting to be forwarded."),
    ("nightowl_forward_upstream_up", "gauge",
     "1 the --forward upstream answers, 0 down, -1 unknown (nothing sent yet)."),
    ("nightowl_forward_forwarded_total", "counter", "Frames the upstream answered 2:OK."),
    ("nightowl_forward_dropped_total", "counter",
     "Oldest forwards dropped past --forward-max-rows / --forward-max-bytes."),
    ("nightowl_forward_rejected_total", "counter",
     "Upstream replies other than 2:OK (the frame is retried, then given up)."),
    ("nightowl_forward_given_up_total", "counter",
     "Frames given up after repeated replies other than 2:OK."),
    ("nightowl_forward_failures_total", "counter",
     "Sends that failed: refused, timed out, closed without a reply (retried)."),
    ("nightowl_process_resident_memory_bytes", "gauge", "RSS of the agent process."),
    ("nightowl_process_threads", "gauge", "Threads of the agent process."),
]

def stat_metrics(stats_type):
    """(name, type, help, field) of every field of ``stats_type`` that names a metric."""
    return [(f.metadata["metric"], f.metadata.get("type", "counter"), f.metadata["help"], f)
            for f in dataclasses.fields(stats_type) if f.metadata.get("metric")]


def metric_table(stats_type):
    """(name, type, help) of every metric /metrics exposes with ``stats_type``."""
    return _BEFORE + [row[:3] for row in stat_metrics(stats_type)] + _AFTER


#: (name, type, help): every metric /metrics exposes; README documents them.
METRICS = metric_table(WorkerStats)


def _family(kind, name, help, value, labels=None, samples=()):
    cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
    fam = cls(name, help, labels=labels)
    if labels is None:
        fam.add_metric([], (0 if value is None else value) if kind == "gauge" else value or 0)
    for label_values, v in samples:
        fam.add_metric(label_values, v)
    return fam


class Collector:
    """
    Reads a snapshot at scrape time.  ``snapshot``: ``() -> (document, now)``
    (the /status figures without status and reasons); ``stats_type``: the
    drain's statistics dataclass.
    """

    def __init__(self, snapshot, stats_type=WorkerStats):
        self._snapshot = snapshot
        self.stats_type = stats_type
        self.helps = dict((name, text) for (name, _t, text) in metric_table(stats_type))

    def describe(self):
        return []

    def gauge(self, name, value, labels=None, samples=()):
        return _family("gauge", name, self.helps[name], value, labels, samples)

    def counter(self, name, value, labels=None, samples=()):
        return _family("counter", name, self.helps[name], value, labels, samples)

    def drain_counters(self, drain):
        """One family per metric field of the statistics dataclass, from /status ``drain``."""
        for name, kind, help, field in stat_metrics(self.stats_type):
            value = drain.get(field.metadata.get("status", field.name))
            if isinstance(value, dict):
                yield _family(kind, name, help, None, [field.metadata.get("label", "key")],
                              [([str(k)], n) for k, n in sorted(value.items())])
            else:
                yield _family(kind, name, help, value)

    def collect(self):
        snap, now = self._snapshot()
        status, reasons = evaluate(snap, now)
        gauge, counter = self.gauge, self.counter
        ing, buf, drain, proc = snap["ingest"], snap["buffer"], snap["drain"], snap["process"]
        yield gauge("nightowl_info", None, ["version"], [([snap["version"]], 1)])
        yield gauge("nightowl_health_status", STATUS_CODES[status])
        yield gauge("nightowl_health_reason", None, ["code", "level"],
                    [([r["code"], r["level"]], 1) for r in reasons])
        yield gauge("nightowl_uptime_seconds", snap["uptime_seconds"])
        yield counter("nightowl_ingest_accepted_total", ing["accepted"])
        yield counter("nightowl_ingest_accepted_bytes_total", ing["accepted_bytes"])
        yield counter("nightowl_ingest_rejected_total", None, ["reason"],
                      [([k], v) for k, v in sorted(ing["rejected"].items())])
        yield counter("nightowl_ingest_pings_total", ing["pings"])
        yield gauge("nightowl_ingest_connections_open", ing["connections_open"])
        yield gauge("nightowl_ingest_inflight_bytes", ing["inflight_bytes"])
        yield gauge("nightowl_buffer_pending_rows", buf["pending"])
        yield gauge("nightowl_buffer_claimed_rows", buf["claimed"])
        yield gauge("nightowl_buffer_quarantined_rows", buf["quarantined"])
        yield gauge("nightowl_buffer_drained_kept_rows", buf["drained_kept"])
        yield gauge("nightowl_buffer_queued_operations", buf["queued"])
        yield gauge("nightowl_buffer_oldest_pending_age_seconds",
                    buf["oldest_pending_age_seconds"])
        yield gauge("nightowl_buffer_file_bytes", buf["file_bytes"])
        yield gauge("nightowl_buffer_wal_bytes", buf["wal_bytes"])
        yield gauge("nightowl_buffer_back_pressure", 1 if buf["back_pressure"] else 0)
        yield gauge("nightowl_buffer_writer_up", 1 if buf["writer_alive"] else 0)
        yield gauge("nightowl_buffer_writer_unanswered_seconds",
                    buf["writer_unanswered_seconds"])
        yield counter("nightowl_buffer_write_errors_total", buf["write_errors"])
        yield counter("nightowl_buffer_commits_total", buf["commits"])
        yield gauge("nightowl_buffer_last_commit_age_seconds",
                    -1 if buf["last_commit_age_seconds"] is None
                    else buf["last_commit_age_seconds"])
        yield from self.drain_counters(drain)
        yield gauge("nightowl_drain_payload_rate", drain["payload_rate"])
        yield gauge("nightowl_drain_lag_seconds", drain["lag_seconds"])
        up = drain["postgres_reachable"]
        yield gauge("nightowl_drain_postgres_up", -1 if up is None else int(bool(up)))
        yield gauge("nightowl_drain_workers_configured", drain["workers_configured"])
        yield gauge("nightowl_worker_up", None, ["worker"],
                    [([str(w["worker"])], 1 if w["alive"] else 0) for w in snap["workers"]])
        yield counter("nightowl_worker_restarts_total", None, ["worker"],
                      [([str(w["worker"])], w["restarts"]) for w in snap["workers"]])
        alerts = snap.get("alerts") or {}
        yield gauge("nightowl_alert_deliveries", None, ["channel", "state"], [
            ([name, state], n) for name, figures in sorted((alerts.get("channels") or {}).items())
            for state, n in sorted(figures.items())])
        yield counter("nightowl_alert_sends_total", None, ["result"], [
            (["ok"], alerts.get("sends_ok", 0)), (["failed"], alerts.get("sends_failed", 0))])
        yield from forward_families(self, snap)
        yield gauge("nightowl_process_resident_memory_bytes", proc["rss_bytes"])
        yield gauge("nightowl_process_threads", proc["threads"])


def forward_families(collector, snap):
    """The ``nightowl_forward_*`` families, from /status ``forward`` (--forward only)."""
    fwd = snap.get("forward")
    if fwd is None:
        return
    up = fwd["upstream_up"]
    yield collector.gauge("nightowl_forward_backlog_rows", fwd["backlog_rows"])
    yield collector.gauge("nightowl_forward_backlog_bytes", fwd["backlog_bytes"])
    yield collector.gauge("nightowl_forward_upstream_up", -1 if up is None else int(bool(up)))
    for key in ("forwarded", "dropped", "rejected", "given_up", "failures"):
        yield collector.counter("nightowl_forward_{}_total".format(key), fwd[key])


def make_registry(snapshot, stats_type=WorkerStats):
    """A registry of its own (not the global one) holding one L{Collector}."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(snapshot, stats_type))
    return registry
