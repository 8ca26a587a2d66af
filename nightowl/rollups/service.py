"""
``DeriveService``: every minute, derive the pending hour and day rollups
from the minutes (``nightowl.rollups.derive.run``) on a one-thread pool of
its own, never on the reactor.  Every error is caught and logged once per
outage; the loop goes on.  Several agents on one database may all run it:
``derive.run`` lets one at a time work and the others skip.
"""

from twisted.application import service
from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from nightowl.rollups import derive

DERIVE_EVERY = 60.0


def derive_once(dsn, connect=None):
    """One derivation pass (blocking: run it in a thread); returns derive.run's result."""
    if connect is None:
        import psycopg2
        connect = psycopg2.connect
    conn = connect(dsn, connect_timeout=10, application_name="nightowl-rollup-derive")
    try:
        return derive.run(conn)
    finally:
        conn.close()


class DeriveService(service.Service):
    name = "rollup-derive"
    log = Logger()

    def __init__(self, dsn, reactor=None, every=DERIVE_EVERY, derive=derive_once):
        if reactor is None:
            from twisted.internet import reactor
        self.dsn = dsn
        self.reactor = reactor
        self.every = every
        self._derive = derive
        self.pool = None
        self._loop = None
        self._looped = None
        self._failing = False
        self.last = None        # hours derived by the last pass (None: skipped or failed)

    def startService(self):
        service.Service.startService(self)
        self.pool = ThreadPool(minthreads=0, maxthreads=1, name="nightowl-rollup-derive")
        self.pool.start()
        self._loop = task.LoopingCall(self.run_once)
        self._loop.clock = self.reactor
        # fires when the loop stops (after the pass in flight, if any)
        self._looped = self._loop.start(self.every, now=False).addErrback(
            lambda f: self.log.failure("rollup derivation loop stopped", f))

    def run_once(self):
        """One pass in the pool; fires with the hours derived (never fails)."""
        d = threads.deferToThreadPool(self.reactor, self.pool, self._derive, self.dsn)
        d.addCallbacks(self._done, self._failed)
        return d

    def _done(self, derived):
        self.last = derived
        if self._failing:
            self._failing = False
            self.log.info("rollup derivation works again")
        return derived

    def _failed(self, failure):
        self.last = None
        if not self._failing:
            self._failing = True
            self.log.error("rollup derivation failed (retrying every {every} s): {error}",
                           every=self.every, error=failure.getErrorMessage().strip())
        return None

    def stopService(self):
        """Stop the loop; once a pass in flight has finished, stop the pool."""
        service.Service.stopService(self)
        loop, self._loop = self._loop, None
        pool, self.pool = self.pool, None
        d = defer.succeed(None)
        if loop is not None and loop.running:
            d = self._looped
            loop.stop()
        if pool is not None:
            d.addBoth(lambda _: pool.stop())
        return d
