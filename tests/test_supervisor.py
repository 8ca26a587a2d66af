"""
DrainSupervisor without real processes: a MemoryReactorClock that records
spawnProcess, fake process transports and an in-memory BufferWriter.
"""

import sys

from twisted.internet import defer, error
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from nightowl.drain import ipc
from nightowl.drain.supervisor import DrainSupervisor
from nightowl.metrics import Metrics


class FakeBufferWriter:
    """The documented BufferWriter API over a dict id -> state."""

    def __init__(self, count=0):
        self.state = {}
        self.errors = {}
        self.next_id = 1
        self.calls = []
        self.fail_marks = 0
        for _ in range(count):
            self.append(b"[]")

    def append(self, payload):
        i = self.next_id
        self.next_id += 1
        self.state[i] = 0
        return defer.succeed(i)

    def claim(self, worker, limit, max_bytes=None):
        self.calls.append(("claim", worker, limit))
        ids = sorted(i for i, s in self.state.items() if s == 0)[:limit]
        for i in ids:
            self.state[i] = 100 + worker
        return defer.succeed(ids)

    def mark_drained(self, ids):
        self.calls.append(("mark_drained", list(ids)))
        if self.fail_marks:
            self.fail_marks -= 1
            return defer.fail(OSError("disk full"))
        for i in ids:
            self.state[i] = 1
        return defer.succeed(len(ids))

    def quarantine(self, items):
        self.calls.append(("quarantine", list(items)))
        for i, reason in items:
            self.state[i] = 2
            self.errors[i] = reason
        return defer.succeed(len(items))

    def release(self, worker=None):
        self.calls.append(("release", worker))
        n = 0
        for i, s in self.state.items():
            if s >= 100 and (worker is None or s == 100 + worker):
                self.state[i] = 0
                n += 1
        return defer.succeed(n)

    def requeue_quarantined(self):
        return defer.succeed(0)

    def stats(self):
        return {}


class FakeProcessTransport:
    def __init__(self, proto, pid):
        self.proto = proto
        self.pid = pid
        self.written = b""
        self.signals = []
        self.stdin_closed = False

    def write(self, data):
        self.written += data

    def closeStdin(self):
        self.stdin_closed = True

    def signalProcess(self, name):
        if self.pid is None:
            raise error.ProcessExitedAlready()
        self.signals.append(name)

    def messages(self):
        return [ipc.decode(line) for line in self.written.splitlines() if line.strip()]

    def take(self):
        out = self.messages()
        self.written = b""
        return out

    def end(self, code=0, sig=None):
        self.pid = None
        reason = error.ProcessDone(0) if code == 0 and sig is None else \
            error.ProcessTerminated(code, sig)
        self.proto.processEnded(Failure(reason))

    def say(self, message):
        self.proto.outReceived(ipc.encode(message))


class SpawningReactor(MemoryReactorClock):
    def __init__(self):
        MemoryReactorClock.__init__(self)
        self.spawned = []
        self.pids = 1000

    def spawnProcess(self, proto, executable, args=(), env=None, path=None, uid=None,
                     gid=None, usePTY=0, childFDs=None):
        self.pids += 1
        transport = FakeProcessTransport(proto, self.pids)
        self.spawned.append({"proto": proto, "executable": executable, "args": list(args),
                             "env": env, "childFDs": childFDs, "transport": transport})
        proto.makeConnection(transport)
        return transport

    def workers(self):
        return [s for s in self.spawned if "maintenance" not in s["args"]]

    def maintenance(self):
        return [s for s in self.spawned if "maintenance" in s["args"]]


def options(**kw):
    opts = {"dsn": "host=db user=u password=secret dbname=n", "drain-workers": 2,
            "batch-size": 100, "environment": "staging", "buffer": "/tmp/b.sqlite",
            "no-migrate": False}
    opts.update(kw)
    return opts


class SupervisorTests(SynchronousTestCase):

    def setUp(self):
        self.reactor = SpawningReactor()
        self.buffer = FakeBufferWriter(count=250)
        self.metrics = Metrics(self.reactor)

    def start(self, finish_maintenance=True, **kw):
        sup = DrainSupervisor(self.buffer, options(**kw), self.metrics, reactor=self.reactor)
        sup.startService()
        if finish_maintenance and self.reactor.maintenance():
            self.reactor.maintenance()[-1]["transport"].end(0)
        return sup

    def test_no_dsn_spawns_nothing(self):
        sup = self.start(dsn=None)
        self.assertEqual(self.reactor.spawned, [])
        self.assertEqual(self.buffer.calls, [])
        self.successResultOf(sup.stopService())

    def test_zero_workers_spawns_nothing(self):
        self.start(**{"drain-workers": 0})
        self.assertEqual(self.reactor.spawned, [])

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
        self.start(finish_maintenance=False, **{"no-migrate": True})
        [m] = self.reactor.maintenance()
        self.assertEqual(m["env"]["NIGHTOWL_MIGRATE"], "0")

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

    def test_claim_done_marked_round_trip(self):
        self.start()
        w0 = self.reactor.workers()[0]["transport"]
        w0.say({"op": "hello", "worker": 0, "pid": 4242})
        w0.say({"op": "claim", "limit": 10})
        [reply] = w0.take()
        self.assertEqual(reply, {"op": "claimed", "ids": list(range(1, 11))})
        self.assertEqual({self.buffer.state[i] for i in range(1, 11)}, {100})
        w0.say({"op": "done", "drained": list(range(1, 10)), "quarantined": [[10, "DataError"]],
                "stats": {"batches": 1, "payloads": 10, "pg_reachable": True}})
        self.assertEqual(w0.take(), [{"op": "marked"}])
        self.assertEqual({self.buffer.state[i] for i in range(1, 10)}, {1})
        self.assertEqual(self.buffer.state[10], 2)
        self.assertEqual(self.buffer.errors[10], "DataError")
        m = self.metrics.drain[0]
        self.assertEqual((m["pid"], m["batches"], m["marked_payloads"]), (4242, 1, 9))

    def test_claim_is_capped_and_empty_claim_replies_empty(self):
        self.start()
        w1 = self.reactor.workers()[1]["transport"]
        w1.say({"op": "claim", "limit": 1000})
        self.assertEqual(len(w1.take()[0]["ids"]), 250)
        w1.say({"op": "claim", "limit": 1000})
        self.assertEqual(w1.take(), [{"op": "claimed", "ids": []}])

    def test_stats_message_goes_to_metrics(self):
        self.start()
        w1 = self.reactor.workers()[1]["transport"]
        w1.say({"op": "stats", "stats": {"failures": 3, "pg_reachable": False,
                                         "last_error": "PostgresUnavailable"}})
        self.assertEqual(self.metrics.drain[1]["failures"], 3)
        self.assertIs(self.metrics.drain[1]["pg_reachable"], False)

    def test_messages_split_across_reads(self):
        self.start()
        w0 = self.reactor.workers()[0]["transport"]
        data = ipc.encode({"op": "claim", "limit": 2})
        for i in range(len(data)):
            w0.proto.outReceived(data[i:i + 1])
        self.assertEqual(w0.take(), [{"op": "claimed", "ids": [1, 2]}])

    def test_failed_mark_is_retried_alone(self):
        self.start()
        w0 = self.reactor.workers()[0]["transport"]
        w0.say({"op": "claim", "limit": 5})
        w0.take()
        self.buffer.fail_marks = 2
        w0.say({"op": "done", "drained": [1, 2, 3, 4, 5], "quarantined": [], "stats": {}})
        self.assertEqual(w0.take(), [])            # no marked until the mark lands
        self.reactor.advance(1)
        self.assertEqual(w0.take(), [])
        self.reactor.advance(2)
        self.assertEqual(w0.take(), [{"op": "marked"}])
        self.assertEqual([c for c in self.buffer.calls if c[0] == "claim"], [("claim", 0, 5)])
        self.assertEqual({self.buffer.state[i] for i in range(1, 6)}, {1})
        self.flushLoggedErrors()

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

    def test_worker_log_lines_are_passed_through(self):
        from twisted.logger import globalLogPublisher
        seen = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        self.start()
        w1 = self.reactor.workers()[1]["transport"]
        w1.proto.errReceived(b"error postgres unavailable (attempt 1)\ninfo hal")
        w1.proto.errReceived(b"f\n")
        lines = [(e.get("worker"), e.get("line"), e["log_level"].name) for e in seen
                 if "line" in e]
        self.assertEqual(lines, [(1, "error postgres unavailable (attempt 1)", "error"),
                                 (1, "info half", "info")])


class MigrationRetryTests(SynchronousTestCase):
    """A failed startup migration is retried with backoff until it succeeds."""

    def setUp(self):
        self.reactor = SpawningReactor()
        self.buffer = FakeBufferWriter(count=3)
        self.metrics = Metrics(self.reactor)

    def test_failed_migration_is_retried_with_backoff_and_its_cause_logged(self):
        from twisted.logger import globalLogPublisher, formatEvent
        seen = []
        globalLogPublisher.addObserver(seen.append)
        self.addCleanup(globalLogPublisher.removeObserver, seen.append)
        sup = DrainSupervisor(self.buffer, options(), self.metrics, reactor=self.reactor)
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
        sup = DrainSupervisor(self.buffer, options(**{"drain-workers": 0}), self.metrics,
                              reactor=self.reactor)
        sup.migrate_backoff = lambda attempt: 5.0
        sup.startService()
        self.assertEqual(self.reactor.maintenance(), [])    # 0 workers: no drain at all
        sup.stopService()
        sup = DrainSupervisor(self.buffer, options(), self.metrics, reactor=self.reactor)
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
