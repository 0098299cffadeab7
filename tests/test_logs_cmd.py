"""qppsuite syscalls|processes|query|stats on a database written by the logger's own writer."""

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_entry import run_main
from typer.testing import CliRunner

from qppsuite.cli import app
from qppsuite.plugins.syscalls_logger.database import SYSCALL_ROW, SyscallDatabase
from qppsuite.plugins.syscalls_logger.reader import LogDatabaseError

runner = CliRunner()


def _row(seq: int, proc: dict[str, Any], name: str, retval: int, errno: str | None = None) -> dict[str, Any]:
    return {
        "seq": seq,
        "insn_count": seq * 100,
        "pc": 0x1000,
        "thumb": 0,
        "process_id": proc["id"],
        "pid": proc["pid"],
        "tid": proc["pid"],
        "ppid": proc["ppid"],
        "process_name": proc["name"],
        "number": 0,
        "name": name,
        "raw_args": "[0, 0, 0, 0, 0, 0, 0]",
        "args": "{}",
        "retval": retval,
        "errno": errno,
        "returned": 1,
        "child": 0,
        "asid": 0x4000,
        "text": f"{name}() = {retval if errno is None else '-1 ' + errno}",
    }


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("logs") / "calls.db"
    writer = SyscallDatabase(path, {"image": "test"})
    procs = []
    for pid, ppid, name, start in [(1, 0, "init", 10), (50, 1, "sh", 20), (60, 50, "cat", 30)]:
        procs.append(
            {
                "id": writer.new_process_id(),
                "pid": pid,
                "ppid": ppid,
                "name": name,
                "names": json.dumps(["sh", name] if name == "cat" else [name]),
                "start_time": start,
                "first_seen_insn": 0,
                "last_seen_insn": 0,
                "syscall_count": 0,
            }
        )
    calls = [(procs[0], "wait4", 50), (procs[1], "openat", -2, "ENOENT"), (procs[1], "openat", 3)]
    calls += [(procs[2], "read", 5), (procs[2], "read", 0), (procs[2], "openat", -13, "EACCES")]
    for seq, (proc, *rest) in enumerate(calls, 1):
        proc["syscall_count"] += 1
        row = _row(seq, proc, *rest)
        if seq == 4:
            row["process_name"] = "sh"  # pid 60's first call, before its exec of cat
        writer.add(tuple(map(row.get, SYSCALL_ROW)), proc)
    writer.end_run({"stop_reason": "poweroff"})
    writer.close()
    return path


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_syscalls_filters_as_json(db: Path) -> None:
    got = json.loads(invoke("syscalls", str(db), "--name", "openat", "--format", "json"))
    assert [(r["seq"], r["pid"], r["errno"]) for r in got] == [(2, 50, "ENOENT"), (3, 50, None), (6, 60, "EACCES")]
    failed = json.loads(invoke("syscalls", str(db), "--failed", "--process", "cat", "-f", "json"))
    assert [r["seq"] for r in failed] == [6]
    assert [r["seq"] for r in json.loads(invoke("syscalls", str(db), "--pid", "60", "--limit", "2", "-f", "json"))] == [
        4,
        5,
    ]


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ("ca", "did you mean cat?"),  # a name it starts, as python for python3
        ("int", "did you mean init?"),  # a close spelling
        ("\x1b[31mnope", "named \\x1b[31mnope"),  # guest-like text stays text
    ],
)
def test_a_process_name_no_call_was_made_under_is_one_line_with_the_names_it_may_mean(
    db: Path, given: str, said: str
) -> None:
    code, output = run_main(["syscalls", str(db), "--process", given])
    assert code == 1 and "Traceback" not in output, output
    (line,) = output.strip().splitlines()
    assert line.startswith("error: --process: no call of run 1 was made by a process named") and said in line, line


def test_a_process_name_that_is_not_utf8_is_chosen_as_the_views_show_it_or_raw(db: Path, tmp_path: Path) -> None:
    """Break test of issue 14: `--process '\\xff\\xfe\\xfdbad'` found nothing, and the raw bytes blamed the file."""
    import shutil
    import sqlite3

    copy = tmp_path / "named.db"
    shutil.copy(db, copy)
    with sqlite3.connect(copy) as conn:
        conn.execute("""UPDATE syscalls SET process_name = '{"hex": "fffefd626164"}' WHERE pid = 60""")
    for given in ("\\xff\\xfe\\xfdbad", "\udcff\udcfe\udcfdbad"):  # as shown; as a shell passes the raw bytes
        shown = json.loads(invoke("syscalls", str(copy), "--process", given, "--format", "json"))
        assert [r["seq"] for r in shown] == [4, 5, 6]
        assert {r["process_name"]["hex"] for r in shown} == {"fffefd626164"}  # lossless, as `args` holds such text
    code, output = run_main(["syscalls", str(copy), "--process", "\\xff"])
    assert code == 1 and "did you mean \\xff\\xfe\\xfdbad?" in output, output
    code, output = run_main(["syscalls", str(copy), "--process", ""])
    assert code == 1 and output.startswith("error: --process: give a process name"), output


def test_processes_gives_a_name_that_is_not_utf8_as_the_hex_object_in_json_and_escaped_in_the_table(
    db: Path, tmp_path: Path
) -> None:
    """Left by issue 14: `processes --format json` gave such a name as escaped text (`\\xff...`), which a
    name really spelt with a backslash also gives; `syscalls --format json` gives the {"hex"} object."""
    import shutil
    import sqlite3

    copy = tmp_path / "named.db"
    shutil.copy(db, copy)
    stored = '{"hex": "fffe626164"}'
    with sqlite3.connect(copy) as conn:
        process_id, run_id, pid = conn.execute("SELECT id, run_id, pid FROM processes ORDER BY id").fetchone()
        conn.execute("UPDATE processes SET name = ?, names = json_array('sh', json(?)) WHERE id = ?",
                     (stored, stored, process_id))
        conn.execute("INSERT INTO threads (run_id, process_id, tid, name, names, syscall_count) "
                     "VALUES (?, ?, ?, ?, json_array(json(?)), 0)", (run_id, process_id, pid, stored, stored))
    records = json.loads(invoke("processes", str(copy), "--threads", "--format", "json"))
    (record,) = [r for r in records if r["pid"] == pid]
    assert record["name"] == {"hex": "fffe626164"} and record["names"] == ["sh", {"hex": "fffe626164"}]
    assert [t["name"] for t in record["threads"] if t["tid"] == pid] == [{"hex": "fffe626164"}]
    table = invoke("processes", str(copy))
    assert "\\xff\\xfebad" in table and "hex" not in table


def test_a_name_is_chosen_as_the_table_shows_it_and_a_thread_s_own_name_chooses_its_calls(
    db: Path, tmp_path: Path
) -> None:
    """Break test of issue 14: `--process 'k<script>\\x01'` (as the table shows the name) was refused with a
    hint naming that same spelling, and a thread renamed by prctl could not be chosen."""
    import shutil
    import sqlite3

    copy = tmp_path / "named.db"
    shutil.copy(db, copy)
    with sqlite3.connect(copy) as conn:
        conn.execute("UPDATE syscalls SET process_name = 'k<script>' || char(1) WHERE pid = 50")
        conn.execute("UPDATE syscalls SET thread_name = 'worker' WHERE seq = 5")
    for given in ("k<script>\\x01", "k<script>\x01"):  # as shown; raw
        shown = json.loads(invoke("syscalls", str(copy), "--process", given, "--format", "json"))
        assert [r["seq"] for r in shown] == [2, 3]
    assert [r["seq"] for r in json.loads(invoke("syscalls", str(copy), "--process", "worker", "-f", "json"))] == [5]


def test_a_moment_outside_the_calls_span_is_one_line_giving_the_span(db: Path) -> None:
    """Break test of issue 14: `--since 99999999999999` printed "0 system calls" with no word of why."""
    for args, said in [
        (["--since", "99999999999999"], "--since: no call of run 1 is after 99,999,999,999,999 instructions"),
        (["--until", "50"], "--until: no call of run 1 is before 50 instructions"),
    ]:
        code, output = run_main(["syscalls", str(db), *args])
        assert code == 1 and output.startswith(f"error: {said}; its calls span 100 instructions to 600"), output
    assert [r["seq"] for r in json.loads(invoke("syscalls", str(db), "--since", "600", "-f", "json"))] == [6]


@pytest.mark.parametrize("option", ["--pid", "--tid"])
def test_a_pid_or_tid_no_call_was_made_by_is_one_line(db: Path, option: str) -> None:
    """Break test of issue 14: `--pid 9999` printed "0 system calls" and exit 0, where --follow said there was none."""
    code, output = run_main(["syscalls", str(db), option, "9999"])
    assert code == 1 and output == f"error: {option}: no call of run 1 was made by {option[2:]} 9999\n", output


def test_a_thread_s_id_given_as_a_pid_is_pointed_to_tid(db: Path, tmp_path: Path) -> None:
    """Re-check of issue 14: `--pid 116`, a thread's id as strace -f prints it, said only that no call was made."""
    import shutil
    import sqlite3

    copy = tmp_path / "threads.db"
    shutil.copy(db, copy)
    with sqlite3.connect(copy) as conn:
        conn.execute("UPDATE syscalls SET tid = 77 WHERE pid = 60")
    code, output = run_main(["syscalls", str(copy), "--pid", "77"])
    said = "error: --pid: no call of run 1 was made by pid 77; thread 77 made 3 calls (--tid 77)\n"
    assert code == 1 and output == said, output


def test_syscalls_csv_and_table(db: Path) -> None:
    parsed = list(csv.DictReader(io.StringIO(invoke("syscalls", str(db), "--format", "csv"))))
    assert [r["name"] for r in parsed] == ["wait4", "openat", "openat", "read", "read", "openat"]
    assert parsed[0]["process_name"] == "init"
    table = invoke("syscalls", str(db), "--pid", "50")
    assert "openat() = -1 ENOENT" in table and "2 system calls" in table and "wait4" not in table


def test_processes_tree_nests_children_with_counts(db: Path) -> None:
    out = invoke("processes", str(db))
    lines = out.splitlines()
    init = next(i for i, line in enumerate(lines) if "init pid 1," in line)
    sh = next(i for i, line in enumerate(lines) if "sh pid 50," in line)
    cat = next(i for i, line in enumerate(lines) if "cat (was sh) pid 60," in line)
    assert init < sh < cat
    assert lines[cat].index("cat") > lines[sh].index("sh") > lines[init].index("init")  # deeper indentation
    assert "3 syscalls" in lines[cat]
    flat = json.loads(invoke("processes", str(db), "-f", "json"))
    parent = {r["pid"]: r["parent_id"] for r in flat}
    ids = {r["pid"]: r["id"] for r in flat}
    assert parent == {1: None, 50: ids[1], 60: ids[50]}


def test_stats_rates(db: Path) -> None:
    got = json.loads(invoke("stats", str(db), "--format", "json"))
    assert (got["calls"], got["failed"], got["processes"]) == (6, 2, 3)
    top = {r["name"]: (r["calls"], r["failed"], r["failure_rate"]) for r in got["top_syscalls"]}
    assert top["openat"] == (3, 2, round(2 / 3, 4)) and top["read"] == (2, 0, 0.0)
    assert got["top_processes"][0]["process_name"] == "cat", "a process is named as it ended, not as it began"
    assert "33.3%" in invoke("stats", str(db))


def test_query_reads_and_refuses_writes(db: Path) -> None:
    out = invoke("query", str(db), "SELECT name, COUNT(*) AS n FROM syscalls GROUP BY name ORDER BY name", "-f", "csv")
    assert out.splitlines() == ["name,n", "openat,3", "read,2", "wait4,1"]
    for sql in ("DELETE FROM syscalls", "CREATE TABLE x (a)", "UPDATE runs SET image = 'x'"):
        result = runner.invoke(app, ["query", str(db), sql])
        assert isinstance(result.exception, LogDatabaseError), sql
        assert "read-only" in str(result.exception)
    assert json.loads(invoke("query", str(db), "SELECT COUNT(*) AS n FROM syscalls", "-f", "json")) == [{"n": 6}]


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: None, "no syscall database at"),
        (lambda p: p.write_bytes(b"not sqlite at all" * 100), "is not an SQLite database"),
        (lambda p: __import__("sqlite3").connect(p).execute("CREATE TABLE t (a)").connection.commit(), "no table"),
    ],
)
def test_bad_paths_are_one_red_line(tmp_path: Path, make: Any, expected: str) -> None:
    path = tmp_path / "x.db"
    make(path)
    proc = subprocess.run(
        [sys.executable, "-c", "from qppsuite.cli import main; main()", "syscalls", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_unknown_run_names_the_runs(db: Path) -> None:
    result = runner.invoke(app, ["stats", str(db), "--run", "9"])
    assert isinstance(result.exception, LogDatabaseError) and "runs: 1" in str(result.exception)
