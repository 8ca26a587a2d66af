"""
DrainSupervisor's workers dying and stopping: a dead worker's claim
released and the worker respawned with growing delays, and the stop
sequence (stop, then TERM, then KILL; no respawn while stopping).
"""

from twisted.internet import defer

from tests.supervisor_support import SupervisorCase


class SupervisorLifecycleTests(SupervisorCase):

    def test_dead_worker_is_released_and_respawned_with_growing_delays(self):
        sup = self.start()
        # release and backoff only: shrinking a claim that keeps killing its
        # worker (issue 14) is tested in tests/test_drain_poison.py
        from nightowl.drain.poison import ClaimShrinker
        sup.shrinker = ClaimShrinker(enabled=False)
        self.assertEqual(len(self.reactor.workers()), 2)
        delays = []
        for crash in range(7):
            current = self.reactor.workers()[-1] if crash else self.reactor.workers()[0]
            t = current["transport"]
            t.say({"op": "claim", "limit": 5})
            claimed = t.take()[0]["ids"]
            self.assertTrue(all(self.buffer.state[i] == 100 for i in claimed))
            before = len(self.reactor.workers())
            t.end(code=None, sig=9)
            self.assertTrue(all(self.buffer.state[i] == 0 for i in claimed))   # released
            self.assertIn(("release", 0), self.buffer.calls)
            waited = 0.0
            while len(self.reactor.workers()) == before:
                self.reactor.advance(0.5)
                waited += 0.5
                self.assertLess(waited, 200)
            delays.append(waited)
            self.assertEqual(self.reactor.workers()[-1]["env"]["NIGHTOWL_WORKER_ID"], "0")
        self.assertEqual(delays, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0])
        self.assertEqual(self.metrics.drain[0]["restarts"], 7)
        # a worker that stayed up 60 s resets the backoff
        t = self.reactor.workers()[-1]["transport"]
        self.reactor.advance(61)
        before = len(self.reactor.workers())
        t.end(code=1)
        self.reactor.advance(1)
        self.assertEqual(len(self.reactor.workers()), before + 1)
        self.flushLoggedErrors()

    def test_release_waits_for_a_claim_in_flight(self):
        pending = defer.Deferred()
        real_claim = self.buffer.claim
        self.buffer.claim = lambda w, n, max_bytes=None: pending
        self.start()
        w0 = self.reactor.workers()[0]["transport"]
        w0.say({"op": "claim", "limit": 5})
        w0.end(code=None, sig=9)
        self.assertNotIn(("release", 0), self.buffer.calls)
        pending.callback(None)
        real_claim(0, 5).addCallback(lambda ids: None)   # the writer claimed before...
        self.buffer.calls.append(("noop",))
        # ...and the release ran after the in-flight claim completed
        self.reactor.advance(0)
        self.assertEqual(self.buffer.calls[-1], ("noop",))
        self.assertEqual(len(self.reactor.workers()), 2)

    def test_stop_sequence_stop_then_term_then_kill(self):
        sup = self.start()
        w0, w1 = [w["transport"] for w in self.reactor.workers()]
        w0.take(), w1.take()
        d = sup.stopService()
        self.assertEqual(w0.take(), [{"op": "stop"}])
        self.assertEqual(w1.take(), [{"op": "stop"}])
        w0.end(0)                            # worker 0 finished its batch and left
        self.assertNoResult(d)
        w1.say({"op": "claim", "limit": 5})  # a late claim during shutdown gets nothing
        self.assertEqual(w1.take(), [{"op": "claimed", "ids": []}])
        self.reactor.advance(9.9)
        self.assertEqual(w1.signals, [])
        self.reactor.advance(0.1)
        self.assertEqual(w1.signals, ["TERM"])
        self.reactor.advance(4.9)
        self.assertEqual(w1.signals, ["TERM"])
        self.reactor.advance(0.1)
        self.assertEqual(w1.signals, ["TERM", "KILL"])
        self.assertNoResult(d)
        w1.end(code=None, sig=9)
        self.successResultOf(d)
        self.assertIn(("release", 1), self.buffer.calls)
        n_workers = len(self.reactor.workers())
        self.reactor.advance(100)
        self.assertEqual(len(self.reactor.workers()), n_workers)   # no respawn when stopping
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.flushLoggedErrors()

    def test_stop_cancels_pending_respawn(self):
        sup = self.start()
        w0, w1 = [w["transport"] for w in self.reactor.workers()]
        w0.end(code=1)
        d = sup.stopService()
        w1.end(0)
        self.successResultOf(d)
        self.reactor.advance(100)
        self.assertEqual(len(self.reactor.workers()), 2)
        self.flushLoggedErrors()

    def test_a_worker_stopped_by_a_signal_of_its_own_is_no_error(self):
        """supervisord's stopasgroup (or a TERM to the process group) reaches
        the workers a moment before the agent's stop: the worker finishes its
        batch and exits 0, which is logged at info, not as a crash, and the
        agent's stop that follows cancels the respawn."""
        from tests.supervisor_support import capture_log
        seen = capture_log(self)
        sup = self.start()
        t = self.reactor.workers()[0]["transport"]
        t.end(code=0)
        levels = [(e["log_level"].name, e.get("log_format", "")) for e in seen
                  if e.get("log_namespace", "").startswith("nightowl.drain.supervisor")]
        self.assertEqual([lv for lv, _ in levels if lv in ("error", "warn")], [])
        self.assertTrue([f for lv, f in levels if "SIGTERM of its own" in f])
        self.assertEqual(self.metrics.drain[0]["exit_code"], 0)
        before = len(self.reactor.workers())
        d = sup.stopService()
        for w in self.reactor.workers()[1:]:
            w["transport"].end(code=0)
        self.reactor.advance(10)
        self.assertEqual(len(self.reactor.workers()), before)      # no respawn
        self.successResultOf(defer.maybeDeferred(lambda: d))
