"""
The parent of several ingest processes (``--ingest-processes N``, N > 1).

It spawns N children (``python -m nightowl.multiproc.child``), each a whole
agent on the shared SO_REUSEPORT port with its own buffer file: child 0
keeps ``--buffer`` itself (so going from 1 process to N keeps draining the
old buffer), child i uses ``<buffer>.<i>``.  The parent holds no ingest
socket (it would take a share of the connections and never answer them).

Supervision, as ``twisted.runner.procmon.ProcessMonitor`` declares it: a
child that dies is restarted after a backoff (``minRestartDelay`` doubling
to ``maxRestartDelay``, reset once it has run ``stableAfter`` seconds); its
buffer is intact, so what it acknowledged is drained after the restart.  A
child that dies before it ever listened on the first start stops the whole
agent with its reason (a bad buffer path must not become a restart loop).
Stop: TERM to every child, KILL after ``killTime``.

The alert dispatcher and the dashboard run once, in child 0; every child
runs its own drain supervisor and workers, back-pressure and health checks.
"""

import json
import os
import sys

from twisted.application import service
from twisted.application.internet import backoffPolicy
from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.python import usage

from nightowl import reuseport
from nightowl.multiproc.child import CHILD_INDEX, CONTROL_FD

CHILD_MODULE = "nightowl.multiproc.child"
CHILD_HEALTH = "tcp:0:interface=127.0.0.1"
_PASSED_ENV = ("PATH", "PYTHONPATH", "HOME", "LANG", "TZ", "NIGHTOWL_WORKER_NICE")
MAX_LINE = 64 * 1024


def check_options(opts):
    """postOptions' cross-checks for N > 1; UsageError with one line."""
    n = opts["ingest-processes"]
    reason = reuseport.unavailable()
    if reason is not None:
        raise usage.UsageError("--ingest-processes {}: {}; use 1 here".format(n, reason))
    try:
        port, _interface, _backlog = reuseport.parse_tcp(opts["listen"])
    except ValueError:
        raise usage.UsageError("--ingest-processes {} needs a tcp: --listen endpoint, got "
                               "{!r}".format(n, opts["listen"]))
    if port == 0:
        raise usage.UsageError("--ingest-processes {} needs a fixed --listen port (with port 0 "
                               "every process would pick its own)".format(n))


def buffer_path(base, index):
    """Child 0 keeps the configured buffer; child i uses ``<buffer>.<i>``."""
    return base if index == 0 else "{}.{}".format(base, index)


def child_environ(options, index, environ=None):
    """
    The explicit environment of child ``index``: every option as its
    ``NIGHTOWL_*`` variable (secrets stay out of argv), plus the few
    process variables a Python child needs.
    """
    from nightowl import tap
    environ = os.environ if environ is None else environ
    env = dict((k, environ[k]) for k in _PASSED_ENV if k in environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    paths = [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    for (long, _short, _default, var, _coerce, _help) in tap.PARAMETERS:
        value = options.get(long)
        if value is not None:
            env[var] = str(value)
    for (long, _short, var, _help) in tap.FLAGS:
        if options.get(long):
            env[var] = "1"
    env["NIGHTOWL_INGEST_PROCESSES"] = "1"
    env[CHILD_INDEX] = str(index)
    env["NIGHTOWL_BUFFER"] = buffer_path(os.path.abspath(options["buffer"]), index)
    env["NIGHTOWL_HEALTH"] = CHILD_HEALTH if options.get("health") else "none"
    if index == 0:
        if options.get("dashboard") is None:   # --dashboard none parses to None
            env["NIGHTOWL_DASHBOARD"] = "none"
        if options.get("dashboard-password"):
            env["NIGHTOWL_DASHBOARD_PASSWORD"] = options["dashboard-password"]
    else:
        env["NIGHTOWL_DASHBOARD"] = "none"
        env["NIGHTOWL_ALERTS"] = "off"
    return env


class ChildProtocol(protocol.ProcessProtocol):
    """One child's pipes: log lines on stdout/stderr, control lines on fd 3."""

    def __init__(self, parent, index):
        self.parent = parent
        self.index = index
        self.ready = None
        self.last_line = ""
        self._partial = {}
        self.ended = defer.Deferred()

    def childDataReceived(self, fd, data):
        buf = self._partial.get(fd, b"") + data
        *lines, rest = buf.split(b"\n")
        if len(rest) > MAX_LINE:
            lines.append(rest)
            rest = b""
        self._partial[fd] = rest
        for line in lines:
            self._line(fd, line.decode("utf-8", "replace").rstrip("\r"))

    def _line(self, fd, text):
        if fd == CONTROL_FD:
            try:
                message = json.loads(text)
            except ValueError:
                self.parent.log.warn("ingest process {index}: unreadable control line",
                                     index=self.index)
                return
            if message.get("event") == "ready":
                self.ready = message
                self.parent.child_ready(self, message)
            return
        if text.strip():
            self.last_line = text
            self.parent.log.info("ingest {index}: {line}", index=self.index, line=text)

    def processEnded(self, reason):
        for fd in list(self._partial):
            if self._partial[fd]:
                self._line(fd, self._partial.pop(fd).decode("utf-8", "replace"))
        self.parent.child_ended(self, reason)
        self.ended.callback(None)


class _Slot:
    def __init__(self, index):
        self.index = index
        self.proto = None
        self.pid = None
        self.state = "starting"
        self.restarts = 0
        self.restart_times = []
        self.attempt = 0
        self.started_at = None
        self.ever_ready = False
        self.ready = None
        self.exit_code = None
        self.exit_signal = None
        self.pending_restart = None


class IngestParent(service.MultiService):
    """Spawns, supervises and stops the ingest processes; serves their /status."""

    log = Logger()
    name = "ingest-parent"

    minRestartDelay = 1.0
    maxRestartDelay = 30.0
    stableAfter = 60.0
    killTime = 30.0

    def __init__(self, count, listen, environs, reactor=None, spawn=None):
        service.MultiService.__init__(self)
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.count = count
        self.listen = listen
        self.environs = environs
        self.slots = [_Slot(i) for i in range(count)]
        self.started = None
        self.stopping = False
        self.failed = None
        self._announced = False
        self._backoff = backoffPolicy(initialDelay=self.minRestartDelay,
                                      maxDelay=self.maxRestartDelay, factor=2.0,
                                      jitter=lambda: 0.0)
        self._spawn_process = spawn or self._spawn_real

    # -- lifecycle -----------------------------------------------------------

    def privilegedStartService(self):
        try:
            reuseport.probe(self.listen)
        except OSError as e:
            raise SystemExit("nightowl: cannot listen on {}: {}".format(
                self.listen, e.strerror or e))
        service.MultiService.privilegedStartService(self)

    def startService(self):
        service.MultiService.startService(self)
        self.started = self.reactor.seconds()
        for slot in self.slots:
            self._spawn(slot)

    def _spawn_real(self, proto, env):
        return self.reactor.spawnProcess(
            proto, sys.executable, [sys.executable, "-m", CHILD_MODULE], env=env,
            childFDs={0: "w", 1: "r", 2: "r", CONTROL_FD: "r"})

    def _spawn(self, slot):
        slot.pending_restart = None
        if self.stopping:
            return
        proto = ChildProtocol(self, slot.index)
        slot.proto, slot.ready, slot.state = proto, None, "starting"
        slot.started_at = self.reactor.seconds()
        transport = self._spawn_process(proto, self.environs[slot.index])
        slot.pid = getattr(transport, "pid", None)

    def child_ready(self, proto, message):
        slot = self.slots[proto.index]
        if slot.proto is not proto:
            return
        slot.ready, slot.state, slot.ever_ready = message, "running", True
        slot.pid = message.get("pid", slot.pid)
        self.log.info("ingest process {index} (pid {pid}) accepting, buffer {buffer}",
                      index=slot.index, pid=slot.pid, buffer=message.get("buffer"))
        if not self._announced and all(s.ever_ready for s in self.slots):
            self._announced = True
            host, port = self._listen_host(), message.get("port")
            self.log.info("nightowl listening on {host}:{port} with {n} ingest processes "
                          "(SO_REUSEPORT), buffers {buffers}", host=host, port=port,
                          n=self.count, buffers=", ".join(
                              s.ready["buffer"] for s in self.slots if s.ready))

    def _listen_host(self):
        _port, interface, _backlog = reuseport.parse_tcp(self.listen)
        return interface or "0.0.0.0"

    def child_ended(self, proto, reason):
        slot = self.slots[proto.index]
        if slot.proto is not proto:
            return
        slot.proto = None
        slot.exit_code = getattr(reason.value, "exitCode", None)
        slot.exit_signal = getattr(reason.value, "signal", None)
        if self.stopping:
            slot.state = "stopped"
            return
        if not slot.ever_ready and not self._announced:
            # the first start failed: a configuration or environment problem
            slot.state = "failed"
            self._fail("nightowl: ingest process {} could not start: {}".format(
                slot.index, proto.last_line or "exit code {}".format(slot.exit_code)))
            return
        now = self.reactor.seconds()
        if slot.started_at is not None and now - slot.started_at >= self.stableAfter:
            slot.attempt = 0
        delay = self._backoff(slot.attempt)
        slot.attempt += 1
        slot.restarts += 1
        slot.restart_times = [t for t in slot.restart_times if now - t < 600] + [now]
        slot.state = "restarting"
        self.log.error("ingest process {index} (pid {pid}) ended (exit code {code}, signal "
                       "{signal}): restarting in {delay:.1f} s; its buffer is kept and drained "
                       "after the restart", index=slot.index, pid=slot.pid,
                       code=slot.exit_code, signal=slot.exit_signal, delay=delay)
        slot.pending_restart = self.reactor.callLater(delay, self._spawn, slot)

    def _fail(self, line):
        """Stop everything: one child could not start at all."""
        if self.failed is not None:
            return
        self.failed = line
        self.log.critical("{line}", line=line)
        sys.stderr.write(line + "\n")
        if getattr(self.reactor, "running", False):
            # twistd has no exit code of its own: end with 1 once everything stopped
            self.reactor.addSystemEventTrigger("after", "shutdown", _exit_failed)
            self.reactor.stop()

    def stopService(self):
        """TERM every child, KILL those alive after ``killTime``, then stop the web."""
        self.stopping = True
        waits = []
        for slot in self.slots:
            if slot.pending_restart is not None and slot.pending_restart.active():
                slot.pending_restart.cancel()
            slot.pending_restart = None
            proto = slot.proto
            if proto is None or proto.transport is None:
                slot.state = "stopped"
                continue
            slot.state = "stopping"
            waits.append(proto.ended)
            _signal(proto, "TERM")
            killer = self.reactor.callLater(self.killTime, _signal, proto, "KILL")
            proto.ended.addBoth(lambda r, k=killer: (k.cancel() if k.active() else None, r)[1])
        d = defer.DeferredList(waits)
        d.addCallback(lambda _: service.MultiService.stopService(self))
        d.addCallback(lambda _: self.log.info("nightowl stopped {n} ingest processes",
                                              n=self.count))
        return d

    # -- figures ---------------------------------------------------------------

    def children(self):
        """What the parent knows of each child (no I/O)."""
        now = self.reactor.seconds()
        out = []
        for slot in self.slots:
            ready = slot.ready or {}
            out.append({
                "index": slot.index, "pid": slot.pid, "state": slot.state,
                "alive": slot.proto is not None, "restarts": slot.restarts,
                "restarts_last_10min": len([t for t in slot.restart_times if now - t < 600]),
                "exit_code": slot.exit_code, "exit_signal": slot.exit_signal,
                "buffer": ready.get("buffer") or self.environs[slot.index]["NIGHTOWL_BUFFER"],
                "buffer_id": ready.get("buffer_id"), "port": ready.get("port"),
                "health_port": ready.get("health_port") if slot.state == "running" else None,
                "uptime_seconds": (round(now - slot.started_at, 3)
                                   if slot.started_at is not None and slot.proto else None),
            })
        return out


def _signal(proto, sig):
    try:
        proto.transport.signalProcess(sig)
    except Exception:
        pass  # already gone (ProcessExitedAlready) or never started


def _exit_failed():
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def make_parent(options, reactor=None):
    """The root service of ``twistd nightowl --ingest-processes N`` (N > 1)."""
    count = options["ingest-processes"]
    environs = [child_environ(options, i) for i in range(count)]
    parent = IngestParent(count, options["listen"], environs, reactor=reactor)
    if options.get("health"):
        from nightowl.multiproc.web import ParentHealth
        ParentHealth(options["health"], parent, reactor=reactor).setServiceParent(parent)
    return parent
