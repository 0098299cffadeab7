"""The viewers on databases that are damaged, foreign, edited or simply unusual: one line or every row, never a
traceback, never a write, never a file left behind."""

import io
import json
import os
import sqlite3
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from qppsuite.cli import app, main
from qppsuite.plugins.syscalls_logger.database import SyscallDatabase

runner = CliRunner(env={"COLUMNS": "200"})
VIEWERS = [["syscalls"], ["processes", "--threads"], ["stats"], ["query", "SELECT COUNT(*) FROM syscalls"]]


def _chain(path: Path, depth: int, end: bool = True) -> Path:
    """A run whose processes form one fork chain ``depth`` deep (each the parent of the next)."""
    db = SyscallDatabase(path, {"image": "chain"})
    for level in range(depth):
        proc = {
            "id": db.new_process_id(),
            "pid": 100 + level,
            "ppid": 99 + level,
            "name": f"p{level}",
            "names": json.dumps([f"p{level}"]),
            "start_time": level,
            "first_seen_insn": 0,
            "last_seen_insn": 0,
            "syscall_count": 1,
        }
        db.add({"seq": level + 1, "process_id": proc["id"], "pid": proc["pid"], "name": "fork", "text": "fork()"}, proc)
    if end:
        db.end_run({"stop_reason": "poweroff"})
    else:
        db.flush()
    db.close()
    return path


def _fails_with_one_line(args: list[str]) -> str:
    """stderr of the real entry point (the one that prints errors), which must exit non-zero with one line."""
    with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as ended:
        patch.setattr(sys, "argv", ["qppsuite", *args])
        errors = io.StringIO()
        patch.setattr(sys, "stderr", errors)
        main()
    output = errors.getvalue()
    assert ended.value.code not in (0, None), output
    assert "Traceback" not in output and output.startswith("error:"), output
    assert len(output.strip().splitlines()) <= 2, output
    return output


def test_a_200_deep_fork_chain_shows_every_process(tmp_path: Path) -> None:
    db = _chain(tmp_path / "deep.db", 200)
    shown = runner.invoke(app, ["processes", str(db)])
    assert shown.exit_code == 0, shown.output
    assert all(f"p{level} pid {100 + level}," in shown.output for level in range(200))
    assert "[depth 199]" in shown.output  # drawn beside its parent, its real depth written out
    records = json.loads(runner.invoke(app, ["processes", str(db), "--format", "json"]).stdout)
    assert len(records) == 200
    assert [r["parent_id"] for r in records[1:]] == [r["id"] for r in records[:-1]]


def test_a_10000_deep_chain_does_not_exhaust_the_stack(tmp_path: Path) -> None:
    db = _chain(tmp_path / "deeper.db", 10_000)
    for fmt in ("table", "json"):
        shown = runner.invoke(app, ["processes", str(db), "--format", fmt])
        assert shown.exit_code == 0, shown.output[-500:]


def test_processes_that_are_each_others_parent_are_all_shown(tmp_path: Path) -> None:
    db = _chain(tmp_path / "cycle.db", 2)
    with sqlite3.connect(db) as conn:  # an edited file: 100 and 101 each claim the other as parent
        conn.execute("UPDATE processes SET ppid = 101, start_time = 0 WHERE pid = 100")
        conn.execute("UPDATE processes SET ppid = 100, start_time = 0 WHERE pid = 101")
    shown = runner.invoke(app, ["processes", str(db)])
    assert shown.exit_code == 0 and "p0 pid 100" in shown.output and "p1 pid 101" in shown.output


def test_a_run_that_never_ended_is_flagged_by_every_viewer(tmp_path: Path) -> None:
    db = _chain(tmp_path / "killed.db", 3, end=False)
    for args in VIEWERS[:3]:
        shown = runner.invoke(app, [args[0], str(db), *args[1:]])
        assert shown.exit_code == 0, shown.output
        assert "warning: run 1 never ended" in shown.stderr, args
    json_out = runner.invoke(app, ["syscalls", str(db), "--format", "json"])
    assert len(json.loads(json_out.stdout)) == 3  # the warning is on stderr: stdout stays data


def test_reading_leaves_the_directory_as_it_was(tmp_path: Path) -> None:
    db = _chain(tmp_path / "calls.db", 3)
    before = sorted(os.listdir(tmp_path))
    for args in VIEWERS:
        assert runner.invoke(app, [args[0], str(db), *args[1:]]).exit_code == 0
    assert sorted(os.listdir(tmp_path)) == before == ["calls.db"]


@pytest.mark.parametrize(
    "sql",
    [
        "VACUUM INTO '{dir}/copy.db'",
        "ATTACH '{dir}/new.db' AS other",
        "INSERT INTO runs (image) VALUES ('x')",
        "DELETE FROM syscalls",
        "PRAGMA writable_schema = 1",
        "PRAGMA user_version = 7",
        "CREATE TEMP TABLE t (x)",
        "SELECT 1; DELETE FROM runs",
    ],
)
def test_query_refuses_anything_but_a_read(tmp_path: Path, sql: str) -> None:
    db = _chain(tmp_path / "calls.db", 3)
    before = db.read_bytes()
    _fails_with_one_line(["query", str(db), sql.format(dir=tmp_path)])
    assert sorted(os.listdir(tmp_path)) == ["calls.db"] and db.read_bytes() == before


def test_query_still_reads_joins_ctes_json_and_table_info(tmp_path: Path) -> None:
    db = _chain(tmp_path / "calls.db", 3)
    for sql in (
        "SELECT p.name, COUNT(*) FROM syscalls s JOIN processes p ON p.id = s.process_id GROUP BY 1",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3) SELECT i FROM n",
        "SELECT json_extract(names, '$[0]') FROM processes",
        "PRAGMA table_info(syscalls)",
    ):
        assert runner.invoke(app, ["query", str(db), sql]).exit_code == 0, sql


def test_right_tables_with_other_columns_are_one_line(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        for table in ("runs", "processes", "threads", "syscalls"):
            conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, something TEXT)")
        conn.execute("PRAGMA user_version = 2")
    for args in VIEWERS:
        assert "has no column" in _fails_with_one_line([args[0], str(db), *args[1:]])


def test_a_database_damaged_in_the_middle_is_one_line(tmp_path: Path) -> None:
    db = _chain(tmp_path / "damaged.db", 300)
    data = bytearray(db.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = b"\xa5" * 4096
    db.write_bytes(bytes(data))
    for args in VIEWERS:
        result = runner.invoke(app, [args[0], str(db), *args[1:]])
        if result.exit_code != 0:  # some views may not touch the damaged page; those that do fail cleanly
            _fails_with_one_line([args[0], str(db), *args[1:]])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=8192))
def test_random_bytes_as_a_database_are_one_line(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    db = tmp_path_factory.mktemp("rand") / "random.db"
    db.write_bytes(data)
    _fails_with_one_line(["processes", str(db)])
