"""
Every health endpoint of a real agent (twistd on port 0): /status, /metrics
and /healthz, back-pressure and quarantined rows, and a real drain into a
fresh Postgres database.
"""

import json
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nightowl.buffer import schema as nbuffer
from nightowl import wire
from nightowl.bench import payloads
from nightowl.health import prometheus
from tests.health_support import codes
from tests.integration.agent import AgentProcess, send_frame


def get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:{}{}".format(port, path), timeout=10) as r:
            return r.status, r.headers.get("content-type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("content-type"), e.read()


def wait_for(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


@pytest.fixture
def agent(tmp_path):
    a = AgentProcess(str(tmp_path / "buffer.sqlite"), health=True,
                     args=["--health", "tcp:0:interface=127.0.0.1", "--token", "s3cret"]).start()
    wait_for(lambda: a.health_port, what="the health port")
    yield a
    a.kill()


STATUS_FIELDS = {
    "status", "reasons", "version", "uptime_seconds", "ingest", "buffer", "drain", "workers",
    "process", "retention"}


INGEST_FIELDS = {"accepted", "accepted_bytes", "rejected", "rejected_total", "accept_rate",
                 "reject_rate", "connections_open", "inflight_bytes", "pings"}


BUFFER_FIELDS = {"path", "buffer_id", "pending", "claimed", "quarantined", "drained_kept",
                 "queued", "oldest_pending_age_seconds", "oldest_pending_checked_age_seconds",
                 "file_bytes", "wal_bytes", "back_pressure", "max_pending", "appended",
                 "commits", "write_errors", "last_error", "last_write_error_seen_at",
                 "last_commit_age_seconds", "writer_alive", "probe_outstanding_since",
                 "writer_unanswered_seconds"}


DRAIN_FIELDS = {"enabled", "dsn_configured", "workers_configured", "payloads", "rows",
                "records", "rows_by_table", "batches", "batches_failed", "quarantined",
                "skipped", "ledger_skipped", "payload_rate", "row_rate", "postgres_reachable", "last_error",
                "last_error_age_seconds",
                "lag_seconds", "migrated", "migration_error", "mode", "blocked", "breaker"}


def test_status_counts_what_the_agent_did(agent):
    good = wire.encode_frame(payloads.realistic_payload(), token="s3cret")
    for _ in range(3):
        assert send_frame(agent.port, good) == b"2:OK"
    assert send_frame(agent.port, wire.encode_frame(b"[]", token="wrong")) == b"5:ERROR"
    assert send_frame(agent.port, wire.encode_frame(b"PING", token="s3cret")) == b"2:OK"
    code, ctype, body = get(agent.health_port, "/status")
    assert code == 200 and ctype == "application/json"
    doc = json.loads(body)
    assert set(doc) == STATUS_FIELDS
    assert set(doc["ingest"]) == INGEST_FIELDS
    assert set(doc["buffer"]) == BUFFER_FIELDS
    assert set(doc["drain"]) == DRAIN_FIELDS
    assert doc["status"] == "healthy"
    assert doc["reasons"] == [{"code": "drain-disabled", "level": "info", "message":
                               "no DSN configured: payloads stay in the buffer "
                               "(set --dsn / NIGHTOWL_DSN)"}]
    # no --dsn: buffer-only, said in /status and in the startup line
    assert (doc["drain"]["mode"], doc["drain"]["blocked"], doc["drain"]["breaker"]) == (
        "buffer-only", None, [])
    assert "drain off: buffer-only mode, no --dsn / NIGHTOWL_DSN" in agent.log()
    assert doc["version"] == __import__("nightowl").__version__
    ing = doc["ingest"]
    assert ing["accepted"] == 3
    assert ing["accepted_bytes"] == 3 * len(payloads.realistic_payload())
    assert ing["rejected"]["bad-token"] == 1 and ing["rejected_total"] == 1
    assert set(wire.REASONS) <= set(ing["rejected"])
    assert ing["pings"] == 1
    assert ing["accept_rate"] == pytest.approx(3 / 60.0, abs=1e-3)
    assert ing["reject_rate"] == pytest.approx(1 / 60.0, abs=1e-3)
    assert ing["connections_open"] == 0
    buf = doc["buffer"]
    assert buf["pending"] == 3 and buf["claimed"] == 0 and buf["quarantined"] == 0
    assert buf["appended"] == 3
    assert buf["writer_alive"] is True and buf["back_pressure"] is False
    assert buf["write_errors"] == 0 and buf["last_error"] is None
    assert buf["file_bytes"] > 0 and buf["wal_bytes"] > 0
    assert buf["path"] == agent.buffer_path
    assert buf["last_commit_age_seconds"] >= 0
    drain = doc["drain"]
    assert (drain["enabled"], drain["dsn_configured"], drain["payloads"]) == (False, False, 0)
    assert doc["workers"] == []
    assert doc["process"]["rss_bytes"] > 10 * 1024 * 1024
    assert doc["process"]["threads"] >= 2
    assert doc["uptime_seconds"] >= 0
    assert doc["retention"] is None


def test_oldest_pending_age_comes_from_the_writer_probe(agent):
    assert send_frame(agent.port, wire.encode_frame(b"[]", token="s3cret")) == b"2:OK"
    # the probe runs every 5 s; wait for one that saw the row
    doc = wait_for(lambda: (lambda d: d if d["buffer"]["oldest_pending_age_seconds"] > 0
                            else None)(json.loads(get(agent.health_port, "/status")[2])),
                   timeout=15, what="a probe that saw the pending row")
    assert doc["buffer"]["oldest_pending_checked_age_seconds"] is not None
    assert doc["drain"]["lag_seconds"] == doc["buffer"]["oldest_pending_age_seconds"]


EXPECTED_METRICS = {name for (name, _t, _h) in prometheus.METRICS}


def metric_families(port):
    code, ctype, body = get(port, "/metrics")
    assert code == 200 and ctype.startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(body.decode("utf-8"))}


def sample(families, name, **labels):
    family = families[name[:-len("_total")] if name.endswith("_total") else name]
    for s in family.samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise KeyError((name, labels))


def test_metrics_parse_and_carry_the_documented_names(agent):
    assert send_frame(agent.port, wire.encode_frame(b"[]", token="s3cret")) == b"2:OK"
    assert send_frame(agent.port, wire.encode_frame(b"[]", token="nope")) == b"5:ERROR"
    families = metric_families(agent.health_port)
    names = set()
    for family in families.values():
        names.add(family.name + "_total" if family.type == "counter" else family.name)
    assert EXPECTED_METRICS - {"nightowl_worker_up", "nightowl_worker_restarts_total",
                               "nightowl_drain_table_rows_total",
                               "nightowl_health_reason"} - {
        n for n in EXPECTED_METRICS if n.startswith("nightowl_forward_")} <= names  # --forward only
    assert names <= EXPECTED_METRICS
    assert sample(families, "nightowl_ingest_accepted_total") == 1
    assert sample(families, "nightowl_ingest_rejected_total", reason="bad-token") == 1
    assert sample(families, "nightowl_ingest_rejected_total", reason="bad-json") == 0
    assert sample(families, "nightowl_buffer_pending_rows") == 1
    assert sample(families, "nightowl_buffer_back_pressure") == 0
    assert sample(families, "nightowl_buffer_writer_up") == 1
    assert sample(families, "nightowl_health_status") == 0
    assert sample(families, "nightowl_health_reason", code="drain-disabled", level="info") == 1
    assert sample(families, "nightowl_drain_postgres_up") == -1
    assert sample(families, "nightowl_info", version=__import__("nightowl").__version__) == 1
    assert families["nightowl_ingest_accepted"].type == "counter"
    assert families["nightowl_buffer_pending_rows"].type == "gauge"


def test_healthz_ok_and_unknown_paths(agent):
    assert get(agent.health_port, "/healthz")[::2] == (200, b"ok\n")
    assert get(agent.health_port, "/nothing")[0] == 404


def test_back_pressure_makes_healthz_503_and_status_critical(tmp_path):
    a = AgentProcess(str(tmp_path / "b.sqlite"), health=True,
                     args=["--health", "tcp:0:interface=127.0.0.1", "--max-pending", "1"]).start()
    try:
        wait_for(lambda: a.health_port, what="the health port")
        replies = [send_frame(a.port, wire.encode_frame(b"[]")) for _ in range(3)]
        assert replies == [b"2:OK", b"2:OK", b"5:ERROR"]
        code, _ctype, body = get(a.health_port, "/healthz")
        assert code == 503
        assert body.decode().startswith("back-pressure: refusing new payloads: 2 rows pending")
        doc = json.loads(get(a.health_port, "/status")[2])
        assert doc["status"] == "critical"
        assert doc["buffer"]["back_pressure"] is True
        assert doc["ingest"]["rejected"]["back-pressure"] == 1
        assert sample(metric_families(a.health_port), "nightowl_health_status") == 2
    finally:
        a.kill()


def test_quarantined_rows_degrade_a_real_agent(tmp_path):
    path = str(tmp_path / "b.sqlite")
    conn = nbuffer.connect(path)
    nbuffer.buffer_identity(conn)
    nbuffer.add_row(conn, b"[]", state=2, state_at=time.time(), error="DataError (22P02)")
    conn.close()
    a = AgentProcess(path, health=True, args=["--health", "tcp:0:interface=127.0.0.1"]).start()
    try:
        wait_for(lambda: a.health_port, what="the health port")
        doc = json.loads(get(a.health_port, "/status")[2])
        assert doc["status"] == "degraded"
        assert doc["buffer"]["quarantined"] == 1
        assert ("quarantined", "warning") in codes(doc["reasons"])
        assert get(a.health_port, "/healthz")[0] == 200   # degraded still accepts
    finally:
        a.kill()


def test_drain_figures_from_real_workers(tmp_path, fresh_pg_dsn):
    a = AgentProcess(str(tmp_path / "b.sqlite"), health=True,
                     args=["--health", "tcp:0:interface=127.0.0.1", "--drain-workers", "1"],
                     env={"NIGHTOWL_DSN": fresh_pg_dsn}).start()
    try:
        wait_for(lambda: a.health_port, what="the health port")
        for body in payloads.fixture_mix(10):
            assert send_frame(a.port, wire.encode_frame(body)) == b"2:OK"

        def drained():
            doc = json.loads(get(a.health_port, "/status")[2])
            return doc if doc["drain"]["payloads"] >= 10 and doc["buffer"]["pending"] == 0 \
                else None
        try:
            doc = wait_for(drained, timeout=120, what="the drain")
        except AssertionError:
            raise AssertionError("no drain: {}\n{}".format(
                get(a.health_port, "/status")[2].decode(), a.log()))
        assert doc["drain"]["enabled"] is True and doc["drain"]["dsn_configured"] is True
        assert doc["drain"]["postgres_reachable"] is True
        assert doc["drain"]["rows"] > 0 and doc["drain"]["batches"] >= 1
        assert doc["drain"]["batches_failed"] == 0
        [worker] = doc["workers"]
        assert worker["state"] == "running" and worker["pid"] > 0 and worker["restarts"] == 0
        assert doc["retention"]["ensures_partitions"] is False   # the supervisor does
        assert doc["status"] == "healthy", doc["reasons"]
        families = metric_families(a.health_port)
        assert sample(families, "nightowl_drain_payloads_total") >= 10
        assert sample(families, "nightowl_drain_postgres_up") == 1
        assert sample(families, "nightowl_worker_up", worker="0") == 1
    finally:
        a.kill()
