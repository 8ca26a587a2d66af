"""
The drain worker's configuration: the environment contract between the
supervisor (which builds a child's explicit environment) and the worker
(which reads it back into a ``Config``).  The DSN never appears on argv.

  NIGHTOWL_DSN          Postgres DSN (required)
  NIGHTOWL_BUFFER       SQLite buffer path (required)
  NIGHTOWL_WORKER_ID    this worker's number N (claims are state 100+N)
  NIGHTOWL_ENVIRONMENT  environment stamped on rows (default production)
  NIGHTOWL_BATCH_SIZE   payload rows per claim (default 5000)
  NIGHTOWL_BUFFER_ID    the buffer's UUID (default: read from its meta table)
  NIGHTOWL_LEDGER       0 disables the exactly-once ledger (benchmarks only)
  NIGHTOWL_ISSUES       0: raw rows only, no issues/thresholds/alerts
  NIGHTOWL_ROLLUPS      0: no rollups
  NIGHTOWL_MIGRATE      maintenance child only: 0 skips the migrations
  NIGHTOWL_WORKER_NICE  the workers' nice increment (default 5, 0 keeps it)
  NIGHTOWL_FAULT        test-only (nightowl.drain.faults): kill-after-commit:N,
                        kill-mid-copy:N or kill-on-payload:TEXT
"""

import os

import nightowl

#: from the agent's own environment into every child's
PASSED_ENV = ("PATH", "PYTHONPATH", "HOME", "LANG", "NIGHTOWL_WORKER_NICE")

_OFF = ("0", "false", "no", "off")


class ConfigError(Exception):
    pass


class Config:
    def __init__(self, dsn, buffer, worker_id, environment="production", batch_size=5000,
                 buffer_id=None, ledger=True, fault=None, issues=True, rollups=True):
        self.dsn = dsn
        self.buffer = buffer
        self.worker_id = worker_id
        self.environment = environment
        self.batch_size = batch_size
        self.buffer_id = buffer_id
        self.ledger = ledger
        self.fault = fault    # a parsed NIGHTOWL_FAULT, None in production
        self.issues = issues
        self.rollups = rollups

    @classmethod
    def from_environ(cls, env):
        dsn = env.get("NIGHTOWL_DSN", "").strip()
        if not dsn:
            raise ConfigError("NIGHTOWL_DSN is not set")
        buffer = env.get("NIGHTOWL_BUFFER", "").strip()
        if not buffer:
            raise ConfigError("NIGHTOWL_BUFFER is not set")
        try:
            worker_id = int(env.get("NIGHTOWL_WORKER_ID", "0"))
            batch_size = int(env.get("NIGHTOWL_BATCH_SIZE", "5000"))
        except ValueError:
            raise ConfigError("NIGHTOWL_WORKER_ID and NIGHTOWL_BATCH_SIZE must be whole numbers")
        if worker_id < 0 or batch_size <= 0:
            raise ConfigError("NIGHTOWL_WORKER_ID must be >= 0 and NIGHTOWL_BATCH_SIZE > 0")
        return cls(
            dsn=dsn, buffer=buffer, worker_id=worker_id,
            environment=env.get("NIGHTOWL_ENVIRONMENT") or "production",
            batch_size=batch_size,
            buffer_id=(env.get("NIGHTOWL_BUFFER_ID") or "").strip() or None,
            ledger=_on(env, "NIGHTOWL_LEDGER"),
            fault=_fault(env),
            issues=_on(env, "NIGHTOWL_ISSUES"),
            rollups=_on(env, "NIGHTOWL_ROLLUPS"),
        )


def _on(env, key):
    return env.get(key, "1").strip().lower() not in _OFF


def _fault(env):
    """The test-only fault, parsed by nightowl.drain.faults (imported only if set)."""
    text = env.get("NIGHTOWL_FAULT")
    if not text or not text.strip():
        return None
    from nightowl.drain import faults
    try:
        return None if faults.spent() else faults.parse(text)
    except ValueError as e:
        raise ConfigError(str(e))


def base_environ(dsn, environ=None):
    """What every child gets: the passed keys, this nightowl on PYTHONPATH, the DSN."""
    environ = os.environ if environ is None else environ
    env = {key: environ[key] for key in PASSED_ENV if key in environ}
    # the child must import this very nightowl, installed or not
    root = os.path.dirname(os.path.dirname(os.path.abspath(nightowl.__file__)))
    paths = [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["NIGHTOWL_DSN"] = dsn
    return env


def worker_environ(dsn, buffer_path, worker_id, environment, batch_size, buffer_id=None,
                   extra=None):
    """The explicit environment of drain worker ``worker_id``."""
    env = base_environ(dsn)
    env.update({
        "NIGHTOWL_BUFFER": os.path.abspath(buffer_path),
        "NIGHTOWL_WORKER_ID": str(worker_id),
        "NIGHTOWL_ENVIRONMENT": str(environment),
        "NIGHTOWL_BATCH_SIZE": str(batch_size),
    })
    if buffer_id:
        env["NIGHTOWL_BUFFER_ID"] = str(buffer_id)
    env.update(extra or {})
    return env
