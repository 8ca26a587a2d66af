"""
nightowl.stopsignals: the first stop signal stops the reactor as Twisted's
own handler does; a second one, or one after a stop begun another way, is
ignored at info; a real reactor given a second TERM during its stop logs
no ReactorNotRunning (it did, as critical, on every process-group stop of
--ingest-processes N); and a real agent given TERM twice stops cleanly with
no traceback (its stop is quick, so this one passed before the guard too).
"""

import signal
import time

from twisted.internet.task import Clock

from nightowl import stopsignals
from nightowl.bench.agent import ping
from tests.integration.agent import AgentProcess


class FakeReactor(Clock):
    def __init__(self):
        Clock.__init__(self)
        self.calls = []
        self.triggers = []

    def addSystemEventTrigger(self, phase, event, f):
        self.triggers.append((phase, event, f))

    def sigTerm(self, number, frame=None):
        self.calls.append(("term", number))

    def sigInt(self, number, frame=None):
        self.calls.append(("int", number))


def test_the_first_signal_stops_a_second_is_ignored():
    r = FakeReactor()
    stopsignals.install(r)
    stopsignals.install(r)          # once per reactor
    r.sigTerm(signal.SIGTERM)
    r.sigTerm(signal.SIGTERM)
    r.sigInt(signal.SIGINT)
    assert r.calls == [("term", signal.SIGTERM)]


def test_a_signal_after_a_stop_begun_otherwise_is_ignored():
    r = FakeReactor()
    stopsignals.install(r)
    [shutdown] = [f for phase, event, f in r.triggers if (phase, event) == ("before", "shutdown")]
    shutdown()
    r.sigInt(signal.SIGINT)
    assert r.calls == []


def test_a_real_reactor_given_term_twice_logs_no_reactor_not_running():
    """What an ingest process of a group stop lives through: a second TERM
    handled while the first one's stop is under way (Twisted's own handler
    then raises ReactorNotRunning in runUntilCurrent, logged as critical)."""
    from twisted.internet.selectreactor import SelectReactor
    from twisted.logger import globalLogPublisher
    r = SelectReactor()
    stopsignals.install(r)
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        r.callWhenRunning(lambda: (r.sigTerm(signal.SIGTERM), r.sigTerm(signal.SIGTERM)))
        r.callLater(10, r.crash)    # a safety net: the first TERM stops it at once
        r.run(installSignalHandlers=False)
    finally:
        globalLogPublisher.removeObserver(events.append)
        r.disconnectAll()
        for reader in list(r._internalReaders):
            r.removeReader(reader)
            reader.connectionLost(None)
    failures = [e for e in events if "log_failure" in e]
    assert [str(e["log_failure"].value) for e in failures] == []
    assert any("already on the way down" in (e.get("log_format") or "") for e in events)


def test_an_agent_given_term_twice_stops_cleanly(tmp_path):
    # drain workers to stop (Postgres unreachable: a closed port) make the stop
    # last long enough for the second TERM to land while it runs
    agent = AgentProcess(str(tmp_path / "b.sqlite"), args=[
        "--dsn", "host=127.0.0.1 port=1 dbname=none connect_timeout=1"]).start()
    try:
        assert ping(agent.port)     # the reactor runs: its signal handlers are in place
        agent.proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)            # two signals at once are one to Python: let it see each
        agent.proc.send_signal(signal.SIGTERM)
        agent.proc.wait(30)
    finally:
        agent.kill()
    assert agent.stopped_cleanly(), agent.log()
    assert agent.tracebacks() == 0, agent.log()
    assert not [line for line in agent.lines if "ReactorNotRunning" in line]
