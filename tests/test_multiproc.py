"""
--ingest-processes without processes: options, the wiring, the children's
environment, supervision on a Clock with a fake spawner, the /status and
/metrics folds, and the SO_REUSEPORT port.  The real processes are in
tests/integration/test_multiproc.py.
"""

import socket
import sys

import pytest
from twisted.internet import defer, error, task
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.python.usage import UsageError
from twisted.trial import unittest

from nightowl import reuseport, tap
from nightowl.multiproc import parent as mp
from nightowl.multiproc import status as mpstatus
from nightowl.multiproc.child import format_event

LINUX = sys.platform.startswith("linux")
FIXED = ["--listen", "tcp:24071:interface=127.0.0.1"]


# -- options ---------------------------------------------------------------------

def test_default_is_one_process():
    assert tap.parse([], environ={})["ingest-processes"] == 1


@pytest.mark.skipif(not LINUX, reason="N > 1 is refused off Linux")
def test_environment_sets_the_processes():
    env = {"NIGHTOWL_INGEST_PROCESSES": "3", "NIGHTOWL_LISTEN": "tcp:2407"}
    assert tap.parse([], environ=env)["ingest-processes"] == 3


@pytest.mark.parametrize("value,message", [
    ("0", "--ingest-processes: must be greater than 0, got 0"),
    ("-1", "--ingest-processes: must be greater than 0, got -1"),
    ("two", "--ingest-processes: expected a whole number, got 'two'"),
])
def test_bad_values_are_one_line_errors(value, message):
    with pytest.raises(UsageError) as e:
        tap.parse(["--ingest-processes", value] + FIXED, environ={})
    assert str(e.value) == message


@pytest.mark.skipif(not LINUX, reason="N > 1 is refused off Linux (next test)")
@pytest.mark.parametrize("listen,message", [
    ("tcp:0:interface=127.0.0.1", "needs a fixed --listen port"),
    ("unix:/tmp/x.sock", "needs a tcp: --listen endpoint"),
])
def test_several_processes_need_a_fixed_tcp_port(listen, message):
    with pytest.raises(UsageError) as e:
        tap.parse(["--ingest-processes", "2", "--listen", listen], environ={})
    assert message in str(e.value) and "\n" not in str(e.value)


def test_no_balancing_reuseport_no_several_processes():
    assert reuseport.unavailable("linux") is None or not hasattr(socket, "SO_REUSEPORT")
    reason = reuseport.unavailable("darwin")
    assert "does not spread connections" in reason and "\n" not in reason


def test_parse_tcp():
    assert reuseport.parse_tcp("tcp:2407:interface=127.0.0.1:backlog=1024") == (
        2407, "127.0.0.1", 1024)
    assert reuseport.parse_tcp("tcp:port=9:interface=\\:\\:1") == (9, "::1", 50)
    with pytest.raises(ValueError):
        reuseport.parse_tcp("unix:/x")


# -- wiring ----------------------------------------------------------------------

def test_one_process_is_todays_service(tmp_path):
    from nightowl.service import NightowlService
    opts = tap.parse(["--buffer", str(tmp_path / "b"), "--dashboard", "none"], environ={})
    reactor = MemoryReactorClock()
    root = tap.makeService(opts, reactor=reactor)
    assert isinstance(root, NightowlService)
    assert not isinstance(root.ingest, reuseport.ReusePortService)


@pytest.mark.skipif(not LINUX, reason="needs Linux SO_REUSEPORT")
def test_several_processes_parent_holds_no_ingest_socket(tmp_path):
    opts = tap.parse(["--ingest-processes", "3", "--buffer", str(tmp_path / "b")] + FIXED,
                     environ={})
    reactor = MemoryReactorClock()
    root = tap.makeService(opts, reactor=reactor)
    assert isinstance(root, mp.IngestParent) and root.count == 3
    root.privilegedStartService()
    # only the parent's health endpoint: no socket on the ingest port
    assert [p for (p, *_rest) in reactor.tcpServers] == [2409]
    assert [e["NIGHTOWL_BUFFER"] for e in root.environs] == [
        str(tmp_path / "b"), str(tmp_path / "b") + ".1", str(tmp_path / "b") + ".2"]


def test_child_environment_carries_options_not_argv():
    opts = tap.parse(["--dsn", "host=db password=sekrit dbname=x", "--token", "tok",
                      "--max-pending", "7", "--no-migrate"], environ={})
    env0 = mp.child_environ(opts, 0, environ={"PATH": "/bin", "SECRET_OTHER": "no"})
    env1 = mp.child_environ(opts, 1, environ={"PATH": "/bin"})
    assert env0["NIGHTOWL_DSN"] == "host=db password=sekrit dbname=x"
    assert env0["NIGHTOWL_TOKEN"] == "tok" and env0["NIGHTOWL_MAX_PENDING"] == "7"
    assert env0["NIGHTOWL_NO_MIGRATE"] == "1" and env0["NIGHTOWL_INGEST_PROCESSES"] == "1"
    assert "SECRET_OTHER" not in env0 and env0["PATH"] == "/bin"
    assert env0["NIGHTOWL_HEALTH"] == mp.CHILD_HEALTH
    # alerts and the dashboard run once, in child 0
    assert "NIGHTOWL_ALERTS" in env0 and env0["NIGHTOWL_ALERTS"] == "on"
    assert env1["NIGHTOWL_ALERTS"] == "off" and env1["NIGHTOWL_DASHBOARD"] == "none"
    # each child's environment parses back to the same settings
    back = tap.parse([], environ=env1)
    assert back["max-pending"] == 7 and back["dsn"] == opts["dsn"]
    assert back["buffer"].endswith(".1") and back["ingest-processes"] == 1


def test_dashboard_none_reaches_child_0():
    """--dashboard none parses to None; child 0 must not fall back to the default port."""
    opts = tap.parse(["--dsn", "dbname=x", "--dashboard", "none"], environ={})
    env0 = mp.child_environ(opts, 0, environ={})
    assert env0["NIGHTOWL_DASHBOARD"] == "none"
    assert tap.parse([], environ=env0)["dashboard"] is None
    default = mp.child_environ(tap.parse(["--dsn", "dbname=x"], environ={}), 0, environ={})
    assert tap.parse([], environ=default)["dashboard"] == tap.DEFAULT_DASHBOARD


def test_child_rewords_its_endpoint_lines():
    line = format_event({"log_format": "nightowl health on {p}", "p": "1.2.3.4:5"})
    assert line == "ingest process health on 1.2.3.4:5\n"
    assert format_event({"log_format": "x {y}", "y": 1}) == "x 1\n"


# -- supervision -------------------------------------------------------------------

class _Transport:
    def __init__(self, pid):
        self.pid = pid
        self.signals = []

    def signalProcess(self, sig):
        self.signals.append(sig)


class _Spawner:
    def __init__(self):
        self.spawned = []

    def __call__(self, proto, env):
        t = _Transport(1000 + len(self.spawned))
        proto.transport = t
        self.spawned.append((proto, env))
        return t


def _ended(proto, signal=None, code=None):
    reason = error.ProcessTerminated(exitCode=code, signal=signal)
    proto.processEnded(Failure(reason))


def _ready(proto):
    proto.childDataReceived(3, b'{"event": "ready", "pid": %d, "port": 24071, '
                               b'"health_port": 5, "buffer": "b", "buffer_id": "x"}\n'
                            % proto.transport.pid)


class SupervisionTests(unittest.SynchronousTestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.spawner = _Spawner()
        envs = [{"NIGHTOWL_BUFFER": "b"}, {"NIGHTOWL_BUFFER": "b.1"}]
        self.parent = mp.IngestParent(2, "tcp:24071:interface=127.0.0.1", envs,
                                      reactor=self.clock, spawn=self.spawner)
        self.parent.startService()
        for proto, _env in list(self.spawner.spawned):
            _ready(proto)

    def test_a_dead_child_is_restarted_with_backoff(self):
        self.assertEqual([c["state"] for c in self.parent.children()], ["running"] * 2)
        proto1 = self.spawner.spawned[1][0]
        _ended(proto1, signal=9)
        self.assertEqual(self.parent.children()[1]["state"], "restarting")
        self.clock.advance(0.9)
        self.assertEqual(len(self.spawner.spawned), 2)
        self.clock.advance(0.2)
        self.assertEqual(len(self.spawner.spawned), 3)
        again = self.spawner.spawned[2]
        self.assertEqual(again[1]["NIGHTOWL_BUFFER"], "b.1")   # same buffer
        _ended(again[0], code=1)                                # dies at once: 2 s now
        self.clock.advance(1.5)
        self.assertEqual(len(self.spawner.spawned), 3)
        self.clock.advance(0.6)
        self.assertEqual(len(self.spawner.spawned), 4)
        _ready(self.spawner.spawned[3][0])
        child = self.parent.children()[1]
        self.assertEqual((child["state"], child["restarts"], child["pid"]), ("running", 2, 1003))
        self.assertIsNone(self.parent.failed)

    def test_stop_terms_then_kills_after_grace(self):
        protos = [p for (p, _e) in self.spawner.spawned]
        d = self.parent.stopService()
        self.assertEqual([p.transport.signals for p in protos], [["TERM"], ["TERM"]])
        _ended(protos[0], signal=15)
        self.assertNoResult(d)
        self.clock.advance(self.parent.killTime)
        self.assertEqual(protos[1].transport.signals, ["TERM", "KILL"])
        _ended(protos[1], signal=9)
        self.successResultOf(d)
        self.clock.advance(100)
        self.assertEqual(len(self.spawner.spawned), 2)   # nothing restarted while stopping
        self.assertEqual([c["state"] for c in self.parent.children()], ["stopped"] * 2)

    def test_log_lines_are_relayed_and_partial_lines_kept(self):
        proto = self.spawner.spawned[0][0]
        proto.childDataReceived(1, b"hello ")
        self.assertEqual(proto.last_line, "")
        proto.childDataReceived(1, b"world\n")
        self.assertEqual(proto.last_line, "hello world")


def test_a_child_that_never_starts_fails_the_agent():
    clock = task.Clock()
    spawner = _Spawner()
    parent = mp.IngestParent(2, "tcp:24071", [{"NIGHTOWL_BUFFER": "b"}] * 2,
                             reactor=clock, spawn=spawner)
    parent.startService()
    proto = spawner.spawned[0][0]
    proto.childDataReceived(2, b"nightowl: cannot open the buffer: read-only\n")
    _ended(proto, code=1)
    assert parent.failed == ("nightowl: ingest process 0 could not start: nightowl: cannot "
                             "open the buffer: read-only")
    clock.advance(60)
    assert len(spawner.spawned) == 2


# -- /status and /metrics folds ------------------------------------------------------

def _doc(accepted, pending, status="healthy", workers=1):
    return {"status": status, "reasons": [{"code": "c", "level": "info", "message": "m"}],
            "ingest": {"accepted": accepted, "rejected": {"token": 1}, "rejected_total": 1},
            "buffer": {"pending": pending, "claimed": 0, "back_pressure": False,
                       "writer_alive": True, "oldest_pending_age_seconds": pending / 10.0},
            "drain": {"payloads": accepted, "enabled": True, "migrated": True,
                      "rows_by_table": {"nightowl_logs": accepted}},
            "workers": [{"worker": w, "pid": 1, "alive": True} for w in range(workers)]}


def _children(states=("running", "running")):
    return [{"index": i, "state": s, "restarts": i, "buffer": "b.{}".format(i), "pid": 10 + i}
            for i, s in enumerate(states)]


def test_status_has_totals_and_a_section_per_process():
    doc = mpstatus.aggregate(_children(), {0: _doc(5, 2), 1: _doc(7, 3, "degraded", 2)},
                             "v", 1.0, {"pid": 1})
    assert doc["status"] == "degraded"
    assert doc["ingest"]["accepted"] == 12 and doc["ingest"]["rejected"] == {"token": 2}
    assert doc["buffer"]["pending"] == 5 and doc["buffer"]["oldest_pending_age_seconds"] == 0.3
    assert doc["drain"]["rows_by_table"] == {"nightowl_logs": 12} and doc["drain"]["migrated"]
    assert [w["process"] for w in doc["workers"]] == [0, 1, 1]
    assert [r["process"] for r in doc["reasons"]] == [0, 1]
    sections = doc["ingest_processes"]["children"]
    assert [s["document"]["ingest"]["accepted"] for s in sections] == [5, 7]
    assert doc["ingest_processes"]["running"] == 2


def test_a_silent_process_degrades_the_status():
    doc = mpstatus.aggregate(_children(("running", "restarting")), {0: _doc(5, 0)},
                             "v", 1.0, {})
    assert doc["status"] == "degraded"
    assert any(r["code"] == "INGEST_PROCESS_DOWN" and r["process"] == 1 for r in doc["reasons"])
    assert mpstatus.aggregate(_children(), {}, "v", 1.0, {})["status"] == "critical"


def test_metrics_carry_a_process_label_and_one_help_per_family():
    text = ("# HELP nightowl_ingest_accepted_total Payloads.\n"
            "# TYPE nightowl_ingest_accepted_total counter\n"
            "nightowl_ingest_accepted_total {}\n"
            "# HELP nightowl_worker_up Up.\n# TYPE nightowl_worker_up gauge\n"
            'nightowl_worker_up{{worker="0"}} 1.0\n')
    out = mpstatus.render_metrics(mpstatus.merge_metrics(
        {0: text.format(3), 1: text.format(4)}, _children())).decode()
    assert out.count("# TYPE nightowl_ingest_accepted_total counter") == 1
    assert 'nightowl_ingest_accepted_total{process="0"} 3.0' in out
    assert 'nightowl_ingest_accepted_total{process="1"} 4.0' in out
    assert 'nightowl_worker_up{process="1",worker="0"} 1.0' in out
    assert 'nightowl_ingest_process_restarts_total{process="1"} 1.0' in out
    assert "nightowl_ingest_processes_configured 2.0" in out


# -- the port --------------------------------------------------------------------------

@pytest.mark.skipif(not LINUX, reason="needs Linux SO_REUSEPORT")
class ReusePortTests(unittest.TestCase):
    def test_two_ports_share_one_address_a_plain_socket_cannot(self):
        from twisted.internet import reactor
        from twisted.internet.protocol import Factory
        first = reuseport.ReusePortService("tcp:0:interface=127.0.0.1", Factory(),
                                           reactor=reactor)
        first.startService()
        port = first.port().getHost().port
        second = reuseport.ReusePortService("tcp:{}:interface=127.0.0.1".format(port),
                                            Factory(), reactor=reactor)
        second.startService()
        self.assertEqual(second.port().getHost().port, port)
        plain = socket.socket()
        try:
            with self.assertRaises(OSError):
                plain.bind(("127.0.0.1", port))
        finally:
            plain.close()
        with self.assertRaises(OSError):
            reuseport.probe("tcp:{}:interface=127.0.0.1".format(_plain_listener(self)))
        return defer.gatherResults([defer.maybeDeferred(first.stopService),
                                    defer.maybeDeferred(second.stopService)])


    def test_the_probe_passes_a_port_left_in_time_wait(self):
        """A restart right after traffic: the agent closed its connections
        first, so their TIME_WAIT sockets hold the port (it used to fail
        'Address already in use' for ~60 s after a stop under load)."""
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        served, _ = srv.accept()
        served.close()              # the server's side waits in TIME_WAIT on the port
        client.recv(1)
        client.close()
        srv.close()
        reuseport.probe("tcp:{}:interface=127.0.0.1".format(port))


def _plain_listener(case):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    case.addCleanup(s.close)
    return s.getsockname()[1]
