"""
Several ingest processes on one port (``--ingest-processes N``, N > 1).

``parent``: the service ``twistd nightowl`` runs: it spawns, supervises and
stops the N children and holds no ingest socket itself.  ``child``: the
entry point of one child (``python -m nightowl.multiproc.child``), a whole
single-process agent on a SO_REUSEPORT port.  ``status``: /status and
/metrics of all children, as pure functions.  ``web``: the parent's health
HTTP endpoint.
"""
