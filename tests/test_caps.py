"""
Memory caps (issue 14, items 3 and 5) without sockets: the writer queue is
bounded in bytes, the frame checker's budget bounds the bytes big and gzip
frames may hold while they are inflated and checked, and a refusal is a
counted ``5:ERROR`` (back-pressure), never growth.
"""

import gzip
import threading

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from nightowl import wire
from nightowl.buffer import BufferWriter
from nightowl.checker import FrameChecker
from nightowl.ingest import IngestFactory
from nightowl.metrics import Metrics
from tests.fakes import MemoryBuffer, ThreadReactor


def test_the_writer_queue_is_bounded_in_bytes(tmp_path):
    reactor = ThreadReactor()
    w = BufferWriter(str(tmp_path / "b.sqlite"), reactor=reactor, max_queue_bytes=1000)
    w.open()
    try:
        payload = b"[" + b"1," * 300 + b"1]"
        assert w.refusal(len(payload)) is None
        first = w.append(payload)
        assert w.stats()["queued_bytes"] == len(payload)
        # one more would take the queue past 1000 bytes: refused, counted by the caller
        assert w.refusal(len(payload)) == "back-pressure"
        assert w.refusal(10) is None
        reactor.wait(first)
        assert w.stats()["queued_bytes"] == 0
        assert w.refusal(len(payload)) is None
        # an idle queue always takes one payload, however big
        assert w.refusal(10 * 1000) is None
    finally:
        reactor.wait(w.close())


def frame_of(payload):
    return wire.split_body(wire.encode_frame(payload).split(b":", 1)[1])


def test_the_checker_budget_counts_what_a_gzip_frame_may_inflate_to():
    checker = FrameChecker(Clock(), None, max_inflated_bytes=64 << 20, max_bytes=8 << 20)
    bomb = gzip.compress(b"[" + b"[]," * (3 << 20) + b"[]]", 9)
    small_gzip = gzip.compress(b"[1]")
    assert checker.wants(frame_of(bomb)) and checker.wants(frame_of(small_gzip))
    assert not checker.wants(frame_of(b"[1]"))
    assert checker.need(frame_of(bomb)) > 8 << 20      # may inflate past the budget
    assert checker.refusal(frame_of(bomb)) is None     # idle: one frame always fits
    checker.reserved, checker.frames = checker.need(frame_of(bomb)), 1
    assert checker.refusal(frame_of(small_gzip)) == "back-pressure"
    assert checker.refused == 1


class HeldChecker(FrameChecker):
    """A FrameChecker whose thread is the test: open() queues, finish() decodes."""

    def __init__(self, *a, **kw):
        FrameChecker.__init__(self, *a, **kw)
        self._thread = threading.current_thread()
        self.held = []

    def open(self, frame):
        d = FrameChecker.open(self, frame)
        self.held.append(self._queue.get())
        return d

    def finish(self):
        for frame, d in self.held:
            d.callback(wire.decode_payload(frame, None, self.max_inflated_bytes))
        self.held = []


def connect(factory):
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport


def test_a_big_frame_in_the_checker_does_not_hold_small_acks_and_a_full_one_refuses():
    clock = Clock()
    buffer = MemoryBuffer()
    metrics = Metrics(clock)
    checker = HeldChecker(clock, None, max_inflated_bytes=64 << 20, max_bytes=1 << 20,
                          threshold=1024)
    factory = IngestFactory(buffer, metrics, reactor=clock, checker=checker,
                            max_frame_bytes=10 << 20)
    big = b"[" + b",".join([b"[]"] * 200000) + b"]"
    _p, big_t = connect(factory)
    _p.dataReceived(wire.encode_frame(big))
    assert len(checker.held) == 1 and checker.reserved == len(big)
    # small frames go straight to the buffer and are acked while the big one is held
    for _ in range(5):
        _p2, t = connect(factory)
        _p2.dataReceived(wire.encode_frame(b"[1]"))
        buffer.commit()
        assert t.value() == b"2:OK"
    # a second big frame does not fit in the 1 MiB budget: 5:ERROR, counted,
    # as soon as its length prefix is read
    _p3, t3 = connect(factory)
    second = wire.encode_frame(big)
    _p3.dataReceived(second[:100])
    assert t3.value() == b"5:ERROR"
    assert metrics.rejected["back-pressure"] == 1
    _p4, t4 = connect(factory)
    _p4.dataReceived(second)
    assert t4.value() == b"5:ERROR"
    assert metrics.rejected["back-pressure"] == 2
    assert big_t.value() == b""
    checker.finish()
    assert checker.reserved == 0
    buffer.commit()
    assert big_t.value() == b"2:OK"
    assert buffer.committed[-1] == big
