"""
The drain IPC messages (docs/design.rst, "Drain worker IPC") and the one
typed statistics record, ``WorkerStats``.

One JSON object per line on the worker's fd 0 (supervisor -> worker) and
fd 1 (worker -> supervisor).  Pure functions and data, shared by both sides.

``WorkerStats`` is every counter a worker reports, from the batch result
(``nightowl.drain.worker``) over this pipe to the supervisor (which keeps the
totals across worker restarts) and on to /status and Prometheus.  Each field
names its Prometheus metric and help in ``field(metadata=...)`` (``metric``
None: shown in /status only, not exported); adding a counter means adding one
field here (and its test).
"""

import dataclasses

import orjson

# worker -> supervisor
HELLO = "hello"
CLAIM = "claim"
DONE = "done"
STATS = "stats"
HEARTBEAT = "heartbeat"   # every few seconds from a thread: "not frozen"
REPORT = "report"    # the maintenance child's outcome: {"op": "report", "error": "<one line>"}
# supervisor -> worker
CLAIMED = "claimed"
MARKED = "marked"
STOP = "stop"

#: the longest line either side accepts (a claim of 100,000 ids fits easily)
MAX_LINE = 1024 * 1024


class ProtocolError(ValueError):
    """A line that is not one JSON object with a string ``op``."""


def encode(message):
    """One message as one line of bytes."""
    return orjson.dumps(message) + b"\n"


def decode(line):
    """Parse one line (with or without its newline) into a message dict."""
    try:
        message = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise ProtocolError("not JSON: {}".format(e.__class__.__name__))
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise ProtocolError("not an object with a string op")
    return message


def _counter(metric, help, status=None):
    """A counter field: ``metric``/``help`` name its Prometheus counter (None:
    /status only), ``status`` its /status key when that is not the field name."""
    meta = {"metric": metric, "help": help}
    if status:
        meta["status"] = status
    return dataclasses.field(default=0, metadata=meta)


@dataclasses.dataclass
class WorkerStats:
    """The counters of one worker process (or, added up, of several)."""

    batches: int = _counter("nightowl_drain_batches_total", "Batches committed to Postgres.")
    payloads: int = _counter("nightowl_drain_payloads_total", "Payloads written to Postgres.")
    records: int = _counter(None, "Records decoded from the payloads written.")
    rows: int = _counter("nightowl_drain_rows_total", "Table rows written to Postgres.")
    quarantined: int = _counter("nightowl_drain_quarantined_total",
                                "Payloads the drain quarantined.")
    skipped: int = _counter(None, "Records skipped as unusable (bad shape or type).")
    ledger_skipped: int = _counter(
        "nightowl_drain_ledger_skipped_total",
        "Payloads found already committed by the delivery ledger (retries after a crash).")
    failures: int = _counter("nightowl_drain_batches_failed_total", "Batch attempts that failed.",
                             status="batches_failed")
    rows_by_table: dict = dataclasses.field(
        default_factory=dict, metadata={"metric": "nightowl_drain_table_rows_total",
                                        "help": "Table rows written, by table.",
                                        "label": "table"})

    def __add__(self, other):
        out = {}
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, dict):
                merged = dict(a)
                for key, n in b.items():
                    merged[key] = merged.get(key, 0) + n
                out[f.name] = merged
            else:
                out[f.name] = a + b
        return WorkerStats(**out)

    def as_dict(self):
        """The counters as the ``stats`` part of a message (copies, never shared)."""
        return dataclasses.asdict(self)

    def updated(self, message):
        """
        A copy with the counters present in a worker's ``stats`` dict;
        anything absent or not a count keeps its value here.
        """
        changes = {}
        for f in dataclasses.fields(self):
            value = message.get(f.name)
            if isinstance(getattr(self, f.name), dict):
                if isinstance(value, dict):
                    changes[f.name] = {str(k): int(n) for k, n in value.items()
                                       if isinstance(n, int) and not isinstance(n, bool)}
            elif isinstance(value, int) and not isinstance(value, bool):
                changes[f.name] = value
        return dataclasses.replace(self, **changes)
