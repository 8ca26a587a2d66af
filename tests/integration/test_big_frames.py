"""
A big payload must not hold other payloads' acks (issue 14, item 3), on a
real agent: while a 9.9 MB ``[[],[],...]`` frame is being checked, small
frames sent after it are acked first.
"""

import threading
import time

from nightowl import wire
from tests.integration.agent import AgentProcess, send_frame


def test_small_frames_are_acked_while_a_big_one_is_checked(tmp_path):
    a = AgentProcess(str(tmp_path / "b.sqlite")).start()
    try:
        big = wire.encode_frame(b"[" + b",".join([b"[]"] * 3300000) + b"]")
        assert len(big) < 10 * 1024 * 1024
        order = []

        def send_big():
            reply = send_frame(a.port, big, timeout=60)
            order.append(("big", reply))
        t = threading.Thread(target=send_big)
        t.start()
        time.sleep(0.15)   # the big frame is in (10 MB over loopback) and being checked
        for i in range(10):
            order.append(("small", send_frame(a.port, wire.encode_frame(b"[%d]" % i))))
        t.join(60)
        assert [r for _k, r in order] == [b"2:OK"] * 11
        # Not held behind it: the first small frame, sent after the big one, is
        # acked before it.  (Not "all ten": on a loaded 2-core box ten round
        # trips in a row can outlast the big frame's check.)
        assert [k for k, _r in order].index("big") > 0, order
    finally:
        a.stop()
