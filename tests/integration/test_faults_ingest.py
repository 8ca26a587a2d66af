"""
Ingest-side fault injection, short version (``nightowl bench faults`` is the
long one): every payload carries a unique id, an id counts as acked only on
``2:OK``, and after the fault the buffer must hold every acked id, no id
twice and nothing never sent.  Each trial also proves it was not vacuous
(the kill hit with acks flowing, the buffer really was full, ...).

The trials themselves live in nightowl/bench/faults/; these tests run
them small and fail with their violations.
"""

import pytest

from nightowl.bench.faults import corrupt, hostile, ingest
from nightowl.bench.faults.corrupt import CORRUPTIONS
from nightowl.bench.faults.frames import TOKEN, hand_list, hypothesis_frames, reference
from nightowl.bench.faults.oracle import Oracle, read_buffer
from tests.integration.faultlib import assert_trial, require_root_for_tmpfs


# -- the oracle can fail ---------------------------------------------------------

def test_oracle_catches_loss_duplicates_and_strangers():
    oracle = Oracle()
    oracle.send(range(1, 6))
    oracle.ack([1, 2, 3])
    assert oracle.check([(1, 0, 1), (2, 0, 2), (3, 0, 3), (4, 0, 4)])["violations"] == []
    lost = oracle.check([(1, 0, 1), (2, 0, 2)])
    assert lost["missing"] == 1
    twice = oracle.check([(1, 0, 1), (2, 0, 2), (3, 0, 3), (4, 0, 3)])
    assert twice["duplicates"] == 1
    stranger = oracle.check([(1, 0, 1), (2, 0, 2), (3, 0, 3), (4, 0, 99), (5, 0, None)])
    assert stranger["foreign"] == 2


def test_buffer_reader_recovers_ids_from_payloads(tmp_path):
    path = str(tmp_path / "b.sqlite")
    corrupt._populate(path, 5, seq_start=41)
    assert [seq for (_r, _s, seq) in read_buffer(path)] == [41, 42, 43, 44, 45]


def test_reference_grammar_agrees_on_known_frames():
    from nightowl.bench import payloads
    good = payloads.frame(b'[{"t":"log"}]', TOKEN)
    assert reference(good) == "valid"
    assert reference(payloads.frame(b'[{"t":"log"}]', "other")) == "invalid"
    assert reference(good[:-3]) == "incomplete"
    for label, data, incomplete in hand_list():
        if label in ("json-nan", "lone-surrogate"):
            continue  # stdlib json takes these; the reference is conservative on purpose
        assert reference(data) == ("incomplete" if incomplete else "invalid"), label


# -- 1. SIGKILL under load ---------------------------------------------------------

def test_sigkill_under_load_keeps_every_acked_payload(tmp_path):
    result = ingest.kill_trials(str(tmp_path), trials=3, seed=11)
    assert len(result["trials"]) == 3
    assert_trial(result)


# -- 4. back-pressure past --max-pending --------------------------------------------

def test_back_pressure_refuses_past_max_pending_and_the_drain_releases_it(tmp_path, fresh_pg_dsn):
    result = ingest.backpressure_trial(str(tmp_path), max_pending=200, dsn=fresh_pg_dsn)
    assert_trial(result)
    assert result["refused"] > 0 and result["counted_back_pressure"] == result["refused"]
    assert result["acked_after_drain"] == 20


# -- 5. disk full under the buffer ----------------------------------------------------

def test_disk_full_refuses_with_error_stays_up_and_recovers(tmp_path):
    require_root_for_tmpfs()
    result = ingest.diskfull_trial(str(tmp_path))
    assert_trial(result)


# -- 6. a corrupt buffer at startup ------------------------------------------------------

@pytest.mark.parametrize("case", CORRUPTIONS)
def test_corrupt_buffer_at_startup(tmp_path, case):
    result = corrupt.corrupt_trial(str(tmp_path), case, seed=3)
    assert_trial(result)


# -- 7. hostile input beside valid traffic -------------------------------------------------

def test_hostile_input_beside_valid_traffic(tmp_path):
    frames = hypothesis_frames(300)
    assert frames and len(frames) >= 100
    result = hostile.hostile_trial(str(tmp_path), generated=len(frames), idle=500, slowloris=10,
                                  chooser_frames=frames)
    assert_trial(result)
    assert result["outcomes"].get("error", 0) > 0
    assert result["idle_closed"] == 500
