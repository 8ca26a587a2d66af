"""
The drain worker process: ``python -m nightowl.drain.worker`` lands here.

Reads the environment into a Config (nightowl.drain.config), lowers the
process's priority, takes fd 1 for the IPC channel, installs the signal
handlers, wires the loop (nightowl.drain.worker.Worker) to the buffer
reader, the batch writer, the quarantine breaker and the pipes, and runs
it.  ``maintenance`` as the first argument runs nightowl.drain.maintenance
instead.  The test-only fault hooks are loaded only when NIGHTOWL_FAULT is
set.
"""

import os
import signal
import sys
import threading

from nightowl.drain.config import Config, ConfigError

DEFAULT_NICE = 5


def _lower_priority(environ, log):
    """
    Ingest is latency-critical (the SDK waits 0.5 s for its ack); the drain
    is throughput work that may lag and catch up.  When the machine is short
    of CPU, let the agent's reactor win: workers run at a higher nice value
    (NIGHTOWL_WORKER_NICE, default 5; 0 keeps the agent's priority).
    """
    try:
        increment = int(environ.get("NIGHTOWL_WORKER_NICE", DEFAULT_NICE))
    except ValueError:
        increment = DEFAULT_NICE
    if increment > 0:
        try:
            os.nice(increment)
        except OSError as e:
            log("warn", "could not lower the worker's priority: {}".format(e))


def main(environ=None, argv=None):
    from nightowl.drain.logbridge import bridge_twisted, make_logger
    environ = os.environ if environ is None else environ
    argv = sys.argv[1:] if argv is None else argv
    log = make_logger(sys.stderr)
    bridge_twisted(log)
    if argv[:1] == ["maintenance"]:
        from nightowl.drain import maintenance
        return maintenance.main(environ, log)
    try:
        config = Config.from_environ(environ)
    except ConfigError as e:
        log("error", "bad configuration: {}".format(e))
        return 2

    _lower_priority(environ, log)

    # fd 1 belongs to the IPC channel: keep it, and send stray prints to stderr
    ipc_out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    stop_event = threading.Event()

    def on_term(signum, frame):
        stop_event.set()
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the agent's ^C is the agent's business

    def on_eof():
        os._exit(0)

    from nightowl.pgwrite import BatchWriter, PostgresUnavailable
    from nightowl.buffer.reader import BufferReader
    from nightowl.drain.worker import Worker

    reader = BufferReader(config.buffer)
    if config.buffer_id is None:
        config.buffer_id = reader.buffer_id()
        if config.buffer_id is None:
            log("error", "the buffer has no buffer_id in its meta table")
            return 2

    from nightowl.drain.breaker import QuarantineBreaker
    breaker = QuarantineBreaker()

    def writer_factory():
        return BatchWriter(config.dsn, config.environment, config.buffer_id,
                           ledger=config.ledger, issues=config.issues,
                           rollups=config.rollups, breaker=breaker)

    from nightowl.drain.channel import Channel
    from nightowl.drain.watchdog import HEARTBEAT_EVERY
    channel = Channel(sys.stdin.buffer, ipc_out, stop_event, on_eof, log)
    worker = Worker(config, channel, reader, writer_factory, stop_event, log,
                    unavailable=(PostgresUnavailable,), breaker=breaker)
    if worker.faults is not None:
        worker.faults.install(lambda: worker.current_batch)
    channel.start()
    channel.start_heartbeat(HEARTBEAT_EVERY)
    code = worker.run()
    ipc_out.flush()
    return code


def run():
    """The process entry: main() (profiled if NIGHTOWL_PROFILE is set), then exit."""
    from nightowl.drain import profiler
    code = profiler.run(main)
    # os._exit: the IPC reader thread sits in a blocking stdin read, and the
    # interpreter's shutdown would abort on its buffer lock
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
