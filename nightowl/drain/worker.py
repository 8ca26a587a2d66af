"""
The drain worker: ``python -m nightowl.drain.worker``.

A child process spawned by nightowl.drain.supervisor with an explicit
environment (the DSN never appears on argv).  It is a plain blocking loop, no
reactor: ask the supervisor for a claim, read the claimed payload bytes from
the SQLite buffer (its own read-only connection: SELECT only, never a write),
hand them to ``pgwrite.BatchWriter.write``, report ``done`` and wait for
``marked`` before claiming again.  Every claim, mark and quarantine goes
through the supervisor to the agent's single writer thread.

Configuration (environment):

  NIGHTOWL_DSN          Postgres DSN (required)
  NIGHTOWL_BUFFER       SQLite buffer path (required)
  NIGHTOWL_WORKER_ID    this worker's number N (claims are state 100+N)
  NIGHTOWL_ENVIRONMENT  environment stamped on rows (default production)
  NIGHTOWL_BATCH_SIZE   payload rows per claim (default 5000)
  NIGHTOWL_BUFFER_ID    the buffer's UUID (default: read from its meta table)
  NIGHTOWL_LEDGER       0 disables the exactly-once ledger (benchmarks only)
  NIGHTOWL_FAULT        test-only: kill-after-commit:N, kill-mid-copy:N or
                        kill-on-payload:TEXT (SIGKILL whenever a claimed payload
                        holds TEXT: a payload that kills every worker)

Postgres outages: the claimed ids are kept (not reported), the same rows are
retried with exponential backoff 100 ms -> 10 s, and the outage is logged at
doublings only.  ``stop`` or SIGTERM: finish (and report) the current batch,
then exit 0.  EOF on stdin means the agent is gone: exit at once.

Logs: one line each on stderr; the supervisor tags them with the worker id.
"""

import os
import queue
import signal
import sqlite3
import sys
import threading
import time

from nightowl.drain import ipc

IDLE_SECONDS = 0.1
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 10.0
STATS_EVERY = 2.0
LEDGER_PRUNE_EVERY = 60.0  # seconds between ledger clean-ups
READ_CHUNK = 500


class ConfigError(Exception):
    pass


class Config:
    def __init__(self, dsn, buffer, worker_id, environment="production", batch_size=5000,
                 buffer_id=None, ledger=True, fault=None, issues=True, rollups=True):
        self.dsn = dsn
        self.buffer = buffer
        self.worker_id = worker_id
        self.environment = environment
        self.batch_size = batch_size
        self.buffer_id = buffer_id
        self.ledger = ledger
        self.fault = fault
        self.issues = issues  # NIGHTOWL_ISSUES=0: raw rows only, no issues/thresholds/alerts
        self.rollups = rollups

    @classmethod
    def from_environ(cls, env):
        dsn = env.get("NIGHTOWL_DSN", "").strip()
        if not dsn:
            raise ConfigError("NIGHTOWL_DSN is not set")
        buffer = env.get("NIGHTOWL_BUFFER", "").strip()
        if not buffer:
            raise ConfigError("NIGHTOWL_BUFFER is not set")
        try:
            worker_id = int(env.get("NIGHTOWL_WORKER_ID", "0"))
            batch_size = int(env.get("NIGHTOWL_BATCH_SIZE", "5000"))
        except ValueError:
            raise ConfigError("NIGHTOWL_WORKER_ID and NIGHTOWL_BATCH_SIZE must be whole numbers")
        if worker_id < 0 or batch_size <= 0:
            raise ConfigError("NIGHTOWL_WORKER_ID must be >= 0 and NIGHTOWL_BATCH_SIZE > 0")
        return cls(
            dsn=dsn, buffer=buffer, worker_id=worker_id,
            environment=env.get("NIGHTOWL_ENVIRONMENT") or "production",
            batch_size=batch_size,
            buffer_id=(env.get("NIGHTOWL_BUFFER_ID") or "").strip() or None,
            ledger=env.get("NIGHTOWL_LEDGER", "1").strip().lower() not in ("0", "false", "no", "off"),
            fault=None if fault_spent() else parse_fault(env.get("NIGHTOWL_FAULT")),
            issues=env.get("NIGHTOWL_ISSUES", "1").strip().lower() not in ("0", "false", "no", "off"),
            rollups=env.get("NIGHTOWL_ROLLUPS", "1").strip().lower() not in ("0", "false", "no", "off"),
        )


def parse_fault(text):
    """``kill-after-commit:N`` / ``kill-mid-copy:N`` -> (kind, N), or None."""
    if not text or not text.strip():
        return None
    kind, _, n = text.strip().partition(":")
    if kind == "kill-on-payload" and n:
        return kind, n.encode("utf-8")
    if kind not in ("kill-after-commit", "kill-mid-copy") or not n.isdigit() or int(n) < 1:
        raise ConfigError("NIGHTOWL_FAULT: expected kill-after-commit:N, kill-mid-copy:N "
                          "or kill-on-payload:TEXT")
    return kind, int(n)


def _kill_self():
    # NIGHTOWL_FAULT_ONCE=path: the fault fires once across respawns
    marker = os.environ.get("NIGHTOWL_FAULT_ONCE")
    if marker:
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


def fault_spent():
    marker = os.environ.get("NIGHTOWL_FAULT_ONCE")
    return bool(marker) and os.path.exists(marker)


def install_mid_copy_fault(batch_number, current_batch):
    """
    Make the ``batch_number``-th batch's first COPY SIGKILL this process after
    part of the data went to the server.  Test-only; emulated here by giving
    every psycopg2 connection a cursor class whose ``copy_expert``/``copy_from``
    reads one chunk of the COPY stream and then dies.  ``current_batch()``
    returns the number of the batch being written.
    """
    import psycopg2
    import psycopg2.extensions

    class _DyingFile:
        def __init__(self, f):
            self._f = f
            self._reads = 0

        def read(self, size=-1):
            self._reads += 1
            if self._reads > 1:
                _kill_self()
            return self._f.read(size if size and size > 0 else 8192)

        def readline(self, size=-1):
            return self.read(size)

    class FaultCursor(psycopg2.extensions.cursor):
        def copy_expert(self, sql, file, *args, **kwargs):
            if current_batch() == batch_number:
                file = _DyingFile(file)
            return super().copy_expert(sql, file, *args, **kwargs)

        def copy_from(self, file, *args, **kwargs):
            if current_batch() == batch_number:
                file = _DyingFile(file)
            return super().copy_from(file, *args, **kwargs)

    real_connect = psycopg2.connect

    def connect(*args, **kwargs):
        kwargs.setdefault("cursor_factory", FaultCursor)
        return real_connect(*args, **kwargs)

    psycopg2.connect = connect


class BufferReader:
    """Reads payload bytes by id from the SQLite buffer.  SELECT only."""

    def __init__(self, path):
        self.path = path
        self._conn = None

    def _connect(self):
        try:
            conn = sqlite3.connect("file:{}?mode=ro".format(self.path), uri=True,
                                   isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("SELECT 1 FROM payloads LIMIT 1").fetchall()
        except sqlite3.Error:
            # read-only open can fail on odd filesystems; we still only SELECT
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=5000")
        return conn

    @property
    def conn(self):
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def buffer_id(self):
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'buffer_id'").fetchone()
        return row[0] if row else None

    def read(self, ids):
        """[(id, bytes)] for the ids that exist, in id order."""
        out = []
        ids = sorted(ids)
        conn = self.conn
        conn.execute("BEGIN")
        try:
            for start in range(0, len(ids), READ_CHUNK):
                chunk = ids[start:start + READ_CHUNK]
                out.extend(conn.execute(
                    "SELECT id, payload FROM payload_bodies WHERE id IN ({}) ORDER BY id".format(
                        ",".join("?" * len(chunk))), chunk).fetchall())
        finally:
            conn.execute("COMMIT")
        return [(i, bytes(p)) for (i, p) in out]

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Channel:
    """
    The pipe pair to the supervisor.  A reader thread turns stdin lines into
    messages; ``stop`` sets the stop event wherever the main loop is; EOF
    calls ``on_eof`` (exit at once).
    """

    def __init__(self, infile, outfile, stop_event, on_eof, log):
        self._in = infile
        self._out = outfile
        self._stop = stop_event
        self._on_eof = on_eof
        self._log = log
        self._queue = queue.Queue()
        self._thread = threading.Thread(target=self._read, name="ipc-reader", daemon=True)

    def start(self):
        self._thread.start()

    def _read(self):
        while True:
            line = self._in.readline()
            if not line:
                self._on_eof()
                self._queue.put(None)
                return
            if not line.strip():
                continue
            try:
                message = ipc.decode(line)
            except ipc.ProtocolError as e:
                self._log("warn", "ignoring a bad line from the supervisor: {}".format(e))
                continue
            if message["op"] == ipc.STOP:
                self._stop.set()
            else:
                self._queue.put(message)

    _lock = threading.Lock()   # the heartbeat thread writes too

    def send(self, message):
        line = ipc.encode(message)
        with self._lock:
            self._out.write(line)
            self._out.flush()

    def start_heartbeat(self, every):
        """A thread sending ``heartbeat`` every ``every`` s: silence means frozen."""
        def beat():
            while True:
                time.sleep(every)
                try:
                    self.send({"op": ipc.HEARTBEAT})
                except (OSError, ValueError):
                    return
        threading.Thread(target=beat, name="ipc-heartbeat", daemon=True).start()

    def expect(self, op):
        """Block until the supervisor sends ``op``; None on EOF."""
        while True:
            message = self._queue.get()
            if message is None:
                self._queue.put(None)
                return None
            if message["op"] == op:
                return message
            self._log("warn", "unexpected message {!r} while waiting for {!r}".format(
                message["op"], op))


class Worker:
    def __init__(self, config, channel, reader, writer_factory, stop_event, log,
                 clock=time.monotonic, unavailable=(), kill=_kill_self, breaker=None):
        self.config = config
        self.breaker = breaker  # the QuarantineBreaker the writer consults, if any
        self.channel = channel
        self.reader = reader
        self.writer_factory = writer_factory
        self.stop_event = stop_event
        self.log = log
        self.clock = clock
        self.unavailable = tuple(unavailable)
        self.kill = kill
        self.writer = None
        self.current_batch = 0
        self.commits = 0
        self.last_success = None
        self.last_stats_sent = None
        self.last_prune = None
        self.stats = {
            "worker": config.worker_id, "pid": os.getpid(),
            "batches": 0, "payloads": 0, "records": 0, "rows": 0, "rows_by_table": {},
            "quarantined": 0, "skipped": 0, "ledger_skipped": 0, "failures": 0,
            "last_error": None, "blocked": None,
            "pg_reachable": None, "seconds_since_success": None,
        }

    # -- stats -----------------------------------------------------------

    def snapshot(self):
        s = dict(self.stats)
        s["rows_by_table"] = dict(self.stats["rows_by_table"])
        if self.breaker is not None:
            s["breaker"] = self.breaker.state()
        if self.last_success is not None:
            s["seconds_since_success"] = round(self.clock() - self.last_success, 3)
        return s

    def _maybe_send_stats(self):
        now = self.clock()
        if self.last_stats_sent is None or now - self.last_stats_sent >= STATS_EVERY:
            self.last_stats_sent = now
            self.channel.send({"op": ipc.STATS, "stats": self.snapshot()})

    def _record(self, result, payloads):
        s = self.stats
        s["batches"] += 1
        s["payloads"] += payloads
        s["records"] += int(getattr(result, "records", 0) or 0)
        for table, n in (getattr(result, "rows_by_table", None) or {}).items():
            s["rows_by_table"][table] = s["rows_by_table"].get(table, 0) + int(n)
            s["rows"] += int(n)
        s["quarantined"] += len(getattr(result, "quarantined", None) or ())
        s["skipped"] += _count(getattr(result, "skipped", None))
        s["ledger_skipped"] += int(getattr(result, "ledger_skipped", 0) or 0)
        s["pg_reachable"] = True
        s["blocked"] = None
        self.last_success = self.clock()

    # -- the loop --------------------------------------------------------

    def run(self):
        self.channel.send({"op": ipc.HELLO, "worker": self.config.worker_id, "pid": os.getpid()})
        self.log("info", "worker {} started (pid {}, batch size {})".format(
            self.config.worker_id, os.getpid(), self.config.batch_size))
        while not self.stop_event.is_set():
            self.channel.send({"op": ipc.CLAIM, "limit": self.config.batch_size})
            reply = self.channel.expect(ipc.CLAIMED)
            if reply is None:
                return 0
            self._maybe_prune_ledger(reply.get("low_water"))
            ids = [int(i) for i in reply.get("ids") or ()]
            if not ids:
                self._maybe_send_stats()
                self.stop_event.wait(IDLE_SECONDS)
                continue
            done = self.drain(ids)
            if done is None:
                # stopping during an outage: the ids stay claimed; the
                # supervisor releases them when we exit
                self.log("info", "stopping with {} claimed payloads unwritten "
                                 "(safe in the buffer)".format(len(ids)))
                break
            self.channel.send(done)
            if self.channel.expect(ipc.MARKED) is None:
                return 0
            self.last_stats_sent = self.clock()
            if done.get("held") and self.breaker is not None:
                # the breaker is open: the held rows are pending again; retry later
                if self.stop_event.wait(self.breaker.delay()):
                    break
        self.log("info", "worker {} stopped".format(self.config.worker_id))
        return 0

    def _maybe_prune_ledger(self, low_water):
        """Now and then, drop ledger rows of ids the buffer has finished with."""
        if low_water is None or self.writer is None:
            return
        now = self.clock()
        if self.last_prune is not None and now - self.last_prune < LEDGER_PRUNE_EVERY:
            return
        self.last_prune = now
        try:
            n = self.writer.prune_ledger(int(low_water))
        except Exception as e:
            self.log("warn", "pruning the delivery ledger failed ({}); will retry".format(
                _describe(e)))
            return
        if n:
            self.log("info", "pruned {} delivery ledger rows below id {}".format(n, low_water))

    def drain(self, ids):
        """Write one claimed batch; the ``done`` message, or None when stopping."""
        rows = self.reader.read(ids)
        fault = self.config.fault
        if fault and fault[0] == "kill-on-payload" and any(fault[1] in p for (_i, p) in rows):
            self.log("warn", "fault injection: SIGKILL on a claimed payload")
            self.kill()
        found = set(i for (i, _p) in rows)
        missing = [i for i in ids if i not in found]
        if missing:
            self.log("warn", "{} claimed ids are not in the buffer; reporting them "
                             "drained".format(len(missing)))
        self.current_batch += 1
        result = self._write_with_retry(rows)
        if result is None:
            return None
        self.commits += 1
        if self.config.fault == ("kill-after-commit", self.commits):
            self.log("warn", "fault injection: SIGKILL after commit {}".format(self.commits))
            self.kill()
        quarantined = list(result.quarantined or ())
        held, requeue = [], []
        if self.breaker is not None:
            quarantined, held, requeue = self._settle(result, quarantined)
        result = result._replace(quarantined=quarantined) if hasattr(result, "_replace") \
            else result
        self._record(result, len(rows) - len(held))
        quarantined = [[int(i), str(reason)] for (i, reason) in quarantined]
        q_ids = set(i for (i, _r) in quarantined)
        drained = set(int(i) for i in (result.drained or ()))
        drained.update(missing)
        drained.difference_update(q_ids)
        drained.difference_update(held)
        # every id we wrote is either drained, quarantined or held back (pending again)
        for i in found:
            if i not in drained and i not in q_ids and i not in held:
                drained.add(i)
        done = {"op": ipc.DONE, "drained": sorted(drained), "quarantined": quarantined,
                "stats": self.snapshot()}
        if held or requeue:
            done["held"] = held
            done["requeue"] = requeue
        return done

    def _settle(self, result, quarantined):
        """The breaker's say on this batch: (quarantined, held, requeue)."""
        was_open = set((b["sqlstate"], b["table"]) for b in self.breaker.state())
        quarantined, held, requeue = self.breaker.settle(
            result.drained or (), quarantined, getattr(result, "held", None) or (),
            getattr(result, "rows_by_table", None) or {})
        now_open = set((b["sqlstate"], b["table"]) for b in self.breaker.state())
        for sqlstate, table in sorted(now_open - was_open):
            self.log("error", "quarantine breaker OPEN: payloads keep failing with SQLSTATE {} "
                              "on {}; the drain stops quarantining them, keeps them pending and "
                              "retries with backoff ({} requeued)".format(
                                  sqlstate, table, len(requeue)))
        for sqlstate, table in sorted(was_open - now_open):
            self.log("info", "quarantine breaker closed: SQLSTATE {} on {} cleared; draining "
                             "resumes".format(sqlstate, table))
        if held and now_open:
            self.log("warn", "held {} payloads back (breaker open); retrying in about "
                             "{:.0f} s".format(len(held), self.breaker.delay()))
        return quarantined, held, requeue

    def _write_with_retry(self, rows):
        delay = BACKOFF_FIRST
        attempt = 0
        while True:
            try:
                if self.writer is None:
                    self.writer = self.writer_factory()
                result = self.writer.write(rows)
            except self.unavailable as e:
                attempt += 1
                self._failed(e, attempt, delay, outage=True)
            except Exception as e:
                attempt += 1
                self._failed(e, attempt, delay, outage=False)
                self._discard_writer()
            else:
                if attempt:
                    self.log("info", "postgres write succeeded again after {} failed "
                                     "attempts".format(attempt))
                return result
            self._maybe_send_stats()
            if self.stop_event.wait(delay):
                return None
            delay = min(delay * 2, BACKOFF_MAX)

    def _failed(self, error, attempt, delay, outage):
        self.stats["failures"] += 1
        cause = _describe(error)
        self.stats["last_error"] = cause
        if outage:
            self.stats["pg_reachable"] = False
        elif getattr(error, "sqlstate", None):
            # Postgres answered and refuses every batch (schema missing, permission
            # denied ...): not an outage; /status shows it as critical until it clears
            from nightowl import pgerrors
            self.stats["pg_reachable"] = True
            self.stats["blocked"] = {"kind": pgerrors.kind(error.sqlstate),
                                     "sqlstate": error.sqlstate,
                                     "table": getattr(error, "table", None), "error": cause}
        if attempt & (attempt - 1) == 0:   # 1, 2, 4, 8 ...: doublings only
            self.log("error", "{} writing a batch of {} (attempt {}, retrying the same rows "
                              "in {:.1f} s): {}".format(
                                  "postgres unavailable" if outage else
                                  "postgres refused" if getattr(error, "sqlstate", None)
                                  else "unexpected error",
                                  "payloads", attempt, delay, _describe(error)))

    def _discard_writer(self):
        writer, self.writer = self.writer, None
        close = getattr(writer, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                pass


def _count(value):
    """Skipped records: a count, a {reason: count} dict or a list."""
    if not value:
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return sum(int(v) for v in value.values())
    return len(value)


def _describe(error):
    """
    One line: the cause's label, SQLSTATE and the first line of the message
    (nightowl.pgerrors: data values cut off, so no customer data).
    """
    cause = getattr(error, "cause", None)
    if cause:
        return str(cause)
    from nightowl import pgerrors
    return pgerrors.describe(error)


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


def maintenance_main(environ, log):
    """
    ``python -m nightowl.drain.worker maintenance``: apply the migrations
    (unless NIGHTOWL_MIGRATE=0) and ensure the daily partitions ahead, then
    exit.  Run by the supervisor in a child so the agent's reactor never
    waits on Postgres.  Exit 0 ok, 3 migration failed, 4 partitions failed.
    """
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
            _report(_describe(e))
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
        log("error", "partition maintenance failed: {}".format(_describe(e)))
        return 4
    return 0


def _report(error):
    """The maintenance child's outcome, one IPC line on stdout for the supervisor."""
    try:
        sys.stdout.buffer.write(ipc.encode({"op": ipc.REPORT, "error": error}))
        sys.stdout.flush()
    except (OSError, ValueError):
        pass


def _log_twisted_to(log):
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
    environ = os.environ if environ is None else environ
    argv = sys.argv[1:] if argv is None else argv
    log = make_logger(sys.stderr)
    _log_twisted_to(log)
    if argv[:1] == ["maintenance"]:
        return maintenance_main(environ, log)
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

    worker = None
    if config.fault and config.fault[0] == "kill-mid-copy":
        install_mid_copy_fault(config.fault[1], lambda: worker.current_batch)

    from nightowl.pgwrite import BatchWriter, PostgresUnavailable

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

    channel = Channel(sys.stdin.buffer, ipc_out, stop_event, on_eof, log)
    worker = Worker(config, channel, reader, writer_factory, stop_event, log,
                    unavailable=(PostgresUnavailable,), breaker=breaker)
    channel.start()
    from nightowl.drain.watchdog import HEARTBEAT_EVERY
    channel.start_heartbeat(HEARTBEAT_EVERY)
    code = worker.run()
    ipc_out.flush()
    return code


def _profiled_main():
    """NIGHTOWL_PROFILE=FILE (bench only): cProfile the worker, dump at exit."""
    out = os.environ.get("NIGHTOWL_PROFILE")
    if not out:
        return main()
    import cProfile
    profile = cProfile.Profile()
    profile.enable()
    try:
        return main()
    finally:
        profile.disable()
        profile.dump_stats(out)


if __name__ == "__main__":
    code = _profiled_main()
    # os._exit: the IPC reader thread sits in a blocking stdin read, and the
    # interpreter's shutdown would abort on its buffer lock
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
