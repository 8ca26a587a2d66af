"""
/status and /metrics of several ingest processes, as pure functions.

``aggregate`` folds the children's /status documents into one document of
the same shape (so ``nightowl status`` and scripts read it unchanged):
``ingest``, ``buffer`` and ``drain`` hold totals, ``workers`` lists every
child's workers (each with its ``process``), ``reasons`` carry the
children's reasons prefixed with the process, and ``ingest_processes``
holds one section per child with its own whole document.

``merge_metrics`` folds the children's Prometheus texts into one exposition
with a ``process`` label on every sample (one HELP/TYPE per family).
"""

STATUS_ORDER = ("healthy", "degraded", "critical")

_INGEST_SUMS = ("accepted", "accepted_bytes", "rejected_total", "accept_rate", "reject_rate",
                "connections_open", "inflight_bytes", "pings")
_BUFFER_SUMS = ("pending", "claimed", "quarantined", "drained_kept", "queued", "file_bytes",
                "wal_bytes", "appended", "commits", "write_errors", "max_pending")
_BUFFER_MAX = ("oldest_pending_age_seconds", "last_commit_age_seconds",
               "writer_unanswered_seconds")
_DRAIN_SUMS = ("payloads", "rows", "records", "batches", "batches_failed", "quarantined",
               "skipped", "ledger_skipped", "payload_rate", "row_rate", "workers_configured")
_FORWARD_SUMS = ("backlog_rows", "backlog_bytes", "max_rows", "max_bytes", "forwarded",
                 "forwarded_bytes", "dropped", "dropped_bytes", "rejected", "given_up",
                 "failures", "inflight", "max_inflight")


def _sum(docs, section, keys):
    out = {}
    for key in keys:
        values = [(d.get(section) or {}).get(key) for d in docs]
        out[key] = round(sum(v for v in values if isinstance(v, (int, float))
                             and not isinstance(v, bool)), 3)
    return out


def _max(docs, section, keys):
    out = {}
    for key in keys:
        values = [(d.get(section) or {}).get(key) for d in docs]
        values = [v for v in values if isinstance(v, (int, float))]
        out[key] = max(values) if values else None
    return out


def _all(values):
    values = [v for v in values if v is not None]
    return all(values) if values else None


def _counter_sum(docs, section, key):
    total = {}
    for d in docs:
        for k, v in ((d.get(section) or {}).get(key) or {}).items():
            total[k] = total.get(k, 0) + (v or 0)
    return total


def aggregate(children, docs, version, uptime, process):
    """
    ``children``: L{IngestParent.children} rows; ``docs``: index -> the
    child's /status document (missing when it did not answer).
    """
    reasons = []
    worst = 0
    for child in children:
        doc = docs.get(child["index"])
        if doc is None:
            worst = max(worst, 1)
            reasons.append({
                "code": "INGEST_PROCESS_DOWN", "level": "degraded", "process": child["index"],
                "message": "ingest process {} is {} (restarts {})".format(
                    child["index"], child["state"], child["restarts"])})
            continue
        status = doc.get("status")
        worst = max(worst, STATUS_ORDER.index(status) if status in STATUS_ORDER else 2)
        for r in doc.get("reasons") or ():
            r = dict(r)
            r["process"] = child["index"]
            r["message"] = "ingest process {}: {}".format(child["index"], r.get("message"))
            reasons.append(r)
    if children and not docs:
        worst = 2
    present = [docs[c["index"]] for c in children if c["index"] in docs]

    ingest = _sum(present, "ingest", _INGEST_SUMS)
    ingest["rejected"] = _counter_sum(present, "ingest", "rejected")
    buffer = _sum(present, "buffer", _BUFFER_SUMS)
    buffer.update(_max(present, "buffer", _BUFFER_MAX))
    buffer["back_pressure"] = any((d.get("buffer") or {}).get("back_pressure") for d in present)
    buffer["writer_alive"] = bool(present) and all(
        (d.get("buffer") or {}).get("writer_alive") for d in present)
    buffer["paths"] = [c["buffer"] for c in children]
    drains = [d.get("drain") or {} for d in present]
    drain = _sum(present, "drain", _DRAIN_SUMS)
    drain["rows_by_table"] = _counter_sum(present, "drain", "rows_by_table")
    drain.update({
        "enabled": any(x.get("enabled") for x in drains),
        "dsn_configured": any(x.get("dsn_configured") for x in drains),
        "postgres_reachable": _all(x.get("postgres_reachable") for x in drains),
        "migrated": _all(x.get("migrated") for x in drains),
        "lag_seconds": max([x.get("lag_seconds") or 0 for x in drains] or [0]),
        "last_error": next((x["last_error"] for x in drains if x.get("last_error")), None),
        "mode": drains[0].get("mode") if drains else None,
        "blocked": [b for x in drains for b in (x.get("blocked") or ())],
        "breaker": [b for x in drains for b in (x.get("breaker") or ())],
    })
    workers = []
    for child in children:
        for w in (docs.get(child["index"]) or {}).get("workers") or ():
            w = dict(w)
            w["process"] = child["index"]
            workers.append(w)
    sections = []
    for child in children:
        section = dict(child)
        section["status"] = (docs.get(child["index"]) or {}).get("status")
        section["document"] = docs.get(child["index"])
        sections.append(section)
    out = {
        "status": STATUS_ORDER[worst], "reasons": reasons, "version": version,
        "uptime_seconds": round(uptime, 3),
        "ingest": ingest, "buffer": buffer, "drain": drain, "workers": workers,
        "process": process,
        "ingest_processes": {
            "configured": len(children),
            "running": sum(1 for c in children if c["state"] == "running"),
            "children": sections,
        },
    }
    forwards = [d["forward"] for d in present if d.get("forward") is not None]
    if forwards:    # --forward: each child forwards its own buffer
        out["forward"] = _sum(present, "forward", _FORWARD_SUMS)
        ups = [f.get("upstream_up") for f in forwards if f.get("upstream_up") is not None]
        out["forward"].update({
            "target": forwards[0].get("target"),
            "upstream_up": all(ups) if ups else None,
            "down_seconds": max(f.get("down_seconds") or 0 for f in forwards),
            "last_error": next((f["last_error"] for f in forwards if f.get("last_error")),
                               None),
        })
    alerts = next((d["alerts"] for d in present if d.get("alerts") is not None), None)
    if alerts is not None:
        out["alerts"] = alerts
    return out


def merge_metrics(texts, children):
    """
    One Prometheus exposition from ``texts`` (index -> a child's /metrics
    text): every sample gets ``process="<index>"``; the parent adds
    ``nightowl_ingest_process_up`` and ``nightowl_ingest_process_restarts``.
    """
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.parser import text_string_to_metric_families
    families = {}
    for index in sorted(texts):
        for fam in text_string_to_metric_families(texts[index]):
            merged = families.get(fam.name)
            if merged is None:
                merged = families[fam.name] = Metric(fam.name, fam.documentation, fam.type)
            for s in fam.samples:
                labels = dict(s.labels)
                labels["process"] = str(index)
                merged.add_sample(s.name, labels, s.value)
    up = GaugeMetricFamily("nightowl_ingest_process_up",
                           "1 while the ingest process runs and accepts.", labels=["process"])
    restarts = CounterMetricFamily("nightowl_ingest_process_restarts",
                                   "Restarts of the ingest process by the parent.",
                                   labels=["process"])
    for c in children:
        up.add_metric([str(c["index"])], 1 if c["state"] == "running" else 0)
        restarts.add_metric([str(c["index"])], c["restarts"])
    configured = GaugeMetricFamily("nightowl_ingest_processes_configured",
                                   "Ingest processes the agent runs (--ingest-processes).",
                                   value=len(children))
    return list(families.values()) + [configured, up, restarts]


def render_metrics(families):
    from prometheus_client import CollectorRegistry, generate_latest

    class _Fixed:
        def collect(self):
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed())
    return generate_latest(registry)
