import os
import subprocess
import sys

import pytest
from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.python.usage import UsageError

from nightowl import tap


def test_defaults():
    opts = tap.parse([], environ={})
    assert opts["listen"] == "tcp:2407:interface=127.0.0.1"
    assert opts["health"] == "tcp:2409:interface=127.0.0.1"
    assert opts["max-frame-bytes"] == 10 * 1024 * 1024
    assert opts["frame-timeout"] == 10.0
    assert opts["token"] is None
    assert opts["dsn"] is None
    assert opts["drain-workers"] == 2
    assert opts["environment"] == "production"
    assert opts["no-migrate"] is False


def test_environment_feeds_options_and_command_line_wins():
    env = {"NIGHTOWL_LISTEN": "tcp:9999", "NIGHTOWL_MAX_PENDING": "50",
           "NIGHTOWL_ENVIRONMENT": "staging", "NIGHTOWL_NO_MIGRATE": "true",
           "NIGHTOWL_FRAME_TIMEOUT": "2.5", "NIGHTOWL_HEALTH": "none"}
    opts = tap.parse(["--max-pending", "70"], environ=env)
    assert opts["listen"] == "tcp:9999"
    assert opts["max-pending"] == 70
    assert opts["environment"] == "staging"
    assert opts["no-migrate"] is True
    assert opts["frame-timeout"] == 2.5
    assert opts["health"] is None


def test_token_falls_back_to_nightwatch_token():
    assert tap.parse([], environ={"NIGHTWATCH_TOKEN": "abc"})["token"] == "abc"
    assert tap.parse([], environ={"NIGHTWATCH_TOKEN": "abc", "NIGHTOWL_TOKEN": "def"})["token"] == "def"
    assert tap.parse(["--token", "x"], environ={"NIGHTOWL_TOKEN": "def"})["token"] == "x"


def test_sizes_accept_suffixes():
    assert tap.parse(["--max-frame-bytes", "2M"], environ={})["max-frame-bytes"] == 2 * 1024 * 1024


@pytest.mark.parametrize("args,env,message", [
    (["--max-pending", "lots"], {}, "--max-pending: expected a whole number"),
    (["--max-pending", "0"], {}, "--max-pending: must be greater than 0"),
    ([], {"NIGHTOWL_DRAIN_WORKERS": "-1"}, "--drain-workers: must be 0 or more"),
    (["--frame-timeout", "soon"], {}, "--frame-timeout: expected a number"),
    (["--max-frame-bytes", "huge"], {}, "--max-frame-bytes: expected a size"),
    (["--listen", ""], {}, "--listen: expected a strports endpoint"),
])
def test_bad_values_are_one_line_errors(args, env, message):
    with pytest.raises(UsageError) as e:
        tap.parse(args, environ=env)
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


def test_plugin_discovered():
    names = [p.tapname for p in getPlugins(IServiceMaker)]
    assert "nightowl" in names
    plugin = [p for p in getPlugins(IServiceMaker) if p.tapname == "nightowl"][0]
    assert plugin.options is tap.Options


def test_plugin_file_ships_in_the_package_data():
    import configparser
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(os.path.dirname(__file__), os.pardir, "setup.cfg"))
    assert "twisted.plugins" in cfg["options.packages.find"]["include"]
    assert not os.path.exists(os.path.join(os.path.dirname(__file__), os.pardir,
                                           "twisted", "__init__.py"))


def test_make_service_binds_listener(tmp_path):
    from tests.fakes import MemoryThreadReactor
    reactor = MemoryThreadReactor()
    from nightowl.fastaccept import IngestPort
    opts = tap.parse(["--listen", "tcp:0:interface=127.0.0.1", "--buffer",
                      str(tmp_path / "b.sqlite"), "--health", "none"], environ={})
    svc = tap.makeService(opts, reactor=reactor)
    svc.privilegedStartService()
    svc.startService()
    try:
        # a tcp: listener is the ingest port (nightowl.fastaccept), really bound
        port = svc.ingest.port()
        assert isinstance(port, IngestPort)
        assert port.getHost().host == "127.0.0.1" and port.getHost().port > 0
    finally:
        reactor.wait(svc.stopService())


def test_tac_loads_same_service(tmp_path):
    # The example .tac builds the same service from the same Options.
    env = dict(os.environ, NIGHTOWL_BUFFER=str(tmp_path / "b.sqlite"), NIGHTOWL_HEALTH="none")
    code = ("from twisted.application import service\n"
            "ns = {}\n"
            "exec(open('nightowl.tac').read(), ns)\n"
            "svc = service.IService(ns['application'])\n"
            "child = list(svc)[0]\n"
            "print(type(child).__name__, child.buffer.path)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         cwd=os.path.join(os.path.dirname(__file__), os.pardir))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["NightowlService", str(tmp_path / "b.sqlite")]


# -- configuration errors through the real twistd ------------------------------------

def _twistd(tmp_path, args, env=None):
    from nightowl.bench.agent import TWISTD
    environ = dict(os.environ)
    for key in list(environ):
        if key.startswith("NIGHTOWL_"):
            del environ[key]
    environ.update(env or {})
    argv = TWISTD + ["-n", "--pidfile=", "nightowl", "--buffer", str(tmp_path / "b.sqlite"),
                     "--health", "none"] + list(args)
    return subprocess.run(argv, env=environ, capture_output=True, text=True, timeout=60,
                          cwd=str(tmp_path))


@pytest.mark.parametrize("args,env,message", [
    (["--max-pending", "lots"], {}, "nightowl: --max-pending: expected a whole number, got 'lots'"),
    (["--listen", "tcp:99999"], {}, "nightowl: --listen: port 99999 is out of range (0-65535)"),
    ([], {"NIGHTOWL_LISTEN": "tcp:99999"}, "nightowl: --listen: port 99999 is out of range"),
    (["--listen", "tcp:port=70000:interface=127.0.0.1"], {}, "nightowl: --listen: port 70000"),
    (["--dsn", "this is not a dsn"], {}, "nightowl: --dsn: not a PostgreSQL connection string"),
    (["--health", "bogus:1"], {}, "nightowl: --health: 'bogus:1' is not a valid endpoint"),
    (["--no-such-option"], {}, "nightowl: option --no-such-option not recognized"),
])
def test_twistd_configuration_errors_are_one_line_and_leave_no_files(tmp_path, args, env,
                                                                     message):
    out = _twistd(tmp_path, args, env)
    assert out.returncode != 0
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert len(lines) == 1, out.stdout + out.stderr
    assert lines[0].startswith(message), lines[0]
    assert "Traceback" not in out.stderr and "Usage:" not in out.stdout
    assert sorted(os.listdir(str(tmp_path))) == []   # no buffer, no -wal/-shm, no pid file


def test_a_bad_dsn_is_not_echoed(tmp_path):
    out = _twistd(tmp_path, ["--dsn", "host=h password=s3cret and then some"])
    assert out.returncode != 0
    assert "s3cret" not in out.stdout + out.stderr


def test_twistd_port_in_use_is_one_line_and_leaves_no_buffer(tmp_path):
    import socket
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        out = _twistd(tmp_path, ["--listen", "tcp:{}:interface=127.0.0.1".format(port)])
    finally:
        taken.close()
    assert out.returncode != 0
    errors = [line for line in (out.stdout + out.stderr).splitlines() if "nightowl:" in line]
    assert errors and errors[-1].endswith(
        "nightowl: cannot listen on 127.0.0.1:{}: Address already in use".format(port)), \
        out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert not [n for n in os.listdir(str(tmp_path)) if n.startswith("b.sqlite")]


def test_parse_checks_ports_and_dsn_without_io():
    with pytest.raises(UsageError) as e:
        tap.parse(["--listen", "tcp:65536"], environ={})
    assert str(e.value) == "--listen: port 65536 is out of range (0-65535)"
    assert tap.parse(["--listen", "tcp:0"], environ={})["listen"] == "tcp:0"
    assert tap.parse(["--dsn", "postgresql://u@h/db"], environ={})["dsn"] == "postgresql://u@h/db"
    with pytest.raises(UsageError):
        tap.parse([], environ={"NIGHTOWL_DSN": "this is not a dsn"})
