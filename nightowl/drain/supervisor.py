"""
The parent side of the drain: spawns, supervises and talks to the workers.

``DrainSupervisor`` is a twisted Service.  It never touches Postgres or SQLite
itself: claims, marks, quarantines and releases go to the agent's
``BufferWriter`` (its writer thread), Postgres work happens in child processes
(``python -m nightowl.drain.worker``), including the boot migration and the
hourly partition sweep (``python -m nightowl.drain.worker maintenance``, a
killable child with a deadline: a migration stuck on a lock never holds up
ingest or shutdown).

A failed startup migration is retried with ``backoffPolicy`` (1 s doubling to
60 s) until it succeeds; each failure is one log line naming the cause
(``nightowl.pgerrors``: role missing, database missing, schema missing ...).

IPC: docs/design.rst, "Drain worker IPC".  Supervision: a dead worker's claims
are released, then it is respawned after 1 s, doubling per crash up to 60 s;
the delay resets once a worker stayed up 60 s.  Stop: ``stop`` to every
worker, TERM after the grace period, KILL 5 s later.
"""

import os
import signal
import sys

from twisted.application import service
from twisted.internet import defer, error, protocol
from twisted.application.internet import backoffPolicy
from twisted.logger import Logger, LogLevel

import nightowl
from nightowl.drain import ipc
from nightowl.drain.poison import ClaimShrinker
from nightowl.drain.watchdog import DEFAULT_TIMEOUT, Watchdog

WORKER_MODULE = "nightowl.drain.worker"
RESPAWN_FIRST = 1.0
RESPAWN_MAX = 60.0
STABLE_AFTER = 60.0
STOP_GRACE = 10.0
KILL_AFTER = 5.0
MAINTENANCE_EVERY = 3600.0
MAINTENANCE_DEADLINE = 300.0
MARK_RETRY_FIRST = 1.0
MARK_RETRY_MAX = 30.0
MAX_LINE = 1024 * 1024
WATCH_EVERY = 5.0          # seconds between checks for silent (frozen) workers
CLAIM_FAILURE_LOG_EVERY = 10.0
# worker counters the supervisor carries across a worker's restarts
COUNTERS = ("batches", "payloads", "records", "rows", "quarantined", "skipped",
            "ledger_skipped", "failures")

_PASSED_ENV = ("PATH", "PYTHONPATH", "HOME", "LANG", "NIGHTOWL_WORKER_NICE")


def _lines(buffer, data):
    """Split ``buffer + data`` into complete lines and the rest."""
    buffer += data
    if b"\n" not in buffer:
        return [], buffer
    *lines, rest = buffer.split(b"\n")
    return lines, rest


def _log_level(line):
    head = line.split(" ", 1)[0]
    if head in ("debug", "info", "warn", "error", "critical"):
        return LogLevel.levelWithName(head)
    return LogLevel.info


class WorkerProtocol(protocol.ProcessProtocol):
    """One worker process: line-based JSON on fd 1, log lines on fd 2."""

    log = Logger()

    def __init__(self, supervisor, worker_id):
        self.supervisor = supervisor
        self.worker_id = worker_id
        self.pid = None
        self.ended = False
        self._out = b""
        self._err = b""

    def connectionMade(self):
        self.pid = getattr(self.transport, "pid", None)

    def send(self, message):
        if self.ended or self.transport is None:
            return False
        self.transport.write(ipc.encode(message))
        return True

    def signal(self, name):
        if self.ended or self.transport is None:
            return
        try:
            self.transport.signalProcess(name)
        except (error.ProcessExitedAlready, OSError):
            pass

    def outReceived(self, data):
        lines, self._out = _lines(self._out, data)
        if len(self._out) > MAX_LINE:
            self.log.error("worker {worker} sent an over-long IPC line; killing it",
                           worker=self.worker_id)
            self._out = b""
            self.signal("KILL")
            return
        for line in lines:
            if not line.strip():
                continue
            try:
                message = ipc.decode(line)
            except ipc.ProtocolError as e:
                self.log.error("worker {worker} sent a bad IPC line ({why})",
                               worker=self.worker_id, why=str(e))
                continue
            self.supervisor.messageReceived(self, message)

    def errReceived(self, data):
        lines, self._err = _lines(self._err, data)
        if len(self._err) > MAX_LINE:
            lines.append(self._err[:4096] + b"...")
            self._err = b""
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self.log.emit(_log_level(text), "drain worker {worker}: {line}",
                              worker=self.worker_id, line=text)

    def processEnded(self, reason):
        if self._err.strip():
            self.errReceived(b"\n")
        self.ended = True
        self.supervisor.workerEnded(self, reason)


class MaintenanceProtocol(protocol.ProcessProtocol):
    """The short-lived migrate/partition child; fires ``done`` with its exit code."""

    log = Logger()

    def __init__(self, what):
        self.what = what
        self.done = defer.Deferred()
        self.ended = False
        self.error = None          # the child's one-line cause, if it failed
        self._err = b""
        self._out = b""

    def connectionMade(self):
        self.transport.closeStdin()

    def outReceived(self, data):
        lines, self._out = _lines(self._out, data)
        self._out = self._out[-MAX_LINE:]
        for line in lines:
            try:
                message = ipc.decode(line)
            except ipc.ProtocolError:
                continue
            if message["op"] == ipc.REPORT and message.get("error"):
                self.error = str(message["error"])[:1000]

    def errReceived(self, data):
        lines, self._err = _lines(self._err, data)
        for line in lines:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self.log.emit(_log_level(text), "drain {what}: {line}",
                              what=self.what, line=text)

    def signal(self, name):
        if self.ended:
            return
        try:
            self.transport.signalProcess(name)
        except (error.ProcessExitedAlready, OSError):
            pass

    def processEnded(self, reason):
        self.ended = True
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        self.done.callback((code, sig))


class _Slot:
    """What the supervisor knows about worker N across its restarts."""

    def __init__(self, worker_id):
        self.worker_id = worker_id
        self.proto = None
        self.started_at = None
        self.delay = None          # the last respawn delay, None until a crash
        self.restarts = 0
        self.respawn_call = None
        self.inflight = set()      # Deferreds of buffer operations for this worker
        self.claim = ()            # ids of the claim handed out and not yet reported
        self.carried = {}          # counters of this slot's earlier processes
        self.last_stats = {}       # the current process's last reported counters


class DrainSupervisor(service.Service):
    """
    Spawns ``drain-workers`` worker processes and relays their claims and
    marks to ``buffer_writer``.  ``options`` is the nightowl.tap.Options dict.
    """

    name = "drain"
    log = Logger()
    #: delay before migration retry N (0, 1, ...): 1 s doubling to 60 s, with jitter
    migrate_backoff = staticmethod(backoffPolicy(initialDelay=1.0, maxDelay=60.0, factor=2.0))

    def __init__(self, buffer_writer, options, metrics, reactor=None,
                 worker_env=None, stop_grace=STOP_GRACE, kill_after=KILL_AFTER,
                 worker_timeout=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.buffer_writer = buffer_writer
        self.options = options
        self.metrics = metrics
        self.worker_env = dict(worker_env or {})
        self.stop_grace = stop_grace
        self.kill_after = kill_after
        self.slots = {}
        self.stopping = False
        self.maintenance = None
        self.maintenance_call = None
        self.migrated = None       # None: not tried, True/False: last outcome
        self.migration_error = None  # the last failed migration's cause, one line
        self.migrate_call = None
        self._stopped = None
        self.shrinker = ClaimShrinker()
        self.watchdog = Watchdog(worker_timeout or options.get("worker-timeout")
                                 or DEFAULT_TIMEOUT)
        self._watch_call = None
        self._claim_failures = 0        # since the last report
        self._claim_failure_logged = None

    # -- configuration -----------------------------------------------------

    @property
    def dsn(self):
        dsn = self.options.get("dsn")
        return dsn if dsn and str(dsn).strip() else None

    def _base_env(self):
        env = {}
        for key in _PASSED_ENV:
            if key in os.environ:
                env[key] = os.environ[key]
        # the child must import this very nightowl, installed or not
        root = os.path.dirname(os.path.dirname(os.path.abspath(nightowl.__file__)))
        paths = [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        env["NIGHTOWL_DSN"] = self.dsn
        return env

    def worker_environ(self, worker_id):
        env = self._base_env()
        env.update({
            "NIGHTOWL_BUFFER": os.path.abspath(self.options["buffer"]),
            "NIGHTOWL_WORKER_ID": str(worker_id),
            "NIGHTOWL_ENVIRONMENT": str(self.options.get("environment") or "production"),
            "NIGHTOWL_BATCH_SIZE": str(self.options.get("batch-size") or 5000),
        })
        buffer_id = getattr(self.buffer_writer, "buffer_id", None)
        if buffer_id:
            env["NIGHTOWL_BUFFER_ID"] = str(buffer_id)
        env.update(self.worker_env)
        return env

    # -- lifecycle ---------------------------------------------------------

    def startService(self):
        service.Service.startService(self)
        self.stopping = False
        if self.dsn is None:
            self.log.info("buffer-only mode: no DSN configured (--dsn / NIGHTOWL_DSN); "
                          "payloads stay in the buffer until one is set")
            return
        count = int(self.options.get("drain-workers") or 0)
        if count <= 0:
            self.log.info("drain-workers is 0: draining is disabled")
            return
        d = defer.maybeDeferred(self.buffer_writer.release, None)
        d.addCallback(self._releasedStale)
        d.addErrback(self._logFailure, "releasing stale claims at startup")
        migrate = not self.options.get("no-migrate")
        d.addCallback(lambda _: self._runMaintenance(migrate=migrate))
        if migrate:
            d.addCallback(self._migrationEnded, 0)
        d.addCallback(lambda _: self._spawnAll(count))
        d.addErrback(self._logFailure, "starting the drain workers")

    def _releasedStale(self, count):
        if count:
            self.log.info("released {count} payloads claimed by a previous run", count=count)

    def _spawnAll(self, count):
        if self.stopping:
            return
        for n in range(count):
            self.slots[n] = _Slot(n)
            self.spawn(n)
        self.maintenance_call = self.reactor.callLater(MAINTENANCE_EVERY, self._hourly)
        self._watch_call = self.reactor.callLater(WATCH_EVERY, self._watch)

    def spawn(self, worker_id):
        slot = self.slots[worker_id]
        slot.respawn_call = None
        if self.stopping:
            return
        proto = WorkerProtocol(self, worker_id)
        slot.proto = proto
        slot.started_at = self.reactor.seconds()
        slot.claim = ()
        slot.last_stats = {}
        self.watchdog.heard(worker_id, slot.started_at)
        self.reactor.spawnProcess(
            proto, sys.executable, [sys.executable, "-m", WORKER_MODULE],
            env=self.worker_environ(worker_id), childFDs={0: "w", 1: "r", 2: "r"})
        self._workerMetrics(worker_id).update(
            {"alive": True, "pid": proto.pid, "restarts": slot.restarts})

    def _workerMetrics(self, worker_id):
        return self.metrics.drain.setdefault(worker_id, {"worker": worker_id})

    def stopService(self):
        service.Service.stopService(self)
        self.stopping = True
        if self.maintenance_call is not None and self.maintenance_call.active():
            self.maintenance_call.cancel()
        self.maintenance_call = None
        if self._watch_call is not None and self._watch_call.active():
            self._watch_call.cancel()
        self._watch_call = None
        if self.migrate_call is not None and self.migrate_call.active():
            self.migrate_call.cancel()
        self.migrate_call = None
        if self.maintenance is not None:
            self.maintenance.signal("TERM")
        live = []
        for slot in self.slots.values():
            if slot.respawn_call is not None and slot.respawn_call.active():
                slot.respawn_call.cancel()
                slot.respawn_call = None
            if slot.proto is not None and not slot.proto.ended:
                live.append(slot.proto)
                slot.proto.send({"op": ipc.STOP})
        self._stopped = defer.Deferred()
        if not live:
            return self._whenIdle()
        term = self.reactor.callLater(self.stop_grace, self._signalAll, "TERM")
        kill = self.reactor.callLater(self.stop_grace + self.kill_after, self._signalAll, "KILL")

        def cancelTimers(result):
            for call in (term, kill):
                if call.active():
                    call.cancel()
            return result
        self._stopped.addBoth(cancelTimers)
        self._stopped.addCallback(lambda _: self._whenIdle())
        return self._stopped

    def _signalAll(self, name):
        for slot in self.slots.values():
            if slot.proto is not None and not slot.proto.ended:
                self.log.warn("drain worker {worker} (pid {pid}) did not stop in time: "
                              "sending {signal}", worker=slot.worker_id, pid=slot.proto.pid,
                              signal=name)
                slot.proto.signal(name)

    def _whenIdle(self):
        """Fires once every buffer operation we started (releases too) is done."""
        pending = [d for slot in self.slots.values() for d in slot.inflight]
        if not pending:
            return defer.succeed(None)
        return defer.DeferredList(pending, consumeErrors=True).addCallback(lambda _: None)

    # -- messages from workers ---------------------------------------------

    def messageReceived(self, proto, message):
        op = message["op"]
        worker_id = proto.worker_id
        slot = self.slots.get(worker_id)
        if slot is not None and slot.proto is proto:
            self.watchdog.heard(worker_id, self.reactor.seconds())
        if op == ipc.HEARTBEAT:
            return
        if op == ipc.CLAIM:
            self._claim(proto, message)
        elif op == ipc.DONE:
            self._done(proto, message)
        elif op == ipc.STATS:
            self._stats(worker_id, message.get("stats"))
        elif op == ipc.HELLO:
            proto.pid = message.get("pid", proto.pid)
            self._workerMetrics(worker_id)["pid"] = proto.pid
            self.log.info("drain worker {worker} is up (pid {pid})",
                          worker=worker_id, pid=proto.pid)
        else:
            self.log.warn("drain worker {worker} sent an unknown op {op!r}",
                          worker=worker_id, op=op)

    def _track(self, proto, d):
        slot = self.slots.get(proto.worker_id)
        if slot is not None:
            slot.inflight.add(d)
            d.addBoth(lambda result: (slot.inflight.discard(d), result)[1])
        return d

    def _claim(self, proto, message):
        if self.stopping:
            proto.send({"op": ipc.CLAIMED, "ids": []})
            return
        try:
            limit = max(1, int(message.get("limit") or self.options.get("batch-size") or 5000))
        except (TypeError, ValueError):
            limit = int(self.options.get("batch-size") or 5000)
        limit = self.shrinker.cap(limit)
        d = defer.maybeDeferred(self.buffer_writer.claim, proto.worker_id, limit,
                                max_bytes=self.options.get("batch-bytes"))

        def reply(ids):
            slot = self.slots.get(proto.worker_id)
            if slot is not None and slot.proto is proto:
                slot.claim = sorted(ids or ())
            message = {"op": ipc.CLAIMED, "ids": list(ids or ())}
            low = getattr(self.buffer_writer, "low_water", None)
            if low is not None:
                message["low_water"] = low
            proto.send(message)

        def failed(f):
            self._claimFailed(f, proto.worker_id)
            proto.send({"op": ipc.CLAIMED, "ids": []})
        d.addCallbacks(reply, failed)
        d.addErrback(self._logFailure, "replying to a claim")
        self._track(proto, d)

    def _done(self, proto, message):
        drained = [int(i) for i in message.get("drained") or ()]
        quarantined = [(int(i), str(r)) for (i, r) in message.get("quarantined") or ()]
        # the quarantine breaker (nightowl.drain.breaker) held these back: pending again
        held = [int(i) for i in message.get("held") or ()]
        requeue = [int(i) for i in message.get("requeue") or ()]
        self._stats(proto.worker_id, message.get("stats"))
        slot = self.slots.get(proto.worker_id)
        if slot is not None and slot.proto is proto:
            slot.claim = ()
        self.shrinker.completed(set(drained) | set(i for i, _r in quarantined))
        d = self._markUntilCommitted(proto.worker_id, drained, quarantined, MARK_RETRY_FIRST,
                                     held, requeue)

        def reply(_):
            m = self._workerMetrics(proto.worker_id)
            m["marked_payloads"] = m.get("marked_payloads", 0) + len(drained)
            m["marked_quarantined"] = m.get("marked_quarantined", 0) + len(quarantined)
            proto.send({"op": ipc.MARKED})
        d.addCallback(reply)
        d.addErrback(self._logFailure, "replying to done")
        self._track(proto, d)

    def _markUntilCommitted(self, worker_id, drained, quarantined, delay, held=(), requeue=()):
        """
        The rows are committed in Postgres: retry only the SQLite mark until it
        lands (never re-drain committed rows because a mark failed).
        """
        def mark():
            d = defer.succeed(None)
            if drained:
                d.addCallback(lambda _: self.buffer_writer.mark_drained(drained))
            if quarantined:
                d.addCallback(lambda _: self.buffer_writer.quarantine(quarantined))
            if held:   # the worker's only claimed rows left are the held ones
                d.addCallback(lambda _: self.buffer_writer.release(worker_id))
            if requeue:
                d.addCallback(lambda _: self.buffer_writer.requeue_quarantined(requeue))
            return d

        def retry(f):
            if self.stopping:
                self.log.error("marking {count} committed payloads of drain worker {worker} "
                               "failed ({error}) during shutdown; the ledger skips them "
                               "on the next drain", count=len(drained) + len(quarantined),
                               worker=worker_id, error=f.type.__name__)
                return None
            self.log.error("marking {count} committed payloads of drain worker {worker} failed "
                           "({error}); retrying the mark in {delay} s",
                           count=len(drained) + len(quarantined), worker=worker_id,
                           error=f.type.__name__, delay=delay)
            from twisted.internet import task
            return task.deferLater(self.reactor, delay, self._markUntilCommitted, worker_id,
                                   drained, quarantined, min(delay * 2, MARK_RETRY_MAX),
                                   held, requeue)
        d = defer.maybeDeferred(mark)
        d.addErrback(retry)
        return d

    def _stats(self, worker_id, stats):
        if isinstance(stats, dict):
            m = self._workerMetrics(worker_id)
            m.update(stats)
            slot = self.slots.get(worker_id)
            if slot is not None:
                # a restarted worker counts from 0: add what its predecessors did
                for key in COUNTERS:
                    if isinstance(stats.get(key), int):
                        slot.last_stats[key] = stats[key]
                        m[key] = slot.carried.get(key, 0) + stats[key]
            m["worker"] = worker_id
            m["updated_at"] = self.reactor.seconds()

    def _claimFailed(self, f, worker_id):
        """A failed claim (disk full...): logged once per CLAIM_FAILURE_LOG_EVERY s."""
        now = self.reactor.seconds()
        self._claim_failures += 1
        last = self._claim_failure_logged
        if last is not None and now - last < CLAIM_FAILURE_LOG_EVERY:
            return
        self.log.error("claiming for drain worker {worker} failed: {error} ({count} failed "
                       "claims since the last report; retrying)", worker=worker_id,
                       error=_first_line(f), count=self._claim_failures)
        self._claim_failures = 0
        self._claim_failure_logged = now

    def _watch(self):
        """Kill workers silent past the watchdog timeout (frozen); runs every WATCH_EVERY s."""
        self._watch_call = None
        if self.stopping:
            return
        try:
            now = self.reactor.seconds()
            for worker_id, silent in self.watchdog.silent(now):
                slot = self.slots.get(worker_id)
                if slot is None or slot.proto is None or slot.proto.ended:
                    self.watchdog.forget(worker_id)
                    continue
                m = self._workerMetrics(worker_id)
                m["frozen_at"] = now
                m["frozen_count"] = m.get("frozen_count", 0) + 1
                self.watchdog.killed += 1
                self.log.error("drain worker {worker} (pid {pid}) sent nothing for {silent:.0f} s "
                               "(frozen?) holding {claimed} claimed payloads: killing it; its "
                               "claim is released and the ledger skips what it committed",
                               worker=worker_id, pid=slot.proto.pid, silent=silent,
                               claimed=len(slot.claim))
                self.watchdog.forget(worker_id)
                slot.proto.signal("KILL")
        except Exception:
            self.log.failure("drain supervisor: watching for frozen workers")
        self._watch_call = self.reactor.callLater(WATCH_EVERY, self._watch)

    # -- exits ----------------------------------------------------------------

    def workerEnded(self, proto, reason):
        worker_id = proto.worker_id
        slot = self.slots.get(worker_id)
        if slot is None or slot.proto is not proto:
            return
        code = getattr(reason.value, "exitCode", None)
        sig = getattr(reason.value, "signal", None)
        now = self.reactor.seconds()
        uptime = now - slot.started_at if slot.started_at is not None else 0.0
        slot.proto = None
        self.watchdog.forget(worker_id)
        for key, value in slot.last_stats.items():
            slot.carried[key] = slot.carried.get(key, 0) + value
        slot.last_stats = {}
        claim, slot.claim = slot.claim, ()
        poison = None
        if not (self.stopping and code == 0):
            poison = self.shrinker.died(claim, "code {}, signal {}".format(code, sig))
        m = self._workerMetrics(worker_id)
        m.update({"alive": False, "exit_code": code, "exit_signal": sig})
        if self.stopping and code == 0:
            self.log.info("drain worker {worker} stopped", worker=worker_id)
        else:
            self.log.error("drain worker {worker} (pid {pid}) exited (code {code}, "
                           "signal {signal}) after {uptime:.1f} s",
                           worker=worker_id, pid=proto.pid, code=code, signal=sig,
                           uptime=uptime)
        # release only after every buffer operation already asked for this worker
        pending = list(slot.inflight)
        d = defer.DeferredList(pending, consumeErrors=True) if pending else defer.succeed(None)
        if poison is not None:
            d.addCallback(lambda _: self._isolate(worker_id, *poison))
        elif claim and self.shrinker.limit is not None:
            self.log.warn("drain worker {worker} died holding {count} payloads from id {first}: "
                          "the next claims take at most {limit}", worker=worker_id,
                          count=len(claim), first=claim[0], limit=self.shrinker.limit)
        d.addCallback(lambda _: self.buffer_writer.release(worker_id))
        d.addCallback(self._released, worker_id)
        d.addErrback(self._logFailure, "releasing the claims of drain worker {}".format(worker_id))
        slot.inflight.add(d)
        d.addBoth(lambda result: (slot.inflight.discard(d), result)[1])
        if self.stopping:
            if self._stopped is not None and not self._stopped.called and all(
                    s.proto is None for s in self.slots.values()):
                self._stopped.callback(None)
            return
        if uptime >= STABLE_AFTER or slot.delay is None:
            slot.delay = RESPAWN_FIRST
        else:
            slot.delay = min(slot.delay * 2, RESPAWN_MAX)
        slot.restarts += 1
        m["restarts"] = slot.restarts
        times = m.setdefault("restart_times", [])
        times.append(now)
        del times[:-20]
        self.log.warn("respawning drain worker {worker} in {delay} s (restart {restarts})",
                      worker=worker_id, delay=slot.delay, restarts=slot.restarts)
        d.addBoth(lambda _: self._scheduleRespawn(slot))

    def _scheduleRespawn(self, slot):
        if self.stopping or slot.respawn_call is not None:
            return
        slot.respawn_call = self.reactor.callLater(slot.delay, self.spawn, slot.worker_id)

    def _isolate(self, worker_id, payload_id, reason):
        self.log.error("drain worker {worker} died again on payload {id} alone: quarantining "
                       "it so the drain goes on (`nightowl buffer inspect` shows it)",
                       worker=worker_id, id=payload_id)
        return self.buffer_writer.quarantine([(payload_id, reason)])

    def _released(self, count, worker_id):
        if count:
            self.log.info("released {count} payloads claimed by drain worker {worker}",
                          count=count, worker=worker_id)

    # -- migrations and partitions (in a child process) -------------------------

    def _runMaintenance(self, migrate):
        if self.stopping or self.maintenance is not None:
            return defer.succeed(None)
        what = "migrate+partitions" if migrate else "partitions"
        proto = MaintenanceProtocol(what)
        env = self._base_env()
        env["NIGHTOWL_MIGRATE"] = "1" if migrate else "0"
        self.maintenance = proto
        self.reactor.spawnProcess(
            proto, sys.executable, [sys.executable, "-m", WORKER_MODULE, "maintenance"],
            env=env, childFDs={0: "w", 1: "r", 2: "r"})
        deadline = self.reactor.callLater(MAINTENANCE_DEADLINE, self._maintenanceTimeout, proto)

        def ended(result):
            code, sig = result
            if deadline.active():
                deadline.cancel()
            self.maintenance = None
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
        delay = self.migrate_backoff(attempt) if ok is False else self.migrate_backoff(0)
        if ok is False:
            self.log.error("migration failed: {cause}; retrying in {delay:.0f} s (attempt "
                           "{attempt}); payloads wait in the buffer", cause=self.migration_error,
                           delay=delay, attempt=attempt + 1)
            attempt += 1
        self.migrate_call = self.reactor.callLater(delay, self._retryMigration, attempt)
        return ok

    def _retryMigration(self, attempt):
        self.migrate_call = None
        if self.stopping:
            return
        d = self._runMaintenance(migrate=True)
        d.addCallback(self._migrationEnded, attempt)
        d.addErrback(self._logFailure, "retrying the migration")

    def _maintenanceTimeout(self, proto):
        self.log.error("drain {what} still running after {deadline} s: killing it",
                       what=proto.what, deadline=MAINTENANCE_DEADLINE)
        proto.signal("KILL")

    def _hourly(self):
        self.maintenance_call = None
        if self.stopping:
            return
        d = self._runMaintenance(migrate=False)
        d.addErrback(self._logFailure, "hourly partition maintenance")
        self.maintenance_call = self.reactor.callLater(MAINTENANCE_EVERY, self._hourly)

    def _logFailure(self, f, what):
        self.log.failure("drain supervisor: {what}", f, what=what)


def _first_line(f):
    lines = (f.getErrorMessage() or "").splitlines()
    return "{}: {}".format(f.type.__name__, lines[0][:200] if lines else "")
