"""
The drain worker's environment contract (nightowl.drain.config) and its
test-only fault parsing (nightowl.drain.faults).
"""

import pytest

from nightowl.drain.config import Config, ConfigError


def test_config_from_environ():
    cfg = Config.from_environ({"NIGHTOWL_DSN": "dbname=x", "NIGHTOWL_BUFFER": "/b",
                               "NIGHTOWL_WORKER_ID": "2", "NIGHTOWL_BATCH_SIZE": "10",
                               "NIGHTOWL_LEDGER": "0", "NIGHTOWL_FAULT": "kill-mid-copy:3"})
    assert (cfg.worker_id, cfg.batch_size, cfg.ledger, cfg.fault, cfg.environment) == \
        (2, 10, False, ("kill-mid-copy", 3), "production")
    with pytest.raises(ConfigError):
        Config.from_environ({"NIGHTOWL_BUFFER": "/b"})
    with pytest.raises(ConfigError):
        Config.from_environ({"NIGHTOWL_DSN": "x", "NIGHTOWL_BUFFER": "/b",
                             "NIGHTOWL_FAULT": "explode"})


def test_production_never_loads_the_fault_hooks(tmp_path):
    import subprocess
    import sys
    check = ("import sys; from nightowl.drain.config import Config; "
             "c = Config.from_environ({'NIGHTOWL_DSN': 'x', 'NIGHTOWL_BUFFER': '/b'%s}); "
             "import nightowl.drain.worker, nightowl.drain.process; "
             "print(c.fault, 'nightowl.drain.faults' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", check % ""], capture_output=True, text=True,
                         check=True, cwd=str(tmp_path))
    assert out.stdout.split() == ["None", "False"]
    out = subprocess.run([sys.executable, "-c", check % ", 'NIGHTOWL_FAULT': 'kill-mid-copy:2'"],
                         capture_output=True, text=True, check=True, cwd=str(tmp_path))
    assert out.stdout.split() == ["('kill-mid-copy',", "2)", "True"]


def test_fault_once_marker_spends_the_fault(tmp_path, monkeypatch):
    marker = tmp_path / "fired"
    monkeypatch.setenv("NIGHTOWL_FAULT_ONCE", str(marker))
    env = {"NIGHTOWL_DSN": "x", "NIGHTOWL_BUFFER": "/b", "NIGHTOWL_FAULT": "kill-after-commit:1"}
    assert Config.from_environ(env).fault == ("kill-after-commit", 1)
    marker.write_text("123")
    assert Config.from_environ(env).fault is None


def test_worker_environment_is_explicit():
    from nightowl.drain import config
    env = config.worker_environ("dbname=x", "b.sqlite", 3, "staging", 10, buffer_id="u-1",
                                extra={"NIGHTOWL_LEDGER": "0"})
    assert env["NIGHTOWL_BUFFER"].endswith("/b.sqlite") and env["NIGHTOWL_BUFFER"][0] == "/"
    assert (env["NIGHTOWL_WORKER_ID"], env["NIGHTOWL_ENVIRONMENT"], env["NIGHTOWL_BATCH_SIZE"],
            env["NIGHTOWL_BUFFER_ID"], env["NIGHTOWL_LEDGER"], env["NIGHTOWL_DSN"]) == \
        ("3", "staging", "10", "u-1", "0", "dbname=x")
    assert set(env) <= set(config.PASSED_ENV) | {
        "NIGHTOWL_DSN", "NIGHTOWL_BUFFER", "NIGHTOWL_WORKER_ID", "NIGHTOWL_ENVIRONMENT",
        "NIGHTOWL_BATCH_SIZE", "NIGHTOWL_BUFFER_ID", "NIGHTOWL_LEDGER"}
