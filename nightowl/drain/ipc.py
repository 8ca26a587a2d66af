"""
The drain IPC line format (docs/design.rst, "Drain worker IPC").

One JSON object per line on the worker's fd 0 (supervisor -> worker) and
fd 1 (worker -> supervisor).  Pure functions, shared by both sides.
"""

import collections
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


def _counter(metric=None, help=None, status=None):
    meta = {}
    if metric:
        meta.update(metric=metric, help=help)
    if status:
        meta["status"] = status
    return dataclasses.field(default=0, metadata=meta)


@dataclasses.dataclass
class WorkerStats:
    """
    A drain worker's counters (one process, or carried across restarts).
    ``metadata``: ``metric``/``help`` name its Prometheus counter, ``label``
    the label of a dict field, ``status`` its /status key when not the name.
    """

    payloads: int = _counter("nightowl_drain_payloads_total", "Payloads written to Postgres.")
    rows: int = _counter("nightowl_drain_rows_total", "Table rows written to Postgres.")
    rows_by_table: dict = dataclasses.field(default_factory=dict, metadata={
        "metric": "nightowl_drain_table_rows_total", "help": "Table rows written, by table.",
        "label": "table"})
    batches: int = _counter("nightowl_drain_batches_total", "Batches committed to Postgres.")
    failures: int = _counter("nightowl_drain_batches_failed_total", "Batch attempts that failed.",
                             status="batches_failed")
    quarantined: int = _counter("nightowl_drain_quarantined_total",
                                "Payloads the drain quarantined.")
    ledger_skipped: int = _counter(
        "nightowl_drain_ledger_skipped_total",
        "Payloads found already committed by the delivery ledger (retries after a crash).")
    records: int = _counter()
    skipped: int = _counter()

    @classmethod
    def from_counters(cls, counters):
        """From a stats message (unknown keys ignored, bad values as 0)."""
        values = {}
        for f in dataclasses.fields(cls):
            value = counters.get(f.name)
            if f.name == "rows_by_table":
                values[f.name] = {str(k): int(n or 0) for k, n in (value or {}).items()}
            else:
                values[f.name] = value if isinstance(value, int) else 0
        return cls(**values)

    @classmethod
    def sum(cls, many):
        total = cls()
        tables = collections.Counter()
        for stats in many:
            for f in dataclasses.fields(cls):
                if f.name == "rows_by_table":
                    tables.update(stats.rows_by_table)
                else:
                    setattr(total, f.name, getattr(total, f.name) + getattr(stats, f.name))
        total.rows_by_table = dict(tables)
        return total
