"""
DrainSupervisor's maintenance process: stale claims released, then the
startup migration (retried with backoff until it succeeds), then workers;
hourly partition maintenance; a stuck migration killed at its deadline.
"""

from twisted.trial.unittest import SynchronousTestCase

from nightowl.drain import ipc
from nightowl.drain.supervisor import DrainSupervisor
from nightowl.metrics import Metrics
from tests.supervisor_support import (
    FakeBufferWriter, SpawningReactor, SupervisorCase, capture_log, settings)


class SupervisorMigrationTests(SupervisorCase):

    def test_start_releases_stale_claims_then_migrates_then_spawns(self):
        self.buffer.state[1] = 105   # left by a worker 5 of a previous run
        sup = self.start(finish_maintenance=False)
        self.assertEqual(self.buffer.calls[0], ("release", None))
        self.assertEqual(self.buffer.state[1], 0)
        [m] = self.reactor.maintenance()
        self.assertEqual(m["env"]["NIGHTOWL_MIGRATE"], "1")
        self.assertEqual(self.reactor.workers(), [])   # workers wait for the migration
        m["transport"].end(3)                           # migration failed: drain anyway
        self.assertEqual(sup.migrated, False)
        self.assertEqual(len(self.reactor.workers()), 2)

    def test_no_migrate_option(self):
        self.start(finish_maintenance=False, migrate=False)
        [m] = self.reactor.maintenance()
        self.assertEqual(m["env"]["NIGHTOWL_MIGRATE"], "0")

    def test_hourly_partition_maintenance(self):
        self.start()
        self.assertEqual(len(self.reactor.maintenance()), 1)
        self.reactor.advance(3600)
        [_, m] = self.reactor.maintenance()
        self.assertEqual(m["env"]["NIGHTOWL_MIGRATE"], "0")
        self.assertEqual(m["args"][-1], "maintenance")
        m["transport"].end(0)
        self.reactor.advance(3600)
        self.assertEqual(len(self.reactor.maintenance()), 3)

    def test_stuck_migration_is_killed_at_its_deadline(self):
        self.start(finish_maintenance=False)
        [m] = self.reactor.maintenance()
        self.reactor.advance(300)
        self.assertEqual(m["transport"].signals, ["KILL"])
        m["transport"].end(code=None, sig=9)
        self.assertEqual(len(self.reactor.workers()), 2)
        self.flushLoggedErrors()


class MigrationRetryTests(SynchronousTestCase):
    """A failed startup migration is retried with backoff until it succeeds."""

    def setUp(self):
        self.reactor = SpawningReactor()
        self.buffer = FakeBufferWriter(count=3)
        self.metrics = Metrics(self.reactor)

    def test_failed_migration_is_retried_with_backoff_and_its_cause_logged(self):
        from twisted.logger import formatEvent
        seen = capture_log(self)
        sup = DrainSupervisor(self.buffer, self.metrics, reactor=self.reactor, **settings())
        sup.migrate_backoff = lambda attempt: [2.0, 4.0, 8.0][attempt]
        sup.startService()
        cause = 'role missing (SQLSTATE 28000): role "nightowl" does not exist'
        for n, delay in enumerate([2.0, 4.0]):
            m = self.reactor.maintenance()[-1]
            self.assertEqual(m["env"]["NIGHTOWL_MIGRATE"], "1")
            m["transport"].say({"op": ipc.REPORT, "error": cause})
            m["transport"].end(3)
            self.assertEqual((sup.migrated, sup.migration_error), (False, cause))
            lines = [formatEvent(e) for e in seen if "migration failed" in formatEvent(e)]
            self.assertEqual(lines[-1], "migration failed: {}; retrying in {:.0f} s (attempt "
                             "{}); payloads wait in the buffer".format(cause, delay, n + 1))
            self.reactor.advance(delay - 0.5)
            self.assertEqual(len(self.reactor.maintenance()), n + 1)   # not yet
            self.reactor.advance(0.5)
            self.assertEqual(len(self.reactor.maintenance()), n + 2)
        # workers drain meanwhile (an existing schema may do); only once
        self.assertEqual(len(self.reactor.workers()), 2)
        self.reactor.maintenance()[-1]["transport"].end(0)
        self.assertEqual((sup.migrated, sup.migration_error), (True, None))
        self.reactor.advance(3000)
        self.assertEqual(len(self.reactor.maintenance()), 3)          # no more retries
        self.assertEqual(len(self.reactor.workers()), 2)

    def test_stop_cancels_a_pending_retry(self):
        sup = DrainSupervisor(self.buffer, self.metrics, reactor=self.reactor,
                              **settings(workers=0))
        sup.migrate_backoff = lambda attempt: 5.0
        sup.startService()
        self.assertEqual(self.reactor.maintenance(), [])    # 0 workers: no drain at all
        sup.stopService()
        sup = DrainSupervisor(self.buffer, self.metrics, reactor=self.reactor, **settings())
        sup.migrate_backoff = lambda attempt: 5.0
        sup.startService()
        self.reactor.maintenance()[-1]["transport"].end(3)
        for w in self.reactor.workers():
            w["transport"].end(0)
        d = sup.stopService()
        self.reactor.advance(60)
        self.successResultOf(d)
        self.assertEqual(len(self.reactor.maintenance()), 1)
        self.flushLoggedErrors()
