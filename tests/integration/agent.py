"""
The real agent for the integration tests: L{nightowl.bench.agent.Agent} (the
one launcher, shared with the benchmarks and the fault trials) with the
tests' defaults, and ``send_frame``, a client that talks like the SDK.
"""

import socket

from nightowl.bench.agent import Agent


class AgentProcess(Agent):
    """
    An L{Agent} without health unless ``health=True``, whose ``start()``
    returns it and raises AssertionError with the log when it does not start.
    """

    def __init__(self, buffer_path, args=(), env=None, health=False):
        Agent.__init__(self, buffer_path, args=args, health=health, env=env)

    def start(self, timeout=30.0):
        if not Agent.start(self, timeout):
            raise AssertionError("agent did not start:\n" + "\n".join(self.lines[-30:]))
        return self


def send_frame(port, frame, split=True, timeout=5.0, host="127.0.0.1"):
    """
    Send one frame the way the SDK does: one connection, ``<len>:`` and the
    body as separate writes, no half-close; read up to 4 bytes.
    """
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        if split:
            head, body = frame.split(b":", 1)
            s.sendall(head + b":")
            s.sendall(body)
        else:
            s.sendall(frame)
        reply = b""
        while len(reply) < 7:
            chunk = s.recv(7 - len(reply))
            if not chunk:
                break
            reply += chunk
        return reply
    finally:
        s.close()
