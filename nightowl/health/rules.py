"""
The health rules (README: "What /status means"), as one pure function.

L{evaluate} turns a /status snapshot and the time ``now`` into
``(status, reasons)``.  No I/O, no clock of its own.
"""

from nightowl.drain import conditions

LAG_DEGRADED = 60.0         # oldest pending payload older than this: degraded
STALL_AFTER = 30.0          # writer has not answered a probe for this long: critical
WRITE_ERROR_WINDOW = 60.0   # a buffer write error this recent: critical
CRASH_LOOP_WINDOW = 600.0   # restarts counted over this window ...
CRASH_LOOP_RESTARTS = 3     # ... this many or more: a crash loop (degraded)
FORWARD_DOWN_AFTER = 60.0   # the --forward upstream unreachable this long: degraded

LEVELS = ("critical", "warning", "info")


def evaluate(snapshot, now):
    """
    The health rules, as a pure function of a /status snapshot (without
    ``status``/``reasons``) and the time ``now`` (same clock as the
    snapshot's timestamps).  Returns ``(status, reasons)``; each reason is
    ``{"code", "level", "message"}``.  ``critical`` if any reason is
    critical, ``degraded`` if any is a warning, ``healthy`` otherwise
    (info reasons never change the status).
    """
    reasons = []

    def add(code, level, message):
        reasons.append({"code": code, "level": level, "message": message})

    buf = snapshot.get("buffer") or {}
    drain = snapshot.get("drain") or {}

    # critical: the agent cannot accept and commit
    if buf.get("writer_alive") is False:
        add("writer-dead", "critical",
            "the buffer writer thread is not running: payloads cannot be committed")
    since = buf.get("probe_outstanding_since")
    if since is not None and now - since >= STALL_AFTER:
        add("writer-stalled", "critical",
            "the buffer writer has not answered for {:.0f} s (disk stalled or a "
            "transaction stuck)".format(now - since))
    seen = buf.get("last_write_error_seen_at")
    if seen is not None and now - seen < WRITE_ERROR_WINDOW:
        add("write-errors", "critical",
            "a buffer write failed in the last {:.0f} s: {}".format(
                WRITE_ERROR_WINDOW, buf.get("last_error") or "unknown error"))
    if buf.get("back_pressure"):
        add("back-pressure", "critical",
            "refusing new payloads: {} rows pending (limit {}) or the writer queue is "
            "full".format(buf.get("pending", 0) + buf.get("claimed", 0),
                          buf.get("max_pending")))

    draining = bool(drain.get("enabled"))
    if not drain.get("dsn_configured"):
        add("drain-disabled", "info",
            "no DSN configured: payloads stay in the buffer (set --dsn / NIGHTOWL_DSN)")
    elif not drain.get("workers_configured"):
        add("drain-disabled", "info", "drain-workers is 0: draining is disabled")

    # degraded
    age = buf.get("oldest_pending_age_seconds")
    if draining and age is not None and age > LAG_DEGRADED:
        add("drain-lag", "warning",
            "the oldest pending payload is {:.0f} s old (over {:.0f} s): the drain is "
            "behind or stopped".format(age, LAG_DEGRADED))
    if draining and drain.get("postgres_reachable") is False:
        add("postgres-unreachable", "warning",
            "PostgreSQL is unreachable ({}); payloads wait in the buffer".format(
                drain.get("last_error") or "connection failed"))
    if draining:
        for code, level, message in conditions.reasons(drain):
            add(code, level, message)
    for worker in snapshot.get("workers") or ():
        frozen = worker.get("frozen_at")
        if frozen is not None and now - frozen < CRASH_LOOP_WINDOW:
            add("worker-frozen", "warning",
                "drain worker {} sent nothing past its heartbeat timeout {:.0f} s ago and was "
                "killed (stopped or wedged); its claim was released".format(
                    worker.get("worker"), now - frozen))
        recent = [t for t in worker.get("restart_times") or () if now - t < CRASH_LOOP_WINDOW]
        if len(recent) >= CRASH_LOOP_RESTARTS:
            add("worker-crash-loop", "warning",
                "drain worker {} restarted {} times in the last {:.0f} min".format(
                    worker.get("worker"), len(recent), CRASH_LOOP_WINDOW / 60))
    skew = (snapshot.get("retention") or {}).get("clock_skew_seconds")
    if skew is not None:
        add("clock-skew", "warning",
            "this host's clock is {:+.0f} s off the database's: retention drops nothing "
            "until they agree (fix NTP)".format(skew))
    fwd = snapshot.get("forward") or {}
    down = fwd.get("down_seconds") or 0
    if fwd.get("upstream_up") is False and down >= FORWARD_DOWN_AFTER:
        add("forward-down", "warning",
            "the --forward upstream {} has been unreachable for {:.0f} s ({}): {} payloads "
            "wait for it (bound {} rows), {} dropped; the Postgres copy is not affected".format(
                fwd.get("target") or "?", down, fwd.get("last_error") or "no answer",
                fwd.get("backlog_rows", 0), fwd.get("max_rows"), fwd.get("dropped", 0)))
    if (buf.get("quarantined") or 0) > 0:
        add("quarantined", "warning",
            "{} payloads are quarantined (Postgres refused them); see `nightowl buffer "
            "inspect`, fix, then `nightowl buffer requeue`".format(buf["quarantined"]))

    levels = set(r["level"] for r in reasons)
    if "critical" in levels:
        status = "critical"
    elif "warning" in levels:
        status = "degraded"
    else:
        status = "healthy"
    return status, reasons


def healthz(reasons):
    """
    ``(ok, reason)`` for /healthz: can the agent accept and commit payloads?
    The drain's own blocks (conditions.DRAIN_CODES) do not stop that.
    """
    critical = [r for r in reasons if r["level"] == "critical"
                and r["code"] not in conditions.DRAIN_CODES]
    if critical:
        return False, "; ".join("{}: {}".format(r["code"], r["message"]) for r in critical)
    return True, "ok"
