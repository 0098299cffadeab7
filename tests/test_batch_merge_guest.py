"""The merged database of real guest runs: three jobs of the oracle image with different commands and plugins
(proc_events, file_activity, one without syscalls_logger), a failed job and one not run, merged as
``qppsuite batch`` leaves them; the query commands across the runs; docs/batch.md's examples as written."""

from __future__ import annotations

import json
import re
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from batch_outdir import JobSpec, check_references, content, rows, tables_with_runs, write_outdir
from cli_entry import run_main
from conftest import ORACLE_RAM_MIB
from console_sink import Console
from oracle.guest import logged_run
from typer.testing import CliRunner

from qppsuite.batch.merge import merge
from qppsuite.cli import app
from qppsuite.images.bundle import ImageBundle
from qppsuite.plugins.file_activity import FileActivity
from qppsuite.plugins.proc_events import ProcEvents
from qppsuite.plugins.syscalls_logger.database import ROW_ID_STRIDE
from qppsuite.session import RunOptions, run

DOC = Path(__file__).resolve().parents[1] / "docs" / "batch.md"
runner = CliRunner(env={"COLUMNS": "200"})

#: The image has no /etc/shadow: the job writes one, then reads it (two opens of it, both successful).
READER = "echo 'root:*:19000:0:99999:7:::' > /etc/shadow; cat /etc/shadow > /dev/null; grep -c root /etc/passwd"
TRACER = "strace -f -o /dev/null sh -c 'echo traced'"
FILES = "mkdir /tmp/b; echo x > /tmp/b/f; mv /tmp/b/f /tmp/b/g; rm /tmp/b/g; rmdir /tmp/b"


@pytest.fixture(scope="module")
def outdir(oracle_image: ImageBundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A batch's output directory as the runner leaves it, with the databases of three real runs."""
    sources = tmp_path_factory.mktemp("sources")
    reader = logged_run(oracle_image, READER, sources / "reader.db", extra=[ProcEvents, FileActivity]).db
    tracer = logged_run(oracle_image, TRACER, sources / "tracer.db", extra=[ProcEvents]).db
    files = sources / "files.db"
    console = Console()
    result = run(
        RunOptions(
            cmd=FILES,
            plugins=["osi_linux", "syscalls", FileActivity],  # type: ignore[list-item]
            plugin_args={"file_activity": {"db": str(files)}},
            strict=True,
            ram_mib=ORACLE_RAM_MIB,
            warm=True,
        ),
        console,
        image=oracle_image,
    )
    assert result.ok, (result.reason, console.text[-2000:])
    return write_outdir(
        tmp_path_factory.mktemp("batch") / "batch-samples",
        [
            JobSpec("reader", "ok", database=reader, stop_reason="poweroff"),
            JobSpec("tracer", "ok", database=tracer, stop_reason="poweroff"),
            JobSpec("files-only", "ok", database=files, stop_reason="poweroff"),
            JobSpec("panicked", "failed", "kernel panic", stop_reason="panic"),
            JobSpec("queued", None),
        ],
    )


@pytest.fixture(scope="module")
def merged(outdir: Path) -> Path:
    return merge(outdir)


def source(outdir: Path, label: str) -> Path:
    return outdir / "jobs" / label / "run.sqlite"


@pytest.mark.boot
def test_every_job_is_a_run_with_its_status(merged: Path) -> None:
    assert rows(merged, "SELECT id, label, batch_status, batch_reason, stop_reason FROM runs ORDER BY id") == [
        (1, "reader", "ok", None, "poweroff"),
        (2, "tracer", "ok", None, "poweroff"),
        (3, "files-only", "ok", None, "poweroff"),
        (4, "panicked", "failed", "kernel panic", "panic"),
        (5, "queued", "not run", "it never ran", None),
    ]


@pytest.mark.boot
@pytest.mark.parametrize("run_id, label", [(1, "reader"), (2, "tracer"), (3, "files-only")])
def test_each_run_has_its_databases_rows_in_every_table(merged: Path, outdir: Path, run_id: int, label: str) -> None:
    db = source(outdir, label)
    (source_run,) = rows(db, "SELECT id FROM runs")[0]
    tables = tables_with_runs(db)
    assert {"processes", "threads", "syscalls"} <= set(tables)
    assert set(tables) <= set(tables_with_runs(merged))
    for table in tables:
        theirs = rows(db, f"SELECT COUNT(*) FROM [{table}] WHERE run_id = ?", source_run)
        assert rows(merged, f"SELECT COUNT(*) FROM [{table}] WHERE run_id = ?", run_id) == theirs, table
    stride = (run_id - source_run) * ROW_ID_STRIDE
    plugin_tables = [t for t in tables if t not in ("processes", "threads", "syscalls")]
    assert plugin_tables  # proc_events, file_activity, file_ops
    ids = "SELECT id FROM processes WHERE run_id = ? ORDER BY id"
    assert rows(merged, ids, run_id) == [(i + stride,) for (i,) in rows(db, ids, source_run)]
    for table in plugin_tables:  # their own ids in the run's stride, and the processes they name moved with them
        pairs = f"SELECT id, process_id FROM [{table}] WHERE run_id = ? ORDER BY id"
        moved = [(i + stride, None if p is None else p + stride) for i, p in rows(db, pairs, source_run)]
        assert rows(merged, pairs, run_id) == moved, table
    calls = "SELECT seq, pid, tid, name, text FROM syscalls WHERE run_id = ? ORDER BY seq"
    assert rows(merged, calls, run_id) == rows(db, calls, source_run)


@pytest.mark.boot
def test_every_reference_names_a_row_of_its_own_run(merged: Path) -> None:
    check_references(merged)
    assert rows(merged, "PRAGMA integrity_check") == [("ok",)]
    assert rows(
        merged,
        "SELECT COUNT(*) FROM syscalls s LEFT JOIN processes p ON p.id = s.process_id AND p.run_id = s.run_id "
        "WHERE p.id IS NULL",
    ) == [(0,)]


@pytest.mark.boot
def test_merging_again_gives_the_same_content(merged: Path) -> None:
    before = content(merged)
    assert content(merge(merged.parent)) == before


@pytest.mark.boot
def test_the_views_take_a_label_and_all(merged: Path) -> None:
    for args in (
        ["stats", "--run", "reader"],
        ["stats", "--run", "files-only"],
        ["processes", "--run", "tracer", "--threads"],
        ["processes", "--run", "all"],
        ["syscalls", "--run", "reader", "--name", "openat"],
        ["syscalls", "--run", "all", "--failed"],
        ["report", "--run", "tracer", "-o", str(merged.parent / "tracer.html")],
    ):
        code, output = run_main([args[0], str(merged), *args[1:]])
        assert code == 0, (args, output)
    summary = json.loads(runner.invoke(app, ["stats", str(merged), "--format", "json"]).stdout)
    assert [(r["label"], r["status"], r["syscalls"] is None, r["processes"] is None) for r in summary] == [
        ("reader", "ok", False, False),
        ("tracer", "ok", False, False),
        ("files-only", "ok", True, False),  # no syscalls_logger: no calls recorded
        ("panicked", "failed", True, True),
        ("queued", "not run", True, True),
    ]
    assert summary[0]["syscalls"] == rows(merged, "SELECT COUNT(*) FROM syscalls WHERE run_id = 1")[0][0]
    tree = runner.invoke(app, ["processes", str(merged), "--run", "reader"]).stdout
    assert tree.startswith("run 1 [reader]: ") and re.search(r"\bcat\b", tree)


@pytest.mark.boot
def test_which_samples_called_ptrace_and_which_opened_etc_shadow(merged: Path) -> None:
    traced = json.loads(
        runner.invoke(app, ["syscalls", str(merged), "--run", "all", "--name", "ptrace", "--format", "json"]).stdout
    )
    assert traced and {call["label"] for call in traced} == {"tracer"}
    assert {call["process_name"] for call in traced} == {"strace"}
    opened = runner.invoke(
        app,
        [
            "query",
            str(merged),
            "SELECT DISTINCT r.label FROM syscalls s JOIN runs r ON r.id = s.run_id WHERE s.name = 'openat' "
            "AND json_extract(s.args, '$.filename') = '/etc/shadow' AND s.errno IS NULL",
            "--format",
            "json",
        ],
    )
    assert json.loads(opened.stdout) == [{"label": "reader"}]


def _doc_commands() -> list[str]:
    """The commands of docs/batch.md's "Merged database" section, in order."""
    section = DOC.read_text().split("## Merged database", 1)[1]
    blocks = re.findall(r"^```text\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    return [line.removeprefix("$ ") for block in blocks for line in block.splitlines() if "qppsuite " in line]


@pytest.mark.boot
def test_the_docs_examples_run_as_written(merged: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(merged.parent.parent)  # the docs' paths: batch-samples/batch.sqlite
    commands = _doc_commands()
    assert len(commands) >= 8
    outputs: dict[str, str] = {}
    for command in commands:
        words = shlex.split(command)
        assert words[0] == "qppsuite", command
        done = runner.invoke(app, words[1:])
        assert done.exit_code == 0, (command, done.output)
        outputs[command] = done.stdout
    said = next(o for c, o in outputs.items() if "batch merge" in c)
    assert said == "batch-samples/batch.sqlite: 5 runs (3 ok, 1 failed, 1 not run)\n"
    ptrace = next(o for c, o in outputs.items() if "--name ptrace" in c)
    assert {line.split()[0] for line in ptrace.splitlines()[1:-1]} == {"tracer"}
    shadow = [o for c, o in outputs.items() if "/etc/shadow" in c]
    assert all("reader" in o and "tracer" not in o for o in shadow), shadow
    failed = next(o for c, o in outputs.items() if "batch_status != 'ok'" in c)
    assert "kernel panic" in failed and "it never ran" in failed
    assert next(o for c, o in outputs.items() if c.endswith("batch.sqlite")).startswith(
        "5 runs: 3 ok, 1 failed, 1 not run\n"
    )
    assert Path("tracer.html").is_file()
    with sqlite3.connect(merged) as conn:  # the docs' file is the merged one, as merged before
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone() == (5,)
    conn.close()


REAL_BATCH = """
defaults:
  budget: {timeout: 120}
jobs:
  - {label: echo, cmd: "echo hello"}
  - label: reader
    cmd: "cat /etc/passwd > /dev/null"
    plugins: [osi_linux, syscalls, syscalls_logger, proc_events, file_activity]
  - {label: no-logger, cmd: "ls /etc > /dev/null", plugins: [osi_linux, syscalls, file_activity]}
  - {label: panic, cmd: "echo c > /proc/sysrq-trigger"}
  - {label: spin, cmd: "while :; do :; done", budget: {instructions: 350000000}}
"""


@pytest.mark.boot
def test_a_real_batch_is_merged_with_every_job_and_its_status(default_image: ImageBundle, tmp_path: Path) -> None:
    """`qppsuite batch` merges at its end: each job's result.json is its runs row, each run.sqlite its rows."""
    (tmp_path / "jobs.yaml").write_text(REAL_BATCH)
    done = subprocess.run(
        [sys.executable, "-m", "qppsuite", "batch", "jobs.yaml", "--pool", "-j", "2"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 1 and "5 jobs: 3 ok, 2 failed, 0 not run" in done.stderr, done.stderr
    out = tmp_path / "batch-jobs"
    merged = out / "batch.sqlite"
    results = [json.loads(p.read_text()) for p in sorted(out.glob("jobs/*/result.json"))]
    assert sorted(rows(merged, "SELECT label, batch_status, batch_reason, stop_reason FROM runs")) == sorted(
        (r["label"], r["status"], r["reason"], r["stop_reason"]) for r in results
    )
    for run_id, label in rows(merged, "SELECT id, label FROM runs"):
        db = out / "jobs" / label / "run.sqlite"
        for table in tables_with_runs(db):
            theirs = rows(db, f"SELECT COUNT(*) FROM [{table}]")
            assert rows(merged, f"SELECT COUNT(*) FROM [{table}] WHERE run_id = ?", run_id) == theirs, (label, table)
    assert {"proc_events", "file_activity"} <= set(tables_with_runs(merged))
    check_references(merged)
    before = content(merged)
    again = subprocess.run(
        [sys.executable, "-m", "qppsuite", "batch", "merge", str(out)], capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0 and again.stdout == f"{merged}: 5 runs (3 ok, 2 failed, 0 not run)\n", again
    assert content(merged) == before
