"""
Keeping the buffer file small: the checkpointer thread (WAL pages copied
into the file beside the writer), the writer's own WAL rewind under steady
writes, and freed pages given back to the file system in small slices.

Checkpoints copy WAL pages into the file and fsync it: done on the writer
thread (SQLite's auto-checkpoint runs inside COMMIT) they stall every ack
queued behind them.  The checkpointer thread does them instead, on its own
connection; it writes no rows.
"""

import os
import sqlite3
import threading
import time

# Past WAL_LIMIT_BYTES the writer rewinds the WAL the moment the checkpointer
# has caught up (its own checkpoint then copies and syncs only the frames of
# the last few milliseconds); past WAL_FORCE_BYTES it rewinds without waiting
# for that, as a fallback, syncing up to CHECKPOINT_EVERY of traffic while
# acks wait.  The WAL file is truncated back only past WAL_FORCE_BYTES: in
# steady state it is reused in place (truncating 64 MB back each rewind held
# the writer ~11 ms).
WAL_LIMIT_BYTES = 64 * 1024 * 1024
WAL_FORCE_BYTES = 2 * WAL_LIMIT_BYTES
# A TRUNCATE checkpoint waits for the writer and stalls acks (~180 ms measured
# at 9,000 payloads/s): only when the WAL somehow ran away (a reader pinning
# old pages kept it from rewinding).
WAL_TRUNCATE_BYTES = 512 * 1024 * 1024
# Each checkpoint costs an fsync of the file and its WAL whatever it copies:
# at 0.1 s the checkpointer thread took ~18 us of CPU per payload at 1,000
# payloads/s; at 0.5 s the WAL holds at most ~0.5 s of traffic more.
CHECKPOINT_EVERY = 0.5
# While the WAL is past WAL_LIMIT_BYTES, checkpoints come this often, so the
# writer gets its chance to rewind soon.
CATCH_UP_EVERY = 0.1
# The writer rewinds only this soon after the checkpointer caught up: the
# frames written since are what its checkpoint copies and syncs.
CAUGHT_UP_FRESH = 0.05
REWIND_EVERY = 1.0
# The writer looks at the WAL's size (a stat) at most this often; a stat
# after every commit cost ~16 us each.
LOOK_SHARE = 0.05   # of REWIND_EVERY
VACUUM_MIN_PAGES = 4096   # 16 MB of free pages before any is given back
VACUUM_SLICE = 1024       # pages per housekeeping round (short writer hold)


def wal_size(path):
    """Bytes in the buffer's WAL file (0 if there is none)."""
    try:
        return os.path.getsize(path + "-wal")
    except OSError:
        return 0


_sync = getattr(os, "fdatasync", os.fsync)


def prepare_writer(conn):
    """The writer connection's WAL settings: no auto-checkpoint, a size limit."""
    conn.execute("PRAGMA wal_autocheckpoint=0")
    # When a checkpoint has caught up, the next commit rewinds the WAL to
    # its start; this caps the file's size at that moment, so the WAL is
    # bounded without TRUNCATE checkpoints (which stall the writer).  Above
    # the rewind threshold, so a steady WAL is reused, not cut back.
    conn.execute("PRAGMA journal_size_limit={}".format(WAL_FORCE_BYTES))


def give_back_pages(conn):
    """
    Give free pages back to the file system, a slice at a time, once they
    are a large share of the file (after a backlog drained); in steady state
    new rows reuse them and there is nothing to do.  Runs on the writer's
    connection inside its transaction; returns ``(freed, still_free)``.
    """
    free_pages = conn.execute("PRAGMA freelist_count").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    freed = 0
    if free_pages > VACUUM_MIN_PAGES and free_pages * 4 > pages:
        # incremental_vacuum must run outside a transaction
        conn.execute("COMMIT")
        try:
            conn.execute("PRAGMA incremental_vacuum({})".format(VACUUM_SLICE)).fetchall()
            freed = min(free_pages, VACUUM_SLICE)
        finally:
            conn.execute("BEGIN IMMEDIATE")
    return freed, free_pages - freed


class Checkpointer:
    """
    Every CHECKPOINT_EVERY seconds a PASSIVE checkpoint (never blocks the
    writer); the writer's journal_size_limit then keeps the WAL file small.
    Only if the WAL has run past WAL_TRUNCATE_BYTES anyway, a TRUNCATE
    checkpoint (it waits for the writer, stalling acks for a moment).

    Counters (read anywhere): ``checkpoints``, ``rewinds``, ``last`` (the
    last checkpoint's mode) and ``error`` (the last error, None once a
    checkpoint succeeds again).
    """

    def __init__(self, path):
        self.path = path
        self.checkpoints = 0
        self.rewinds = 0
        self.last = None
        self.error = None
        self._stop = threading.Event()
        self._last_rewind = 0.0
        self._last_look = 0.0
        # monotonic time of a checkpoint that copied every frame while the
        # WAL was past WAL_LIMIT_BYTES: the writer's cue (set by the
        # checkpointer thread, taken by the writer thread)
        self._caught_up = None

    def start(self):
        threading.Thread(target=self._loop, name="nightowl-buffer-checkpoint",
                         daemon=True).start()

    def stop(self):
        self._stop.set()

    def _loop(self):
        try:
            conn = sqlite3.connect(self.path, timeout=1.0, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=1000")
            # the WAL file is reused in place: how much of it is in use is
            # the checkpoint's frame count, not the file's size
            frame_bytes = conn.execute("PRAGMA page_size").fetchone()[0] + 24
            db_fd = os.open(self.path, os.O_RDONLY)
        except (sqlite3.Error, OSError) as e:
            self.error = str(e)
            return
        try:
            every = CHECKPOINT_EVERY
            synced = None  # frames checkpointed when the file was last synced
            while not self._stop.wait(every):
                mode = "TRUNCATE" if wal_size(self.path) > WAL_TRUNCATE_BYTES else "PASSIVE"
                try:
                    busy, frames, done = conn.execute(
                        "PRAGMA wal_checkpoint({})".format(mode)).fetchone()
                    self.checkpoints += 1
                    self.last = mode if not busy else mode + " (busy)"
                    self.error = None
                except sqlite3.Error as e:
                    self.error = str(e)
                    continue
                over = frames * frame_bytes > WAL_LIMIT_BYTES
                every = CATCH_UP_EVERY if over else CHECKPOINT_EVERY
                if not over:
                    continue
                # SQLite syncs the file only at a checkpoint that reaches the
                # WAL's end, which under steady writes is the writer's
                # rewind: it then synced every page copied since the last
                # one (~2.5 s of them at 1,000 payloads/s: 11-38 ms with
                # acks waiting).  Synced here first, beside the writer, that
                # one syncs a few pages.  (Only when a rewind is near: a
                # page rewritten by every checkpoint is written out once; and
                # not again while a reader pins the WAL and nothing moved.)
                if done != synced:
                    try:
                        _sync(db_fd)
                    except OSError as e:
                        self.error = str(e)
                        continue
                    synced = done
                if not busy and done == frames:
                    self._caught_up = time.monotonic()
        finally:
            os.close(db_fd)
            conn.close()

    def rewind(self, conn):
        """
        Under steady writes a checkpoint running beside the writer never
        quite catches up (frames keep coming while it syncs), so the WAL
        never rewinds and grows without bound.  The writer (called on the
        writer thread with no transaction open, so no new frames meanwhile)
        runs a PASSIVE checkpoint itself, which lets its next commit rewind
        the WAL:

        * past WAL_LIMIT_BYTES, just after the checkpointer has caught up:
          what is left to copy and sync is the last few milliseconds of
          frames (measured: ~1 ms held, against 18-35 ms for 0.5 s of
          frames at 1,000 payloads/s, every ~2.5 s, which made the ack p99);
        * past WAL_FORCE_BYTES, at most once per REWIND_EVERY, whatever the
          checkpointer did (a reader pinning old frames keeps it from
          catching up, or it is not running).
        """
        caught_up = self._caught_up
        now = time.monotonic()
        if caught_up is not None:
            self._caught_up = None
            if now - caught_up < CAUGHT_UP_FRESH:
                self._checkpoint(conn, now)
                return
        if now - self._last_look < REWIND_EVERY * LOOK_SHARE:
            return
        self._last_look = now
        if now - self._last_rewind < REWIND_EVERY:
            return
        if wal_size(self.path) <= WAL_FORCE_BYTES:
            return
        self._checkpoint(conn, now)

    def _checkpoint(self, conn, now):
        self._last_rewind = now
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.rewinds += 1
        except sqlite3.Error as e:
            self.error = str(e)
