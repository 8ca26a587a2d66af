"""
Python side of the C load generator (``nwload.c``, shipped as package data).

``binary()`` compiles it with ``cc -O2`` into ``$NIGHTOWL_CACHE`` (default
``~/.cache/nightowl``) under a name that carries the source's hash, so an
edited source is recompiled and an unchanged one never is.  ``run_load()``
writes the frames to a file, runs the generator and returns its JSON result.
"""

import hashlib
import json
import os
import shutil
import subprocess
import tempfile

from nightowl.errors import CommandError

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nwload.c")


def cache_dir():
    path = os.environ.get("NIGHTOWL_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "nightowl")
    os.makedirs(path, exist_ok=True)
    return path


def binary():
    """Path of the compiled generator, compiling it first when needed."""
    with open(SOURCE, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    path = os.path.join(cache_dir(), "nwload-" + digest)
    if os.path.exists(path):
        return path
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise CommandError("no C compiler found (install cc or set CC) to build the load generator")
    tmp = path + ".tmp.{}".format(os.getpid())
    result = subprocess.run([cc, "-O2", "-o", tmp, SOURCE, "-lm"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise CommandError("compiling {} failed: {}".format(
            SOURCE, (result.stderr.strip().splitlines() or ["?"])[-1]))
    os.replace(tmp, path)  # atomic: concurrent builders never see half a binary
    return path


def write_frames(frames, path):
    """Write complete frames back to back, the generator's input format."""
    with open(path, "wb") as f:
        for frame in frames:
            f.write(frame)


def command(host, port, frames_path, concurrency, duration=None, count=None, rate=None,
            acked_file=None, split=False, timeout=0.5, seq_start=None, seq=False):
    """The argv that runs the generator."""
    if not duration and not count:
        raise ValueError("give a duration or a count")
    argv = [binary(), "--host", host, "--port", str(port), "--frames", frames_path,
            "--concurrency", str(concurrency), "--timeout", str(timeout),
            "--connect-timeout", str(timeout)]
    if duration:
        argv += ["--duration", str(duration)]
    if count:
        argv += ["--count", str(count)]
    if rate:
        argv += ["--rate", str(rate)]
    if split:
        argv.append("--split")
    if seq or acked_file:
        argv.append("--seq")
    if seq_start is not None:
        argv += ["--seq-start", str(seq_start)]
    if acked_file:
        argv += ["--acked-file", acked_file]
    return argv


def parse_result(stdout, stderr=""):
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise CommandError("the load generator printed no result: {}".format(
            (stderr.strip().splitlines() or ["(no output)"])[-1]))
    return json.loads(lines[-1])


def run_load(host, port, frames, concurrency, duration=None, count=None, rate=None,
             acked_file=None, split=False, timeout=0.5, seq_start=None):
    """
    Drive ``host:port`` with ``frames`` (a list of complete frames, used
    round-robin) and return the generator's result dict: ok, errors,
    timeouts, connect_failures, payloads_per_s, p50_ms, p99_ms, max_ms, ...
    """
    with tempfile.NamedTemporaryFile(prefix="nwload-frames-", suffix=".bin",
                                     delete=False) as f:
        path = f.name
    try:
        write_frames(frames, path)
        argv = command(host, port, path, concurrency, duration, count, rate,
                       acked_file, split, timeout, seq_start)
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            raise CommandError("the load generator failed: {}".format(
                (result.stderr.strip().splitlines() or ["exit {}".format(result.returncode)])[-1]))
        return parse_result(result.stdout, result.stderr)
    finally:
        os.unlink(path)


def start_load(host, port, frames_path, concurrency, **kw):
    """Start the generator without waiting: returns the Popen (read its stdout)."""
    argv = command(host, port, frames_path, concurrency, **kw)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
