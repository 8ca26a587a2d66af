"""
The forwarder without sockets: ForwardService on a real forward queue in an
in-memory SQLite (``run`` answers at once), a fake ``send`` whose Deferreds
the test fires, and a Clock; the one-frame client on a StringTransport.
"""

import sqlite3

from twisted.internet import defer, task
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from nightowl.buffer import forwardq
from nightowl.buffer.forwardq import ForwardQueue
from nightowl.forward import client
from nightowl.forward.service import ForwardService


class MemoryForwardBuffer:
    """``run(fn)`` on an in-memory buffer, answered at once; ``add`` commits forward rows."""

    def __init__(self, queue):
        self.conn = sqlite3.connect(":memory:", isolation_level=None)
        self.conn.executescript(forwardq.DDL)
        self.queue = queue
        self.failing = False

    def add(self, *payloads):
        items = []
        for p in payloads:
            d = defer.Deferred()
            d.forward = (b"abc1234", p)
            items.append((p, d))
        self.queue.applied(self.queue.insert(self.conn, items, 0.0))

    def run(self, fn):
        if self.failing:
            return defer.fail(IOError("disk gone"))
        value = fn(self.conn)
        self.queue.committed()   # as the writer thread does after each commit
        return defer.succeed(value)

    def stored(self):
        return [bytes(r[0]) for r in self.conn.execute("SELECT payload FROM forwards ORDER BY id")]


class FakeUpstream:
    """``send(frame)``: a Deferred per frame, kept in ``calls`` for the test to answer."""

    def __init__(self):
        self.calls = []

    def __call__(self, frame):
        d = defer.Deferred()
        self.calls.append((frame, d))
        return d

    def answer(self, reply=b"2:OK"):
        calls, self.calls = self.calls, []
        for _frame, d in calls:
            if isinstance(reply, Exception):
                d.errback(reply)
            else:
                d.callback(reply)
        return [f for f, _d in calls]


def frame(p):
    return forwardq.frame(b"abc1234", p)


class ForwardServiceTests(SynchronousTestCase):

    def setUp(self):
        self.clock = task.Clock()
        self.queue = ForwardQueue(max_rows=1000, max_bytes=10 ** 7)
        self.buffer = MemoryForwardBuffer(self.queue)
        self.upstream = FakeUpstream()
        self.service = ForwardService(self.buffer, self.queue, self.upstream, "up:1",
                                      reactor=self.clock, max_inflight=4)
        self.service.backoff = lambda attempt: 2.0 ** attempt   # no jitter in tests

    def tick(self, seconds=None):
        self.clock.advance(self.service.tick if seconds is None else seconds)

    def test_delivers_every_frame_and_deletes_after_ok(self):
        self.buffer.add(b"[1]", b"[2]", b"[3]")
        self.service.startService()
        sent = self.upstream.answer()
        self.assertEqual(sent, [frame(b"[1]"), frame(b"[2]"), frame(b"[3]")])
        self.assertEqual(self.buffer.stored(), [b"[1]", b"[2]", b"[3]"])  # not yet deleted
        self.tick(self.service.delete_every)
        self.assertEqual(self.buffer.stored(), [])
        figures = self.service.figures()
        self.assertEqual((figures["forwarded"], figures["backlog_rows"], figures["upstream_up"]),
                         (3, 0, True))

    def test_new_rows_are_picked_up(self):
        self.service.startService()
        self.assertEqual(self.upstream.calls, [])
        self.buffer.add(b"[7]")
        self.tick()
        self.assertEqual(self.upstream.answer(), [frame(b"[7]")])

    def test_inflight_bound(self):
        self.buffer.add(*[b"[%d]" % i for i in range(10)])
        self.service.startService()
        self.assertEqual(len(self.upstream.calls), 4)
        self.upstream.answer()
        self.assertEqual(len(self.upstream.calls), 4)
        self.assertEqual(self.service.figures()["inflight"], 4)

    def test_upstream_down_backoff_one_probe_then_all(self):
        self.buffer.add(*[b"[%d]" % i for i in range(6)])
        self.service.startService()
        self.upstream.answer(client.UpstreamError("connection refused"))
        self.assertIs(self.service.upstream_up, False)
        self.assertEqual(self.service.failures, 4)
        self.tick()
        self.assertEqual(self.upstream.calls, [])       # backing off
        self.tick(2 ** 3 + 1)
        self.assertEqual(len(self.upstream.calls), 1)    # one probe while down
        self.assertEqual(self.upstream.answer(), [frame(b"[0]")])  # oldest first
        self.assertIs(self.service.upstream_up, True)
        delivered = [frame(b"[0]")]
        while self.upstream.calls:
            delivered += self.upstream.answer()
            self.tick()
        self.assertEqual(sorted(delivered), sorted(frame(b"[%d]" % i) for i in range(6)))
        self.tick(self.service.delete_every)
        self.assertEqual(self.buffer.stored(), [])

    def test_rejected_frame_retried_then_given_up(self):
        self.buffer.add(b"[1]", b"[2]")
        self.service.startService()
        self.upstream.answer(b"5:ERROR")
        self.assertEqual(self.service.rejected, 2)
        for _ in range(self.service.reject_attempts - 1):
            self.tick(10)
            self.assertEqual(len(self.upstream.calls), 2)
            self.upstream.answer(b"5:ERROR")
        self.assertEqual(self.service.given_up, 2)
        self.tick(10)
        self.assertEqual(self.upstream.calls, [])
        self.assertEqual(self.buffer.stored(), [])      # it no longer blocks the queue
        self.assertIs(self.service.upstream_up, True)   # it answered: it is up

    def test_rejected_then_accepted(self):
        self.buffer.add(b"[1]")
        self.service.startService()
        self.upstream.answer(b"5:ERROR")
        self.tick(10)
        self.upstream.answer()
        self.assertEqual((self.service.forwarded, self.service.given_up), (1, 0))

    def test_stop_records_what_was_delivered_and_ignores_late_answers(self):
        self.buffer.add(b"[1]", b"[2]")
        self.service.startService()
        first, second = self.upstream.calls
        first[1].callback(b"2:OK")
        self.successResultOf(defer.maybeDeferred(self.service.stopService))
        self.assertEqual(self.buffer.stored(), [b"[2]"])
        second[1].callback(b"2:OK")     # after stop: not recorded, sent again next start
        self.assertEqual(self.buffer.stored(), [b"[2]"])

    def test_restart_sends_what_is_left(self):
        self.buffer.add(b"[1]", b"[2]")
        self.service.startService()
        self.successResultOf(defer.maybeDeferred(self.service.stopService))
        again = ForwardService(self.buffer, self.queue, self.upstream, "up:1", reactor=self.clock)
        self.upstream.calls = []
        again.startService()
        self.assertEqual(self.upstream.answer(), [frame(b"[1]"), frame(b"[2]")])

    def test_buffer_read_failure_is_counted_and_retried(self):
        self.buffer.add(b"[1]")
        self.buffer.failing = True
        self.service.startService()
        self.assertIn("disk gone", self.service.last_error)
        self.buffer.failing = False
        self.tick()
        self.assertEqual(self.upstream.answer(), [frame(b"[1]")])

    def test_frames_dropped_while_held_are_not_sent(self):
        self.queue.max_rows = 3
        self.buffer.add(b"[1]", b"[2]", b"[3]")
        self.service.startService()
        self.upstream.answer(client.UpstreamError("connection refused"))
        self.buffer.add(b"[4]", b"[5]")          # drops [1] and [2], both held in memory
        self.assertEqual(self.queue.dropped, 2)
        sent = []
        for _ in range(20):
            self.tick(60)
            sent += self.upstream.answer()
        self.assertEqual(sent, [frame(b"[3]"), frame(b"[4]"), frame(b"[5]")])

    def test_dropped_figures_come_from_the_queue(self):
        self.queue.max_rows = 2
        self.buffer.add(b"[1]", b"[2]", b"[3]")
        figures = self.service.figures()
        self.assertEqual((figures["dropped"], figures["backlog_rows"]), (1, 2))


class ClientTests(SynchronousTestCase):

    def sender(self, frame_bytes):
        done = defer.Deferred()
        proto = client.FrameSender(frame_bytes, done)
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport, done

    def test_writes_the_frame_and_reads_ok(self):
        proto, transport, done = self.sender(b"7:v1:a:[1]")
        self.assertEqual(transport.value(), b"7:v1:a:[1]")
        proto.dataReceived(b"2:")
        self.assertNoResult(done)
        proto.dataReceived(b"OK")
        self.assertEqual(self.successResultOf(done), b"2:OK")
        self.assertTrue(transport.disconnecting)

    def test_error_reply(self):
        proto, _t, done = self.sender(b"x")
        proto.dataReceived(b"5:ERROR")
        self.assertEqual(self.successResultOf(done), b"5:ERROR")

    def test_closed_without_reply(self):
        proto, _t, done = self.sender(b"x")
        proto.connectionLost(None)
        self.failureResultOf(done, client.UpstreamError)

    def test_sender_refused_and_timeout(self):
        from twisted.internet.testing import MemoryReactorClock
        reactor = MemoryReactorClock()
        send = client.Sender(reactor, "127.0.0.1", 9, timeout=3.0)
        d = send(b"frame")
        self.assertEqual(reactor.tcpClients[0][:2], ("127.0.0.1", 9))
        self.assertFalse(reactor.tcpClients[0][2].noisy)   # no log line per frame
        reactor.advance(2.5)
        self.assertNoResult(d)
        reactor.advance(1.0)
        failure = self.failureResultOf(d, client.UpstreamError)
        self.assertIn("3 s", failure.getErrorMessage())
        refused = send(b"frame")
        from twisted.internet.error import ConnectionRefusedError
        from twisted.python.failure import Failure
        reactor.tcpClients[1][2].clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertEqual(self.failureResultOf(refused, client.UpstreamError).getErrorMessage(),
                         "connection refused")
        reactor.advance(10)
        self.assertEqual(send._open, {})

    def test_parse_host_port(self):
        self.assertEqual(client.parse_host_port("10.0.0.1:2407"), ("10.0.0.1", 2407))
        self.assertEqual(client.parse_host_port("agent.local:1"), ("agent.local", 1))
        for bad in ("", "host", ":2407", "h:0", "h:99999", "h:x"):
            self.assertRaises(ValueError, client.parse_host_port, bad)


class OptionsTests(SynchronousTestCase):

    def test_forward_option_env_and_bad_value(self):
        from twisted.python import usage
        from nightowl import tap
        self.assertIsNone(tap.parse([], environ={})["forward"])
        opts = tap.parse([], environ={"NIGHTOWL_FORWARD": "10.1.2.3:2407",
                                      "NIGHTOWL_FORWARD_MAX_BYTES": "10M"})
        self.assertEqual((opts["forward"], opts["forward-max-bytes"]),
                         ("10.1.2.3:2407", 10 * 1024 * 1024))
        self.assertEqual(tap.parse(["--forward", "h:1"], environ={
            "NIGHTOWL_FORWARD": "x:2"})["forward"], "h:1")    # the command line wins
        with self.assertRaises(usage.UsageError) as e:
            tap.parse(["--forward", "nohost"], environ={})
        self.assertEqual(str(e.exception), "--forward: expected HOST:PORT, got 'nohost'")

    def test_forward_service_in_the_tree_between_drain_and_ingest(self):
        from twisted.internet.testing import MemoryReactorClock
        from nightowl import tap
        from nightowl.service import START_ORDER
        opts = tap.parse(["--forward", "127.0.0.1:9", "--dashboard", "none",
                          "--health", "none", "--buffer", "/nonexistent/b.sqlite"], environ={})
        root = tap.makeService(opts, reactor=MemoryReactorClock())
        names = [s.name for s in root.ordered]
        self.assertIn("forward", names)
        self.assertLess(START_ORDER.index("buffer"), START_ORDER.index("forward"))
        self.assertLess(START_ORDER.index("forward"), START_ORDER.index("ingest"))
        self.assertIs(root.forward.queue, root.buffer.forward_queue)
        self.assertTrue(root.ingest.factory.forward)
        off = tap.makeService(tap.parse(["--dashboard", "none", "--health", "none"], environ={}),
                              reactor=MemoryReactorClock())
        self.assertIsNone(off.forward)
        self.assertIsNone(off.buffer.forward_queue)


class FiguresTests(SynchronousTestCase):

    def test_parent_sums_the_childrens_forward_sections(self):
        from nightowl.multiproc import status as mpstatus
        children = [{"index": i, "state": "running", "restarts": 0, "buffer": "b", "pid": i}
                    for i in range(2)]

        def doc(forwarded, up, dropped):
            return {"status": "healthy", "reasons": [], "ingest": {}, "buffer": {},
                    "drain": {}, "workers": [],
                    "forward": {"target": "up:1", "upstream_up": up, "backlog_rows": 3,
                                "backlog_bytes": 30, "forwarded": forwarded,
                                "dropped": dropped, "rejected": 0, "given_up": 0,
                                "failures": 1, "down_seconds": 2.0 if up is False else 0.0,
                                "last_error": None if up else "connection refused"}}
        out = mpstatus.aggregate(children, {0: doc(5, True, 0), 1: doc(7, False, 2)},
                                 "v", 1.0, {})
        fwd = out["forward"]
        self.assertEqual((fwd["forwarded"], fwd["dropped"], fwd["backlog_rows"]), (12, 2, 6))
        self.assertIs(fwd["upstream_up"], False)       # one child cannot reach it
        self.assertEqual(fwd["last_error"], "connection refused")
        none = mpstatus.aggregate(children, {0: dict(doc(1, True, 0), forward=None)},
                                  "v", 1.0, {})
        self.assertNotIn("forward", none)

    def test_metrics_only_with_forward(self):
        from nightowl.health import prometheus
        collector = prometheus.Collector(lambda: ({}, 0.0))
        fwd = {"upstream_up": None, "backlog_rows": 4, "backlog_bytes": 40, "forwarded": 2,
               "dropped": 1, "rejected": 0, "given_up": 0, "failures": 3}
        names = [(fam.name, fam.samples[0].value)
                 for fam in prometheus.forward_families(collector, {"forward": fwd})]
        self.assertIn(("nightowl_forward_upstream_up", -1), names)
        self.assertIn(("nightowl_forward_backlog_rows", 4), names)
        self.assertIn(("nightowl_forward_dropped", 1), names)   # counter family, no _total
        self.assertEqual(list(prometheus.forward_families(collector, {})), [])
