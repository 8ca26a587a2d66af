"""
SDK-shaped payloads and frames for the benchmarks and the fault suite.

Records come from the fixtures (``NIGHTOWL_FIXTURES``, else the
repository's own ``tests/fixtures/nightwatch``).  When none is found (an
installed package) a small built-in set of records stands in, so the tools
still work.

Payloads are encoded the way the PHP SDK encodes them: compact JSON, UTF-8
left unescaped, and ``/`` written as ``\\/`` (no ``JSON_UNESCAPED_SLASHES``).
"""

import json
import os
import random

import xxhash

PAYLOAD_VERSION = b"v1"

# The 12-digit marker that payload_with_id() writes and that the C load
# generator (nwload.c) replaces, per frame, with a zero-padded sequence number.
ID_PLACEHOLDER = "000000000000"
ID_UUID = "00000000-0000-4000-8000-%012d"

_UUID_FIELDS = ("trace_id", "execution_id", "attempt_id")

_HEADERS = {
    "host": "app.example.com",
    "user-agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
                  "(KHTML, like Gecko) Version/17.4.1 Safari/605.1.15",
    "accept": "application/json, text/plain, */*",
    "accept-language": "en-GB,en;q=0.9",
    "accept-encoding": "gzip, deflate, br",
    "referer": "https://app.example.com/dashboard/users?page=2",
    "x-requested-with": "XMLHttpRequest",
    "x-forwarded-for": "192.168.1.42",
    "x-forwarded-proto": "https",
    "content-type": "application/json",
    "sec-fetch-mode": "cors",
    "sec-fetch-site": "same-origin",
    "sec-fetch-dest": "empty",
    "authorization": "[redacted]",
    "cookie": "[redacted]",
    "x-xsrf-token": "[redacted]",
}

# Built-in fallback: one record of each type realistic_payload() needs, plus
# a few more so fixture_mix() still mixes types.
_BUILTIN = [
    {"v": 1, "t": "request", "timestamp": 1714694400.123456, "deploy": "production",
     "server": "web-01", "_group": "facf1af4af5480fa461e1027b323567b",
     "trace_id": "00000000-0000-0000-0000-000000000000", "user": "42",
     "method": "GET", "url": "https://app.example.com/api/users", "route_name": "users.index",
     "route_methods": ["GET", "HEAD"], "route_domain": "", "route_path": "/api/users",
     "route_action": "App\\Http\\Controllers\\UserController@index", "ip": "192.168.1.42",
     "duration": 489497, "status_code": 200, "request_size": 312, "response_size": 6399,
     "bootstrap": 2104, "before_middleware": 823, "action": 416072, "render": 4231,
     "after_middleware": 521, "sending": 238, "terminating": 1894, "exceptions": 0,
     "logs": 1, "queries": 2, "lazy_loads": 0, "jobs_queued": 0, "mail": 0,
     "notifications": 0, "outgoing_requests": 0, "files_read": 0, "files_written": 0,
     "cache_events": 1, "hydrated_models": 5, "peak_memory_usage": 18874368,
     "exception_preview": "", "context": "{}", "headers": "{}", "payload": ""},
    {"v": 1, "t": "query", "timestamp": 1714694400.234567, "deploy": "production",
     "server": "web-01", "_group": "e7b5f2c3f6189b1cdef123456789012b",
     "trace_id": "00000000-0000-0000-0000-000000000000", "execution_source": "request",
     "execution_id": "00000000-0000-0000-0000-000000000000",
     "execution_preview": "GET /api/users", "execution_stage": "action", "user": "42",
     "sql": "SELECT * FROM \"users\" WHERE \"id\" = ?",
     "file": "app/Http/Controllers/UserController.php", "line": 42, "duration": 1842,
     "connection": "pgsql", "connection_type": "read"},
    {"v": 1, "t": "query", "timestamp": 1714694400.245678, "deploy": "production",
     "server": "web-01", "_group": "ba81151629cabe4f123456789012345e",
     "trace_id": "00000000-0000-0000-0000-000000000000", "execution_source": "request",
     "execution_id": "00000000-0000-0000-0000-000000000000",
     "execution_preview": "GET /api/users", "execution_stage": "action", "user": "42",
     "sql": "SELECT COUNT(*) FROM \"notifications\" WHERE \"read_at\" IS NULL AND \"user_id\" = ?",
     "file": "app/Models/User.php", "line": 214, "duration": 923,
     "connection": "pgsql", "connection_type": "read"},
    {"v": 1, "t": "cache-event", "timestamp": 1714694400.456789, "deploy": "production",
     "server": "web-01", "_group": "06a33db8122cf806789012345abcdef3",
     "trace_id": "00000000-0000-0000-0000-000000000000", "execution_source": "request",
     "execution_id": "00000000-0000-0000-0000-000000000000",
     "execution_preview": "GET /api/users", "execution_stage": "action", "user": "42",
     "store": "redis", "key": "users:42", "type": "hit", "duration": 312, "ttl": 0},
    {"v": 1, "t": "log", "timestamp": 1714694400.890123, "deploy": "production",
     "server": "web-01", "trace_id": "00000000-0000-0000-0000-000000000000",
     "execution_source": "request", "execution_id": "00000000-0000-0000-0000-000000000000",
     "execution_preview": "GET /api/users", "execution_stage": "action", "user": "42",
     "level": "info", "message": "User profile loaded", "context": "{\"user_id\":42}",
     "extra": "{}"},
    {"v": 1, "t": "user", "timestamp": 1714694400.901234, "id": "42",
     "name": "Alice Anderson", "username": "alice@example.com"},
]

_cache = {}


def fixtures_dir():
    """The fixture directory, or None when only the built-in records exist."""
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.normpath(os.path.join(here, os.pardir, os.pardir))
    for candidate in (os.environ.get("NIGHTOWL_FIXTURES"),
                      os.path.join(repo, "tests", "fixtures", "nightwatch")):
        if candidate and os.path.isdir(candidate):
            return os.path.abspath(candidate)
    return None


def _sample_records():
    """One record of every SDK type, shipped with the package (sample-records.jsonl)."""
    from importlib import resources
    text = (resources.files("nightowl.bench") / "sample-records.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def records_by_type():
    """``{type: [record dict, ...]}`` from the fixtures (or the built-in set)."""
    if "records" in _cache:
        return _cache["records"]
    found = {}
    directory = fixtures_dir()
    if directory:
        for name in sorted(os.listdir(directory)):
            if not name.endswith(".jsonl"):
                continue
            with open(os.path.join(directory, name), "rb") as f:
                for line in f:
                    line = line.strip()
                    if line:
                        record = json.loads(line)
                        found.setdefault(record["t"], []).append(record)
    builtin = list(_BUILTIN) + _sample_records()
    for needed in builtin:
        # Fill any type the fixtures lack (or all of them, without fixtures:
        # an installed package has no tests/ beside it).
        if needed["t"] not in found or not directory:
            found.setdefault(needed["t"], []).append(needed)
    _cache["records"] = found
    return found


def encode(records):
    """Encode a list of records like PHP's json_encode without UNESCAPED_SLASHES."""
    text = json.dumps(records, ensure_ascii=False, separators=(",", ":"))
    # '/' only ever occurs inside JSON strings, so this is exact.
    return text.replace("/", "\\/").encode("utf-8")


def stamp(records, trace_id, user, timestamp):
    """
    Copies of ``records`` as one execution: every id field set to
    ``trace_id``, ``user`` on the records that carry one, timestamps from
    ``timestamp`` a few hundred microseconds apart.
    """
    out = []
    for i, record in enumerate(records):
        record = dict(record)
        for key in _UUID_FIELDS:
            if key in record:
                record[key] = trace_id
        if "user" in record and record.get("t") != "user":
            record["user"] = user
        record["timestamp"] = round(timestamp + i * 0.000731, 6)
        out.append(record)
    return out


def realistic_records(trace_id="9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d"):
    """A request, two queries, a cache event and a log of one execution."""
    by_type = records_by_type()
    request = dict(by_type["request"][0])
    request["headers"] = json.dumps(_HEADERS, separators=(",", ":"))
    request["context"] = json.dumps(
        {"locale": "en", "tenant": "acme-corp", "feature_flags": ["new-billing", "beta-search"]},
        separators=(",", ":"))
    queries = by_type["query"][:2] if len(by_type["query"]) >= 2 else by_type["query"] * 2
    log = dict(by_type["log"][0])
    log["context"] = json.dumps(
        {"user_id": 42, "path": "/api/users", "cache": "hit", "elapsed_ms": 4.31,
         "ids": [1024, 1025, 1031, 1187, 2210]}, separators=(",", ":"))
    records = [queries[0], queries[1], by_type["cache-event"][0], log, request]
    return stamp(records, trace_id, "42", 1714694400.123456)


def realistic_payload():
    """One ~3.7 KB payload of 5 records, encoded as the SDK encodes it."""
    if "realistic" not in _cache:
        _cache["realistic"] = encode(realistic_records())
    return _cache["realistic"]


def fixture_mix(n, rng=None):
    """``n`` payloads of 5-7 records each, drawn from every fixture type."""
    rng = rng or random.Random(0)
    by_type = records_by_type()
    types = sorted(by_type)
    payloads = []
    for k in range(n):
        count = rng.randint(5, 7)
        # Every type shows up across the mix: rotate through them, then pick at random.
        chosen = [types[(k * 7 + j) % len(types)] for j in range(2)]
        chosen += [rng.choice(types) for _ in range(count - 2)]
        records = [rng.choice(by_type[t]) for t in chosen]
        trace = "%08x-%04x-4%03x-8%03x-%012x" % (
            rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(12),
            rng.getrandbits(12), rng.getrandbits(48))
        payloads.append(encode(stamp(records, trace, str(rng.randint(1, 5000)),
                                      1714694400 + k * 0.01)))
    return payloads


def payload_with_id(n, records=None):
    """
    A realistic payload whose every record carries ``trace_id`` (and execution
    ids) ``00000000-0000-4000-8000-<n as 12 digits>``, so payloads can be told
    apart downstream.  ``payload_with_id(0)`` is the template for the C load
    generator: its ``000000000000`` runs are replaced per frame.
    """
    if records is None:
        records = realistic_records()
    payload = encode(stamp(records, ID_UUID % n, "42", 1714694400.123456))
    if n == 0:
        expected = sum(1 for r in records for key in _UUID_FIELDS if key in r)
        if payload.count(ID_PLACEHOLDER.encode()) != expected:
            raise ValueError("the records hold a stray 12-zero run; the id marker would be ambiguous")
    return payload


def id_of(trace_id):
    """The sequence number in a trace id made by payload_with_id, or None."""
    if isinstance(trace_id, str) and trace_id.startswith("00000000-0000-4000-8000-"):
        return int(trace_id[-12:])
    return None


def token_hash(token=None):
    """First 7 hex characters of XXH3-128 of the token ('' when there is none)."""
    if isinstance(token, str):
        token = token.encode("utf-8")
    return xxhash.xxh3_128_hexdigest(token or b"")[:7].encode("ascii")


def frame(payload_bytes, token=None):
    """The exact SDK frame: ``<len>:v1:<hash7>:<payload>``."""
    if isinstance(payload_bytes, str):
        payload_bytes = payload_bytes.encode("utf-8")
    body = PAYLOAD_VERSION + b":" + token_hash(token) + b":" + payload_bytes
    return str(len(body)).encode("ascii") + b":" + body
