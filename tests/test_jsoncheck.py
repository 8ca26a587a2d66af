"""
nightowl.jsoncheck (issue 14, item 3): the same verdicts as parsing whole
and walking in Python (the reference), on fixtures and generated payloads,
small and cut into pieces; linear and bounded on the hostile frames.
"""

import glob
import os
import random

import orjson
import pytest

from nightowl import jsoncheck, wire

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def reference(payload):
    """The previous check: parse whole, walk in Python; the reason or None."""
    try:
        value = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return "bad-json"
    if type(value) is not list:
        return "not-array"
    if wire.json_depth(payload) > wire.MAX_DEPTH:
        return "bad-json"
    return None


def verdict(payload):
    try:
        jsoncheck.check_json_array(payload)
    except wire.FrameError as e:
        return e.reason
    return None


def nested(depth, inner=b"1"):
    return b"[" * depth + inner + b"]" * depth


CASES = [
    b"[]", b"[1,2]", b" [1] ", b"[1,", b"[1,]", b"[,1]", b"{}", b'"x"', b"null",
    b'["[[[[", "\\"]]]"]', b'["\\\\"]', b'["\\\\\\"[["]', b"[1]x", b"[1] [2]",
    nested(512), nested(513), nested(511, b"{}"), nested(512, b"{}"),
    b"[" + b",".join([nested(500)] * 40) + b"]",
    b"[" + b",".join([nested(513)] * 3) + b"]",
    b'[{"a":' * 300 + b"1" + b"}]" * 300,
    b'[{"a":' * 257 + b"1" + b"}]" * 257,
    b"[" * 5000 + b"]" * 5000,
    b'["\xc3\x28"]', b"\xff\xfe[]",
    # where simdjson and orjson differ: simdjson refuses integers past 64
    # bits (orjson takes them) and takes a leading BOM (orjson refuses it)
    b"[123456789012345678901234567890]", b"[18446744073709551616]", b"[-9223372036854775809]",
    b"\xef\xbb\xbf[1]", b'["\\ud800"]', b'["\\ud800\\udc00"]', b'["\xed\xa0\x80"]',
    nested(1100), b"[1]\x00", b'["a\x00b"]', b"[1e999]", b"[1e-400]",
]


@pytest.fixture(params=["simdjson", "orjson only"])
def engines(request, monkeypatch):
    if request.param == "orjson only":
        monkeypatch.setattr(jsoncheck, "simdjson", None)
    return request.param


@pytest.mark.parametrize("payload", CASES)
def test_small_payloads_match_the_reference(payload, engines):
    assert verdict(payload) == reference(payload)


def test_simdjson_is_installed_and_decides_valid_arrays(monkeypatch):
    # the fast path is the one that runs: orjson is not asked about a valid array
    assert jsoncheck.simdjson is not None

    def refuse(_data):
        raise AssertionError("orjson was asked")
    monkeypatch.setattr(jsoncheck.orjson, "loads", refuse)
    with open(os.path.join(FIXTURES, "nightwatch", "request.jsonl"), "rb") as f:
        record = f.readline().strip()
    jsoncheck.check_json_array(b"[" + record + b"," + record + b"]")


def test_mutated_fixture_records_get_the_reference_verdict():
    # simdjson must never accept what orjson refuses: mutate real records
    rng = random.Random(14)
    records = []
    for path in sorted(glob.glob(os.path.join(FIXTURES, "nightwatch", "*.jsonl"))):
        with open(path, "rb") as f:
            records.extend(b"[" + line.strip() + b"]" for line in f if line.strip())
    alphabet = b'[]{}",:\\0123456789eE+-.tfnu \t\r\n\x00\x7f\x80\xbf\xc0\xed\xef\xf4\xff'
    for _ in range(20000):
        data = bytearray(rng.choice(records))
        for _edit in range(rng.randint(1, 3)):
            i = rng.randrange(len(data))
            if rng.random() < 0.5:
                data[i] = rng.choice(alphabet)
            else:
                data.insert(i, rng.choice(alphabet))
        data = bytes(data)
        assert verdict(data) == reference(data), data[:200]


def random_json(rng, depth=0):
    kind = rng.random()
    if depth > 6 or kind < 0.3:
        return rng.choice([1, -2.5, "s", 'q"u[o]t{e}\\', None, True, "\u00e9\u4e2d"])
    if kind < 0.65:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    return {"k%d]" % i: random_json(rng, depth + 1) for i in range(rng.randint(0, 5))}


def mutate(rng, data):
    i = rng.randrange(len(data))
    return data[:i] + rng.choice([b"", b",", b"]", b"[", b'"', b"\\", b"}"]) + data[i + 1:]


@pytest.fixture
def small_chunks(monkeypatch):
    # cut pieces every ~64 bytes so small payloads go through the large path
    monkeypatch.setattr(jsoncheck, "CHUNK", 64)


def test_cut_into_pieces_the_verdicts_match(small_chunks):
    rng = random.Random(14)
    checked = 0
    for n in range(600):
        value = [random_json(rng) for _ in range(rng.randint(1, 30))]
        data = orjson.dumps(value)
        if n % 2:
            data = mutate(rng, data)
        if n % 7 == 0:
            data = data.replace(b",", b" ,\n ")
        if len(data) <= jsoncheck.CHUNK:
            continue
        checked += 1
        assert verdict(data) == reference(data), data
    assert checked > 300
    for payload in CASES:
        if len(payload) > 64:
            assert verdict(payload) == reference(payload)


def test_trailing_commas_and_empty_pieces_are_refused_in_pieces(small_chunks):
    body = b",".join([b'{"a":[1,2,3]}'] * 40)
    assert verdict(b"[" + body + b"]") is None
    assert verdict(b"[" + body + b",]") == "bad-json"
    assert verdict(b"[" + body + b",," + body + b"]") == "bad-json"
    assert verdict(b"[" + body + b"]," + body) == "bad-json"
    assert verdict(b"{" + body + b"}") == "not-array"


def test_the_fixtures_pass():
    paths = glob.glob(os.path.join(FIXTURES, "*.jsonl"))
    assert paths
    lines = [line for p in paths for line in open(p, "rb").read().splitlines() if line.strip()]
    batch = b"[" + b",".join(lines) + b"]"
    assert verdict(batch) is None
    big = b"[" + b",".join(lines * (3 * jsoncheck.CHUNK // len(batch) + 1)) + b"]"
    assert len(big) > 2 * jsoncheck.CHUNK and verdict(big) is None


def test_hostile_frames_are_checked_in_bounded_pieces(monkeypatch):
    pieces = []
    real = jsoncheck._check_piece
    monkeypatch.setattr(jsoncheck, "_check_piece",
                        lambda piece: pieces.append(len(piece)) or real(piece))
    flat = b"[" + b",".join([b"[]"] * 3300000) + b"]"   # the 9.9 MB frame
    assert verdict(flat) is None
    assert len(pieces) > 30 and max(pieces) < 2 * jsoncheck.CHUNK
    pieces.clear()
    one_record = b"[[" + b",".join([b"[]"] * 1000000) + b"]]"
    assert verdict(one_record) == "bad-json"
    assert pieces == [len(one_record)]  # refused by its container count, not parsed
