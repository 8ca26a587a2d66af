"""
Run the real agent (``twistd -n nightowl``) as a subprocess on port 0 and
talk to it like the SDK does.  Shared by the socket, crash and fault tests.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

# twistd, from this interpreter (the console script may belong to another).
TWISTD = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; "
          "sys.argv[0] = 'twistd'; run()"]
LISTENING = re.compile(r"nightowl listening on ([0-9.]+):(\d+)")


class AgentProcess:
    def __init__(self, buffer_path, args=(), env=None, health=False):
        self.buffer_path = buffer_path
        self.args = list(args)
        self.env = dict(os.environ)
        self.env.pop("NIGHTOWL_DSN", None)
        self.env.update(env or {})
        self.health = health
        self.proc = None
        self.port = None
        self.health_port = None
        self.lines = []
        self._reader = None

    def start(self, timeout=30.0):
        argv = TWISTD + ["-n", "--pidfile=", "nightowl",
                "--listen", "tcp:0:interface=127.0.0.1", "--buffer", self.buffer_path]
        if not self.health:
            argv += ["--health", "none"]
        argv += ["--dashboard", "none"]   # tests that want one pass --dashboard after
        argv += self.args
        self.lines = []
        self.port = None
        self.proc = subprocess.Popen(argv, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1)
        ready = threading.Event()

        def read(proc=self.proc):
            for line in proc.stdout:
                self.lines.append(line.rstrip("\n"))
                m = LISTENING.search(line)
                if m and not ready.is_set():
                    self.port = int(m.group(2))
                    ready.set()
                h = re.search(r"health on [0-9.]+:(\d+)", line)
                if h:
                    self.health_port = int(h.group(1))
            ready.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not ready.wait(timeout) or self.port is None:
            self.kill()
            raise AssertionError("agent did not start:\n" + "\n".join(self.lines[-30:]))
        return self

    def log(self):
        return "\n".join(self.lines)

    def stop(self, timeout=30.0):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout)
        if self._reader:
            self._reader.join(5)
        return self.proc.returncode

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self._reader:
            self._reader.join(5)


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
