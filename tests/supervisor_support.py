"""
The DrainSupervisor's test doubles, without real processes: a
MemoryReactorClock that records spawnProcess, fake process transports and
an in-memory BufferWriter; and the base case of tests/test_supervisor_*.py.
"""

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


def settings(dsn="host=db user=u password=secret dbname=n", workers=2, batch_size=100,
             batch_bytes=None, environment="staging", migrate=True, worker_timeout=60.0,
             buffer_path="/tmp/b.sqlite"):
    """DrainSupervisor's keyword arguments, as makeService passes them."""
    return dict(dsn=dsn, workers=workers, batch_size=batch_size, batch_bytes=batch_bytes,
                environment=environment, migrate=migrate, worker_timeout=worker_timeout,
                buffer_path=buffer_path)


def capture_log(case):
    """Every log event published until ``case`` ends, in a list (the list)."""
    from twisted.logger import globalLogPublisher
    seen = []
    globalLogPublisher.addObserver(seen.append)
    case.addCleanup(globalLogPublisher.removeObserver, seen.append)
    return seen


class SupervisorCase(SynchronousTestCase):
    """A supervisor over 250 fake payloads and a SpawningReactor; start() starts it."""

    def setUp(self):
        self.reactor = SpawningReactor()
        self.buffer = FakeBufferWriter(count=250)
        self.metrics = Metrics(self.reactor)

    def start(self, finish_maintenance=True, **kw):
        sup = DrainSupervisor(self.buffer, self.metrics, reactor=self.reactor, **settings(**kw))
        sup.startService()
        if finish_maintenance and self.reactor.maintenance():
            self.reactor.maintenance()[-1]["transport"].end(0)
        return sup
