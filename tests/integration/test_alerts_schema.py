"""
The alert dispatcher on a database the drain has not migrated yet (a fresh
machine's first start): it waits, logging at info rather than error, and
works once the schema is there.  Real Postgres.
"""

from twisted.internet import defer, reactor, threads
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from nightowl.alerts.dispatcher import AlertDispatcher
from tests.conftest import create_database, drop_database
from tests.integration import alertkit as kit


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
    def test_waits_for_the_schema_without_an_error_then_runs(self):
        d = AlertDispatcher(self.dsn, reactor=reactor, poll_interval=0.1, retry_initial=0.2,
                            retry_max=0.5, stats_every=0.0)
        d.startService()
        self.addCleanup(lambda: d.running and d.stopService())
        yield kit.eventually(reactor, lambda: d.figures["last_error"] is not None,
                             what="a failed round on the empty database")
        self.assertIn("nightowl_alert_channels", d.figures["last_error"])
        self.assertEqual(self.lines("error"), [])
        self.assertTrue([e for e in self.lines("info") if "wait for the schema"
                         in e.get("log_format", "")])
        yield threads.deferToThread(kit.migrated, self.dsn)   # what the drain's boot does
        yield kit.eventually(reactor, lambda: d.channels_read_at is not None,
                             what="a round after the migration")
        self.assertIsNone(d.figures["last_error"])
        self.assertEqual(self.lines("error"), [])
