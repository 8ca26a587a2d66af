"""
Hostile frames and their reference judge: a hand-written list of malformed,
oversized, mis-versioned, wrongly-tokened and gzip-bomb frames, a seeded (or
hypothesis-driven) generator of more, ``reference(frame)`` saying what the
agent must answer to each, and ``judge_hostile`` naming what it did answer.
"""

import gzip
import json

from nightowl.bench import payloads
from nightowl.bench.agent import ERROR, OK


# -- hostile frames ----------------------------------------------------------

TOKEN = "faults-token"


def _bomb(inflated=300 * 1024 * 1024):
    """A gzip stream of zeros that inflates to ``inflated`` bytes (~300 kB on the wire)."""
    import zlib
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * (1 << 20)
    parts = [c.compress(block) for _ in range(inflated >> 20)]
    parts.append(c.flush())
    return b"".join(parts)


_BOMB = None


def bomb():
    global _BOMB
    if _BOMB is None:
        _BOMB = _bomb()
    return _BOMB


def body(version, hash_, payload):
    return version + b":" + hash_ + b":" + payload


def with_len(b):
    return str(len(b)).encode() + b":" + b


def hand_list(token=TOKEN):
    """
    ``[(label, bytes, incomplete)]``: refusals every agent must survive.
    ``incomplete`` frames never complete: the agent must close them at the
    frame timeout (we do not half-close those).
    """
    h = payloads.token_hash(token)
    good = b'[{"t":"log","message":"hostile"}]'
    nested = b"[" * 100000 + b"]" * 100000
    nested_obj = b'{"a":' * 600 + b"1" + b"}" * 600
    gz_ok_but_object = gzip.compress(b'{"not":"an array"}')
    items = [
        ("huge-length", b"99999999999:" + body(b"v1", h, good), False),
        ("13-digit-length", b"1234567890123:" + body(b"v1", h, good), False),
        ("negative-length", b"-35:" + body(b"v1", h, good), False),
        ("non-digit-length", b"3a:" + body(b"v1", h, good), False),
        ("empty-length", b":" + body(b"v1", h, good), False),
        ("zero-length", b"0:" + body(b"v1", h, good), False),
        ("space-in-length", b" 35:" + body(b"v1", h, good), False),
        ("plus-length", b"+35:" + body(b"v1", h, good), False),
        ("no-colons", b"hello world this is not a frame", False),
        ("no-colon-after-version", with_len(b"v1" + h + good), False),
        ("no-colon-after-hash", with_len(b"v1:" + h + good), False),
        ("wrong-version", with_len(body(b"v2", h, good)), False),
        ("empty-version", with_len(body(b"", h, good)), False),
        ("wrong-token", with_len(body(b"v1", b"0000000", good)), False),
        ("empty-token", with_len(body(b"v1", b"", good)), False),
        ("gzip-bomb", with_len(body(b"v1", h, bomb())), False),
        ("gzip-garbage", with_len(body(b"v1", h, b"\x1f\x8b" + b"\x08garbage" * 20)), False),
        ("gzip-truncated", with_len(body(b"v1", h, gzip.compress(good * 50)[:-20])), False),
        ("gzip-object", with_len(body(b"v1", h, gz_ok_but_object)), False),
        ("invalid-utf8", with_len(body(b"v1", h, b'[{"t":"log","message":"\xff\xfe\xc3"}]')), False),
        ("lone-surrogate", with_len(body(b"v1", h, b'[{"m":"\\ud800"}]')), False),
        ("deep-arrays", with_len(body(b"v1", h, nested)), False),
        ("deep-objects-in-array", with_len(body(b"v1", h, b"[" + nested_obj + b"]")), False),
        ("json-object", with_len(body(b"v1", h, b'{"t":"log"}')), False),
        ("json-string", with_len(body(b"v1", h, b'"[]"')), False),
        ("json-null", with_len(body(b"v1", h, b"null")), False),
        ("json-nan", with_len(body(b"v1", h, b"[NaN]")), False),
        ("truncated-json", with_len(body(b"v1", h, good[:-3])), False),
        ("empty-payload", with_len(body(b"v1", h, b"")), False),
        ("nul-bytes", with_len(body(b"v1", h, b"\0" * 64)), False),
        ("too-large-declared", b"10485761:" + body(b"v1", h, good), False),
        ("big-wrong-token", with_len(body(b"v1", b"fffffff", b"[" + b'"x",' * 500000 + b'"x"]')),
         False),
        ("declared-longer-than-sent", b"500:" + body(b"v1", h, good), True),
        ("prefix-only", b"12345", True),
        ("nothing-sent", b"", True),
    ]
    return items


class RandomChooser:
    def __init__(self, rng):
        self.rng = rng

    def pick(self, seq):
        return self.rng.choice(seq)

    def bytes(self, max_size):
        return self.rng.randbytes(self.rng.randint(0, max_size))

    def int(self, lo, hi):
        return self.rng.randint(lo, hi)


def generate(chooser, token=TOKEN):
    """
    One generated hostile frame: an SDK frame with one or more parts spoiled.
    ``chooser`` has ``pick(seq)``, ``bytes(max_size)`` and ``int(lo, hi)``
    (a seeded random source here, hypothesis in the tests).
    """
    h = payloads.token_hash(token)
    version = chooser.pick([b"v1", b"v1", b"v1", b"v2", b"V1", b"", b"v1 ", b"\xffv1"])
    hash_ = chooser.pick([h, h, h, b"0000000", b"", h + b"0", h[:6], chooser.bytes(9)])
    payload = chooser.pick([
        b'[{"t":"log","message":"ok"}]',
        b'{"t":"log"}', b"1", b'"s"', b"null", b"true", b"[", b"]", b"[1,", b"[]]x",
        b'["\xff"]', b'["\xed\xa0\x80"]', b"[NaN]", b"[Infinity]",
        b"[" * 513 + b"]" * 513, b"[" * chooser.int(0, 2000),
        b"\x1f\x8b" + chooser.bytes(40), gzip.compress(b'{"a":1}'),
        gzip.compress(b"[1,2,3]")[:-chooser.int(1, 10)], b"PING" + chooser.bytes(3),
        chooser.bytes(200),
    ])
    b = version + b":" + hash_ + b":" + payload
    prefix = chooser.pick([
        str(len(b)).encode(), str(len(b)).encode(), str(len(b) + chooser.int(1, 50)).encode(),
        str(max(1, len(b) - chooser.int(1, 10))).encode(), b"-" + str(len(b)).encode(),
        b"", b"0", b"x" + str(len(b)).encode(), b"9" * chooser.int(11, 20),
        chooser.bytes(6)])
    frame = prefix + chooser.pick([b":", b":", b":", b"", b"::"]) + b
    frame += chooser.pick([b"", b"", b"trailing junk", chooser.bytes(20)])
    return frame


def hypothesis_frames(n, token=TOKEN):
    """
    ``n`` hostile frames drawn by hypothesis through L{generate} (filtered by
    L{reference} to the invalid ones), or None when hypothesis is missing.
    """
    try:
        from hypothesis import HealthCheck, Phase, assume, given, settings
        from hypothesis import strategies as st
    except ImportError:
        return None
    out = []

    class Chooser:
        def __init__(self, data):
            self.data = data

        def pick(self, seq):
            return self.data.draw(st.sampled_from(seq))

        def bytes(self, max_size):
            return self.data.draw(st.binary(max_size=max_size))

        def int(self, lo, hi):
            return self.data.draw(st.integers(lo, hi))

    @settings(max_examples=n, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(st.data())
    def collect(data):
        frame = generate(Chooser(data), token)
        assume(reference(frame, token) != "valid")
        out.append(frame)

    collect()
    return out


def reference(frame, token=TOKEN, max_frame_bytes=10 * 1024 * 1024, max_depth=512):
    """
    An independent reading of the SDK grammar: ``valid``, ``incomplete`` or
    ``invalid``.  Generated frames the reference calls valid are not sent as
    hostile (they would rightly be acked).  Conservative: anything stdlib
    json accepts (NaN, lone surrogates) counts as valid here.
    """
    colon = frame.find(b":")
    if colon < 0:
        return "incomplete" if frame.isdigit() and len(frame) <= 12 or not frame else "invalid"
    prefix = frame[:colon]
    if not prefix.isdigit() or not prefix.isascii() or int(prefix) == 0:
        return "invalid"
    n = int(prefix)
    if n > max_frame_bytes:
        return "invalid"
    rest = frame[colon + 1:]
    if len(rest) < n:
        return "incomplete"
    parts = rest[:n].split(b":", 2)
    if len(parts) < 3 or parts[0] != b"v1":
        return "invalid"
    payload = parts[2]
    if payload[:2] == b"\x1f\x8b":
        try:
            payload = gzip.decompress(payload)
        except Exception:
            return "invalid"
    if payload == b"PING":
        return "valid"
    if parts[1] != payloads.token_hash(token):
        return "invalid"
    depth = deepest = 0
    for ch in payload:
        if ch in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in b"]}":
            depth -= 1
    if deepest > max_depth:
        return "invalid"  # (strings with brackets only make this stricter: we'd skip)
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError):
        return "invalid"
    return "valid" if isinstance(value, list) else "invalid"


def judge_hostile(reply, how):
    """A hostile frame's outcome: 'error', 'closed', or a violation name."""
    if how == "hang":
        return "hang"
    if reply == ERROR:
        return "error"
    if reply == b"" and how in ("closed", "reset"):
        return "closed"
    if reply == b"" and how == "connect-failed":
        return "connect-failed"
    if reply.startswith(OK):
        return "acked"
    return "garbage-reply"
