"""
The agent's health over HTTP (``--health``, default 127.0.0.1:2409).

* ``GET /status``  JSON: status, reasons and every figure (README: "/status").
* ``GET /metrics`` Prometheus text, read from the same figures at scrape time.
* ``GET /healthz`` ``200 ok`` while the agent can accept and commit payloads,
  ``503 <reason>`` otherwise (for load balancers and systemd watchdogs).

Rooms: rules.py (the pure status rules), procfs.py (process figures),
snapshot.py (the /status figures), web.py (resources), prometheus.py
(/metrics), service.py (the listener and the periodic check).
"""

from nightowl.health.rules import evaluate
from nightowl.health.service import HealthService

__all__ = ["HealthService", "evaluate"]
