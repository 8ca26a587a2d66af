"""
DrainSupervisor talking with its workers: claims, marks (a failed mark
retried alone), statistics carried across restarts, and the limits on
IPC and log lines.
"""

from nightowl.drain import ipc
from tests.supervisor_support import SupervisorCase, capture_log


class SupervisorIPCTests(SupervisorCase):

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

    def test_totals_are_worker_stats_carried_across_restarts(self):
        sup = self.start()
        w0, w1 = [w["transport"] for w in self.reactor.workers()]
        w0.say({"op": "stats", "stats": {"payloads": 10, "rows": 30, "batches": 2,
                                         "rows_by_table": {"t": 30}}})
        w1.say({"op": "stats", "stats": {"payloads": 1, "failures": 5}})
        w0.end(code=None, sig=9)
        self.reactor.advance(1)
        w0 = self.reactor.workers()[-1]["transport"]
        w0.say({"op": "stats", "stats": {"payloads": 4, "rows": 8, "batches": 1,
                                         "rows_by_table": {"t": 8}}})
        self.assertEqual(sup.worker_stats()[0], ipc.WorkerStats(
            payloads=14, rows=38, batches=3, rows_by_table={"t": 38}))
        self.assertEqual(sup.totals(), ipc.WorkerStats(
            payloads=15, rows=38, batches=3, failures=5, rows_by_table={"t": 38}))
        self.assertEqual(self.metrics.drain[0]["payloads"], 14)
        self.flushLoggedErrors()

    def test_over_long_ipc_line_kills_the_worker(self):
        self.start()
        w0 = self.reactor.workers()[0]["transport"]
        w0.proto.outReceived(ipc.encode({"op": "claim", "limit": 1}))
        self.assertEqual(w0.take(), [{"op": "claimed", "ids": [1]}])
        w0.proto.outReceived(b"x" * (ipc.MAX_LINE + 1))
        self.assertEqual(w0.signals, ["KILL"])
        self.flushLoggedErrors()

    def test_over_long_log_line_is_cut(self):
        seen = capture_log(self)
        self.start()
        w0 = self.reactor.workers()[0]["transport"]
        w0.proto.errReceived(b"warn " + b"y" * (ipc.MAX_LINE + 10))
        w0.proto.errReceived(b"info after\n")
        lines = [e["line"] for e in seen if "line" in e]
        self.assertEqual(len(lines[0]), 4096 + 3)
        self.assertTrue(lines[0].startswith("warn yyy") and lines[0].endswith("..."))
        self.assertEqual(lines[1], "info after")
        self.assertEqual(w0.signals, [])

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

    def test_worker_log_lines_are_passed_through(self):
        seen = capture_log(self)
        self.start()
        w1 = self.reactor.workers()[1]["transport"]
        w1.proto.errReceived(b"error postgres unavailable (attempt 1)\ninfo hal")
        w1.proto.errReceived(b"f\n")
        lines = [(e.get("worker"), e.get("line"), e["log_level"].name) for e in seen
                 if "line" in e]
        self.assertEqual(lines, [(1, "error postgres unavailable (attempt 1)", "error"),
                                 (1, "info half", "info")])
