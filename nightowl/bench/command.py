"""
``nightowl bench ingest|drain|e2e|soak|faults``: one module per benchmark under
``nightowl.bench``, each exposing ``configure(subparser)`` and ``run(args)``.
"""

import importlib

from nightowl.errors import CommandError

BENCHMARKS = {
    # name: (module, help)
    "ingest": ("nightowl.bench.ingest",
               "ingest throughput and ack latency: bare Twisted baseline vs the agent"),
    "drain": ("nightowl.bench.drain", "drain throughput from the SQLite buffer into PostgreSQL"),
    "e2e": ("nightowl.bench.e2e", "end to end: SDK frames to rows in PostgreSQL"),
    "forward": ("nightowl.bench.forward",
                "what --forward costs ingest: the agent with forwarding off and on"),
    "faults": ("nightowl.bench.faults.command",
               "fault injection: every acknowledged payload must be delivered"),
    "dashboard": ("nightowl.bench.dashboard",
                  "10 million raw rows over 30 days: every dashboard page's server time"),
    "rollups": ("nightowl.bench.rollups",
                "rollups: drain cost on/off, percentile accuracy, 24 h top for 1,000 routes"),
    "soak": ("nightowl.bench.soak",
             "a steady run at a fixed rate: the buffer file and WAL stay bounded"),
}


def _available():
    for name, (module, help) in BENCHMARKS.items():
        yield name, module, help, importlib.import_module(module)


def configure(parser):
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    for name, module, help, mod in _available():
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(_bench_module=module)
        mod.configure(p)


def run(args):
    module = getattr(args, "_bench_module", None)
    if not module:
        names = ", ".join(name for name, _m, _h, _mod in _available()) or "none"
        raise CommandError("choose a benchmark (available: {})".format(names), code=2)
    return importlib.import_module(module).run(args) or 0
