"""
One ingest process of several: ``python -m nightowl.multiproc.child``.

Spawned by L{nightowl.multiproc.parent.IngestParent} with an explicit
environment: every setting arrives as its ``NIGHTOWL_*`` variable (so the
DSN and the token never appear in ``ps``) and goes through the same
``tap.Options`` as ``twistd nightowl``.  The child is a whole single-process
agent (its own reactor, writer thread, buffer file, drain supervisor and
workers, health endpoint on an ephemeral loopback port) whose ingest port is
opened with SO_REUSEPORT.

Talk to the parent:
- fd 3 (write): one JSON line ``{"event": "ready", ...}`` once listening
  (pid, ingest port, health port, buffer path and identity).
- stdout: the log, one event per line, without timestamps (the parent's log
  adds its own).  The child's "listening" and "health" lines are reworded so
  that only the parent's own lines announce the endpoints tools connect to.
- fd 0 (read): end of file means the parent is gone: the child stops.
"""

import json
import os
import sys
import threading

CONTROL_FD = 3
CHILD_INDEX = "NIGHTOWL_INGEST_CHILD"

_REWORDED = (("nightowl listening on", "ingest process listening on"),
             ("nightowl health on", "ingest process health on"))


def format_event(event):
    """One log line (plus a traceback, if any) for the parent to relay."""
    from twisted.logger import formatEvent
    text = formatEvent(event)
    for old, new in _REWORDED:
        if text.startswith(old):
            text = new + text[len(old):]
    failure = event.get("log_failure")
    if failure is not None:
        text = text + "\n" + failure.getTraceback()
    return text + "\n"


def ready_report(root, index):
    """The ``ready`` message: what the parent needs to know about this child."""
    port = root.listening_port()
    health_port = None
    if root.health is not None and root.health.port() is not None:
        health_port = root.health.port().getHost().port
    return {"event": "ready", "index": index, "pid": os.getpid(),
            "port": port.getHost().port if port is not None else None,
            "health_port": health_port, "buffer": root.buffer.path,
            "buffer_id": root.buffer.buffer_id}


def _report(message):
    try:
        os.write(CONTROL_FD, (json.dumps(message) + "\n").encode("utf-8"))
    except OSError:
        pass  # started by hand, without a parent: nobody to tell


def _watch_parent(reactor):
    """Stop when the parent's end of stdin closes (the parent died, even by SIGKILL)."""
    def wait():
        try:
            while os.read(0, 4096):
                pass
        except OSError:
            pass
        reactor.callFromThread(_stop, reactor)
    threading.Thread(target=wait, name="parent-watch", daemon=True).start()


def _stop(reactor):
    if reactor.running:
        reactor.stop()


def main(environ=None, reactor=None):
    env = os.environ if environ is None else environ
    if reactor is None:
        from twisted.internet import reactor
    from twisted.logger import FileLogObserver, globalLogBeginner
    from twisted.python import usage

    from nightowl import tap
    globalLogBeginner.beginLoggingTo([FileLogObserver(sys.stdout, format_event)],
                                     redirectStandardIO=False)
    index = int(env.get(CHILD_INDEX, "0"))
    try:
        options = tap.parse([], environ=env)
    except usage.UsageError as e:
        sys.stderr.write("nightowl: {}\n".format(e))
        return 2
    options["reuse-port"] = True
    try:
        root = tap.makeService(options, reactor=reactor)
        root.privilegedStartService()
    except SystemExit as e:
        sys.stderr.write("{}\n".format(e.code))
        return 1
    root.startService()
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    _report(ready_report(root, index))
    _watch_parent(reactor)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
