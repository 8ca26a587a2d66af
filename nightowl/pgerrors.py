"""
What a PostgreSQL error means, in one line: its SQLSTATE, a short label an
operator recognises (``role missing``, ``database missing``, ``authentication
failed``, ``connection refused``, ``schema missing``, ``permission denied``
...), and the first line of the server's message.

Used wherever a Postgres failure is logged or shown (the migration child,
the drain workers, ``/status`` ``drain.last_error``).  Pure functions, no I/O.

libpq gives no SQLSTATE for a failed connection attempt (psycopg2's
``pgcode`` is None): the server's FATAL message is then matched to the
SQLSTATE the server sent with it.  That is the only place message text is
read; everything else goes by SQLSTATE.

Telemetry is customer data: the first line of a data error (classes 21, 22,
23, 54) can quote the offending value (``invalid input syntax for type uuid:
"..."``), so it is cut before its first ``": "``.  Passwords in a DSN that
libpq echoes are masked.
"""

import re

MAX_LINE = 300

# (pattern in a connection failure's message, SQLSTATE the server sent)
_CONNECT_STATES = (
    (re.compile(r'role ".*" does not exist'), "28000"),
    (re.compile(r'database ".*" does not exist'), "3D000"),
    (re.compile(r"password authentication failed|no password supplied|"
                r"authentication failed"), "28P01"),
    (re.compile(r"no pg_hba\.conf entry"), "28000"),
    (re.compile(r"permission denied for database|not permitted to log in"), "42501"),
    (re.compile(r"the database system is (starting up|shutting down|in recovery mode)"),
     "57P03"),
    (re.compile(r"too many clients|remaining connection slots"), "53300"),
    (re.compile(r"server closed the connection unexpectedly|terminating connection"),
     "08006"),
)

#: status kinds: what /status calls the condition
UNREACHABLE = "unreachable"
SCHEMA_MISSING = "schema-missing"
PERMISSION_DENIED = "permission-denied"
DATA = "data"
TRANSIENT = "transient"
OTHER = "other"

SCHEMA_STATES = frozenset(("42P01", "42703", "3F000", "42883", "42704"))
DATA_CLASSES = ("21", "22", "23", "54")


def _text(error):
    text = getattr(error, "pgerror", None) or str(error)
    return text or error.__class__.__name__


def raw_first_line(error):
    """The first non-empty line of the error's message, unscrubbed."""
    for line in _text(error).strip().splitlines():
        if line.strip():
            return line.strip()
    return error.__class__.__name__


def sqlstate(error):
    """The error's SQLSTATE; for a failed connection, the one its message implies."""
    code = getattr(error, "pgcode", None) or getattr(error, "sqlstate", None)
    if code:
        return code
    cause = getattr(error, "__cause__", None)
    if cause is not None and cause is not error and getattr(cause, "pgcode", None):
        return cause.pgcode
    text = _text(error)
    for pattern, state in _CONNECT_STATES:
        if pattern.search(text):
            return state
    if _is_connection_error(error):
        return "08001"   # sqlclient_unable_to_establish_sqlconnection
    return None


def _is_pg_error(error):
    try:
        import psycopg2
    except ImportError:   # pragma: no cover - psycopg2 is a dependency
        return False
    return isinstance(error, psycopg2.Error)


def _is_connection_error(error):
    try:
        import psycopg2
    except ImportError:   # pragma: no cover - psycopg2 is a dependency
        return False
    return (isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError))
            and not getattr(error, "pgcode", None))


def label(state, line=""):
    """A short name for the cause an operator recognises."""
    if state is None:
        return "error"
    if state == "28000":
        return "role missing" if "does not exist" in line else "authentication failed"
    if state == "28P01":
        return "authentication failed"
    if state == "3D000":
        return "database missing"
    if state in SCHEMA_STATES:
        return "schema missing"
    if state == "42501":
        return "permission denied"
    if state in ("57P01", "57P02", "57P03", "53300"):
        return "server unavailable"
    if state.startswith("08"):
        return "connection refused" if "refused" in line.lower() else "connection failed"
    if state.startswith("40") or state == "55P03":
        return "transient conflict"
    if state == "25006":
        return "read-only"
    if state[:2] in DATA_CLASSES:
        return "data error"
    return "error"


def kind(state):
    """The /status kind of a SQLSTATE (see the module constants)."""
    if state is None:
        return OTHER
    if (state.startswith("08") or state.startswith("28") or state == "3D000"
            or state in ("57P01", "57P02", "57P03", "53300")):
        return UNREACHABLE
    if state in SCHEMA_STATES:
        return SCHEMA_MISSING
    if state == "42501":
        return PERMISSION_DENIED
    if state[:2] in DATA_CLASSES:
        return DATA
    if state.startswith("40") or state == "55P03":
        return TRANSIENT
    return OTHER


def first_line(error, state=None):
    """The message's first line, fit to show: data values cut off, passwords masked."""
    state = sqlstate(error) if state is None else state
    line = raw_first_line(error)
    # 'connection to server at "h", port 5432 failed: FATAL:  role "x" does not exist':
    # the server's reason is the news
    line = re.sub(r"^.*?\b(ERROR|FATAL):\s+", "", line)
    if state and state[:2] in DATA_CLASSES and ": " in line:
        line = line.split(": ", 1)[0]
    from nightowl.migrate import mask_dsn
    line = mask_dsn(line)
    if len(line) > MAX_LINE:
        line = line[:MAX_LINE - 3] + "..."
    return line


def describe(error):
    """
    One line: ``<label> (SQLSTATE <code>): <first line of the message>``.
    An error that does not come from PostgreSQL is named by its class only:
    its message may quote anything, payload content included.
    """
    if not _is_pg_error(error):
        state = getattr(error, "pgcode", None) or getattr(error, "sqlstate", None)
        return error.__class__.__name__ + (" (SQLSTATE {})".format(state) if state else "")
    state = sqlstate(error)
    line = first_line(error, state)
    if state is None:
        return "{} ({}): {}".format(label(None), error.__class__.__name__, line)
    return "{} (SQLSTATE {}): {}".format(label(state, line), state, line)
