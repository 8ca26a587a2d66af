"""nightowl.records: mapping, coercion and COPY text encoding (pure, no I/O)."""

import glob
import os

import orjson
import pytest
from hypothesis import given, strategies as st

from nightowl import records
from nightowl.records import NULL, COLUMNS, copytext, encode_records, escape, eventtime

NOW = 1714694500.0


def copy_unescape(field):
    """Inverse of COPY text escaping, as Postgres reads it."""
    if field == NULL:
        return None
    out, i = [], 0
    while i < len(field):
        c = field[i]
        if c == "\\":
            n = field[i + 1]
            out.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}[n])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def one_row(rec, environment="production", now=NOW):
    enc = encode_records([rec], environment, now)
    (table, lines), = enc.lines.items()
    assert len(lines) == 1 and lines[0].endswith("\n")
    fields = lines[0][:-1].split("\t")
    assert len(fields) == len(COLUMNS[table])
    return table, {c: copy_unescape(f) for c, f in zip(COLUMNS[table], fields)}


def load(fixtures, name):
    with open(os.path.join(fixtures, name)) as f:
        return [orjson.loads(line) for line in f if line.strip()]


# -- COPY escaping -----------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("plain", "plain"),
    ("a\tb", "a\\tb"),
    ("a\nb", "a\\nb"),
    ("a\rb", "a\\rb"),
    ("back\\slash", "back\\\\slash"),
    ("\\N", "\\\\N"),          # a literal backslash-N is data, not NULL
    ("nul\x00byte", "nulbyte"),  # Postgres text refuses NUL: stripped
    ("emoji \U0001F989 ok", "emoji \U0001F989 ok"),
])
def test_escape(raw, expected):
    assert escape(raw) == expected


def test_megabyte_string_roundtrips():
    big = ("x\t\\\n" * 262144)
    assert len(big) == 1048576
    assert copy_unescape(escape(big)) == big


@given(st.text())
def test_escape_roundtrip_property(s):
    out = escape(s)
    assert "\t" not in out and "\n" not in out and "\r" not in out
    assert copy_unescape(out) == s.replace("\x00", "")


def test_invalid_utf8_becomes_replacement_character():
    payload = b'[{"t":"log","timestamp":1714694400.5,"message":"bad \xff\xfe byte","level":"info"}]'
    decoded = records.decode_payload(payload)
    assert decoded[0]["message"] == "bad \ufffd\ufffd byte"
    assert records.to_utf8("lone \ud800 surrogate") == "lone \ufffd surrogate".encode("utf-8")


def test_lone_surrogate_escape_is_not_fatal():
    decoded = records.decode_payload(b'[{"t":"log","message":"x\\ud800y"}]')
    data = records.encode_payloads([b'[{"t":"log","message":"x\\ud800y"}]'], "prod", NOW)
    assert decoded[0]["message"] == "x\ud800y"
    assert "x\ufffdy".encode("utf-8") in data["nightowl_logs"]


def test_not_json_raises_valueerror():
    with pytest.raises(ValueError):
        records.decode_payload(b"{not json")


# -- coercion ------------------------------------------------------------------

def test_coercions():
    assert records.c_int("42") == "42"
    assert records.c_int("4.9") == "4"
    assert records.c_int("abc") == NULL
    assert records.c_int(1 << 63) == NULL
    assert records.c_int(-(1 << 63)) == str(-(1 << 63))
    assert records.c_int(float("nan")) == NULL
    assert records.c_int(None) == NULL
    assert records.c_int([1]) == NULL
    assert records.c_count(None) == "0"
    assert records.c_count("x") == "0"
    assert records.c_bool("true") == "t" and records.c_bool(0) == "f"
    assert records.c_bool("maybe") == NULL
    assert records.c_uuid("not-a-uuid") == NULL
    assert records.c_uuid("01HXYZ0123456789ABCDEF") == NULL
    assert records.c_uuid("6F1B1D6E-0000-4000-8000-000000000001") == \
        "6F1B1D6E-0000-4000-8000-000000000001"
    assert records.c_json_string('{"a":1}') == '{"a":1}'
    assert records.c_json_string("not json") == '"not json"'
    assert records.c_json_string("") == NULL
    # jsonb refuses \u0000: removed inside the document, nothing else changes
    assert orjson.loads(records.c_json_string('{"a":"x\\u0000y"}')) == {"a": "xy"}
    assert records.c_text({"k": [1]}) == '{"k":[1]}'
    assert records.c_text(3) == "3"


def test_event_time_guard():
    assert records.event_time(NOW - 10, NOW) == (NOW - 10, False)
    assert records.event_time(NOW - 400 * 86400, NOW) == (NOW, True)
    assert records.event_time(NOW + 2 * 86400, NOW) == (NOW, True)
    assert records.event_time(1714694400123, NOW) == (NOW, True)  # milliseconds
    assert records.event_time("garbage", NOW) == (NOW, True)
    assert records.event_time(None, NOW) == (NOW, True)
    assert records.event_time(str(NOW - 1), NOW) == (NOW - 1, False)
    assert records.format_time(1714694400.123456) == "2024-05-03 00:00:00.123456+00"


def test_fixture_quirks(fixtures):
    # "user": null -> NULL (not the text "None" or "")
    table, row = one_row(load(fixtures, "cache-event.jsonl")[2])
    assert table == "nightowl_cache_events"
    assert row["user_id"] is None
    # cache type outside the SDK vocabulary kept as-is
    assert row["event_type"] == "put"
    assert one_row(load(fixtures, "cache-event.jsonl")[3])[1]["event_type"] == "forget"
    # job_id a ULID: kept as text, not nulled like an invalid uuid
    table, row = one_row(load(fixtures, "job-attempt.jsonl")[0])
    assert table == "nightowl_jobs"
    assert row["job_id"] == "01HXYZ0123456789ABCDEF"
    assert row["record_type"] == "job-attempt"
    assert row["attempt_id"] == "00000000-0000-0000-0000-000000000000"
    assert row["time_guarded"] == "f"
    assert row["created_at"] == "2024-05-03 00:00:10.123456+00"
    assert row["timestamp"] == "1714694410.123456"
    assert row["extra_fields"] is None


def test_extra_fields_kept():
    rec = {"v": 1, "t": "query", "timestamp": NOW, "sql": "select 1", "raw_sql": "select 1",
           "bindings": [1, "a"], "user": "7"}
    _, row = one_row(rec)
    assert orjson.loads(row["extra_fields"]) == {"bindings": [1, "a"], "raw_sql": "select 1"}
    assert row["user_id"] == "7"
    assert row["sql_query"] == "select 1"


def test_wrong_types_never_raise():
    rec = {"t": "request", "timestamp": "soon", "v": "x", "status_code": "500", "duration": "12.5",
           "route_methods": "GET", "user": 42, "trace_id": 5, "headers": {"a": 1},
           "exceptions": None, "peak_memory_usage": 1 << 70}
    _, row = one_row(rec)
    assert row["time_guarded"] == "t"
    assert row["created_at"] == records.format_time(NOW)
    assert row["timestamp"] is None
    assert row["v"] is None
    assert row["status_code"] == "500"
    assert row["duration"] == "12"
    assert row["route_methods"] == '"GET"'
    assert row["user_id"] == "42"
    assert row["trace_id"] is None
    assert row["headers"] == '{"a":1}'
    assert row["exceptions"] == "0"
    assert row["peak_memory_usage"] == "0"


def test_missing_and_unknown_t_are_counted():
    enc = encode_records([{"timestamp": NOW}, {"t": "lazy-load"}, {"t": "lazy-load"}, "str", 5,
                          {"t": 7}, {"t": "user", "id": ""},
                          {"t": "log", "timestamp": NOW, "message": "kept"}], "prod", NOW)
    assert enc.skipped == {"missing-t": 1, "unknown-t:lazy-load": 2, "not-object": 2,
                           "unknown-t:int": 1, "user-without-id": 1}
    assert enc.records == 1
    assert list(enc.lines) == ["nightowl_logs"]


def test_every_fixture_routes(fixtures):
    expected = {"request": "nightowl_requests", "query": "nightowl_queries",
                "exception": "nightowl_exceptions", "command": "nightowl_commands",
                "queued-job": "nightowl_jobs", "job-attempt": "nightowl_jobs",
                "cache-event": "nightowl_cache_events", "mail": "nightowl_mail",
                "notification": "nightowl_notifications",
                "outgoing-request": "nightowl_outgoing_requests",
                "scheduled-task": "nightowl_scheduled_tasks", "log": "nightowl_logs"}
    paths = sorted(glob.glob(os.path.join(fixtures, "*.jsonl")))
    assert len(paths) == 13
    for path in paths:
        t = os.path.basename(path)[:-len(".jsonl")]
        recs = load(fixtures, os.path.basename(path))
        enc = encode_records(recs, "production", NOW)
        assert enc.skipped == {}
        assert enc.records == len(recs)
        if t == "user":
            assert sorted(enc.users) == sorted(r["id"] for r in recs)
            assert enc.users["user_42"][:2] == ["Alice Anderson", "alice@example.com"]
        else:
            assert list(enc.lines) == [expected[t]]
            assert len(enc.lines[expected[t]]) == len(recs)


def test_issue_aggregate():
    base = {"t": "exception", "class": "E", "code": "0", "file": "a.php", "line": 1, "_group": "g1"}
    recs = [dict(base, timestamp=NOW - 30, message="old", user="u1"),
            dict(base, timestamp=NOW - 10, message="new", user="u2"),
            dict(base, timestamp=NOW - 20, message="mid", user="u1"),
            dict(base, timestamp=NOW - 5, message="nogroup", _group="", user="")]
    enc = encode_records(recs, "production", NOW)
    n, users, first, last, cls, msg, msg_ts, deploy = enc.issues["g1"]
    assert (n, users, first, last, msg) == (3, {"u1", "u2"}, NOW - 30, NOW - 10, "new")
    other = [fp for fp in enc.issues if fp != "g1"]
    assert len(other) == 1 and len(other[0]) == 32  # md5(class|code|file|line)


# -- the generated per-type encoders against the coercion functions -------------

def reference_line(rec, environment, now):
    """One record's COPY line built field by field from TABLES and the coercion
    functions, the way encode_records did before its encoders were generated."""
    t = rec["t"]
    table, spec = records.TABLES[t]
    raw_ts = rec.get("timestamp")
    ts, guarded = records.event_time(raw_ts, now)
    user = rec.get("user")
    fields = [records.format_time(ts), "t" if guarded else "f", records.c_float(raw_ts),
              records.c_int(rec.get("v")), escape(environment), records.c_text(rec.get("server")),
              records.c_text(rec.get("deploy")), records.c_uuid(rec.get("trace_id")),
              records.c_text(rec.get("_group")),
              NULL if user is None or user == "" else records.c_text(user)]
    fields += [coerce(rec.get(key)) for _, key, coerce in spec]
    if table == "nightowl_jobs":
        fields.append(t)
    elif t == "exception":
        fields.append(escape(records.fingerprint(rec)))
    extra = rec.keys() - set(records.PREFIX_KEYS) - {key for _, key, _ in spec}
    fields.append(escape(copytext.dumps({k: rec[k] for k in sorted(extra)})) if extra else NULL)
    return "\t".join(fields) + "\n"


_KEYS = sorted(set(records.PREFIX_KEYS) - {"t"}
               | {key for _, spec in records.TABLES.values() for _, key, _ in spec}
               | {"unknown_key", "id"})
_TEXTS = st.sampled_from(["", " ", "plain", "App\\Jobs\\Send", "a\tb", "a\nb", "a\rb", "nul\x00",
                          "\\N", "{}", "[]", '{"a":1}', '{"a":"x\\u0000y"}', "not json", "42", " 7 ",
                          "4.9", "true", "off", "maybe", "1e400", "nan", "x\ud800y", "日本語",
                          "00000000-0000-0000-0000-000000000000",
                          "6F1B1D6E-0000-4000-8000-000000000001",
                          "6F1B1D6E-0000-4000-8000-00000000000g"]) | st.text(max_size=12)
_SCALARS = (st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70)
            | st.sampled_from([0, 1, -1, (1 << 63) - 1, 1 << 63, -(1 << 63), -(1 << 63) - 1])
            | st.floats() | _TEXTS)
_VALUES = _SCALARS | st.lists(_SCALARS, max_size=3) | st.dictionaries(_TEXTS, _SCALARS, max_size=3)
_STAMPS = (st.floats(NOW - 400 * 86400, NOW + 2 * 86400).flatmap(
    lambda f: st.integers(0, 9).map(lambda d: round(f, d))) | st.integers(0, 2 * int(NOW)) | _VALUES)


@given(st.sampled_from(sorted(records.TABLES)), st.dictionaries(st.sampled_from(_KEYS), _VALUES),
       _STAMPS, st.sampled_from(["production", "a\tb\\"]))
def test_generated_encoder_matches_coercions(t, fields, stamp, environment):
    rec = dict(fields, t=t, timestamp=stamp)
    expected = reference_line(rec, environment, NOW)
    enc = encode_records([rec], environment, NOW)
    (lines,) = enc.lines.values()
    assert lines == [expected]


def test_generated_encoders_match_on_fixture_mix():
    from nightowl.bench import payloads
    now = 1714694400.0 + 100
    for payload in payloads.fixture_mix(300):
        recs = [r for r in records.decode_payload(payload) if r["t"] != "user"]
        enc = encode_records(recs, "production", now)
        got = [line for lines in enc.lines.values() for line in lines]
        assert sorted(got) == sorted(reference_line(r, "production", now) for r in recs)


@given(st.floats(1048576.0, 4294967295.0).flatmap(lambda f: st.integers(0, 9).map(lambda d: round(f, d))))
def test_created_at_from_repr_matches_format_time(ts):
    # the encoders build created_at from repr(ts) and a per-second prefix
    stamp = repr(ts)
    assert eventtime.created_text(ts, stamp) == records.format_time(ts)
    sec, _, frac = stamp.partition(".")
    prefix = eventtime.sec_text.get(sec)
    if prefix is not None and len(frac) <= 6:
        assert "{}{:0<6}+00".format(prefix, frac) == records.format_time(ts)


def test_encoder_source_reads_every_key_of_its_type():
    for t, (_, spec) in records.TABLES.items():
        src = records.encoder_source(t)
        for key in [k for _, k, _ in spec] + ["timestamp", "v", "server", "deploy", "trace_id",
                                               "_group", "user"]:
            assert "get({!r})".format(key) in src, (t, key)


def test_created_at_within_one_second():
    # the second's prefix is cached after the first record; later ones take the shortcut
    stamps = [NOW - 7 + x for x in (0.0, 0.5, 0.123456, 0.1234567, 0.12345678, 0.999999, 0.9999996,
                                    0.0000004, 0.0000005, 0.0000006)]
    recs = [{"t": "log", "timestamp": ts, "message": "m"} for ts in stamps * 2]
    enc = encode_records(recs, "production", NOW)
    assert enc.lines["nightowl_logs"] == [reference_line(r, "production", NOW) for r in recs]
    assert [line.split("\t")[0] for line in enc.lines["nightowl_logs"]] == [
        records.format_time(ts) for ts in stamps * 2]


def test_nan_beside_a_lone_surrogate_does_not_raise():
    # json.loads (the fallback for lone surrogate escapes) takes NaN; orjson then refuses
    # the surrogate and the stdlib writer refused NaN: the worker retried the batch forever
    payload = b'[{"t":"log","timestamp":1714694500,"message":"m","y":"\\ud800","x":NaN,"z":[Infinity]}]'
    recs = records.decode_payload(payload)
    _, row = one_row(recs[0])
    assert orjson.loads(records.to_utf8(row["extra_fields"])) == {"x": None, "y": "\ufffd", "z": [None]}


def test_group_helpers_count_and_merge_occurrences():
    # one occurrence counter serves exception issues and slow records (issues.thresholds)
    from nightowl.records import aggregate
    g = aggregate.new_group("u1", 10.0, "a", "b", "d1")
    assert g == [1, {"u1"}, 10.0, 10.0, "a", "b", 10.0, "d1"]
    assert aggregate.new_group("", 10.0, "a", "b", "d1")[1] == set()
    assert aggregate.seen_again(g, "u2", 5.0) is False      # earlier: widens first only
    assert g[:4] == [2, {"u1", "u2"}, 5.0, 10.0] and g[6] == 10.0
    assert aggregate.seen_again(g, "", 10.0) is True        # a tie counts as the latest
    assert g[:4] == [3, {"u1", "u2"}, 5.0, 10.0]
    other = aggregate.copy_group(g)
    assert other == g and other[1] is not g[1]
    later = aggregate.new_group("u3", 20.0, "x", "y", "d2")
    assert aggregate.fold_group(other, later) is True
    assert other[:4] == [4, {"u1", "u2", "u3"}, 5.0, 20.0] and g[1] == {"u1", "u2"}
    assert aggregate.fold_group(later, aggregate.new_group("", 1.0, "p", "q", "d0")) is False
    assert later[:4] == [2, {"u3"}, 1.0, 20.0]
