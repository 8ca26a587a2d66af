"""
A recording upstream for the forwarding trials and tests: a small Twisted
server speaking the SDK's protocol (one frame per connection, reply
``2:OK``, or ``--reply``) that appends every complete frame, byte for byte,
to ``--record`` before replying (frames are self-delimiting: ``<len>:``).

    python -m nightowl.bench.faults.upstream --port 0 --record FILE

prints ``listening <port>`` once bound.  ``Upstream`` starts and kills it
from a trial; ``read_frames`` parses the record.
"""

import argparse
import signal
import subprocess
import sys
import time

from nightowl.bench.agent import agent_env


def read_frames(path):
    """The frames recorded in ``path``, in arrival order (a torn tail is left out)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    frames, at = [], 0
    while at < len(data):
        colon = data.find(b":", at)
        if colon < 0:
            break
        end = colon + 1 + int(data[at:colon])
        if end > len(data):
            break
        frames.append(data[at:end])
        at = end
    return frames


class Upstream:
    """The recorder as a child process on ``port`` (0: any free port, kept across restarts)."""

    def __init__(self, record, port=0, reply="2:OK"):
        self.record = record
        self.port = port
        self.reply = reply
        self.proc = None

    def start(self, timeout=15.0):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nightowl.bench.faults.upstream", "--port", str(self.port),
             "--record", self.record, "--reply", self.reply],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=agent_env(), text=True)
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline()
        if not line.startswith("listening ") or time.monotonic() > deadline:
            self.kill()
            raise RuntimeError("the upstream recorder did not start: {!r}".format(line))
        self.port = int(line.split()[1])
        return self

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None

    def frames(self):
        return read_frames(self.record)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="nightowl-upstream")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--record", required=True)
    parser.add_argument("--reply", default="2:OK")
    args = parser.parse_args(argv)

    from twisted.internet import protocol, reactor

    out = open(args.record, "ab", buffering=0)
    reply = args.reply.encode()

    class Recorder(protocol.Protocol):
        def connectionMade(self):
            self.data = b""

        def dataReceived(self, data):
            self.data += data
            colon = self.data.find(b":")
            if colon < 0:
                return
            end = colon + 1 + int(self.data[:colon])
            if len(self.data) >= end:
                out.write(self.data[:end])    # unbuffered: recorded before the reply
                self.data = b""
                self.transport.write(reply)
                self.transport.loseConnection()

    factory = protocol.Factory.forProtocol(Recorder)
    port = reactor.listenTCP(args.port, factory, backlog=1024, interface="127.0.0.1")
    print("listening {}".format(port.getHost().port), flush=True)
    reactor.run()
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
