"""nightowl.rollups.sketch: accuracy against exact percentile_disc, merging, encoding."""

import math

from hypothesis import given, settings, strategies as st

from nightowl.rollups import sketch

durations = st.lists(st.integers(min_value=0, max_value=10 ** 10), min_size=1, max_size=400)
quantiles = st.sampled_from([0.0, 0.01, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0])


def exact(values, q):
    """PostgreSQL's percentile_disc: the value at rank max(1, ceil(q * n))."""
    v = sorted(values)
    return v[max(1, math.ceil(q * len(v))) - 1]


def of(values):
    s = {}
    for v in values:
        sketch.add(s, v)
    return s


@given(durations, quantiles)
def test_quantile_within_one_percent_of_exact(values, q):
    got = sketch.quantile(of(values), q)
    want = exact(values, q)
    if want == 0:
        assert got == 0
    else:
        assert abs(got - want) / want <= sketch.ALPHA + 1e-9


@given(st.lists(durations, min_size=1, max_size=6), quantiles)
def test_merged_sketches_are_as_accurate_as_one(parts, q):
    merged = sketch.merge(*[of(p) for p in parts])
    values = [v for p in parts for v in p]
    assert merged == of(values)
    want = exact(values, q)
    got = sketch.quantile(merged, q)
    assert got == 0 if want == 0 else abs(got - want) / want <= sketch.ALPHA + 1e-9


@given(durations, durations, durations)
def test_merge_is_commutative_and_associative(a, b, c):
    a, b, c = of(a), of(b), of(c)
    assert sketch.merge(a, b) == sketch.merge(b, a)
    assert sketch.merge(sketch.merge(a, b), c) == sketch.merge(a, sketch.merge(b, c))


@given(durations)
def test_encode_decode_round_trip(values):
    s = of(values)
    assert sketch.decode(sketch.encode(s)) == s
    assert sketch.decode(str(sketch.encode(s))) == s


@given(durations, durations)
def test_encoded_addition_is_merge(a, b):
    from decimal import Decimal, getcontext
    getcontext().prec = 20000
    a, b = of(a), of(b)
    total = Decimal(sketch.encode(a)) + Decimal(sketch.encode(b))
    assert sketch.decode(total) == sketch.merge(a, b)


def test_empty_and_extremes():
    assert sketch.encode({}) == "0"
    assert sketch.decode("0") == {}
    assert sketch.quantile({}, 0.5) is None
    assert sketch.index(0) == 0 and sketch.index(-5) == 0
    assert sketch.index(10 ** 18) == sketch.KMAX + 1
    assert abs(sketch.estimate(sketch.index(1)) - 1) <= 0.01


@settings(max_examples=30)
@given(st.floats(min_value=-2, max_value=4), st.floats(min_value=0.3, max_value=2.5))
def test_heavy_tailed_lognormal_within_one_percent(mu, sigma):
    import random
    rnd = random.Random(int((mu + 3) * 1000 + sigma * 10))
    values = [int(math.exp(rnd.gauss(mu + 8, sigma))) for _ in range(2000)]
    s = of(values)
    for q in (0.5, 0.95, 0.99):
        want = exact(values, q)
        assert abs(sketch.quantile(s, q) - want) / want <= sketch.ALPHA + 1e-9
