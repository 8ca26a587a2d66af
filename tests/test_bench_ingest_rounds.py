"""``nightowl bench ingest --rounds``: the median of each ratio across rounds."""

from nightowl.bench import ingest_rounds


def summary(ratio, cpu, x2=None, p99=5.0):
    s = {"ratio": ratio, "cpu_ratio": cpu, "p99_ms_at_fixed_rate": p99}
    if x2 is not None:
        s["scaling"] = {"x2_vs_one": x2, "x2_vs_bare": round(ratio * x2, 3)}
    return s


def test_medians_take_the_middle_round_and_judge_the_median():
    found = ingest_rounds.medians([summary(0.39, 2.81, 1.06), summary(0.57, 2.34, 1.55),
                                   summary(0.52, 2.50, 1.42)])
    one = found["1 process / bare"]
    assert (one["median"], one["min"], one["max"]) == (0.52, 0.39, 0.57)
    assert one["met"] is True          # 0.52 >= 0.5, though one round missed
    assert found["CPU/payload / bare"]["median"] == 2.5
    assert found["CPU/payload / bare"]["met"] is False
    assert found["2 processes / 1 process"]["median"] == 1.42
    assert found["2 processes / 1 process"]["met"] is True
    assert found["2 processes / bare"]["met"] is None   # no target


def test_a_ratio_missing_from_some_rounds_uses_the_rounds_that_have_it():
    found = ingest_rounds.medians([summary(0.4, 2.0), summary(0.6, None, 1.2)])
    assert found["1 process / bare"]["median"] == 0.5
    assert found["CPU/payload / bare"]["values"] == [2.0]
    assert found["2 processes / 1 process"]["values"] == [1.2]
    assert "2 processes: CPU/payload / bare" not in found


def test_the_table_names_every_ratio_and_its_verdict():
    lines = []
    ingest_rounds.say_medians(ingest_rounds.medians(
        [summary(0.39, 2.81, 1.06), summary(0.57, 2.34, 1.55)]), 2, lines.append)
    text = "\n".join(lines)
    assert "medians over 2 rounds" in text
    assert "1 process / bare" in text and "0.48" in text and "MISS" in text
    assert "0.39-0.57" in text
