"""
What stops the drain, as ``/status`` shows it: the figures gathered from the
workers' reports and the rules that turn them into reasons.

Postgres answering but refusing every batch is not an outage: a missing
schema (SQLSTATE 42P01 and friends), a denied privilege (42501) or another
refusal keeps every payload in the buffer until an operator acts, so each is
``critical`` and names the SQLSTATE and the table.  So is an open quarantine
breaker (nightowl.drain.breaker).  An unreachable Postgres stays the
``postgres-unreachable`` warning of nightowl.health.

These reasons are about the drain: the agent still accepts and commits, so
``/healthz`` (for load balancers) ignores them (``DRAIN_CODES``).
Pure functions of the snapshot.
"""

from nightowl import pgerrors

DRAIN_CODES = frozenset(("schema-missing", "permission-denied", "postgres-refused",
                         "quarantine-breaker"))


def gather(worker_metrics):
    """
    From the running workers' metrics dicts: ``{"blocked": the latest
    refusal or None, "breaker": [open breaker keys]}``.
    """
    blocked, latest = None, -1.0
    breaker = {}
    for m in worker_metrics:
        if not m.get("alive"):
            continue
        updated = m.get("updated_at") or 0.0
        if isinstance(m.get("blocked"), dict) and updated >= latest:
            blocked, latest = dict(m["blocked"]), updated
        for entry in m.get("breaker") or ():
            key = (entry.get("sqlstate"), entry.get("table"))
            if key not in breaker or entry.get("held", 0) > breaker[key].get("held", 0):
                breaker[key] = dict(entry)
    return {"blocked": blocked, "breaker": [breaker[k] for k in sorted(breaker, key=str)]}


def reasons(drain):
    """[(code, level, message)] for a /status ``drain`` section."""
    out = []
    blocked = drain.get("blocked")
    if blocked:
        kind = blocked.get("kind")
        where = "SQLSTATE {} on {}".format(blocked.get("sqlstate"), blocked.get("table"))
        if kind == pgerrors.SCHEMA_MISSING:
            migration = drain.get("migration_error")
            out.append(("schema-missing", "critical",
                        "the drain cannot write, the schema is missing ({}): {}; payloads "
                        "wait in the buffer; the agent retries its migration{} (or run "
                        "`nightowl migrate`)".format(
                            where, blocked.get("error"),
                            ", which failed: " + migration if migration else "")))
        elif kind == pgerrors.PERMISSION_DENIED:
            out.append(("permission-denied", "critical",
                        "PostgreSQL denies the drain's role ({}): {}; payloads wait in the "
                        "buffer; grant the privilege and the drain resumes by itself".format(
                            where, blocked.get("error"))))
        else:
            out.append(("postgres-refused", "critical",
                        "PostgreSQL refuses every batch ({}): {}; payloads wait in the "
                        "buffer".format(where, blocked.get("error"))))
    for entry in drain.get("breaker") or ():
        out.append(("quarantine-breaker", "critical",
                    "payloads keep failing with SQLSTATE {} on {}: the drain stopped "
                    "quarantining them ({} threshold reached); {} held so far stay pending "
                    "and are retried with backoff; fix the cause (a migration, ALTER TABLE, "
                    "a new version) and the drain resumes by itself".format(
                        entry.get("sqlstate"), entry.get("table"), entry.get("threshold"),
                        entry.get("held", 0))))
    return out
