"""
The corrupt-buffer trial: a buffer file damaged in one of ``CORRUPTIONS``
ways before the agent starts; the agent must start on it (or move it aside
and start fresh, or refuse in one line) and keep every intact acked payload.
"""

import os
import random
import shutil
import sqlite3
import time

from nightowl.bench.agent import OK, Agent, id_payload, send_payload
from nightowl.bench.faults.oracle import read_buffer


# -- trial 6: a corrupt buffer at startup -------------------------------------

def _populate(path, n, seq_start=1, crash_image_of_wal=False):
    """
    Write ``n`` payload rows with the agent's own schema.  With
    ``crash_image_of_wal`` the file pair is copied while the WAL still holds
    the rows (as a SIGKILL leaves it), one commit per row.
    """
    from nightowl.buffer.schema import buffer_identity, connect
    src = path + ".src" if crash_image_of_wal else path
    conn = connect(src)
    try:
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("BEGIN IMMEDIATE")
        buffer_identity(conn)
        conn.execute("COMMIT")
        if not crash_image_of_wal:
            conn.execute("BEGIN IMMEDIATE")
        from nightowl.buffer.schema import insert_many
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
