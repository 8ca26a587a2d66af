"""
The supervisor's end of a child's pipes: line framing of the child's fd 1
(IPC messages) and fd 2 (log lines) with ``LineOnlyReceiver`` and its
``MAX_LENGTH``, the log lines re-emitted through twisted.logger at their
level, and ``WorkerProtocol``, the ProcessProtocol of one drain worker.
"""

from twisted.internet import error, protocol
from twisted.logger import Logger, LogLevel
from twisted.protocols import basic

from nightowl.drain import ipc

#: an over-long log line is cut to this many bytes
LOG_LINE_CUT = 4096


class _Pipe:
    """What LineOnlyReceiver asks of its transport: whether to stop reading."""

    disconnecting = False


class ChildLines(basic.LineOnlyReceiver):
    """
    Lines of one pipe of a child process: ``on_line(bytes)`` for each line,
    ``on_too_long(bytes)`` for a line (or an unfinished rest) over
    ``MAX_LENGTH``, which is then dropped.
    """

    delimiter = b"\n"
    MAX_LENGTH = ipc.MAX_LINE

    def __init__(self, on_line, on_too_long):
        self.on_line = on_line
        self.on_too_long = on_too_long
        self.transport = _Pipe()

    def lineReceived(self, line):
        self.on_line(line)

    def lineLengthExceeded(self, line):
        self._buffer = b""   # LineOnlyReceiver's own buffer: drop the over-long rest
        self.on_too_long(line)

    def finish(self):
        """The pipe closed: an unfinished last line still counts."""
        self.dataReceived(self.delimiter)


def log_level(line):
    head = line.split(" ", 1)[0]
    if head in ("debug", "info", "warn", "error", "critical"):
        return LogLevel.levelWithName(head)
    return LogLevel.info


def log_lines(log, format, **fields):
    """A ChildLines for a child's stderr: each line re-emitted at its own level."""
    def line(data):
        text = data.decode("utf-8", "replace").rstrip()
        if text:
            log.emit(log_level(text), format, line=text, **fields)
    return ChildLines(line, lambda data: line(data[:LOG_LINE_CUT] + b"..."))


def signal_process(transport, name):
    try:
        transport.signalProcess(name)
    except (error.ProcessExitedAlready, OSError):
        pass


class WorkerProtocol(protocol.ProcessProtocol):
    """One worker process: line-based JSON on fd 1, log lines on fd 2."""

    log = Logger()

    def __init__(self, supervisor, worker_id):
        self.supervisor = supervisor
        self.worker_id = worker_id
        self.pid = None
        self.ended = False
        self._out = ChildLines(self._line, self._tooLong)
        self._err = log_lines(self.log, "drain worker {worker}: {line}", worker=worker_id)

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
        signal_process(self.transport, name)

    def outReceived(self, data):
        self._out.dataReceived(data)

    def _line(self, line):
        if not line.strip():
            return
        try:
            message = ipc.decode(line)
        except ipc.ProtocolError as e:
            self.log.error("worker {worker} sent a bad IPC line ({why})",
                           worker=self.worker_id, why=str(e))
            return
        self.supervisor.messageReceived(self, message)

    def _tooLong(self, line):
        self.log.error("worker {worker} sent an over-long IPC line; killing it",
                       worker=self.worker_id)
        self.signal("KILL")

    def errReceived(self, data):
        self._err.dataReceived(data)

    def processEnded(self, reason):
        self._err.finish()
        self.ended = True
        self.supervisor.workerEnded(self, reason)
