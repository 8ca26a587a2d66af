"""
Shared by the health tests (tests/test_health_*.py, test_retention_skew.py):
a healthy snapshot to change one figure of, the clock it is read at, and
the (code, level) pairs of the reasons.
"""

NOW = 1000000.0


def healthy_snapshot(**changes):
    snap = {
        "buffer": {"writer_alive": True, "probe_outstanding_since": None,
                   "last_write_error_seen_at": None, "last_error": None,
                   "back_pressure": False, "pending": 0, "claimed": 0, "max_pending": 100,
                   "quarantined": 0, "oldest_pending_age_seconds": 0.0},
        "drain": {"enabled": True, "dsn_configured": True, "workers_configured": 2,
                  "postgres_reachable": True, "last_error": None},
        "workers": [{"worker": 0, "restart_times": []}, {"worker": 1, "restart_times": []}],
    }
    for path, value in changes.items():
        section, key = path.split("__")
        if section == "workers":
            snap["workers"][0][key] = value
        else:
            snap[section][key] = value
    return snap


def codes(reasons):
    return [(r["code"], r["level"]) for r in reasons]
