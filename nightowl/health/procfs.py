"""
The agent process's own figures (RSS, threads) from /proc/self/status on
Linux, with a best-effort fallback elsewhere.
"""

import os
import threading


def process_figures():
    """RSS bytes and thread count from /proc/self/status (Linux), else best effort."""
    rss = threads_ = None
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith(b"Threads:"):
                    threads_ = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    if rss is None:
        try:
            import resource
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        except Exception:
            rss = 0
    if threads_ is None:
        threads_ = threading.active_count()
    return {"pid": os.getpid(), "rss_bytes": rss, "threads": threads_}
