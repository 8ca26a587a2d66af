"""
The alert dispatcher on a database the drain has not migrated, or not even
created, yet (a fresh machine's first start, the README's run command): it
waits, logging at info rather than error, and works once the schema is
there; past the grace, a missing database is an error once.  Real Postgres.
"""

import uuid

import psycopg2
from twisted.internet import defer, reactor, task, threads
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest

from nightowl.alerts import dispatcher as dispatcher_mod
from nightowl.alerts.dispatcher import AlertDispatcher
from tests.conftest import ADMIN_DSN, _admin, create_database, drop_database
from tests.integration import alertkit as kit


def absent_dsn():
    """(name, dsn) of a database that does not exist (yet)."""
    name = "nightowl_t_" + uuid.uuid4().hex[:12]
    dsn = ADMIN_DSN.replace("dbname=postgres", "dbname=" + name)
    return name, dsn if "dbname=" + name in dsn else ADMIN_DSN + " dbname=" + name


class FreshDatabaseTests(unittest.TestCase):
    timeout = 120

    def setUp(self):
        name, self.dsn = create_database()   # empty: no nightowl tables
        self.addCleanup(drop_database, name)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lines(self, level):
        return [e for e in self.events if e.get("log_namespace", "").startswith(
            "nightowl.alerts.dispatcher") and e.get("log_level") is not None
            and e["log_level"].name == level]

    @defer.inlineCallbacks
    def failing(self, dsn, what):
        """A dispatcher on ``dsn``, once its first round has failed (no error logged)."""
        d = AlertDispatcher(dsn, reactor=reactor, poll_interval=0.1, retry_initial=0.2,
                            retry_max=0.5, stats_every=0.0)
        d.startService()
        self.addCleanup(lambda: d.running and d.stopService())
        yield kit.eventually(reactor, lambda: d.figures["last_error"] is not None, what=what)
        self.assertEqual(self.lines("error"), [])
        return d

    @defer.inlineCallbacks
    def runs(self, d, what):
        """``d`` has a successful round, and nothing was logged as an error."""
        yield kit.eventually(reactor, lambda: d.channels_read_at is not None, what=what)
        self.assertIsNone(d.figures["last_error"])
        self.assertEqual(self.lines("error"), [])

    @defer.inlineCallbacks
    def test_waits_for_the_schema_without_an_error_then_runs(self):
        d = yield self.failing(self.dsn, "a failed round on the empty database")
        self.assertIn("nightowl_alert_channels", d.figures["last_error"])
        self.assertTrue([e for e in self.lines("info") if "wait for the schema"
                         in e.get("log_format", "")])
        yield threads.deferToThread(kit.migrated, self.dsn)   # what the drain's boot does
        yield self.runs(d, "a round after the migration")

    @defer.inlineCallbacks
    def test_waits_for_the_database_the_drain_creates(self):
        name, dsn = absent_dsn()
        self.addCleanup(drop_database, name)
        d = yield self.failing(dsn, "a failed round before the database exists")
        self.assertIn("does not exist", d.figures["last_error"])

        def create():
            conn = _admin()
            try:
                conn.cursor().execute("CREATE DATABASE " + name)
            finally:
                conn.close()
            kit.migrated(dsn)
        yield threads.deferToThread(create)
        yield self.runs(d, "a round once the database is there")


class GraceTests(unittest.TestCase):
    """Past SCHEMA_GRACE a missing database is a wrong --dsn, not a boot: one error."""

    def test_a_database_still_missing_after_the_grace_is_an_error_once(self):
        _admin().close()    # Postgres is up (else one clear line), so the error is 3D000
        clock = task.Clock()
        d = AlertDispatcher("dbname=none", reactor=clock)
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        try:
            psycopg2.connect(absent_dsn()[1])
        except psycopg2.OperationalError as e:
            failure = Failure(e)

        def levels():
            return [e["log_level"].name for e in events
                    if e.get("log_namespace", "").startswith("nightowl.alerts.dispatcher")]
        d._round_failed(failure)
        d._round_failed(failure)
        self.assertEqual(levels(), ["info"])
        clock.advance(dispatcher_mod.SCHEMA_GRACE + 1)
        d._round_failed(failure)
        d._round_failed(failure)
        self.assertEqual(levels(), ["info", "error"])
