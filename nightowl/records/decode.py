"""
Lenient decoding of one buffered payload: exact bytes -> its JSON value.

Invalid UTF-8 inside strings becomes U+FFFD and lone surrogate escapes are
accepted, so one bad character never costs the whole payload; bytes that are
not JSON at all raise ``ValueError("invalid-json")``.  Pure, no I/O.
"""

import json

import orjson


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
            try:
                return json.loads(text)
            except ValueError:
                pass
        raise ValueError("invalid-json")
