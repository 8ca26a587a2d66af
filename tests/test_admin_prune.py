"""
``nightowl prune`` through ``nightowl.cli.main``: its usage errors in one
line (the password masked), then expired partitions and each rollup tier's
retention on real Postgres.
"""

import datetime

import psycopg2
import pytest

from nightowl import cli, migrate, partitions
from nightowl.bench.agent import free_port
from tests.admin_support import one_line

pytestmark = pytest.mark.usefixtures("clean_env")


def test_prune_without_dsn(capsys):
    assert cli.main(["prune"]) == 1
    assert one_line(capsys.readouterr().err) == (
        "nightowl prune: no DSN: pass --dsn or set NIGHTOWL_DSN")


def test_prune_bad_dsn_masks_the_password(capsys):
    port = free_port()
    assert cli.main(["prune", "--dsn", "host=127.0.0.1 port={} user=u password=hunter2 "
                     "dbname=x connect_timeout=2".format(port)]) == 1
    err = one_line(capsys.readouterr().err)
    assert err.startswith("nightowl prune: cannot connect to host=127.0.0.1")
    assert "hunter2" not in err and "password=***" in err


def test_prune_bad_retention(capsys):
    assert cli.main(["prune", "--dsn", "x", "--retention-days", "0"]) == 2
    assert "must be greater than 0" in one_line(capsys.readouterr().err)


def test_prune_drops_expired_partitions(fresh_pg_dsn, capsys):
    conn = psycopg2.connect(fresh_pg_dsn)
    try:
        migrate.apply(conn, partitions=False)
        now = datetime.datetime.now(datetime.timezone.utc)
        old = partitions.ensure_partitions(conn, now=now - datetime.timedelta(days=20),
                                           days_behind=0, days_ahead=0)
        recent = partitions.ensure_partitions(conn, now=now, days_behind=0, days_ahead=0)
    finally:
        conn.close()
    assert old and recent
    assert cli.main(["prune", "--dsn", fresh_pg_dsn, "--retention-days", "7"]) == 0
    out = capsys.readouterr().out
    assert sorted(line.split()[1] for line in out.splitlines()
                  if line.startswith("dropped ")) == sorted(old)
    conn = psycopg2.connect(fresh_pg_dsn)
    try:
        cur = conn.cursor()
        cur.execute("SELECT count(*) FROM pg_class WHERE relname = ANY(%s)", (old,))
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT count(*) FROM pg_class WHERE relname = ANY(%s)", (recent,))
        assert cur.fetchone()[0] == len(recent)
    finally:
        conn.close()
    assert cli.main(["prune", "--dsn", fresh_pg_dsn, "--retention-days", "7"]) == 0
    assert "nothing older than 7 days to drop" in capsys.readouterr().out


def test_prune_applies_each_rollup_tier_retention(fresh_pg_dsn, capsys):
    migrate.apply(fresh_pg_dsn)
    conn = psycopg2.connect(fresh_pg_dsn)
    cur = conn.cursor()
    for tier in ("minute", "hour", "day"):
        # 8 days, 100 days and 800 days old: each just past one tier's default
        cur.execute("INSERT INTO nightowl_rollups_{} (bucket, kind, environment, group_key, "
                    "count) SELECT now() - make_interval(days => d), 'log', 'p', 'k' || d, 1 "
                    "FROM unnest(ARRAY[1, 8, 100, 800]) d".format(tier))
    conn.commit()
    assert cli.main(["prune", "--dsn", fresh_pg_dsn]) == 0
    assert ("rollups deleted: 3 minute rows (older than 7 days), 2 hour rows (older than 90 "
            "days), 1 day rows (older than 730 days)") in capsys.readouterr().out
    kept = {}
    for tier in ("minute", "hour", "day"):
        cur.execute("SELECT group_key FROM nightowl_rollups_{} ORDER BY 1".format(tier))
        kept[tier] = [k for (k,) in cur.fetchall()]
    assert kept == {"minute": ["k1"], "hour": ["k1", "k8"], "day": ["k1", "k100", "k8"]}
    conn.close()
    assert cli.main(["prune", "--dsn", fresh_pg_dsn, "--rollup-retention-days", "0"]) == 2
    assert "--rollup-retention-days: must be greater than 0" in capsys.readouterr().err
