"""
What a failed batch write means, by SQLSTATE (never by message text, PHP §3.2),
and the exceptions nightowl.pgwrite.BatchWriter raises for it.

``classify(exc)`` sorts a psycopg2 error into one of four kinds:

* ``connection``: connection-class (08xxx), server shutting down (57P0x), too
  many connections (53300) -> ``PostgresUnavailable`` (the caller backs off,
  rows stay claimed);
* ``transient``: deadlock / serialization (40xxx), lock timeout (55P03) ->
  the batch is retried a few times, then ``PostgresBusy`` (a
  ``PostgresUnavailable``);
* ``data``: classes 21, 22, 23, 54 -> ``DataError`` inside the writer, which
  bisects the payloads until the poison one is alone and quarantines it;
* ``schema``: everything else (42xxx, 28xxx, 3D000, 25006 read-only, and
  anything not known to be about one row's data) -> ``PostgresSchemaError``:
  never a reason to quarantine (hazard 12).
"""

import psycopg2

from nightowl import pgerrors

UNAVAILABLE_STATES = frozenset(("57P01", "57P02", "57P03", "53300"))


class PostgresUnavailable(Exception):
    """Postgres cannot take the batch now; back off and retry later (rows stay claimed).
    ``cause`` is the one-line reason (nightowl.pgerrors.describe)."""

    def __init__(self, message, sqlstate=None, cause=None):
        Exception.__init__(self, message)
        self.sqlstate = sqlstate
        self.cause = cause or message


class PostgresBusy(PostgresUnavailable):
    """Deadlocks, serialization failures or lock timeouts persisted across retries."""


class PostgresSchemaError(Exception):
    """The database refuses every batch (missing table/column, permissions,
    read-only...): an operator must act; nothing is quarantined."""

    def __init__(self, message, sqlstate=None, table=None, cause=None):
        Exception.__init__(self, message)
        self.sqlstate = sqlstate
        self.table = table
        self.cause = cause or message


class DataError(Exception):
    """One row's data was refused (``sqlstate``) while writing ``table``: bisect."""

    def __init__(self, sqlstate, table):
        Exception.__init__(self, sqlstate, table)
        self.sqlstate = sqlstate
        self.table = table


class Transient(Exception):
    """A deadlock, serialization failure or lock timeout: retry the batch."""

    def __init__(self, sqlstate):
        Exception.__init__(self, sqlstate)
        self.sqlstate = sqlstate


def classify(exc):
    """'connection' | 'transient' | 'data' | 'schema' for a psycopg2 error."""
    code = getattr(exc, "pgcode", None)
    if not code:
        if isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
            return "connection"
        return "schema"
    if code.startswith("08") or code in UNAVAILABLE_STATES:
        return "connection"
    if code.startswith("40") or code == "55P03":
        return "transient"
    if code[:2] in pgerrors.DATA_CLASSES:
        return "data"
    return "schema"


def unavailable(what, exc):
    """``PostgresUnavailable("<what>: <one-line cause>")`` for psycopg2 error ``exc``."""
    cause = pgerrors.describe(exc)
    return PostgresUnavailable(what + ": " + cause, pgerrors.sqlstate(exc), cause)
