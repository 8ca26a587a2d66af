"""
Coercion of one JSON value to the COPY field text of its column type.

Owns what is stored for each column type: ``c_text``, ``c_text_notnull``,
``c_int``, ``c_count`` (counters: unusable -> 0), ``c_float``, ``c_bool``,
``c_uuid``, ``c_json_string`` (a JSON document carried in a string) and
``c_json``.  Coercion never raises: a missing key, a JSON ``null`` or a value
of the wrong type becomes the column's default or NULL; an integer outside
the bigint range becomes NULL; a JSON-in-a-string that is not valid JSON is
stored as a jsonb *string* so nothing is lost.  The generated encoders
(nightowl.records.codegen) inline the common cases of these and fall back
to them for the rest: these stay the definition of the stored value.
"""

import math
import re

import orjson

from nightowl.records.copytext import NULL, dumps, escape

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
    return escape(dumps(v))


def c_text_notnull(v):
    """Text where NULL would be meaningless: a missing value is ''."""
    if v is None:
        return ""
    return c_text(v)


def to_int(v):
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
    v = to_int(v)
    return NULL if v is None else str(v)


def c_count(v):
    """Counters: missing or unusable -> 0 (PHP v1 behaviour)."""
    if type(v) is int and INT64_MIN <= v <= INT64_MAX:
        return str(v)
    v = to_int(v)
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
            return escape(dumps(v))
        if "\\u0000" in v or "\x00" in v:
            return escape(dumps(doc))
        return escape(v)
    if v is None:
        return NULL
    return escape(dumps(v))


def c_json(v):
    """A native JSON value (route_methods): stored as jsonb; missing -> NULL."""
    if v is None:
        return NULL
    return escape(dumps(v))
