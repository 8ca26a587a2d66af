"""
What the benchmarks and fault trials read about other processes from /proc:
CPU ticks and seconds (``/proc/PID/stat``), VmRSS and VmHWM
(``/proc/PID/status``), whether a pid is alive, and a thread sampling the
peak RSS of a process.  Every reader returns None once the process is gone.
"""

import os
import threading


def _stat_fields(pid):
    """The fields of /proc/PID/stat after the command name, or None."""
    try:
        with open("/proc/{}/stat".format(pid)) as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def ticks(pid):
    """User + system CPU clock ticks of a live process."""
    fields = _stat_fields(pid)
    try:
        return int(fields[11]) + int(fields[12])
    except (TypeError, IndexError, ValueError):
        return None


def ticks_of(pids):
    """``{pid: ticks}`` for those of ``pids`` still alive."""
    out = {}
    for pid in pids:
        t = ticks(pid)
        if t is not None:
            out[pid] = t
    return out


def cpu_seconds(pid):
    """User + system CPU seconds of a live process."""
    t = ticks(pid)
    return None if t is None else t / os.sysconf("SC_CLK_TCK")


def pid_alive(pid):
    """A live (not zombie) process."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] != "Z"


def memory_kb(pid):
    """``{"VmRSS": kB, "VmHWM": kB}`` of a live process (keys missing once it is gone)."""
    found = {}
    try:
        with open("/proc/{}/status".format(pid)) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    found[key] = int(value.split()[0])
    except OSError:
        pass
    return found


def rss_kb(pid):
    """VmRSS of a live process in kB (None once it is gone)."""
    return memory_kb(pid).get("VmRSS")


class RssSampler:
    """Samples a process's VmRSS in a thread every ``every`` s; ``peak`` in kB."""

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

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


BOX_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def box_ticks(path="/proc/stat"):
    """The whole machine's CPU ticks by kind (the ``cpu`` line of /proc/stat), or None."""
    try:
        with open(path) as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    return dict(zip(BOX_FIELDS, (int(v) for v in fields[1:1 + len(BOX_FIELDS)])))


def box_share(before, after, cpus=None):
    """
    Percent of the whole machine (``cpus`` x 100 %) by kind between two
    L{box_ticks}: what no process is charged for shows here, the kernel's
    network work (softirq, for loopback TCP) and the time the host took
    (steal).  None if either reading is missing.
    """
    if before is None or after is None:
        return None
    delta = dict((k, after[k] - before[k]) for k in BOX_FIELDS)
    total = sum(delta.values())
    if total <= 0:
        return None
    cpus = cpus or os.cpu_count() or 1
    return dict((k, round(100.0 * cpus * v / total, 1)) for k, v in delta.items())
