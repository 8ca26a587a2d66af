"""
``nightowl bench drain [--payloads 20000] [--workers 2]``

Drain throughput from the SQLite buffer into PostgreSQL through the real
supervisor and real worker processes, against Postgres's own intake on this
machine:

1. ``--payloads`` realistic payloads (bench.payloads.fixture_mix, 5-7 records
   each) are written into a temporary buffer file;
2. Postgres intake: the same payloads pre-encoded as COPY text in memory
   (records.encode_payloads), one ``copy_expert`` per table, one transaction,
   into a freshly migrated scratch database: the ceiling for this machine;
3. the drain, ledger on: a fresh scratch database, the real BufferWriter and
   DrainSupervisor on a reactor, ``--workers`` worker processes; the clock runs
   from the first non-empty claim to the mark of the last payload;
4. the same with the exactly-once ledger off (NIGHTOWL_LEDGER=0 for the
   workers) to price the ledger;
5. with ``--issues-compare``: the same with issues off (NIGHTOWL_ISSUES=0:
   no issue upserts, lifecycle events, outbox rows or threshold checks) run
   first, as the baseline of the issues-on run (every run but this one has
   issues on and the ``BENCH_THRESHOLDS`` below in its database): the ratio
   on / off is printed (target >= 0.9).

The last line printed is one JSON object with every figure.
"""

import io
import json
import os
import shutil
import sys
import tempfile
import time

from nightowl.bench import scratch


def configure(parser):
    parser.add_argument("--payloads", type=int, default=20000,
                        help="payloads in the buffer (default 20000)")
    parser.add_argument("--workers", type=int, default=2, help="drain workers (default 2)")
    parser.add_argument("--batch-size", type=int, default=5000,
                        help="payloads per claim (default 5000)")
    scratch.add_admin_dsn(parser, help="a Postgres DSN allowed to CREATE DATABASE (scratch "
                                       "databases are made and dropped)")
    parser.add_argument("--no-ledger-run", action="store_true",
                        help="skip the ledger-off run")
    parser.add_argument("--issues-compare", action="store_true",
                        help="also run with issues and thresholds off and print on/off")
    parser.add_argument("--profile", metavar="DIR",
                        help="run the workers under cProfile, one .prof file each in DIR")


#: thresholds of the issues-on runs: defaults near the fixture mix's medians, so a
#: good share of the records is slow (a worst case), and overrides both ways
BENCH_THRESHOLDS = [("request", "", 400), ("request", "GET|HEAD /api/users", 2000),
                    ("query", "", 10), ("job", "", 1000), ("outgoing", "", 1000),
                    ("outgoing", "api.stripe.com", 100), ("command", "", 10000),
                    ("scheduled_task", "", 1000)]


def seed_thresholds(dsn):
    import psycopg2
    from nightowl.issues import thresholds
    conn = psycopg2.connect(dsn)
    try:
        for kind, target, ms in BENCH_THRESHOLDS:
            thresholds.save(conn, kind, target, ms)
    finally:
        conn.close()


# -- the buffer ----------------------------------------------------------------

def fill_buffer(path, payloads):
    """A buffer file with the documented schema holding ``payloads`` pending."""
    from nightowl.buffer import schema as buffer
    conn = buffer.connect(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        buffer_id = buffer.buffer_identity(conn)
        now = time.time()
        buffer.insert_many(conn, [(now, p) for p in payloads])
        conn.execute("COMMIT")
    finally:
        conn.close()
    return buffer_id


def make_payloads(n):
    from nightowl.bench import payloads
    return payloads.fixture_mix(n)


# -- Postgres intake -------------------------------------------------------------

def pg_intake(dsn, payloads, environment="bench"):
    """Rows/s of one COPY per table of pre-encoded text, in one transaction."""
    import psycopg2
    from nightowl import records
    data = records.encode_payloads(payloads, environment, time.time())
    rows = sum(chunk.count(b"\n") for chunk in data.values())
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        start = time.perf_counter()
        for table, chunk in sorted(data.items()):
            cur.copy_expert(records.copy_sql(table), io.BytesIO(chunk))
        conn.commit()
        elapsed = time.perf_counter() - start
    finally:
        conn.close()
    return rows, elapsed


# -- the drain -------------------------------------------------------------------

class _TimingWriter:
    """Passes every call to the BufferWriter; notes the first claim and the last mark."""

    def __init__(self, writer, total):
        self._writer = writer
        self.total = total
        self.marked = 0
        self.first_claim = None
        self.finished = None
        self.waiter = None

    def __getattr__(self, name):
        return getattr(self._writer, name)

    def claim(self, worker, limit, max_bytes=None):
        d = self._writer.claim(worker, limit, max_bytes=max_bytes)

        def note(ids):
            if ids and self.first_claim is None:
                self.first_claim = time.perf_counter()
            return ids
        return d.addCallback(note)

    def mark_drained(self, ids):
        d = self._writer.mark_drained(ids)

        def note(result):
            self.marked += len(ids)
            if self.marked >= self.total and self.finished is None:
                self.finished = time.perf_counter()
                if self.waiter is not None and not self.waiter.called:
                    self.waiter.callback(None)
            return result
        return d.addCallback(note)


def drain_once(reactor, buffer_path, dsn, total, workers, batch_size, ledger, profile=None,
               issues=True, extra_env=None):
    """Deferred firing with (elapsed seconds, metrics.drain) for one drain run."""
    from twisted.internet import defer
    from nightowl.buffer.writer import BufferWriter
    from nightowl.drain.supervisor import DrainSupervisor
    from nightowl.metrics import Metrics

    writer = BufferWriter(buffer_path, reactor=reactor)
    writer.open()
    timing = _TimingWriter(writer, total)
    timing.waiter = defer.Deferred()
    metrics = Metrics(reactor)
    env = {} if ledger else {"NIGHTOWL_LEDGER": "0"}
    if not issues:
        env["NIGHTOWL_ISSUES"] = "0"
    env.update(extra_env or {})
    supervisor = DrainSupervisor(timing, metrics, dsn=dsn, workers=workers,
                                 batch_size=batch_size, batch_bytes=None, environment="bench",
                                 migrate=False, worker_timeout=60.0, reactor=reactor,
                                 worker_env=env, buffer_path=buffer_path)
    if profile:
        _profile_workers(supervisor, profile)
    supervisor.startService()

    @defer.inlineCallbacks
    def run():
        yield timing.waiter
        yield supervisor.stopService()
        yield writer.close()
        return timing.finished - timing.first_claim, metrics.drain
    return run()


def _profile_workers(supervisor, directory):
    """Run each worker under cProfile (NIGHTOWL_PROFILE=FILE, dumped when it stops)."""
    import nightowl.drain.supervisor as sup_mod
    os.makedirs(directory, exist_ok=True)
    real_spawn = supervisor.reactor.spawnProcess

    def spawn(proto, executable, args, env=None, **kw):
        if args[1:3] == ["-m", sup_mod.WORKER_MODULE] and len(args) == 3:
            out = os.path.join(directory, "worker-{}.prof".format(proto.worker_id))
            env = dict(env, NIGHTOWL_PROFILE=out)
        return real_spawn(proto, executable, args, env=env, **kw)
    supervisor.reactor = _ReactorProxy(supervisor.reactor, spawn)


class _ReactorProxy:
    def __init__(self, reactor, spawn):
        self._reactor = reactor
        self.spawnProcess = spawn

    def __getattr__(self, name):
        return getattr(self._reactor, name)


def run(args):
    from nightowl.errors import CommandError
    if args.payloads <= 0 or args.workers <= 0:
        raise CommandError("--payloads and --workers must be greater than 0")
    import psycopg2
    from nightowl import migrate

    say = lambda text: print(text, flush=True)
    payloads = make_payloads(args.payloads)
    say("payloads: {} ({:.1f} MB, fixture mix)".format(
        len(payloads), sum(len(p) for p in payloads) / 1e6))
    tmp = tempfile.mkdtemp(prefix="nightowl-bench-drain-")
    made = []
    try:
        def new_database():
            try:
                name, dsn = scratch.create_database(args.admin_dsn)
            except psycopg2.Error as e:
                raise CommandError("cannot create a scratch database: {}".format(
                    (str(e).strip().splitlines() or ["?"])[0]))
            made.append(name)
            migrate.apply(dsn, log=_Quiet())
            return dsn

        # 1. Postgres's own intake
        dsn = new_database()
        rows, elapsed = pg_intake(dsn, payloads)
        intake = rows / elapsed
        say("postgres intake: {} rows in {:.2f} s = {:,.0f} rows/s (COPY of pre-encoded text, "
            "one per table)".format(rows, elapsed, intake))

        # 2. the drain, ledger on / off
        runs = [("on", True, True)] + ([] if args.no_ledger_run else [("off", False, True)])
        if args.issues_compare:
            runs.insert(0, ("issues-off", True, False))
        jobs = []
        for label, ledger, issues in runs:
            path = os.path.join(tmp, "buffer-ledger-{}.sqlite".format(label))
            fill_buffer(path, payloads)
            dsn = new_database()
            seed_thresholds(dsn)
            jobs.append((label, ledger, issues, path, dsn))

        results = {}
        from twisted.internet import reactor, defer

        @defer.inlineCallbacks
        def drive():
            try:
                for label, ledger, issues, path, dsn in jobs:
                    elapsed, drain = yield drain_once(
                        reactor, path, dsn, len(payloads), args.workers, args.batch_size,
                        ledger, profile=args.profile and os.path.join(args.profile, label),
                        issues=issues)
                    results[label] = (elapsed, drain, dsn)
            except Exception as e:
                results["error"] = e
            finally:
                reactor.stop()
        reactor.callWhenRunning(drive)
        _quiet_twisted_logs()
        reactor.run()   # signal handlers: SIGCHLD reaps the workers
        if "error" in results:
            raise CommandError("drain run failed: {!r}".format(results["error"]))

        figures = {}
        for label, (elapsed, drain, dsn) in results.items():
            written = sum(int(m.get("rows", 0)) for m in drain.values())
            figures[label] = (elapsed, written)
            say("drain, {}: {} payloads, {} rows in {:.2f} s = {:,.0f} rows/s, "
                "{:,.0f} payloads/s ({} workers, batch {}){}".format(
                    "issues off" if label == "issues-off" else "ledger " + label,
                    len(payloads), written, elapsed, written / elapsed,
                    len(payloads) / elapsed, args.workers, args.batch_size,
                    _issue_figures(dsn)))
        elapsed, written = figures["on"]
        rows_per_s = written / elapsed
        out = {"rows_per_s": round(rows_per_s), "payloads_per_s": round(len(payloads) / elapsed),
               "pg_intake_rows_per_s": round(intake), "ratio": round(rows_per_s / intake, 3),
               "ledger_off_rows_per_s": None, "ledger_cost_pct": None,
               "workers": args.workers, "payloads": len(payloads), "rows": written}
        if "off" in figures:
            off = figures["off"][1] / figures["off"][0]
            out["ledger_off_rows_per_s"] = round(off)
            out["ledger_cost_pct"] = round(100.0 * (off - rows_per_s) / off, 1)
        out["issues_off_rows_per_s"] = out["issues_ratio"] = None
        if "issues-off" in figures:
            base = figures["issues-off"][1] / figures["issues-off"][0]
            out["issues_off_rows_per_s"] = round(base)
            out["issues_ratio"] = round(rows_per_s / base, 3)
            say("issues and thresholds on / off: {:.3f} (target >= 0.9)".format(
                out["issues_ratio"]))
        say("ratio to postgres intake: {:.2f}; targets: >= 60000 rows/s and >= 0.3".format(
            out["ratio"]))
        say(json.dumps(out, sort_keys=True))
        return 0
    finally:
        for name in made:
            try:
                scratch.drop_database(args.admin_dsn, name)
            except Exception:
                pass
        shutil.rmtree(tmp, ignore_errors=True)


def _issue_figures(dsn):
    import psycopg2
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        cur.execute("SELECT type, count(*), coalesce(sum(occurrences_count), 0) "
                    "FROM nightowl_issues GROUP BY type ORDER BY type")
        rows = cur.fetchall()
        cur.execute("SELECT count(*) FROM nightowl_alert_outbox")
        (alerts,), = cur.fetchall()
    finally:
        conn.close()
    if not rows:
        return "; no issues"
    return "; " + ", ".join("{} {} issues / {} occurrences".format(n, t, occ)
                            for t, n, occ in rows) + ", {} outbox rows".format(alerts)


class _Quiet:
    def info(self, *a, **kw):
        pass

    def failure(self, *a, **kw):
        pass

    warn = error = debug = info


def _quiet_twisted_logs():
    """Only errors from the agent side on stderr during the bench."""
    from twisted.logger import (FilteringLogObserver, LogLevel, LogLevelFilterPredicate,
                                globalLogBeginner, textFileLogObserver)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.error)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])],
        redirectStandardIO=False)


def main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(prog="nightowl bench drain")
    configure(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
