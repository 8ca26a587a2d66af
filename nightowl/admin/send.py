"""
``nightowl send``: a simulator.  Sends SDK-shaped payloads to an agent the
way laravel/nightwatch does (one frame per connection, read up to 4 bytes,
``2:OK`` or it failed) and counts the outcomes.  Records come from
nightowl.bench.payloads (the repository's fixtures, else a built-in set), restamped
with fresh trace ids and the current time so they land in today's partitions.

Scenarios: ``requests`` (a request with its queries, cache event and log),
``exceptions`` (an exception and its failing request), ``jobs`` (queued jobs
and job attempts), ``errors`` (5xx requests, exceptions, error logs), and
``mixed`` (every record type, shuffled).
"""

import random
import time
import uuid

from nightowl import wire
from nightowl.admin import ping

SCENARIOS = ("mixed", "requests", "exceptions", "jobs", "errors")


def configure(parser):
    ping.add_target_arguments(parser)
    parser.add_argument("--count", type=int, default=100, metavar="N",
                        help="payloads to send (default 100)")
    parser.add_argument("--rate", type=float, default=0.0, metavar="R",
                        help="payloads per second (default 0: as fast as replies come)")
    parser.add_argument("--scenario", choices=SCENARIOS, default="mixed",
                        help="what the payloads hold (default mixed)")
    parser.add_argument("--timeout", type=float, default=ping.TIMEOUT,
                        help="connect and reply timeout in seconds (default 0.5, as the SDK)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (repeatable runs)")


def _encode(records):
    from nightowl.bench import payloads
    return payloads.encode(records)


def _pick(by_type, t, rng):
    choices = by_type.get(t) or []
    return dict(rng.choice(choices)) if choices else None


def make_records(scenario, rng, by_type):
    """The records of one payload for ``scenario``."""
    types = sorted(by_type)
    if scenario == "requests":
        wanted = ["query", "query", "cache-event", "log", "request"]
    elif scenario == "exceptions":
        wanted = ["query", "exception", "log", "request"]
    elif scenario == "jobs":
        wanted = ["queued-job", "query", "job-attempt"]
    elif scenario == "errors":
        wanted = ["query", "exception", "log", "request"]
    else:
        wanted = [rng.choice(types) for _ in range(rng.randint(5, 7))]
    records = [r for r in (_pick(by_type, t, rng) for t in wanted) if r is not None]
    if scenario in ("exceptions", "errors"):
        for record in records:
            if record.get("t") == "request":
                record["status_code"] = 500 if scenario == "errors" else rng.choice((500, 200))
                record["exceptions"] = 1
            elif record.get("t") == "log" and scenario == "errors":
                record["level"] = "error"
            elif record.get("t") == "exception" and scenario == "errors":
                record["handled"] = False
    return records


def payloads_for(scenario, count, rng, now=None):
    from nightowl.bench import payloads
    by_type = payloads.records_by_type()
    now = time.time() if now is None else now
    out = []
    for k in range(count):
        records = make_records(scenario, rng, by_type)
        user = str(rng.randint(1, 5000))  # drawn before the trace id, as before
        trace = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        out.append(_encode(payloads.stamp(records, trace, user, now + k * 0.001)))
    return out


def run(args):
    from nightowl.admin.progress import Progress
    from nightowl.cli import CommandError
    host, port = ping.target(args)
    if args.count <= 0:
        raise CommandError("--count: must be greater than 0", code=2)
    if args.rate < 0:
        raise CommandError("--rate: must be 0 or more", code=2)
    token = args.token if args.token is not None else ping.default_token()
    rng = random.Random(args.seed)
    bodies = payloads_for(args.scenario, args.count, rng)
    outcomes = {}
    ok = 0
    progress = Progress("send {}".format(args.scenario), total=args.count)
    started = time.monotonic()
    for n, body in enumerate(bodies):
        if args.rate > 0:
            delay = started + n / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        try:
            reply = ping.exchange(host, port, wire.encode_frame(body, token),
                                  timeout=args.timeout)
        except OSError as e:
            outcome = ping.describe_error(e)
        else:
            outcome = "2:OK" if reply == wire.OK else "reply {!r}".format(reply.decode(
                "latin-1"))
        if outcome == "2:OK":
            ok += 1
        else:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        # progress counts deliveries (2:OK replies), not attempts
        failed = sum(outcomes.values())
        progress.update(ok, note="{} failed".format(failed) if failed else "")
        if n == 2 and not ok and sum(outcomes.values()) == 3 and len(outcomes) == 1 \
                and "refused" in next(iter(outcomes)).lower():
            progress.finish("aborted")
            raise CommandError("cannot connect to {}:{}: {}".format(
                host, port, next(iter(outcomes))))
    elapsed = time.monotonic() - started
    failed = sum(outcomes.values())
    progress.finish("{} ok, {} failed".format(ok, failed))
    print("sent {} {} payloads to {}:{} in {:.2f} s ({:.0f}/s): ok {}, error {}{}".format(
        len(bodies), args.scenario, host, port, elapsed, len(bodies) / max(elapsed, 1e-9), ok,
        failed, " (" + ", ".join("{} {}".format(k, v) for k, v in sorted(outcomes.items()))
        + ")" if outcomes else ""))
    return 1 if failed else 0


