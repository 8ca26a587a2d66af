"""Fakes shared by the tests: in-memory collaborators, not mocks."""

import queue

from twisted.internet import defer


class MemoryBuffer:
    """
    The ingest side of the BufferWriter API, in memory.  ``append`` returns
    a Deferred the test fires with ``commit()`` (or ``fail()``), so tests can
    check that nothing is acknowledged before the commit.
    """

    def __init__(self):
        self.waiting = []
        self.committed = []
        self.refuse_with = None

    def refusal(self, size=0):
        return self.refuse_with

    def append(self, payload, checked=False):
        # Like BufferWriter: the JSON is checked before the payload is taken
        # (unless the frame checker already did).
        from nightowl import wire
        try:
            if not checked:
                wire.check_json_array(payload)
        except wire.FrameError as e:
            return defer.fail(e)
        d = defer.Deferred()
        self.waiting.append((payload, d))
        return d

    def commit(self):
        waiting, self.waiting = self.waiting, []
        for payload, d in waiting:
            self.committed.append(payload)
            d.callback(None)

    def fail(self, error=None):
        waiting, self.waiting = self.waiting, []
        for payload, d in waiting:
            d.errback(error or IOError("disk full"))


class WaiterBuffer(MemoryBuffer):
    """L{MemoryBuffer} taking the ingest's per-payload waiters, as BufferWriter does."""

    takes_waiters = True

    def append(self, payload, checked=False, waiter=None):
        if waiter is None:
            return MemoryBuffer.append(self, payload, checked)
        from nightowl import wire
        try:
            if not checked:
                wire.check_json_array(payload)
        except wire.FrameError as e:
            waiter.errback(e)
            return waiter
        self.waiting.append((payload, waiter))
        return waiter


class ThreadReactor:
    """
    Enough of a reactor for BufferWriter in a synchronous test: calls made
    with callFromThread are queued and run by ``wait(d)`` on the test thread.
    """

    def __init__(self):
        self.calls = queue.Queue()

    def callFromThread(self, f, *args, **kwargs):
        self.calls.put((f, args, kwargs))

    def seconds(self):
        import time
        return time.time()

    def callLater(self, delay, f, *args, **kwargs):
        self.calls.put((f, args, kwargs))

    def wait(self, d, timeout=10.0):
        results = []
        d.addBoth(results.append)
        while not results:
            f, args, kwargs = self.calls.get(timeout=timeout)
            f(*args, **kwargs)
        result = results[0]
        if hasattr(result, "raiseException"):
            result.raiseException()
        return result


from twisted.internet.testing import MemoryReactorClock  # noqa: E402


class MemoryThreadReactor(MemoryReactorClock):
    """MemoryReactorClock plus the callFromThread queue of L{ThreadReactor}."""

    def __init__(self):
        MemoryReactorClock.__init__(self)
        self._threaded = ThreadReactor()

    def callFromThread(self, f, *args, **kwargs):
        self._threaded.callFromThread(f, *args, **kwargs)

    def callLater(self, delay, f, *args, **kwargs):
        if delay == 0:
            self._threaded.callFromThread(f, *args, **kwargs)
            return None
        return MemoryReactorClock.callLater(self, delay, f, *args, **kwargs)

    def wait(self, d, timeout=10.0):
        return self._threaded.wait(d, timeout)


def supervisor_settings(options):
    """DrainSupervisor's named settings from a tap.Options-like dict (tests only)."""
    return dict(dsn=options.get("dsn"), workers=options.get("drain-workers", 2),
                batch_size=options.get("batch-size", 5000),
                batch_bytes=options.get("batch-bytes", 64 * 1024 * 1024),
                environment=options.get("environment", "production"),
                migrate=not options.get("no-migrate"),
                worker_timeout=options.get("worker-timeout", 60.0),
                buffer_path=options.get("buffer"))
