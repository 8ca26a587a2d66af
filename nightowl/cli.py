"""
The ``nightowl`` admin command line.

Each subcommand lives in its own module and registers here with one line in
``COMMANDS``: ``name -> (module path, one-line help)``.  The module exposes
``configure(parser)`` (add arguments to an argparse subparser) and
``run(args) -> int`` (the exit code).  Errors are one line on stderr and a
non-zero exit code, never a traceback: raise ``CommandError``.
"""

import argparse
import importlib
import sys


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit code ``code``."""

    def __init__(self, message, code=1):
        Exception.__init__(self, message)
        self.code = code


COMMANDS = {
    # name: (module, help)
    "migrate": ("nightowl.migrate", "apply the PostgreSQL schema migrations and show what ran"),
    "status": ("nightowl.admin.status", "show the running agent's health (exit code follows it)"),
    "ping": ("nightowl.admin.ping", "send a PING frame exactly as the SDK does"),
    "buffer": ("nightowl.admin.buffer", "inspect, requeue or verify the SQLite buffer"),
    "prune": ("nightowl.admin.prune", "apply retention now: drop expired daily partitions"),
    "send": ("nightowl.admin.send", "send realistic SDK-shaped payloads (simulator)"),
    "issues": ("nightowl.admin.issues", "list issues, show one, resolve, ignore or reopen it"),
    "thresholds": ("nightowl.admin.thresholds",
                   "set, list or remove the duration thresholds of performance issues"),
    "alerts": ("nightowl.admin.alerts", "alert channels: add, list, remove, test"),
    "top": ("nightowl.admin.top", "the slowest or busiest routes, queries, jobs, outgoing hosts"),
    "rollups": ("nightowl.admin.rollups", "rebuild the minute/hour/day rollups from raw rows"),
    "bench": ("nightowl.bench.command", "benchmarks: ingest, drain, e2e, soak, faults"),
}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="nightowl",
        description="nightowl: self-hosted Laravel Nightwatch ingest agent. "
                    "Run the agent with `twistd -n nightowl`; these are its admin commands.")
    from nightowl import __version__
    parser.add_argument("--version", action="version", version="nightowl " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help) in COMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue  # not built yet
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(_module=module)
        mod.configure(p)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_module", None):
        parser.print_help()
        return 2
    try:
        return importlib.import_module(args._module).run(args) or 0
    except CommandError as e:
        sys.stderr.write("nightowl {}: {}\n".format(args.command, e))
        return e.code
    except KeyboardInterrupt:
        sys.stderr.write("nightowl {}: interrupted\n".format(args.command))
        return 130


if __name__ == "__main__":
    # Run as `python -m nightowl.cli`: use the importable module, so that
    # subcommands raising nightowl.cli.CommandError are caught by main().
    from nightowl.cli import main as _main
    sys.exit(_main())
