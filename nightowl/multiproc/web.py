"""
The parent's health endpoint (``--health``) with several ingest processes.

Each child runs its own health service on an ephemeral loopback port (it
reports the port to the parent when ready).  On every request the parent
asks the running children (treq, a connection pool of its own, closed on
stop) and answers with L{nightowl.multiproc.status}: ``/status`` one
document with totals and a section per child, ``/metrics`` every child's
samples labelled ``process``, ``/healthz`` 200 only while every child
answers 200.
"""

import os

import orjson
from twisted.application import service, strports
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.resource import NoResource, Resource
from twisted.web.server import NOT_DONE_YET, Site

import nightowl
from nightowl.multiproc import status as aggregate

FETCH_TIMEOUT = 5.0


def _process_figures():
    """pid, RSS and threads of this (the parent) process, from /proc where there is one."""
    out = {"pid": os.getpid(), "rss_bytes": None, "threads": None}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == "VmRSS":
                    out["rss_bytes"] = int(value.split()[0]) * 1024
                elif key == "Threads":
                    out["threads"] = int(value)
    except OSError:
        pass
    return out


class _Async(Resource):
    isLeaf = True

    def __init__(self, health, produce):
        Resource.__init__(self)
        self.health, self.produce = health, produce

    def render_GET(self, request):
        d = defer.maybeDeferred(self.produce)

        def done(result):
            code, ctype, body = result
            request.setResponseCode(code)
            request.setHeader(b"content-type", ctype)
            request.setHeader(b"cache-control", b"no-store")
            request.write(body)
            request.finish()

        def failed(f):
            self.health.log.failure("answering {path}", f, path=request.path)
            request.setResponseCode(500)
            request.finish()

        d.addCallbacks(done, failed)
        return NOT_DONE_YET


class _Root(Resource):
    def getChild(self, path, request):
        return NoResource("try /status, /metrics or /healthz")


class _QuietSite(Site):
    def log(self, request):
        pass


class ParentHealth(service.MultiService):
    log = Logger()
    name = "health"

    def __init__(self, description, parent, reactor=None):
        service.MultiService.__init__(self)
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.processes = parent
        self.pool = None
        root = _Root()
        root.putChild(b"status", _Async(self, self.status_response))
        root.putChild(b"metrics", _Async(self, self.metrics_response))
        root.putChild(b"healthz", _Async(self, self.healthz_response))
        site = _QuietSite(root)
        site.noisy = False
        self.http = strports.service(description, site, reactor=reactor)
        self.http.setServiceParent(self)

    def startService(self):
        from nightowl import quiethttp
        self.pool = quiethttp.pool(self.reactor, persistent=False)
        service.MultiService.startService(self)
        waiting = getattr(self.http, "_waitingForPort", None)
        if waiting is not None:
            waiting.addCallback(self._listening)
            waiting.addErrback(lambda f: self.log.error(
                "health listener failed: {error}", error=f.getErrorMessage()))

    def _listening(self, port):
        host = port.getHost()
        self.log.info("nightowl health on {host}:{port} (/status, /metrics, /healthz) for "
                      "{n} ingest processes", host=host.host, port=host.port,
                      n=self.processes.count)
        return port

    def stopService(self):
        d = defer.maybeDeferred(service.MultiService.stopService, self)
        pool, self.pool = self.pool, None
        if pool is not None:
            d.addBoth(lambda r: pool.closeCachedConnections().addBoth(lambda _: r))
        return d

    # -- asking the children ---------------------------------------------------

    def _fetch(self, path):
        """index -> (HTTP code, body bytes) of every running child that answered."""
        import treq
        children = self.processes.children()
        asks, order = [], []
        for child in children:
            if not child["health_port"]:
                continue
            url = "http://127.0.0.1:{}{}".format(child["health_port"], path)
            d = treq.get(url, pool=self.pool, timeout=FETCH_TIMEOUT, reactor=self.reactor)
            d.addCallback(lambda r: treq.content(r).addCallback(
                lambda body, code=r.code: (code, body)))
            asks.append(d)
            order.append(child["index"])
        d = defer.DeferredList(asks, consumeErrors=True)

        def collect(results):
            return children, dict((index, value) for index, (ok, value) in zip(order, results)
                                  if ok)
        return d.addCallback(collect)

    def status(self):
        """A Deferred firing with the aggregated /status document."""
        def fold(result):
            children, answers = result
            docs = {}
            for index, (_code, body) in answers.items():
                try:
                    docs[index] = orjson.loads(body)
                except ValueError:
                    self.log.warn("ingest process {index} sent an unreadable /status",
                                  index=index)
            uptime = self.reactor.seconds() - (self.processes.started or self.reactor.seconds())
            return aggregate.aggregate(children, docs, nightowl.__version__, uptime,
                                       _process_figures())
        return self._fetch("/status").addCallback(fold)

    def status_response(self):
        return self.status().addCallback(lambda doc: (
            200, b"application/json",
            orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)))

    def metrics_response(self):
        from prometheus_client import CONTENT_TYPE_LATEST

        def fold(result):
            children, answers = result
            texts = dict((i, body.decode("utf-8", "replace"))
                         for i, (code, body) in answers.items() if code == 200)
            body = aggregate.render_metrics(aggregate.merge_metrics(texts, children))
            return 200, CONTENT_TYPE_LATEST.encode("ascii"), body
        return self._fetch("/metrics").addCallback(fold)

    def healthz_response(self):
        def fold(result):
            children, answers = result
            bad = []
            for child in children:
                code, body = answers.get(child["index"], (None, b""))
                if code != 200:
                    reason = body.decode("utf-8", "replace").strip() or child["state"]
                    bad.append("ingest process {}: {}".format(child["index"], reason))
            if bad:
                return 503, b"text/plain; charset=utf-8", ("; ".join(bad) + "\n").encode()
            return 200, b"text/plain; charset=utf-8", b"ok\n"
        return self._fetch("/healthz").addCallback(fold)
