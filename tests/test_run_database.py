"""The run database shared by syscalls_logger and the plugins with tables of their own: real SQLite files."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from syscall_harness import FakeOsi, Harness, NoMachineCore, rows

from qppsuite.core.qpp import QPP, Arg, Plugin
from qppsuite.errors import PluginError
from qppsuite.plugins.osi_linux.model import OsiProcess
from qppsuite.plugins.syscalls_logger.run_database import RunDatabase, open_run_database
from qppsuite.plugins.syscalls_logger.tables import PluginTable

OTHER = OsiProcess(300, 300, 100, "worker", 0x9000, 0xC3000000, 9_000, False)


class Notes(Plugin):
    """A plugin with a table of its own: one row per note, naming the process it is about."""

    name = "notes"
    requires = ("osi_linux",)
    args: ClassVar[Any] = {"db": Arg(Path, None)}

    def load(self) -> None:
        self.db: RunDatabase = open_run_database(self, self.args.db)
        self.notes: PluginTable = self.db.table(
            self.name,
            "notes",
            {"id": int, "process_id": int, "insn_count": int, "text": str},
            foreign_keys=[("process_id", "processes")],
            indexes=[("run_id", "insn_count")],
        )

    def note(self, process: OsiProcess, text: str, insn_count: int = 0) -> int | None:
        return self.notes.add(
            {"process_id": self.db.process_id(process, insn_count), "insn_count": insn_count, "text": text}
        )

    def stop(self, reason: Any) -> None:
        self.db.stopped(reason)

    def unload(self) -> None:
        self.db.release(self.name)


class MoreNotes(Notes):
    name = "more_notes"

    def load(self) -> None:
        self.db = open_run_database(self, self.args.db)
        self.notes = self.db.table(
            self.name,
            "more_notes",
            {"id": int, "process_id": int, "insn_count": int, "text": str},
            foreign_keys=[("process_id", "processes")],
        )


def start(qpp: QPP, plugins: list[Any], args: dict[str, dict[str, str]]) -> Harness:
    """Load ``plugins`` and start the guest (core's on_start, which commits the run's row and tables)."""
    qpp.add_builtin(NoMachineCore())
    qpp.add_builtin(FakeOsi())
    qpp.load_all(plugins, args)
    qpp.callback("core", "on_start")()
    return Harness(qpp)


def call(harness: Harness, name: str = "getpid") -> None:
    ctx = harness.ctx(name, ())
    harness.fire("on_syscall", ctx=ctx)
    harness.fire("on_syscall_return", ctx=ctx, retval=100)


def check_foreign_keys(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()


@pytest.fixture
def logged(tmp_path: Path) -> Iterator[Harness]:
    with QPP(None) as qpp:
        yield start(
            qpp,
            ["syscalls", "syscalls_logger", Notes],
            {"syscalls_logger": {"db": str(tmp_path / "t.db"), "batch": "4"}},
        )


def test_the_logger_exports_the_database_the_plugins_share(logged: Harness, tmp_path: Path) -> None:
    notes: Notes = logged.qpp.get("notes")  # type: ignore[assignment]
    get_run_database = logged.qpp.import_function("syscalls_logger", "get_run_database")
    assert get_run_database() is notes.db
    assert notes.db.path == tmp_path / "t.db" and notes.db.users == ["syscalls_logger", "notes"]
    conn = sqlite3.connect(tmp_path / "t.db")
    fks = {(row[3], row[2], row[4]) for row in conn.execute("PRAGMA foreign_key_list(notes)")}
    assert fks == {("run_id", "runs", "id"), ("process_id", "processes", "id")}
    assert [r[1] for r in conn.execute("PRAGMA table_info(notes)")] == [
        "id",
        "run_id",
        "process_id",
        "insn_count",
        "text",
    ]
    assert any(r[1] == "idx_notes_run_id_insn_count" for r in conn.execute("PRAGMA index_list(notes)"))
    conn.close()


def test_a_process_has_one_row_whoever_sees_it_first(logged: Harness, tmp_path: Path) -> None:
    notes: Notes = logged.qpp.get("notes")  # type: ignore[assignment]
    osi: FakeOsi = logged.qpp.get("osi_linux")  # type: ignore[assignment]
    notes.note(osi.process, "before the logger saw sh")  # the plugin creates sh's row
    call(logged)  # the logger finds it
    notes.note(OTHER, "a process the logger never sees")
    logged.qpp.stop_all(None)
    logged.qpp.unload_all()
    path = tmp_path / "t.db"
    check_foreign_keys(path)
    procs = rows(path, "SELECT id, pid, name, syscall_count FROM processes ORDER BY pid")
    assert [(p["pid"], p["name"], p["syscall_count"]) for p in procs] == [(100, "sh", 1), (300, "worker", 0)]
    (syscall,) = rows(path, "SELECT process_id FROM syscalls")
    got = rows(path, "SELECT process_id, text FROM notes ORDER BY id")
    assert got == [
        {"process_id": syscall["process_id"], "text": "before the logger saw sh"},
        {"process_id": procs[1]["id"], "text": "a process the logger never sees"},
    ]
    (run,) = rows(path, "SELECT syscall_count, ended_at FROM runs")
    assert run["syscall_count"] == 1 and run["ended_at"] is not None


def test_rows_commit_with_the_loggers_batches(logged: Harness, tmp_path: Path) -> None:
    notes: Notes = logged.qpp.get("notes")  # type: ignore[assignment]
    osi: FakeOsi = logged.qpp.get("osi_linux")  # type: ignore[assignment]
    path = tmp_path / "t.db"
    call(logged)
    notes.note(osi.process, "one")
    call(logged)
    assert rows(path, "SELECT COUNT(*) AS n FROM notes") == [{"n": 0}]  # 3 rows buffered, batch 4
    notes.note(osi.process, "two")  # the 4th row of the batch: syscalls and notes commit together
    assert rows(path, "SELECT COUNT(*) AS n FROM notes") == [{"n": 2}]
    assert rows(path, "SELECT COUNT(*) AS n FROM syscalls") == [{"n": 2}]
    check_foreign_keys(path)


def test_a_changed_row_is_written_again_as_one_row(logged: Harness, tmp_path: Path) -> None:
    notes: Notes = logged.qpp.get("notes")  # type: ignore[assignment]
    osi: FakeOsi = logged.qpp.get("osi_linux")  # type: ignore[assignment]
    row = {"process_id": notes.db.process_id(osi.process), "insn_count": 1, "text": "first"}
    notes.notes.add(row)
    notes.db.flush()
    row["text"] = "second"
    notes.notes.changed(row)
    logged.qpp.unload_all()
    assert rows(tmp_path / "t.db", "SELECT text FROM notes") == [{"text": "second"}]


def test_without_the_logger_a_plugin_opens_the_same_kind_of_database(tmp_path: Path) -> None:
    path = tmp_path / "own.db"
    with QPP(None) as qpp:
        harness = start(qpp, [Notes, MoreNotes], {"notes": {"db": str(path)}})
        notes: Notes = qpp.get("notes")  # type: ignore[assignment]
        more: MoreNotes = qpp.get("more_notes")  # type: ignore[assignment]
        assert more.db is notes.db  # one file per run, whoever opens it
        notes.note(harness.osi.process, "alone")
        more.note(harness.osi.process, "also alone")
    check_foreign_keys(path)
    conn = sqlite3.connect(path)
    assert {"runs", "processes", "threads", "syscalls", "notes", "more_notes"} <= {
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    conn.close()
    (run,) = rows(path, "SELECT plugins, syscall_count, ended_at FROM runs")
    assert run["syscall_count"] is None and run["ended_at"] is not None  # no calls were logged: not 0
    assert rows(path, "SELECT n.text, p.name FROM notes n JOIN processes p ON p.id = n.process_id") == [
        {"text": "alone", "name": "sh"}
    ]
    assert rows(path, "SELECT COUNT(*) AS n FROM processes") == [{"n": 1}]


def test_the_logger_joins_a_database_a_plugin_loaded_before_it_opened(tmp_path: Path) -> None:
    with QPP(None) as qpp:
        harness = start(qpp, [Notes, "syscalls", "syscalls_logger"], {"notes": {"db": str(tmp_path / "n.db")}})
        call(harness)
        assert qpp.import_function("syscalls_logger", "get_run_database")() is qpp.get("notes").db  # type: ignore[attr-defined]
    assert rows(tmp_path / "n.db", "SELECT COUNT(*) AS n FROM runs") == [{"n": 1}]
    assert rows(tmp_path / "n.db", "SELECT syscall_count FROM runs") == [{"syscall_count": 1}]


@pytest.mark.parametrize("order", ["logger first", "notes first"])
def test_one_db_argument_names_the_run_database_whatever_the_order(
    tmp_path: Path, order: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugins: list[Any] = ["syscalls", "syscalls_logger", Notes]
    if order == "notes first":
        plugins = [Notes, "syscalls", "syscalls_logger"]
    monkeypatch.chdir(tmp_path)  # where the default name would go
    with QPP(None) as qpp:
        harness = start(qpp, plugins, {"notes": {"db": "named.db"}})
        notes: Notes = qpp.get("notes")  # type: ignore[assignment]
        assert qpp.import_function("syscalls_logger", "get_run_database")() is notes.db
        call(harness)
        notes.note(harness.osi.process, "here")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["named.db"]
    check_foreign_keys(tmp_path / "named.db")
    assert rows(tmp_path / "named.db", "SELECT syscall_count, stop_reason IS NULL AS n FROM runs") == [
        {"syscall_count": 1, "n": 1}
    ]
    assert rows(tmp_path / "named.db", "SELECT text FROM notes") == [{"text": "here"}]


@pytest.mark.parametrize("order", ["logger first", "notes first"])
def test_two_paths_for_one_run_are_refused_in_one_line_and_write_nothing(tmp_path: Path, order: str) -> None:
    plugins: list[Any] = ["syscalls", "syscalls_logger", Notes]
    if order == "notes first":
        plugins = [Notes, "syscalls", "syscalls_logger"]
    with QPP(None) as qpp, pytest.raises(PluginError) as err:
        start(
            qpp, plugins, {"syscalls_logger": {"db": str(tmp_path / "a.db")}, "notes": {"db": str(tmp_path / "b.db")}}
        )
    assert "a.db" in str(err.value) and "b.db" in str(err.value) and "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def written_run(path: Path) -> bytes:
    """A run database with one run (of Notes), as bytes: what a refused run must leave as it was."""
    with QPP(None) as qpp:
        harness = start(qpp, [Notes], {"notes": {"db": str(path)}})
        qpp.get("notes").note(harness.osi.process, "first run")  # type: ignore[attr-defined]
    return path.read_bytes()


class Refusing(Plugin):
    """Loads after the database opened, and refuses the run."""

    name = "refusing"
    requires = ("notes",)

    def load(self) -> None:
        raise PluginError("no")


def test_a_run_refused_after_the_database_opened_leaves_an_existing_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    before = written_run(path)
    with QPP(None) as qpp, pytest.raises(PluginError, match="'refusing' failed to load"):
        start(qpp, [Notes, MoreNotes, Refusing], {"notes": {"db": str(path)}})
    assert path.read_bytes() == before
    assert rows(path, "SELECT COUNT(*) AS n FROM runs") == [{"n": 1}]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.db"]


@pytest.mark.parametrize("named", [True, False])
def test_a_run_refused_after_the_database_opened_leaves_no_new_file(
    tmp_path: Path, named: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """proc_events,file_activity with two paths, or syscalls_logger at its default name with a refusal after."""
    monkeypatch.chdir(tmp_path)
    args = {"notes": {"db": "a.db"}} if named else {}
    with QPP(None) as qpp, pytest.raises(PluginError, match="'refusing' failed to load"):
        start(qpp, ["syscalls", "syscalls_logger", Notes, Refusing], args)
    assert list(tmp_path.iterdir()) == []


def test_a_refused_move_leaves_the_run_where_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second plugin names a file with another version of the first one's table: refused, nothing written."""
    old = tmp_path / "old.db"
    written_run(old)
    conn = sqlite3.connect(old)
    conn.execute("ALTER TABLE notes DROP COLUMN text")
    conn.commit()
    conn.close()
    before = old.read_bytes()
    monkeypatch.chdir(tmp_path)
    with QPP(None) as qpp, pytest.raises(PluginError, match=r"old\.db: .*table 'notes' has no column 'text'"):
        start(qpp, [Notes, MoreNotes], {"more_notes": {"db": str(old)}})
    assert old.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.db"]


def test_two_paths_for_one_run_are_refused_in_one_line(tmp_path: Path) -> None:
    with QPP(None) as qpp, pytest.raises(PluginError) as err:
        start(
            qpp,
            ["syscalls", "syscalls_logger", Notes],
            {"syscalls_logger": {"db": str(tmp_path / "a.db")}, "notes": {"db": str(tmp_path / "b.db")}},
        )
    assert "a.db" in str(err.value) and "b.db" in str(err.value) and "\n" not in str(err.value)


def test_a_text_log_with_a_db_is_refused_in_one_line(tmp_path: Path) -> None:
    """format=text writes no database, so the logger's db would name nothing it writes."""
    args = {"format": "text", "out": str(tmp_path / "calls.txt"), "db": str(tmp_path / "foo.db")}
    with QPP(None) as qpp, pytest.raises(PluginError, match="format=text does not write") as err:
        start(qpp, ["syscalls", "syscalls_logger", Notes], {"syscalls_logger": args})
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_with_a_text_log_the_plugin_writes_its_own_database(tmp_path: Path) -> None:
    with QPP(None) as qpp:
        start(
            qpp,
            ["syscalls", "syscalls_logger", Notes],
            {
                "syscalls_logger": {"format": "text", "out": str(tmp_path / "calls.txt")},
                "notes": {"db": str(tmp_path / "n.db")},
            },
        )
        assert qpp.import_function("syscalls_logger", "get_run_database")() is None
        assert qpp.get("notes").db.path == tmp_path / "n.db"  # type: ignore[attr-defined]
    assert rows(tmp_path / "n.db", "SELECT COUNT(*) AS n FROM runs") == [{"n": 1}]


@pytest.mark.parametrize(
    ("name", "columns", "why"),
    [
        ("processes", {"id": int}, "not a name a plugin may give"),
        ("notes", {"id": int}, "already declared by 'notes'"),
        ("x", {"id": list}, "must be an identifier of type"),
        ("x", {"id": int, "pid": int}, "names column 'process_id'"),
    ],
)
def test_bad_table_declarations_are_refused(logged: Harness, name: str, columns: dict[str, type], why: str) -> None:
    notes: Notes = logged.qpp.get("notes")  # type: ignore[assignment]
    with pytest.raises(PluginError, match=why):
        notes.db.table("other", name, columns, foreign_keys=[("process_id", "processes")] if "pid" in columns else ())


def test_a_table_of_another_version_in_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with QPP(None) as qpp:
        start(qpp, [Notes], {"notes": {"db": str(path)}})
    conn = sqlite3.connect(path)
    conn.execute("ALTER TABLE notes DROP COLUMN text")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with QPP(None) as qpp, pytest.raises(PluginError, match=r"old\.db: table 'notes' has no column 'text'"):
        start(qpp, [Notes], {"notes": {"db": str(path)}})
    # the plugin whose load failed no longer holds the file, and its refused run left no row: the file is as it was
    assert path.read_bytes() == before
    assert [r["ended_at"] is not None for r in rows(path, "SELECT ended_at FROM runs ORDER BY id")] == [True]


def test_a_foreign_key_to_no_process_fails_the_commit_and_stops_the_run(logged: Harness, tmp_path: Path) -> None:
    notes: Notes = logged.qpp.get("notes")  # type: ignore[assignment]
    notes.notes.add({"process_id": 12345, "insn_count": 0, "text": "dangling"})
    notes.db.flush()
    assert notes.db.write_error is not None and "FOREIGN KEY" in notes.db.write_error
    check_foreign_keys(tmp_path / "t.db")


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from syscall_harness import FakeOsi, Harness, NoMachineCore
from test_run_database import Notes, call, start
from qppsuite.core.qpp import QPP

qpp = QPP(None)
harness = start(qpp, ["syscalls", "syscalls_logger", Notes], {"syscalls_logger": {"db": sys.argv[1], "batch": "10"}})
notes = qpp.get("notes")
for i in range(23):  # two whole batches of 5 calls and 5 notes, and 3 of each buffered
    call(harness)
    notes.note(harness.osi.process, f"note {i}")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_run_leaves_whole_batches_of_every_table(tmp_path: Path) -> None:
    path = tmp_path / "killed.db"
    done = subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(path), str(Path(__file__).parent)], capture_output=True, text=True
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    check_foreign_keys(path)
    assert rows(path, "SELECT COUNT(*) AS n FROM syscalls") == [{"n": 20}]
    assert rows(path, "SELECT COUNT(*) AS n FROM notes") == [{"n": 20}]
    assert rows(path, "SELECT ended_at FROM runs") == [{"ended_at": None}]
    assert os.path.getsize(path) > 0


def test_the_query_commands_say_when_a_run_recorded_no_system_calls(tmp_path: Path) -> None:
    """proc_events without the logger: no call counts (not "0 syscalls"), and the exit status proc_events saw."""
    from typer.testing import CliRunner

    from qppsuite.cli import app

    path = tmp_path / "pe.db"
    with QPP(None) as qpp:
        harness = start(qpp, ["syscalls", "proc_events"], {"proc_events": {"db": str(path)}})
        harness.thread_exit(harness.osi.process, 100, 3 << 8)  # sh exits 3
        qpp.stop_all(None)
    assert rows(path, "SELECT syscall_count FROM runs") == [{"syscall_count": None}]
    runner = CliRunner()
    shown = runner.invoke(app, ["processes", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "system calls not recorded" in shown.output and "syscalls" not in shown.output.replace("syscalls_logger", "")
    assert "sh pid 100, ppid 1, exited 3" in shown.output
    (record,) = json.loads(runner.invoke(app, ["processes", str(path), "-f", "json"]).output)
    assert (record["syscalls"], record["exit_status"]) == (None, 3 << 8)
    stats = runner.invoke(app, ["stats", str(path)])
    assert stats.exit_code == 0, stats.output
    assert "system calls were not recorded" in stats.output and "0 system calls" not in stats.output
    got = json.loads(runner.invoke(app, ["stats", str(path), "-f", "json"]).output)
    assert (got["calls"], got["failed"], got["processes"]) == (None, None, 1)


@pytest.mark.parametrize(
    ("label", "said"),
    [("a\udcffb", "must be text (UTF-8)"), ("", "1 to 255 characters"), ("x" * 256, "(256 given)"),
     ("a\0b", "without NUL")],
)
def test_a_label_no_database_can_hold_is_one_line_before_any_boot(label: str, said: str) -> None:
    """Third break test of issue 15: a label that is not UTF-8 was blamed on syscalls_logger ('failed to
    load: UnicodeEncodeError'); an empty or 100,000-character one was taken."""
    from cli_entry import run_main

    code, output = run_main(["run", "no-such-image", "--label", label, "--cmd", "true"])
    assert code == 2 and "Traceback" not in output, output
    assert output.startswith("error: Invalid value for '--label': ") and said in output, output


@pytest.mark.parametrize("label", ["a job", None])
def test_the_runs_row_records_the_runs_label(tmp_path: Path, label: str | None) -> None:
    """``qppsuite run --label`` (a batch's job label) is the run's ``runs.label``; without one it is NULL."""
    from qppsuite.core.qpp import RunContext

    with QPP(None, context=RunContext(label=label)) as qpp:
        start(qpp, ["syscalls", "syscalls_logger"], {"syscalls_logger": {"db": str(tmp_path / "t.db")}})
        qpp.stop_all(None)
    assert rows(tmp_path / "t.db", "SELECT label FROM runs") == [{"label": label}]
