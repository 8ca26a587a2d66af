"""``nightowl issues`` and ``nightowl thresholds`` end to end against a real
PostgreSQL, through nightowl.cli.main (and once as ``python -m nightowl.cli``)."""

import json
import subprocess
import sys
import uuid

import orjson
import psycopg2
import pytest

from tests.conftest import fetch
from nightowl import cli, migrate
from nightowl.issues import thresholds
from nightowl.pgwrite import BatchWriter

NOW = 1714694500.0


@pytest.fixture
def db(fresh_pg_dsn, monkeypatch):
    monkeypatch.delenv("NIGHTOWL_DSN", raising=False)
    migrate.apply(fresh_pg_dsn)
    return fresh_pg_dsn


def drain(dsn, *recs):
    w = BatchWriter(dsn, "production", str(uuid.uuid4()), clock=lambda: NOW)
    try:
        w.write([(1, orjson.dumps(list(recs)))])
    finally:
        w.close()


def exc(group, msg="boom", ts=NOW - 10):
    return {"t": "exception", "timestamp": ts, "class": "App\\E", "message": msg, "_group": group}


def one_line(text):
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def issue_id(dsn, group):
    return str(fetch(dsn, "SELECT id FROM nightowl_issues WHERE group_hash = %s", group)[0][0])


def test_list_show_and_status_changes(db, capsys):
    drain(db, exc("g-a", "first", NOW - 20), exc("g-b", "evil \x1b[31mred\x1b[0m\nnext", NOW - 5))
    a, b = issue_id(db, "g-a"), issue_id(db, "g-b")
    code, out, err = run(capsys, "issues", "list", "--dsn", db)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATUS", "TYPE"]
    assert [l.split()[0] for l in lines[1:]] == [b, a]        # last seen first
    assert "\x1b" not in out and "evil \\x1b[31mred\\x1b[0m\\x0anext" in out
    code, out, _ = run(capsys, "issues", "resolve", a, "--dsn", db)
    assert (code, out) == (0, "issue {}: open -> resolved\n".format(a))
    code, out, _ = run(capsys, "issues", "resolve", a, "--dsn", db)
    assert (code, out) == (0, "issue {} is already resolved\n".format(a))
    code, out, _ = run(capsys, "issues", "ignore", b, "--dsn", db)
    assert code == 0
    code, out, _ = run(capsys, "issues", "list", "--status", "resolved", "--format", "json",
                       "--dsn", db)
    got = json.loads(out)
    assert code == 0 and [(i["id"], i["status"]) for i in got] == [(int(a), "resolved")]
    code, out, _ = run(capsys, "issues", "list", "--limit", "1", "--dsn", db)
    assert len(out.splitlines()) == 2
    code, out, _ = run(capsys, "issues", "reopen", a, "--dsn", db)
    assert (code, out) == (0, "issue {}: resolved -> open\n".format(a))
    code, out, _ = run(capsys, "issues", "show", a, "--dsn", db)
    assert code == 0
    assert "status:                open" in out and "group_hash:            g-a" in out
    actions = [l.split()[2:4] for l in out.split("activity:\n")[1].splitlines()]
    assert actions == [["cli", "reopen"], ["cli", "resolved"], ["agent", "created"]]
    code, out, _ = run(capsys, "issues", "show", b, "--format", "json", "--dsn", db)
    shown = json.loads(out)
    assert shown["status"] == "ignored" and shown["exception_message"].startswith("evil \x1b")
    assert [x["action"] for x in shown["activity"]] == ["ignored", "created"]
    assert fetch(db, "SELECT actor, action FROM nightowl_issue_activity ORDER BY id") == [
        ("agent", "created"), ("agent", "created"), ("cli", "resolved"), ("cli", "ignored"),
        ("cli", "reopen")]


@pytest.mark.parametrize("argv, message", [
    (["issues", "show", "999999"], "no issue 999999"),
    (["issues", "resolve", "999999"], "no issue 999999"),
    (["issues", "ignore", "abc"], "no issue 'abc': an issue id is a whole number"),
    (["issues", "list", "--status", "closed"], "bad status 'closed'"),
    (["issues", "list", "--limit", "0"], "bad --limit '0'"),
    (["issues", "list", "--format", "xml"], "bad --format 'xml'"),
    (["thresholds", "set", "request", "fast"], "bad duration 'fast'"),
    (["thresholds", "set", "request", "0ms"], "bad duration '0ms'"),
    (["thresholds", "set", "lunch", "2s"], "unknown kind 'lunch'"),
    (["thresholds", "remove", "query", "--target", "select 1"], "no threshold for query select ?"),
])
def test_errors_are_one_line_and_non_zero(db, capsys, argv, message):
    code, out, err = run(capsys, *(argv + ["--dsn", db]))
    assert code != 0 and out == ""
    line = one_line(err)
    assert line.startswith("nightowl {}: ".format(argv[0])) and message in line, line


def test_no_dsn_and_unreachable_database(db, capsys):
    code, _, err = run(capsys, "issues", "list")
    assert code == 1 and one_line(err) == "nightowl issues: no DSN: pass --dsn or set NIGHTOWL_DSN"
    code, _, err = run(capsys, "thresholds", "list", "--dsn",
                       "host=127.0.0.1 port=1 user=x password=hunter2 connect_timeout=2")
    line = one_line(err)
    assert code == 1 and "cannot connect" in line and "hunter2" not in line


def test_thresholds_set_list_remove(db, capsys, monkeypatch):
    monkeypatch.setenv("NIGHTOWL_DSN", db)   # the default DSN
    assert run(capsys, "thresholds", "list")[1] == "no thresholds (no performance issues are made)\n"
    assert run(capsys, "thresholds", "set", "request", "500ms")[1] == \
        "threshold request default: 500ms\n"
    assert run(capsys, "thresholds", "set", "request", "2s", "--target", "GET /slow")[0] == 0
    assert run(capsys, "thresholds", "set", "scheduled-task", "1.5s")[0] == 0
    assert run(capsys, "thresholds", "set", "query", "250", "--target",
               "SELECT *  FROM users WHERE id = 7;")[0] == 0
    assert run(capsys, "thresholds", "set", "request", "750")[0] == 0     # replaces
    code, out, _ = run(capsys, "thresholds", "list")
    assert code == 0 and out.splitlines()[1:] == [
        "request              750ms  (default)",
        "request                 2s  GET /slow",
        "query                250ms  SELECT * FROM users WHERE id = ?",
        "scheduled_task      1500ms  (default)"]
    code, out, _ = run(capsys, "thresholds", "list", "--format", "json")
    assert [(r["kind"], r["target"], r["duration_ms"]) for r in json.loads(out)][0] == (
        "request", None, 750)
    assert run(capsys, "thresholds", "remove", "request", "--target", "GET /slow")[1] == \
        "removed threshold request GET /slow\n"
    assert fetch(db, "SELECT kind, target, duration_ms FROM nightowl_thresholds ORDER BY 1, 2") == [
        ("query", "SELECT * FROM users WHERE id = ?", 250), ("request", "", 750),
        ("scheduled_task", "", 1500)]
    # what the CLI stored is what the drain reads
    conn = psycopg2.connect(db)
    table = thresholds.load(conn.cursor())
    conn.close()
    assert table.threshold_us("query", "SELECT * FROM users WHERE id = ?") == 250000


def test_as_a_module(db):
    drain(db, exc("g-z"))
    out = subprocess.run([sys.executable, "-m", "nightowl.cli", "issues", "resolve",
                          issue_id(db, "g-z"), "--dsn", db], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.endswith("open -> resolved\n")
    out = subprocess.run([sys.executable, "-m", "nightowl.cli", "issues", "reopen", "0",
                          "--dsn", db], capture_output=True, text=True)
    assert out.returncode == 1 and one_line(out.stderr) == "nightowl issues: no issue 0"
