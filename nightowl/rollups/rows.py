"""
The rows of a rollup fold (``nightowl.rollups.aggregate``): one ``Row`` per
(bucket, kind, group_key), merged additively, re-collapsed into the hour and
day tiers (``tiers``) and turned into the upsert's parallel arrays
(``columns``).  Pure, no I/O.
"""

import math

import orjson

from nightowl.rollups import sketch

TIERS = (("minute", 60), ("hour", 3600), ("day", 86400))


class Row:
    __slots__ = ("label", "attrs", "count", "errors", "sum_us", "min_us", "max_us", "sketch")

    def __init__(self, label, attrs):
        self.label = label
        self.attrs = attrs
        self.count = 0
        self.errors = 0
        self.sum_us = 0
        self.min_us = None
        self.max_us = None
        self.sketch = None

    def add(self, duration, error):
        self.count += 1
        if error:
            self.errors += 1
        if duration is not None:
            self.sum_us += duration
            if self.min_us is None or duration < self.min_us:
                self.min_us = duration
            if self.max_us is None or duration > self.max_us:
                self.max_us = duration
            s = self.sketch
            if s is None:
                s = self.sketch = {}
            i = sketch.index(duration)
            s[i] = s.get(i, 0) + 1

    def merge(self, other):
        self.count += other.count
        self.errors += other.errors
        self.sum_us += other.sum_us
        if other.min_us is not None and (self.min_us is None or other.min_us < self.min_us):
            self.min_us = other.min_us
        if other.max_us is not None and (self.max_us is None or other.max_us > self.max_us):
            self.max_us = other.max_us
        if other.sketch:
            if self.sketch is None:
                self.sketch = dict(other.sketch)
            else:
                s = self.sketch
                for i, c in other.sketch.items():
                    s[i] = s.get(i, 0) + c

    def copy(self):
        r = Row(self.label, self.attrs)
        r.merge(self)
        return r


def merge(folds, out=None):
    """Merge several folds (the payloads of a batch) into one new fold."""
    if out is None:
        out = {}
    for f in folds:
        for k, row in f.items():
            cur = out.get(k)
            if cur is None:
                out[k] = row.copy()
            else:
                cur.merge(row)
    return out


def tiers(minutes):
    """{tier name: fold} with the minute fold re-collapsed into hours and days."""
    out = {"minute": minutes}
    for name, width in TIERS[1:]:
        t = out[name] = {}
        for (bucket, kind, group_key), row in minutes.items():
            k = (bucket - bucket % width, kind, group_key)
            cur = t.get(k)
            if cur is None:
                t[k] = row.copy()
            else:
                cur.merge(row)
    return out


def columns(fold):
    """Sorted fold -> the parallel arrays the upsert unnests."""
    cols = ([], [], [], [], [], [], [], [], [], [], [])
    (b, k, g, lab, at, n, e, s, mn, mx, sk) = cols
    for (bucket, kind, group_key) in sorted(fold):
        row = fold[(bucket, kind, group_key)]
        b.append(bucket)
        k.append(kind)
        g.append(group_key)
        lab.append(row.label)
        at.append(None if row.attrs is None else orjson.dumps(row.attrs).decode("utf-8"))
        n.append(row.count)
        e.append(row.errors)
        s.append(float(row.sum_us) if math.isfinite(float(row.sum_us)) else 0.0)
        mn.append(row.min_us)
        mx.append(row.max_us)
        sk.append(None if not row.sketch else sketch.encode(row.sketch))
    return cols
