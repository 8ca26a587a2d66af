"""
Who owns a buffer file: one agent at a time, by an OS lock.

Two agents on one SQLite buffer duplicate data (each releases the other's
claims as "left by a previous run") and collide on ids.  The owner holds
``fcntl.flock(LOCK_EX)`` on ``<buffer>.lock`` for its whole life; the file
holds its pid, so a second agent refuses with one line naming the holder.
The kernel drops the lock when the process dies (kill -9 included), so a
stale lock file never blocks a restart.

The lock is on a separate file, not on the database: SQLite takes and drops
its own POSIX locks on the database and its ``-shm``, and POSIX locks are
per process, so a lock of ours on those files would be released by SQLite
closing any connection.  Read-only tools (``nightowl buffer inspect`` /
``verify``, the drain workers' readers) never take it.
"""

import errno
import fcntl
import os


class BufferLocked(Exception):
    """The buffer is owned by another process (``pid``, None if unknown)."""

    def __init__(self, path, pid):
        Exception.__init__(self, path, pid)
        self.path = path
        self.pid = pid

    def __str__(self):
        return "buffer {} is in use by another nightowl process (pid {}): stop it or use " \
               "another --buffer".format(self.path, self.pid if self.pid else "unknown")


def lock_path(buffer_path):
    return os.path.abspath(buffer_path) + ".lock"


def holder(buffer_path):
    """The pid written in the lock file if some process holds the lock, else None."""
    path = lock_path(buffer_path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return _read_pid(fd) or 0
            raise
        return None
    finally:
        os.close(fd)


def _read_pid(fd):
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


class BufferLock:
    """
    ``acquire()`` takes the lock (L{BufferLocked} if another process has
    it) and writes our pid; ``release()`` removes the file and lets go.
    """

    def __init__(self, buffer_path):
        self.buffer_path = os.path.abspath(buffer_path)
        self.path = lock_path(buffer_path)
        self.fd = None

    def acquire(self):
        if self.fd is not None:
            return self
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                pid = _read_pid(fd)
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise BufferLocked(self.buffer_path, pid)
                raise
            # The previous owner may have unlinked the file between our open
            # and our flock: then we locked an orphan inode; start again.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii") + b"\n", 0)
        self.fd = fd
        return self

    def release(self):
        fd, self.fd = self.fd, None
        if fd is None:
            return
        try:
            os.unlink(self.path)   # while still locked: see acquire()
        except OSError:
            pass
        os.close(fd)
