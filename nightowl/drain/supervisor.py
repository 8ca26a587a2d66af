"""
The parent side of the drain: spawns, supervises and talks to the workers.

``DrainSupervisor`` is a twisted Service.  It never touches Postgres or SQLite
itself: claims, marks, quarantines and releases go to the agent's
``BufferWriter`` (its writer thread), Postgres work happens in child processes
(``python -m nightowl.drain.worker``), the boot migration and the hourly
partition sweep included (nightowl.drain.maintenance).

IPC: docs/design.rst, "Drain worker IPC" (nightowl.drain.ipc; the pipes are
read by nightowl.drain.pipes).  The workers' counters arrive as
``ipc.WorkerStats``; ``totals()`` adds them up across worker restarts.

Supervision policy (class attributes, as twisted.runner.procmon declares
them): a dead worker's claims are released, then it is respawned after
``minRestartDelay`` (1 s), doubling per crash up to ``maxRestartDelay``
(60 s); the delay resets once a worker stayed up ``threshold`` (60 s).
Stop: ``stop`` to every worker, TERM after ``stopGrace`` (10 s), KILL
``killTime`` (5 s) later.  A worker silent past its watchdog timeout is
killed (nightowl.drain.watchdog).
"""

import sys

from twisted.application import service
from twisted.application.internet import backoffPolicy
from twisted.internet import defer, task
from twisted.logger import Logger

from nightowl.drain import config, ipc
from nightowl.drain.maintenance import Maintenance
from nightowl.drain.pipes import WorkerProtocol
from nightowl.drain.relay import BufferRelay
from nightowl.drain.slot import Slot, doubling
from nightowl.drain.poison import ClaimShrinker
from nightowl.drain.watchdog import Watchdog

WORKER_MODULE = "nightowl.drain.worker"
WATCH_EVERY = 5.0          # seconds between checks for silent (frozen) workers


class DrainSupervisor(service.Service):
    """
    Spawns ``workers`` worker processes and relays their claims and marks to
    ``buffer`` (the BufferWriter).  ``dsn`` None or blank: buffer-only mode.
    """

    name = "drain"
    log = Logger()

    # -- supervision policy (procmon style; override per instance by keyword) --
    #: a worker up this long (s) counts as stable: its next restart delay is the minimum
    threshold = 60.0
    minRestartDelay = 1.0
    maxRestartDelay = 60.0
    #: seconds from ``stop`` to TERM, then from TERM to KILL
    stopGrace = 10.0
    killTime = 5.0
    #: a failed mark of committed rows is retried after 1 s doubling to 30 s
    minMarkRetryDelay = 1.0
    maxMarkRetryDelay = 30.0
    watchEvery = WATCH_EVERY
    claimFailureLogEvery = 10.0
    #: delay before migration retry N (0, 1, ...): 1 s doubling to 60 s, with jitter
    migrate_backoff = staticmethod(backoffPolicy(initialDelay=1.0, maxDelay=60.0, factor=2.0))

    _POLICY = ("threshold", "minRestartDelay", "maxRestartDelay", "stopGrace", "killTime",
               "minMarkRetryDelay", "maxMarkRetryDelay", "watchEvery", "claimFailureLogEvery",
               "migrate_backoff")

    def __init__(self, buffer, metrics, *, dsn, workers, batch_size, batch_bytes, environment,
                 migrate, worker_timeout, reactor=None, worker_env=None, buffer_path=None,
                 **policy):
        if reactor is None:
            from twisted.internet import reactor
        unknown = sorted(set(policy) - set(self._POLICY))
        if unknown:
            raise TypeError("DrainSupervisor: unknown policy {}".format(", ".join(unknown)))
        for key, value in policy.items():
            setattr(self, key, value)
        self.reactor = reactor
        self.buffer_writer = buffer
        self.metrics = metrics
        self.dsn = dsn if dsn and str(dsn).strip() else None
        self.workers = int(workers)
        self.batch_size = int(batch_size)
        self.batch_bytes = batch_bytes
        self.environment = environment
        self.migrate = bool(migrate)
        self.buffer_path = buffer.path if buffer_path is None else buffer_path
        self.worker_env = dict(worker_env or {})
        self.slots = {}
        self.stopping = False
        self.maintenance = Maintenance(reactor, lambda: config.base_environ(self.dsn),
                                       lambda attempt: self.migrate_backoff(attempt))
        self._stopped = None
        self.shrinker = ClaimShrinker()
        self.watchdog = Watchdog(worker_timeout)
        self._watcher = None
        self.relay = BufferRelay(buffer, reactor,
                                 doubling(self.minMarkRetryDelay, self.maxMarkRetryDelay),
                                 self.claimFailureLogEvery, lambda: self.stopping)

    # -- what /status and Prometheus read ------------------------------------

    @property
    def migrated(self):
        """None: not tried, True/False: the last migration's outcome."""
        return self.maintenance.migrated

    @property
    def migration_error(self):
        """The last failed migration's cause, one line."""
        return self.maintenance.migration_error

    def worker_stats(self):
        """``{worker_id: WorkerStats}``, each carried across that worker's restarts."""
        return {n: slot.stats() for n, slot in sorted(self.slots.items())}

    def totals(self):
        """Every worker's counters added up, across restarts."""
        out = ipc.WorkerStats()
        for stats in self.worker_stats().values():
            out = out + stats
        return out

    def worker_environ(self, worker_id):
        return config.worker_environ(
            self.dsn, self.buffer_path, worker_id, self.environment, self.batch_size,
            buffer_id=getattr(self.buffer_writer, "buffer_id", None), extra=self.worker_env)

    # -- lifecycle ---------------------------------------------------------

    def startService(self):
        service.Service.startService(self)
        self.stopping = False
        self.maintenance.stopping = False
        if self.dsn is None:
            self.log.info("buffer-only mode: no DSN configured (--dsn / NIGHTOWL_DSN); "
                          "payloads stay in the buffer until one is set")
            return
        if self.workers <= 0:
            self.log.info("drain-workers is 0: draining is disabled")
            return
        d = defer.maybeDeferred(self.buffer_writer.release, None)
        d.addCallback(self._releasedStale)
        d.addErrback(self._logFailure, "releasing stale claims at startup")
        d.addCallback(lambda _: self.maintenance.boot(migrate=self.migrate))
        d.addCallback(lambda _: self._spawnAll(self.workers))
        d.addErrback(self._logFailure, "starting the drain workers")

    def _releasedStale(self, count):
        if count:
            self.log.info("released {count} payloads claimed by a previous run", count=count)

    def _spawnAll(self, count):
        if self.stopping:
            return
        for n in range(count):
            self.slots[n] = Slot(n)
            self.spawn(n)
        self.maintenance.start_hourly()
        self._watcher = task.LoopingCall(self._watch)
        self._watcher.clock = self.reactor
        self._watcher.start(self.watchEvery, now=False)

    def spawn(self, worker_id):
        slot = self.slots[worker_id]
        slot.respawn_call = None
        if self.stopping:
            return
        proto = WorkerProtocol(self, worker_id)
        slot.proto = proto
        slot.started_at = self.reactor.seconds()
        slot.claim = ()
        slot.current = ipc.WorkerStats()
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
        if self._watcher is not None and self._watcher.running:
            self._watcher.stop()
        self._watcher = None
        self.maintenance.stop()
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
        term = self.reactor.callLater(self.stopGrace, self._signalAll, "TERM")
        kill = self.reactor.callLater(self.stopGrace + self.killTime, self._signalAll, "KILL")

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
            limit = max(1, int(message.get("limit") or self.batch_size))
        except (TypeError, ValueError):
            limit = self.batch_size
        limit = self.shrinker.cap(limit)
        d = self.relay.claim(proto.worker_id, limit, self.batch_bytes)

        def reply(ids):
            slot = self.slots.get(proto.worker_id)
            if slot is not None and slot.proto is proto:
                slot.claim = sorted(ids)
            message = {"op": ipc.CLAIMED, "ids": ids}
            low = self.relay.low_water()
            if low is not None:
                message["low_water"] = low
            proto.send(message)
        d.addCallback(reply)
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
        d = self.relay.settle(proto.worker_id, drained, quarantined, held, requeue)

        def reply(_):
            m = self._workerMetrics(proto.worker_id)
            m["marked_payloads"] = m.get("marked_payloads", 0) + len(drained)
            m["marked_quarantined"] = m.get("marked_quarantined", 0) + len(quarantined)
            proto.send({"op": ipc.MARKED})
        d.addCallback(reply)
        d.addErrback(self._logFailure, "replying to done")
        self._track(proto, d)

    def _stats(self, worker_id, stats):
        if isinstance(stats, dict):
            m = self._workerMetrics(worker_id)
            m.update(stats)
            slot = self.slots.get(worker_id)
            if slot is not None:
                m.update(slot.reported(stats).as_dict())
            m["worker"] = worker_id
            m["updated_at"] = self.reactor.seconds()

    def _watch(self):
        """Kill workers silent past the watchdog timeout; runs every ``watchEvery`` s."""
        if self.stopping:
            return
        try:
            self.watchdog.kill_silent(self.reactor.seconds(), self.slots, self._workerMetrics)
        except Exception:
            self.log.failure("drain supervisor: watching for frozen workers")

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
        slot.carry()
        claim, slot.claim = slot.claim, ()
        poison = None
        # Exit code 0 is a worker that finished its batch and left: our stop,
        # or a SIGTERM sent to it directly (supervisord's stopasgroup, systemd
        # with KillMode=control-group, kill of the process group), which the
        # agent's own stop usually follows at once.  Not a death to count
        # against its claim, and nothing to log as an error.
        clean = code == 0
        if not clean:
            poison = self.shrinker.died(claim, "code {}, signal {}".format(code, sig))
        m = self._workerMetrics(worker_id)
        m.update({"alive": False, "exit_code": code, "exit_signal": sig})
        if self.stopping and clean:
            self.log.info("drain worker {worker} stopped", worker=worker_id)
        elif clean:
            self.log.info("drain worker {worker} (pid {pid}) stopped on a SIGTERM of its own "
                          "(a stop of the whole process group?); it is respawned unless the "
                          "agent is stopping too", worker=worker_id, pid=proto.pid)
        else:
            self.log.error("drain worker {worker} (pid {pid}) exited (code {code}, "
                           "signal {signal}) after {uptime:.1f} s",
                           worker=worker_id, pid=proto.pid, code=code, signal=sig,
                           uptime=uptime)
        if poison is None and claim and self.shrinker.limit is not None:
            self.log.warn("drain worker {worker} died holding {count} payloads from id {first}: "
                          "the next claims take at most {limit}", worker=worker_id,
                          count=len(claim), first=claim[0], limit=self.shrinker.limit)
        # release only after every buffer operation already asked for this worker
        d = self.relay.release_dead(worker_id, list(slot.inflight), poison)
        slot.inflight.add(d)
        d.addBoth(lambda result: (slot.inflight.discard(d), result)[1])
        if self.stopping:
            if self._stopped is not None and not self._stopped.called and all(
                    s.proto is None for s in self.slots.values()):
                self._stopped.callback(None)
            return
        slot.crashed(uptime >= self.threshold,
                     doubling(self.minRestartDelay, self.maxRestartDelay))
        m["restarts"] = slot.restarts
        times = m.setdefault("restart_times", [])
        times.append(now)
        del times[:-20]
        (self.log.info if clean else self.log.warn)(
            "respawning drain worker {worker} in {delay} s (restart {restarts})",
            worker=worker_id, delay=slot.delay, restarts=slot.restarts)
        d.addBoth(lambda _: self._scheduleRespawn(slot))

    def _scheduleRespawn(self, slot):
        if self.stopping or slot.respawn_call is not None:
            return
        slot.respawn_call = self.reactor.callLater(slot.delay, self.spawn, slot.worker_id)

    def _logFailure(self, f, what):
        self.log.failure("drain supervisor: {what}", f, what=what)
