"""
SDK records -> PostgreSQL COPY text: the drain's pure, I/O-free encoding.

The package's parts, one job each: ``tables`` (which record type goes to
which table and column: ``TABLES``, ``COLUMNS``, ``copy_sql``), ``coerce``
(what is stored for a value of each column type), ``copytext`` (COPY
escaping, UTF-8 and jsonb hygiene), ``decode`` (lenient payload decoding),
``eventtime`` (the time a record is stored under), ``aggregate`` (issue and
user aggregation, the ``Encoded`` result), ``codegen`` (the per-type
encoders generated from ``TABLES``) and ``encode`` (routing a batch of
records to them).  This module re-exports the names the drain, the
benchmarks, issues and rollups use.
"""

from nightowl.records.aggregate import Encoded, fingerprint
from nightowl.records.codegen import encoder_source
from nightowl.records.coerce import (
    INT64_MAX, INT64_MIN, c_bool, c_count, c_float, c_int, c_json, c_json_string, c_text,
    c_text_notnull, c_uuid, to_int)
from nightowl.records.copytext import NULL, clean, escape, to_utf8
from nightowl.records.decode import decode_payload
from nightowl.records.encode import encode_payloads, encode_records
from nightowl.records.eventtime import FUTURE_LIMIT, PAST_LIMIT, event_time, format_time
from nightowl.records.tables import COLUMNS, PREFIX, PREFIX_KEYS, RAW_TABLES, TABLES, copy_sql

__all__ = [
    "COLUMNS", "Encoded", "FUTURE_LIMIT", "INT64_MAX", "INT64_MIN", "NULL", "PAST_LIMIT",
    "PREFIX", "PREFIX_KEYS", "RAW_TABLES", "TABLES", "c_bool", "c_count", "c_float", "c_int",
    "c_json", "c_json_string", "c_text", "c_text_notnull", "c_uuid", "clean", "copy_sql",
    "decode_payload", "encode_payloads", "encode_records", "encoder_source", "escape",
    "event_time", "fingerprint", "format_time", "to_int", "to_utf8",
]
