"""
The ingest port (nightowl.fastaccept): real loopback sockets, the port's
accept loop (Twisted's own ``doRead``) driven by hand on a MemoryReactor,
and the in-memory buffer whose commits the test controls.
"""

import socket
import sys

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock

from nightowl import fastaccept, wire
from nightowl.ingest import IngestFactory
from nightowl.metrics import Metrics
from tests.fakes import MemoryBuffer

PAYLOAD = b'[{"v":1,"t":"request","url":"https:\\/\\/app.test\\/"}]'


@pytest.mark.parametrize("data, whole", [
    (wire.encode_frame(PAYLOAD), True),
    (wire.encode_frame(PAYLOAD)[:-1], False),
    (b"12", False),                 # the length prefix itself is not complete
    (b"5:v1:", False),
    (b"nonsense:", True),           # refused by the parser at once
    (b"123456789012345", True),     # no colon in 12 bytes: refused at once
    (wire.encode_frame(PAYLOAD) + b"extra", True),
    (b"123456789012", False),       # 12 digits: the parser still waits for the colon
])
def test_frame_decided(data, whole):
    assert wire.frame_decided(data) is whole


def test_frame_decided_never_says_so_while_the_parser_waits():
    frames = [wire.encode_frame(PAYLOAD), b"9:v9:abc:[]", b"0:", b"12345678901234:x",
              b"x:", b"40:v1:" + b"a" * 10]
    for frame in frames:
        for cut in range(1, len(frame) + 1):
            data = frame[:cut]
            if not wire.frame_decided(data):
                continue
            parser = wire.FrameParser(4096)
            try:
                assert parser.feed(data) is not None, data
            except wire.FrameError:
                pass


class Served:
    """An IngestPort on a MemoryReactor, its factory, and clients on loopback."""

    def __init__(self, factory=None):
        self.clock = Clock()
        self.buffer = MemoryBuffer()
        self.metrics = Metrics(self.clock)
        self.factory = factory or IngestFactory(self.buffer, self.metrics, reactor=self.clock)
        self.reactor = MemoryReactorClock()
        self.port = fastaccept.IngestPort(0, self.factory, 50, "127.0.0.1", reactor=self.reactor)
        self.port.startListening()
        self.clients = []

    def connect(self, data, close=False):
        client = socket.create_connection(("127.0.0.1", self.port.getHost().port))
        self.clients.append(client)
        client.sendall(data)
        if close:
            client.shutdown(socket.SHUT_WR)
        return client

    def accept(self):
        """Twisted's accept loop, as the reactor would run it."""
        self.port.doRead()

    def close(self):
        for c in self.clients:
            c.close()
        for reader in list(self.reactor.readers):
            if isinstance(reader, tcp.Server):
                reader.socket.close()
        self.port.socket.close()


@pytest.fixture
def served():
    s = Served()
    yield s
    s.close()


def reply(client, timeout=5.0):
    client.settimeout(timeout)
    out = b""
    while True:
        chunk = client.recv(100)
        if not chunk:
            return out
        out += chunk


def nothing_yet(client):
    client.setblocking(False)
    try:
        return client.recv(100) == b""
    except BlockingIOError:
        return True
    finally:
        client.setblocking(True)


def test_whole_frame_is_served_without_the_reactor_and_acked_after_commit(served):
    client = served.connect(wire.encode_frame(PAYLOAD))
    served.accept()
    assert served.port.direct == 1 and served.port.through_reactor == 0
    assert not [r for r in served.reactor.readers if isinstance(r, tcp.Server)]
    assert [p for p, _d in served.buffer.waiting] == [PAYLOAD]
    assert nothing_yet(client)          # no ack before the commit
    assert served.metrics.connections_open == 1
    served.buffer.commit()
    assert reply(client) == b"2:OK"     # then the connection is closed
    assert served.buffer.committed == [PAYLOAD]
    assert served.metrics.accepted == 1
    assert served.metrics.connections_open == 0
    assert served.factory._watched == {}


def test_malformed_frame_gets_error_and_close_at_once(served):
    client = served.connect(b"9:v9:abc:[]")
    served.accept()
    assert reply(client) == b"5:ERROR"
    assert served.buffer.waiting == []
    assert served.metrics.connections_open == 0


def test_not_json_refused_after_the_whole_frame(served):
    client = served.connect(wire.encode_frame(b"[not json"))
    served.accept()
    assert reply(client) == b"5:ERROR"
    assert served.buffer.waiting == [] and served.buffer.committed == []


def test_failed_commit_replies_error(served):
    client = served.connect(wire.encode_frame(PAYLOAD))
    served.accept()
    served.buffer.fail()
    assert reply(client) == b"5:ERROR"
    assert served.metrics.connections_open == 0


def test_split_frame_goes_through_the_reactor_with_the_bytes_already_read(served):
    frame = wire.encode_frame(PAYLOAD)
    served.connect(frame[:20])
    served.accept()
    assert served.port.direct == 0 and served.port.through_reactor == 1
    [server] = [r for r in served.reactor.readers if isinstance(r, tcp.Server)]
    proto = server.protocol
    assert proto._parser.buffered > 0   # the 20 bytes were fed, not lost
    proto.dataReceived(frame[20:])      # what the reactor's next read would deliver
    assert [p for p, _d in served.buffer.waiting] == [PAYLOAD]
    served.buffer.commit()
    assert server.dataBuffer + b"".join(server._tempDataBuffer) == b"2:OK"


def test_client_gone_before_commit_still_stores(served):
    client = served.connect(wire.encode_frame(PAYLOAD))
    served.accept()
    client.close()
    served.buffer.commit()              # the ack goes nowhere, without an error
    assert served.buffer.committed == [PAYLOAD]
    assert served.metrics.connections_open == 0


def test_many_connections_in_one_accept_loop(served):
    clients = [served.connect(wire.encode_frame(PAYLOAD)) for _ in range(30)]
    while served.port.direct + served.port.through_reactor < 30:
        served.accept()
    assert served.port.direct == 30
    served.buffer.commit()
    assert [reply(c) for c in clients] == [b"2:OK"] * 30


def test_a_protocol_without_early_gets_a_plain_server_and_its_bytes_unread():
    class Plain(Protocol):
        pass
    s = Served(factory=Factory.forProtocol(Plain))
    try:
        s.connect(b"hello")
        s.accept()
        [server] = [r for r in s.reactor.readers if isinstance(r, tcp.Server)]
        assert s.port.through_reactor == 1
        assert server.socket.recv(10) == b"hello"
    finally:
        s.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_DEFER_ACCEPT is Linux's")
def test_listening_socket_defers_accept_until_data(served):
    value = served.port.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT)
    assert value > 0


class WriterServed(Served):
    """Served, on the real BufferWriter: its writer thread commits and acks."""

    def __init__(self, path):
        from nightowl.buffer.writer import BufferWriter
        from tests.fakes import ThreadReactor
        self.threads = ThreadReactor()
        self.writer = BufferWriter(path, reactor=self.threads)
        self.writer.open()
        clock = Clock()
        metrics = Metrics(clock)
        Served.__init__(self, IngestFactory(self.writer, metrics, reactor=clock))
        self.metrics = metrics

    def run_reactor_call(self):
        """One call the writer (or append's flush) left for the reactor thread."""
        f, args, kwargs = self.threads.calls.get(timeout=10)
        f(*args, **kwargs)

    def close(self):
        Served.close(self)
        self.threads.wait(self.writer.close())


def test_direct_connection_is_acked_by_the_writer_thread_before_the_reactor_runs(tmp_path):
    s = WriterServed(str(tmp_path / "b.sqlite"))
    try:
        client = s.connect(wire.encode_frame(PAYLOAD))
        s.accept()
        assert s.port.direct == 1
        assert nothing_yet(client)
        s.run_reactor_call()            # the flush: the batch goes to the writer thread
        # committed, and answered from the writer thread, with the reactor idle
        assert reply(client) == b"2:OK"
        assert s.writer.appended == 1
        assert s.metrics.accepted == 0 and s.metrics.connections_open == 1
        s.run_reactor_call()            # the bookkeeping, on the reactor
        assert s.metrics.accepted == 1 and s.metrics.connections_open == 0
        assert s.writer.inflight == 0
    finally:
        s.close()


def test_payload_the_writer_refuses_is_answered_error_by_the_reactor(tmp_path):
    s = WriterServed(str(tmp_path / "b.sqlite"))
    try:
        client = s.connect(wire.encode_frame(b'[{"a": nope}]'))
        s.accept()
        s.run_reactor_call()            # the flush
        s.run_reactor_call()            # the refusal, delivered to the reactor
        assert reply(client) == b"5:ERROR"
        assert s.writer.appended == 0
        assert s.metrics.accepted == 0 and s.metrics.connections_open == 0
    finally:
        s.close()
