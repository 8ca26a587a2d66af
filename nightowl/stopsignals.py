"""
A second SIGTERM (or SIGINT) while the agent is already stopping is
ignored, not a traceback.

A stop of the whole process group (supervisord's ``stopasgroup``, systemd
with ``KillMode=control-group``, ``kill -TERM -PGID``, ``timeout``) reaches
an ingest process of ``--ingest-processes N`` twice, from the group and from
its parent's stop, and Twisted's handler then calls ``reactor.stop()`` on a
reactor already stopping: "ReactorNotRunning: Can't stop reactor that isn't
running", logged as critical on every such stop.  ``install`` wraps the
reactor's public signal methods (``sigTerm``, ``sigInt``, ``sigBreak``,
which it binds when it runs) so that the first signal stops it as before
and a later one, or one after a stop begun another way, is logged at info.
"""

from twisted.logger import Logger

log = Logger()
SIGNAL_METHODS = ("sigTerm", "sigInt", "sigBreak")


def install(reactor):
    """Guard ``reactor``'s stop signals (once per reactor; before it runs)."""
    if getattr(reactor, "_nightowl_stop_guard", False):
        return
    stopping = []
    trigger = getattr(reactor, "addSystemEventTrigger", None)
    if trigger is not None:
        trigger("before", "shutdown", lambda: stopping.append(True))
    for name in SIGNAL_METHODS:
        original = getattr(reactor, name, None)
        if original is None:
            continue
        setattr(reactor, name, _guarded(original, stopping))
    reactor._nightowl_stop_guard = True


def _guarded(original, stopping):
    def handler(number, frame=None):
        if stopping:
            log.info("signal {number} while stopping: already on the way down", number=number)
            return
        stopping.append(True)
        original(number, frame)
    return handler
