"""
The worker process's logging: one ``<level> <message>`` line per event on
stderr, which the supervisor tags with the worker id and re-emits through
twisted.logger in the agent.  ``make_logger`` is the worker's own ``log``;
``bridge_twisted`` sends what library code (pgwrite, migrate) logs through
twisted.logger to the same lines.
"""

import threading


def make_logger(stream):
    lock = threading.Lock()

    def log(level, message):
        line = "{} {}\n".format(level, message.replace("\n", " "))
        with lock:
            try:
                stream.write(line)
                stream.flush()
            except (OSError, ValueError):
                pass
    return log


def bridge_twisted(log):
    """pgwrite/migrate log through twisted.logger: one stderr line per event."""
    from twisted.logger import formatEvent, globalLogBeginner

    def observer(event):
        text = formatEvent(event)
        if event.get("log_failure") is not None:
            text += " ({})".format(event["log_failure"].type.__name__)
        level = event.get("log_level")
        log(level.name if level is not None else "info", text)
    globalLogBeginner.beginLoggingTo([observer], discardBuffer=True,
                                     redirectStandardIO=False)
