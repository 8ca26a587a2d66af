"""
The drain worker's test-only fault hooks, imported only when NIGHTOWL_FAULT
is set (nightowl.drain.config); production never loads this module.

  NIGHTOWL_FAULT=kill-after-commit:N   SIGKILL right after the N-th commit
  NIGHTOWL_FAULT=kill-mid-copy:N       SIGKILL inside the N-th batch's first COPY,
                                       after part of the data reached the server
  NIGHTOWL_FAULT=kill-on-payload:TEXT  SIGKILL whenever a claimed payload holds
                                       TEXT (a payload that kills every worker)
  NIGHTOWL_FAULT_ONCE=PATH             the fault fires once across respawns: the
                                       first to fire writes PATH, later workers
                                       see it and run clean

The fault harness (nightowl.bench.faults*, tests/integration) depends on
these names and values.
"""

import os
import signal

KILL_AFTER_COMMIT = "kill-after-commit"
KILL_MID_COPY = "kill-mid-copy"
KILL_ON_PAYLOAD = "kill-on-payload"


def parse(text):
    """``kill-after-commit:N`` / ``kill-mid-copy:N`` -> (kind, N); ValueError if bad."""
    if not text or not text.strip():
        return None
    kind, _, n = text.strip().partition(":")
    if kind == KILL_ON_PAYLOAD and n:
        return kind, n.encode("utf-8")
    if kind not in (KILL_AFTER_COMMIT, KILL_MID_COPY) or not n.isdigit() or int(n) < 1:
        raise ValueError("NIGHTOWL_FAULT: expected kill-after-commit:N, kill-mid-copy:N "
                         "or kill-on-payload:TEXT")
    return kind, int(n)


def spent():
    marker = os.environ.get("NIGHTOWL_FAULT_ONCE")
    return bool(marker) and os.path.exists(marker)


def kill_self():
    marker = os.environ.get("NIGHTOWL_FAULT_ONCE")
    if marker:
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
    os.kill(os.getpid(), signal.SIGKILL)


class FaultHooks:
    """What the worker's loop calls at its two fault points (``kill`` is injectable)."""

    def __init__(self, fault, log, kill=None):
        self.kind, self.arg = fault
        self.log = log
        self.kill = kill_self if kill is None else kill

    def claimed(self, rows):
        """The payloads of a claim were read: kill-on-payload fires here."""
        if self.kind == KILL_ON_PAYLOAD and any(self.arg in p for (_i, p) in rows):
            self.log("warn", "fault injection: SIGKILL on a claimed payload")
            self.kill()

    def committed(self, commits):
        """Commit number ``commits`` is in Postgres: kill-after-commit fires here."""
        if self.kind == KILL_AFTER_COMMIT and self.arg == commits:
            self.log("warn", "fault injection: SIGKILL after commit {}".format(commits))
            self.kill()

    def install(self, current_batch):
        """Process-wide patches, before the first connection (kill-mid-copy)."""
        if self.kind == KILL_MID_COPY:
            install_mid_copy_fault(self.arg, current_batch)


def install_mid_copy_fault(batch_number, current_batch):
    """
    Make the ``batch_number``-th batch's first COPY SIGKILL this process after
    part of the data went to the server: every psycopg2 connection gets a
    cursor class whose ``copy_expert``/``copy_from`` reads one chunk of the
    COPY stream and then dies.  ``current_batch()`` returns the number of the
    batch being written.
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
                kill_self()
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
