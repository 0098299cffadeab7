"""The viewers on databases that are damaged, foreign, edited or simply unusual: one line or every row, never a
traceback, never a write, never a file left behind."""

import json
import os
import sqlite3
from pathlib import Path

import pytest
from cli_entry import run_main
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from qppsuite.cli import app
from qppsuite.errors import PluginError
from qppsuite.plugins.syscalls_logger.database import ROW_ID_STRIDE, SCHEMA_VERSION, SYSCALL_ROW, SyscallDatabase

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
        row = {"seq": level + 1, "process_id": proc["id"], "pid": proc["pid"], "name": "fork", "text": "fork()"}
        db.add(tuple(map(row.get, SYSCALL_ROW)), proc)
    if end:
        db.end_run({"stop_reason": "poweroff"})
    else:
        db.flush()
    db.close()
    return path


def _fails_with_one_line(args: list[str]) -> str:
    """stderr of the real entry point, which must exit non-zero with one line."""
    code, output = run_main(args)
    assert code != 0, output
    assert "Traceback" not in output and output.startswith("error:"), output
    assert len(output.strip().splitlines()) <= 2, output
    return output


def _read_or_one_line(code: int, output: str) -> None:
    """A view of a damaged file: shown, or one error line (after the run's warning line, if it has one)."""
    lines = output.strip().splitlines()
    assert "Traceback" not in output and all(line.startswith(("warning:", "error:", "hint:")) for line in lines)
    assert code == 0 or (lines[-1].startswith("error:") and len(lines) <= 2), output


def test_a_200_deep_fork_chain_shows_every_process(tmp_path: Path) -> None:
    db = _chain(tmp_path / "deep.db", 200)
    shown = runner.invoke(app, ["processes", str(db)])
    assert shown.exit_code == 0, shown.output
    assert all(f"p{level} pid {100 + level}," in shown.output for level in range(200))
    assert "[depth 199]" in shown.output  # drawn beside its parent, its real depth written out
    records = json.loads(runner.invoke(app, ["processes", str(db), "--format", "json"]).stdout)
    assert len(records) == 200
    assert [r["parent_id"] for r in records[1:]] == [r["id"] for r in records[:-1]]


@pytest.mark.parametrize("columns", ["40", "20", "1"])
def test_a_deep_chain_on_a_narrow_terminal_shows_every_process(tmp_path: Path, columns: str) -> None:
    db = _chain(tmp_path / "deep.db", 60)
    shown = CliRunner(env={"COLUMNS": columns}).invoke(app, ["processes", str(db)])
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("run 1: 60 processes\n")
    flat = " ".join(shown.output.split())  # a label may wrap
    assert all(f"p{level} pid {100 + level}," in flat for level in range(60)), shown.output


def test_csv_and_json_list_every_process_of_a_deep_chain(tmp_path: Path) -> None:
    db = _chain(tmp_path / "deep.db", 200)
    listed = runner.invoke(app, ["processes", str(db), "--format", "csv"]).stdout.splitlines()
    assert len(listed) == 201 and listed[200].startswith(f"{ROW_ID_STRIDE + 200},{ROW_ID_STRIDE + 199},299,")


def test_threads_of_no_process_of_the_run_are_counted_not_dropped_silently(tmp_path: Path) -> None:
    db = tmp_path / "threads.db"
    writer = SyscallDatabase(db, {"image": "threads"})
    proc = {"id": writer.new_process_id(), "pid": 1, "ppid": 0, "name": "init", "names": '["init"]'}
    for tid in (1, 2, 3):
        thread = {"id": writer.new_thread_id(), "process_id": proc["id"], "tid": tid, "name": "init", "names": "[]"}
        row = {"seq": tid, "process_id": proc["id"], "pid": 1, "tid": tid, "name": "getpid"}
        writer.add(tuple(map(row.get, SYSCALL_ROW)), proc, thread)
    writer.end_run({"stop_reason": "poweroff"})
    writer.close()
    with sqlite3.connect(db) as conn:  # what two runs at once did to a file before row ids were per run
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("UPDATE threads SET process_id = 12345 WHERE tid != 1")
    shown = runner.invoke(app, ["processes", str(db), "--threads", "--format", "json"])
    assert shown.exit_code == 0 and len(json.loads(shown.stdout)[0]["threads"]) == 1
    assert "warning: 2 threads of run 1 belong to no process of the run and are not listed" in shown.stderr


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


def test_a_diverged_or_unended_run_is_named_in_the_header_lines(tmp_path: Path) -> None:
    killed = _chain(tmp_path / "killed.db", 3, end=False)
    assert runner.invoke(app, ["processes", str(killed)]).stdout.startswith("run 1 (never ended): 3 processes\n")
    assert runner.invoke(app, ["stats", str(killed)]).stdout.startswith("run 1 (never ended): 3 system calls by 3")
    diverged = SyscallDatabase(tmp_path / "diverged.db", {"image": "replayed"})
    diverged.end_run({"stop_reason": "diverged", "stop_message": "replay diverged: 10 instructions"})
    diverged.close()
    shown = runner.invoke(app, ["stats", str(diverged.path)])
    assert shown.stdout.startswith("run 1 (ended diverged): 0 system calls by 0 processes")
    assert "warning: run 1 ended diverged: replay diverged: 10 instructions" in shown.stderr
    assert runner.invoke(app, ["processes", str(diverged.path)]).stdout.startswith("run 1 (ended diverged): 0 ")
    ended = _chain(tmp_path / "ended.db", 1)
    assert runner.invoke(app, ["processes", str(ended)]).stdout.startswith("run 1: 1 process\n")


def test_reading_leaves_the_directory_as_it_was(tmp_path: Path) -> None:
    db = _chain(tmp_path / "calls.db", 3)
    before = sorted(os.listdir(tmp_path))
    for args in VIEWERS:
        assert runner.invoke(app, [args[0], str(db), *args[1:]]).exit_code == 0
    assert sorted(os.listdir(tmp_path)) == before == ["calls.db"]


def test_reading_a_run_still_writing_leaves_its_wal_as_it_was(tmp_path: Path) -> None:
    """A running (or killed) run's -wal and -shm: the viewers read its committed rows and add nothing."""
    writer = SyscallDatabase(tmp_path / "live.db", {"image": "live"})
    proc = {"id": writer.new_process_id(), "pid": 1, "ppid": 0, "name": "init", "names": '["init"]'}
    for seq in range(5):
        row = {"seq": seq, "process_id": proc["id"], "pid": 1, "name": "getpid", "text": "getpid()"}
        writer.add(tuple(map(row.get, SYSCALL_ROW)), proc)
    writer.flush()
    try:
        before = {name: (tmp_path / name).stat().st_size for name in os.listdir(tmp_path)}
        assert sorted(before) == ["live.db", "live.db-shm", "live.db-wal"]
        for args in VIEWERS:
            shown = runner.invoke(app, [args[0], str(writer.path), *args[1:]])
            assert shown.exit_code == 0, shown.output
        assert "5 system calls" in runner.invoke(app, ["syscalls", str(writer.path)]).stdout
        assert {name: (tmp_path / name).stat().st_size for name in os.listdir(tmp_path)} == before
    finally:
        writer.close()


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
        "DROP TABLE runs",
        "UPDATE sqlite_master SET sql = 'x'",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA page_size = 1024",
        "PRAGMA wal_checkpoint(TRUNCATE)",
        "PRAGMA query_only = 0",
        "SELECT load_extension('{dir}/x.so')",
    ],
)
def test_query_refuses_anything_but_a_read(tmp_path: Path, sql: str) -> None:
    db = _chain(tmp_path / "calls.db", 3)
    before = db.read_bytes()
    _fails_with_one_line(["query", str(db), sql.format(dir=tmp_path)])
    assert sorted(os.listdir(tmp_path)) == ["calls.db"] and db.read_bytes() == before


@pytest.mark.parametrize(
    "sql",
    [
        "VACUUM INTO '{dir}/copy.db'",
        "ATTACH '{dir}/new.db' AS other",
        "DELETE FROM runs",
        "UPDATE sqlite_master SET sql = 'x'",
        "PRAGMA wal_checkpoint(TRUNCATE)",
    ],
)
def test_query_refuses_writes_while_a_run_is_writing(tmp_path: Path, sql: str) -> None:
    """With a -wal beside it the file is read in mode=ro, not immutable: the authorizer refuses just the same."""
    writer = SyscallDatabase(tmp_path / "live.db", {"image": "live"})
    try:
        _fails_with_one_line(["query", str(writer.path), sql.format(dir=tmp_path)])
        assert sorted(os.listdir(tmp_path)) == ["live.db", "live.db-shm", "live.db-wal"]
        assert sqlite3.connect(writer.path).execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
    finally:
        writer.close()


def test_query_still_reads_joins_ctes_json_and_table_info(tmp_path: Path) -> None:
    db = _chain(tmp_path / "calls.db", 3)
    for sql in (
        "SELECT p.name, COUNT(*) FROM syscalls s JOIN processes p ON p.id = s.process_id GROUP BY 1",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3) SELECT i FROM n",
        "SELECT json_extract(names, '$[0]') FROM processes",
        "PRAGMA table_info(syscalls)",
        "PRAGMA user_version",
    ):
        assert runner.invoke(app, ["query", str(db), sql]).exit_code == 0, sql


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT p.name, j.value FROM processes p, json_each(p.names) j ORDER BY p.id", [["p0", "p0"], ["p1", "p1"]]),
        ("SELECT COUNT(*) FROM json_tree('{\"a\": [1, 2]}')", [[4]]),
        ("SELECT name FROM pragma_table_info('threads') WHERE pk", [["id"]]),
        ("PRAGMA integrity_check", [["ok"]]),
        ("PRAGMA foreign_key_check", []),
    ],
)
def test_query_reads_table_valued_functions_and_checks(tmp_path: Path, sql: str, expected: list[list[object]]) -> None:
    db = _chain(tmp_path / "calls.db", 2)
    shown = runner.invoke(app, ["query", str(db), sql, "--format", "json"])
    assert shown.exit_code == 0, shown.output
    assert [list(row.values()) for row in json.loads(shown.stdout)] == expected


def test_query_gives_blobs_as_base64_in_json(tmp_path: Path) -> None:
    db = _chain(tmp_path / "calls.db", 1)
    shown = runner.invoke(app, ["query", str(db), "SELECT x'00ff1b' AS raw, 'a' AS text", "--format", "json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == [{"raw": {"$base64": True, "encoded": "AP8b"}, "text": "a"}]


def test_right_tables_with_other_columns_are_one_line(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        for table in ("runs", "processes", "threads", "syscalls"):
            conn.execute(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, something TEXT)")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    for args in VIEWERS[:3]:
        assert "has no column" in _fails_with_one_line([args[0], str(db), *args[1:]])
    assert runner.invoke(app, ["query", str(db), "SELECT COUNT(*) FROM syscalls"]).exit_code == 0  # any tables


def test_a_database_damaged_in_the_middle_is_one_line(tmp_path: Path) -> None:
    db = _chain(tmp_path / "damaged.db", 300)
    data = bytearray(db.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = b"\xa5" * 4096
    db.write_bytes(bytes(data))
    assert "damaged.db: database disk image is malformed" in _fails_with_one_line(["processes", str(db)])
    for args in VIEWERS:  # some views may not touch the damaged page; those that do fail in one line
        code, output = run_main([args[0], str(db), *args[1:]])
        _read_or_one_line(code, output)


def test_text_that_is_not_utf8_is_shown_escaped(tmp_path: Path) -> None:
    db = _chain(tmp_path / "latin1.db", 1)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE processes SET name = CAST(x'6361ff74' AS TEXT)")
    shown = runner.invoke(app, ["processes", str(db)])
    assert shown.exit_code == 0 and "ca\\xfft pid 100" in shown.stdout, shown.output
    damaged = bytearray(db.read_bytes())  # a table name in sqlite_master, found by hypothesis
    damaged[damaged.index(b"CREATE TABLE") + 14] = 0x80
    db.write_bytes(bytes(damaged))
    for args in VIEWERS:
        code, output = run_main([args[0], str(db), *args[1:]])
        _read_or_one_line(code, output)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    damage=st.lists(st.tuples(st.integers(0, 90_000), st.binary(min_size=1, max_size=600)), min_size=1, max_size=4),
    viewer=st.sampled_from([*VIEWERS, ["syscalls", "--format", "json"], ["processes", "--format", "csv"]]),
)
@example(damage=[(1521, b"\x80")], viewer=["syscalls"])  # not UTF-8 in sqlite_master: SQLite's error quotes it
@example(damage=[(8189, b"\x00\x00\x00\x00")], viewer=["processes", "--threads"])  # a warning, then the error
def test_a_real_database_with_random_bytes_overwritten_is_read_or_one_line(
    tmp_path_factory: pytest.TempPathFactory, damage: list[tuple[int, bytes]], viewer: list[str]
) -> None:
    db = _chain(tmp_path_factory.mktemp("damaged") / "damaged.db", 300)
    data = bytearray(db.read_bytes())
    for offset, garbage in damage:
        data[offset : offset + len(garbage)] = garbage
    db.write_bytes(bytes(data))
    code, output = run_main([viewer[0], str(db), *viewer[1:]])
    _read_or_one_line(code, output)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=0, max_size=8192), viewer=st.sampled_from(VIEWERS))
def test_random_bytes_as_a_database_are_one_line(
    tmp_path_factory: pytest.TempPathFactory, data: bytes, viewer: list[str]
) -> None:
    db = tmp_path_factory.mktemp("rand") / "random.db"
    db.write_bytes(data)
    _fails_with_one_line([viewer[0], str(db), *viewer[1:]])


#: What each earlier schema version lacked, as that version wrote its files: (table, column) added since.
SCHEMA_6_COLUMNS = (("processes", "command"),)
SCHEMA_5_COLUMNS = (
    ("runs", "virtual_ns"),
    ("runs", "label"),
    ("runs", "batch_status"),
    ("runs", "batch_reason"),
    *SCHEMA_6_COLUMNS,
)
OLDER_VERSIONS = {
    2: (
        ("runs", "started_from"), ("syscalls", "found_blocked"), ("runs", "logged"), ("syscalls", "virtual_ns"),
        *SCHEMA_5_COLUMNS,
    ),
    3: (("runs", "logged"), ("syscalls", "virtual_ns"), *SCHEMA_5_COLUMNS),
    4: SCHEMA_5_COLUMNS,
}


@pytest.mark.parametrize("version", sorted(OLDER_VERSIONS))
def test_an_older_version_file_is_refused_by_every_viewer_and_the_logger_in_one_line(
    tmp_path: Path, version: int
) -> None:
    """Schema 3 added runs.started_from and syscalls.found_blocked, 4 runs.logged and syscalls.virtual_ns, 5 the
    runs' virtual_ns, label, batch_status and batch_reason: a file of an earlier version, as that version wrote it
    (its own user_version, no such columns), is named as another version's, not mixed."""
    db = _chain(tmp_path / f"v{version}.db", 2)
    with sqlite3.connect(db) as conn:
        for table, column in OLDER_VERSIONS[version]:
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    said = f"schema {version}, this one uses {SCHEMA_VERSION}"
    for args in VIEWERS[:3]:  # query reads any version
        assert said in _fails_with_one_line([args[0], str(db), *args[1:]])
    assert runner.invoke(app, ["query", str(db), "SELECT COUNT(*) FROM syscalls"]).exit_code == 0
    with pytest.raises(PluginError, match=said):
        SyscallDatabase(db, {"image": "next"})


def test_a_version_5_file_is_read_by_every_viewer_with_command_unknown_but_not_appended_to(tmp_path: Path) -> None:
    """Schema 6 added processes.command; a file version 5 wrote (no such column) is still read by the views, as
    it was (they do not need the column), while a run is never logged into it: it would mix versions."""
    db = _chain(tmp_path / "v5.db", 3)
    with sqlite3.connect(db) as conn:
        for table, column in SCHEMA_6_COLUMNS:
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.execute("PRAGMA user_version = 5")
    conn.close()
    for args in [*VIEWERS, ["processes", "--format", "json"], ["syscalls", "--run", "1"]]:
        code, output = run_main([args[0], str(db), *args[1:]])
        assert code == 0 and output == "", (args, output)
    with pytest.raises(PluginError, match=f"schema 5, this one uses {SCHEMA_VERSION}"):
        SyscallDatabase(db, {"image": "next"})
