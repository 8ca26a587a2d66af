"""
The set-membership oracle that judges every fault trial: ids read back from
a buffer file (``read_buffer``, on a copy so a crashed agent's WAL is
recovered there, never in the original) or from Postgres (``pg_check``: raw
rows per id, torn payloads, ledger duplicates, rollups that differ from a
re-fold of the raw rows), checked against what was sent and acked:
acked ⊆ stored, no id stored twice, stored ⊆ sent.
"""

import os
import re
import shutil
import sqlite3
import tempfile

from nightowl.bench import payloads


ID_RE = re.compile(rb"00000000-0000-4000-8000-(\d{12})")


# -- the oracle --------------------------------------------------------------

def read_buffer(path):
    """
    Rows of a buffer file as ``[(rowid, state, seq)]`` (seq None when the
    payload carries no id, or ids that disagree).  Reads a copy of the file
    and its WAL, so a crashed agent's WAL is recovered in the copy, never
    in the original.
    """
    tmp = tempfile.mkdtemp(prefix="nightowl-faults-read-")
    try:
        copy = os.path.join(tmp, "buffer.sqlite")
        for suffix in ("", "-wal"):
            if os.path.exists(path + suffix):
                shutil.copyfile(path + suffix, copy + suffix)
        if not os.path.exists(copy):
            return []
        conn = sqlite3.connect(copy)
        try:
            rows = []
            from nightowl.buffer.reader import read_payloads
            for rowid, state, payload in read_payloads(conn):
                found = set(ID_RE.findall(bytes(payload)))
                rows.append((rowid, state, int(found.pop()) if len(found) == 1 else None))
            return rows
        finally:
            conn.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_acked(path):
    if not os.path.exists(path):
        return set()
    with open(path) as f:
        return set(int(line) for line in f if line.strip())


class Oracle:
    """acked ⊆ stored, no id stored twice, stored ⊆ sent."""

    def __init__(self):
        self.sent = set()
        self.acked = set()

    def send(self, ids):
        self.sent.update(ids)

    def ack(self, ids):
        self.acked.update(ids)

    def check(self, rows):
        stored = [seq for (_rowid, _state, seq) in rows]
        seen, dups = set(), set()
        for seq in stored:
            if seq in seen:
                dups.add(seq)
            seen.add(seq)
        missing = self.acked - seen
        foreign = set(s for s in seen if s is None or s not in self.sent)
        violations = []
        if missing:
            violations.append("{} acked ids not stored (e.g. {})".format(
                len(missing), sorted(missing)[:5]))
        if dups:
            violations.append("{} ids stored twice (e.g. {})".format(
                len(dups), sorted(dups)[:5]))
        if foreign:
            violations.append("{} stored rows never sent (e.g. {})".format(
                len(foreign), sorted(foreign, key=lambda s: -1 if s is None else s)[:5]))
        return {"sent": len(self.sent), "acked": len(self.acked), "stored": len(stored),
                "missing": len(missing), "duplicates": len(dups), "foreign": len(foreign),
                "violations": violations}


# -- drain side: Postgres is the store ------------------------------------------
#
# The drain trials run the agent with its workers and a real Postgres and
# judge Postgres itself: every acked id has its rows there exactly once, and
# no row carries an id never sent.  payload_with_id stamps one trace id on
# every record of a payload (trace_id, execution_id); in Postgres those are
# one request, two queries, one cache event and one log.  The user record
# carries no trace id, so only the raw tables below are counted.

PER_PAYLOAD = {"nightowl_requests": 1, "nightowl_queries": 2, "nightowl_cache_events": 1,
               "nightowl_logs": 1}


def pg_counts(dsn):
    """``{seq: {table: rows}}`` over the raw tables (seq None: not a payload_with_id id)."""
    import psycopg2
    conn = psycopg2.connect(dsn)
    try:
        out = {}
        cur = conn.cursor()
        for table in PER_PAYLOAD:
            try:
                cur.execute("SELECT trace_id::text, count(*) FROM {} GROUP BY 1".format(table))
            except psycopg2.errors.UndefinedTable:
                conn.rollback()  # not migrated (yet): nothing stored
                continue
            for trace, n in cur.fetchall():
                per = out.setdefault(payloads.id_of(trace), {})
                per[table] = per.get(table, 0) + n
        return out
    finally:
        conn.close()


def pg_stored(counts):
    """
    Oracle rows from L{pg_counts}: a payload is stored k times when every raw
    table holds exactly k times its rows; otherwise it is torn (part of a
    payload committed, which one transaction per batch rules out), listed
    apart and counted once.
    """
    rows, torn = [], []
    for seq, per in counts.items():
        copies = set(per.get(table, 0) / n for table, n in PER_PAYLOAD.items())
        k = copies.pop() if len(copies) == 1 else None
        if seq is None or k is None or k != int(k) or k < 1:
            if seq is not None:
                torn.append(seq)
            rows.append((None, None, seq))
            continue
        rows.extend([(None, None, seq)] * int(k))
    return rows, sorted(torn)


def ledger_duplicates(dsn):
    """Buffer ids the delivery ledger holds more than once (one buffer per trial run)."""
    import psycopg2
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        cur.execute("SELECT count(*) - count(DISTINCT (buffer_id, i)) "
                    "FROM nightowl_ingest_ledger, unnest(ids) AS i")
        return cur.fetchone()[0] or 0
    except psycopg2.Error:
        return None  # no ledger table yet (nothing migrated)
    finally:
        conn.close()


def rollup_diffs(dsn):
    """Rollup rows (minute, hour, day tiers) that differ from a re-fold of the raw rows:
    a retried batch counted twice, or a batch's rows without its rollups."""
    from datetime import timedelta

    import psycopg2

    from nightowl.rollups import rebuild
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        cur.execute("SELECT to_regclass('nightowl_rollups_minute') IS NOT NULL, "
                    "date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'")
        migrated, today = cur.fetchone()
        conn.rollback()
        if not migrated:
            return []
        # whole UTC days around now: the payloads' timestamps are the send time
        since, until = today - timedelta(days=2), today + timedelta(days=2)
        return rebuild.verify(conn, since, until, tiers=("minute", "hour", "day"))
    finally:
        conn.close()


def pg_check(oracle, dsn):
    """The set-membership oracle over Postgres, plus torn payloads, ledger duplicates,
    and rollups that differ from the raw rows they count."""
    rows, torn = pg_stored(pg_counts(dsn))
    check = oracle.check(rows)
    diffs = rollup_diffs(dsn)
    if diffs:
        check["violations"].append("{} rollup rows differ from the raw rows (e.g. {})".format(
            len(diffs), diffs[0][:3]))
    if torn:
        check["violations"].append("{} payloads only partly in Postgres (e.g. {})".format(
            len(torn), torn[:5]))
    dup = ledger_duplicates(dsn)
    if dup:
        check["violations"].append("the ledger holds {} buffer ids twice".format(dup))
    check.update({"torn": len(torn), "ledger_duplicates": dup, "rollup_diffs": len(diffs)})
    return check
