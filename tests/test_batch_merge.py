"""``qppsuite batch merge``: a batch's output directory into one database, and the query commands across its runs.

The jobs' databases are real run databases, written by syscalls_logger and a plugin with tables of its own
(one referring to itself, one with a composite key) through the run database, fired by hand (no guest);
tests/test_batch_merge_guest.py does the same with real guest runs and the project's plugins.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any, ClassVar

import pytest
from batch_outdir import JobSpec, check_references, content, rows, tables_with_runs, write_outdir
from cli_entry import run_main
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_run_database import call, start
from typer.testing import CliRunner

from qppsuite.batch import merge as batch_merge
from qppsuite.batch.merge import MergeError, merge, merge_batch
from qppsuite.cli import app
from qppsuite.core.events import StopReason
from qppsuite.core.qpp import QPP, Arg, Plugin
from qppsuite.plugins.osi_linux.model import OsiProcess
from qppsuite.plugins.syscalls_logger.database import LOOKUP_INDEXES, ROW_ID_STRIDE, SCHEMA_VERSION
from qppsuite.plugins.syscalls_logger.run_database import RunDatabase, open_run_database
from qppsuite.plugins.syscalls_logger.tables import PluginTable

runner = CliRunner(env={"COLUMNS": "200"})
WORKER = OsiProcess(300, 300, 100, "worker", 0x9000, 0xC3000000, 9_000, False)


class Marks(Plugin):
    """Tables of its own: ``marks`` (each naming a process and an earlier mark) and ``mark_parts`` (a composite
    key, naming its mark), as a plugin declares them through the run database."""

    name = "marks"
    requires = ("osi_linux",)
    args: ClassVar[Any] = {"db": Arg(Path, None)}

    def load(self) -> None:
        self.db: RunDatabase = open_run_database(self, self.args.db)
        self.marks: PluginTable = self.db.table(
            self.name,
            "marks",
            {"id": int, "process_id": int, "previous_id": int, "text": str},
            foreign_keys=[("process_id", "processes"), ("previous_id", "marks")],
        )
        self.parts: PluginTable = self.db.table(
            self.name,
            "mark_parts",
            {"mark_id": int, "part": int, "size": int},
            pk=("mark_id", "part"),
            foreign_keys=[("mark_id", "marks")],
        )
        self.previous: int | None = None

    def mark(self, text: str) -> None:
        mark_id = self.marks.add(
            {"process_id": self.db.process_id(WORKER, 0), "previous_id": self.previous, "text": text}
        )
        for part in range(2):
            self.parts.add({"mark_id": mark_id, "part": part, "size": len(text) + part})
        self.previous = mark_id

    def stop(self, reason: Any) -> None:
        self.db.stopped(reason)

    def unload(self) -> None:
        self.db.release(self.name)


def job_database(path: Path, calls: int, marks: int) -> Path:
    """A run of ``calls`` getpid calls and ``marks`` marks appended to ``path`` (a new file: run 1)."""
    with QPP(None) as qpp:
        harness = start(
            qpp, ["syscalls", "syscalls_logger", Marks], {"syscalls_logger": {"db": str(path), "batch": "4"}}
        )
        for _ in range(calls):
            call(harness)
        plugin: Marks = qpp.get("marks")  # type: ignore[assignment]
        for number in range(marks):
            plugin.mark(f"mark {number}")
        qpp.stop_all(None)
    return path


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    where = tmp_path_factory.mktemp("sources")
    two_runs = job_database(where / "two.db", 2, 1)
    job_database(two_runs, 5, 3)  # the file holds runs 1 and 2: the job's is the last
    return {
        "small": job_database(where / "small.db", 3, 2),
        "big": job_database(where / "big.db", 11, 4),
        "two_runs": two_runs,
        "panicked": job_database(where / "panicked.db", 1, 1),
    }


def standard_jobs(sources: dict[str, Path]) -> list[JobSpec]:
    return [
        JobSpec("small", "ok", database=sources["small"], stop_reason="poweroff"),
        JobSpec("big", "ok", database=sources["big"], stop_reason="poweroff"),
        JobSpec("rerun", "ok", database=sources["two_runs"], stop_reason="poweroff"),
        JobSpec("panicked", "failed", "kernel panic", database=sources["panicked"], stop_reason="panic"),
        JobSpec("no database", "failed", "exit 1: image not found"),
        JobSpec("waiting", None),
        JobSpec("changed", "ok", database=sources["small"], sha256="an earlier job's"),
    ]


@pytest.fixture(scope="module")
def merged(sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return merge(write_outdir(tmp_path_factory.mktemp("batch"), standard_jobs(sources)))


def test_every_job_has_a_runs_row_with_its_label_status_and_reason(merged: Path) -> None:
    assert rows(merged, "SELECT id, label, batch_status, batch_reason FROM runs ORDER BY id") == [
        (1, "small", "ok", None),
        (2, "big", "ok", None),
        (3, "rerun", "ok", None),
        (4, "panicked", "failed", "kernel panic"),
        (5, "no database", "failed", "exit 1: image not found"),
        (6, "waiting", "not run", "it never ran"),
        (7, "changed", "not run", "its result is of an earlier version of the job"),
    ]
    assert rows(merged, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    # The logger's lookup indexes, made once over every job's rows (a job's own file lacks them if it was killed).
    indexed = {
        tuple(r[2] for r in rows(merged, f"PRAGMA index_info('{name}')"))
        for (name,) in rows(merged, ("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'syscalls'"))
    }
    assert {columns for _, columns in LOOKUP_INDEXES} <= indexed
    # A job without a database: what its result.json says of the run.
    assert rows(merged, "SELECT stop_reason, started_at, ended_at, plugins FROM runs WHERE id = 5") == [
        (None, "2026-12-06T00:00:00+00:00", "2026-12-06T00:00:01+00:00", None)
    ]


@pytest.mark.parametrize("run_id, source, source_run", [(1, "small", 1), (2, "big", 1), (3, "two_runs", 2)])
def test_each_run_has_its_database_rows_renumbered(
    merged: Path, sources: dict[str, Path], run_id: int, source: str, source_run: int
) -> None:
    db = sources[source]
    for table in tables_with_runs(db):
        ours = rows(merged, f"SELECT COUNT(*) FROM [{table}] WHERE run_id = ?", run_id)
        assert ours == rows(db, f"SELECT COUNT(*) FROM [{table}] WHERE run_id = ?", source_run), table
    stride = (run_id - source_run) * ROW_ID_STRIDE
    for table in ("processes", "threads", "marks"):  # ids in the run's stride, as the logger gives them
        theirs = rows(db, f"SELECT id FROM [{table}] WHERE run_id = ? ORDER BY id", source_run)
        assert rows(merged, f"SELECT id FROM [{table}] WHERE run_id = ? ORDER BY id", run_id) == [
            (i + stride,) for (i,) in theirs
        ]
    assert rows(merged, "SELECT seq, pid, name, text FROM syscalls WHERE run_id = ? ORDER BY seq", run_id) == rows(
        db, "SELECT seq, pid, name, text FROM syscalls WHERE run_id = ? ORDER BY seq", source_run
    )
    assert rows(merged, "SELECT text FROM marks WHERE run_id = ? ORDER BY id", run_id) == rows(
        db, "SELECT text FROM marks WHERE run_id = ? ORDER BY id", source_run
    )


def test_every_reference_names_a_row_of_the_same_run(merged: Path) -> None:
    check_references(merged)
    # The plugin's own references: a mark's previous mark, a part's mark, a mark's process.
    joined = rows(
        merged,
        "SELECT COUNT(*) FROM mark_parts p JOIN marks m ON m.id = p.mark_id "
        "JOIN processes pr ON pr.id = m.process_id AND pr.run_id = m.run_id AND pr.name = 'worker'",
    )
    assert joined == rows(merged, "SELECT COUNT(*) FROM mark_parts") != [(0,)]
    assert rows(
        merged, "SELECT COUNT(*) FROM marks WHERE previous_id IS NOT NULL AND previous_id NOT IN (SELECT id FROM marks)"
    ) == [(0,)]
    assert rows(merged, "SELECT COUNT(DISTINCT id) = COUNT(*) FROM syscalls") == [(1,)]


def test_merging_again_gives_the_same_content_and_replaces_the_file_whole(merged: Path) -> None:
    before = content(merged)
    inode = merged.stat().st_ino
    assert merge(merged.parent) == merged
    assert content(merged) == before
    assert merged.stat().st_ino != inode  # a new file renamed over the old one, not the old one rewritten
    assert sorted(p.name for p in merged.parent.iterdir()) == ["batch.json", "batch.sqlite", "jobs"]
    # The jobs' files are only read: no -wal or -shm beside them.
    assert {p.name for p in (merged.parent / "jobs").glob("*/*")} == {"result.json", "run.sqlite"}


@pytest.mark.parametrize(
    "damage, said",
    [
        (lambda p: p.write_bytes(os.urandom(4096)), "is not an SQLite database, or is damaged"),
        (lambda p: sqlite3.connect(p).execute("CREATE TABLE other (x)").connection.commit(), "no table 'runs'"),
        (lambda p: _set_version(p, 4), f"schema 4, this one uses {SCHEMA_VERSION}"),
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), ""),
        (lambda p: p.write_bytes(b""), ""),
    ],
    ids=["random bytes", "foreign tables", "older schema", "truncated", "empty"],
)
def test_a_bad_job_database_is_that_jobs_failure_in_one_line_not_the_merges(
    sources: dict[str, Path], tmp_path: Path, damage: Any, said: str
) -> None:
    write_outdir(tmp_path, standard_jobs(sources)[:2])
    bad = tmp_path / "jobs" / "big" / "run.sqlite"
    if said == "no table 'runs'":
        bad.unlink()
    damage(bad)
    result = merge_batch(tmp_path)
    (status, reason), *_ = rows(result.path, "SELECT batch_status, batch_reason FROM runs WHERE label = 'big'")
    assert status == "failed" and said in reason and "\n" not in reason and "big" in reason, reason
    assert len(result.problems) == 1 and result.problems[0].startswith("big: ")
    assert rows(result.path, "SELECT COUNT(*) FROM syscalls WHERE run_id = 2") == [(0,)]  # nothing of it half-copied
    assert rows(result.path, "SELECT COUNT(*) FROM syscalls WHERE run_id = 1") == rows(
        sources["small"], "SELECT COUNT(*) FROM syscalls"
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(damage=st.lists(st.tuples(st.integers(0, 60_000), st.binary(min_size=1, max_size=400)), min_size=1, max_size=4))
@example(damage=[(1521, b"\x80")])  # not UTF-8 in sqlite_master
@example(damage=[(100, b"\x00" * 400)])  # the schema's first page
def test_a_job_database_with_random_bytes_overwritten_is_merged_or_that_jobs_failure(
    sources: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, damage: list[tuple[int, bytes]]
) -> None:
    outdir = write_outdir(tmp_path_factory.mktemp("damaged"), standard_jobs(sources)[:2])
    bad = outdir / "jobs" / "big" / "run.sqlite"
    data = bytearray(bad.read_bytes())
    for offset, garbage in damage:
        data[offset : offset + len(garbage)] = garbage
    bad.write_bytes(bytes(data))
    result = merge_batch(outdir)
    ((status, reason),) = rows(result.path, "SELECT batch_status, batch_reason FROM runs WHERE label = 'big'")
    assert (status, reason, result.problems) == ("ok", None, ()) or (
        status == "failed" and "\n" not in reason and len(result.problems) == 1
    )
    assert rows(result.path, "SELECT batch_status FROM runs WHERE label = 'small'") == [("ok",)]


def _set_version(path: Path, version: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {version}")
    conn.close()


@pytest.mark.parametrize(
    "text", ["{", "[]", '{"format": 1}', '{"format": 1, "status": "done", "sha256": "sha-big"}', "\xff"]
)
def test_a_bad_result_is_that_jobs_failure(sources: dict[str, Path], tmp_path: Path, text: str) -> None:
    write_outdir(tmp_path, standard_jobs(sources)[:2])
    (tmp_path / "jobs" / "big" / "result.json").write_bytes(text.encode("latin-1"))
    result = merge_batch(tmp_path)
    ((status, reason),) = rows(result.path, "SELECT batch_status, batch_reason FROM runs WHERE label = 'big'")
    assert status == "failed" and reason.startswith("unreadable result: ") and "\n" not in reason
    assert [p.split(":")[0] for p in result.problems] == ["big"]


def test_no_batch_to_merge_is_one_line_and_keeps_the_merged_file(tmp_path: Path, sources: dict[str, Path]) -> None:
    with pytest.raises(MergeError, match=r"has no batch\.json"):
        merge(tmp_path)
    old = merge(write_outdir(tmp_path, standard_jobs(sources)[:1]))
    before = content(old)
    for text in (
        "not json",
        '{"format": 2, "jobs": []}',
        '{"format": 1, "jobs": [{"id": "../x", "label": "x", "sha256": ""}]}',
    ):
        (tmp_path / "batch.json").write_text(text)
        with pytest.raises(MergeError) as raised:
            merge(tmp_path)
        assert "\n" not in str(raised.value)
        assert content(old) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch.json", "batch.sqlite", "jobs"]


def test_an_interrupted_merge_leaves_the_old_file_and_no_other(
    sources: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = merge(write_outdir(tmp_path, standard_jobs(sources)[:1]))
    before = content(old)
    write_outdir(tmp_path, standard_jobs(sources))
    copy = batch_merge._MergedFile._copy_run

    def interrupted(self: Any, job: Any) -> None:
        if job.run_id == 2:
            raise KeyboardInterrupt
        copy(self, job)

    monkeypatch.setattr(batch_merge._MergedFile, "_copy_run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        merge(tmp_path)
    assert content(old) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch.json", "batch.sqlite", "jobs"]


def test_an_empty_batch_merges_to_a_database_of_no_runs(tmp_path: Path) -> None:
    merged = merge(write_outdir(tmp_path, []))
    assert rows(merged, "SELECT COUNT(*) FROM runs") == [(0,)]
    code, output = run_main(["stats", str(merged)])
    assert code == 0 or output.startswith("error: the database holds no runs"), output


# -- the command ----------------------------------------------------------------------------------------------
def test_the_merge_command_prints_the_file_and_the_counts(merged: Path) -> None:
    done = runner.invoke(app, ["batch", "merge", str(merged.parent)])
    assert done.exit_code == 0, done.output
    assert done.stdout == f"{merged}: 7 runs (3 ok, 2 failed, 2 not run)\n"


def test_the_merge_command_gives_one_line_per_bad_input_and_exits_1(sources: dict[str, Path], tmp_path: Path) -> None:
    write_outdir(tmp_path, standard_jobs(sources))
    (tmp_path / "jobs" / "big" / "run.sqlite").write_bytes(b"x" * 1000)
    (tmp_path / "jobs" / "small" / "result.json").write_text("{")
    done = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["batch", "merge", str(tmp_path)])
    assert done.exit_code == 1
    errors = done.stderr.splitlines()
    assert [line.split(":")[:2] for line in errors] == [["error", " small"], ["error", " big"]], errors
    assert done.stdout.endswith("7 runs (1 ok, 4 failed, 2 not run)\n")
    code, output = run_main(["batch", "merge", str(tmp_path / "nothing")])
    said = f"error: {tmp_path / 'nothing'} is not a batch's output directory: no such directory\n"
    assert (code, output) == (1, said)


# -- the query commands across runs ---------------------------------------------------------------------------
def test_stats_of_a_batch_is_one_row_per_run(merged: Path, sources: dict[str, Path]) -> None:
    shown = runner.invoke(app, ["stats", str(merged), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    summary = json.loads(shown.stdout)
    calls = rows(sources["small"], "SELECT COUNT(*) FROM syscalls")[0][0]
    assert summary[0] == {
        "run": 1, "label": "small", "status": "ok", "reason": None, "syscalls": calls, "processes": 2,
        "stop_reason": None,
    }  # fmt: skip
    assert [(r["label"], r["status"], r["processes"]) for r in summary[4:]] == [
        ("no database", "failed", None),
        ("waiting", "not run", None),
        ("changed", "not run", None),
    ]
    table = runner.invoke(app, ["stats", str(merged)])
    assert table.stdout.startswith("7 runs: 3 ok, 2 failed, 2 not run\n")
    assert "kernel panic" in table.stdout and "exit 1: image not found" in table.stdout
    assert runner.invoke(app, ["stats", str(merged), "--run", "all", "--format", "json"]).stdout == shown.stdout


def test_a_run_is_picked_by_its_label(merged: Path) -> None:
    by_label = runner.invoke(app, ["stats", str(merged), "--run", "big", "--format", "json"])
    by_id = runner.invoke(app, ["stats", str(merged), "--run", "2", "--format", "json"])
    assert by_label.exit_code == 0 and by_label.stdout == by_id.stdout
    assert json.loads(by_label.stdout)["run"] == 2
    assert runner.invoke(app, ["stats", str(merged), "--run", "big"]).stdout.startswith("run 2 [big]: ")
    spaced = runner.invoke(app, ["processes", str(merged), "--run", "no database"])
    assert spaced.exit_code == 0 and "no rows" in spaced.stdout
    assert "run 5 [no database] failed: exit 1: image not found" in spaced.stderr


@pytest.mark.parametrize(
    "run, said",
    [
        ("bigg", "error: no run labelled 'bigg' in the database; did you mean 'big'?"),
        ("zzzzzz", "error: no run labelled 'zzzzzz' in the database; labels: small, big, rerun"),
        ("99", "error: no run 99 and no run labelled '99' in the database; runs: 1, 2, 3, 4, 5, 6, 7; labels: small"),
    ],
)
def test_a_misspelt_label_is_one_line_naming_the_closest(merged: Path, run: str, said: str) -> None:
    for view in (["stats"], ["syscalls"], ["processes"], ["report", "-o", str(merged.parent / "r.html")]):
        code, output = run_main([view[0], str(merged), *view[1:], "--run", run])
        assert code == 1 and output.startswith(said) and len(output.splitlines()) == 1, output


def test_a_view_of_one_run_asks_which_run_of_a_batch(merged: Path, sources: dict[str, Path], tmp_path: Path) -> None:
    """The latest run of a batch is only its last job: without --run, a view of one run asks for one."""
    for view in (["syscalls"], ["processes"], ["report", "-o", str(tmp_path / "r.html")]):
        code, output = run_main([view[0], str(merged), *view[1:]])
        assert code == 1 and output.startswith("error: this is a batch's merged database of 7 runs: give --run"), output
    single = merge(write_outdir(tmp_path / "one", standard_jobs(sources)[:1]))
    assert runner.invoke(app, ["processes", str(single)]).stdout.startswith("run 1 [small]: 2 processes")


def test_report_takes_a_label_and_refuses_all(merged: Path) -> None:
    page = merged.parent / "big.html"
    code, output = run_main(["report", str(merged), "--run", "big", "-o", str(page)])
    assert code == 0 and output.startswith("report of run 2 ") and page.is_file(), output
    code, output = run_main(["report", str(merged), "--run", "all", "-o", str(page)])
    assert code == 1 and output.startswith("error: --run all: this view shows one run"), output


def test_syscalls_of_every_run_name_each_calls_run(merged: Path) -> None:
    shown = runner.invoke(app, ["syscalls", str(merged), "--run", "all", "--name", "getpid", "--format", "json"])
    assert shown.exit_code == 0, shown.output
    calls = json.loads(shown.stdout)
    expected = rows(
        merged,
        "SELECT r.label, s.run_id, s.seq FROM syscalls s JOIN runs r ON r.id = s.run_id "
        "WHERE s.name = 'getpid' ORDER BY s.run_id, s.seq",
    )
    assert [(c["label"], c["run_id"], c["seq"]) for c in calls] == expected
    assert {c["label"] for c in calls} == {"small", "big", "rerun", "panicked"}
    table = runner.invoke(app, ["syscalls", str(merged), "--run", "all", "--limit", "5"])
    lines = table.stdout.splitlines()
    assert lines[0].split()[:2] == ["run", "seq"] and lines[-1] == "5 system calls"
    assert [line.split()[0] for line in lines[1:-1]] == ["small"] * 3 + ["big"] * 2
    assert "4 of 7 runs failed, did not run or did not end normally" in table.stderr
    code, output = run_main(["syscalls", str(merged), "--run", "all", "--process", "shh"])
    said = "error: --process: no call of any run was made by a process named shh; did you mean sh?"
    assert code == 1 and output.splitlines()[-1] == said, output  # after the line on the failed runs
    code, output = run_main(["syscalls", str(merged), "--run", "all", "--pid", "4242"])
    assert code == 1 and output.splitlines()[-1] == "error: --pid: no call of any run was made by pid 4242", output
    named = runner.invoke(app, ["syscalls", str(merged), "--run", "all", "--process", "sh", "--format", "json"])
    by_sh = rows(merged, "SELECT COUNT(*) FROM syscalls WHERE process_name = 'sh'")[0][0]
    assert len(json.loads(named.stdout)) == by_sh > 0
    follow = runner.invoke(app, ["syscalls", str(merged), "--run", "all", "--follow", "100"])
    assert follow.exit_code != 0 and "--follow names a process of one run" in str(follow.exception)


def test_processes_of_every_run(merged: Path) -> None:
    shown = runner.invoke(app, ["processes", str(merged), "--run", "all", "--format", "json"])
    records = json.loads(shown.stdout)
    assert [(r["run_id"], r["label"], r["name"]) for r in records][:4] == [
        (1, "small", "sh"),
        (1, "small", "worker"),
        (2, "big", "sh"),
        (2, "big", "worker"),
    ]
    table = runner.invoke(app, ["processes", str(merged), "--run", "all"]).stdout
    assert "run 1 [small]: 2 processes" in table and "run 6 [waiting] (not run): no rows" in table


def test_labels_are_shown_as_data(sources: dict[str, Path], tmp_path: Path) -> None:
    """A label comes from the user's jobs file (or a sample's name): escapes and markup are shown, not obeyed."""
    evil = "\x1b[2J[bold red]boom[/]\n\u202e"
    merged = merge(write_outdir(tmp_path, [JobSpec(evil, "failed", "\x1b]0;title\x07", database=sources["small"])]))
    for args in (
        ["stats", str(merged)],
        ["syscalls", str(merged), "--run", "all"],
        ["processes", str(merged), "--run", "all"],
    ):
        code, output = run_main(args)  # stderr: the warning names the run
        assert code == 0 and "\x1b" not in output and "\u202e" not in output, output
        done = runner.invoke(app, args)
        assert done.exit_code == 0, done.output
        assert "\x1b" not in done.output and "\u202e" not in done.output
        assert "[bold red]boom[/]" in done.output  # markup shown as text
    assert runner.invoke(app, ["stats", str(merged), "--run", evil, "--format", "json"]).exit_code == 0


def test_a_label_is_chosen_as_the_views_show_it_or_raw(sources: dict[str, Path], tmp_path: Path) -> None:
    """Third break test of issue 15: `processes` showed `run 1 [a\\x0ab]`, and `--run 'a\\x0ab'` found no run."""
    merged = merge(write_outdir(tmp_path, [JobSpec("a\nb", "ok", database=sources["small"]),
                                           JobSpec("other", "ok", database=sources["small"])]))
    table = runner.invoke(app, ["processes", str(merged), "--run", "all"]).stdout
    assert "run 1 [a\\x0ab]" in table
    for typed in ("a\\x0ab", "a\nb", "label:a\\x0ab"):  # as shown; raw; with the prefix
        done = runner.invoke(app, ["stats", str(merged), "--run", typed, "--format", "json"])
        assert done.exit_code == 0, done.output
        assert json.loads(done.stdout)["run"] == 1
    code, output = run_main(["stats", str(merged), "--run", "a\\x0ac"])
    assert code == 1 and "did you mean 'a\\x0ab'?" in output, output  # as --run takes it (not repr's a\\\\x0ab)


class StoppedMachine:
    """The machine as the run database's plugins see it, reduced to its clocks: stopped at instruction 5,000 and
    7 ms of virtual time (``syscalls``, which reads registers, gets none: nothing fires calls here)."""

    insn_count = 5_000
    virtual_ns = 7_000_000

    def for_plugin(self, name: str, _failed: Any) -> StoppedMachine | None:
        return None if name == "syscalls" else self


@pytest.mark.parametrize("plugins", [["syscalls", "syscalls_logger", Marks], [Marks]], ids=["logger", "plugin alone"])
def test_the_run_s_end_virtual_time_is_recorded_and_merged(tmp_path: Path, plugins: list[Any]) -> None:
    """runs.virtual_ns is the guest's virtual time when the run stopped, written by whichever plugin ends the
    run (the logger, or a plugin that writes the file without it), and the merge carries it."""
    job = tmp_path / "job.db"
    with QPP(StoppedMachine()) as qpp:
        args = {"syscalls_logger": {"db": str(job)}} if "syscalls_logger" in plugins else {"marks": {"db": str(job)}}
        start(qpp, plugins, args)
        qpp.stop_all(StopReason("max_insns", "the instruction budget ran out", 5_000))
    assert rows(job, "SELECT insn_count, virtual_ns FROM runs") == [(5_000, 7_000_000)]
    outdir = write_outdir(tmp_path / "out", [JobSpec("slow", "ok", database=job, stop_reason="max_insns")])
    assert rows(merge(outdir), "SELECT label, insn_count, virtual_ns FROM runs") == [("slow", 5_000, 7_000_000)]


def test_a_label_that_is_another_run_s_id_or_all_is_chosen_by_its_prefix(merged: Path, tmp_path: Path) -> None:
    """Break test of issue 15: in a corpus of numbered samples, `--run 1` silently showed run 1 though run 4 was
    the sample labelled "1", and a job labelled "all" could not be chosen at all."""
    import shutil
    import sqlite3

    from qppsuite.plugins.syscalls_logger.reader import LogDatabaseError, select_run

    copy = tmp_path / "numbered.sqlite"
    shutil.copy(merged, copy)
    with sqlite3.connect(copy) as conn:
        conn.execute("UPDATE runs SET label = '1' WHERE id = 4")
        conn.execute("UPDATE runs SET label = 'all' WHERE id = 5")
        with pytest.raises(LogDatabaseError, match=r"--run 1 is run 1's id and run 4's label: give --run id:1 or"):
            select_run(conn, "1")
        assert [select_run(conn, text) for text in ("id:1", "label:1", "label:all", "2", "big")] == [1, 4, 5, 2, 2]


def test_the_merge_carries_processes_command_and_reads_a_version_5_job_as_unknown(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    """Schema 6's processes.command (is the process the job's command's?) reaches the merged file as each job
    wrote it, and a job database version 5 wrote (no such column: a batch resumed across the upgrade) is merged
    with it NULL, unknown, rather than failed."""
    old, new = tmp_path / "old.db", tmp_path / "new.db"
    for path, change in (
        (new, ["UPDATE processes SET command = 1 WHERE pid = 300"]),  # as if the worker were the command's
        (old, ["ALTER TABLE processes DROP COLUMN command", "PRAGMA user_version = 5"]),
    ):
        path.write_bytes(sources["small"].read_bytes())
        with sqlite3.connect(path) as conn:
            for sql in change:
                conn.execute(sql)
        conn.close()
    write_outdir(
        tmp_path / "out",
        [JobSpec("old", "ok", database=old, stop_reason="poweroff"), JobSpec("new", "ok", database=new)],
    )
    result = merge_batch(tmp_path / "out")
    assert result.problems == () and [job.status for job in result.jobs] == ["ok", "ok"]
    got = rows(result.path, "SELECT r.label, p.pid, p.command FROM processes p JOIN runs r ON r.id = p.run_id")
    assert sorted(got, key=str) == sorted(
        [("new", pid, int(pid == 300)) for (pid,) in rows(new, "SELECT pid FROM processes")]
        + [("old", pid, None) for (pid,) in rows(new, "SELECT pid FROM processes")],
        key=str,
    )
    assert ("new", 300, 1) in got


# -- a job's database that is not its result's run, or damaged (issue 15) ---------------------------------------
def _with_insn_count(source: Path, target: Path, count: int) -> Path:
    target.write_bytes(source.read_bytes())
    with sqlite3.connect(target) as conn:
        conn.execute("UPDATE runs SET insn_count = ?", (count,))
    conn.close()
    return target


def test_another_jobs_database_is_neither_complete_nor_merged(sources: dict[str, Path], tmp_path: Path) -> None:
    from qppsuite.batch import outdir

    small = _with_insn_count(sources["small"], tmp_path / "small.db", 111)
    big = _with_insn_count(sources["big"], tmp_path / "big.db", 222)
    out = write_outdir(tmp_path / "out", [JobSpec("small", "ok", database=small), JobSpec("big", "ok", database=big)])
    directory = out / "jobs" / "small"
    assert outdir.is_complete(directory, "sha-small", database=True)
    (directory / "run.sqlite").write_bytes(big.read_bytes())  # the other job's file copied over this one's
    assert not outdir.is_complete(directory, "sha-small", database=True)
    result = merge_batch(out)
    ((status, reason),) = rows(result.path, "SELECT batch_status, batch_reason FROM runs WHERE label = 'small'")
    assert status == "failed" and "not the run its result.json describes: insn_count 222" in reason, reason
    assert [p.split(":")[0] for p in result.problems] == ["small"]
    assert rows(result.path, "SELECT COUNT(*) FROM syscalls WHERE run_id = 1") == [(0,)]
    assert json.loads((directory / "result.json").read_text())["status"] == "failed"


def test_a_database_the_merge_finds_damaged_is_failed_in_its_result_so_the_next_run_retries_it(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    from qppsuite.batch import outdir

    out = write_outdir(tmp_path, standard_jobs(sources)[:2])
    directory = out / "jobs" / "big"
    path = directory / "run.sqlite"
    ((page_size,),) = rows(path, "PRAGMA page_size")
    ((root,),) = rows(path, "SELECT rootpage FROM sqlite_master WHERE name = 'syscalls'")
    with path.open("r+b") as stream:  # the calls' page, not the runs row's
        stream.seek((root - 1) * page_size)
        stream.write(b"\xde\xad" * (page_size // 2))
    assert outdir.is_complete(directory, "sha-big", database=True)  # its runs row reads: no full check here
    result = merge_batch(out)
    ((status, reason),) = rows(result.path, "SELECT batch_status, batch_reason FROM runs WHERE label = 'big'")
    assert status == "failed" and reason.startswith("its database is damaged: "), reason
    written = json.loads((directory / "result.json").read_text())
    assert (written["status"], written["reason"]) == ("failed", reason)
    assert not outdir.is_complete(directory, "sha-big", database=True)


def test_the_merge_command_waits_for_no_running_batch(sources: dict[str, Path], tmp_path: Path) -> None:
    from qppsuite.batch import outdir

    write_outdir(tmp_path, standard_jobs(sources)[:1])
    with outdir.locked(tmp_path):  # a batch running there
        code, output = run_main(["batch", "merge", str(tmp_path)])
    assert code == 1 and output.startswith(f"error: {tmp_path} is in use by batch pid {os.getpid()}\n"), output
    assert "Traceback" not in output and not (tmp_path / "batch.sqlite").exists()
    code, output = run_main(["batch", "merge", str(tmp_path)])
    assert code == 0, output


def test_an_ok_jobs_missing_database_is_its_failure_and_failed_in_its_result(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    """An ok job whose result.json copied an instruction count from its run.sqlite, the file since deleted: not
    an ok run of no calls, but that job's failure, rewritten in its result.json so the next run retries it."""
    small = _with_insn_count(sources["small"], tmp_path / "small.db", 111)  # as a guest's run has one
    out = write_outdir(tmp_path / "out", [JobSpec("small", "ok", database=small), standard_jobs(sources)[1]])
    (out / "jobs" / "small" / "run.sqlite").unlink()
    result = merge_batch(out)
    assert [(job.label, job.status, job.reason) for job in result.jobs] == [
        ("small", "failed", "its database is missing (no run.sqlite)"), ("big", "ok", None)]
    assert result.problems == ("small: its database is missing (no run.sqlite)",)
    written = json.loads((out / "jobs" / "small" / "result.json").read_text())
    assert (written["status"], written["reason"]) == ("failed", "its database is missing (no run.sqlite)")


def test_a_database_of_a_refused_schema_is_failed_in_the_merge_but_its_result_is_kept(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    """A job's file this version refuses (an older build's schema) is not damage: its row says failed and why,
    the merge gives a hint on redoing it, and its result.json still says ok (the file is not deleted by a rerun
    the user did not ask for)."""
    old = tmp_path / "old.db"
    old.write_bytes(sources["small"].read_bytes())
    with sqlite3.connect(old) as conn:
        conn.execute("PRAGMA user_version = 4")
    conn.close()
    out = write_outdir(tmp_path / "out", [JobSpec("old", "ok", database=old, stop_reason="poweroff")])
    result = merge_batch(out)
    ((job,),) = (result.jobs,)
    assert job.status == "failed" and "another qppsuite version (schema 4" in (job.reason or ""), job
    assert result.hints == (batch_merge.REFUSED_HINT,)
    assert json.loads((out / "jobs" / "old" / "result.json").read_text())["status"] == "ok"
    code, output = run_main(["batch", "merge", str(out)])
    assert code == 1 and f"hint: {batch_merge.REFUSED_HINT}" in " ".join(output.split()), output


def _labelled(source: Path, target: Path, label: str | None, **run: Any) -> Path:
    """A copy of ``source`` whose run is labelled ``label`` (as ``qppsuite run --label`` writes it), with the
    ``runs`` columns ``run`` set too."""
    target.write_bytes(source.read_bytes())
    with sqlite3.connect(target) as conn:
        for column, value in {"label": label, **run}.items():
            conn.execute(f"UPDATE runs SET {column} = ?", (value,))
    conn.close()
    return target


def test_two_jobs_databases_alike_but_for_their_label_swapped_are_neither_complete_nor_merged(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    """Two jobs run side by side with one instruction count and the same times: only the label their runs
    record tells their files apart, swapped."""
    from qppsuite.batch import outdir

    alike = {"insn_count": 1000, "started_at": "2026-12-06T00:00:00+00:00", "ended_at": "2026-12-06T00:00:01+00:00"}
    a = _labelled(sources["small"], tmp_path / "a.db", "a", **alike)
    b = _labelled(sources["big"], tmp_path / "b.db", "b", **alike)
    out = write_outdir(tmp_path / "out", [JobSpec("a", "ok", database=a), JobSpec("b", "ok", database=b)])
    assert all(outdir.is_complete(out / "jobs" / label, f"sha-{label}", database=True) for label in "ab")
    (out / "jobs" / "a" / "run.sqlite").write_bytes(b.read_bytes())
    (out / "jobs" / "b" / "run.sqlite").write_bytes(a.read_bytes())
    assert not any(outdir.is_complete(out / "jobs" / label, f"sha-{label}", database=True) for label in "ab")
    result = merge_batch(out)
    assert [(job.label, job.status) for job in result.jobs] == [("a", "failed"), ("b", "failed")]
    assert (result.jobs[0].reason or "").endswith(
        "run.sqlite: its database is not the run its result.json describes: its run is labelled 'b', the job 'a'")
    assert rows(result.path, "SELECT COUNT(*) FROM syscalls") == [(0,)]


def test_a_database_not_labelled_is_merged_but_not_complete(sources: dict[str, Path], tmp_path: Path) -> None:
    """A run database written before the batch labelled its runs cannot show it is its job's: the batch reruns
    the job once, while a merge of that output directory as it is still takes it."""
    from qppsuite.batch import outdir

    old = _labelled(sources["small"], tmp_path / "old.db", None)
    out = write_outdir(tmp_path / "out", [JobSpec("old", "ok", database=old, labelled=False)])
    assert not outdir.is_complete(out / "jobs" / "old", "sha-old", database=True)
    result = merge_batch(out)
    assert result.problems == () and [job.status for job in result.jobs] == ["ok"]
    assert rows(result.path, "SELECT label FROM runs") == [("old",)]


@pytest.mark.parametrize(
    ("started_at", "ended_at", "fits"),
    [
        ("2026-12-06T00:00:01.950+00:00", "2026-12-06T00:00:05.100+00:00", True),  # within the attempt's seconds
        ("2026-12-06T00:00:01+00:00", "2026-12-06T00:00:05+00:00", True),  # a file written before milliseconds
        ("2026-12-06T00:00:00.999+00:00", "2026-12-06T00:00:05.100+00:00", False),  # started before the attempt
        ("2026-12-06T00:00:01.950+00:00", "2026-12-06T00:00:06.000+00:00", False),  # ended after it
    ],
)
def test_a_run_s_milliseconds_are_compared_with_the_attempt_s_seconds(
    started_at: str, ended_at: str, fits: bool
) -> None:
    """runs.started_at/ended_at have milliseconds, result.json's started/ended whole seconds: a run inside its
    attempt is its own, whichever second each side was cut to."""
    from qppsuite.batch import outdir

    result = {"started": "2026-12-06T00:00:01+00:00", "ended": "2026-12-06T00:00:05+00:00"}
    run = {"started_at": started_at, "ended_at": ended_at}
    mismatch = outdir.run_mismatch(result, run)
    assert (mismatch is None) == fits, mismatch
