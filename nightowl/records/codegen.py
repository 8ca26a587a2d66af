"""
Per-type COPY line encoders, generated from ``TABLES`` at import: the drain's
hot path.

One function per record type builds the whole COPY line with f-strings:
each field is fetched with a direct ``rec.get`` and takes an inline fast path
for its common case (a str, an int within bigint, a bool, a uuid already seen
valid, a trivial JSON string); anything else goes through the field's
coercion function (nightowl.records.coerce), which stays the definition of
the stored value.  ``encoder_source(t)`` shows the generated code.

Text fields: the fast path doubles backslashes only; whether any raw text
value holds a tab, newline, CR or NUL is asked once per record, of all text
fields concatenated (coercion output never holds one: it is escaped).  When
one does, every text field is made again by its coercion function.
"""

from nightowl.records.aggregate import add_issue, fingerprint
from nightowl.records.coerce import (
    c_bool, c_count, c_float, c_int, c_json_string, c_text, c_text_notnull, c_uuid)
from nightowl.records.copytext import NULL, dumps, escape
from nightowl.records.eventtime import (
    FUTURE_LIMIT, PAST_LIMIT, created_text, event_time, format_time, sec_text)
from nightowl.records.tables import INT, PREFIX_KEYS, TABLES, TEXT, UUID

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


def _extra(rec, known):
    return escape(dumps({k: rec[k] for k in sorted(rec.keys() - known)}))


def _encoder_source(t):
    """(source of ``encode(rec, env, now, issues) -> line``, its namespace) for type ``t``."""
    table, spec = TABLES[t]
    ns = {"NULL": NULL, "PAST_LIMIT": PAST_LIMIT, "FUTURE_LIMIT": FUTURE_LIMIT,
          "event_time": event_time, "format_time": format_time, "c_float": c_float,
          "c_text": c_text, "escape": escape, "_uuid": _uuid, "_uuids_seen": _uuids_seen,
          "_JSON_TRIVIAL": _JSON_TRIVIAL, "sec_text": sec_text, "created_text": created_text,
          "_extra": _extra, "fingerprint_of": fingerprint, "add_issue": add_issue, "record_type": t,
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
        "    created = sec_text.get(sec)",
        "    if created is not None and len(frac) <= 6: created = f'{created}{frac:0<6}+00'",
        "    else: created = created_text(raw, stamp)",
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
        body.extend(["fp = fingerprint_of(rec)",
                     "add_issue(issues, fp, rec, ts, user)",
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
ENCODERS = _make_encoders()
