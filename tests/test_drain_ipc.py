"""
The drain's typed statistics record (nightowl.drain.ipc.WorkerStats) and
its way from a batch result to the supervisor's totals across restarts.
"""

import dataclasses
from types import SimpleNamespace

import pytest

from nightowl.drain import ipc
from nightowl.drain.worker import batch_stats


#: today's Prometheus names and help of the worker counters (health.METRICS)
EXPORTED = {
    "nightowl_drain_payloads_total": "Payloads written to Postgres.",
    "nightowl_drain_rows_total": "Table rows written to Postgres.",
    "nightowl_drain_table_rows_total": "Table rows written, by table.",
    "nightowl_drain_batches_total": "Batches committed to Postgres.",
    "nightowl_drain_batches_failed_total": "Batch attempts that failed.",
    "nightowl_drain_quarantined_total": "Payloads the drain quarantined.",
    "nightowl_drain_ledger_skipped_total":
        "Payloads found already committed by the delivery ledger (retries after a crash).",
}


def test_every_counter_names_its_metric_and_help():
    fields = dataclasses.fields(ipc.WorkerStats)
    assert [f.name for f in fields] == ["batches", "payloads", "records", "rows", "quarantined",
                                        "skipped", "ledger_skipped", "failures",
                                        "rows_by_table"]
    for f in fields:
        assert f.metadata["help"]
    metrics = {f.metadata["metric"]: f.metadata["help"] for f in fields
               if f.metadata["metric"] is not None}
    assert metrics == EXPORTED
    assert [f.name for f in fields if f.metadata["metric"] is None] == ["records", "skipped"]
    assert ipc.WorkerStats.__dataclass_fields__["rows_by_table"].metadata["label"] == "table"


def test_batch_stats_from_a_batch_result():
    result = SimpleNamespace(drained=[1, 2], quarantined=[(3, "22P02")], records=11,
                             rows_by_table={"nightowl_requests": 4, "nightowl_queries": 6},
                             skipped={"bad-type": 2, "no-timestamp": 1}, ledger_skipped=1)
    stats = batch_stats(result, 3)
    assert stats == ipc.WorkerStats(batches=1, payloads=3, records=11, rows=10, quarantined=1,
                                    skipped=3, ledger_skipped=1, failures=0,
                                    rows_by_table={"nightowl_requests": 4,
                                                   "nightowl_queries": 6})


def test_add_merges_tables_and_shares_nothing():
    a = ipc.WorkerStats(payloads=2, rows=5, rows_by_table={"t": 5})
    b = ipc.WorkerStats(payloads=1, failures=4, rows_by_table={"t": 1, "u": 2})
    total = a + b
    assert (total.payloads, total.rows, total.failures) == (3, 5, 4)
    assert total.rows_by_table == {"t": 6, "u": 2}
    total.rows_by_table["t"] = 0
    assert a.rows_by_table == {"t": 5}


def test_updated_takes_only_present_counts():
    start = ipc.WorkerStats(payloads=7, rows=9)
    out = start.updated({"payloads": 10, "rows": "lots", "failures": True, "pid": 4,
                         "rows_by_table": {"t": 3, "u": "x"}})
    assert out == ipc.WorkerStats(payloads=10, rows=9, rows_by_table={"t": 3})
    assert start.payloads == 7


def test_round_trip_through_a_message_line():
    stats = ipc.WorkerStats(batches=2, payloads=5, rows_by_table={"t": 1})
    line = ipc.encode({"op": ipc.STATS, "stats": stats.as_dict()})
    message = ipc.decode(line)
    assert ipc.WorkerStats().updated(message["stats"]) == stats


def test_decode_refuses_what_is_not_a_message():
    for line in (b"[1]", b"{\"op\": 3}", b"not json"):
        with pytest.raises(ipc.ProtocolError):
            ipc.decode(line)
