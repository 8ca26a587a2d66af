"""
The benchmark tools: exact SDK frames, realistic payloads, and the C load
generator against real sockets (the bare server, and a recording server that
refuses some frames so the acked-file oracle can be checked).  No timing
assertions: benchmarks are scripts, not tests.
"""

import json
import os
import random
import socket
import subprocess
import sys
import threading

import pytest
import xxhash

from nightowl.bench import loadgen, payloads


# -- frames and payloads ---------------------------------------------------

def test_frame_length_counts_bytes_after_the_first_colon():
    assert payloads.frame(b"[]") == b"13:v1:99aa06d:[]"
    assert payloads.frame(b"abc123") == b"17:v1:99aa06d:abc123"
    body = '[{"t":"log","message":"caf\u00e9 \u2603"}]'.encode("utf-8")
    framed = payloads.frame(body)
    prefix, rest = framed.split(b":", 1)
    assert int(prefix) == len(rest)
    assert rest.endswith(body)


def test_token_hash_is_the_first_seven_hex_of_xxh3_128():
    assert xxhash.xxh3_128_hexdigest(b"").startswith("99aa06d")
    assert payloads.token_hash(None) == b"99aa06d"
    assert payloads.token_hash("") == b"99aa06d"
    expected = xxhash.xxh3_128_hexdigest(b"secret-token")[:7].encode()
    assert payloads.frame(b"[]", token="secret-token") == b"13:v1:" + expected + b":[]"


def test_realistic_payload_is_five_sdk_encoded_records_of_about_3_7_kb():
    body = payloads.realistic_payload()
    records = json.loads(body)
    assert isinstance(records, list)
    assert sorted(r["t"] for r in records) == ["cache-event", "log", "query", "query", "request"]
    assert 3400 <= len(body) <= 4000
    # PHP's json_encode without JSON_UNESCAPED_SLASHES: every '/' is escaped.
    assert b"\\/" in body
    assert body.count(b"/") == body.count(b"\\/")


def test_fixture_mix_draws_five_to_seven_records_from_every_type():
    mix = payloads.fixture_mix(60, random.Random(7))
    seen = set()
    for body in mix:
        records = json.loads(body)
        assert 5 <= len(records) <= 7
        seen.update(r["t"] for r in records)
    assert seen == set(payloads.records_by_type())


def test_payload_with_id_marks_every_record():
    records = json.loads(payloads.payload_with_id(42))
    assert {r["trace_id"] for r in records} == {"00000000-0000-4000-8000-000000000042"}
    assert payloads.id_of(records[0]["trace_id"]) == 42
    assert payloads.id_of("9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d") is None
    # The template's only 12-zero runs are the markers the generator replaces.
    template = payloads.payload_with_id(0)
    marks = sum(1 for r in json.loads(template)
                for key in ("trace_id", "execution_id") if key in r)
    assert template.count(b"000000000000") == marks


def test_builtin_records_stand_in_without_fixtures(monkeypatch):
    monkeypatch.setattr(payloads, "_cache", {})
    monkeypatch.setattr(payloads, "fixtures_dir", lambda: None)
    records = json.loads(payloads.realistic_payload())
    assert sorted(r["t"] for r in records) == ["cache-event", "log", "query", "query", "request"]
    assert len(payloads.fixture_mix(3)) == 3


# -- the C load generator --------------------------------------------------

@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("NIGHTOWL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def bare_port():
    proc = subprocess.Popen([sys.executable, "-m", "nightowl.bench.bareserver", "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening "), line
        yield int(line.split()[1])
    finally:
        proc.terminate()
        proc.wait(10)


def test_generator_compiles_once_into_the_cache(cache):
    path = loadgen.binary()
    assert os.path.dirname(path) == str(cache)
    assert os.access(path, os.X_OK)
    mtime = os.stat(path).st_mtime_ns
    assert loadgen.binary() == path
    assert os.stat(path).st_mtime_ns == mtime


@pytest.mark.parametrize("split", [False, True])
def test_generator_against_the_bare_server_acks_every_frame(cache, bare_port, tmp_path, split):
    acked = tmp_path / "acked.txt"
    frames = [payloads.frame(payloads.payload_with_id(0))]
    result = loadgen.run_load("127.0.0.1", bare_port, frames, concurrency=8, count=200,
                              acked_file=str(acked), split=split)
    assert result["ok"] == 200
    assert result["errors"] == result["timeouts"] == result["connect_failures"] == 0
    assert sorted(int(x) for x in acked.read_text().split()) == list(range(1, 201))


class RecordingServer(threading.Thread):
    """Reads whole frames; replies 2:OK to even ids, 5:ERROR to odd ones."""

    def __init__(self):
        threading.Thread.__init__(self, daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.frames = []

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b":" not in data:
                    data += conn.recv(65536)
                prefix, rest = data.split(b":", 1)
                while len(rest) < int(prefix):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    rest += chunk
                self.frames.append(prefix + b":" + rest)
                seq = payloads.id_of(json.loads(rest.split(b":", 2)[2])[0]["trace_id"])
                conn.sendall(b"2:OK" if seq % 2 == 0 else b"5:ERROR")
                try:
                    conn.shutdown(socket.SHUT_WR)
                    conn.recv(16)  # wait for the client's close
                except OSError:
                    pass

    def close(self):
        self.sock.close()


def test_acked_file_holds_exactly_the_sequence_numbers_answered_ok(cache, tmp_path):
    server = RecordingServer()
    server.start()
    acked = tmp_path / "acked.txt"
    template = payloads.frame(payloads.payload_with_id(0))
    try:
        result = loadgen.run_load("127.0.0.1", server.port, [template], concurrency=1,
                                  count=40, acked_file=str(acked), seq_start=101, split=True)
    finally:
        server.close()
    assert result["ok"] == 20
    assert result["bad_reply"] == 20
    assert sorted(int(x) for x in acked.read_text().split()) == list(range(102, 141, 2))
    seen = []
    for framed in server.frames:
        assert len(framed) == len(template)
        body = framed.split(b":", 3)[3]
        ids = {payloads.id_of(r[k]) for r in json.loads(body)
               for k in ("trace_id", "execution_id") if k in r}
        assert len(ids) == 1
        seen.extend(ids)
    assert sorted(seen) == list(range(101, 141))
