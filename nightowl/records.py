"""
Record type -> table/columns, value coercion, COPY text encoding.

Pure functions, no I/O: the drain's hot path.  One place says which SDK
record type goes to which table and which JSON key feeds which column
(``TABLES``); everything else here is derived from it.

Coercion never raises.  A missing key, a JSON ``null`` or a value of the
wrong type becomes the column's default (counters: 0) or NULL; an integer
outside the bigint range becomes NULL; a JSON-in-a-string field that is not
valid JSON is stored as a jsonb *string* so nothing is lost.  Keys a record
carries that no column takes go, as a JSON object, into ``extra_fields``.

The COPY text format: tab-delimited, ``\\N`` for NULL, backslash, tab,
newline and carriage return escaped; NUL is stripped (Postgres text refuses
it); text that cannot be encoded as UTF-8 (lone surrogates) becomes U+FFFD.
"""

import codecs
import hashlib
import math
import re
import time

import orjson

# ---------------------------------------------------------------------------
# COPY text encoding

NULL = "\\N"


def _fffd(err):
    # the UTF-8 encoder accepts only ASCII str replacements; bytes are taken as-is
    return (b"\xef\xbf\xbd" * (err.end - err.start), err.end)


codecs.register_error("nightowl-fffd", _fffd)


def escape(s):
    """One text value in COPY text format (no NULL handling)."""
    # five substring scans beat one regex search (~70 vs ~160 ns on short text), and a
    # replace chain beats str.translate with a dict table ~9x; doubling the backslashes
    # first keeps it equal to a character-by-character translation
    if "\\" in s or "\t" in s or "\n" in s or "\r" in s or "\x00" in s:
        return (s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
                .replace("\r", "\\r").replace("\x00", ""))
    return s


def to_utf8(text):
    """str -> UTF-8 bytes; anything unencodable (lone surrogates) -> U+FFFD."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "nightowl-fffd")


def decode_payload(payload):
    """Exact payload bytes -> decoded JSON value.

    Invalid UTF-8 inside strings is replaced by U+FFFD rather than refusing the
    whole payload.  Raises ``ValueError`` when the bytes are not JSON at all.
    """
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        if isinstance(payload, (bytes, bytearray, memoryview)):
            text = bytes(payload).decode("utf-8", "replace")
            try:
                return orjson.loads(text)
            except orjson.JSONDecodeError:
                pass
            # orjson refuses lone surrogate escapes ("\ud800"); the stdlib takes them
            import json
            try:
                return json.loads(text)
            except ValueError:
                pass
        raise ValueError("invalid-json")


# ---------------------------------------------------------------------------
# Coercion: each returns the COPY field text

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1


def c_text(v):
    t = type(v)
    if t is str:
        return escape(v)
    if v is None:
        return NULL
    if t is bool:
        return "true" if v else "false"
    if t is int or t is float:
        return repr(v)
    return escape(_dumps(v))


def c_text_notnull(v):
    """Text where NULL would be meaningless: a missing value is ''."""
    if v is None:
        return ""
    return c_text(v)


def _int(v):
    """Python int within bigint, or None."""
    t = type(v)
    if t is int:
        pass
    elif t is bool:
        v = int(v)
    elif t is float:
        if not math.isfinite(v):
            return None
        v = int(v)
    elif t is str:
        s = v.strip()
        try:
            v = int(s)
        except ValueError:
            try:
                f = float(s)
            except ValueError:
                return None
            if not math.isfinite(f):
                return None
            v = int(f)
    else:
        return None
    if INT64_MIN <= v <= INT64_MAX:
        return v
    return None


def c_int(v):
    if type(v) is int and INT64_MIN <= v <= INT64_MAX:
        return str(v)
    v = _int(v)
    return NULL if v is None else str(v)


def c_count(v):
    """Counters: missing or unusable -> 0 (PHP v1 behaviour)."""
    if type(v) is int and INT64_MIN <= v <= INT64_MAX:
        return str(v)
    v = _int(v)
    return "0" if v is None else str(v)


def c_float(v):
    t = type(v)
    if t is float:
        return repr(v) if math.isfinite(v) else NULL
    if t is int:
        try:
            return repr(float(v))
        except OverflowError:
            return NULL
    if t is str:
        try:
            f = float(v)
        except ValueError:
            return NULL
        return repr(f) if math.isfinite(f) else NULL
    return NULL


_TRUE = frozenset(("1", "true", "t", "yes", "y", "on"))
_FALSE = frozenset(("0", "false", "f", "no", "n", "off", ""))


def c_bool(v):
    if v is True:
        return "t"
    if v is False:
        return "f"
    t = type(v)
    if t is int or t is float:
        return "t" if v else "f"
    if t is str:
        s = v.strip().lower()
        if s in _TRUE:
            return "t"
        if s in _FALSE:
            return "f"
    return NULL


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")


def c_uuid(v):
    if type(v) is str and len(v) == 36 and _UUID.match(v):
        return v
    return NULL


def _strip_nul(obj):
    """Remove NUL characters from every string inside a JSON value; NaN and
    infinities become None (JSON has no such numbers; orjson writes null)."""
    t = type(obj)
    if t is str:
        return obj.replace("\x00", "")
    if t is float and not math.isfinite(obj):
        return None
    if t is list:
        return [_strip_nul(x) for x in obj]
    if t is dict:
        return {k.replace("\x00", "") if type(k) is str else k: _strip_nul(x) for k, x in obj.items()}
    return obj


def _dumps(obj):
    """JSON text jsonb accepts (it refuses \\u0000)."""
    try:
        out = orjson.dumps(obj)
    except TypeError:
        # ints beyond 64 bits: the stdlib writes them, jsonb takes them as numeric
        import json
        return json.dumps(_strip_nul(obj), ensure_ascii=False, allow_nan=False, default=str)
    if b"\\u0000" in out:
        out = orjson.dumps(_strip_nul(obj))
    return out.decode("utf-8")


def c_json_string(v):
    """A JSON document carried inside a string (context, headers, trace...).

    Valid JSON -> stored as that document; any other string -> a jsonb string;
    '' (the SDK's "none") -> NULL; a non-string value -> its JSON.
    """
    if type(v) is str:
        if not v:
            return NULL
        try:
            doc = orjson.loads(v)
        except orjson.JSONDecodeError:
            return escape(_dumps(v))
        if "\\u0000" in v or "\x00" in v:
            return escape(_dumps(doc))
        return escape(v)
    if v is None:
        return NULL
    return escape(_dumps(v))


def c_json(v):
    """A native JSON value (route_methods): stored as jsonb; missing -> NULL."""
    if v is None:
        return NULL
    return escape(_dumps(v))


# ---------------------------------------------------------------------------
# The mapping: one place

TEXT, TEXT_NN, INT, COUNT, FLOAT, BOOL, UUID, JSONSTR, JSON = (
    c_text, c_text_notnull, c_int, c_count, c_float, c_bool, c_uuid, c_json_string, c_json)

#: columns every raw table starts with, in order; filled by ``encode_records``
PREFIX = ("created_at", "time_guarded", "timestamp", "v", "environment", "server",
          "deploy", "trace_id", "group_hash", "user_id")
PREFIX_KEYS = ("t", "timestamp", "v", "server", "deploy", "trace_id", "_group", "user")

EXECUTION = (
    ("execution_source", "execution_source", TEXT),
    ("execution_id", "execution_id", UUID),
    ("execution_stage", "execution_stage", TEXT),
    ("execution_preview", "execution_preview", TEXT),
)

COUNTERS = tuple((k, k, COUNT) for k in (
    "exceptions", "logs", "queries", "lazy_loads", "jobs_queued", "mail", "notifications",
    "outgoing_requests", "files_read", "files_written", "cache_events", "hydrated_models",
    "peak_memory_usage")) + (
    ("exception_preview", "exception_preview", TEXT),
    ("context", "context", JSONSTR),
)

JOB = EXECUTION + (
    ("job_id", "job_id", TEXT),
    ("attempt_id", "attempt_id", UUID),
    ("attempt", "attempt", INT),
    ("job_class", "name", TEXT),
    ("connection", "connection", TEXT),
    ("queue", "queue", TEXT),
    ("status", "status", TEXT),
    ("duration", "duration", INT),
) + COUNTERS

#: record type -> (table, ((column, json key, coercion), ...)) after PREFIX
TABLES = {
    "request": ("nightowl_requests", (
        ("method", "method", TEXT),
        ("url", "url", TEXT),
        ("route_name", "route_name", TEXT),
        ("route_methods", "route_methods", JSON),
        ("route_domain", "route_domain", TEXT),
        ("route_path", "route_path", TEXT),
        ("route_action", "route_action", TEXT),
        ("ip", "ip", TEXT),
        ("duration", "duration", INT),
        ("status_code", "status_code", INT),
        ("request_size", "request_size", INT),
        ("response_size", "response_size", INT),
        ("bootstrap", "bootstrap", INT),
        ("before_middleware", "before_middleware", INT),
        ("action", "action", INT),
        ("render", "render", INT),
        ("after_middleware", "after_middleware", INT),
        ("sending", "sending", INT),
        ("terminating", "terminating", INT),
    ) + COUNTERS + (
        ("headers", "headers", JSONSTR),
        ("payload", "payload", JSONSTR),
    )),
    "query": ("nightowl_queries", EXECUTION + (
        ("sql_query", "sql", TEXT_NN),
        ("file", "file", TEXT),
        ("line", "line", INT),
        ("duration", "duration", INT),
        ("connection", "connection", TEXT),
        ("connection_type", "connection_type", TEXT),
    )),
    "exception": ("nightowl_exceptions", EXECUTION + (
        ("class", "class", TEXT),
        ("message", "message", TEXT),
        ("code", "code", TEXT),
        ("file", "file", TEXT),
        ("line", "line", INT),
        ("trace", "trace", JSONSTR),
        ("handled", "handled", BOOL),
        ("php_version", "php_version", TEXT),
        ("laravel_version", "laravel_version", TEXT),
        # fingerprint is derived (see encode_records), appended last
    )),
    "command": ("nightowl_commands", (
        ("class", "class", TEXT),
        ("name", "name", TEXT),
        ("command", "command", TEXT),
        ("exit_code", "exit_code", INT),
        ("duration", "duration", INT),
        ("bootstrap", "bootstrap", INT),
        ("action", "action", INT),
        ("terminating", "terminating", INT),
    ) + COUNTERS),
    "queued-job": ("nightowl_jobs", JOB),
    "job-attempt": ("nightowl_jobs", JOB),
    "cache-event": ("nightowl_cache_events", EXECUTION + (
        ("event_type", "type", TEXT),
        ("key", "key", TEXT),
        ("store", "store", TEXT),
        ("ttl", "ttl", INT),
        ("duration", "duration", INT),
    )),
    "mail": ("nightowl_mail", EXECUTION + (
        ("mailer", "mailer", TEXT),
        ("mailable", "class", TEXT),
        ("subject", "subject", TEXT),
        ("recipients", "to", INT),
        ("cc", "cc", INT),
        ("bcc", "bcc", INT),
        ("attachments", "attachments", INT),
        ("duration", "duration", INT),
        ("failed", "failed", BOOL),
    )),
    "notification": ("nightowl_notifications", EXECUTION + (
        ("notification", "class", TEXT),
        ("channel", "channel", TEXT),
        ("duration", "duration", INT),
        ("failed", "failed", BOOL),
    )),
    "outgoing-request": ("nightowl_outgoing_requests", EXECUTION + (
        ("host", "host", TEXT),
        ("method", "method", TEXT),
        ("url", "url", TEXT),
        ("status_code", "status_code", INT),
        ("duration", "duration", INT),
        ("request_size", "request_size", INT),
        ("response_size", "response_size", INT),
    )),
    "scheduled-task": ("nightowl_scheduled_tasks", (
        ("command", "name", TEXT),
        ("expression", "cron", TEXT),
        ("timezone", "timezone", TEXT),
        ("repeat_seconds", "repeat_seconds", INT),
        ("without_overlapping", "without_overlapping", BOOL),
        ("on_one_server", "on_one_server", BOOL),
        ("run_in_background", "run_in_background", BOOL),
        ("even_in_maintenance_mode", "even_in_maintenance_mode", BOOL),
        ("status", "status", TEXT),
        ("duration", "duration", INT),
    ) + COUNTERS),
    "log": ("nightowl_logs", EXECUTION + (
        ("level", "level", TEXT),
        ("message", "message", TEXT),
        ("context", "context", JSONSTR),
        ("extra", "extra", JSONSTR),
    )),
}

#: every partitioned raw table, in a stable order
RAW_TABLES = tuple(dict.fromkeys(table for table, _ in TABLES.values()))


def _columns(t):
    table, spec = TABLES[t]
    cols = list(PREFIX) + [c for c, _, _ in spec]
    if t in ("queued-job", "job-attempt"):
        cols.append("record_type")
    if t == "exception":
        cols.append("fingerprint")
    cols.append("extra_fields")
    return tuple(cols)


#: table -> column tuple in COPY order (same for both job types)
COLUMNS = {}
for _t in TABLES:
    COLUMNS[TABLES[_t][0]] = _columns(_t)
del _t



def copy_sql(table):
    return "COPY {} ({}) FROM STDIN".format(table, ", ".join(COLUMNS[table]))


# ---------------------------------------------------------------------------
# Event time

PAST_LIMIT = 31622400.0   # ~366 days
FUTURE_LIMIT = 86400.0    # 1 day
_sec_cache = {}


def format_time(ts):
    """Unix seconds -> 'YYYY-MM-DD HH:MM:SS.ffffff+00' (UTC, microseconds)."""
    us = int(round(ts * 1000000.0))
    sec, frac = divmod(us, 1000000)
    prefix = _sec_cache.get(sec)
    if prefix is None:
        if len(_sec_cache) > 8192:
            _sec_cache.clear()
        g = time.gmtime(sec)
        prefix = _sec_cache[sec] = "%04d-%02d-%02d %02d:%02d:%02d." % g[:6]
    return "%s%06d+00" % (prefix, frac)


def event_time(raw, now):
    """(seconds used for created_at, guarded?) from a record's ``timestamp``."""
    t = type(raw)
    if t is float or t is int:
        ts = raw
    elif t is str:
        try:
            ts = float(raw)
        except ValueError:
            return now, True
    else:
        return now, True
    try:
        if now - PAST_LIMIT <= ts <= now + FUTURE_LIMIT:
            return float(ts), False
    except OverflowError:
        pass
    return now, True


# ---------------------------------------------------------------------------
# Routing a batch of records

class Encoded:
    """What a list of records turns into.

    ``lines``: table -> list of COPY lines (str, newline-terminated);
    ``issues``: fingerprint -> [count, users(set), first_ts, last_ts, class,
    message, message_ts, deploy]; ``users``: user_id -> [name, email,
    first_ts, last_ts, name_ts]; ``skipped``: reason -> count;
    ``records``: records written (skipped ones excluded).
    """

    __slots__ = ("lines", "issues", "users", "skipped", "records")

    def __init__(self):
        self.lines = {}
        self.issues = {}
        self.users = {}
        self.skipped = {}
        self.records = 0

    def rows_by_table(self):
        out = {table: len(lines) for table, lines in self.lines.items()}
        if self.users:
            out["nightowl_users"] = len(self.users)
        return out

    def copy_data(self):
        """table -> UTF-8 bytes ready for COPY."""
        return {table: to_utf8("".join(lines)) for table, lines in self.lines.items() if lines}

    @classmethod
    def merge(cls, parts):
        out = cls()
        for p in parts:
            for table, lines in p.lines.items():
                out.lines.setdefault(table, []).extend(lines)
            for key, n in p.skipped.items():
                out.skipped[key] = out.skipped.get(key, 0) + n
            out.records += p.records
            for fp, agg in p.issues.items():
                _merge_issue(out.issues, fp, agg)
            for uid, agg in p.users.items():
                _merge_user(out.users, uid, agg)
        return out


def _merge_issue(issues, fp, agg):
    cur = issues.get(fp)
    if cur is None:
        issues[fp] = [agg[0], set(agg[1])] + agg[2:]
        return
    cur[0] += agg[0]
    cur[1] |= agg[1]
    if agg[2] < cur[2]:
        cur[2] = agg[2]
    if agg[3] > cur[3]:
        cur[3] = agg[3]
    if agg[6] >= cur[6]:
        cur[4], cur[5], cur[6] = agg[4], agg[5], agg[6]


def _merge_user(users, uid, agg):
    cur = users.get(uid)
    if cur is None:
        users[uid] = list(agg)
        return
    if agg[2] < cur[2]:
        cur[2] = agg[2]
    if agg[3] > cur[3]:
        cur[3] = agg[3]
    if agg[4] >= cur[4]:
        cur[0], cur[1], cur[4] = agg[0], agg[1], agg[4]


def _str(v):
    if type(v) is str:
        return v
    if v is None:
        return ""
    return str(v)


def clean(s):
    """Text safe as a query parameter: no NUL, valid UTF-8."""
    if "\x00" in s:
        s = s.replace("\x00", "")
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        s = s.encode("utf-8", "nightowl-fffd").decode("utf-8")
    return s


def _fingerprint(rec):
    g = rec.get("_group")
    if type(g) is str and g:
        return g
    parts = "|".join(_str(rec.get(k)) for k in ("class", "code", "file", "line"))
    return hashlib.md5(parts.encode("utf-8", "nightowl-fffd")).hexdigest()


def encode_records(records, environment, now, out=None):
    """Route and encode decoded records; returns (or extends) an ``Encoded``.

    ``records`` is the decoded JSON array of one payload; ``now`` the drain
    clock in Unix seconds (used for guarded event times).
    """
    if out is None:
        out = Encoded()
    env = escape(environment)
    lines = out.lines
    skipped = out.skipped
    issues = out.issues
    encoders = _ENCODERS
    n = 0
    for rec in records:
        if type(rec) is not dict:
            skipped["not-object"] = skipped.get("not-object", 0) + 1
            continue
        t = rec.get("t")
        enc = encoders.get(t) if type(t) is str else None
        if enc is None:
            if t == "user":
                n += _user(rec, now, out)
                continue
            if t is None:
                key = "missing-t"
            else:
                key = "unknown-t:" + (t[:64] if type(t) is str else type(t).__name__)
            skipped[key] = skipped.get(key, 0) + 1
            continue
        table, encode = enc
        tl = lines.get(table)
        if tl is None:
            tl = lines[table] = []
        tl.append(encode(rec, env, now, issues))
        n += 1
    out.records += n
    return out


def _issue(issues, fp, rec, ts, user):
    uid = _str(user)
    cur = issues.get(fp)
    if cur is None:
        issues[fp] = [1, {uid} if uid else set(), ts, ts,
                      _str(rec.get("class")), _str(rec.get("message")), ts,
                      _str(rec.get("deploy"))]
        return
    cur[0] += 1
    if uid:
        cur[1].add(uid)
    if ts < cur[2]:
        cur[2] = ts
    if ts > cur[3]:
        cur[3] = ts
    if ts >= cur[6]:
        cur[4] = _str(rec.get("class"))
        cur[5] = _str(rec.get("message"))
        cur[6] = ts


def _user(rec, now, out):
    uid = _str(rec.get("id"))
    if not uid:
        out.skipped["user-without-id"] = out.skipped.get("user-without-id", 0) + 1
        return 0
    ts, _ = event_time(rec.get("timestamp"), now)
    _merge_user(out.users, uid, [_str(rec.get("name")), _str(rec.get("username")), ts, ts, ts])
    return 1


def encode_payloads(payloads, environment, now):
    """Exact payload bytes -> table -> COPY bytes (for benchmarks)."""
    enc = Encoded()
    for payload in payloads:
        try:
            records = decode_payload(payload)
        except ValueError:
            continue
        if isinstance(records, list):
            encode_records(records, environment, now, enc)
    return enc.copy_data()


# ---------------------------------------------------------------------------
# Per-type line encoders, generated from TABLES at import
#
# One function per record type builds the whole COPY line with f-strings:
# each field is fetched with a direct ``rec.get`` and takes an inline fast path
# for its common case (a str, an int within bigint, a bool, a uuid already seen
# valid, a trivial JSON string); anything else goes through the field's
# coercion function above, which stays the definition of the stored value.
# ``encoder_source(t)`` shows the generated code.
#
# Text fields: the fast path doubles backslashes only; whether any raw text
# value holds a tab, newline, CR or NUL is asked once per record, of all text
# fields concatenated (coercion output never holds one: it is escaped).  When
# one does, every text field is made again by its coercion function.

#: the prefix columns after created_at, time_guarded, timestamp (see ``PREFIX``):
#: (json key, coercion); environment and user_id are special
_PREFIX_FIELDS = (("v", INT), ("environment", None), ("server", TEXT), ("deploy", TEXT),
                  ("trace_id", UUID), ("_group", TEXT), ("user", None))

_BIGINT = "-9223372036854775808 <= {v} <= 9223372036854775807"

#: coercion -> inline code; {v} the variable, {k} the key literal, {f} the coercion.
#: Each leaves in {v} the field text, or an int whose str() is the field text.
_FAST = {
    c_text: ("{v} = get({k})",
             "if type({v}) is str:",
             "    if '\\\\' in {v}: {v} = {v}.replace('\\\\', '\\\\\\\\')",
             "else: {v} = NULL if {v} is None else {f}({v})"),
    c_text_notnull: ("{v} = get({k})",
                     "if type({v}) is str:",
                     "    if '\\\\' in {v}: {v} = {v}.replace('\\\\', '\\\\\\\\')",
                     "else: {v} = '' if {v} is None else {f}({v})"),
    c_int: ("{v} = get({k})",
            "if type({v}) is not int or not " + _BIGINT + ":",
            "    {v} = NULL if {v} is None else {f}({v})"),
    c_count: ("{v} = get({k})",
              "if type({v}) is not int or not " + _BIGINT + ":",
              "    {v} = '0' if {v} is None else {f}({v})"),
    c_bool: ("{v} = get({k})",
             "{v} = 't' if {v} is True else 'f' if {v} is False else NULL if {v} is None else {f}({v})"),
    c_uuid: ("{v} = get({k})",
             "if type({v}) is not str or {v} not in _uuids_seen:",
             "    {v} = NULL if {v} is None else _uuid({v})"),
    c_json_string: ("{v} = get({k})",
                    "if type({v}) is str and {v} in _JSON_TRIVIAL: {v} = _JSON_TRIVIAL[{v}]",
                    "else: {v} = NULL if {v} is None else {f}({v})"),
}
_GENERIC = ("{v} = {f}(get({k}))",)
_TEXTS = (c_text, c_text_notnull)

#: JSON-in-string values whose stored text is known without parsing (= c_json_string)
_JSON_TRIVIAL = {"": NULL, "{}": "{}", "[]": "[]"}

#: uuid strings already found valid (bounded): a set lookup instead of a regex match
_uuids_seen = set()


def _uuid(v):
    out = c_uuid(v)
    if out is not NULL:
        if len(_uuids_seen) >= 4096:
            _uuids_seen.clear()
        _uuids_seen.add(out)
    return out


#: repr(ts) before the '.' -> 'YYYY-MM-DD HH:MM:SS.' (bounded)
_sec_text = {}


def _created(ts, stamp):
    """format_time(ts) for a float ``ts`` whose repr is ``stamp``.

    For 2**20 <= ts < 2**32 whose repr has at most 6 decimals, round(ts * 1e6)
    is exactly those digits (ts is within half an ulp, <= 2.4e-7, of its repr),
    so created_at is the second's text plus the decimals: the encoders look
    ``_sec_text`` up themselves and call here only on a miss.
    """
    text = format_time(ts)
    sec, _, frac = stamp.partition(".")
    if len(frac) <= 6 and sec.isdigit() and 1048576 <= int(sec) < 4294967296:
        if len(_sec_text) >= 8192:
            _sec_text.clear()
        _sec_text[sec] = text[:20]
    return text


def _extra(rec, known):
    return escape(_dumps({k: rec[k] for k in sorted(rec.keys() - known)}))


def _encoder_source(t):
    """(source of ``encode(rec, env, now, issues) -> line``, its namespace) for type ``t``."""
    table, spec = TABLES[t]
    ns = {"NULL": NULL, "PAST_LIMIT": PAST_LIMIT, "FUTURE_LIMIT": FUTURE_LIMIT,
          "event_time": event_time, "format_time": format_time, "c_float": c_float,
          "c_text": c_text, "escape": escape, "_uuid": _uuid, "_uuids_seen": _uuids_seen,
          "_JSON_TRIVIAL": _JSON_TRIVIAL, "_sec_text": _sec_text, "_created": _created,
          "_extra": _extra, "_fingerprint": _fingerprint, "_issue": _issue, "record_type": t,
          "known": frozenset(PREFIX_KEYS) | frozenset(k for _, k, _ in spec)}
    body = [
        "get = rec.get",
        "raw = get('timestamp')",
        "# event_time(), c_float() and format_time() inlined for an in-range float",
        "if type(raw) is float and now - PAST_LIMIT <= raw <= now + FUTURE_LIMIT:",
        "    ts = raw",
        "    guarded = 'f'",
        "    stamp = repr(raw)",
        "    sec, _, frac = stamp.partition('.')",
        "    created = _sec_text.get(sec)",
        "    if created is not None and len(frac) <= 6: created = f'{created}{frac:0<6}+00'",
        "    else: created = _created(raw, stamp)",
        "else:",
        "    ts, guarded = event_time(raw, now)",
        "    guarded = 't' if guarded else 'f'",
        "    stamp = c_float(raw)",
        "    created = format_time(ts)",
    ]
    out = ["created", "guarded", "stamp"]
    texts = []    # (variable, key, coercion name) of the text fields

    def field(key, coerce):
        v = "f{}".format(len(out))
        fname = "c{}".format(len(out))
        ns[fname] = coerce
        for line in _FAST.get(coerce, _GENERIC):
            body.append(line.format(v=v, k=repr(key), f=fname))
        if coerce in _TEXTS:
            texts.append((v, key, fname))
        out.append(v)

    for key, coerce in _PREFIX_FIELDS:
        if key == "environment":
            out.append("env")
        elif key == "user":
            body.extend([
                "user = get('user')",
                "if user is None or user == '': uid = NULL",
                "elif type(user) is not str: uid = c_text(user)",
                "elif '\\\\' in user: uid = user.replace('\\\\', '\\\\\\\\')",
                "else: uid = user",
            ])
            out.append("uid")
        else:
            field(key, coerce)
    for _, key, coerce in spec:
        field(key, coerce)
    probe = "".join("{%s}" % v for v in ["uid"] + [v for v, _, _ in texts])
    body.extend([
        "probe = f'%s'" % probe,
        "if '\\t' in probe or '\\n' in probe or '\\r' in probe or '\\x00' in probe:",
        "    uid = NULL if user is None or user == '' else c_text(user)",
    ] + ["    %s = %s(get(%r))" % (v, fname, key) for v, key, fname in texts])
    if table == "nightowl_jobs":
        out.append("record_type")
    elif t == "exception":
        body.extend(["fp = _fingerprint(rec)",
                     "_issue(issues, fp, rec, ts, user)",
                     "fingerprint = escape(fp)"])
        out.append("fingerprint")
    body.append("extra = NULL if known.issuperset(rec) else _extra(rec, known)")
    out.append("extra")
    # f-strings of at most 30 parts compile to one BUILD_STRING; longer ones build a
    # list for str.join (~25% slower on a 50-column line)
    parts = ["{%s}\\t" % v for v in out]
    parts[-1] = parts[-1][:-2] + "\\n"
    chunks = ["f'" + "".join(parts[i:i + 15]) + "'" for i in range(0, len(parts), 15)]
    body.append("return " + " + ".join(chunks))
    src = "def encode(rec, env, now, issues):\n" + "".join("    " + line + "\n" for line in body)
    return src, ns


def encoder_source(t):
    """The generated encoder of record type ``t``, as Python source (for reading)."""
    return _encoder_source(t)[0]


def _make_encoders():
    encoders = {}
    for t, (table, _) in TABLES.items():
        src, ns = _encoder_source(t)
        exec(compile(src, "<nightowl.records encoder {}>".format(t), "exec"), ns)
        encoders[t] = (table, ns["encode"])
    return encoders


#: record type -> (table, encode(rec, env, now, issues) -> COPY line)
_ENCODERS = _make_encoders()
