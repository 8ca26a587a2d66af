"""The pure rules of ``nightowl bench e2e``: flatness, the rate search, CPU and profile sums."""

from nightowl.bench import e2e, pyspy


def test_flat_allows_a_sawtooth_of_batches_but_not_growth():
    assert e2e.flat_bound(4000, 5000) == 10000
    assert e2e.flat_bound(20000, 5000) == 20000
    assert e2e.is_flat(3000, 12000, 4000, 5000)          # +9000 <= 2 batches
    assert not e2e.is_flat(3000, 14000, 4000, 5000)      # +11000: the drain fell behind
    assert e2e.is_flat(50000, 1000, 8000, 5000)          # shrinking is flat


def test_sustained_needs_the_rate_and_every_ack():
    assert e2e.is_sustained(8000, 7700, 1000, 1000)
    assert not e2e.is_sustained(8000, 7000, 1000, 1000)  # the generator could not keep up
    assert not e2e.is_sustained(8000, 8000, 999, 1000)   # one frame not acked
    assert not e2e.is_sustained(8000, 8000, 0, 0)


def test_rate_search_steps_up_then_bisects_once():
    calls = []

    def probe(rate):
        calls.append(rate)
        return rate <= 9000

    best, tried = e2e.rate_search(probe, 4000, 2000, 30000)
    assert calls == [4000, 6000, 8000, 10000, 9000]
    assert best == 9000
    assert tried[-2:] == [(10000, False), (9000, True)]


def test_rate_search_bisect_failing_keeps_the_last_good_rate():
    best, tried = e2e.rate_search(lambda r: r <= 8500, 4000, 2000, 30000)
    assert best == 8000 and tried[-1] == (9000, False)


def test_rate_search_first_step_fails_and_ceiling_stops_it():
    best, tried = e2e.rate_search(lambda r: r <= 1000, 4000, 2000, 30000)
    assert tried == [(4000, False), (2000, False)] and best is None
    best, tried = e2e.rate_search(lambda r: True, 4000, 2000, 8000)
    assert best == 8000 and [r for r, _ in tried] == [4000, 6000, 8000]


def test_cpu_pct_sums_only_pids_seen_twice():
    assert e2e.cpu_pct({1: 100, 2: 50}, {1: 300, 3: 999}, 2.0, clk_tck=100) == 100.0


def test_top_frames_from_py_spy_raw():
    raw = ["main (a.py:1);loop (a.py:5);parse (w.py:9) 30\n",
           "main (a.py:1);loop (a.py:5);commit (b.py:3) 10\n",
           "garbage line\n"]
    top = pyspy.top_frames(raw)
    assert top["samples"] == 40
    assert top["self"][0] == ("parse (w.py:9)", 30, 75.0)
    assert ("loop (a.py:5)", 40, 100.0) in top["inclusive"]


def test_issue12_figures_with_and_without_the_drain():
    from nightowl.bench import e2e_ratios
    assert e2e_ratios.us_per_payload(50.0, 10.0, 10000) == 500.0
    assert e2e_ratios.us_per_payload(50.0, 10.0, 0) is None
    only = {"full_rate": 5000.0, "us_per_payload": 200.0}
    half = {"agent_us_per_payload": 250.0, "p99_ms": 8.0}
    f = e2e_ratios.figures(4000, half, only)
    assert (f["cpu_ratio"], f["rate_ratio"], f["p99_ms_at_half"]) == (1.25, 0.8, 8.0)
    assert all(f["met"].values())
    f = e2e_ratios.figures(3000, dict(half, agent_us_per_payload=300.0, p99_ms=12.0), only)
    assert f["met"] == {"cpu_ratio": False, "rate_ratio": False, "p99_ms_at_half": False}
    lines = []
    e2e_ratios.table(f, lines.append)
    assert len(lines) == 4 and sum(line.endswith("MISS") for line in lines) == 3
    nothing = e2e_ratios.figures(None, None, only)
    assert nothing["cpu_ratio"] is None and not any(nothing["met"].values())


def test_confirmation_falls_back_to_the_lower_rates_that_passed():
    tried = [(4000, True), (6000, False), (5000, True)]
    assert e2e.confirmation_rates(5000, tried) == [5000, 4000]
    tried = [(2000, True), (4000, True), (6000, True), (8000, False), (7000, True)]
    assert e2e.confirmation_rates(7000, tried) == [7000, 6000, 4000]
    assert e2e.confirmation_rates(None, [(4000, False)]) == []


def test_settled_needs_the_backlog_and_the_drained_rows_down():
    class Agent:
        def __init__(self, **buffer):
            self.buffer = buffer

        def status(self):
            return {"buffer": self.buffer} if self.buffer else None

    assert e2e._settled(Agent(pending=40, claimed=50, drained_kept=100), 100)
    assert not e2e._settled(Agent(pending=40, claimed=70, drained_kept=0), 100)
    # the workers caught up, the housekeeping has not yet deleted what they drained
    assert not e2e._settled(Agent(pending=0, claimed=0, drained_kept=25000), 100)
    assert not e2e._settled(Agent(), 100)          # no /status answer
