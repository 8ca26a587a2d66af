"""
The ingest port: a Twisted TCP port that reads each new connection's frame
at accept time and, when the whole frame is already there (the SDK connects,
writes one frame and waits), serves it without registering the socket with
the reactor at all.

A bare Twisted connection costs, besides accept: a C{tcp.Server}, an epoll
registration, a reactor iteration to read, a buffered write, a second
registration and iteration to flush it, and the deregistration on close.  An
SDK connection needs none of that once its frame is in hand: the ``2:OK`` (or
``5:ERROR``) is 4 or 7 bytes written into an empty send buffer, then the
socket is closed.  L{DirectTransport} is that transport.

A frame that has not fully arrived at accept time (large, or split by the
sender) gets an ordinary C{tcp.Server}, with the bytes already read handed
to the protocol first: the protocol sees the same bytes either way.

On Linux the listening socket also gets ``TCP_DEFER_ACCEPT``: the kernel
hands over a connection only once its first bytes have arrived, so accept
time is when the frame is there.  A client that connects and sends nothing is
still accepted, after the defer period, and then meets the frame timeout.
"""

import socket

from twisted.application import service
from twisted.internet import address, main, tcp
from twisted.python.failure import Failure

from nightowl.wire import frame_decided

# Read at accept time: a frame up to this size is served without the reactor.
FIRST_READ = 65536
# Seconds the kernel may hold a connection that has sent nothing (Linux).
DEFER_ACCEPT = 1
_DONE = Failure(main.CONNECTION_DONE)
_DONTWAIT = socket.MSG_DONTWAIT


class DirectTransport:
    """
    A connection whose frame arrived whole: ``write`` sends at once and
    ``loseConnection`` closes the socket and tells the protocol.  Only what
    L{nightowl.ingest.IngestProtocol} uses, plus the addresses.
    """

    __slots__ = ("socket", "protocol", "disconnecting", "connected", "acked", "_peer", "_port")

    def __init__(self, skt, protocol, peer, port):
        self.socket = skt
        self.protocol = protocol
        self.disconnecting = False
        self.connected = True
        # set by ack_from_thread: the reply is sent and the socket closed
        self.acked = False
        self._peer = peer
        self._port = port

    def ack_from_thread(self, message):
        """
        Send ``message`` and close the socket, from the buffer's writer
        thread right after the commit: no reactor holds this socket, so the
        SDK need not wait for the reactor to wake.  The protocol's own
        ``write`` and ``loseConnection`` later (on the reactor) then only do
        the bookkeeping.
        """
        self.write(message)
        self._close()
        self.acked = True

    def write(self, data):
        if self.disconnecting or self.acked:
            return
        try:
            self.socket.send(data, _DONTWAIT)  # a few bytes into an empty send buffer
        except OSError:
            pass  # the client gave up: nothing to tell it

    def writeSequence(self, seq):
        self.write(b"".join(seq))

    def loseConnection(self, _reason=None):
        if self.disconnecting:
            return
        self.disconnecting = True
        self.connected = False
        if not self.acked:
            self._close()
        protocol, self.protocol = self.protocol, None
        protocol.connectionLost(_DONE)

    abortConnection = loseConnection

    def _close(self):
        try:
            self.socket.close()
        except OSError:
            pass

    def getPeer(self):
        return address.IPv4Address("TCP", *self._peer[:2]) if len(self._peer) == 2 else \
            address.IPv6Address("TCP", *self._peer[:2])

    def getHost(self):
        return self._port.getHost()

    def pauseProducing(self):
        pass

    resumeProducing = stopProducing = pauseProducing


class IngestPort(tcp.Port):
    """
    A TCP port whose connections are served directly when their frame is
    whole.  Only a protocol with an ``early`` attribute (bytes read before
    C{makeConnection}, which it must feed itself) gets the first read; any
    other protocol gets a plain C{tcp.Server}.
    """

    direct = 0  # connections served without the reactor
    through_reactor = 0  # connections given a tcp.Server

    def createInternetSocket(self):
        skt = tcp.Port.createInternetSocket(self)
        defer_accept = getattr(socket, "TCP_DEFER_ACCEPT", None)
        if defer_accept is not None:
            try:
                skt.setsockopt(socket.IPPROTO_TCP, defer_accept, DEFER_ACCEPT)
            except OSError:
                pass
        return skt

    def transport(self, skt, protocol, addr, port, sessionno, reactor):
        """Called by C{tcp.Port.doRead} for each accepted socket."""
        if not hasattr(protocol, "early"):
            self.through_reactor += 1
            return tcp.Server(skt, protocol, addr, port, sessionno, reactor)
        try:
            # MSG_DONTWAIT rather than setblocking: one system call fewer
            # (tcp.Server makes the socket non-blocking itself)
            data = skt.recv(FIRST_READ, _DONTWAIT)
        except BlockingIOError:
            data = None
        except OSError:
            data = b""
        if data and frame_decided(data):
            self.direct += 1
            transport = DirectTransport(skt, protocol, addr, port)
        else:
            self.through_reactor += 1
            transport = tcp.Server(skt, protocol, addr, port, sessionno, reactor)
        if data:
            protocol.early = data
        return transport


class IngestPortService(service.Service):
    """
    The ingest listener for a ``tcp:`` description: like
    ``strports.service(description, factory)``, but the port is an
    L{IngestPort} (``port_class``).  Binds in ``privilegedStartService`` so
    that a port that cannot be bound stops startup (``CannotListenError``).
    """

    name = "ingest"
    port_class = IngestPort

    def __init__(self, description, factory, reactor=None):
        from nightowl.reuseport import parse_tcp
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.port_number, self.interface, self.backlog = parse_tcp(description)
        self.factory = factory
        self._listening = None

    def privilegedStartService(self):
        if self._listening is None:
            port = self.port_class(self.port_number, self.factory, self.backlog,
                                   self.interface, reactor=self.reactor)
            port.startListening()
            self._listening = port
        service.Service.privilegedStartService(self)

    def startService(self):
        self.privilegedStartService()
        service.Service.startService(self)

    def stopService(self):
        service.Service.stopService(self)
        port, self._listening = self._listening, None
        if port is not None:
            return port.stopListening()
        return None

    def port(self):
        """The bound IListeningPort, or None (as L{nightowl.listen.ListenerService})."""
        return self._listening
