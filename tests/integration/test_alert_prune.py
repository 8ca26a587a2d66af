"""
Retention of the alert history (nightowl.alerts.prune) against real Postgres:
ended alerts older than the window go, pending or unfanned ones never do.
"""

import psycopg2
import pytest

from nightowl import retention
from nightowl.alerts import outbox, prune
from tests.integration import alertkit as kit


@pytest.fixture
def dsn(fresh_pg_dsn):
    kit.migrated(fresh_pg_dsn)
    kit.add_channel(fresh_pg_dsn, "ops", "webhook", {"url": "http://127.0.0.1:1/", "secret": "s"})
    return fresh_pg_dsn


def _fan_out(dsn):
    conn = psycopg2.connect(dsn)
    try:
        return outbox.fan_out(conn)
    finally:
        conn.close()


def _age(dsn, ids, days):
    kit.execute(dsn, "UPDATE nightowl_alert_outbox SET created_at = now() - make_interval("
                     "days => %s) WHERE id = ANY (%s)", days, ids)
    kit.execute(dsn, "UPDATE nightowl_alert_deliveries SET created_at = now() - make_interval("
                     "days => %s) WHERE outbox_id = ANY (%s) OR (kind = 'digest' AND "
                     "outbox_id IS NULL)", days, ids)


def _status(dsn, ids, status):
    kit.execute(dsn, "UPDATE nightowl_alert_deliveries SET status = %s WHERE outbox_id = ANY (%s)",
                status, ids)


def _left(dsn):
    return sorted(r[0] for r in kit.execute(dsn, "SELECT id FROM nightowl_alert_outbox"))


def test_only_ended_old_alerts_are_deleted(dsn):
    sent, dead, pending, recent = (kit.insert_events(dsn, [kit.payload(i)]) for i in range(4))
    assert _fan_out(dsn) == 4
    unfanned = kit.insert_events(dsn, [kit.payload(9)])      # not fanned out yet
    _status(dsn, sent + recent, "sent")
    _status(dsn, dead, "dead")
    _age(dsn, sent + dead + pending + unfanned, 40)
    _age(dsn, recent, 10)
    digest = kit.execute(dsn, "INSERT INTO nightowl_alert_deliveries (channel_id, kind, event, "
                              "payload, status, created_at) SELECT id, 'digest', 'issue.new', "
                              "'{}', 'sent', now() - interval '40 days' FROM "
                              "nightowl_alert_channels RETURNING id")
    conn = psycopg2.connect(dsn)
    try:
        assert prune.prune(conn, 30) == {"alert_outbox": 2, "alert_digests": 1}
        assert prune.prune(conn, 30) == {"alert_outbox": 0, "alert_digests": 0}
    finally:
        conn.close()
    assert _left(dsn) == sorted(pending + recent + unfanned)
    # the deleted alerts' deliveries went with them; the pending one is still due
    left = kit.deliveries(dsn)
    assert sorted((r[5], r[3]) for r in left) == sorted(
        [(pending[0], "pending"), (recent[0], "sent")])
    assert not kit.execute(dsn, "SELECT 1 FROM nightowl_alert_deliveries WHERE id = %s",
                           digest[0][0])


def test_the_retention_sweep_applies_it(dsn):
    ids = kit.insert_events(dsn, [kit.payload(1)])
    _fan_out(dsn)
    _status(dsn, ids, "sent")
    _age(dsn, ids, 8)
    kept = retention.sweep(dsn, 14, ensure=False, alert_days=30)
    assert kept["alerts_pruned"] == {"alert_outbox": 0, "alert_digests": 0}
    assert _left(dsn) == ids
    gone = retention.sweep(dsn, 14, ensure=False, alert_days=7)
    assert gone["alerts_pruned"] == {"alert_outbox": 1, "alert_digests": 0}
    assert _left(dsn) == []


def test_a_database_without_the_alert_tables_is_left_alone(fresh_pg_dsn):
    conn = psycopg2.connect(fresh_pg_dsn)
    try:
        assert prune.prune(conn, 30) == {}
    finally:
        conn.close()
