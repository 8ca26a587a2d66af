"""
The frame checker's pacing: between the pieces of a big payload its thread
sleeps as long as the piece took, so a stream of gzip bombs cannot keep the
reactor and the writer waiting for the GIL (nightowl.checker.Pacer and
nightowl.jsoncheck.pace_this_thread).
"""

import threading

from nightowl import jsoncheck, wire
from nightowl.checker import FrameChecker, Pacer
from tests.fakes import ThreadReactor


class FakeTime:
    def __init__(self):
        self.now = 0.0
        self.slept = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.now += seconds


def test_pacer_sleeps_as_long_as_the_piece_took_up_to_the_cap():
    t = FakeTime()
    pacer = Pacer(share=1.0, max_pause=0.01, clock=t.clock, sleep=t.sleep)
    pacer.start()
    t.now += 0.002          # the first piece took 2 ms
    pacer()
    t.now += 0.050          # a 50 ms piece: capped
    pacer()
    pacer()                 # no time since: no sleep
    assert t.slept == [0.002, 0.01]
    assert abs(pacer.paused - 0.012) < 1e-9


def big_array(n=40000):
    return b"[" + b",".join(b'{"a":[1,2,{"b":"x"}]}' for _ in range(n)) + b"]"


def test_a_large_payload_pauses_between_pieces_on_a_paced_thread_only():
    payload = big_array()
    assert len(payload) > 8 * jsoncheck.CHUNK
    calls = []
    other = {}

    def unpaced():
        jsoncheck.check_json_array(payload)    # another thread: no pause hook
        other["done"] = True
    jsoncheck.pace_this_thread(lambda: calls.append(1))
    try:
        jsoncheck.check_json_array(payload)
        paced_calls = len(calls)
        t = threading.Thread(target=unpaced)
        t.start()
        t.join()
    finally:
        jsoncheck.pace_this_thread(None)
    assert paced_calls >= len(payload) // jsoncheck.CHUNK - 1
    assert other == {"done": True} and len(calls) == paced_calls
    jsoncheck.check_json_array(payload)        # hook removed
    assert len(calls) == paced_calls


def test_a_small_payload_never_pauses():
    calls = []
    jsoncheck.pace_this_thread(lambda: calls.append(1))
    try:
        jsoncheck.check_json_array(b'[{"a":1}]')
    finally:
        jsoncheck.pace_this_thread(None)
    assert calls == []


def test_the_checker_thread_paces_a_big_frame():
    reactor = ThreadReactor()
    checker = FrameChecker(reactor, None, max_inflated_bytes=64 << 20, max_bytes=64 << 20)
    checker.startService()
    try:
        frame = wire.FrameParser(64 << 20).feed(wire.encode_frame(big_array()))
        assert checker.wants(frame)
        payload = reactor.wait(checker.open(frame))
        assert payload == big_array()
        assert checker.pacer.paused > 0      # it slept between the pieces
    finally:
        reactor.wait(checker.stopService())
