"""
The drain when PostgreSQL refuses it, end to end (real BufferWriter, real
DrainSupervisor and worker processes, real PostgreSQL): a systematic data
error opens the quarantine breaker and nothing is lost; a missing privilege
is critical in /status, naming the table and SQLSTATE; a role and database
created while the agent runs are picked up by the retried migration.
"""

import uuid

import psycopg2
from twisted.internet import defer

from nightowl import health, migrate
from nightowl.bench.payloads import payload_with_id
from nightowl.drain import conditions
from tests.conftest import ADMIN_DSN, drop_database, fetch
from tests.integration.test_drain import DrainTestBase, buffer_states


def admin_sql(dsn, *statements):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        for statement in statements:
            conn.cursor().execute(statement)
    finally:
        conn.close()


def drop_role(name):
    admin_sql(ADMIN_DSN, "DROP ROLE IF EXISTS " + name)


def status_of(metrics, **drain):
    """health.evaluate over what the workers reported (as /status computes it)."""
    gathered = conditions.gather(metrics.drain.values())
    snap = {"buffer": {"writer_alive": True},
            "drain": dict({"enabled": True, "dsn_configured": True, "workers_configured": 1,
                           "postgres_reachable": True}, **gathered, **drain),
            "workers": []}
    return health.evaluate(snap, 0.0)


class BlockedDrain(DrainTestBase):

    def worker(self, key):
        return [m.get(key) for m in self.metrics.drain.values() if m.get("alive")]

    @defer.inlineCallbacks
    def test_systematic_data_error_opens_the_breaker_then_resumes_after_the_fix(self):
        dsn = self.scratch_db()
        migrate.apply(dsn)
        # every payload's request has method "GET": now it overflows the column (22001)
        admin_sql(dsn, "ALTER TABLE nightowl_requests ALTER COLUMN method TYPE varchar(1)")
        numbers = list(range(1, 31))
        yield self.append([payload_with_id(n) for n in numbers])
        self.start(dsn, workers=1, batch=2)

        def breaker_open():
            return any(b for b in self.worker("breaker") if b)
        yield self.until(breaker_open, "the quarantine breaker to open", timeout=120)
        # the payloads it quarantined to find out are requeued: none stays quarantined
        yield self.until(lambda: buffer_states(self.path).get(2, 0) == 0
                         and buffer_states(self.path).get(1, 0) == 0,
                         "nothing quarantined, nothing drained", timeout=60)
        states = buffer_states(self.path)
        self.assertEqual(sum(n for s, n in states.items() if s == 0 or s >= 100), 30, states)
        # batches of 2: the first 4 payloads were quarantined before the 5th opened
        # the breaker; they were requeued, not left for `nightowl buffer requeue`
        self.assertEqual(sum(self.worker("quarantined")), 4)
        [entry] = [b for b in self.worker("breaker") if b][0]
        self.assertEqual((entry["sqlstate"], entry["table"]), ("22001", "nightowl_requests"))
        status, reasons = status_of(self.metrics)
        self.assertEqual(status, "critical")
        [reason] = [r for r in reasons if r["code"] == "quarantine-breaker"]
        self.assertIn("SQLSTATE 22001 on nightowl_requests", reason["message"])
        self.assertEqual(fetch(dsn, "SELECT count(*) FROM nightowl_requests"), [(0,)])

        admin_sql(dsn, "ALTER TABLE nightowl_requests ALTER COLUMN method TYPE text")
        yield self.until(self.drained(30), "30 payloads drained after the fix", timeout=120)
        self.assertEqual(buffer_states(self.path), {1: 30})
        self.assertExactlyOnce(dsn, numbers)
        yield self.until(lambda: not any(b for b in self.worker("breaker") if b),
                         "the breaker to close", timeout=30)
        self.assertEqual(status_of(self.metrics)[0], "healthy")

    @defer.inlineCallbacks
    def test_a_missing_insert_privilege_is_critical_naming_table_and_sqlstate(self):
        role = "nightowl_t_role_" + uuid.uuid4().hex[:8]
        self.addCleanup(drop_role, role)    # runs after the database is dropped
        dsn = self.scratch_db()
        migrate.apply(dsn)
        admin_sql(dsn, "CREATE ROLE {} LOGIN".format(role),
                  "GRANT ALL ON ALL TABLES IN SCHEMA public TO " + role,
                  "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO " + role,
                  "REVOKE INSERT ON nightowl_requests FROM " + role)
        numbers = list(range(1, 11))
        yield self.append([payload_with_id(n) for n in numbers])
        options_dsn = dsn.replace("user=postgres", "user=" + role)
        self.assertIn("user=" + role, options_dsn)
        self.start(options_dsn, workers=1, batch=50, no_migrate=True)

        def blocked():
            return [b for b in self.worker("blocked") if b]
        yield self.until(blocked, "the worker to report the refusal", timeout=60)
        [b] = blocked()
        self.assertEqual((b["kind"], b["sqlstate"], b["table"]),
                         ("permission-denied", "42501", "nightowl_requests"))
        [last_error] = self.worker("last_error")
        self.assertIn("(SQLSTATE 42501): permission denied for table nightowl_requests",
                      last_error)
        status, reasons = status_of(self.metrics, last_error=last_error)
        self.assertEqual(status, "critical")
        [reason] = [r for r in reasons if r["code"] == "permission-denied"]
        self.assertIn("SQLSTATE 42501 on nightowl_requests", reason["message"])
        self.assertNotIn("postgres-unreachable", [r["code"] for r in reasons])
        self.assertEqual(buffer_states(self.path).get(2, 0), 0)   # never quarantined

        admin_sql(dsn, "GRANT INSERT ON nightowl_requests TO " + role)
        yield self.until(self.drained(10), "10 payloads drained after the grant", timeout=60)
        self.assertExactlyOnce(dsn, numbers)
        yield self.until(lambda: not blocked(), "the block to clear", timeout=30)

    @defer.inlineCallbacks
    def test_role_and_database_created_while_running_are_picked_up(self):
        role = "nightowl_t_new_" + uuid.uuid4().hex[:8]
        name = role + "_db"
        self.addCleanup(drop_role, role)
        self.addCleanup(drop_database, name)
        dsn = "host=127.0.0.1 port=5432 dbname={} user={} connect_timeout=5".format(name, role)
        numbers = list(range(1, 6))
        yield self.append([payload_with_id(n) for n in numbers])
        self.start(dsn, workers=1, batch=50, migrate_backoff=lambda attempt: 0.5)
        yield self.until(lambda: self.supervisor.migration_error is not None,
                         "the first migration attempt to fail", timeout=60)
        self.assertEqual(self.supervisor.migration_error,
                         'role missing (SQLSTATE 28000): role "{}" does not exist'.format(role))
        admin_sql(ADMIN_DSN, "CREATE ROLE {} LOGIN CREATEDB".format(role))
        # the retried migration creates the database (the role may) and the schema
        yield self.until(lambda: self.supervisor.migrated, "the migration to succeed",
                         timeout=60)
        yield self.until(self.drained(5), "5 payloads drained", timeout=90)
        self.assertExactlyOnce(dsn, numbers)
        self.assertEqual(fetch(dsn, "SELECT current_user, count(*) FROM nightowl_migrations "
                                    "GROUP BY 1"), [(role, len(migrate.migrations()))])
        yield self.stop()
