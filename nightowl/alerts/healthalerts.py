"""
Agent-health alerts: ``health.degraded``, ``health.critical`` and
``health.recovered``, from the status the health checks evaluate.

Debounce: a status must hold for ``hold`` seconds before it counts, and at
most one alert is sent per ``every`` seconds (a change confirmed sooner
waits until then, and is dropped if the status went back to what was last
announced).  ``recovered`` is only sent after a degraded/critical alert.

These alerts cannot go through Postgres, which may be what is broken: they
are sent straight from memory to the channels the dispatcher read last
(channel configuration cached from its last successful read), each retried
in memory with backoff for up to ``retry_for`` seconds.  An agent that has
never reached Postgres since it started has no channels and sends nothing.
"""

import socket
import uuid

from twisted.internet import defer
from twisted.logger import Logger

from nightowl.alerts import messages

HOLD = 30.0
EVERY = 600.0
RETRY_FOR = 3600.0


def _utc(now):
    import datetime
    return datetime.datetime.fromtimestamp(now, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


class HealthAlerter:
    """
    ``observe(status, reasons)`` is the observer the health checks call.
    ``send(channel, notice, delivery_id)`` returns a Deferred; ``channels()``
    the cached channels; ``clock`` an IReactorTime.
    """

    log = Logger()

    def __init__(self, send, channels, clock, hold=HOLD, every=EVERY, retry_for=RETRY_FOR,
                 backoff=None, instance=None):
        self._send = send
        self._channels = channels
        self.clock = clock
        self.hold = hold
        self.every = every
        self.retry_for = retry_for
        self.backoff = backoff or (lambda attempt: min(300.0, 5.0 * 2 ** attempt))
        self.instance = instance or socket.gethostname()
        self.announced = "healthy"        # what receivers were last told
        self.candidate = None             # (status, since, reasons)
        self.last_alert_at = None
        self.sent = 0
        self.failed = 0
        self._decide_call = None
        self._retries = set()
        self._stopped = False

    def observe(self, status, reasons=()):
        now = self.clock.seconds()
        if self.candidate is None or self.candidate[0] != status:
            self.candidate = (status, now, list(reasons or ()))
        else:
            self.candidate = (status, self.candidate[1], list(reasons or ()))
        self._decide()

    def _decide(self):
        if self._decide_call is not None and self._decide_call.active():
            self._decide_call.cancel()
        self._decide_call = None
        if self._stopped or self.candidate is None:
            return
        status, since, reasons = self.candidate
        if status == self.announced:
            return
        now = self.clock.seconds()
        due = since + self.hold
        if self.last_alert_at is not None:
            due = max(due, self.last_alert_at + self.every)
        if now < due:
            self._decide_call = self.clock.callLater(due - now, self._decide)
            return
        previous, self.announced = self.announced, status
        self.last_alert_at = now
        event = "health.recovered" if status == "healthy" else "health." + status
        notice = messages.health_notice(event, status, previous, reasons, self.instance,
                                        _utc(now))
        targets = [c for c in self._channels() if c.wants(event)]
        self.log.info("agent health {previous} -> {status}: alerting {count} channels",
                      previous=previous, status=status, count=len(targets))
        for channel in targets:
            self._attempt(channel, notice, str(uuid.uuid4()), 0, now)

    def _attempt(self, channel, notice, delivery_id, attempt, first):
        if self._stopped:
            return
        d = defer.maybeDeferred(self._send, channel, notice, delivery_id)

        def ok(_):
            self.sent += 1

        def failed(f):
            self.failed += 1
            delay = self.backoff(attempt)
            error = " ".join(f.getErrorMessage().split())[:300]
            if self.clock.seconds() + delay - first > self.retry_for:
                self.log.error("health alert {event} to {channel} given up: {error}",
                               event=notice.event, channel=channel.name, error=error)
                return
            self.log.warn("health alert {event} to {channel} failed, retry in {delay:.0f} s: "
                          "{error}", event=notice.event, channel=channel.name, delay=delay,
                          error=error)
            call = []

            def again():
                self._retries.discard(call[0])
                self._attempt(channel, notice, delivery_id, attempt + 1, first)
            call.append(self.clock.callLater(delay, again))
            self._retries.add(call[0])
        d.addCallbacks(ok, failed)
        d.addErrback(lambda f: self.log.failure("health alert bookkeeping", f))

    def stop(self):
        self._stopped = True
        if self._decide_call is not None and self._decide_call.active():
            self._decide_call.cancel()
        for call in list(self._retries):
            if call.active():
                call.cancel()
        self._retries.clear()

    def status(self):
        return {"announced": self.announced,
                "pending": (self.candidate[0] if self.candidate
                            and self.candidate[0] != self.announced else None),
                "sent": self.sent, "failed": self.failed}
