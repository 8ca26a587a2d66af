"""
The quantile sketch of the rollup tables: DDSketch-style log buckets, stored
so that PostgreSQL merges two sketches by plain ``numeric`` addition.

A sketch counts durations (integer microseconds) in buckets of relative
width ``GAMMA = (1 + ALPHA) / (1 - ALPHA)``, ``ALPHA = 0.01``: a value
``v >= 1`` falls in key ``k = ceil(log(v) / log(GAMMA))`` (clamped to
``[0, KMAX]``), values below 1 us (0 us durations) in the zero bucket.
Bucket ``i`` (0 = zero bucket, ``i = k + 1`` otherwise) is a 12-decimal-digit
field of one number: ``sketch = sum(count_i * 10 ** (12 * i))``.  Two
sketches merge by adding those numbers (no carry while a bucket holds fewer
than 10**12 - 1 samples), so the SQL aggregate is ``sum()`` (C speed, no
extension) and the upsert merges with ``old + new``.  The total count is the
digit sum in base 10**12, i.e. ``sketch mod (10**12 - 1)``.

A quantile ``q`` of ``n`` samples is the bucket holding the sample of rank
``max(1, ceil(q * n))`` (the rank ``percentile_disc`` returns), estimated by
the bucket's midpoint ``2 * GAMMA**k / (GAMMA + 1)``: within ALPHA of the
exact value.  ``nightowl_sketch_quantile`` (schema 0020) is the same
algorithm in PL/pgSQL and returns the same float.

Wire/storage text: ``<fields from the highest nonzero one down>e<12*lowest>``,
e.g. ``"3000000000002e36"``; ``"0"`` is the empty sketch.
"""

import math
from decimal import Decimal

ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
LN_GAMMA = math.log(GAMMA)
KMAX = 1280                 # GAMMA ** KMAX ~ 1.1e11 us (~31 h); longer clamps
WIDTH = 12                  # decimal digits per bucket
BASE = 10 ** WIDTH
FIELD_MAX = BASE - 1        # per-bucket (and total) sample limit of a merged sketch


def index(value):
    """Bucket index (0 = zero bucket) of a duration in microseconds."""
    if value < 1:
        return 0
    k = math.ceil(math.log(value) / LN_GAMMA)
    if k > KMAX:
        k = KMAX
    return k + 1


def estimate(i):
    """The value a bucket stands for (microseconds)."""
    if i <= 0:
        return 0.0
    return 2.0 * GAMMA ** (i - 1) / (GAMMA + 1.0)


def add(counts, value, n=1):
    """Count ``value`` into the dict ``counts`` (bucket index -> count)."""
    i = index(value)
    counts[i] = counts.get(i, 0) + n
    return counts


def merge(*sketches):
    """Sum of bucket-count dicts (a new dict)."""
    out = {}
    for s in sketches:
        for i, c in s.items():
            out[i] = out.get(i, 0) + c
    return out


def encode(counts):
    """Bucket-count dict -> numeric literal text (see the module docstring)."""
    items = sorted(((i, c) for i, c in counts.items() if c), reverse=True)
    if not items:
        return "0"
    for _, c in items:
        if c < 0 or c > FIELD_MAX:
            raise ValueError("bucket count out of range: {}".format(c))
    prev, top = items[0]
    parts = [str(top)]
    for i, c in items[1:]:
        if prev - i > 1:
            parts.append("0" * (WIDTH * (prev - i - 1)))
        parts.append("%012d" % c)
        prev = i
    return "{}e{}".format("".join(parts), WIDTH * prev)


def decode(value):
    """Numeric (Decimal, int or text as stored/returned) -> bucket-count dict."""
    if value is None:
        return {}
    if not isinstance(value, Decimal):
        value = Decimal(str(value)) if not isinstance(value, str) else Decimal(value)
    sign, digits, exp = value.as_tuple()
    if sign or not isinstance(exp, int):
        return {}
    text = "".join(map(str, digits))
    if exp < 0:
        text = text[:exp] or "0"
        exp = 0
    first, pad = divmod(exp, WIDTH)
    text = text + "0" * pad
    out = {}
    i = first
    end = len(text)
    while end > 0:
        start = max(0, end - WIDTH)
        c = int(text[start:end])
        if c:
            out[i] = c
        i += 1
        end = start
    return out


def count(counts):
    return sum(counts.values())


def quantile(counts, q):
    """Estimated q-quantile (microseconds) or None for an empty sketch;
    the same float ``nightowl_sketch_quantile`` returns."""
    n = sum(counts.values())
    if n <= 0:
        return None
    q = min(1.0, max(0.0, float(q)))
    rank = max(1, math.ceil(q * float(n)))
    acc = 0
    for i in sorted(counts):
        acc += counts[i]
        if acc >= rank:
            return estimate(i)
    return estimate(max(counts))
