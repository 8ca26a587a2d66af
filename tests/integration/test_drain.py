"""
The drain end to end: the real BufferWriter (SQLite file), the real
DrainSupervisor on the global reactor, real worker processes and real
PostgreSQL.  Payloads carry unique trace ids (bench.payloads.payload_with_id)
so loss and duplication are counted per payload.
"""

import os
import shutil
import sqlite3
import tempfile
import time
import uuid

import psycopg2
from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from nightowl.bench.payloads import id_of, payload_with_id
from nightowl.buffer import BufferWriter
from nightowl.drain.supervisor import DrainSupervisor
from nightowl.metrics import Metrics
from tests.conftest import create_database, drop_database
from tests.integration.pgcluster import PgCluster

# payload_with_id's records: rows per payload in each raw table
PER_PAYLOAD = {"nightowl_requests": 1, "nightowl_queries": 2, "nightowl_cache_events": 1,
               "nightowl_logs": 1}


def pg_rows(dsn):
    """{table: {n: rows}} for every trace id made by payload_with_id."""
    conn = psycopg2.connect(dsn)
    try:
        out = {}
        cur = conn.cursor()
        for table in PER_PAYLOAD:
            cur.execute("SELECT trace_id::text, count(*) FROM {} GROUP BY 1".format(table))
            out[table] = {id_of(t): n for t, n in cur.fetchall()}
        return out
    finally:
        conn.close()


def buffer_states(path):
    conn = sqlite3.connect("file:{}?mode=ro".format(path), uri=True)
    try:
        return dict(conn.execute("SELECT state, count(*) FROM payloads GROUP BY state").fetchall())
    finally:
        conn.close()


class DrainTestBase(unittest.TestCase):
    timeout = 240

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="nightowl-drain-")
        # registered first, so it runs last: after the writer closed its file
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.path = os.path.join(self.tmp, "buffer.sqlite")
        self.writer = BufferWriter(self.path, reactor=reactor)
        self.writer.open()
        self.addCleanup(self.writer.close)
        self.supervisor = None
        self.metrics = Metrics(reactor)

    def scratch_db(self):
        name, dsn = create_database()
        self.addCleanup(drop_database, name)
        return dsn

    def start(self, dsn, workers=2, batch=50, env=None, no_migrate=False, migrate_backoff=None):
        options = {"dsn": dsn, "drain-workers": workers, "batch-size": batch,
                   "environment": "test", "buffer": self.path, "no-migrate": no_migrate}
        self.supervisor = DrainSupervisor(self.writer, options, self.metrics, reactor=reactor,
                                          worker_env=env)
        if migrate_backoff is not None:
            self.supervisor.migrate_backoff = migrate_backoff
        self.supervisor.startService()
        self.addCleanup(self.stop)

    def stop(self):
        sup, self.supervisor = self.supervisor, None
        if sup is not None and sup.running:
            return sup.stopService()

    def append(self, payloads):
        return defer.gatherResults([self.writer.append(p) for p in payloads])

    @defer.inlineCallbacks
    def until(self, predicate, what, timeout=180):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("gave up waiting for {}: buffer {}, drain {}".format(
                    what, buffer_states(self.path), self.metrics.drain))
            yield task.deferLater(reactor, 0.1, lambda: None)

    def drained(self, n):
        return lambda: buffer_states(self.path).get(1, 0) >= n

    def assertExactlyOnce(self, dsn, numbers):
        rows = pg_rows(dsn)
        for table, per in PER_PAYLOAD.items():
            got = rows[table]
            missing = [n for n in numbers if n not in got]
            dup = {n: c for n, c in got.items() if c != per}
            self.assertEqual(missing, [], "{}: lost payloads".format(table))
            self.assertEqual(dup, {}, "{}: duplicated payloads".format(table))
            self.assertEqual(sorted(got), sorted(numbers))


class DrainEndToEnd(DrainTestBase):

    @defer.inlineCallbacks
    def test_payloads_land_in_postgres_and_are_marked_drained(self):
        dsn = self.scratch_db()
        numbers = list(range(1, 401))
        yield self.append([payload_with_id(n) for n in numbers])
        self.assertEqual(buffer_states(self.path), {0: 400})
        self.start(dsn, workers=2, batch=50)
        yield self.until(self.drained(400), "400 payloads drained")
        self.assertEqual(buffer_states(self.path), {1: 400})
        self.assertExactlyOnce(dsn, numbers)
        # both workers did work and reported it (the file shows a mark as soon as the
        # writer commits it; the supervisor counts it a reactor turn later)
        yield self.until(lambda: sum(m.get("marked_payloads", 0)
                                     for m in self.metrics.drain.values()) >= 400,
                         "the supervisor to count 400 marks")
        self.assertEqual(sum(m.get("marked_payloads", 0) for m in self.metrics.drain.values()),
                         400)
        conn = psycopg2.connect(dsn)
        try:
            cur = conn.cursor()
            cur.execute("SELECT count(*), sum(cardinality(ids)), min(buffer_id::text), "
                        "max(buffer_id::text) FROM nightowl_ingest_ledger")
            batches, ledger_ids, b1, b2 = cur.fetchone()
        finally:
            conn.close()
        self.assertEqual(ledger_ids, 400)
        self.assertEqual((b1, b2), (self.writer.buffer_id, self.writer.buffer_id))
        # new payloads keep flowing while the workers run
        more = list(range(401, 451))
        yield self.append([payload_with_id(n) for n in more])
        yield self.until(self.drained(450), "450 payloads drained")
        self.assertExactlyOnce(dsn, numbers + more)
        yield self.stop()
        for m in self.metrics.drain.values():
            self.assertEqual((m["alive"], m["exit_code"]), (False, 0))

    @defer.inlineCallbacks
    def test_poison_payloads_are_quarantined_and_the_rest_lands(self):
        dsn = self.scratch_db()
        good = list(range(1, 101))
        payloads = [payload_with_id(n) for n in good]
        # Valid JSON the agent accepts, but a value Postgres refuses
        # (v is smallint): 22003 numeric_value_out_of_range.
        payloads[10:10] = [b'[{"t":"log","v":99999,"message":"poison one"}]']
        payloads[50:50] = [b'[{"t":"request","v":70000,"url":"/poison"}]']
        yield self.append(payloads)
        conn = sqlite3.connect(self.path)
        try:
            poison = {i for (i,) in conn.execute(
                "SELECT id FROM payload_bodies WHERE payload IN (?, ?)", payloads[10:11] + payloads[50:51])}
        finally:
            conn.close()
        self.assertEqual(len(poison), 2)
        self.start(dsn, workers=2, batch=30)
        yield self.until(lambda: buffer_states(self.path).get(1, 0) + buffer_states(
            self.path).get(2, 0) >= 102, "all payloads handled")
        self.assertEqual(buffer_states(self.path), {1: 100, 2: 2})
        conn = sqlite3.connect(self.path)
        try:
            rows = conn.execute("SELECT id, error FROM payloads WHERE state = 2").fetchall()
        finally:
            conn.close()
        self.assertEqual({i for i, _ in rows}, poison)
        for _, reason in rows:
            self.assertTrue(reason)
            self.assertTrue(reason.startswith("22003 "), reason)  # a class, never the data
            self.assertNotIn("poison", reason)
        self.assertExactlyOnce(dsn, good)


class DrainWorkerDeath(DrainTestBase):

    @defer.inlineCallbacks
    def _killed(self, fault):
        dsn = self.scratch_db()
        marker = os.path.join(self.tmp, "fault-fired")
        numbers = list(range(1, 601))
        yield self.append([payload_with_id(n) for n in numbers])
        self.start(dsn, workers=2, batch=40,
                   env={"NIGHTOWL_FAULT": fault, "NIGHTOWL_FAULT_ONCE": marker})
        yield self.until(self.drained(600), "600 payloads drained after a worker death")
        self.assertTrue(os.path.exists(marker), "the fault never fired")
        self.assertGreaterEqual(sum(m.get("restarts", 0) for m in self.metrics.drain.values()), 1)
        self.assertEqual(buffer_states(self.path), {1: 600})
        self.assertExactlyOnce(dsn, numbers)
        return dsn

    @defer.inlineCallbacks
    def test_sigkill_mid_copy_loses_and_duplicates_nothing(self):
        yield self._killed("kill-mid-copy:2")

    @defer.inlineCallbacks
    def test_sigkill_between_commit_and_mark_duplicates_nothing(self):
        dsn = yield self._killed("kill-after-commit:2")
        # the killed batch was committed, released, re-claimed and skipped by the ledger
        yield self.until(lambda: sum(m.get("ledger_skipped", 0)
                                     for m in self.metrics.drain.values()) >= 1,
                         "a worker to report payloads the ledger skipped")
        conn = psycopg2.connect(dsn)
        try:
            cur = conn.cursor()
            cur.execute("SELECT sum(cardinality(ids)) FROM nightowl_ingest_ledger")
            self.assertEqual(cur.fetchone()[0], 600)
        finally:
            conn.close()


class DrainPostgresOutage(DrainTestBase):

    def setUp(self):
        DrainTestBase.setUp(self)
        self.cluster = PgCluster()
        self.cluster.init()
        self.cluster.start()
        self.addCleanup(self.cluster.destroy)

    @defer.inlineCallbacks
    def test_postgres_stopped_mid_drain_and_restarted(self):
        dsn = self.cluster.create_database("outage_" + uuid.uuid4().hex[:8])
        first = list(range(1, 3001))
        yield self.append([payload_with_id(n) for n in first])
        self.start(dsn, workers=2, batch=20)
        yield self.until(lambda: buffer_states(self.path).get(1, 0) > 0, "the drain to start")
        yield threads.deferToThread(self.cluster.stop, "immediate")
        yield self.until(
            lambda: any(m.get("pg_reachable") is False for m in self.metrics.drain.values()),
            "a worker to notice the outage")
        # the buffer keeps accepting while Postgres is away
        during = list(range(3001, 3501))
        yield self.append([payload_with_id(n) for n in during])
        states = buffer_states(self.path)
        self.assertEqual(sum(states.values()), 3500)
        self.assertLess(states.get(1, 0), 3500)
        # nothing is reported drained while Postgres is down
        yield task.deferLater(reactor, 1.0, lambda: None)
        self.assertEqual(buffer_states(self.path).get(1, 0), states.get(1, 0))
        yield threads.deferToThread(self.cluster.start)
        yield self.until(self.drained(3500), "catch-up after Postgres came back")
        self.assertEqual(buffer_states(self.path), {1: 3500})
        self.assertExactlyOnce(dsn, first + during)
        for m in self.metrics.drain.values():
            self.assertIs(m.get("pg_reachable"), True)
        self.assertTrue(any(m.get("failures", 0) > 0 for m in self.metrics.drain.values()))
