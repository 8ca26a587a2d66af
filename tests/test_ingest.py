"""
The ingest protocol, without sockets: StringTransport, a Clock, and an
in-memory buffer whose commits the test controls.
"""

import gzip

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from nightowl import wire
from nightowl.ingest import IngestFactory
from nightowl.metrics import Metrics
from tests.fakes import MemoryBuffer, WaiterBuffer

PAYLOAD = b'[{"v":1,"t":"request","url":"https:\\/\\/app.test\\/"}]'


class IngestProtocolTests(SynchronousTestCase):

    def setUp(self):
        self.clock = Clock()
        self.buffer = MemoryBuffer()
        self.metrics = Metrics(self.clock)
        self.factory = self.make_factory()

    def make_factory(self, **kw):
        kw.setdefault("max_frame_bytes", 4096)
        kw.setdefault("frame_timeout", 10.0)
        return IngestFactory(self.buffer, self.metrics, reactor=self.clock, **kw)

    def connect(self, factory=None):
        proto = (factory or self.factory).buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport

    def feed(self, data, step=None, factory=None):
        proto, transport = self.connect(factory)
        if step is None:
            proto.dataReceived(data)
        else:
            for i in range(0, len(data), step):
                proto.dataReceived(data[i:i + step])
        return proto, transport

    def test_ack_only_after_commit(self):
        for step in (None, 1, 3, 10):
            proto, transport = self.feed(wire.encode_frame(PAYLOAD), step=step)
            self.assertEqual(transport.value(), b"")
            self.assertFalse(transport.disconnecting)
            self.buffer.commit()
            self.assertEqual(transport.value(), b"2:OK")
            self.assertTrue(transport.disconnecting)
        self.assertEqual(self.buffer.committed, [PAYLOAD] * 4)
        self.assertEqual(self.metrics.accepted, 4)

    def test_buffer_failure_replies_error(self):
        proto, transport = self.feed(wire.encode_frame(PAYLOAD))
        self.buffer.fail()
        self.assertEqual(transport.value(), b"5:ERROR")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.metrics.rejected["buffer-error"], 1)
        self.assertEqual(self.metrics.accepted, 0)

    def test_ping_replies_ok_without_storing(self):
        proto, transport = self.feed(b"15:v1:xxxxxxx:PING", step=1)
        self.assertEqual(transport.value(), b"2:OK")
        self.assertEqual(self.buffer.waiting, [])
        self.assertEqual(self.metrics.pings, 1)

    def test_ping_ignores_token(self):
        factory = self.make_factory(token="secret")
        proto, transport = self.feed(wire.encode_frame(b"PING", token="other"), factory=factory)
        self.assertEqual(transport.value(), b"2:OK")

    def test_token_enforced(self):
        factory = self.make_factory(token="secret")
        proto, transport = self.feed(wire.encode_frame(PAYLOAD, token="secret"), factory=factory)
        self.buffer.commit()
        self.assertEqual(transport.value(), b"2:OK")
        proto, transport = self.feed(wire.encode_frame(PAYLOAD, token="nope"), factory=factory)
        self.assertEqual(transport.value(), b"5:ERROR")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.metrics.rejected["bad-token"], 1)
        self.assertEqual(self.buffer.committed, [PAYLOAD])

    def test_rejections(self):
        cases = [
            (b"x5:v1:abc:[]", "bad-length"),
            (b"99999:", "too-large"),
            (b"9:v2:abc:[]", "bad-version"),
            (b"6:v1abcd", "bad-frame"),
            (wire.encode_frame(b"[1,"), "bad-json"),
            (wire.encode_frame(b'{"t":"request"}'), "not-array"),
            (wire.encode_frame(b"\x1f\x8bnot gzip"), "bad-gzip"),
        ]
        for data, reason in cases:
            for step in (None, 1):
                proto, transport = self.feed(data, step=step)
                self.assertEqual(transport.value(), b"5:ERROR", (data, step))
                self.assertTrue(transport.disconnecting)
                self.assertEqual(self.buffer.waiting, [])
            self.assertEqual(self.metrics.rejected[reason], 2, reason)

    def test_frame_over_limit_declared(self):
        proto, transport = self.feed(b"5000:v1:abc:")
        self.assertEqual(transport.value(), b"5:ERROR")
        self.assertEqual(self.metrics.rejected["too-large"], 1)

    def test_gzip_payload_stored_inflated(self):
        proto, transport = self.feed(wire.encode_frame(gzip.compress(PAYLOAD)))
        self.buffer.commit()
        self.assertEqual(transport.value(), b"2:OK")
        self.assertEqual(self.buffer.committed, [PAYLOAD])

    def test_gzip_bomb(self):
        factory = self.make_factory(max_inflated_bytes=10000)
        bomb = gzip.compress(b"[" + b" " * 100000 + b"]")
        proto, transport = self.feed(wire.encode_frame(bomb), factory=factory)
        self.assertEqual(transport.value(), b"5:ERROR")
        self.assertEqual(self.metrics.rejected["inflated-too-large"], 1)

    def test_incomplete_frame_closed_at_timeout_without_reply(self):
        proto, transport = self.feed(b"100:v1:abc:[")
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(IngestFactory.SWEEP_EVERY)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.metrics.rejected["timeout"], 1)

    def test_no_timeout_after_complete_frame(self):
        proto, transport = self.feed(wire.encode_frame(PAYLOAD))
        self.clock.advance(60)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.buffer.commit()
        self.assertEqual(transport.value(), b"2:OK")

    def test_bytes_after_frame_ignored(self):
        proto, transport = self.feed(wire.encode_frame(PAYLOAD) + b"15:v1:xxxxxxx:PING")
        self.buffer.commit()
        self.assertEqual(transport.value(), b"2:OK")
        self.assertEqual(self.buffer.committed, [PAYLOAD])
        proto.dataReceived(b"more junk")
        self.assertEqual(transport.value(), b"2:OK")

    def test_back_pressure(self):
        self.buffer.refuse_with = "back-pressure"
        proto, transport = self.feed(wire.encode_frame(PAYLOAD))
        self.assertEqual(transport.value(), b"5:ERROR")
        self.assertEqual(self.metrics.rejected["back-pressure"], 1)
        self.buffer.refuse_with = None
        proto, transport = self.feed(wire.encode_frame(PAYLOAD))
        self.buffer.commit()
        self.assertEqual(transport.value(), b"2:OK")

    def test_inflight_memory_cap(self):
        factory = self.make_factory(max_frame_bytes=10000, max_inflight_bytes=6000)
        p1, t1 = self.feed(b"9000:v1:abc:" + b"[" + b"1," * 2000, factory=factory)
        self.assertEqual(t1.value(), b"")
        p2, t2 = self.feed(b"9000:v1:abc:" + b"[" + b"1," * 2000, factory=factory)
        self.assertEqual(t2.value(), b"5:ERROR")
        self.assertEqual(self.metrics.rejected["memory"], 1)
        p1.connectionLost(None)
        self.assertEqual(self.metrics.inflight_bytes, 0)

    def test_client_gone_before_commit_still_stores(self):
        proto, transport = self.feed(wire.encode_frame(PAYLOAD))
        proto.connectionLost(None)
        self.buffer.commit()
        self.assertEqual(self.buffer.committed, [PAYLOAD])
        self.assertEqual(self.metrics.connections_open, 0)

    def test_rejections_logged_rate_limited_without_payload(self):
        from twisted.logger import globalLogPublisher
        events = []
        globalLogPublisher.addObserver(events.append)
        try:
            for _ in range(5):
                self.feed(wire.encode_frame(b'{"secret":"hunter2"}'))
        finally:
            globalLogPublisher.removeObserver(events.append)
        refusals = [e for e in events if e.get("reason") == "not-array"]
        self.assertEqual(len(refusals), 1)
        self.assertNotIn("hunter2", repr(refusals))
        self.clock.advance(11)
        events = []
        globalLogPublisher.addObserver(events.append)
        try:
            self.feed(wire.encode_frame(b'{"a":1}'))
        finally:
            globalLogPublisher.removeObserver(events.append)
        refusals = [e for e in events if e.get("reason") == "not-array"]
        self.assertEqual(refusals[0]["suppressed"], 4)


class IngestProtocolWaiterTests(IngestProtocolTests):
    """Every test above again, with a buffer that fires per-payload waiters."""

    def setUp(self):
        IngestProtocolTests.setUp(self)
        self.buffer = WaiterBuffer()
        self.factory = self.make_factory()
        self.assertTrue(self.factory.waiters)

    def test_an_error_acking_one_payload_does_not_stop_the_others(self):
        protos = [self.feed(wire.encode_frame(PAYLOAD)) for _ in range(3)]
        broken = protos[0][0]

        def boom(*args):
            raise RuntimeError("bug")
        broken._stored = boom
        self.buffer.commit()
        self.assertEqual([t.value() for _p, t in protos[1:]], [b"2:OK", b"2:OK"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_a_plain_exception_errback_replies_error(self):
        _proto, transport = self.feed(wire.encode_frame(PAYLOAD))
        self.buffer.fail(IOError("disk full"))
        self.assertEqual(transport.value(), b"5:ERROR")
        self.assertEqual(self.metrics.rejected["buffer-error"], 1)
