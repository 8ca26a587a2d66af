"""
Routing a batch of decoded records: each record to its type's generated
encoder (one COPY line into its table), ``user`` records to the user
aggregate, anything else counted in ``skipped`` by reason (``not-object``,
``missing-t``, ``unknown-t:<type>``, ``user-without-id``).  Pure, no I/O.
"""

from nightowl.records.aggregate import Encoded, add_user
from nightowl.records.codegen import ENCODERS
from nightowl.records.copytext import escape
from nightowl.records.decode import decode_payload


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
    encoders = ENCODERS
    n = 0
    for rec in records:
        if type(rec) is not dict:
            skipped["not-object"] = skipped.get("not-object", 0) + 1
            continue
        t = rec.get("t")
        enc = encoders.get(t) if type(t) is str else None
        if enc is None:
            if t == "user":
                n += add_user(rec, now, out)
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
