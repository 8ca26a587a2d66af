"""
The one launcher of a real agent: ``twistd -n nightowl`` as a subprocess on
127.0.0.1 port 0 (and a health endpoint on port 0 unless ``health=False``),
waited for by its "listening" and "health on" lines, its output kept in
``lines``; ``status()`` reads /status, ``stop()`` is SIGTERM (SIGKILL after a
grace period), ``kill()`` a crash.  Shared by the benchmarks (ingest, e2e,
soak), the fault trials and the integration tests (tests/integration/agent.py).

Also here: talking to the agent the way the SDK does (``exchange``,
``send_payload``, ``ping``) and ``wait_for``, the polling loop all of them use.
"""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from nightowl.bench import payloads

# The repository root when running from a checkout (its twisted/plugins makes
# the plugin visible to twistd); harmless on an installed package.
REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                     os.pardir, os.pardir))
# twistd, from this interpreter (the console script may belong to another).
TWISTD = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; "
          "sys.argv[0] = 'twistd'; run()"]
# The agent's supervisor hands its workers an explicit environment (PATH,
# PYTHONPATH, HOME, LANG and its own NIGHTOWL_* keys), so the workers' test-only
# fault hooks (NIGHTOWL_FAULT, NIGHTOWL_FAULT_ONCE) cannot be reached through
# the agent's environment.  This twistd adds the two keys to the passed list
# in the agent process only; the agent itself runs unchanged.
WORKER_FAULT_TWISTD = [sys.executable, "-c", "import sys; "
                       "import nightowl.drain.config as s; "
                       "s.PASSED_ENV = tuple(s.PASSED_ENV) + "
                       "('NIGHTOWL_FAULT', 'NIGHTOWL_FAULT_ONCE'); "
                       "from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"]
LISTENING = re.compile(r"nightowl listening on ([0-9.]+):(\d+)")
HEALTH = re.compile(r"nightowl health on [0-9.]+:(\d+)")
OK = b"2:OK"
ERROR = b"5:ERROR"
TRACEBACK = "Traceback (most recent call last)"
LOOPBACK_PORT_0 = "tcp:0:interface=127.0.0.1"


def free_port():
    """A port free right now on 127.0.0.1 (for a fixed --listen: port 0 cannot be
    shared by several ingest processes, nor known before a process starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent_env(extra=None):
    """
    The agent's environment: ours without NIGHTOWL_* and NIGHTWATCH_TOKEN (a
    setting of the caller's shell must not leak into the agent under test),
    the repository on PYTHONPATH, then ``extra``.
    """
    env = dict((k, v) for k, v in os.environ.items()
               if not k.startswith("NIGHTOWL_") and k != "NIGHTWATCH_TOKEN")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


class Agent:
    """
    ``twistd -n nightowl`` on 127.0.0.1 port 0, health on port 0 (or
    ``--health none`` when ``health=False``), no dashboard; ``args`` come
    last, so they override.  ``worker_faults`` passes the workers' fault
    environment variables through (L{WORKER_FAULT_TWISTD}).
    """

    def __init__(self, buffer_path, args=(), health=True, env=None, worker_faults=False):
        self.buffer_path = buffer_path
        self.args = list(args)
        self.health = health
        self.env = dict(env or {})
        self.worker_faults = worker_faults
        self.proc = None
        self.port = None
        self.health_port = None
        self.lines = []
        self._reader = None

    def argv(self):
        return (WORKER_FAULT_TWISTD if self.worker_faults else TWISTD) + [
            "-n", "--pidfile=", "nightowl", "--listen", LOOPBACK_PORT_0,
            "--buffer", self.buffer_path,
            "--health", LOOPBACK_PORT_0 if self.health else "none",
            "--dashboard", "none"] + self.args

    def _ready(self):
        return bool(self.port and (self.health_port or not self.health))

    def start(self, timeout=60.0):
        """Start; True once listening (and health up), False if the process exited first."""
        cwd = REPO if os.path.isdir(os.path.join(REPO, "twisted", "plugins")) else None
        self.lines = []
        self.port = self.health_port = None
        self.proc = subprocess.Popen(self.argv(), env=agent_env(self.env), cwd=cwd,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, bufsize=1, errors="replace")
        ready = threading.Event()

        def read(proc=self.proc):
            for line in proc.stdout:
                self.lines.append(line.rstrip("\n"))
                m = LISTENING.search(line)
                if m:
                    self.port = int(m.group(2))
                h = HEALTH.search(line)
                if h:
                    self.health_port = int(h.group(1))
                if self._ready():
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        ready.wait(timeout)
        if self._ready() and self.alive():
            return True
        if self.alive():  # neither listening nor gone: do not leak it
            self.kill()
        else:
            self.proc.wait(10)
            self._reader.join(5)
        return False

    @property
    def pid(self):
        return self.proc.pid

    @property
    def returncode(self):
        return None if self.proc is None else self.proc.returncode

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        return "\n".join(self.lines)

    def last_line(self):
        """The last non-blank line of output (for one-line error messages)."""
        lines = [line.strip() for line in self.lines if line.strip()]
        return lines[-1] if lines else "(no output)"

    def kill(self):
        """SIGKILL (a crash, as far as the buffer can tell)."""
        if self.alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(30)
        if self._reader:
            self._reader.join(5)

    def stop(self, timeout=60.0):
        """SIGTERM and wait; SIGKILL if it does not exit in time.  Returns the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self._reader:
            self._reader.join(5)
        return self.returncode

    def status(self):
        """The /status document, or None (health endpoint down or not enabled)."""
        if not self.health_port:
            return None
        url = "http://127.0.0.1:{}/status".format(self.health_port)
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # 503 while unhealthy still carries the JSON
            try:
                return json.loads(e.read())
            except ValueError:
                return None
        except (OSError, ValueError):
            return None

    def accepted(self):
        s = self.status()
        return None if s is None else s["ingest"]["accepted"]

    def rejected(self, reason=None):
        s = self.status()
        if s is None:
            return None
        rej = s["ingest"]["rejected"]
        return rej if reason is None else rej.get(reason, 0)

    def stopped_cleanly(self):
        """
        Exited after an orderly shutdown: twistd re-raises SIGTERM after
        the reactor stopped, so the code is -15 (or 0), after "Main loop
        terminated".
        """
        return (self.proc is not None and self.proc.returncode in (0, -signal.SIGTERM)
                and any("Main loop terminated" in line for line in self.lines))

    def tracebacks(self):
        return sum(1 for line in self.lines if TRACEBACK in line)


@contextlib.contextmanager
def running(agent):
    """Start ``agent`` (AssertionError with its log if it does not) and always stop it."""
    try:
        if not agent.start():
            raise AssertionError("agent did not start:\n" + "\n".join(agent.lines[-30:]))
        yield agent
    finally:
        agent.kill()


def wait_for(predicate, timeout, every=0.1):
    """Poll ``predicate`` until it is true or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


# -- talking to it -----------------------------------------------------------

def exchange(port, data, timeout=10.0, half_close=False, split=False, host="127.0.0.1"):
    """
    One connection: send ``data``, read until the agent closes.  Returns
    ``(reply, how)``: how is ``closed`` (EOF after the reply, if any),
    ``reset``, ``hang`` (no close within ``timeout``) or ``connect-failed``.
    """
    try:
        s = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return b"", "connect-failed"
    reply = b""
    try:
        try:
            if split and b":" in data:
                head, body = data.split(b":", 1)
                s.sendall(head + b":")
                s.sendall(body)
            else:
                s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # refused early (5:ERROR and close while we still wrote): read what came
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return reply, "hang"
            s.settimeout(left)
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                return reply, "hang"
            except OSError:
                return reply, "reset"
            if not chunk:
                return reply, "closed"
            reply += chunk
            if len(reply) > 64:
                return reply, "closed"
    finally:
        s.close()


def send_payload(port, payload, token=None, timeout=10.0):
    """Send one SDK frame (split like the SDK); the reply bytes (b'' on failure)."""
    reply, _how = exchange(port, payloads.frame(payload, token), timeout=timeout, split=True)
    return reply


def ping(port, timeout=10.0):
    return send_payload(port, b"PING", timeout=timeout) == OK


def id_payload(n):
    """A realistic payload whose records all carry sequence number ``n``."""
    return payloads.payload_with_id(n)
