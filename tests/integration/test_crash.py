"""
SIGKILL the agent under load: every payload it acknowledged is in the
buffer after a restart (acked ⊆ buffered), nothing is there twice, and
nothing is there that was never sent.
"""

import random
import sqlite3
import threading
import time

import orjson

from nightowl import wire
from tests.integration.agent import AgentProcess, send_frame


def buffered_ids(path):
    conn = sqlite3.connect(path)
    try:
        return [orjson.loads(r[0])[0]["id"] for r in conn.execute("SELECT payload FROM payload_bodies")]
    finally:
        conn.close()


def load(port, start, stop_event, acked, sent, lock):
    n = start
    while not stop_event.is_set():
        payload = b'[{"t":"log","id":%d,"message":"%s"}]' % (n, b"x" * 2000)
        with lock:
            sent.add(n)
        try:
            reply = send_frame(port, wire.encode_frame(payload), timeout=2.0)
        except OSError:
            reply = b""
        if reply == b"2:OK":
            with lock:
                acked.add(n)
        n += 1000000


def test_sigkill_under_load_loses_no_acknowledged_payload(tmp_path):
    path = str(tmp_path / "buffer.sqlite")
    rng = random.Random(7)
    acked, sent = set(), set()
    lock = threading.Lock()
    kills = 0
    for trial in range(3):
        agent = AgentProcess(path).start()
        stop_event = threading.Event()
        threads = [threading.Thread(target=load, args=(agent.port, trial * 100000 + i, stop_event,
                                                       acked, sent, lock)) for i in range(8)]
        before = len(acked)
        for t in threads:
            t.start()
        time.sleep(0.3 + rng.random() * 0.7)
        agent.kill()  # SIGKILL mid-flight
        kills += 1
        stop_event.set()
        for t in threads:
            t.join()
        # Anti-vacuity: the kill hit while acks were flowing.
        assert len(acked) > before
    ids = buffered_ids(path)
    assert kills == 3
    assert acked <= set(ids), "acknowledged payloads missing after SIGKILL"
    assert len(ids) == len(set(ids)), "a payload was stored twice"
    assert set(ids) <= sent
    # The buffer reopens cleanly after the last kill.
    agent = AgentProcess(path).start()
    assert send_frame(agent.port, wire.encode_frame(b'[{"t":"log","id":-1}]')) == b"2:OK"
    agent.stop()
    assert buffered_ids(path)[-1] == -1
