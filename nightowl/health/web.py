"""
The health HTTP resources: ``/status`` (JSON), ``/metrics`` (Prometheus
text) and ``/healthz`` (200 ok / 503 reason), and the quiet Site serving
them.  Each resource asks the health service for its document.
"""

import orjson
from twisted.web.resource import NoResource, Resource
from twisted.web.server import Site


class QuietSite(Site):
    """No access log line per scrape."""

    noisy = False

    def log(self, request):
        pass


class _Leaf(Resource):
    isLeaf = True

    def __init__(self, health):
        Resource.__init__(self)
        self.health = health


class StatusResource(_Leaf):
    def render_GET(self, request):
        snap = self.health.status()
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return orjson.dumps(snap, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)


class MetricsResource(_Leaf):
    def render_GET(self, request):
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.health.registry)


class HealthzResource(_Leaf):
    def render_GET(self, request):
        ok, reason = self.health.healthz()
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        if ok:
            return b"ok\n"
        request.setResponseCode(503)
        return (reason + "\n").encode("utf-8")


class _Root(Resource):
    def getChild(self, path, request):
        return NoResource("try /status, /metrics or /healthz")


def make_site(health):
    """The Site of /status, /metrics and /healthz for ``health`` (a HealthService)."""
    root = _Root()
    root.putChild(b"status", StatusResource(health))
    root.putChild(b"metrics", MetricsResource(health))
    root.putChild(b"healthz", HealthzResource(health))
    return QuietSite(root)
