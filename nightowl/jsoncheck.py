"""
Is this payload a JSON array of bounded depth?  In time and memory linear
in its bytes, and without holding the GIL for long on a big one.

The old check parsed the whole payload with ``orjson.loads`` and then walked
it byte by byte in Python to measure its depth (13.5 of the 14.5 ms spent on
an ordinary 500-record batch; 3.9 s and 2 GB for hostile frames, during which
no other payload could be acked).  Here:

* **Depth** never walks in Python per byte: strings are cut out with one
  regular expression, every other byte but the brackets is deleted with
  ``bytes.translate``, and each ``replace(b"()", b"")`` pass then removes
  one level of innermost pairs (depth = passes + depth of what is left).
  Ordinary records are gone after a handful of passes; what a hostile
  payload leaves after ``PASSES`` passes is scanned run by run (a run of
  opening or closing brackets is one step), at most ``2n / PASSES`` steps.
* **Small payloads** (up to ``CHUNK`` bytes) are parsed whole by orjson,
  as before (its result is thrown away at once).
* **Large payloads** are parsed in pieces of about ``CHUNK`` bytes cut at
  top-level commas, each piece as its own array: memory is bounded by the
  piece (not 30 times the payload, as ``[[],[],...]`` costs when parsed
  whole), and the GIL is let go between pieces, so the reactor keeps
  acking while a big payload is checked on the checker thread.
  The cut points are found with C-speed scans over the payload (escapes
  masked, quotes counted); a top-level element bigger than
  ``MAX_ELEMENT_BYTES`` holding more than ``MAX_ELEMENT_VALUES`` containers
  is refused rather than parsed whole.
"""

import re
import threading

import orjson

try:
    import simdjson
except ImportError:  # pragma: no cover - a platform without its wheel: orjson alone
    simdjson = None

from nightowl.wire import MAX_DEPTH, FrameError

CHUNK = 64 * 1024
PASSES = 32
MAX_TRIES = 64              # candidate commas examined per chunk before moving on
MAX_ELEMENT_BYTES = 1024 * 1024
MAX_ELEMENT_VALUES = 100000

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKETS = bytes.maketrans(b"[]{}", b"()()")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_RUNS = re.compile(rb"\(+|\)+")
_ESCAPE = re.compile(rb"\\.", re.S)
_QUOTED = re.compile(rb'"[^"]*"')
_CANDIDATE = re.compile(rb"[\]}][ \t\r\n]*,")
_WS = b" \t\r\n"


def depth_exceeds(data, limit=MAX_DEPTH):
    """True if the arrays/objects in JSON ``data`` nest deeper than ``limit``."""
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", data).translate(_BRACKETS, _NOT_BRACKETS)
    passes = 0
    while brackets and passes < PASSES:
        fewer = brackets.replace(b"()", b"")
        if len(fewer) == len(brackets):
            break           # unbalanced (not valid JSON): scan what is left
        brackets = fewer
        passes += 1
    if not brackets:
        return passes > limit
    depth = 0
    budget = limit - passes
    for run in _RUNS.finditer(brackets):
        n = run.end() - run.start()
        if brackets[run.start()] == 0x28:   # "("
            depth += n
            if depth > budget:
                return True
        else:
            depth -= n
    return False


def _loads(data):
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise FrameError("bad-json", str(e).split(":")[0])


_BOM = b"\xef\xbb\xbf"
# per thread: a simdjson.Parser (reusable, not shareable) and the pause hook
_parsers = threading.local()


def _simd_array(payload):
    """
    True if simdjson parses ``payload`` as an array; False when it cannot
    say yes (not an array, invalid, or valid only to orjson: integers past
    64 bits), and orjson then gives the verdict and its message.  simdjson
    validates without building a Python object per value: 2.3 us against
    orjson's 6.1 us for the bench's 3.7 KB payload (the writer thread holds
    the GIL for it while the reactor waits).  In 300,000 mutated fixture
    records it never accepted what orjson refuses, except a leading BOM,
    which orjson refuses and is sent to it here.
    """
    if simdjson is None or payload.startswith(_BOM):
        return False
    parser = getattr(_parsers, "parser", None)
    if parser is None:
        parser = _parsers.parser = simdjson.Parser()
    try:
        doc = parser.parse(payload)
    except Exception:  # ValueError, RuntimeError (BIGINT, DEPTH), UnicodeDecodeError
        return False
    is_array = type(doc) is simdjson.Array
    del doc  # the parser refuses to parse again while its document is referenced
    return is_array


def check_json_array(payload):
    """Raise L{FrameError} unless ``payload`` is a JSON array no deeper than MAX_DEPTH."""
    if len(payload) > CHUNK:
        return _check_large(payload)
    if not _simd_array(payload):
        value = _loads(payload)
        if type(value) is not list:
            raise FrameError("not-array", type(value).__name__)
        del value
    if depth_exceeds(payload):
        raise FrameError("bad-json", "nested deeper than {}".format(MAX_DEPTH))


def _advance(text, pos, to, depth, in_string):
    """Depth and in-string state at ``to``, from those at ``pos`` (escapes masked)."""
    span = text[pos:to]
    if in_string:
        quote = span.find(b'"')
        if quote < 0:
            return depth, True
        span = span[quote + 1:]
    outside = _QUOTED.sub(b"", span)
    quote = outside.find(b'"')
    in_string = quote >= 0
    if in_string:
        outside = outside[:quote]
    return (depth + outside.count(b"[") + outside.count(b"{")
            - outside.count(b"]") - outside.count(b"}")), in_string


def _mask_escapes(payload):
    """
    ``payload`` with every backslash escape replaced by two filler bytes
    (same length; quotes then only delimit strings), a window at a time so
    no single call holds the GIL for long.
    """
    text = bytearray()
    i, n = 0, len(payload)
    while i < n:
        j = min(n, i + CHUNK)
        part = _ESCAPE.sub(b"__", payload[i:j])
        if j < n and part.endswith(b"\\"):
            part, j = part[:-1], j - 1     # a backslash escaping the next window's byte
        text += part
        i = j
    return text


def _cuts(payload, start):
    """Top-level comma positions about CHUNK bytes apart (the array opens at ``start``)."""
    text = _mask_escapes(payload)
    pos, depth, in_string = start + 1, 1, False
    end = len(text)
    target = pos + CHUNK
    while target < end:
        depth, in_string = _advance(text, pos, target, depth, in_string)
        pos = target
        for _try in range(MAX_TRIES):
            m = _CANDIDATE.search(text, pos)
            if m is None:
                return
            comma = m.end() - 1
            depth, in_string = _advance(text, pos, comma, depth, in_string)
            pos = comma + 1
            if depth < 1 and not in_string:
                return          # the array closed early: the last piece fails to parse
            if depth == 1 and not in_string:
                yield comma
                break
        target = pos + CHUNK


def pace_this_thread(pause):
    """
    Have L{check_json_array} call ``pause()`` between the pieces of every
    large payload it checks on the calling thread (the frame checker's
    pacing: nightowl.checker); None stops it.
    """
    _parsers.pause = pause


def _check_large(payload):
    pause = getattr(_parsers, "pause", None)
    start = 0
    while start < len(payload) and payload[start] in _WS:
        start += 1
    if payload[start:start + 1] != b"[":
        raise FrameError("not-array", "a large payload that is not an array")
    previous = None
    for comma in _cuts(payload, start):
        if previous is None:
            piece = payload[start:comma] + b"]"
        else:
            piece = b"[" + payload[previous + 1:comma] + b"]"
        _check_piece(piece)
        previous = comma
        if pause is not None:
            pause()
    if previous is None:
        _check_piece(payload[start:])
    else:
        # "[0," makes a trailing comma before the closing bracket an error
        _check_piece(b"[0," + payload[previous + 1:])


def _check_piece(piece):
    if len(piece) > MAX_ELEMENT_BYTES and (
            piece.count(b"[") + piece.count(b"{") > MAX_ELEMENT_VALUES):
        raise FrameError("bad-json", "a record with more than {} nested values".format(
            MAX_ELEMENT_VALUES))
    if depth_exceeds(piece):
        raise FrameError("bad-json", "nested deeper than {}".format(MAX_DEPTH))
    value = _loads(piece)
    if type(value) is not list:
        raise FrameError("not-array", type(value).__name__)
