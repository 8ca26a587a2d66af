"""
Drain hazards of issue 14 without real processes: claims bounded in bytes
(the real BufferWriter), a claim that keeps killing its worker shrinks and
then isolates its payload, a frozen worker is found by its silence and
killed, worker counters survive restarts, failed claims log rate-limited.
"""

from twisted.internet import defer
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from nightowl.health import rules
from nightowl.buffer.writer import BufferWriter
from nightowl.drain.supervisor import WATCH_EVERY, DrainSupervisor
from nightowl.metrics import Metrics
from tests.fakes import ThreadReactor
from tests.supervisor_support import FakeBufferWriter, SpawningReactor, settings


def test_claims_are_bounded_in_bytes_and_take_at_least_one(tmp_path):
    reactor = ThreadReactor()
    w = BufferWriter(str(tmp_path / "b.sqlite"), reactor=reactor)
    w.open()
    try:
        payload = b"[" + b"1," * 499 + b"1]"          # 1,000 bytes
        for _ in range(10):
            reactor.wait(w.append(payload))
        assert reactor.wait(w.claim(0, 100, max_bytes=3500)) == [1, 2, 3]
        assert reactor.wait(w.claim(1, 100, max_bytes=10)) == [4]       # over it alone
        assert reactor.wait(w.claim(2, 2, max_bytes=1 << 30)) == [5, 6]  # rows still bound
        assert reactor.wait(w.claim(3, 100)) == [7, 8, 9, 10]             # no byte bound
    finally:
        reactor.wait(w.close())


class Base(SynchronousTestCase):

    def setUp(self):
        self.reactor = SpawningReactor()
        self.metrics = Metrics(self.reactor)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def start(self, buffer, **kw):
        sup = DrainSupervisor(buffer, self.metrics, reactor=self.reactor, **settings(**kw))
        sup.startService()
        if self.reactor.maintenance():
            self.reactor.maintenance()[-1]["transport"].end(0)
        self.sup = sup
        return sup

    def worker(self, n=0):
        return [w for w in self.reactor.workers()
                if w["env"]["NIGHTOWL_WORKER_ID"] == str(n)][-1]["transport"]

    def respawn(self, n=0):
        before = len(self.reactor.workers())
        waited = 0
        while len(self.reactor.workers()) == before:
            self.reactor.advance(0.5)
            waited += 1
            self.assertLess(waited, 400)
        return self.worker(n)

    def logged(self, text):
        return [e for e in self.events if text in (e.get("log_format") or "")]


class PoisonClaimTests(Base):

    def test_a_claim_that_keeps_killing_its_worker_shrinks_then_isolates(self):
        buffer = FakeBufferWriter(count=20)
        self.start(buffer, workers=1, batch_size=8)
        sizes = []
        t = self.worker()
        for _death in range(4):
            t.say({"op": "claim", "limit": 8})
            ids = t.take()[-1]["ids"]
            sizes.append(len(ids))
            self.assertEqual(ids[0], 1)
            t.end(code=None, sig=9)             # e.g. the OOM killer, on the same rows
            t = self.respawn()
        self.assertEqual(sizes, [8, 4, 2, 1])
        self.assertEqual(buffer.state[1], 2)   # isolated: quarantined with the reason
        self.assertIn("died 4 times in a row", buffer.errors[1])
        self.assertEqual(self.sup.shrinker.figures()["isolated"], 1)
        # the drain moves on: the next claim is full-size again, from id 2
        t.say({"op": "claim", "limit": 8})
        self.assertEqual(t.take()[-1]["ids"], list(range(2, 10)))
        self.flushLoggedErrors()

    def test_one_death_on_a_lone_payload_is_no_proof_two_are(self):
        """A quiet drain claims the one payload pending; one SIGKILL of its
        worker (the OOM killer, an operator) used to quarantine it at once:
        acked, never in Postgres (bench faults worker-kill, kill-mid-copy)."""
        buffer = FakeBufferWriter(count=1)
        self.start(buffer, workers=1, batch_size=8)
        t = self.worker()
        t.say({"op": "claim", "limit": 8})
        self.assertEqual(t.take()[-1]["ids"], [1])
        t.end(code=None, sig=9)
        t = self.respawn()
        self.assertEqual(buffer.state[1], 0)          # pending again, not quarantined
        t.say({"op": "claim", "limit": 8})
        self.assertEqual(t.take()[-1]["ids"], [1])
        t.end(code=None, sig=9)                       # it kills again: now it is poison
        self.respawn()
        self.assertEqual(buffer.state[1], 2)
        self.assertIn("died 2 times in a row", buffer.errors[1])
        self.flushLoggedErrors()

    def test_a_poison_payload_in_the_middle_is_found_by_bisection(self):
        buffer = FakeBufferWriter(count=20)
        self.start(buffer, workers=1, batch_size=8)
        t = self.worker()
        deaths = 0
        for _round in range(30):
            t.say({"op": "claim", "limit": 8})
            ids = t.take()[-1]["ids"]
            if not ids:
                break
            if 6 in ids:                         # this payload kills every worker
                t.end(code=None, sig=9)
                deaths += 1
                t = self.respawn()
            else:
                t.say({"op": "done", "drained": ids, "quarantined": []})
                t.take()
        self.assertEqual(buffer.state[6], 2)
        self.assertEqual(sorted(i for i, st in buffer.state.items() if st == 1),
                         [i for i in range(1, 21) if i != 6])
        self.assertLessEqual(deaths, 4)
        self.flushLoggedErrors()

    def test_written_claims_clear_the_suspects(self):
        buffer = FakeBufferWriter(count=20)
        self.start(buffer, workers=1, batch_size=8)
        t = self.worker()
        t.say({"op": "claim", "limit": 8})
        t.take()
        t.end(code=None, sig=9)
        t = self.respawn()
        t.say({"op": "claim", "limit": 8})
        ids = t.take()[-1]["ids"]
        self.assertEqual(ids, [1, 2, 3, 4])
        t.say({"op": "done", "drained": ids, "quarantined": []})
        t.say({"op": "claim", "limit": 8})
        ids = t.take()[-1]["ids"]
        self.assertEqual(ids, [5, 6, 7, 8])       # the rest of the suspects, still capped
        t.say({"op": "done", "drained": ids, "quarantined": []})
        t.say({"op": "claim", "limit": 8})
        self.assertEqual(len(t.take()[-1]["ids"]), 8)
        self.flushLoggedErrors()


class FrozenWorkerTests(Base):

    def test_a_silent_worker_is_killed_and_reported_a_beating_one_is_not(self):
        buffer = FakeBufferWriter(count=20)
        sup = self.start(buffer, workers=2, worker_timeout=30.0)
        w0, w1 = self.worker(0), self.worker(1)
        w0.say({"op": "claim", "limit": 5})    # w0 holds a claim and then goes silent
        for _ in range(int(40 / WATCH_EVERY)):
            w1.say({"op": "heartbeat"})
            self.reactor.advance(WATCH_EVERY)
        self.assertEqual(w0.signals, ["KILL"])
        self.assertEqual(w1.signals, [])
        self.assertIsNotNone(self.metrics.drain[0].get("frozen_at"))
        w0.end(code=None, sig=9)
        self.assertTrue(all(buffer.state[i] == 0 for i in range(1, 6)))   # claim recovered
        self.assertEqual(len(self.logged("sent nothing for")), 1)
        sup.stopService()
        self.flushLoggedErrors()

    def test_a_frozen_worker_is_a_warning_in_status(self):
        snap = {"buffer": {"writer_alive": True}, "drain": {},
                "workers": [{"worker": 0, "frozen_at": 990.0, "restart_times": []}]}
        status, reasons = rules.evaluate(snap, 1000.0)
        self.assertEqual(status, "degraded")
        self.assertIn("worker-frozen", [r["code"] for r in reasons])
        snap["workers"][0]["frozen_at"] = 1000.0 - rules.CRASH_LOOP_WINDOW - 1
        self.assertNotIn("worker-frozen", [r["code"] for r in rules.evaluate(snap, 1000.0)[1]])


class CountersAndLogsTests(Base):

    def test_worker_counters_survive_restarts(self):
        buffer = FakeBufferWriter(count=0)
        self.start(buffer, workers=1)
        t = self.worker()
        t.say({"op": "stats", "stats": {"payloads": 10, "rows": 30}})
        t.end(code=None, sig=9)
        t = self.respawn()
        t.say({"op": "stats", "stats": {"payloads": 15, "rows": 45}})
        self.assertEqual(self.metrics.drain[0]["payloads"], 25)
        self.assertEqual(self.metrics.drain[0]["rows"], 75)
        t.say({"op": "stats", "stats": {"payloads": 16, "rows": 48}})
        self.assertEqual(self.metrics.drain[0]["payloads"], 26)
        self.flushLoggedErrors()

    def test_failed_claims_log_rate_limited(self):
        buffer = FakeBufferWriter(count=5)
        buffer.claim = lambda w, n, max_bytes=None: defer.fail(OSError(28, "No space left"))
        self.start(buffer, workers=1)
        t = self.worker()
        for _ in range(100):
            t.say({"op": "claim", "limit": 5})
        self.assertEqual(len(self.logged("claiming for drain worker")), 1)
        self.assertEqual([e for e in self.events if e.get("log_failure")], [])
        self.reactor.advance(11)
        t.say({"op": "claim", "limit": 5})
        lines = self.logged("claiming for drain worker")
        self.assertEqual(len(lines), 2)
        self.assertEqual(lines[-1]["count"], 100)
        self.flushLoggedErrors()
