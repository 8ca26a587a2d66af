"""The machine's CPU by kind in ``nightowl bench ingest`` (procfs.box_ticks, box_share)."""

from nightowl.bench import ingest_report, procfs


def write_stat(tmp_path, values):
    path = tmp_path / "stat"
    path.write_text("cpu  " + " ".join(str(v) for v in values) + " 0 0\ncpu0 1 2 3\n")
    return str(path)


def test_box_share_is_percent_of_every_cpu_by_kind(tmp_path):
    before = procfs.box_ticks(write_stat(tmp_path, [100, 0, 50, 1000, 0, 0, 10, 0]))
    after = procfs.box_ticks(write_stat(tmp_path, [160, 0, 90, 1060, 0, 0, 30, 20]))
    share = procfs.box_share(before, after, cpus=2)
    # 200 ticks went by on 2 cpus: user 60, system 40, idle 60, softirq 20, steal 20
    assert share == {"user": 60.0, "nice": 0.0, "system": 40.0, "idle": 60.0, "iowait": 0.0,
                     "irq": 0.0, "softirq": 20.0, "steal": 20.0}
    text = ingest_report.box_text({"box": share})
    assert "idle 60%" in text and "softirq 20%" in text and "steal 20%" in text


def test_missing_or_unreadable_stat_gives_no_share(tmp_path):
    assert procfs.box_ticks(str(tmp_path / "absent")) is None
    assert procfs.box_share(None, {"user": 1}) is None
    assert ingest_report.box_text({"box": None}) == ""


def test_the_real_machine_reads():
    ticks = procfs.box_ticks()
    assert ticks is not None and set(ticks) == set(procfs.BOX_FIELDS)
