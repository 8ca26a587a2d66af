"""
Migrations and partitions, always in a killable child process with a
deadline, so the agent's reactor never waits on Postgres and a migration
stuck on a lock never holds up ingest or shutdown.

Child side: ``python -m nightowl.drain.worker maintenance`` runs ``main``:
apply the migrations (unless NIGHTOWL_MIGRATE=0) and ensure the daily
partitions ahead, then exit 0 (ok), 3 (migration failed, its one-line cause
reported on stdout as an ``ipc.REPORT``) or 4 (partitions failed).

Agent side: ``Maintenance`` runs that child at boot (retrying a failed
migration with the supervisor's backoff until it succeeds; each failure is
one log line naming the cause, from ``nightowl.pgerrors``) and every hour
for the partitions.
"""

import sys

from twisted.internet import defer, protocol, task
from twisted.logger import Logger

from nightowl.drain import ipc
from nightowl.drain.pipes import ChildLines, log_lines, signal_process

EVERY = 3600.0       # seconds between partition sweeps
DEADLINE = 300.0     # a child still running after this is killed
WORKER_MODULE = "nightowl.drain.worker"


# -- the child --------------------------------------------------------------

def main(environ, log):
    """The maintenance child's work; its exit code."""
    from nightowl.drain.worker import describe_error
    dsn = environ.get("NIGHTOWL_DSN", "").strip()
    if not dsn:
        log("error", "NIGHTOWL_DSN is not set")
        return 2
    if environ.get("NIGHTOWL_MIGRATE", "1") != "0":
        try:
            from nightowl import migrate
            result = migrate.apply(dsn)   # also ensures the partitions (and creates the db)
        except Exception as e:
            # the supervisor logs this one line with its retry delay
            _report(describe_error(e))
            return 3
        log("info", "migrations applied: {}".format(
            ", ".join(result) if result else "schema up to date"))
        return 0
    try:
        import psycopg2
        from nightowl import partitions
        conn = psycopg2.connect(dsn)
        try:
            partitions.ensure_partitions(conn)
            conn.commit()
        finally:
            conn.close()
    except Exception as e:
        log("error", "partition maintenance failed: {}".format(describe_error(e)))
        return 4
    return 0


def _report(error):
    """The maintenance child's outcome, one IPC line on stdout for the supervisor."""
    try:
        sys.stdout.buffer.write(ipc.encode({"op": ipc.REPORT, "error": error}))
        sys.stdout.flush()
    except (OSError, ValueError):
        pass


# -- the agent's side ---------------------------------------------------------

class MaintenanceProtocol(protocol.ProcessProtocol):
    """The short-lived migrate/partition child; fires ``done`` with (code, signal)."""

    log = Logger()

    def __init__(self, what):
        self.what = what
        self.done = defer.Deferred()
        self.ended = False
        self.error = None          # the child's one-line cause, if it failed
        self._out = ChildLines(self._line, lambda line: None)
        self._err = log_lines(self.log, "drain {what}: {line}", what=what)

    def connectionMade(self):
        self.transport.closeStdin()

    def outReceived(self, data):
        self._out.dataReceived(data)

    def _line(self, line):
        try:
            message = ipc.decode(line)
        except ipc.ProtocolError:
            return
        if message["op"] == ipc.REPORT and message.get("error"):
            self.error = str(message["error"])[:1000]

    def errReceived(self, data):
        self._err.dataReceived(data)

    def signal(self, name):
        if not self.ended:
            signal_process(self.transport, name)

    def processEnded(self, reason):
        self.ended = True
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        self.done.callback((code, sig))


class Maintenance:
    """
    Runs the maintenance child for the supervisor: ``boot(migrate)`` once,
    ``start_hourly()`` after, ``stop()`` on shutdown.  ``environ()`` gives the
    child's base environment; ``backoff(attempt)`` the delay before migration
    retry ``attempt``.
    """

    log = Logger()

    def __init__(self, reactor, environ, backoff):
        self.reactor = reactor
        self.environ = environ
        self.backoff = backoff
        self.running = None        # the MaintenanceProtocol of the child now running
        self.migrated = None       # None: not tried, True/False: last outcome
        self.migration_error = None  # the last failed migration's cause, one line
        self.stopping = False
        self._retry_call = None
        self._hourly = None

    def boot(self, migrate):
        """The first run (migrations if ``migrate``); fires once it ended, ok or not."""
        d = self.run(migrate=migrate)
        if migrate:
            d.addCallback(self._migrationEnded, 0)
        return d

    def start_hourly(self):
        self._hourly = task.LoopingCall(self._sweep)
        self._hourly.clock = self.reactor
        self._hourly.start(EVERY, now=False)

    def stop(self):
        self.stopping = True
        if self._hourly is not None and self._hourly.running:
            self._hourly.stop()
        self._hourly = None
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self._retry_call = None
        if self.running is not None:
            self.running.signal("TERM")

    def run(self, migrate):
        if self.stopping or self.running is not None:
            return defer.succeed(None)
        what = "migrate+partitions" if migrate else "partitions"
        proto = MaintenanceProtocol(what)
        env = self.environ()
        env["NIGHTOWL_MIGRATE"] = "1" if migrate else "0"
        self.running = proto
        self.reactor.spawnProcess(
            proto, sys.executable, [sys.executable, "-m", WORKER_MODULE, "maintenance"],
            env=env, childFDs={0: "w", 1: "r", 2: "r"})
        deadline = self.reactor.callLater(DEADLINE, self._timeout, proto)

        def ended(result):
            code, sig = result
            if deadline.active():
                deadline.cancel()
            self.running = None
            ok = code == 0
            if migrate:
                self.migrated = ok
                self.migration_error = None if ok else (
                    proto.error or "exit code {}, signal {}".format(code, sig))
            if ok:
                self.log.info("drain {what}: done", what=what)
            elif migrate:
                pass   # _migrationEnded logs the cause and when it retries
            elif not self.stopping:
                self.log.error("drain {what} FAILED (exit code {code}, signal {signal}); "
                               "ingest keeps buffering, draining goes on against the "
                               "existing schema", what=what, code=code, signal=sig)
            return ok
        proto.done.addCallback(ended)
        return proto.done

    def _migrationEnded(self, ok, attempt):
        """After migration attempt ``attempt``: on failure, retry with backoff until it works."""
        if self.stopping or ok:
            if ok and attempt:
                self.log.info("migration succeeded after {attempts} failed attempts",
                              attempts=attempt)
            return ok
        delay = self.backoff(attempt) if ok is False else self.backoff(0)
        if ok is False:
            self.log.error("migration failed: {cause}; retrying in {delay:.0f} s (attempt "
                           "{attempt}); payloads wait in the buffer", cause=self.migration_error,
                           delay=delay, attempt=attempt + 1)
            attempt += 1
        self._retry_call = self.reactor.callLater(delay, self._retry, attempt)
        return ok

    def _retry(self, attempt):
        self._retry_call = None
        if self.stopping:
            return
        d = self.run(migrate=True)
        d.addCallback(self._migrationEnded, attempt)
        d.addErrback(self._logFailure, "retrying the migration")

    def _timeout(self, proto):
        self.log.error("drain {what} still running after {deadline} s: killing it",
                       what=proto.what, deadline=DEADLINE)
        proto.signal("KILL")

    def _sweep(self):
        try:
            self.run(migrate=False).addErrback(self._logFailure, "hourly partition maintenance")
        except Exception:
            self.log.failure("drain supervisor: hourly partition maintenance")

    def _logFailure(self, f, what):
        self.log.failure("drain supervisor: {what}", f, what=what)
