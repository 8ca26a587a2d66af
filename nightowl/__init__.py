"""nightowl: a self-hosted ingest agent for Laravel Nightwatch telemetry."""

__version__ = "0.1.0"
