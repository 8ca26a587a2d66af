"""
README.rst stays true: the commands it shows exist, every command exists in
the README, the configuration table is nightowl/tap.py's, the metric names
are prometheus.METRICS, and the two labelled command blocks CI reads are intact.
"""

import csv
import io
import os
import re
import subprocess
import sys

import pytest

from nightowl import tap
from nightowl.health import prometheus, rules

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


@pytest.fixture(scope="module")
def readme():
    with open(os.path.join(ROOT, "README.rst"), encoding="utf-8") as f:
        return f.read()


@pytest.fixture(scope="module")
def help_commands():
    out = subprocess.run([sys.executable, "-m", "nightowl.cli", "--help"], capture_output=True,
                         text=True, check=True).stdout
    block = out.split("positional arguments:", 1)[1].split("options:", 1)[0]
    return set(m.group(1) for m in re.finditer(r"^    (\w[\w-]*)\s", block, re.M))


def test_every_command_shown_in_the_readme_exists(readme, help_commands):
    # commands are shown in literals: ``nightowl X ...`` inline, or a
    # literal block line starting with "nightowl X" (prose "nightowl is" is not one)
    commands = set(a or b for (a, b) in re.findall(
        r"``nightowl ([a-z][a-z-]*)|^ {4}nightowl ([a-z][a-z-]*)", readme, re.M))
    assert commands, "no commands found in README"
    assert commands <= help_commands, commands - help_commands


def test_every_command_in_help_is_in_the_readme(readme, help_commands):
    assert {"status", "ping", "buffer", "prune", "send", "migrate"} <= help_commands
    for name in help_commands:
        assert re.search(r"nightowl {}\b".format(name), readme), name


def test_buffer_actions_are_documented(readme):
    for action in ("inspect", "requeue", "verify"):
        assert "nightowl buffer " + action in readme


def config_rows(readme):
    section = readme.split(":header: \"option\", \"environment\", \"default\", \"meaning\"", 1)[1]
    lines = []
    for line in section.splitlines()[1:]:
        if not line.strip():
            if lines:
                break
            continue
        lines.append(line.strip())
    return list(csv.reader(io.StringIO("\n".join(lines)), skipinitialspace=True))


def test_the_configuration_table_matches_tap(readme):
    expected = []
    for (long, short, default, env, _coerce, help) in tap.PARAMETERS:
        name = "``--{}``".format(long) + (" / ``-{}``".format(short) if short else "")
        expected.append([name, "``{}``".format(env),
                         "``{}``".format(default) if default is not None else "unset", help])
    for (long, _short, env, help) in tap.FLAGS:
        expected.append(["``--{}``".format(long), "``{}``".format(env), "off", help])
    assert config_rows(readme) == expected


def test_every_metric_name_is_documented(readme):
    for name, kind, _help in prometheus.METRICS:
        assert "``{}`` ({})".format(name, kind) in readme, name


def test_every_status_rule_is_documented(readme):
    source = open(rules.__file__, encoding="utf-8").read()
    codes = set(re.findall(r'add\("([a-z-]+)", "(critical|warning|info)"', source))
    assert len(codes) == 12   # 9 + clock-skew, worker-frozen (issue 14), forward-down
    for code, level in codes:
        assert re.search(r"``{}``\s+{}\s".format(re.escape(code), level), readme), code
    # the drain's blocking reasons (nightowl/drain/conditions.py) too
    from nightowl.drain import conditions
    source = open(conditions.__file__, encoding="utf-8").read()
    drain_codes = set(re.findall(r'\("([a-z-]+)", "(critical|warning|info)",', source))
    assert set(code for code, _level in drain_codes) == conditions.DRAIN_CODES
    for code, level in drain_codes:
        assert re.search(r"``{}``\s+{}\s".format(re.escape(code), level), readme), code


def test_the_ci_command_blocks_are_intact(readme):
    run = readme.split(".. _run-command:\n\n::\n\n", 1)[1].splitlines()[0]
    test = readme.split(".. _test-command:\n\n::\n\n", 1)[1].splitlines()[0]
    # issue 9: user=postgres (a role a fresh machine has); nightowl creates the database
    assert run == ("    python3 -m pip install . && twistd -n nightowl --buffer "
                   "/var/lib/nightowl/buffer.sqlite --dsn \"host=127.0.0.1 dbname=nightowl "
                   "user=postgres\"")
    assert test == ("    python3 -m pip install -e '.[test]' --config-settings "
                    "editable_mode=compat && python3 -m pytest -q -n 4")


def test_the_schema_reference_lists_every_table_and_column(readme, fresh_pg_dsn):
    import psycopg2

    from nightowl import migrate
    conn = psycopg2.connect(fresh_pg_dsn)
    try:
        migrate.apply(conn, partitions=False)
        cur = conn.cursor()
        cur.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = "
                    "c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') "
                    "AND NOT c.relispartition ORDER BY 1")
        tables = [t for (t,) in cur.fetchall()]
        section = readme.split("Schema reference\n", 1)[1].split("Example SQL\n", 1)[0]
        for table in tables:
            cur.execute("SELECT column_name FROM information_schema.columns "
                        "WHERE table_name = %s ORDER BY ordinal_position", (table,))
            columns = [c for (c,) in cur.fetchall()]
            m = re.search(r"^``{}``\n    (.+)$".format(table), section, re.M)
            assert m, table
            documented = [part.strip().split(" ")[0] for part in m.group(1).split(",")]
            assert documented == columns, table
    finally:
        conn.close()


def test_the_example_sql_runs_on_the_schema(readme, fresh_pg_dsn):
    import psycopg2
    from nightowl import migrate
    section = readme[readme.index("Example SQL"):readme.index("\nBenchmarks\n")]
    blocks = re.findall(r"::\n\n((?:    .*\n|\n)+)", section)
    queries = ["\n".join(line[4:] for line in block.strip("\n").splitlines()) for block in blocks]
    assert len(queries) == 4
    migrate.apply(fresh_pg_dsn)
    conn = psycopg2.connect(fresh_pg_dsn)
    try:
        for sql in queries:
            cur = conn.cursor()
            cur.execute(sql)
            cur.fetchall()
            conn.rollback()
    finally:
        conn.close()


def test_the_rollup_sql_runs_and_answers(readme, fresh_pg_dsn):
    import psycopg2
    from nightowl import migrate
    from nightowl.rollups import sketch
    section = readme[readme.index("Rollups and percentiles\n"):readme.index("Example SQL\n")]
    blocks = re.findall(r"::\n\n((?:    .*\n|\n)+)", section)
    queries = ["\n".join(line[4:] for line in block.strip("\n").splitlines()) for block in blocks]
    queries = [q for q in queries if q.startswith("SELECT")]
    assert len(queries) == 2
    migrate.apply(fresh_pg_dsn, partitions=False)
    conn = psycopg2.connect(fresh_pg_dsn)
    try:
        cur = conn.cursor()
        s = {}
        for v in range(1000, 2000):
            sketch.add(s, v)
        cur.execute("INSERT INTO nightowl_rollups_minute (bucket, kind, environment, group_key, "
                    "label, attrs, count, sketch) VALUES (date_trunc('minute', now()), 'request', "
                    "'production', 'g', 'GET|HEAD /users/{user}', '{\"status_class\": \"2xx\"}', "
                    "1000, %s::numeric)", (sketch.encode(s),))
        for sql in queries:
            cur.execute(sql)
            rows = cur.fetchall()
            assert len(rows) == 1 and rows[0][-2] == 1000
            assert 1.85 < float(rows[0][-1]) < 2.05   # the p95 / p99 of 1..2 ms in ms
    finally:
        conn.close()
