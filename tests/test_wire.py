import gzip
import json

import pytest
from hypothesis import given, settings, strategies as st

from nightowl import wire
from nightowl.wire import FrameError, FrameParser


def parse_all(data, max_bytes=1 << 20, step=None):
    parser = FrameParser(max_bytes)
    if step is None:
        return parser.feed(data)
    frame = None
    for i in range(0, len(data), step):
        frame = parser.feed(data[i:i + step])
        if frame is not None:
            return frame
    return frame


def test_token_hash_matches_php_xxh128_of_empty_string():
    # PHP: substr(hash('xxh128', ''), 0, 7)
    assert wire.token_hash("") == b"99aa06d"
    assert len(wire.token_hash("secret")) == 7


def test_encode_frame_length_counts_bytes_after_first_colon():
    frame = wire.encode_frame(b"[]", token="")
    assert frame == b"13:v1:99aa06d:[]"
    frame = wire.encode_frame("[\"\u00e9\"]", token="")
    head, body = frame.split(b":", 1)
    assert int(head) == len(body)


@pytest.mark.parametrize("step", [None, 1, 2, 3, 7, 64])
def test_parses_in_any_segmentation(step):
    payload = b'[{"t":"request","url":"https:\\/\\/x"}]'
    frame = parse_all(wire.encode_frame(payload, token="tok"), step=step)
    assert frame.version == b"v1"
    assert frame.token_hash == wire.token_hash("tok")
    assert frame.payload == payload


def test_bytes_after_the_frame_are_ignored():
    frame = parse_all(wire.encode_frame(b"[1]") + b"garbage:more")
    assert frame.payload == b"[1]"


def test_incomplete_frame_returns_none():
    parser = FrameParser(100)
    assert parser.feed(b"20:v1:abc") is None
    assert parser.buffered == 6


@pytest.mark.parametrize("data,reason", [
    (b"abc:v1:x:[]", "bad-length"),
    (b"-5:v1:x:[]", "bad-length"),
    (b" 5:v1:x:[]", "bad-length"),
    (b"0:", "bad-length"),
    (b":v1:x:[]", "bad-length"),
    (b"1234567890123", "bad-length"),
    (b"99999999:", "too-large"),
    (b"5:v1xyz", "bad-frame"),
    (b"8:v1:abcde", "bad-frame"),
    (b"9:v2:abc:[]", "bad-version"),
])
def test_malformed_frames(data, reason):
    for step in (None, 1):
        with pytest.raises(FrameError) as e:
            parse_all(data, max_bytes=1000, step=step)
        assert e.value.reason == reason


def decode(payload, expected=None, cap=1 << 20, token=""):
    frame = parse_all(wire.encode_frame(payload, token=token))
    return wire.decode_payload(frame, expected, cap)


def test_ping_skips_token_check():
    assert decode(b"PING", expected=wire.token_hash("right"), token="wrong") is wire.PING


def test_token_enforced_when_configured():
    expected = wire.token_hash("right")
    assert decode(b"[]", expected=expected, token="right") == b"[]"
    with pytest.raises(FrameError) as e:
        decode(b"[]", expected=expected, token="wrong")
    assert e.value.reason == "bad-token"


def test_any_token_when_none_configured():
    assert decode(b"[1]", expected=None, token="whatever") == b"[1]"


@pytest.mark.parametrize("payload,reason", [
    (b"[1,", "bad-json"),
    (b"\xff\xfe[]", "bad-json"),
    (b'["\xc3\x28"]', "bad-json"),
    (b"[" * 5000 + b"]" * 5000, "bad-json"),
    (b'{"t":"request"}', "not-array"),
    (b'"text"', "not-array"),
    (b"null", "not-array"),
])
def test_payload_must_be_a_json_array(payload, reason):
    with pytest.raises(FrameError) as e:
        decode(payload)
    assert e.value.reason == reason


def test_nesting_limit_ignores_brackets_in_strings():
    wide = b'[{"message":"' + b"[" * 2000 + b'"}]'
    assert decode(wide) == wide
    assert wire.json_depth(b'[[1],{"a":[2]}]') == 3


def test_payload_kept_byte_for_byte():
    payload = b'[ {"t" : "log", "message":"caf\\u00e9 \\/x"} ]'
    assert decode(payload) == payload


def test_gzip_inflated_and_stored_decompressed():
    raw = json.dumps([{"t": "request", "n": i} for i in range(100)]).encode()
    assert decode(gzip.compress(raw)) == raw


def test_gzip_ping():
    assert decode(gzip.compress(b"PING")) is wire.PING


def test_gzip_bomb_capped():
    bomb = gzip.compress(b"[" + b" " * (5 << 20) + b"]")
    with pytest.raises(FrameError) as e:
        decode(bomb, cap=1 << 20)
    assert e.value.reason == "inflated-too-large"


@pytest.mark.parametrize("blob", [b"\x1f\x8bgarbage", gzip.compress(b"[1,2,3]", mtime=0)[:-6]],
                         ids=["garbage", "truncated"])
def test_bad_gzip(blob):
    with pytest.raises(FrameError) as e:
        decode(blob)
    assert e.value.reason == "bad-gzip"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=1, max_value=17))
def test_arbitrary_bytes_never_crash_the_parser(data, step):
    parser = FrameParser(1000)
    try:
        for i in range(0, len(data), step):
            frame = parser.feed(data[i:i + step])
            if frame is not None:
                try:
                    wire.decode_payload(frame, None, 10000)
                except FrameError:
                    pass
                break
    except FrameError as e:
        assert e.reason in wire.REASONS


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.text(max_size=5), st.text(max_size=20), max_size=4),
                max_size=5),
       st.integers(min_value=1, max_value=50))
def test_any_valid_array_round_trips(records, step):
    payload = json.dumps(records).encode()
    frame = parse_all(wire.encode_frame(payload), step=step)
    assert wire.decode_payload(frame, None, 1 << 20) == payload
