"""
The mapping, in one place: which SDK record type goes to which raw table and
which JSON key feeds which column through which coercion (``TABLES``).

Every raw table starts with the ``PREFIX`` columns; ``COLUMNS`` (table ->
column order) and ``copy_sql`` are derived from ``TABLES``, as are the
generated encoders (nightowl.records.codegen).  Keys a record carries that
no column takes go, as a JSON object, into ``extra_fields``.
"""

from nightowl.records.coerce import (
    c_bool, c_count, c_float, c_int, c_json, c_json_string, c_text, c_text_notnull, c_uuid)

TEXT, TEXT_NN, INT, COUNT, FLOAT, BOOL, UUID, JSONSTR, JSON = (
    c_text, c_text_notnull, c_int, c_count, c_float, c_bool, c_uuid, c_json_string, c_json)

#: columns every raw table starts with, in order; filled by ``encode_records``
PREFIX = ("created_at", "time_guarded", "timestamp", "v", "environment", "server",
          "deploy", "trace_id", "group_hash", "user_id")
PREFIX_KEYS = ("t", "timestamp", "v", "server", "deploy", "trace_id", "_group", "user")

EXECUTION = (
    ("execution_source", "execution_source", TEXT),
    ("execution_id", "execution_id", UUID),
    ("execution_stage", "execution_stage", TEXT),
    ("execution_preview", "execution_preview", TEXT),
)

COUNTERS = tuple((k, k, COUNT) for k in (
    "exceptions", "logs", "queries", "lazy_loads", "jobs_queued", "mail", "notifications",
    "outgoing_requests", "files_read", "files_written", "cache_events", "hydrated_models",
    "peak_memory_usage")) + (
    ("exception_preview", "exception_preview", TEXT),
    ("context", "context", JSONSTR),
)

JOB = EXECUTION + (
    ("job_id", "job_id", TEXT),
    ("attempt_id", "attempt_id", UUID),
    ("attempt", "attempt", INT),
    ("job_class", "name", TEXT),
    ("connection", "connection", TEXT),
    ("queue", "queue", TEXT),
    ("status", "status", TEXT),
    ("duration", "duration", INT),
) + COUNTERS

#: record type -> (table, ((column, json key, coercion), ...)) after PREFIX
TABLES = {
    "request": ("nightowl_requests", (
        ("method", "method", TEXT),
        ("url", "url", TEXT),
        ("route_name", "route_name", TEXT),
        ("route_methods", "route_methods", JSON),
        ("route_domain", "route_domain", TEXT),
        ("route_path", "route_path", TEXT),
        ("route_action", "route_action", TEXT),
        ("ip", "ip", TEXT),
        ("duration", "duration", INT),
        ("status_code", "status_code", INT),
        ("request_size", "request_size", INT),
        ("response_size", "response_size", INT),
        ("bootstrap", "bootstrap", INT),
        ("before_middleware", "before_middleware", INT),
        ("action", "action", INT),
        ("render", "render", INT),
        ("after_middleware", "after_middleware", INT),
        ("sending", "sending", INT),
        ("terminating", "terminating", INT),
    ) + COUNTERS + (
        ("headers", "headers", JSONSTR),
        ("payload", "payload", JSONSTR),
    )),
    "query": ("nightowl_queries", EXECUTION + (
        ("sql_query", "sql", TEXT_NN),
        ("file", "file", TEXT),
        ("line", "line", INT),
        ("duration", "duration", INT),
        ("connection", "connection", TEXT),
        ("connection_type", "connection_type", TEXT),
    )),
    "exception": ("nightowl_exceptions", EXECUTION + (
        ("class", "class", TEXT),
        ("message", "message", TEXT),
        ("code", "code", TEXT),
        ("file", "file", TEXT),
        ("line", "line", INT),
        ("trace", "trace", JSONSTR),
        ("handled", "handled", BOOL),
        ("php_version", "php_version", TEXT),
        ("laravel_version", "laravel_version", TEXT),
        # fingerprint is derived (see encode_records), appended last
    )),
    "command": ("nightowl_commands", (
        ("class", "class", TEXT),
        ("name", "name", TEXT),
        ("command", "command", TEXT),
        ("exit_code", "exit_code", INT),
        ("duration", "duration", INT),
        ("bootstrap", "bootstrap", INT),
        ("action", "action", INT),
        ("terminating", "terminating", INT),
    ) + COUNTERS),
    "queued-job": ("nightowl_jobs", JOB),
    "job-attempt": ("nightowl_jobs", JOB),
    "cache-event": ("nightowl_cache_events", EXECUTION + (
        ("event_type", "type", TEXT),
        ("key", "key", TEXT),
        ("store", "store", TEXT),
        ("ttl", "ttl", INT),
        ("duration", "duration", INT),
    )),
    "mail": ("nightowl_mail", EXECUTION + (
        ("mailer", "mailer", TEXT),
        ("mailable", "class", TEXT),
        ("subject", "subject", TEXT),
        ("recipients", "to", INT),
        ("cc", "cc", INT),
        ("bcc", "bcc", INT),
        ("attachments", "attachments", INT),
        ("duration", "duration", INT),
        ("failed", "failed", BOOL),
    )),
    "notification": ("nightowl_notifications", EXECUTION + (
        ("notification", "class", TEXT),
        ("channel", "channel", TEXT),
        ("duration", "duration", INT),
        ("failed", "failed", BOOL),
    )),
    "outgoing-request": ("nightowl_outgoing_requests", EXECUTION + (
        ("host", "host", TEXT),
        ("method", "method", TEXT),
        ("url", "url", TEXT),
        ("status_code", "status_code", INT),
        ("duration", "duration", INT),
        ("request_size", "request_size", INT),
        ("response_size", "response_size", INT),
    )),
    "scheduled-task": ("nightowl_scheduled_tasks", (
        ("command", "name", TEXT),
        ("expression", "cron", TEXT),
        ("timezone", "timezone", TEXT),
        ("repeat_seconds", "repeat_seconds", INT),
        ("without_overlapping", "without_overlapping", BOOL),
        ("on_one_server", "on_one_server", BOOL),
        ("run_in_background", "run_in_background", BOOL),
        ("even_in_maintenance_mode", "even_in_maintenance_mode", BOOL),
        ("status", "status", TEXT),
        ("duration", "duration", INT),
    ) + COUNTERS),
    "log": ("nightowl_logs", EXECUTION + (
        ("level", "level", TEXT),
        ("message", "message", TEXT),
        ("context", "context", JSONSTR),
        ("extra", "extra", JSONSTR),
    )),
}

#: every partitioned raw table, in a stable order
RAW_TABLES = tuple(dict.fromkeys(table for table, _ in TABLES.values()))


def _columns(t):
    table, spec = TABLES[t]
    cols = list(PREFIX) + [c for c, _, _ in spec]
    if t in ("queued-job", "job-attempt"):
        cols.append("record_type")
    if t == "exception":
        cols.append("fingerprint")
    cols.append("extra_fields")
    return tuple(cols)


#: table -> column tuple in COPY order (same for both job types)
COLUMNS = {}
for _t in TABLES:
    COLUMNS[TABLES[_t][0]] = _columns(_t)
del _t


def copy_sql(table):
    """The COPY statement of a raw table, its columns in ``COLUMNS`` order."""
    return "COPY {} ({}) FROM STDIN".format(table, ", ".join(COLUMNS[table]))
