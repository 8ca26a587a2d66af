"""
The laravel/nightwatch SDK's wire format, as pure functions (no I/O).

One frame per TCP connection::

    <len> ":" <version> ":" <tokenHash> ":" <payload>

``len`` is the ASCII decimal byte count of everything after the first colon.
Nothing terminates the frame; bytes after it are ignored.  ``payload`` is the
literal ``PING``, a JSON array, or (accepted, never sent by the official SDK)
a gzip stream of either.
"""

import hmac
import zlib

import xxhash

OK = b"2:OK"
ERROR = b"5:ERROR"
PING = b"PING"
VERSION = b"v1"
GZIP_MAGIC = b"\x1f\x8b"

# JSON nesting deeper than this is refused (the PHP agent's limit; no SDK
# record comes close).
MAX_DEPTH = 512

# The longest length prefix we read before deciding it is garbage: enough
# digits for any frame we could accept, and then some.
MAX_PREFIX_DIGITS = 12


class FrameError(Exception):
    """
    A frame we refuse.  ``reason`` is a short stable key used for counters
    and logs (never the payload).
    """

    def __init__(self, reason, detail=""):
        Exception.__init__(self, reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self):
        return "{}{}".format(self.reason, ": " + self.detail if self.detail else "")


# Every reason a frame can be refused for; used to pre-create counters.
REASONS = (
    "bad-length",        # prefix not digits, empty, or zero
    "too-large",         # declared or received length over --max-frame-bytes
    "bad-frame",         # missing colons inside the body
    "bad-version",       # version other than v1
    "bad-token",         # token hash does not match the configured token
    "bad-gzip",          # gzip stream corrupt or truncated
    "inflated-too-large",  # gzip inflates past --max-inflated-bytes
    "bad-json",          # payload is not valid JSON (or not UTF-8)
    "not-array",         # valid JSON, but not an array
    "back-pressure",     # buffer has too much pending / writer queue full
    "memory",            # too many bytes held by connections in flight
    "buffer-error",      # the buffer could not commit the payload
    "timeout",           # incomplete frame at --frame-timeout (closed, no reply)
)


def token_hash(token):
    """
    The SDK's token hash: the first 7 lowercase hex characters of
    XXH3-128 of the token (``hash('xxh128', $token)`` in PHP).
    """
    if isinstance(token, str):
        token = token.encode("utf-8")
    return xxhash.xxh3_128_hexdigest(token)[:7].encode("ascii")


def encode_frame(payload, token=None, version=VERSION):
    """Build a frame exactly as the SDK does (used by tests, ping and send)."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    body = version + b":" + token_hash(token or "") + b":" + payload
    return str(len(body)).encode("ascii") + b":" + body


class Frame:
    __slots__ = ("version", "token_hash", "payload")

    def __init__(self, version, token_hash, payload):
        self.version = version
        self.token_hash = token_hash
        self.payload = payload


def split_body(body):
    """
    Split ``v1:<hash>:<payload>`` into a L{Frame}.  Raise L{FrameError} for
    missing colons or an unsupported version.
    """
    first = body.find(b":")
    if first < 0:
        raise FrameError("bad-frame", "no colon after version")
    second = body.find(b":", first + 1)
    if second < 0:
        raise FrameError("bad-frame", "no colon after token hash")
    version = body[:first]
    if version != VERSION:
        raise FrameError("bad-version", repr(version[:16]))
    return Frame(version, body[first + 1:second], body[second + 1:])


def frame_decided(data):
    """
    True when a fresh L{FrameParser} fed ``data`` would return a frame or
    raise, never wait for more (the ingest port serves such a connection
    without the reactor).  The same prefix rules as the parser; where this
    says False the parser may still decide, which only costs the reactor.
    """
    colon = data.find(b":")
    if colon < 0:
        return len(data) > MAX_PREFIX_DIGITS or not data.isdigit()
    prefix = data[:colon]
    if not prefix.isdigit():
        return True
    return len(data) - colon - 1 >= int(prefix)


class FrameParser:
    """
    Incremental frame parser: feed it bytes in any segmentation, it returns
    a L{Frame} once complete and raises L{FrameError} as soon as the input
    cannot become a valid frame.  Chunks are kept in a list and joined once,
    so a large frame arriving in many small reads is not copied repeatedly.
    """

    __slots__ = ("max_frame_bytes", "_prefix", "_length", "_chunks", "_have", "done")

    def __init__(self, max_frame_bytes):
        self.max_frame_bytes = max_frame_bytes
        self._prefix = b""
        self._length = None
        self._chunks = []
        self._have = 0
        self.done = False

    @property
    def declared(self):
        """The frame's declared length once its prefix is read, else None."""
        return self._length

    @property
    def buffered(self):
        """Bytes held so far (for the in-flight memory cap)."""
        return len(self._prefix) + self._have

    def _parse_prefix(self, prefix):
        if not prefix or not prefix.isdigit():
            raise FrameError("bad-length", "length prefix is not digits")
        length = int(prefix)
        if length == 0:
            raise FrameError("bad-length", "zero length")
        if length > self.max_frame_bytes:
            raise FrameError("too-large", "declared {} bytes".format(length))
        return length

    def feed(self, data):
        if self.done:
            return None
        if self._length is None:
            colon = data.find(b":")
            if colon < 0:
                self._prefix += data
                if len(self._prefix) > MAX_PREFIX_DIGITS or not (
                        self._prefix.isdigit() or not self._prefix):
                    raise FrameError("bad-length", "length prefix is not digits")
                return None
            prefix = self._prefix + data[:colon] if self._prefix else data[:colon]
            self._prefix = b""
            self._length = self._parse_prefix(prefix)
            rest = data[colon + 1:]
            if len(rest) >= self._length:
                # The common case: the whole frame arrived in one read.
                self.done = True
                return split_body(rest[:self._length])
            data = rest
        if data:
            self._chunks.append(data)
            self._have += len(data)
        if self._have >= self._length:
            self.done = True
            body = b"".join(self._chunks)
            self._chunks = []
            return split_body(body[:self._length] if len(body) > self._length else body)
        return None


def inflate(payload, max_inflated_bytes):
    """
    Gunzip ``payload`` incrementally; refuse output over the cap (a gzip
    bomb) and corrupt or truncated streams.
    """
    inflater = zlib.decompressobj(wbits=31)
    out = []
    total = 0
    step = 1 << 20
    data = payload
    try:
        while True:
            chunk = inflater.decompress(data, step)
            total += len(chunk)
            if total > max_inflated_bytes:
                raise FrameError("inflated-too-large",
                                 "over {} bytes".format(max_inflated_bytes))
            out.append(chunk)
            data = inflater.unconsumed_tail
            if not data:
                break
        tail = inflater.flush()
        total += len(tail)
        if total > max_inflated_bytes:
            raise FrameError("inflated-too-large", "over {} bytes".format(max_inflated_bytes))
        out.append(tail)
    except zlib.error as e:
        raise FrameError("bad-gzip", str(e))
    if not inflater.eof:
        raise FrameError("bad-gzip", "truncated stream")
    return b"".join(out)


def check_token(frame_hash, expected):
    """True if ``expected`` is None (no token enforced) or the hashes match."""
    if expected is None:
        return True
    return hmac.compare_digest(frame_hash, expected)


def open_frame(frame, expected_hash, max_inflated_bytes):
    """
    Open a complete frame's payload: inflate it if gzipped; ``PING`` for a
    ping (which skips the token check, as the SDK's health check expects);
    otherwise check the token and return the payload bytes exactly as
    received (inflated).  The JSON itself is checked by
    L{check_json_array}, which the buffer's writer thread runs so that the
    reactor thread does not pay for parsing.
    """
    payload = frame.payload
    if payload[:2] == GZIP_MAGIC:
        payload = inflate(payload, max_inflated_bytes)
    if payload == PING:
        return PING
    if not check_token(frame.token_hash, expected_hash):
        raise FrameError("bad-token")
    return payload


def check_json_array(payload):
    """
    Raise L{FrameError} unless ``payload`` is a JSON array (and not absurdly
    deep): L{nightowl.jsoncheck.check_json_array}, linear in time and bounded
    in memory (a big payload is parsed in pieces).
    """
    from nightowl.jsoncheck import check_json_array as check
    check(payload)


def decode_payload(frame, expected_hash, max_inflated_bytes):
    """L{open_frame} and L{check_json_array} together: ``PING`` or the payload bytes."""
    payload = open_frame(frame, expected_hash, max_inflated_bytes)
    if payload is not PING:
        check_json_array(payload)
    return payload


def json_depth(data):
    """
    The deepest nesting of arrays/objects in valid JSON ``data``, ignoring
    brackets inside strings.  A per-byte Python loop kept as the reference
    for tests; validation uses L{nightowl.jsoncheck.depth_exceeds}.
    """
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte == 0x5B or byte == 0x7B:
            depth += 1
            if depth > deepest:
                deepest = depth
        elif byte == 0x5D or byte == 0x7D:
            depth -= 1
    return deepest
