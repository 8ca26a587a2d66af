"""
The baseline for ``nightowl bench ingest``: a bare Twisted server that reads
the ``<len>:`` prefix, waits for that many bytes, replies ``2:OK`` and closes.
No parsing beyond the prefix, no storage.

    python -m nightowl.bench.bareserver --port 0 [--interface 127.0.0.1]

Prints ``listening <port>`` on stdout once bound, then serves until killed.
"""

import argparse
import sys

from twisted.internet import protocol


class BareProtocol(protocol.Protocol):
    """One frame per connection: the length prefix, the body, ``2:OK``."""

    maxPrefix = 12

    def connectionMade(self):
        self._buf = b""
        self._need = None

    def dataReceived(self, data):
        if self._need is None:
            self._buf += data
            colon = self._buf.find(b":")
            if colon < 0:
                if len(self._buf) > self.maxPrefix:
                    self.transport.abortConnection()
                return
            try:
                self._need = int(self._buf[:colon])
            except ValueError:
                self.transport.write(b"5:ERROR")
                self.transport.loseConnection()
                return
            self._need -= len(self._buf) - colon - 1
            self._buf = b""
        else:
            self._need -= len(data)
        if self._need <= 0:
            self._need = 1 << 62  # ignore anything after the frame
            self.transport.write(b"2:OK")
            self.transport.loseConnection()


class BareFactory(protocol.ServerFactory):
    protocol = BareProtocol
    noisy = False


def main(argv=None, reactor=None):
    parser = argparse.ArgumentParser(prog="python -m nightowl.bench.bareserver")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--backlog", type=int, default=4096)
    args = parser.parse_args(argv)
    if reactor is None:
        from twisted.internet import reactor
    port = reactor.listenTCP(args.port, BareFactory(), backlog=args.backlog,
                             interface=args.interface)
    sys.stdout.write("listening {}\n".format(port.getHost().port))
    sys.stdout.flush()
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
