"""
``nightowl status``: ask the running agent's /status and summarise it.

Exit code: 0 healthy, 1 degraded, 2 critical, 3 agent unreachable.
"""

import json
import os
import urllib.error
import urllib.request

from nightowl.admin.progress import human_size

EXIT = {"healthy": 0, "degraded": 1, "critical": 2}
UNREACHABLE = 3


def default_url():
    """http://HOST:PORT of NIGHTOWL_HEALTH (strports), else 127.0.0.1:2409."""
    from nightowl.admin.ping import endpoint_address
    spec = os.environ.get("NIGHTOWL_HEALTH", "").strip()
    if spec and spec.lower() not in ("none", "off"):
        try:
            host, port = endpoint_address(spec)
            return "http://{}:{}".format(host, port)
        except ValueError:
            pass
    return "http://127.0.0.1:2409"


def configure(parser):
    parser.add_argument("--url", default=None,
                        help="the agent's health endpoint (default: from NIGHTOWL_HEALTH, "
                             "else http://127.0.0.1:2409)")
    parser.add_argument("--json", action="store_true", help="print the raw /status JSON")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")


def fetch(url, timeout=5.0):
    """The /status document; raises CommandError(code 3) when unreachable."""
    from nightowl.errors import CommandError
    target = url.rstrip("/") + "/status"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as e:
        raise CommandError("{} answered HTTP {} (is it a nightowl health endpoint?)".format(
            target, e.code), code=UNREACHABLE)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        reason = getattr(reason, "strerror", None) or str(reason)
        raise CommandError("agent unreachable at {}: {}".format(target, reason),
                           code=UNREACHABLE)
    try:
        doc = json.loads(body)
        doc["status"]
    except (ValueError, KeyError, TypeError):
        raise CommandError("{} did not return a nightowl status document".format(target),
                           code=UNREACHABLE)
    return doc




def _duration(seconds):
    if seconds is None:
        return "never"
    s = int(seconds)
    if s < 120:
        return "{:.0f} s".format(seconds)
    if s < 7200:
        return "{}m {}s".format(s // 60, s % 60)
    if s < 172800:
        return "{}h {}m".format(s // 3600, (s % 3600) // 60)
    return "{}d {}h".format(s // 86400, (s % 86400) // 3600)


def summary(doc):
    """The readable summary, as a list of lines."""
    lines = ["nightowl {}: {} (up {})".format(
        doc.get("version", "?"), doc["status"].upper(), _duration(doc.get("uptime_seconds")))]
    for r in doc.get("reasons") or ():
        lines.append("  {:<8} {}: {}".format(r.get("level"), r.get("code"), r.get("message")))
    ing = doc.get("ingest") or {}
    rejected = dict((k, v) for k, v in (ing.get("rejected") or {}).items() if v)
    lines.append("ingest   accepted {} ({:.2f}/s), rejected {}{} ({:.2f}/s), pings {}, "
                 "connections open {}".format(
                     ing.get("accepted", 0), ing.get("accept_rate") or 0,
                     ing.get("rejected_total", 0),
                     " [" + ", ".join("{} {}".format(k, v) for k, v in sorted(rejected.items()))
                     + "]" if rejected else "",
                     ing.get("reject_rate") or 0, ing.get("pings", 0),
                     ing.get("connections_open", 0)))
    buf = doc.get("buffer") or {}
    lines.append("buffer   pending {}, claimed {}, quarantined {}, oldest pending {}, "
                 "file {} + WAL {}, back-pressure {}, write errors {}, last commit {} ago".format(
                     buf.get("pending", 0), buf.get("claimed", 0), buf.get("quarantined", 0),
                     _duration(buf.get("oldest_pending_age_seconds") or 0),
                     human_size(buf.get("file_bytes")), human_size(buf.get("wal_bytes")),
                     "ON" if buf.get("back_pressure") else "off", buf.get("write_errors", 0),
                     _duration(buf.get("last_commit_age_seconds"))))
    drain = doc.get("drain") or {}
    if not drain.get("dsn_configured"):
        lines.append("drain    disabled: no DSN configured")
    elif not drain.get("workers_configured"):
        lines.append("drain    disabled: drain-workers is 0")
    else:
        pg = drain.get("postgres_reachable")
        lines.append("drain    {} payloads, {} rows ({:.2f} payloads/s), batches failed {}, "
                     "postgres {}, lag {}{}".format(
                         drain.get("payloads", 0), drain.get("rows", 0),
                         drain.get("payload_rate") or 0, drain.get("batches_failed", 0),
                         "reachable" if pg else "UNREACHABLE" if pg is False else "not tried yet",
                         _duration(drain.get("lag_seconds") or 0),
                         _last_error(drain)))
    for child in (doc.get("ingest_processes") or {}).get("children") or ():
        lines.append(_child_line(child))
    for w in doc.get("workers") or ():
        lines.append("worker {}{} pid {} {}, restarts {} ({} in the last 10 min){}".format(
            w.get("worker"), "" if w.get("process") is None else
            " of process {}".format(w["process"]), w.get("pid"), w.get("state"),
            w.get("restarts", 0), w.get("restarts_last_10min", 0),
            ", CRASH LOOP" if w.get("crash_loop") else ""))
    if doc.get("forward"):
        lines.append(_forward_line(doc["forward"]))
    if doc.get("alerts"):
        lines.append(_alerts_line(doc["alerts"]))
    proc = doc.get("process") or {}
    lines.append("process  pid {}{}, RSS {}, {} threads".format(
        proc.get("pid"), " (the parent)" if doc.get("ingest_processes") else "",
        human_size(proc.get("rss_bytes")), proc.get("threads")))
    return lines


def _last_error(drain):
    """The drain's last error, with how long ago when known (it stays after recovery)."""
    if not drain.get("last_error"):
        return ""
    age = drain.get("last_error_age_seconds")
    when = "" if age is None else " ({} ago)".format(_duration(age))
    return ", last error{}: {}".format(when, drain["last_error"])


def _child_line(child):
    """One ingest process of --ingest-processes N."""
    sub = child.get("document") or {}
    ing, buf = sub.get("ingest") or {}, sub.get("buffer") or {}
    return ("ingest process {} pid {} {}, {}, restarts {} ({} in the last 10 min), accepted {}, "
            "pending {}, buffer {}".format(
                child.get("index"), child.get("pid"), child.get("state"),
                (child.get("status") or "no status").upper(), child.get("restarts", 0),
                child.get("restarts_last_10min", 0), ing.get("accepted", "?"),
                buf.get("pending", "?"), child.get("buffer")))


def _forward_line(fw):
    """--forward: the upstream, the backlog against its bound, what was sent and dropped."""
    if fw.get("upstream_up") is False:
        state = "DOWN for {}".format(_duration(fw.get("down_seconds") or 0))
    else:
        state = "up"
    return ("forward  to {}: {}, backlog {} ({}) of {} rows, forwarded {}, dropped {}{}".format(
        fw.get("target"), state, fw.get("backlog_rows", 0), human_size(fw.get("backlog_bytes")),
        fw.get("max_rows"), fw.get("forwarded", 0), fw.get("dropped", 0),
        ", last error " + fw["last_error"] if fw.get("last_error") else ""))


def _alerts_line(al):
    if not al.get("enabled"):
        return "alerts   off"
    return "alerts   {} channels, sent {}, failed {}{}".format(
        al.get("channels_cached", 0), al.get("sends_ok", 0), al.get("sends_failed", 0),
        ", last error " + al["last_error"] if al.get("last_error") else "")


def run(args):
    url = args.url or default_url()
    doc = fetch(url, timeout=args.timeout)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=False))
    else:
        print("\n".join(summary(doc)))
    return EXIT.get(doc["status"], 2)
