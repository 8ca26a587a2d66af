"""
The drain worker process's setup (nightowl.drain.process).
"""

from nightowl.drain import process


def test_worker_lowers_its_priority(monkeypatch):
    calls = []
    monkeypatch.setattr(process.os, "nice", lambda n: calls.append(n) or n)
    logged = []
    process._lower_priority({}, lambda level, msg: logged.append(msg))
    process._lower_priority({"NIGHTOWL_WORKER_NICE": "0"}, lambda level, msg: None)
    process._lower_priority({"NIGHTOWL_WORKER_NICE": "12"}, lambda level, msg: None)
    assert calls == [process.DEFAULT_NICE, 12]
