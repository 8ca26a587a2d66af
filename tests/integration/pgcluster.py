"""
A throwaway PostgreSQL 15 cluster for "Postgres goes away" tests.

Never touch the machine's shared cluster (other tests use it): this one lives
in a temp directory, listens on 127.0.0.1 on a free port, and can be stopped
with ``-m immediate`` (a crash, as far as clients can tell) and started again.

    cluster = PgCluster()
    cluster.init(); cluster.start()
    dsn = cluster.create_database("t")
    cluster.stop()            # immediate
    cluster.start()
    cluster.destroy()

As root the binaries run as the ``postgres`` user (``runuser``); the data
directory is handed to that user.
"""

import os
import pwd
import shutil
import subprocess
import tempfile
import time

from nightowl.bench.agent import free_port

BIN = os.environ.get("NIGHTOWL_PG_BIN", "/usr/lib/postgresql/15/bin")


class PgCluster:
    def __init__(self, port=None, base=None):
        self.port = port or free_port()
        self.base = base or tempfile.mkdtemp(prefix="nightowl-pg-")
        os.chmod(self.base, 0o755)
        self.data = os.path.join(self.base, "data")
        self.sockets = os.path.join(self.base, "sock")
        self.logfile = os.path.join(self.base, "postgres.log")
        self.as_root = os.geteuid() == 0
        self.running = False

    def _run(self, argv, timeout=120, check=True):
        if self.as_root:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError("{} failed ({}): {}".format(
                os.path.basename(argv[-1] if not self.as_root else argv[4]), proc.returncode,
                proc.stdout.decode("utf-8", "replace")[-2000:]))
        return proc

    def init(self):
        os.makedirs(self.sockets, exist_ok=True)
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            for path in (self.base, self.sockets):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        self._run([os.path.join(BIN, "initdb"), "-D", self.data, "-U", "postgres",
                   "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"])
        return self

    def start(self):
        opts = ("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=on -c full_page_writes=off "
                "-c max_connections=50".format(self.port, self.sockets))
        self._run([os.path.join(BIN, "pg_ctl"), "-D", self.data, "-o", opts, "-l",
                   self.logfile, "-w", "-t", "60", "start"])
        self.running = True
        return self

    def stop(self, mode="immediate"):
        self._run([os.path.join(BIN, "pg_ctl"), "-D", self.data, "-m", mode, "-w", "-t", "60",
                   "stop"], check=False)
        self.running = False

    def dsn(self, dbname="postgres"):
        return "host=127.0.0.1 port={} user=postgres dbname={} connect_timeout=5".format(
            self.port, dbname)

    def create_database(self, name):
        import psycopg2
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = psycopg2.connect(self.dsn())
                break
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        conn.autocommit = True
        try:
            conn.cursor().execute("CREATE DATABASE " + name)
        finally:
            conn.close()
        return self.dsn(name)

    def destroy(self):
        if os.path.isdir(self.data):
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        return self.init().start()

    def __exit__(self, *exc):
        self.destroy()
