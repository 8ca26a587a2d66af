"""
``nightowl bench faults``: fault injection against the real agent, judged by
a set-membership oracle rather than by timings.

Every payload sent carries a unique sequence number; the sender records a
number as acked only on ``2:OK``.  After each fault and a quiet period the
buffer is read back and:

* every acked id is stored (``acked ⊆ stored``),
* no id is stored twice,
* nothing is stored that was never sent (``stored ⊆ sent``).

Each trial also carries anti-vacuity checks (the fault really hit while acks
were flowing, the buffer really was full, the disk really was full, ...), so
a trial that passes because nothing happened is reported as a failure.

Ingest-side faults (this module): SIGKILL of the agent under load,
back-pressure past ``--max-pending``, a full disk under the buffer, a corrupt
buffer at startup, hostile input beside valid traffic.  Drain-side faults,
judged over Postgres once the drain caught up (acked ⊆ rows, one copy each,
no row never sent): SIGKILL of the agent with its workers, SIGKILL of one
worker (from outside, mid-COPY, between commit and mark), Postgres stopped
(``-m immediate``) mid-drain and started again.  The trials are plain
functions returning a result dict (``ok``, ``violations``, figures), shared by
the CI tests (tests/integration/test_faults_ingest.py, small sizes) and by
this command (long sizes).  The last line on stdout is one JSON object.
"""

import contextlib
import gzip
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

from nightowl.bench import drain as scratch  # scratch databases: create_database, drop_database
from nightowl.bench import loadgen, payloads

_REPO = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                      os.pardir, os.pardir))
TWISTD = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; "
          "sys.argv[0] = 'twistd'; run()"]
# The agent's supervisor hands its workers an explicit environment (PATH,
# PYTHONPATH, HOME, LANG and its own NIGHTOWL_* keys), so the workers' test-only
# fault hooks (NIGHTOWL_FAULT, NIGHTOWL_FAULT_ONCE) cannot be reached through
# the agent's environment.  This twistd adds the two keys to the passed list
# in the agent process only; the agent itself runs unchanged.
WORKER_FAULT_TWISTD = [sys.executable, "-c", "import sys; "
                       "import nightowl.drain.supervisor as s; "
                       "s._PASSED_ENV = tuple(s._PASSED_ENV) + "
                       "('NIGHTOWL_FAULT', 'NIGHTOWL_FAULT_ONCE'); "
                       "from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"]
LISTENING = re.compile(r"nightowl listening on ([0-9.]+):(\d+)")
HEALTH = re.compile(r"nightowl health on [0-9.]+:(\d+)")
ID_RE = re.compile(rb"00000000-0000-4000-8000-(\d{12})")
OK = b"2:OK"
ERROR = b"5:ERROR"
TRACEBACK = "Traceback (most recent call last)"


# -- the agent under test ----------------------------------------------------

class Agent:
    """
    ``twistd -n nightowl`` on 127.0.0.1 port 0 (and a health endpoint on
    port 0 unless ``health=False``); its output is kept in ``lines``.
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

    def start(self, timeout=60.0):
        """Start; True once listening, False if the process exited first."""
        argv = (WORKER_FAULT_TWISTD if self.worker_faults else TWISTD) + [
                         "-n", "--pidfile=", "nightowl",
                         "--listen", "tcp:0:interface=127.0.0.1",
                         "--buffer", self.buffer_path,
                         "--health", "tcp:0:interface=127.0.0.1" if self.health else "none"]
        argv += self.args
        env = dict((k, v) for k, v in os.environ.items()
                   if not k.startswith("NIGHTOWL_") and k != "NIGHTWATCH_TOKEN")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_REPO, os.environ.get("PYTHONPATH")) if p)
        env.update(self.env)
        cwd = _REPO if os.path.isdir(os.path.join(_REPO, "twisted", "plugins")) else None
        self.lines = []
        self.port = self.health_port = None
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1,
                                     errors="replace")
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
                if self.port and (self.health_port or not self.health):
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        ready.wait(timeout)
        if self.port and (self.health_port or not self.health) and self.alive():
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

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        return "\n".join(self.lines)

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
        return None if self.proc is None else self.proc.returncode

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


def rss_kb(pid):
    """VmRSS of a live process in kB (None once it is gone)."""
    try:
        with open("/proc/{}/status".format(pid)) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler:
    """Samples a process's VmRSS in a thread; ``peak`` in kB."""

    def __init__(self, pid, every=0.2):
        self.pid = pid
        self.every = every
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            value = rss_kb(self.pid)
            if value is not None:
                self.peak = max(self.peak, value)
                self.samples += 1
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


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


# -- the oracle --------------------------------------------------------------

def read_buffer(path):
    """
    Rows of a buffer file as ``[(rowid, state, seq)]`` (seq None when the
    payload carries no id, or ids that disagree).  Reads a copy of the file
    and its WAL, so a crashed agent's WAL is recovered in the copy, never
    in the original.
    """
    tmp = tempfile.mkdtemp(prefix="nightowl-faults-read-")
    try:
        copy = os.path.join(tmp, "buffer.sqlite")
        for suffix in ("", "-wal"):
            if os.path.exists(path + suffix):
                shutil.copyfile(path + suffix, copy + suffix)
        if not os.path.exists(copy):
            return []
        conn = sqlite3.connect(copy)
        try:
            rows = []
            from nightowl.buffer import read_payloads
            for rowid, state, payload in read_payloads(conn):
                found = set(ID_RE.findall(bytes(payload)))
                rows.append((rowid, state, int(found.pop()) if len(found) == 1 else None))
            return rows
        finally:
            conn.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_acked(path):
    if not os.path.exists(path):
        return set()
    with open(path) as f:
        return set(int(line) for line in f if line.strip())


class Oracle:
    """acked ⊆ stored, no id stored twice, stored ⊆ sent."""

    def __init__(self):
        self.sent = set()
        self.acked = set()

    def send(self, ids):
        self.sent.update(ids)

    def ack(self, ids):
        self.acked.update(ids)

    def check(self, rows):
        stored = [seq for (_rowid, _state, seq) in rows]
        seen, dups = set(), set()
        for seq in stored:
            if seq in seen:
                dups.add(seq)
            seen.add(seq)
        missing = self.acked - seen
        foreign = set(s for s in seen if s is None or s not in self.sent)
        violations = []
        if missing:
            violations.append("{} acked ids not stored (e.g. {})".format(
                len(missing), sorted(missing)[:5]))
        if dups:
            violations.append("{} ids stored twice (e.g. {})".format(
                len(dups), sorted(dups)[:5]))
        if foreign:
            violations.append("{} stored rows never sent (e.g. {})".format(
                len(foreign), sorted(foreign, key=lambda s: -1 if s is None else s)[:5]))
        return {"sent": len(self.sent), "acked": len(self.acked), "stored": len(stored),
                "missing": len(missing), "duplicates": len(dups), "foreign": len(foreign),
                "violations": violations}


def wait_for(predicate, timeout, every=0.1):
    """Poll ``predicate`` until it is true or ``timeout`` passes; its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


# -- tmpfs -------------------------------------------------------------------

@contextlib.contextmanager
def tmpfs(path, size="2m"):
    """Mount a tmpfs of ``size`` on ``path`` (root only); always unmounted after."""
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size={}".format(size), "tmpfs", path],
                   check=True, capture_output=True)
    try:
        yield path
    finally:
        for _attempt in range(10):
            if subprocess.run(["umount", path], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)


def can_mount():
    return os.geteuid() == 0 and shutil.which("mount") is not None


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


# -- trial 1: SIGKILL under load ---------------------------------------------

def kill_trials(workdir, trials=3, seed=1, concurrency=8, log=print):
    """
    SIGKILL the agent at a random moment while the C load generator drives
    it (one frame per connection, acked ids written to a file), restart it
    on the same buffer, repeat.  After every kill the buffer (read from a
    copy) must satisfy the oracle; anti-vacuity: acks were flowing just
    before the kill and connections were broken by it.
    """
    rng = random.Random(seed)
    path = os.path.join(workdir, "kill-buffer.sqlite")
    frames_path = os.path.join(workdir, "kill-frames.bin")
    loadgen.write_frames([payloads.frame(id_payload(0))], frames_path)
    oracle = Oracle()
    rows = []
    for trial in range(trials):
        agent = Agent(path, ["--drain-workers", "0"])
        acked_file = os.path.join(workdir, "kill-acked-{}.txt".format(trial))
        seq_start = (trial + 1) * 10000000 + 1
        kill_at = 0.3 + rng.random() * 1.5
        gen = None
        row = {"trial": trial, "kill_at_s": round(kill_at, 2)}
        try:
            if not agent.start():
                raise AssertionError("agent did not start:\n" + "\n".join(agent.lines[-30:]))
            gen = loadgen.start_load("127.0.0.1", agent.port, frames_path, concurrency,
                                     duration=kill_at + 0.6, acked_file=acked_file,
                                     seq_start=seq_start, timeout=1.0)
            time.sleep(kill_at)
            a1 = agent.accepted() or 0
            time.sleep(0.05)
            a2 = agent.accepted() or 0
            agent.kill()
            out, err = gen.communicate(timeout=120)
            gen = None
            result = loadgen.parse_result(out, err)
        finally:
            agent.kill()
            if gen is not None:
                gen.kill()
                gen.wait()
        oracle.send(range(seq_start, seq_start + result["started"]))
        acked = read_acked(acked_file)
        oracle.ack(acked)
        stored = read_buffer(path)
        check = oracle.check(stored)
        new_ids = [s for (_r, _st, s) in stored if s is not None and s >= seq_start
                   and s < seq_start + 10000000]
        unacked_stored = len(set(new_ids) - acked)
        broken = result["reset_or_eof"] + result["bad_reply"] + result["timeouts"]
        vacuous = []
        if not (a2 > a1 > 0):
            vacuous.append("acks were not flowing at the kill ({} then {})".format(a1, a2))
        if broken + unacked_stored == 0:
            vacuous.append("the kill broke no connection in flight")
        if not acked:
            vacuous.append("no acks in this trial")
        row.update({"acked": len(acked), "stored": len(new_ids), "in_flight_broken": broken,
                    "stored_unacked": unacked_stored, "accepted_at_kill": a2,
                    "violations": check["violations"] + vacuous,
                    "ok": not (check["violations"] or vacuous)})
        rows.append(row)
        log("kill trial {trial}: kill at {kill_at_s}s, {acked} acked, {stored} stored, "
            "{in_flight_broken} connections broken, {stored_unacked} stored unacked: {v}".format(
                v="ok" if row["ok"] else "; ".join(row["violations"]), **row))
    # The buffer reopens after the last kill and takes traffic again.
    agent = Agent(path, ["--drain-workers", "0"])
    with running(agent):
        reopened = send_payload(agent.port, id_payload(1)) == OK
        oracle.send([1])
        if reopened:
            oracle.ack([1])
        agent.stop()
        clean_exit = agent.stopped_cleanly()
    final = oracle.check(read_buffer(path))
    violations = list(final["violations"])
    if not reopened:
        violations.append("the agent did not ack after the last restart")
    if not clean_exit:
        violations.append("no orderly shutdown on SIGTERM after the kills")
    return {"fault": "sigkill", "trials": rows, "final": final,
            "ok": all(r["ok"] for r in rows) and not violations,
            "violations": violations + [v for r in rows for v in r["violations"]]}


# -- trial 4: back-pressure ---------------------------------------------------

def backpressure_trial(workdir, max_pending=200, dsn=None, log=print):
    """
    Fill the buffer past ``--max-pending`` with no drain: further frames get
    ``5:ERROR`` (counted as back-pressure), the agent stays up and still
    answers PING.  Then let the rows leave the pending state through the
    real drain (restart with ``--dsn``) and check acks resume; without a
    DSN, mark them drained out of band instead and report whether that
    releases back-pressure (it need not: the counters are the writer's).
    """
    path = os.path.join(workdir, "bp-buffer.sqlite")
    oracle = Oracle()
    violations = []
    res = {"fault": "back-pressure", "max_pending": max_pending}
    seq = 0
    agent = Agent(path, ["--drain-workers", "0", "--max-pending", str(max_pending)])
    with running(agent):
        refused = 0
        for _ in range(max_pending + 100):
            seq += 1
            oracle.send([seq])
            reply = send_payload(agent.port, id_payload(seq))
            if reply == OK:
                oracle.ack([seq])
            elif reply == ERROR:
                refused += 1
            else:
                violations.append("frame {} got {!r}, neither 2:OK nor 5:ERROR".format(seq, reply))
        counted = agent.rejected("back-pressure")
        status = agent.status() or {}
        res.update({"acked_before_full": len(oracle.acked), "refused": refused,
                    "counted_back_pressure": counted,
                    "status_back_pressure": status.get("buffer", {}).get("back_pressure")})
        if refused == 0:
            violations.append("vacuous: the buffer never refused a frame")
        if counted != refused:
            violations.append("/status counted {} back-pressure refusals, we saw {}".format(
                counted, refused))
        if len(oracle.acked) > max_pending + 1:
            violations.append("acked {} frames with --max-pending {}".format(
                len(oracle.acked), max_pending))
        if not ping(agent.port):
            violations.append("PING failed while the buffer was full")
        if not agent.alive():
            violations.append("the agent died under back-pressure")
        if dsn is None:
            conn = sqlite3.connect(path, timeout=30)
            try:
                conn.execute("UPDATE payloads SET state = 1, state_at = 0 WHERE state = 0")
                conn.commit()
            finally:
                conn.close()
            seq += 1
            oracle.send([seq])
            resumed = wait_for(lambda: agent.status() is not None and send_payload(
                agent.port, id_payload(seq)) == OK, 10.0, every=0.5)
            if resumed:
                oracle.ack([seq])
            res["resumed_out_of_band"] = bool(resumed)
        agent.stop()
    if dsn is not None:
        agent = Agent(path, ["--drain-workers", "1", "--max-pending", str(max_pending),
                             "--dsn", dsn])
        with running(agent):
            # drained: neither pending nor claimed (a claimed batch still counts
            # against --max-pending until its mark commits)
            drained = wait_for(lambda: (lambda b: b.get("pending", 1) == 0 and b.get(
                "claimed", 1) == 0)((agent.status() or {}).get("buffer", {})), 120.0, every=0.5)
            resumed = 0
            for _ in range(20):
                seq += 1
                oracle.send([seq])
                if send_payload(agent.port, id_payload(seq)) == OK:
                    oracle.ack([seq])
                    resumed += 1
            res.update({"drained": bool(drained), "acked_after_drain": resumed})
            if not drained:
                violations.append("the drain did not empty the pending rows:\n" +
                                  "\n".join(agent.lines[-20:]))
            if resumed != 20:
                violations.append("only {} of 20 frames acked after the drain".format(resumed))
            agent.stop()
            if agent.tracebacks():
                violations.append("tracebacks in the agent's log")
    check = oracle.check(read_buffer(path))
    violations += check["violations"]
    res.update({"oracle": check, "violations": violations, "ok": not violations})
    log("back-pressure: {acked} acked, {refused} refused ({counted} counted): {v}".format(
        acked=check["acked"], refused=res["refused"], counted=res["counted_back_pressure"],
        v="ok" if not violations else "; ".join(violations)))
    return res


def _first_traceback(lines):
    """The first traceback's location and exception, as one line."""
    for i, line in enumerate(lines):
        if TRACEBACK in line:
            body = []
            for follow in lines[i + 1:]:
                if not follow.startswith("\t"):
                    break
                if follow.strip():
                    body.append(follow.strip())
            return " | ".join(body[-3:])
    return ""


# -- trial 5: disk full -------------------------------------------------------

def diskfull_trial(workdir, size="2m", ballast_bytes=700 * 1024, reply_timeout=5.0, log=print):
    """
    The buffer on a small tmpfs with a ballast file beside it: send until
    the disk is full and frames get ``5:ERROR``; the agent stays up; delete
    the ballast and acks resume; every acked id is in the buffer.
    """
    mnt = os.path.join(workdir, "diskfull")
    path = os.path.join(mnt, "buffer.sqlite")
    oracle = Oracle()
    violations = []
    res = {"fault": "disk-full", "tmpfs": size}
    with tmpfs(mnt, size):
        ballast = os.path.join(mnt, "ballast")
        with open(ballast, "wb") as f:
            f.write(b"\xa5" * ballast_bytes)
        agent = Agent(path, ["--drain-workers", "0"])
        try:
            if not agent.start():
                raise AssertionError("agent did not start:\n" + agent.log())
            seq = 0
            errors_in_row = 0
            refused = 0
            no_reply = []
            while errors_in_row < 5 and seq < 20000:
                seq += 1
                oracle.send([seq])
                reply, how = exchange(agent.port, payloads.frame(id_payload(seq)),
                                      timeout=reply_timeout, split=True)
                if reply == OK:
                    oracle.ack([seq])
                    errors_in_row = 0
                elif reply == ERROR:
                    refused += 1
                    errors_in_row += 1
                else:
                    no_reply.append((seq, how, reply))
                    errors_in_row += 1
            if no_reply:
                violations.append(
                    "{} frames on a full disk got no 5:ERROR: {}".format(
                        len(no_reply), ", ".join("{} {} {!r}".format(*x) for x in no_reply[:3])))
            res["no_reply"] = len(no_reply)
            res["acked_before_full"] = len(oracle.acked)
            res["refused"] = refused
            rejected = agent.rejected() or {}
            res["rejected"] = dict((k, v) for k, v in rejected.items() if v)
            if errors_in_row < 5:
                violations.append("vacuous: the disk never filled up")
            if not rejected.get("buffer-error"):
                violations.append("no buffer-error counted (rejected: {})".format(res["rejected"]))
            if not agent.alive():
                violations.append("the agent died on a full disk")
            elif not ping(agent.port):
                violations.append("PING failed on a full disk")
            os.unlink(ballast)
            resumed_at = [None]

            def acks_again():
                n = seq + 1000 + (resumed_at[0] or 0)
                resumed_at[0] = (resumed_at[0] or 0) + 1
                oracle.send([n])
                if send_payload(agent.port, id_payload(n)) == OK:
                    oracle.ack([n])
                    return True
                return False

            resumed = wait_for(acks_again, 30.0, every=0.2)
            after = 0
            if resumed:
                for k in range(20):
                    n = seq + 5000 + k
                    oracle.send([n])
                    if send_payload(agent.port, id_payload(n)) == OK:
                        oracle.ack([n])
                        after += 1
            res["resumed"] = bool(resumed)
            res["acked_after_freeing"] = after
            if not resumed or after != 20:
                violations.append("acks did not resume after freeing space ({} of 20)".format(
                    after))
            res["exit_code"] = agent.stop()
            if not agent.stopped_cleanly():
                violations.append("no orderly shutdown on SIGTERM (exit {}): {}".format(
                    res["exit_code"], agent.lines[-3:]))
            res["tracebacks"] = agent.tracebacks()
            if res["tracebacks"]:
                violations.append("{} tracebacks in the agent's log: {}".format(
                    res["tracebacks"], _first_traceback(agent.lines)))
        finally:
            agent.kill()
        check = oracle.check(read_buffer(path))
    violations += check["violations"]
    res.update({"oracle": check, "violations": violations, "ok": not violations})
    log("disk full: {a} acked before full, {r} refused, resumed={res}: {v}".format(
        a=res.get("acked_before_full"), r=res.get("refused"), res=res.get("resumed"),
        v="ok" if not violations else "; ".join(violations)))
    return res


# -- trial 6: a corrupt buffer at startup -------------------------------------

def _populate(path, n, seq_start=1, crash_image_of_wal=False):
    """
    Write ``n`` payload rows with the agent's own schema.  With
    ``crash_image_of_wal`` the file pair is copied while the WAL still holds
    the rows (as a SIGKILL leaves it), one commit per row.
    """
    from nightowl.buffer import buffer_identity, connect
    src = path + ".src" if crash_image_of_wal else path
    conn = connect(src)
    try:
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("BEGIN IMMEDIATE")
        buffer_identity(conn)
        conn.execute("COMMIT")
        if not crash_image_of_wal:
            conn.execute("BEGIN IMMEDIATE")
        from nightowl.buffer import insert_many
        for i in range(n):
            insert_many(conn, [(time.time(), id_payload(seq_start + i))])
        if crash_image_of_wal:
            for suffix in ("", "-wal"):
                shutil.copyfile(src + suffix, path + suffix)
        else:
            conn.execute("COMMIT")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    if crash_image_of_wal:
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(src + suffix):
                os.unlink(src + suffix)


CORRUPTIONS = ("garbage", "truncated-main", "truncated-wal-tail", "flipped-bytes",
               "flipped-header", "garbage-wal", "empty-file", "index-corrupt")


def corrupt(case, path, rng):
    """Make ``path`` a buffer damaged as ``case``; the ids that should survive (or None)."""
    if case == "garbage":
        with open(path, "wb") as f:
            f.write(rng.randbytes(64 * 1024))
        return None
    if case == "empty-file":
        open(path, "wb").close()
        return set()
    if case == "truncated-wal-tail":
        _populate(path, 50, crash_image_of_wal=True)
        size = os.path.getsize(path + "-wal")
        with open(path + "-wal", "r+b") as f:
            f.truncate(size - 1234)
        return set(range(1, 51))  # a prefix of these survives
    if case == "garbage-wal":
        _populate(path, 50)
        with open(path + "-wal", "wb") as f:
            f.write(rng.randbytes(20000))
        return set(range(1, 51))
    _populate(path, 300)
    size = os.path.getsize(path)
    if case == "truncated-main":
        with open(path, "r+b") as f:
            f.truncate(size // 2 + 100)
        return None
    if case == "flipped-header":
        with open(path, "r+b") as f:
            f.seek(16)  # page size
            f.write(b"\x00\x03")
        return None
    if case == "flipped-bytes":
        with open(path, "r+b") as f:
            for _ in range(64):
                f.seek(rng.randrange(4096, size))
                f.write(bytes([rng.randrange(256)]))
        return None
    if case == "index-corrupt":
        # Damage only the payloads_state_id index's pages: quick_check does
        # not compare an index with its table.
        conn = sqlite3.connect(path)
        try:
            root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = "
                                "'payloads_state_id'").fetchone()[0]
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        finally:
            conn.close()
        with open(path, "r+b") as f:
            f.seek((root - 1) * page_size + 8)
            f.write(rng.randbytes(page_size - 16))
        return None
    raise ValueError(case)


def corrupt_trial(workdir, case, seed=1, log=print):
    """
    Start the agent on a damaged buffer.  Pass: it starts (moving the file
    aside with one log line when it is corrupt) and acks a frame, or it
    refuses with one clear line; never a traceback, never a crash loop.
    """
    rng = random.Random(seed)
    d = os.path.join(workdir, "corrupt-" + case)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "buffer.sqlite")
    survivors = corrupt(case, path, rng)
    before = os.listdir(d)
    violations = []
    res = {"fault": "corrupt", "case": case}
    outcomes = []
    for attempt in range(2):  # a second start must not crash-loop either
        agent = Agent(path, ["--drain-workers", "0"])
        try:
            started = agent.start()
            acked = started and send_payload(agent.port, id_payload(900000 + attempt)) == OK
            if started:
                agent.stop()
        finally:
            agent.kill()
        lines = agent.lines
        moved = [l for l in lines if "moved aside" in l]
        outcome = "started" if started else "refused"
        outcomes.append(outcome)
        if agent.tracebacks():
            violations.append("start {}: traceback in the log:\n{}".format(
                attempt, "\n".join(lines[-40:])))
        if started and not acked:
            violations.append("start {}: started but did not ack a frame: {}".format(
                attempt, "\n".join(lines[-10:])))
        if not started:
            errs = [l for l in lines if "nightowl:" in l or "buffer" in l.lower()]
            if not errs:
                violations.append("start {}: exited without a clear line: {}".format(
                    attempt, lines[-5:]))
        if len(moved) > 1:
            violations.append("start {}: {} 'moved aside' lines".format(attempt, len(moved)))
        if attempt == 0:
            res["moved_aside"] = bool(moved)
            res["first_start"] = outcome
            res["log_line"] = (moved or [l for l in lines if "nightowl:" in l] or [""])[0][-200:]
        elif moved:
            violations.append("the fresh buffer was moved aside again on the second start")
    aside = [f for f in os.listdir(d) if ".corrupt-" in f and f not in before]
    res["aside_files"] = sorted(aside)
    if res.get("moved_aside") and not aside:
        violations.append("the log says moved aside but no file was")
    if aside and not res.get("moved_aside"):
        violations.append("a file was moved aside without saying so")
    if survivors is not None and outcomes[0] == "started":
        if res.get("moved_aside"):
            violations.append("a recoverable buffer ({}) was moved aside".format(case))
        else:
            stored = set(s for (_r, _st, s) in read_buffer(path))
            kept = stored & survivors
            lost = survivors - stored
            res["rows_kept"] = len(kept)
            if case == "truncated-wal-tail":
                # Only a tail may go: the kept ids are a prefix 1..k.
                if kept != set(range(1, len(kept) + 1)):
                    violations.append("not a prefix survived the WAL truncation")
                if not kept:
                    violations.append("every row was lost to a truncated WAL tail")
            elif lost:
                violations.append("{} rows lost".format(len(lost)))
    res.update({"outcomes": outcomes, "violations": violations, "ok": not violations})
    log("corrupt {case}: {o}{m}: {v}".format(
        case=case, o="/".join(outcomes), m=", moved aside" if res.get("moved_aside") else "",
        v="ok" if not violations else "; ".join(v.splitlines()[0] for v in violations)))
    return res


# -- trial 7: hostile input beside valid traffic -------------------------------

def _idle_holders(port, n):
    socks = []
    failed = 0
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
        except OSError:
            failed += 1
            s.close()
    return socks, failed


def _wait_closed(socks, timeout):
    """Wait until the agent closed every socket; (closed, got_data, still_open)."""
    import selectors
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    closed = data = 0
    deadline = time.monotonic() + timeout
    left = len(socks)
    while left and time.monotonic() < deadline:
        for key, _ev in sel.select(timeout=0.5):
            s = key.fileobj
            try:
                chunk = s.recv(64)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if chunk:
                data += 1
            closed += 1
            left -= 1
            sel.unregister(s)
    sel.close()
    for s in socks:
        s.close()
    return closed, data, left


def _slowloris(port, frame, every, results):
    """Trickle ``frame`` one byte per ``every`` seconds until the agent closes."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    start = time.monotonic()
    reply = b""
    how = "completed"
    try:
        s.settimeout(every)
        for i in range(len(frame)):
            try:
                s.send(frame[i:i + 1])
            except OSError:
                how = "closed"
                break
            try:
                chunk = s.recv(64)
                if not chunk:
                    how = "closed"
                    break
                reply += chunk
            except socket.timeout:
                pass
            except OSError:
                how = "closed"
                break
            if time.monotonic() - start > 60:
                how = "hang"
                break
    finally:
        s.close()
    results.append((how, reply, time.monotonic() - start))


def hostile_trial(workdir, generated=300, idle=500, slowloris=10, valid_rate=200,
                  seed=1, frame_timeout=2.0, chooser_frames=None, log=print):
    """
    Hostile input beside valid traffic, on an agent with ``--token`` and
    ``--frame-timeout 2``: the hand list, ``generated`` spoiled frames (seeded
    random; the tests pass hypothesis-made frames in ``chooser_frames``),
    slowloris clients and ``idle`` connections that never send a byte, while
    the C generator sends valid frames at ``valid_rate``/s.  Checks: the
    agent stays up, RSS comes back down, every bad frame gets 5:ERROR or a
    close (never 2:OK, never a hang past the frame timeout), every valid
    frame is acked and stored exactly once.
    """
    rng = random.Random(seed)
    path = os.path.join(workdir, "hostile-buffer.sqlite")
    frames_path = os.path.join(workdir, "hostile-frames.bin")
    acked_file = os.path.join(workdir, "hostile-acked.txt")
    loadgen.write_frames([payloads.frame(id_payload(0), TOKEN)], frames_path)
    oracle = Oracle()
    violations = []
    outcomes = {}
    hand = hand_list()
    frames = []
    for label, data, incomplete in hand:
        frames.append((label, data, incomplete))
    if chooser_frames is None:
        chooser = RandomChooser(rng)
        skipped = 0
        while len(frames) - len(hand) < generated:
            data = generate(chooser)
            verdict = reference(data)
            if verdict == "valid":
                skipped += 1
                continue
            frames.append(("generated", data, False))
    else:
        frames.extend(("generated", data, False) for data in chooser_frames)
    wait = frame_timeout + 5.0  # IngestFactory closes between timeout and timeout + 0.5 s
    agent = Agent(path, ["--drain-workers", "0", "--token", TOKEN,
                         "--frame-timeout", str(frame_timeout)])
    gen = None
    res = {"fault": "hostile", "frames": len(frames), "idle": idle, "slowloris": slowloris}
    try:
        if not agent.start():
            raise AssertionError("agent did not start:\n" + agent.log())
        for n in range(800000000001, 800000000051):  # warm up before the baseline
            oracle.send([n])
            if send_payload(agent.port, id_payload(n), TOKEN) == OK:
                oracle.ack([n])
        rss_before = rss_kb(agent.pid)
        duration = max(10.0, 4.0 + generated / 400.0)
        gen = loadgen.start_load("127.0.0.1", agent.port, frames_path, 8, duration=duration,
                                 rate=valid_rate, acked_file=acked_file, seq_start=1,
                                 timeout=10.0)
        with RssSampler(agent.pid) as sampler:
            socks, idle_failed = _idle_holders(agent.port, idle)
            slow_results = []
            slow_frame = payloads.frame(b'[{"t":"log","id":"slowloris"}]', TOKEN)
            slow_threads = [threading.Thread(target=_slowloris,
                                             args=(agent.port, slow_frame, 0.25, slow_results))
                            for _ in range(slowloris)]
            for t in slow_threads:
                t.start()
            lock = threading.Lock()
            queue = list(frames)
            rng.shuffle(queue)

            def sender():
                while True:
                    with lock:
                        if not queue:
                            return
                        label, data, incomplete = queue.pop()
                    reply, how = exchange(agent.port, data, timeout=wait,
                                          half_close=not incomplete)
                    outcome = judge_hostile(reply, how)
                    with lock:
                        outcomes[outcome] = outcomes.get(outcome, 0) + 1
                        if outcome not in ("error", "closed"):
                            violations.append("{} frame ({}) -> {} {!r}: {!r}".format(
                                label, len(data), outcome, reply[:20], data[:60]))

            senders = [threading.Thread(target=sender) for _ in range(4)]
            for t in senders:
                t.start()
            for t in senders:
                t.join()
            closed, idle_data, idle_open = _wait_closed(socks, wait + 10)
            for t in slow_threads:
                t.join()
            out, err = gen.communicate(timeout=duration + 120)
            gen = None
            valid = loadgen.parse_result(out, err)
            time.sleep(2.0)  # quiet: let the allocator settle
            rss_after = rss_kb(agent.pid)
        alive = agent.alive()
        pinged = alive and ping(agent.port)
        rejected = agent.rejected() or {}
        res["exit_code"] = agent.stop()
        tracebacks = agent.tracebacks()
    finally:
        agent.kill()
        if gen is not None:
            gen.kill()
            gen.wait()
    oracle.send(range(1, 1 + valid["started"]))
    oracle.ack(read_acked(acked_file))
    check = oracle.check(read_buffer(path))
    slow_bad = [(how, reply, round(t, 1)) for (how, reply, t) in slow_results
                if how != "closed" or reply not in (b"", ERROR) or t > wait]
    valid_lost = valid["started"] - valid["ok"]
    if not alive:
        violations.append("the agent died")
    elif not pinged:
        violations.append("PING failed after the hostile run")
    if tracebacks:
        violations.append("{} tracebacks in the agent's log".format(tracebacks))
    if valid_lost:
        violations.append("{} of {} valid frames not acked ({})".format(
            valid_lost, valid["started"], {k: valid[k] for k in (
                "bad_reply", "reset_or_eof", "timeouts", "connect_failures")}))
    if not valid["ok"]:
        violations.append("vacuous: no valid traffic acked beside the hostile frames")
    if idle_open or idle_data:
        violations.append("idle connections: {} still open after the frame timeout, {} got "
                          "bytes".format(idle_open, idle_data))
    if slow_bad:
        violations.append("slowloris clients not closed cleanly: {}".format(slow_bad[:5]))
    growth = (rss_after or 0) - (rss_before or 0)
    if growth > 100 * 1024:
        violations.append("RSS grew by {} MB and stayed".format(growth // 1024))
    violations += check["violations"]
    res.update({
        "outcomes": outcomes, "valid_sent": valid["started"], "valid_acked": valid["ok"],
        "valid_p99_ms": valid.get("p99_ms"), "valid_p50_ms": valid.get("p50_ms"),
        "idle_closed": closed, "idle_connect_failed": idle_failed,
        "slowloris_closed": sum(1 for r in slow_results if r[0] == "closed"),
        "slowloris_max_s": round(max([r[2] for r in slow_results] or [0]), 1),
        "rss_before_kb": rss_before, "rss_peak_kb": sampler.peak, "rss_after_kb": rss_after,
        "rejected": dict((k, v) for k, v in rejected.items() if v),
        "oracle": check, "violations": violations, "ok": not violations})
    log("hostile: {n} frames {o}, {v_ok}/{v_sent} valid acked, {ic}/{idle} idle closed, "
        "{sc}/{sl} slowloris closed, RSS {b}->{p} peak->{a} kB: {verdict}".format(
            n=len(frames), o=outcomes, v_ok=valid["ok"], v_sent=valid["started"], ic=closed,
            idle=idle, sc=res["slowloris_closed"], sl=slowloris, b=rss_before, p=sampler.peak,
            a=rss_after, verdict="ok" if not violations else "; ".join(
                v.splitlines()[0][:300] for v in violations[:10])))
    return res


# -- drain side: Postgres is the store ------------------------------------------
#
# The drain trials run the agent with its workers and a real Postgres and
# judge Postgres itself: every acked id has its rows there exactly once, and
# no row carries an id never sent.  payload_with_id stamps one trace id on
# every record of a payload (trace_id, execution_id); in Postgres those are
# one request, two queries, one cache event and one log.  The user record
# carries no trace id, so only the raw tables below are counted.

PER_PAYLOAD = {"nightowl_requests": 1, "nightowl_queries": 2, "nightowl_cache_events": 1,
               "nightowl_logs": 1}
DRAIN_ARGS = ["--drain-workers", "2", "--batch-size", "200"]


def pg_counts(dsn):
    """``{seq: {table: rows}}`` over the raw tables (seq None: not a payload_with_id id)."""
    import psycopg2
    conn = psycopg2.connect(dsn)
    try:
        out = {}
        cur = conn.cursor()
        for table in PER_PAYLOAD:
            try:
                cur.execute("SELECT trace_id::text, count(*) FROM {} GROUP BY 1".format(table))
            except psycopg2.errors.UndefinedTable:
                conn.rollback()  # not migrated (yet): nothing stored
                continue
            for trace, n in cur.fetchall():
                per = out.setdefault(payloads.id_of(trace), {})
                per[table] = per.get(table, 0) + n
        return out
    finally:
        conn.close()


def pg_stored(counts):
    """
    Oracle rows from L{pg_counts}: a payload is stored k times when every raw
    table holds exactly k times its rows; otherwise it is torn (part of a
    payload committed, which one transaction per batch rules out), listed
    apart and counted once.
    """
    rows, torn = [], []
    for seq, per in counts.items():
        copies = set(per.get(table, 0) / n for table, n in PER_PAYLOAD.items())
        k = copies.pop() if len(copies) == 1 else None
        if seq is None or k is None or k != int(k) or k < 1:
            if seq is not None:
                torn.append(seq)
            rows.append((None, None, seq))
            continue
        rows.extend([(None, None, seq)] * int(k))
    return rows, sorted(torn)


def ledger_duplicates(dsn):
    """Buffer ids the delivery ledger holds more than once (one buffer per trial run)."""
    import psycopg2
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        cur.execute("SELECT count(*) - count(DISTINCT (buffer_id, i)) "
                    "FROM nightowl_ingest_ledger, unnest(ids) AS i")
        return cur.fetchone()[0] or 0
    except psycopg2.Error:
        return None  # no ledger table yet (nothing migrated)
    finally:
        conn.close()


def rollup_diffs(dsn):
    """Rollup rows (minute, hour, day tiers) that differ from a re-fold of the raw rows:
    a retried batch counted twice, or a batch's rows without its rollups."""
    from datetime import timedelta

    import psycopg2

    from nightowl.rollups import rebuild
    conn = psycopg2.connect(dsn)
    try:
        cur = conn.cursor()
        cur.execute("SELECT to_regclass('nightowl_rollups_minute') IS NOT NULL, "
                    "date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'")
        migrated, today = cur.fetchone()
        conn.rollback()
        if not migrated:
            return []
        # whole UTC days around now: the payloads' timestamps are the send time
        since, until = today - timedelta(days=2), today + timedelta(days=2)
        return rebuild.verify(conn, since, until, tiers=("minute", "hour", "day"))
    finally:
        conn.close()


def pg_check(oracle, dsn):
    """The set-membership oracle over Postgres, plus torn payloads, ledger duplicates,
    and rollups that differ from the raw rows they count."""
    rows, torn = pg_stored(pg_counts(dsn))
    check = oracle.check(rows)
    diffs = rollup_diffs(dsn)
    if diffs:
        check["violations"].append("{} rollup rows differ from the raw rows (e.g. {})".format(
            len(diffs), diffs[0][:3]))
    if torn:
        check["violations"].append("{} payloads only partly in Postgres (e.g. {})".format(
            len(torn), torn[:5]))
    dup = ledger_duplicates(dsn)
    if dup:
        check["violations"].append("the ledger holds {} buffer ids twice".format(dup))
    check.update({"torn": len(torn), "ledger_duplicates": dup, "rollup_diffs": len(diffs)})
    return check


def caught_up(agent):
    """The drain has caught up: nothing pending, claimed or queued in the buffer."""
    s = agent.status()
    if not s:
        return False
    b = s["buffer"]
    migrated = s["drain"].get("migrated") or not s["drain"].get("enabled")
    return migrated and b["pending"] == 0 and b["claimed"] == 0 and not b.get("queued")


def _status_figures(agent):
    s = agent.status() or {}
    b, d, w = s.get("buffer", {}), s.get("drain", {}), s.get("workers") or []
    return {"accepted": s.get("ingest", {}).get("accepted"),
            "pending": b.get("pending"), "claimed": b.get("claimed"),
            "drained": d.get("payloads"), "skipped": d.get("skipped"),
            "batches_failed": d.get("batches_failed"),
            "postgres_reachable": d.get("postgres_reachable"),
            "restarts": sum(int(x.get("restarts") or 0) for x in w),
            "worker_pids": [x["pid"] for x in w if x.get("alive") and x.get("pid")]}


RELEASED = re.compile(r"released (\d+) payloads claimed by (drain worker|a previous run)")


def released(lines):
    """Payloads the supervisor handed back for a retry: (from dead workers, from a previous run)."""
    worker = previous = 0
    for line in lines:
        m = RELEASED.search(line)
        if m:
            if m.group(2) == "drain worker":
                worker += int(m.group(1))
            else:
                previous += int(m.group(1))
    return worker, previous


def pid_alive(pid):
    """A live (not zombie) process."""
    try:
        with open("/proc/{}/stat".format(pid)) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _catch_up(agent, timeout, violations, what):
    """Wait (generously) for the drain; a violation with the status if it never catches up."""
    if wait_for(lambda: caught_up(agent), timeout, every=0.5):
        return True
    violations.append("{}: the drain did not catch up in {:.0f} s (status {})".format(
        what, timeout, _status_figures(agent)))
    return False


def _frames_file(workdir, name):
    path = os.path.join(workdir, name)
    loadgen.write_frames([payloads.frame(id_payload(0))], path)
    return path


def _finish_gen(gen, timeout=120):
    out, err = gen.communicate(timeout=timeout)
    return loadgen.parse_result(out, err)


def _stop_gen(gen):
    if gen is not None and gen.poll() is None:
        gen.kill()
    if gen is not None:
        gen.wait()


def agent_kill_drain_trials(workdir, dsn, trials=3, seed=1, rate=1500, concurrency=8,
                            catchup=300.0, log=print):
    """
    SIGKILL the agent, with its drain workers and a real Postgres, at a
    random moment under load; restart it on the same buffer, let the drain
    catch up and judge Postgres; repeat.  Anti-vacuity per kill: acks were
    flowing and the buffer was not empty (pending or claimed rows in the
    file just after the kill); over the run: some kill caught a worker
    holding a claim (those rows had to be drained again) and the drain
    delivered between kills.
    """
    rng = random.Random(seed)
    path = os.path.join(workdir, "akill-buffer.sqlite")
    frames_path = _frames_file(workdir, "akill-frames.bin")
    args = DRAIN_ARGS + ["--dsn", dsn]
    oracle = Oracle()
    rows = []
    violations = []
    orphans_total = 0
    for trial in range(trials + 1):
        agent = Agent(path, args)
        gen = None
        worker_pids = []
        try:
            if not agent.start():
                raise AssertionError("agent did not start:\n" + "\n".join(agent.lines[-30:]))
            caught = _catch_up(agent, catchup, violations, "restart {}".format(trial))
            check = pg_check(oracle, dsn)
            if rows:  # judge the previous kill, now that its backlog is drained
                rows[-1].update({"caught_up": caught, "pg_stored": check["stored"],
                                 "released_on_restart": released(agent.lines)[1],
                                 "violations": rows[-1]["violations"] + check["violations"]})
                rows[-1]["ok"] = not rows[-1]["violations"]
                r = rows[-1]
                log("agent kill {trial}: kill at {kill_at_s}s, {acked} acked, buffer at kill "
                    "{pending_at_kill} pending + {claimed_at_kill} claimed, {pg_stored} payloads "
                    "in Postgres: {v}".format(v="ok" if r["ok"] else "; ".join(r["violations"]),
                                              **r))
            if trial == trials:
                agent.stop()
                if not agent.stopped_cleanly():
                    violations.append("no orderly shutdown on SIGTERM after the kills")
                break
            seq_start = (trial + 1) * 10000000 + 1
            kill_at = 1.0 + rng.random() * 2.5
            acked_file = os.path.join(workdir, "akill-acked-{}.txt".format(trial))
            gen = loadgen.start_load("127.0.0.1", agent.port, frames_path, concurrency,
                                     duration=kill_at + 0.6, rate=rate, acked_file=acked_file,
                                     seq_start=seq_start, timeout=1.0)
            time.sleep(kill_at)
            before = _status_figures(agent)
            time.sleep(0.05)
            at = _status_figures(agent)
            worker_pids = at["worker_pids"]
            agent.kill()
            result = _finish_gen(gen)
            gen = None
        finally:
            agent.kill()
            _stop_gen(gen)
            # the workers follow the agent (EOF on their stdin); never leave one behind
            if worker_pids:
                gone = wait_for(lambda: not any(pid_alive(p) for p in worker_pids), 30.0)
                if not gone:
                    left = [p for p in worker_pids if pid_alive(p)]
                    orphans_total += len(left)
                    violations.append("drain workers outlived the agent: {}".format(left))
                    for p in left:
                        try:
                            os.kill(p, signal.SIGKILL)
                        except OSError:
                            pass
        if trial == trials:
            break
        oracle.send(range(seq_start, seq_start + result["started"]))
        acked = read_acked(acked_file)
        oracle.ack(acked)
        states = [st for (_r, st, _s) in read_buffer(path)]
        pending = sum(1 for st in states if st == 0)
        claimed = sum(1 for st in states if st is not None and st >= 100)
        vacuous = []
        if not ((at["accepted"] or 0) > (before["accepted"] or 0) > 0):
            vacuous.append("acks were not flowing at the kill ({} then {})".format(
                before["accepted"], at["accepted"]))
        if pending + claimed == 0:
            vacuous.append("the buffer was empty at the kill")
        if not acked:
            vacuous.append("no acks in this trial")
        rows.append({"trial": trial, "kill_at_s": round(kill_at, 2), "acked": len(acked),
                     "pending_at_kill": pending, "claimed_at_kill": claimed,
                     "drained_before_kill": at["drained"], "violations": vacuous,
                     "ok": not vacuous})
    final = pg_check(oracle, dsn)
    if not any(r["claimed_at_kill"] for r in rows):
        violations.append("vacuous: no kill caught a worker holding a claim")
    for r in rows:
        if r["claimed_at_kill"] and r.get("released_on_restart", 0) < r["claimed_at_kill"]:
            r["violations"].append("{} rows were claimed at the kill but the restart released "
                                   "{}".format(r["claimed_at_kill"], r.get("released_on_restart")))
            r["ok"] = False
    if not final["stored"]:
        violations.append("vacuous: nothing reached Postgres")
    violations += final["violations"]
    return {"fault": "agent-kill-drain", "trials": rows, "final": final,
            "orphan_workers": orphans_total,
            "ok": all(r["ok"] for r in rows) and not violations,
            "violations": violations + [v for r in rows for v in r["violations"]]}


WORKER_FAULTS = ("external", "kill-mid-copy", "kill-after-commit")


def worker_kill_trials(workdir, dsn, trials=3, seed=1, rate=1500, concurrency=8,
                       kinds=WORKER_FAULTS, load_s=4.0, catchup=300.0, log=print):
    """
    SIGKILL one drain worker per trial while the agent takes load, kinds in
    turn: ``external`` (a SIGKILL from outside at a random moment, the pid
    from /status), ``kill-mid-copy`` (the worker's own hook: dies inside the
    Nth batch's COPY) and ``kill-after-commit`` (dies between the Postgres
    commit and the SQLite mark).  Then the drain catches up and Postgres is
    judged.  Anti-vacuity: the fault fired and the supervisor respawned the
    worker; an after-commit kill must show the ledger skipping the
    committed batch on its retry; some external kill hit with claimed rows.
    """
    rng = random.Random(seed)
    path = os.path.join(workdir, "wkill-buffer.sqlite")
    frames_path = _frames_file(workdir, "wkill-frames.bin")
    oracle = Oracle()
    rows = []
    for trial in range(trials):
        kind = kinds[trial % len(kinds)]
        seq_start = (trial + 1) * 10000000 + 1
        acked_file = os.path.join(workdir, "wkill-acked-{}.txt".format(trial))
        marker = os.path.join(workdir, "wkill-fired-{}".format(trial))
        env = {}
        nth = None
        if kind != "external":
            nth = rng.randint(1, 4)
            env = {"NIGHTOWL_FAULT": "{}:{}".format(kind, nth), "NIGHTOWL_FAULT_ONCE": marker}
        agent = Agent(path, DRAIN_ARGS + ["--dsn", dsn], env=env, worker_faults=bool(env))
        gen = None
        violations = []
        row = {"trial": trial, "kind": kind, "nth": nth}
        try:
            if not agent.start():
                raise AssertionError("agent did not start:\n" + "\n".join(agent.lines[-30:]))
            _catch_up(agent, catchup, violations, "before the load")
            gen = loadgen.start_load("127.0.0.1", agent.port, frames_path, concurrency,
                                     duration=load_s, rate=rate, acked_file=acked_file,
                                     seq_start=seq_start, timeout=2.0)
            if kind == "external":
                time.sleep(0.5 + rng.random() * (load_s - 2.0))
                victim, holding = _busy_worker(agent, path, 1.0)
                row["claimed_at_kill"] = holding
                if victim is not None:
                    os.kill(victim, signal.SIGKILL)
                fired = victim is not None
            else:
                fired = bool(wait_for(lambda: os.path.exists(marker), load_s + 30.0, every=0.1))
            result = _finish_gen(gen)
            gen = None
            respawned = wait_for(lambda: _status_figures(agent)["restarts"] >= 1, 60.0, every=0.5)
            _catch_up(agent, catchup, violations, "after the fault")
            fig = _status_figures(agent)
            agent.stop()
            tracebacks = agent.tracebacks()
        finally:
            agent.kill()
            _stop_gen(gen)
        oracle.send(range(seq_start, seq_start + result["started"]))
        acked = read_acked(acked_file)
        oracle.ack(acked)
        check = pg_check(oracle, dsn)
        retried = released(agent.lines)[0]
        if not fired:
            violations.append("vacuous: the {} fault never fired".format(kind))
        if not respawned:
            violations.append("the killed worker was not respawned")
        if kind != "external" and fired and retried <= 0:
            # the hooks fire with a claimed batch (committed, for after-commit): its rows
            # must come back for a retry, which the ledger then makes a no-op
            violations.append("vacuous: the killed worker's claimed rows were never released "
                              "for a retry")
        if not acked:
            violations.append("vacuous: no acks in this trial")
        if tracebacks:
            violations.append("{} tracebacks in the agent's log".format(tracebacks))
        violations += check["violations"]
        row.update({"acked": len(acked), "pg_stored": check["stored"], "restarts": fig["restarts"],
                    "retried": retried, "violations": violations, "ok": not violations})
        rows.append(row)
        log("worker kill {trial} ({kind}{n}): {acked} acked, {pg_stored} payloads in Postgres, "
            "{restarts} restarts, {retried} claimed payloads released for a retry: {v}".format(
                n="" if nth is None else ":{}".format(nth),
                v="ok" if row["ok"] else "; ".join(violations), **row))
    final = pg_check(oracle, dsn)
    violations = list(final["violations"])
    external = [r for r in rows if r["kind"] == "external"]
    # one aimed kill can still land just after the batch was marked; over three or
    # more (the long run) at least one must force a retry
    if len(external) >= 3 and not any(r.get("claimed_at_kill") and r["retried"]
                                      for r in external):
        violations.append("vacuous: no external kill hit a worker holding a claim")
    return {"fault": "worker-kill", "trials": rows, "final": final,
            "ok": all(r["ok"] for r in rows) and not violations,
            "violations": violations + [v for r in rows for v in r["violations"]]}


def _busy_worker(agent, path, within):
    """
    A live worker's pid, preferring one that holds a claim right now (state
    100 + N in the buffer file, read-only), polled for up to ``within``
    seconds; ``(pid, rows it held when seen)``.  None when no worker is up.
    """
    s = agent.status() or {}
    pids = dict((w.get("worker"), w["pid"]) for w in s.get("workers") or ()
                if w.get("alive") and w.get("pid"))
    if not pids:
        return None, 0
    deadline = time.monotonic() + within
    conn = sqlite3.connect("file:{}?mode=ro".format(path), uri=True, timeout=5)
    try:
        while time.monotonic() < deadline:
            try:
                held = conn.execute("SELECT state - 100, count(*) FROM payloads "
                                    "WHERE state >= 100 GROUP BY state").fetchall()
            except sqlite3.OperationalError:
                held = []
            for worker, n in held:
                if worker in pids:
                    return pids[worker], n
            time.sleep(0.002)
    finally:
        conn.close()
    return random.choice(sorted(pids.values())), 0


def _pgcluster():
    """tests/integration/pgcluster.py: the throwaway cluster (in the repository only)."""
    if _REPO not in sys.path:
        sys.path.insert(0, _REPO)
    from tests.integration.pgcluster import PgCluster
    return PgCluster


def outage_trial(workdir, seed=1, rate=1000, concurrency=8, outage_s=4.0, catchup=300.0,
                 cluster=None, log=print):
    """
    Stop Postgres (a throwaway cluster, ``pg_ctl stop -m immediate``) while
    the drain works under load, keep sending through the outage, start it
    again: ingest keeps acking into the buffer, the backlog drains by itself,
    and Postgres holds every acked id once.  Anti-vacuity: the drain had
    delivered before the stop, a worker saw Postgres unreachable, acks came
    in during the outage and the buffer grew, batches failed and were
    retried.
    """
    rng = random.Random(seed)
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "outage-buffer.sqlite")
    frames_path = _frames_file(workdir, "outage-frames.bin")
    acked_file = os.path.join(workdir, "outage-acked.txt")
    oracle = Oracle()
    violations = []
    res = {"fault": "pg-outage", "outage_s": outage_s}
    own = cluster is None
    if own:
        cluster = _pgcluster()()
        cluster.init()
    gen = None
    agent = None
    try:
        if own or not cluster.running:
            cluster.start()
        dsn = cluster.create_database("outage_{}".format(rng.randrange(1 << 30)))
        agent = Agent(path, DRAIN_ARGS + ["--dsn", dsn])
        if not agent.start():
            raise AssertionError("agent did not start:\n" + "\n".join(agent.lines[-30:]))
        # long enough to span the stop, the outage and the restart (the
        # generator prints its result, and flushes the acked ids, only at the end)
        total = 6.0 + outage_s + 4.0
        gen = loadgen.start_load("127.0.0.1", agent.port, frames_path, concurrency,
                                 duration=total, rate=rate, acked_file=acked_file,
                                 seq_start=1, timeout=2.0)
        started = wait_for(lambda: (_status_figures(agent)["drained"] or 0) > 0, 60.0, every=0.2)
        time.sleep(rng.random())
        cluster.stop("immediate")
        noticed = wait_for(lambda: _status_figures(agent)["postgres_reachable"] is False,
                           60.0, every=0.2)
        during0 = _status_figures(agent)
        time.sleep(outage_s)
        during1 = _status_figures(agent)
        cluster.start()
        result = _finish_gen(gen)
        gen = None
        _catch_up(agent, catchup, violations, "after Postgres came back")
        after = _status_figures(agent)
        agent.stop()
        if agent.tracebacks():
            violations.append("{} tracebacks in the agent's log".format(agent.tracebacks()))
        acked = read_acked(acked_file)
        oracle.send(range(1, 1 + result["started"]))
        oracle.ack(acked)
        check = pg_check(oracle, dsn)
    finally:
        _stop_gen(gen)
        if agent is not None:
            agent.kill()
        if own:
            cluster.destroy()
    acked_during = (during1["accepted"] or 0) - (during0["accepted"] or 0)
    backlog0 = (during0["pending"] or 0) + (during0["claimed"] or 0)
    backlog1 = (during1["pending"] or 0) + (during1["claimed"] or 0)
    if not started:
        violations.append("vacuous: the drain delivered nothing before the stop")
    if not noticed:
        violations.append("vacuous: no worker reported Postgres unreachable")
    if acked_during <= 0:
        violations.append("ingest did not ack during the outage")
    if backlog1 <= backlog0:
        violations.append("vacuous: the buffer did not grow during the outage ({} -> {})".format(
            backlog0, backlog1))
    if not (after["batches_failed"] or 0):
        violations.append("vacuous: no failed batch (no retry happened)")
    if after["postgres_reachable"] is not True:
        violations.append("workers still report Postgres unreachable after the restart")
    violations += check["violations"]
    res.update({"acked": check["acked"], "pg_stored": check["stored"],
                "acked_during_outage": acked_during, "backlog_before": backlog0,
                "backlog_after": backlog1,
                "drained_during_outage": (during1["drained"] or 0) - (during0["drained"] or 0),
                "batches_failed": after["batches_failed"], "oracle": check,
                "violations": violations, "ok": not violations})
    log("pg outage: {acked_during_outage} acked during a {outage_s} s outage, backlog "
        "{backlog_before} -> {backlog_after}, {batches_failed} failed batches, {acked} acked, "
        "{pg_stored} in Postgres: {v}".format(v="ok" if res["ok"] else "; ".join(violations),
                                              **res))
    return res


# -- the command --------------------------------------------------------------

def configure(parser):
    parser.add_argument("--kill-trials", type=int, default=20,
                        help="SIGKILL trials under load (default 20)")
    parser.add_argument("--generated", type=int, default=10000,
                        help="generated hostile frames (default 10000)")
    parser.add_argument("--idle", type=int, default=5000,
                        help="idle connections held open during the hostile run (default 5000)")
    parser.add_argument("--slowloris", type=int, default=50,
                        help="slowloris clients during the hostile run (default 50)")
    parser.add_argument("--max-pending", type=int, default=200,
                        help="--max-pending for the back-pressure trial (default 200)")
    parser.add_argument("--dsn", default=None,
                        help="PostgreSQL DSN of a scratch database for the back-pressure "
                             "trial's real drain (default: create one via --admin-dsn)")
    parser.add_argument("--admin-dsn", default=os.environ.get(
        "NIGHTOWL_TEST_ADMIN_DSN",
        "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5"),
        help="DSN used to create and drop a scratch database when --dsn is not given; "
             "'none' to drain out of band instead")
    parser.add_argument("--agent-kill-trials", type=int, default=20,
                        help="SIGKILL trials of the agent with its drain workers and Postgres "
                             "(default 20)")
    parser.add_argument("--worker-kill-trials", type=int, default=21,
                        help="SIGKILL trials of one drain worker: from outside, mid-COPY, "
                             "between commit and mark, in turn (default 21)")
    parser.add_argument("--outage-trials", type=int, default=2,
                        help="Postgres stopped (immediate) mid-drain and started again "
                             "(default 2)")
    parser.add_argument("--drain-rate", type=int, default=1500,
                        help="payloads/s sent during the drain trials (default 1500)")
    parser.add_argument("--only", default=None,
                        help="comma-separated faults to run: sigkill, back-pressure, "
                             "disk-full, corrupt, hostile, agent-kill, worker-kill, pg-outage, "
                             "clock-skew, second-agent, big-frames, poison-claim, "
                             "frozen-worker")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")


def table(results):
    """Rows ``fault | trial | outcome | detail`` for every trial."""
    rows = []
    for r in results:
        if r["fault"] == "sigkill":
            for t in r["trials"]:
                rows.append(("sigkill", "#{}".format(t["trial"]), "ok" if t["ok"] else "FAIL",
                             "kill at {}s: {} acked, {} stored, {} broken in flight, "
                             "{} stored unacked".format(t["kill_at_s"], t["acked"], t["stored"],
                                                        t["in_flight_broken"],
                                                        t["stored_unacked"])))
            f = r["final"]
            rows.append(("sigkill", "all", "ok" if r["ok"] else "FAIL",
                         "{} issued, {} acked, {} stored, {} missing, {} dup, {} foreign".format(
                             f["sent"], f["acked"], f["stored"], f["missing"],
                             f["duplicates"], f["foreign"])))
        elif r["fault"] == "agent-kill-drain":
            for t in r["trials"]:
                rows.append(("agent-kill", "#{}".format(t["trial"]), "ok" if t["ok"] else "FAIL",
                             "kill at {}s: {} acked, buffer {} pending + {} claimed, {} released "
                             "on restart, {} in Postgres".format(
                                 t["kill_at_s"], t["acked"], t["pending_at_kill"],
                                 t["claimed_at_kill"], t.get("released_on_restart"),
                                 t.get("pg_stored"))))
            f = r["final"]
            rows.append(("agent-kill", "all", "ok" if r["ok"] else "FAIL",
                         "{} issued, {} acked, {} in Postgres, {} missing, {} dup, {} foreign, "
                         "{} torn, {} orphan workers".format(
                             f["sent"], f["acked"], f["stored"], f["missing"], f["duplicates"],
                             f["foreign"], f["torn"], r["orphan_workers"])))
        elif r["fault"] == "worker-kill":
            for t in r["trials"]:
                rows.append(("worker-kill", "#{} {}{}".format(
                    t["trial"], t["kind"], "" if t["nth"] is None else ":{}".format(t["nth"])),
                    "ok" if t["ok"] else "FAIL",
                    "{} acked, {} restarts, {} released for retry{}, {} in Postgres".format(
                        t["acked"], t["restarts"], t["retried"],
                        "" if "claimed_at_kill" not in t else ", {} claimed at kill".format(
                            t["claimed_at_kill"]), t["pg_stored"])))
            f = r["final"]
            rows.append(("worker-kill", "all", "ok" if r["ok"] else "FAIL",
                         "{} issued, {} acked, {} in Postgres, {} missing, {} dup, {} foreign, "
                         "{} torn".format(f["sent"], f["acked"], f["stored"], f["missing"],
                                          f["duplicates"], f["foreign"], f["torn"])))
        elif r["fault"] == "pg-outage":
            o = r["oracle"]
            rows.append(("pg-outage", "{} s".format(r["outage_s"]), "ok" if r["ok"] else "FAIL",
                         "{} acked during the outage, backlog {}->{}, {} failed batches; "
                         "{} acked, {} in Postgres, {} missing, {} dup, {} foreign".format(
                             r["acked_during_outage"], r["backlog_before"], r["backlog_after"],
                             r["batches_failed"], o["acked"], o["stored"], o["missing"],
                             o["duplicates"], o["foreign"])))
        elif r["fault"] == "back-pressure":
            rows.append(("back-pressure", "max {}".format(r["max_pending"]),
                         "ok" if r["ok"] else "FAIL",
                         "{} acked, {} refused ({} counted); after drain: {}".format(
                             r.get("acked_before_full"), r.get("refused"),
                             r.get("counted_back_pressure"),
                             r.get("acked_after_drain", r.get("resumed_out_of_band")))))
        elif r["fault"] == "disk-full":
            rows.append(("disk-full", r["tmpfs"], "ok" if r["ok"] else "FAIL",
                         "{} acked, {} refused, {}; resumed {}/20".format(
                             r.get("acked_before_full"), r.get("refused"), r.get("rejected"),
                             r.get("acked_after_freeing"))))
        elif r["fault"] == "corrupt":
            rows.append(("corrupt", r["case"], "ok" if r["ok"] else "FAIL",
                         "{}{}".format("/".join(r["outcomes"]),
                                       ", moved aside" if r.get("moved_aside") else "")))
        elif "detail" in r:  # nightowl.bench.faults_guards
            rows.append((r["fault"], r["trial"], "ok" if r["ok"] else "FAIL", r["detail"]))
        elif r["fault"] == "hostile":
            rows.append(("hostile", "{} frames".format(r["frames"]), "ok" if r["ok"] else "FAIL",
                         "{}; valid {}/{} (ack p99 {} ms); idle closed {}/{}; slowloris {}/{}; "
                         "RSS {}->{}->{} kB".format(r["outcomes"], r["valid_acked"],
                                                     r["valid_sent"], r.get("valid_p99_ms"),
                                     r["idle_closed"], r["idle"], r["slowloris_closed"],
                                     r["slowloris"], r["rss_before_kb"], r["rss_peak_kb"],
                                     r["rss_after_kb"])))
        if not r["ok"]:
            for v in r["violations"][:5]:
                rows.append(("", "", "", "  " + v.splitlines()[0][:200]))
    return rows


def run(args):
    seed = args.seed if args.seed is not None else int(time.time())
    only = set(args.only.split(",")) if args.only else {
        "sigkill", "back-pressure", "disk-full", "corrupt", "hostile", "agent-kill",
        "worker-kill", "pg-outage", "clock-skew", "second-agent", "big-frames", "poison-claim",
        "frozen-worker"}
    tmp = tempfile.mkdtemp(prefix="nightowl-faults-")
    results = []
    errors = []
    started = time.time()

    def log(line):
        print(line, file=sys.stderr, flush=True)

    def attempt(name, fn, *a, **kw):
        try:
            results.append(fn(*a, **kw))
        except Exception as e:  # a harness failure is reported, not hidden
            import traceback
            errors.append("{}: {!r}".format(name, e))
            traceback.print_exc()

    try:
        if "sigkill" in only:
            attempt("sigkill", kill_trials, tmp, trials=args.kill_trials, seed=seed, log=log)
        if "back-pressure" in only:
            dsn, name = args.dsn, None
            if dsn is None and args.admin_dsn != "none":
                name, dsn = scratch.create_database(args.admin_dsn)
            try:
                attempt("back-pressure", backpressure_trial, tmp, args.max_pending, dsn, log=log)
            finally:
                if name:
                    scratch.drop_database(args.admin_dsn, name)
        if "disk-full" in only:
            if can_mount():
                attempt("disk-full", diskfull_trial, tmp, log=log)
            else:
                errors.append("disk-full: needs root to mount a tmpfs (skipped)")
        if "corrupt" in only:
            for case in CORRUPTIONS:
                attempt("corrupt " + case, corrupt_trial, tmp, case, seed=seed, log=log)
        drain_faults = only & {"agent-kill", "worker-kill"}
        if drain_faults:
            dsn, name = args.dsn, None
            if dsn is None:
                if args.admin_dsn == "none":
                    errors.append("agent-kill/worker-kill: need --dsn or --admin-dsn (skipped)")
                    drain_faults = set()
            for fault in sorted(drain_faults):
                if args.dsn is None:  # a fresh database per fault: the oracle counts all rows
                    name, dsn = scratch.create_database(args.admin_dsn)
                try:
                    if fault == "agent-kill":
                        attempt("agent-kill", agent_kill_drain_trials, tmp, dsn,
                                trials=args.agent_kill_trials, seed=seed, rate=args.drain_rate,
                                log=log)
                    else:
                        attempt("worker-kill", worker_kill_trials, tmp, dsn,
                                trials=args.worker_kill_trials, seed=seed, rate=args.drain_rate,
                                log=log)
                finally:
                    if name:
                        scratch.drop_database(args.admin_dsn, name)
                        name = None
        if "pg-outage" in only:
            for k in range(args.outage_trials):
                attempt("pg-outage", outage_trial, os.path.join(tmp, "outage-{}".format(k)),
                        seed=seed + k, rate=min(args.drain_rate, 1000),
                        outage_s=3.0 + 2.0 * k, log=log)
        if "hostile" in only:
            made = hypothesis_frames(args.generated)
            log("hostile: {} frames generated by {}".format(
                args.generated if made is None else len(made),
                "a seeded random source" if made is None else "hypothesis"))
            attempt("hostile", hostile_trial, tmp, generated=args.generated, idle=args.idle,
                    slowloris=args.slowloris, seed=seed, chooser_frames=made, log=log)
        from nightowl.bench import faults_guards

        @contextlib.contextmanager
        def dsn_for(fault):
            if args.dsn is not None:
                yield args.dsn
                return
            if args.admin_dsn == "none":
                errors.append("{}: needs --dsn or --admin-dsn (skipped)".format(fault))
                yield None
                return
            name, dsn = scratch.create_database(args.admin_dsn)
            try:
                yield dsn
            finally:
                scratch.drop_database(args.admin_dsn, name)
        faults_guards.run_all(tmp, only, dsn_for, log, attempt)
    finally:
        if args.keep:
            log("kept {}".format(tmp))
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    rows = table(results)
    widths = [max([len(r[i]) for r in rows] + [len(h)]) for i, h in enumerate(
        ("fault", "trial", "outcome"))]
    print("{:<{}}  {:<{}}  {:<{}}  {}".format("fault", widths[0], "trial", widths[1],
                                               "outcome", widths[2], "detail"))
    for r in rows:
        print("{:<{}}  {:<{}}  {:<{}}  {}".format(r[0], widths[0], r[1], widths[1],
                                                   r[2], widths[2], r[3]))
    for e in errors:
        print("ERROR  " + e)
    trials = sum(len(r["trials"]) if "trials" in r else 1 for r in results)
    failed = [r["fault"] + ("/" + r["case"] if "case" in r else "")
              for r in results if not r["ok"]]
    summary = {"seed": seed, "trials": trials, "failed": failed, "harness_errors": errors,
               "seconds": round(time.time() - started, 1), "ok": not failed and not errors,
               "results": results}
    print(json.dumps(summary, sort_keys=True, default=str))
    return 0 if summary["ok"] else 1
