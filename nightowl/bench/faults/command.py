"""
``nightowl bench faults``: its flags, the choice of trials (``--only``,
``--seed``), scratch databases for the drain trials, the table of outcomes
and the final JSON line.
"""

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time

from nightowl.bench import scratch
from nightowl.bench.faults import guards
from nightowl.bench.faults.corrupt import CORRUPTIONS, corrupt_trial
from nightowl.bench.faults.drain import agent_kill_drain_trials, worker_kill_trials
from nightowl.bench.faults.agents import several_agents_trial
from nightowl.bench.faults.forwarding import upstream_kill_trial
from nightowl.bench.faults.frames import hypothesis_frames
from nightowl.bench.faults.multiproc import child_kill_trial
from nightowl.bench.faults.hostile import hostile_trial
from nightowl.bench.faults.ingest import (
    backpressure_trial, can_mount, diskfull_trial, kill_trials)
from nightowl.bench.faults.outage import outage_trial


# -- the command --------------------------------------------------------------

def configure(parser):
    parser.add_argument("--kill-trials", type=int, default=20,
                        help="SIGKILL trials under load (default 20)")
    parser.add_argument("--generated", type=int, default=10000,
                        help="generated hostile frames (default 10000)")
    parser.add_argument("--idle", type=int, default=5000,
                        help="idle connections held open during the hostile run (default 5000)")
    parser.add_argument("--slowloris", type=int, default=50,
                        help="slowloris clients during the hostile run (default 50)")
    parser.add_argument("--max-pending", type=int, default=200,
                        help="--max-pending for the back-pressure trial (default 200)")
    parser.add_argument("--dsn", default=None,
                        help="PostgreSQL DSN of a scratch database for the back-pressure "
                             "trial's real drain (default: create one via --admin-dsn)")
    scratch.add_admin_dsn(
        parser, env="NIGHTOWL_TEST_ADMIN_DSN",
        help="DSN used to create and drop a scratch database when --dsn is not given; "
             "'none' to drain out of band instead")
    parser.add_argument("--agent-kill-trials", type=int, default=20,
                        help="SIGKILL trials of the agent with its drain workers and Postgres "
                             "(default 20)")
    parser.add_argument("--worker-kill-trials", type=int, default=21,
                        help="SIGKILL trials of one drain worker: from outside, mid-COPY, "
                             "between commit and mark, in turn (default 21)")
    parser.add_argument("--outage-trials", type=int, default=2,
                        help="Postgres stopped (immediate) mid-drain and started again "
                             "(default 2)")
    parser.add_argument("--drain-rate", type=int, default=1500,
                        help="payloads/s sent during the drain trials (default 1500)")
    parser.add_argument("--only", default=None,
                        help="comma-separated faults to run: sigkill, back-pressure, "
                             "disk-full, corrupt, hostile, agent-kill, worker-kill, pg-outage, "
                             "clock-skew, second-agent, big-frames, poison-claim, "
                             "frozen-worker, ingest-process-kill, several-agents, "
                             "upstream-kill")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")


def _fresh(tmp, name):
    path = os.path.join(tmp, name)
    os.makedirs(path, exist_ok=True)
    return path


def table(results):
    """Rows ``fault | trial | outcome | detail`` for every trial."""
    rows = []
    for r in results:
        if r["fault"] == "sigkill":
            for t in r["trials"]:
                rows.append(("sigkill", "#{}".format(t["trial"]), "ok" if t["ok"] else "FAIL",
                             "kill at {}s: {} acked, {} stored, {} broken in flight, "
                             "{} stored unacked".format(t["kill_at_s"], t["acked"], t["stored"],
                                                        t["in_flight_broken"],
                                                        t["stored_unacked"])))
            f = r["final"]
            rows.append(("sigkill", "all", "ok" if r["ok"] else "FAIL",
                         "{} issued, {} acked, {} stored, {} missing, {} dup, {} foreign".format(
                             f["sent"], f["acked"], f["stored"], f["missing"],
                             f["duplicates"], f["foreign"])))
        elif r["fault"] == "agent-kill-drain":
            for t in r["trials"]:
                rows.append(("agent-kill", "#{}".format(t["trial"]), "ok" if t["ok"] else "FAIL",
                             "kill at {}s: {} acked, buffer {} pending + {} claimed, {} released "
                             "on restart, {} in Postgres".format(
                                 t["kill_at_s"], t["acked"], t["pending_at_kill"],
                                 t["claimed_at_kill"], t.get("released_on_restart"),
                                 t.get("pg_stored"))))
            f = r["final"]
            rows.append(("agent-kill", "all", "ok" if r["ok"] else "FAIL",
                         "{} issued, {} acked, {} in Postgres, {} missing, {} dup, {} foreign, "
                         "{} torn, {} orphan workers".format(
                             f["sent"], f["acked"], f["stored"], f["missing"], f["duplicates"],
                             f["foreign"], f["torn"], r["orphan_workers"])))
        elif r["fault"] == "worker-kill":
            for t in r["trials"]:
                rows.append(("worker-kill", "#{} {}{}".format(
                    t["trial"], t["kind"], "" if t["nth"] is None else ":{}".format(t["nth"])),
                    "ok" if t["ok"] else "FAIL",
                    "{} acked, {} restarts, {} released for retry{}, {} in Postgres".format(
                        t["acked"], t["restarts"], t["retried"],
                        "" if "claimed_at_kill" not in t else ", {} claimed at kill".format(
                            t["claimed_at_kill"]), t["pg_stored"])))
            f = r["final"]
            rows.append(("worker-kill", "all", "ok" if r["ok"] else "FAIL",
                         "{} issued, {} acked, {} in Postgres, {} missing, {} dup, {} foreign, "
                         "{} torn".format(f["sent"], f["acked"], f["stored"], f["missing"],
                                          f["duplicates"], f["foreign"], f["torn"])))
        elif r["fault"] == "pg-outage":
            o = r["oracle"]
            rows.append(("pg-outage", "{} s".format(r["outage_s"]), "ok" if r["ok"] else "FAIL",
                         "{} acked during the outage, backlog {}->{}, {} failed batches; "
                         "{} acked, {} in Postgres, {} missing, {} dup, {} foreign".format(
                             r["acked_during_outage"], r["backlog_before"], r["backlog_after"],
                             r["batches_failed"], o["acked"], o["stored"], o["missing"],
                             o["duplicates"], o["foreign"])))
        elif r["fault"] == "back-pressure":
            rows.append(("back-pressure", "max {}".format(r["max_pending"]),
                         "ok" if r["ok"] else "FAIL",
                         "{} acked, {} refused ({} counted); after drain: {}".format(
                             r.get("acked_before_full"), r.get("refused"),
                             r.get("counted_back_pressure"),
                             r.get("acked_after_drain", r.get("resumed_out_of_band")))))
        elif r["fault"] == "disk-full":
            rows.append(("disk-full", r["tmpfs"], "ok" if r["ok"] else "FAIL",
                         "{} acked, {} refused, {}; resumed {}/20".format(
                             r.get("acked_before_full"), r.get("refused"), r.get("rejected"),
                             r.get("acked_after_freeing"))))
        elif r["fault"] == "corrupt":
            rows.append(("corrupt", r["case"], "ok" if r["ok"] else "FAIL",
                         "{}{}".format("/".join(r["outcomes"]),
                                       ", moved aside" if r.get("moved_aside") else "")))
        elif "detail" in r:  # nightowl.bench.faults.guards
            rows.append((r["fault"], r["trial"], "ok" if r["ok"] else "FAIL", r["detail"]))
        elif r["fault"] == "hostile":
            rows.append(("hostile", "{} frames".format(r["frames"]), "ok" if r["ok"] else "FAIL",
                         "{}; valid {}/{} (ack p99 {} ms); idle closed {}/{}; slowloris {}/{}; "
                         "RSS {}->{}->{} kB".format(r["outcomes"], r["valid_acked"],
                                                     r["valid_sent"], r.get("valid_p99_ms"),
                                     r["idle_closed"], r["idle"], r["slowloris_closed"],
                                     r["slowloris"], r["rss_before_kb"], r["rss_peak_kb"],
                                     r["rss_after_kb"])))
        if not r["ok"]:
            for v in r["violations"][:5]:
                rows.append(("", "", "", "  " + v.splitlines()[0][:200]))
    return rows


def run(args):
    seed = args.seed if args.seed is not None else int(time.time())
    only = set(args.only.split(",")) if args.only else {
        "sigkill", "back-pressure", "disk-full", "corrupt", "hostile", "agent-kill",
        "worker-kill", "pg-outage", "clock-skew", "second-agent", "big-frames", "poison-claim",
        "frozen-worker", "ingest-process-kill", "several-agents", "upstream-kill"}
    tmp = tempfile.mkdtemp(prefix="nightowl-faults-")
    results = []
    errors = []
    started = time.time()

    def log(line):
        print(line, file=sys.stderr, flush=True)

    def attempt(name, fn, *a, **kw):
        try:
            results.append(fn(*a, **kw))
        except Exception as e:  # a harness failure is reported, not hidden
            import traceback
            errors.append("{}: {!r}".format(name, e))
            traceback.print_exc()

    try:
        if "sigkill" in only:
            attempt("sigkill", kill_trials, tmp, trials=args.kill_trials, seed=seed, log=log)
        if "back-pressure" in only:
            dsn, name = args.dsn, None
            if dsn is None and args.admin_dsn != "none":
                name, dsn = scratch.create_database(args.admin_dsn)
            try:
                attempt("back-pressure", backpressure_trial, tmp, args.max_pending, dsn, log=log)
            finally:
                if name:
                    scratch.drop_database(args.admin_dsn, name)
        if "disk-full" in only:
            if can_mount():
                attempt("disk-full", diskfull_trial, tmp, log=log)
            else:
                errors.append("disk-full: needs root to mount a tmpfs (skipped)")
        if "corrupt" in only:
            for case in CORRUPTIONS:
                attempt("corrupt " + case, corrupt_trial, tmp, case, seed=seed, log=log)
        drain_faults = only & {"agent-kill", "worker-kill"}
        if drain_faults:
            dsn, name = args.dsn, None
            if dsn is None:
                if args.admin_dsn == "none":
                    errors.append("agent-kill/worker-kill: need --dsn or --admin-dsn (skipped)")
                    drain_faults = set()
            for fault in sorted(drain_faults):
                if args.dsn is None:  # a fresh database per fault: the oracle counts all rows
                    name, dsn = scratch.create_database(args.admin_dsn)
                try:
                    if fault == "agent-kill":
                        attempt("agent-kill", agent_kill_drain_trials, tmp, dsn,
                                trials=args.agent_kill_trials, seed=seed, rate=args.drain_rate,
                                log=log)
                    else:
                        attempt("worker-kill", worker_kill_trials, tmp, dsn,
                                trials=args.worker_kill_trials, seed=seed, rate=args.drain_rate,
                                log=log)
                finally:
                    if name:
                        scratch.drop_database(args.admin_dsn, name)
                        name = None
        if "pg-outage" in only:
            for k in range(args.outage_trials):
                attempt("pg-outage", outage_trial, os.path.join(tmp, "outage-{}".format(k)),
                        seed=seed + k, rate=min(args.drain_rate, 1000),
                        outage_s=3.0 + 2.0 * k, log=log)
        if "hostile" in only:
            made = hypothesis_frames(args.generated)
            log("hostile: {} frames generated by {}".format(
                args.generated if made is None else len(made),
                "a seeded random source" if made is None else "hypothesis"))
            attempt("hostile", hostile_trial, tmp, generated=args.generated, idle=args.idle,
                    slowloris=args.slowloris, seed=seed, chooser_frames=made, log=log)
        @contextlib.contextmanager
        def dsn_for(fault):
            if args.dsn is not None:
                yield args.dsn
                return
            if args.admin_dsn == "none":
                errors.append("{}: needs --dsn or --admin-dsn (skipped)".format(fault))
                yield None
                return
            name, dsn = scratch.create_database(args.admin_dsn)
            try:
                yield dsn
            finally:
                scratch.drop_database(args.admin_dsn, name)
        guards.run_all(tmp, only, dsn_for, log, attempt)
        if "ingest-process-kill" in only:
            with dsn_for("ingest-process-kill") as dsn:
                if dsn:
                    attempt("ingest-process-kill", child_kill_trial,
                            _fresh(tmp, "ingest-process-kill"), dsn, rate=args.drain_rate,
                            log=log)
        if "several-agents" in only:
            with dsn_for("several-agents") as dsn:
                if dsn:
                    attempt("several-agents", several_agents_trial,
                            _fresh(tmp, "several-agents"), dsn, agents=3, workers=2,
                            rate=args.drain_rate // 3, load_s=20.0, batch_size=200, log=log)
        if "upstream-kill" in only:
            # the default bound (nothing may be dropped), then a small one (drops counted)
            for k, max_rows in enumerate((1000000, 300)):
                with dsn_for("upstream-kill") as dsn:
                    if dsn:
                        attempt("upstream-kill", upstream_kill_trial,
                                os.path.join(tmp, "forward-{}".format(k)), dsn, seed=seed + k,
                                rate=min(args.drain_rate, 800), max_rows=max_rows, log=log)
    finally:
        if args.keep:
            log("kept {}".format(tmp))
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    rows = table(results)
    widths = [max([len(r[i]) for r in rows] + [len(h)]) for i, h in enumerate(
        ("fault", "trial", "outcome"))]
    print("{:<{}}  {:<{}}  {:<{}}  {}".format("fault", widths[0], "trial", widths[1],
                                               "outcome", widths[2], "detail"))
    for r in rows:
        print("{:<{}}  {:<{}}  {:<{}}  {}".format(r[0], widths[0], r[1], widths[1],
                                                   r[2], widths[2], r[3]))
    for e in errors:
        print("ERROR  " + e)
    trials = sum(len(r["trials"]) if "trials" in r else 1 for r in results)
    failed = [r["fault"] + ("/" + r["case"] if "case" in r else "")
              for r in results if not r["ok"]]
    summary = {"seed": seed, "trials": trials, "failed": failed, "harness_errors": errors,
               "seconds": round(time.time() - started, 1), "ok": not failed and not errors,
               "results": results}
    print(json.dumps(summary, sort_keys=True, default=str))
    return 0 if summary["ok"] else 1
