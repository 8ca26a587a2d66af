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
