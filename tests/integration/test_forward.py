"""
--forward against a real upstream (the recording Twisted server of
nightowl.bench.faults.upstream) and a real agent: byte-identical frames,
upstream down then up, the backlog bound, SIGKILL with a backlog.
"""

import gzip
import os

import pytest

from nightowl import wire
from nightowl.bench.agent import free_port, wait_for
from nightowl.bench.faults.upstream import Upstream
from tests.integration.agent import AgentProcess, send_frame


@pytest.fixture
def parts(tmp_path):
    made = []

    def upstream(port=0, reply="2:OK"):
        u = Upstream(str(tmp_path / "upstream.rec"), port=port, reply=reply)
        made.append(u)
        return u

    def agent(port, *extra, name="b.sqlite"):
        a = AgentProcess(str(tmp_path / name), args=[
            "--drain-workers", "0", "--forward", "127.0.0.1:{}".format(port)] + list(extra),
            health=True)
        made.append(a)
        return a.start()
    yield upstream, agent
    for thing in made:
        if isinstance(thing, Upstream):
            thing.kill()
        elif thing.alive():
            thing.kill()


def frames(n, start=0, token="tok"):
    return [wire.encode_frame(b'[{"t":"request","n":%d}]' % i, token="%s%d" % (token, i % 3))
            for i in range(start, start + n)]


def send_all(agent, fs):
    for f in fs:
        assert send_frame(agent.port, f) == wire.OK


def forward_figures(agent):
    return (agent.status() or {}).get("forward") or {}


def test_frames_arrive_byte_identical(parts):
    make_upstream, make_agent = parts
    upstream = make_upstream().start()
    agent = make_agent(upstream.port)
    sent = frames(20) + [wire.encode_frame(gzip.compress(b'[{"gz":true}]'), token="z")]
    send_all(agent, sent)
    assert wait_for(lambda: len(upstream.frames()) >= len(sent), 30)
    assert sorted(upstream.frames()) == sorted(sent)
    assert wait_for(lambda: forward_figures(agent).get("backlog_rows") == 0, 10)
    figures = forward_figures(agent)
    assert figures["forwarded"] == len(sent) and figures["upstream_up"] is True
    assert figures["dropped"] == 0
    agent.stop(30)
    assert agent.stopped_cleanly()


def test_upstream_down_then_up_delivers_everything(parts):
    make_upstream, make_agent = parts
    port = free_port()
    agent = make_agent(port)
    sent = frames(30)
    send_all(agent, sent)
    assert wait_for(lambda: forward_figures(agent).get("upstream_up") is False, 15)
    assert forward_figures(agent)["backlog_rows"] == 30
    assert forward_figures(agent)["failures"] >= 1
    upstream = make_upstream(port).start()
    assert wait_for(lambda: len(set(upstream.frames())) >= 30, 60)
    assert set(upstream.frames()) == set(sent)
    assert wait_for(lambda: forward_figures(agent).get("upstream_up") is True, 10)


def test_backlog_bound_drops_the_oldest_and_counts(parts):
    make_upstream, make_agent = parts
    port = free_port()
    agent = make_agent(port, "--forward-max-rows", "5")
    sent = frames(12)
    send_all(agent, sent)
    figures = forward_figures(agent)
    assert (figures["backlog_rows"], figures["dropped"], figures["max_rows"]) == (5, 7, 5)
    assert agent.status()["buffer"]["pending"] == 12      # the Postgres copy is all there
    upstream = make_upstream(port).start()
    assert wait_for(lambda: len(set(upstream.frames())) >= 5, 60)
    assert wait_for(lambda: forward_figures(agent).get("backlog_rows") == 0, 10)
    # at most the probe in flight when the bound hit (one while down) may be older
    got = set(upstream.frames())
    assert set(sent[-5:]) <= got and len(got - set(sent[-5:])) <= 1


def test_sigkill_with_a_backlog_forwards_after_restart(parts, tmp_path):
    make_upstream, make_agent = parts
    port = free_port()
    agent = make_agent(port)
    sent = frames(25)
    send_all(agent, sent)
    agent.kill()
    upstream = make_upstream(port).start()
    again = make_agent(port)
    assert wait_for(lambda: len(set(upstream.frames())) >= 25, 60)
    assert set(upstream.frames()) == set(sent)
    assert wait_for(lambda: forward_figures(again).get("backlog_rows") == 0, 10)
    assert os.path.exists(str(tmp_path / "b.sqlite"))


def test_rejecting_upstream_does_not_block_the_queue(parts):
    make_upstream, make_agent = parts
    upstream = make_upstream(reply="5:ERROR").start()
    agent = make_agent(upstream.port)
    send_all(agent, frames(3))
    assert wait_for(lambda: forward_figures(agent).get("given_up") == 3, 60)
    figures = forward_figures(agent)
    assert figures["rejected"] >= 9 and figures["forwarded"] == 0
    assert wait_for(lambda: forward_figures(agent).get("backlog_rows") == 0, 10)


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"),
                    reason="several ingest processes need Linux SO_REUSEPORT")
def test_each_ingest_process_forwards_its_own_buffer(tmp_path):
    from nightowl.bench import agent as launcher
    from nightowl.bench.faults import multiproc as faults_multiproc
    upstream = Upstream(str(tmp_path / "upstream.rec")).start()
    agent = faults_multiproc.multi_agent(str(tmp_path / "b.sqlite"), 2, args=[
        "--drain-workers", "0", "--forward", "127.0.0.1:{}".format(upstream.port)])
    try:
        with launcher.running(agent):
            assert wait_for(lambda: faults_multiproc.all_running(agent, 2), 60.0)
            sent = frames(60)
            send_all(agent, sent)
            assert wait_for(lambda: len(set(upstream.frames())) >= 60, 60)
            assert set(upstream.frames()) == set(sent)
            assert wait_for(lambda: forward_figures(agent).get("forwarded") == 60, 15)
            kids = agent.status()["ingest_processes"]["children"]
            per_child = [c["document"]["forward"]["forwarded"] for c in kids]
            assert sum(per_child) == 60 and all(per_child), per_child
            assert forward_figures(agent)["upstream_up"] is True
            assert agent.stop() in (0, -15)
    finally:
        upstream.kill()
