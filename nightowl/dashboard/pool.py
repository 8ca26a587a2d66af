"""
The dashboard's own thread pool for Postgres, one psycopg2 connection per
thread.  ``run(fn, *args)`` calls ``fn(conn, *args)`` on a pool thread and
returns a Deferred fired on the reactor thread (``deferToThreadPool``).

After each call the connection's transaction is rolled back (reads leave one
open; writers commit their own with ``with conn:``).  A connection that
failed (server gone, network) is closed and replaced on the next call.
Each statement is bounded by ``statement_timeout`` so a page cannot hold a
thread forever.
"""

import threading

from twisted.internet import threads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

STATEMENT_TIMEOUT_MS = 15000


class QueryPool:
    log = Logger()

    def __init__(self, dsn, reactor, minthreads=1, maxthreads=3, connect=None,
                 statement_timeout_ms=STATEMENT_TIMEOUT_MS):
        self.dsn = dsn
        self.reactor = reactor
        self.statement_timeout_ms = statement_timeout_ms
        self._connect = connect
        self._pool = ThreadPool(minthreads, maxthreads, name="nightowl-dashboard")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns = set()

    def start(self):
        self._pool.start()

    def stop(self):
        """Stop the threads (off the reactor: a query may be finishing), then close."""
        d = threads.deferToThread(self._pool.stop)
        d.addCallback(lambda _: self._close_all())
        return d

    def _close_all(self):
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            try:
                conn.close()
            except Exception:
                pass

    def run(self, fn, *args, **kwargs):
        return threads.deferToThreadPool(self.reactor, self._pool, self._call, fn, args, kwargs)

    # -- on a pool thread ---------------------------------------------------

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed:
            return conn
        connect = self._connect
        if connect is None:
            import psycopg2
            connect = psycopg2.connect
        conn = connect(self.dsn, connect_timeout=10, application_name="nightowl-dashboard",
                       options="-c statement_timeout={} -c TimeZone=UTC".format(
                           int(self.statement_timeout_ms)))
        self._local.conn = conn
        with self._lock:
            self._conns.add(conn)
        return conn

    def _call(self, fn, args, kwargs):
        import psycopg2
        conn = self._conn()
        try:
            return fn(conn, *args, **kwargs)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            self._drop(conn)
            raise
        finally:
            if not conn.closed:
                try:
                    conn.rollback()
                except psycopg2.Error:
                    self._drop(conn)

    def _drop(self, conn):
        self._local.conn = None
        with self._lock:
            self._conns.discard(conn)
        try:
            conn.close()
        except Exception:
            pass
