"""DeriveService against a real PostgreSQL: a pass every interval derives the
drain's pending hours; a failing pass is logged and the loop goes on."""

import uuid

import orjson
import psycopg2
import pytest
from twisted.internet import reactor as global_reactor
from twisted.trial import unittest

from nightowl import migrate
from nightowl.pgwrite import BatchWriter
from nightowl.rollups.service import DeriveService, derive_once
from tests.conftest import fetch


@pytest.fixture
def db(fresh_pg_dsn):
    migrate.apply(fresh_pg_dsn)
    return fresh_pg_dsn


def test_derive_once_derives_the_pending_hours(db):
    recs = [{"t": "log", "level": "info", "timestamp": 1714694400 + i} for i in range(10)]
    w = BatchWriter(db, "production", str(uuid.uuid4()), clock=lambda: 1714694500.0)
    w.write([(1, orjson.dumps(recs))])
    w.close()
    assert fetch(db, "SELECT count(*) FROM nightowl_rollups_hour")[0][0] == 0
    assert derive_once(db) == 1
    assert fetch(db, "SELECT sum(count) FROM nightowl_rollups_hour")[0][0] == 10
    assert fetch(db, "SELECT sum(count) FROM nightowl_rollups_day")[0][0] == 10


class DeriveServiceTests(unittest.TestCase):
    def test_a_failing_pass_is_logged_and_the_loop_goes_on(self):
        calls = []

        def flaky(dsn):
            calls.append(dsn)
            if len(calls) == 1:
                raise psycopg2.OperationalError("connection refused")
            return 2
        svc = DeriveService("dbname=x", reactor=global_reactor, every=0.05, derive=flaky)
        svc.startService()
        self.addCleanup(lambda: svc.stopService() if svc.running else None)
        d = svc.run_once()

        def first(result):
            self.assertIsNone(result)
            self.assertTrue(svc._failing)
            self.assertEqual(len(self.flushLoggedErrors()), 0)
            return svc.run_once()

        def second(result):
            self.assertEqual(result, 2)
            self.assertEqual(svc.last, 2)
            self.assertFalse(svc._failing)
            return svc.stopService()
        return d.addCallback(first).addCallback(second)
