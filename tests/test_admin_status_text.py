"""
``nightowl status``'s text for an agent with several ingest processes and
--forward: a line per ingest process, each drain worker named with its
process, the forward backlog and the alerts, from a /status document shaped
like the agent's (nightowl.multiproc.status, nightowl.health).
"""

from nightowl.admin.status import summary

DOC = {
    "status": "degraded", "version": "0.1.0", "uptime_seconds": 73.0,
    "reasons": [{"level": "warning", "code": "forward-down", "message": "upstream down"}],
    "ingest": {"accepted": 500, "accept_rate": 0.0, "rejected": {}, "rejected_total": 0},
    "buffer": {"pending": 0, "file_bytes": 4096, "wal_bytes": 0},
    "drain": {"dsn_configured": True, "workers_configured": 4, "payloads": 500, "rows": 2841,
              "postgres_reachable": True},
    "workers": [{"worker": 0, "process": 0, "pid": 11, "state": "running"},
                {"worker": 0, "process": 1, "pid": 21, "state": "running", "crash_loop": True}],
    "ingest_processes": {"configured": 2, "running": 2, "children": [
        {"index": 0, "pid": 10, "state": "running", "status": "healthy", "restarts": 0,
         "buffer": "/b.sqlite", "document": {"ingest": {"accepted": 238},
                                              "buffer": {"pending": 3}}},
        {"index": 1, "pid": 20, "state": "restarting", "status": None, "restarts": 2,
         "restarts_last_10min": 2, "buffer": "/b.sqlite.1"}]},
    "forward": {"target": "127.0.0.1:2408", "upstream_up": False, "down_seconds": 61.2,
                "backlog_rows": 500, "backlog_bytes": 1722305, "max_rows": 2000000,
                "forwarded": 7, "dropped": 0, "last_error": "connection refused"},
    "alerts": {"enabled": True, "channels_cached": 2, "sends_ok": 5, "sends_failed": 1,
               "last_error": None},
    "process": {"pid": 9, "rss_bytes": 59842560, "threads": 3},
}


def test_several_processes_forward_and_alerts_each_have_their_lines():
    lines = summary(DOC)
    text = "\n".join(lines)
    assert ("ingest process 0 pid 10 running, HEALTHY, restarts 0 (0 in the last 10 min), "
            "accepted 238, pending 3, buffer /b.sqlite") in lines
    assert ("ingest process 1 pid 20 restarting, NO STATUS, restarts 2 (2 in the last 10 min), "
            "accepted ?, pending ?, buffer /b.sqlite.1") in lines
    assert "worker 0 of process 0 pid 11 running" in text
    assert "worker 0 of process 1 pid 21 running, restarts 0 (0 in the last 10 min), CRASH LOOP" \
        in lines
    assert ("forward  to 127.0.0.1:2408: DOWN for 61 s, backlog 500 (1.6 MiB) of 2000000 rows, "
            "forwarded 7, dropped 0, last error connection refused") in lines
    assert "alerts   2 channels, sent 5, failed 1" in lines
    assert lines[-1].startswith("process  pid 9 (the parent), RSS 57")


def test_one_process_without_forward_reads_as_before():
    doc = dict(DOC)
    for key in ("ingest_processes", "forward"):
        doc.pop(key)
    doc["workers"] = [{"worker": 0, "pid": 11, "state": "running"}]
    doc["alerts"] = {"enabled": False}
    lines = summary(doc)
    assert "worker 0 pid 11 running, restarts 0 (0 in the last 10 min)" in lines
    assert not [line for line in lines if line.startswith(("ingest process", "forward"))]
    assert "alerts   off" in lines
    assert lines[-1].startswith("process  pid 9, RSS")
