"""
DrainSupervisor spawning its workers: nothing without a DSN or workers, the
worker's command line and environment, and the policy as class attributes.
"""

import sys

from nightowl.drain.supervisor import DrainSupervisor
from tests.supervisor_support import SupervisorCase, settings


class SupervisorSpawnTests(SupervisorCase):

    def test_no_dsn_spawns_nothing(self):
        sup = self.start(dsn=None)
        self.assertEqual(self.reactor.spawned, [])
        self.assertEqual(self.buffer.calls, [])
        self.successResultOf(sup.stopService())

    def test_zero_workers_spawns_nothing(self):
        self.start(workers=0)
        self.assertEqual(self.reactor.spawned, [])

    def test_spawn_arguments_and_environment(self):
        self.start()
        w0, w1 = self.reactor.workers()
        self.assertEqual(w0["executable"], sys.executable)
        self.assertEqual(w0["args"], [sys.executable, "-m", "nightowl.drain.worker"])
        self.assertEqual(w0["childFDs"], {0: "w", 1: "r", 2: "r"})
        env = w1["env"]
        self.assertEqual(env["NIGHTOWL_DSN"], "host=db user=u password=secret dbname=n")
        self.assertEqual(env["NIGHTOWL_WORKER_ID"], "1")
        self.assertEqual(env["NIGHTOWL_BATCH_SIZE"], "100")
        self.assertEqual(env["NIGHTOWL_ENVIRONMENT"], "staging")
        self.assertEqual(env["NIGHTOWL_BUFFER"], "/tmp/b.sqlite")
        self.assertNotIn("secret", " ".join(w1["args"]))
        for key in env:
            self.assertIn(key, ("PATH", "PYTHONPATH", "HOME", "LANG", "NIGHTOWL_DSN",
                                "NIGHTOWL_BUFFER", "NIGHTOWL_WORKER_ID", "NIGHTOWL_ENVIRONMENT",
                                "NIGHTOWL_BATCH_SIZE", "NIGHTOWL_BUFFER_ID"))

    def test_policy_is_class_attributes_overridable_by_keyword(self):
        self.assertEqual((DrainSupervisor.threshold, DrainSupervisor.minRestartDelay,
                          DrainSupervisor.maxRestartDelay, DrainSupervisor.stopGrace,
                          DrainSupervisor.killTime), (60.0, 1.0, 60.0, 10.0, 5.0))
        sup = DrainSupervisor(self.buffer, self.metrics, reactor=self.reactor, stopGrace=2.0,
                              **settings())
        self.assertEqual((sup.stopGrace, DrainSupervisor.stopGrace), (2.0, 10.0))
        with self.assertRaises(TypeError):
            DrainSupervisor(self.buffer, self.metrics, reactor=self.reactor, options={},
                            **settings())
