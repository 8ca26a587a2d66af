"""
Write one batch of buffer payload rows into PostgreSQL.

``BatchWriter.write(rows)`` takes ``[(buffer row id, exact payload bytes)]``
and, in ONE transaction: asks the ledger which ids this buffer already
committed (those are reported drained and not written again), COPYs every
table, upserts issues, users and rollups (sorted by key: hazard 42; the issue
statements, lifecycle events and alert outbox rows are nightowl.issues.upsert's,
slow records against nightowl.issues.thresholds, rollups nightowl.rollups'),
inserts the ledger row, commits.  ``synchronous_commit`` stays on: an asynchronously
committed batch can vanish after the buffer already marked it drained.

Errors are classified by SQLSTATE (nightowl.batcherrors): an unreachable
server raises ``PostgresUnavailable``, lasting lock conflicts ``PostgresBusy``,
a refusing schema ``PostgresSchemaError``; on a data error the payloads are
bisected, each half in its own transaction with its own ledger row, until the
poison payload is alone; it is quarantined with ``"<SQLSTATE> <table>"`` (never
the message: it can hold customer data) and the rest commits.  With a
``breaker`` (nightowl.drain.breaker), an error it calls systematic holds the
failing rows instead (``BatchResult.held``: not written, kept pending).
"""

import io
import time
from typing import NamedTuple

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from twisted.logger import Logger

from nightowl import pgerrors, records
from nightowl.batcherrors import (
    DataError, PostgresBusy, PostgresSchemaError, PostgresUnavailable, Transient, classify,
    unavailable)
from nightowl.issues import thresholds as _thresholds, upsert as _issue_upsert
from nightowl.rollups import aggregate as rollup_aggregate
from nightowl.rollups import write as rollup_write

CONNECT_OPTIONS = dict(
    connect_timeout=10, keepalives=1, keepalives_idle=10, keepalives_interval=5,
    keepalives_count=3, tcp_user_timeout=20000, application_name="nightowl-drain")

TRANSACTION_GUARDS = ("SET LOCAL lock_timeout = '10s'; "
                      "SET LOCAL idle_in_transaction_session_timeout = '30s'; "
                      "SET LOCAL statement_timeout = '120s'")

TRANSIENT_RETRIES = 3


class BatchResult(NamedTuple):
    drained: list
    quarantined: list
    records: int
    rows_by_table: dict
    skipped: dict
    ledger_skipped: int = 0  # payloads already committed (a retry after a crash): not rewritten
    held: list = []          # ids the quarantine breaker held back: not written, stay pending


class BatchWriter:
    log = Logger()

    def __init__(self, dsn, environment, buffer_id, ledger=True, clock=time.time, log=None,
                 issues=True, thresholds=None, rollups=True, breaker=None):
        self.dsn = dsn
        # issues=False: raw rows only (no issue upserts, thresholds, alerts); bench baseline
        self.issues = issues
        self.thresholds = thresholds if thresholds is not None or not issues else (
            _thresholds.ThresholdCache())
        self._perf = {}  # buffer row id -> slow-record aggregate, for the current write()
        self.rollups = rollups
        # rollups: the batch's fold, built while decoding (no decoded records kept
        # alive), and the payload bytes to fold again a subset (bisect, ledger hits)
        self._fold = None
        self._folded = 0
        self._payloads = {}
        # nightowl.drain.breaker.QuarantineBreaker: a systematic data error holds
        # the rows (they stay pending) instead of quarantining them one by one
        self.breaker = breaker
        self._held = []
        self.environment = environment
        self.buffer_id = str(buffer_id)
        self.ledger = ledger
        self.clock = clock
        if log is not None:
            self.log = log
        self._conn = None
        self._ledger_skipped = 0
        self._step = None  # table (or step) the current statement writes: for quarantine reasons

    # -- connection -------------------------------------------------------

    def _connection(self):
        conn = self._conn
        if conn is not None:
            if conn.closed or (conn.info.transaction_status
                               != psycopg2.extensions.TRANSACTION_STATUS_IDLE):
                self._discard()
                conn = None
        if conn is None:
            try:
                conn = psycopg2.connect(self.dsn, **CONNECT_OPTIONS)
            except psycopg2.Error as e:
                raise unavailable("cannot connect to PostgreSQL", e)
            conn.autocommit = False
            self._conn = conn
        return conn

    def _discard(self):
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _rollback(self):
        conn = self._conn
        if conn is None:
            return
        try:
            conn.rollback()
        except Exception:
            self._discard()
            return
        if conn.closed or conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            self._discard()

    def close(self):
        self._discard()

    # -- public -----------------------------------------------------------

    def write(self, rows):
        """Write ``[(id, payload bytes)]``; return a ``BatchResult``."""
        now = self.clock()
        quarantined = []
        items = []
        table = self.thresholds.get(self._connection) if self.issues and self.thresholds \
            else _thresholds.EMPTY
        self._perf = perf = {}
        fold = self._fold = {} if self.rollups else None
        for row_id, payload in rows:
            try:
                decoded = records.decode_payload(payload)
            except ValueError:
                decoded = None
            if not isinstance(decoded, list):
                quarantined.append((row_id, "invalid-json"))
                continue
            items.append((row_id, records.encode_records(decoded, self.environment, now)))
            if table:
                slow = _thresholds.aggregate(decoded, table, now)
                if slow:
                    perf[row_id] = slow
            if fold is not None:
                rollup_aggregate.fold_many((decoded,), now, fold)
                self._payloads[row_id] = payload
        self._folded = len(items)
        items.sort(key=lambda item: item[0])

        try:
            drained, q, written, ledger_skipped = self._write_items(items, now)
        finally:
            self._fold = None
            self._payloads.clear()
        quarantined.extend(q)
        merged = records.Encoded.merge(enc for _, enc in written)
        if quarantined:
            self.log.warn("quarantined {count} payloads: {reasons}", count=len(quarantined),
                          reasons=sorted(set(r for _, r in quarantined)))
        return BatchResult(drained=sorted(drained), quarantined=quarantined,
                           records=merged.records, rows_by_table=merged.rows_by_table(),
                           skipped=dict(merged.skipped), ledger_skipped=ledger_skipped,
                           held=sorted(self._held))

    def _write_items(self, items, now):
        drained, q, written = [], [], []
        attempt = 0
        while True:
            attempt += 1
            self._ledger_skipped = 0
            self._held = []
            try:
                drained, q, written = [], [], []
                self._write_bisect(items, now, drained, q, written)
                break
            except Transient as e:
                self._rollback()
                self.log.warn("transient PostgreSQL error {sqlstate}, attempt {attempt}",
                              sqlstate=e.sqlstate, attempt=attempt)
                if attempt >= TRANSIENT_RETRIES:
                    raise PostgresBusy("PostgreSQL kept refusing the batch ({})".format(e.sqlstate),
                                       e.sqlstate)
            except PostgresUnavailable:
                if attempt >= 2:
                    raise
                # one reconnect-and-retry, like the PHP agent; committed parts are in the ledger
                self.log.info("PostgreSQL connection lost; reconnecting once")
        return drained, q, written, self._ledger_skipped

    def prune_ledger(self, low_water, other_buffers_after_days=30):
        """
        Forget ledger rows this buffer no longer needs: every id below
        ``low_water`` is finished in the buffer (drained or quarantined),
        so it can never be drained again.  Rows of other buffer identities
        (a buffer file replaced or moved aside) go after a long grace period.
        Returns the number of rows deleted.
        """
        if not self.ledger or low_water is None:
            return 0
        conn = self._connection()
        try:
            cur = conn.cursor()
            cur.execute(TRANSACTION_GUARDS)
            cur.execute("DELETE FROM nightowl_ingest_ledger WHERE buffer_id = %s AND last_id < %s",
                        (self.buffer_id, int(low_water)))
            n = cur.rowcount
            cur.execute("DELETE FROM nightowl_ingest_ledger WHERE buffer_id <> %s "
                        "AND committed_at < now() - make_interval(days => %s)",
                        (self.buffer_id, other_buffers_after_days))
            n += cur.rowcount
            conn.commit()
        except psycopg2.Error as e:
            self._rollback()
            if classify(e) == "connection":
                self._discard()
                raise unavailable("PostgreSQL unavailable", e)
            raise
        return n

    # -- internals --------------------------------------------------------

    def _write_bisect(self, items, now, drained, quarantined, written):
        if not items:
            return
        try:
            done, wrote = self._write_once(items, now)
        except DataError as e:
            breaker = self.breaker
            if breaker is not None and breaker.holds(e.sqlstate, e.table):
                self._held.extend(i for i, _ in items)
                return
            if len(items) == 1:
                reason = "{} {}".format(e.sqlstate, e.table)
                quarantined.append((items[0][0], reason))
                if breaker is not None:
                    breaker.quarantined(e.sqlstate, e.table, items[0][0])
                return
            half = len(items) // 2
            self._write_bisect(items[:half], now, drained, quarantined, written)
            self._write_bisect(items[half:], now, drained, quarantined, written)
            return
        drained.extend(done)
        written.extend(wrote)

    def _write_once(self, items, now):
        """One transaction; returns (ids drained, [(id, Encoded)] written)."""
        conn = self._connection()
        self._step = "begin"
        try:
            cur = conn.cursor()
            cur.execute(TRANSACTION_GUARDS)
            already = set()
            if self.ledger:
                self._step = "nightowl_ingest_ledger"
                ids = [i for i, _ in items]
                cur.execute("SELECT ids FROM nightowl_ingest_ledger "
                            "WHERE buffer_id = %s AND first_id <= %s AND last_id >= %s",
                            (self.buffer_id, max(ids), min(ids)))
                for (committed,) in cur.fetchall():
                    already.update(committed)
            todo = [(i, enc) for i, enc in items if i not in already] if already else items
            if todo:
                batch = records.Encoded.merge(enc for _, enc in todo)
                for table, data in batch.copy_data().items():
                    self._step = table
                    cur.copy_expert(records.copy_sql(table), io.BytesIO(data))
                slow = self._slow(todo)
                if self.issues and (batch.issues or slow):
                    self._step = "nightowl_issues"
                    self._upsert_issues(cur, batch.issues, slow)
                if batch.users:
                    self._step = "nightowl_users"
                    self._upsert_users(cur, batch.users)
                if self.rollups:
                    self._step = "nightowl_rollups"
                    rollup_write.upsert(cur, records.clean(self.environment),
                                        self._rollup_fold(todo, now))
                if self.ledger:
                    self._step = "nightowl_ingest_ledger"
                    ids = sorted(i for i, _ in todo)
                    cur.execute("INSERT INTO nightowl_ingest_ledger (buffer_id, first_id, last_id, ids) "
                                "VALUES (%s, %s, %s, %s)",
                                (self.buffer_id, ids[0], ids[-1], ids))
            self._step = "commit"
            conn.commit()
        except psycopg2.Error as e:
            step = self._step
            self._rollback()
            kind = classify(e)
            if kind == "connection":
                self._discard()
                raise unavailable("PostgreSQL unavailable", e)
            if kind == "transient":
                raise Transient(e.pgcode)
            if kind == "data":
                raise DataError(e.pgcode, step)
            # the worker logs it (at doublings only: it retries every few seconds)
            cause = "{} (writing {})".format(pgerrors.describe(e), step)
            raise PostgresSchemaError("PostgreSQL refused the batch: " + cause,
                                      e.pgcode, step, cause)
        except BaseException:
            self._rollback()
            raise
        self._ledger_skipped += len(items) - len(todo)
        return [i for i, _ in items], todo

    def _rollup_fold(self, todo, now):
        """The rollup fold of ``todo``: the whole batch's (built in ``write``)
        when ``todo`` is all of it, else its payloads decoded and folded again."""
        if len(todo) == self._folded and self._fold is not None:
            return self._fold
        return rollup_aggregate.fold_many(
            (records.decode_payload(self._payloads[i]) for i, _ in todo), now)

    def _slow(self, todo):
        out = {}
        for row_id, _ in todo:
            part = self._perf.get(row_id)
            if part:
                _thresholds.merge(out, part)
        return out

    def _upsert_issues(self, cur, issues, slow):
        _issue_upsert.write(cur, self.environment, issues, slow)

    def _upsert_users(self, cur, users):
        rows = []
        for uid in sorted(users):
            name, email, first, last, name_ts = users[uid]
            rows.append((records.clean(uid), records.clean(name), records.clean(email),
                         first, last, self.environment))
        psycopg2.extras.execute_values(cur, """
            INSERT INTO nightowl_users AS u (user_id, name, email, first_seen_at, last_seen_at,
                                             updated_at, environment)
            SELECT v.id, v.name, v.email, to_timestamp(v.first), to_timestamp(v.last), now(), v.env
            FROM (VALUES %s) AS v (id, name, email, first, last, env)
            ORDER BY v.id
            ON CONFLICT (user_id) DO UPDATE SET
                name = CASE WHEN EXCLUDED.last_seen_at >= u.last_seen_at THEN EXCLUDED.name ELSE u.name END,
                email = CASE WHEN EXCLUDED.last_seen_at >= u.last_seen_at THEN EXCLUDED.email ELSE u.email END,
                first_seen_at = LEAST(u.first_seen_at, EXCLUDED.first_seen_at),
                last_seen_at = GREATEST(u.last_seen_at, EXCLUDED.last_seen_at),
                environment = EXCLUDED.environment,
                updated_at = now()""",
            rows, template="(%s, %s, %s, %s::float8, %s::float8, %s)", page_size=len(rows))
