"""The rollup fold's memo (aggregate.groups_of): it must never map two
records to the same groups unless the KINDS rules would."""

import random

from nightowl.bench import payloads
from nightowl.rollups import aggregate


class Recording(dict):
    def __init__(self, *a):
        dict.__init__(self, *a)
        self.read = set()

    def get(self, k, default=None):
        self.read.add(k)
        return dict.get(self, k, default)

    def __getitem__(self, k):
        self.read.add(k)
        return dict.__getitem__(self, k)


def fixture_records():
    by_type = payloads.records_by_type()
    return [dict(r) for t in sorted(by_type) for r in by_type[t]]


def test_every_field_a_kinds_rule_reads_is_in_its_memo_key():
    recs = fixture_records()
    assert {r["t"] for r in recs} >= set(aggregate.KINDS)
    for rec in recs:
        for drop in [None] + sorted(rec):     # also with each key missing (fallback paths)
            r = Recording({k: v for k, v in rec.items() if k != drop})
            t = r.get("t")
            if t not in aggregate.KINDS:
                continue
            r.read.clear()
            aggregate.KINDS[t][0](r)
            assert r.read <= set(aggregate.FIELDS[t]) | {"t"}, (t, r.read - set(aggregate.FIELDS[t]))


def test_the_memo_tells_apart_values_that_compare_equal():
    base = {"t": "request", "route_path": "/r", "method": "GET", "duration": 5}
    variants = [dict(base, status_code=v) for v in (500, 500.0, True, 1, "500", None)]
    variants += [dict(base, route_methods=m) for m in (["GET"], ["GET", 1], ["GET", True],
                                                       ["GET", 1.0], [["GET"]], [], "GET")]
    variants += [{"t": "mail", "class": "M", "failed": v} for v in (True, 1, "true", None)]
    variants += [{"t": "exception", "class": "E", "line": v, "handled": h}
                 for v in (1, True, 1.0, "1") for h in (True, 1, False, 0, "false")]
    variants += [{"t": "log", "level": v} for v in ("ERROR", "error", 0, False, -0.0, 0.0)]
    rnd = random.Random(4)
    for _ in range(3):
        rnd.shuffle(variants)
        aggregate._memo.clear()
        for rec in variants:
            t = rec["t"]
            want = aggregate.KINDS[t][0](rec)
            assert aggregate.groups_of(t, rec, aggregate.KINDS[t][0]) == want, rec


def test_a_fold_with_the_memo_equals_one_without():
    recs = fixture_records() * 3
    aggregate._memo.clear()
    memo = aggregate.fold(recs, 1714694500.0)
    plain = {}
    for rec in recs:
        spec = aggregate.KINDS.get(rec.get("t"))
        if spec is None:
            continue
        ts, _ = aggregate.records.event_time(rec.get("timestamp"), 1714694500.0)
        minute = aggregate.minute_of(ts)
        for kind, gk, label, attrs, error in spec[0](rec):
            row = plain.setdefault((minute, kind, gk), aggregate.Row(label, attrs))
            row.add(aggregate._duration(rec) if spec[1] else None, error)
    assert aggregate.columns(memo) == aggregate.columns(plain)


def test_the_inlined_fold_equals_add_record_on_odd_timestamps_and_durations():
    now = 1714694500.0
    odd_ts = [now, now - 1.5, int(now) - 61, str(now - 120), "x", None, float("nan"),
              float("inf"), now + 10 * 86400, now - 400 * 86400, True, 10 ** 400]
    odd_d = [0, 1, 2, 999999, 10 ** 12, -5, 2 ** 63, -2 ** 63 - 1, 1.5, "250", True, None,
             float("nan"), [1]]
    recs = []
    for i, rec in enumerate(fixture_records()):
        rec = dict(rec, timestamp=odd_ts[i % len(odd_ts)])
        if "duration" in rec:
            rec["duration"] = odd_d[i % len(odd_d)]
        recs.append(rec)
    recs += ["not a record", {"t": "unknown"}, {"no": "type"}]
    aggregate._memo.clear()
    fast = aggregate.fold_many((recs[:7], recs[7:]), now)
    plain = {}
    for rec in recs:
        if isinstance(rec, dict) and rec.get("t") in aggregate.KINDS:
            ts, _ = aggregate.records.event_time(rec.get("timestamp"), now)
            aggregate.add_record(plain, rec, aggregate.minute_of(ts))
    assert fast and aggregate.columns(fast) == aggregate.columns(plain)


def test_derive_kinds_lists_every_kind_the_fold_produces():
    from nightowl.rollups import derive
    recs = [dict(r, user="u1") for r in fixture_records()]
    produced = {kind for rec in recs if rec["t"] in aggregate.KINDS
                for kind, _, _, _, _ in aggregate.KINDS[rec["t"]][0](rec)}
    assert produced == set(derive.KINDS)
    assert list(derive.KINDS) == sorted(derive.KINDS)
