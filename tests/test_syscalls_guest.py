"""osi_linux + syscalls + syscalls_logger on the real Debian guest, checked against what the guest itself did.

Two boots, shared by module-scoped fixtures: a --cmd whose calls are known
(a uniquely named file written, read back and removed, a background sleep
waited for, a pipe read that blocks), and the full default workload.
"""

import json
import re
from pathlib import Path

import pytest
from console_sink import Console
from oracle.guest import query
from typer.testing import CliRunner

from qppsuite.cli import app
from qppsuite.images.bundle import ImageBundle
from qppsuite.session import RunOptions, RunResult, run

PLUGINS = ["osi_linux", "syscalls", "syscalls_logger"]
FILE = "/tmp/qppsuite-known-5d1c9e.txt"
CONTENT = "qppsuite known content 4711"
KNOWN_CMD = f"""echo "ids $$ $PPID"
printf '{CONTENT}' > {FILE}
cat {FILE}
echo
dd if={FILE} bs=64 count=1 2>/dev/null
echo
rm {FILE}
sleep 0.3 &
echo "bg $!"
wait
(sleep 0.2; echo late) | cat
"""


def _run(image: ImageBundle, db: Path, cmd: str | None) -> tuple[RunResult, str]:
    console = Console()
    result = run(
        RunOptions(
            cmd=cmd, plugins=PLUGINS, plugin_args={"syscalls_logger": {"db": str(db)}}, strict=True, warm=True
        ),
        console,
        image=image,
    )
    assert result.ok, (result.reason, console.text[-2000:])
    return result, console.text


@pytest.fixture(scope="module")
def known(default_image: ImageBundle, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    db = tmp_path_factory.mktemp("known") / "known.db"
    _, console = _run(default_image, db, KNOWN_CMD)
    return db, console


@pytest.fixture(scope="module")
def workload(default_image: ImageBundle, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    db = tmp_path_factory.mktemp("workload") / "workload.db"
    _, console = _run(default_image, db, None)
    return db, console


def _guest_ids(console: str) -> tuple[int, int]:
    match = re.search(r"^ids (\d+) (\d+)\r?$", console, re.M)
    assert match, console[-2000:]
    return int(match[1]), int(match[2])


@pytest.mark.boot
def test_known_file_calls_with_args_returns_and_processes(known: tuple[Path, str]) -> None:
    db, console = known
    shell, shell_parent = _guest_ids(console)
    assert CONTENT in console
    opens = query(db, "SELECT * FROM syscalls WHERE name = 'openat' AND args LIKE ?", f"%{FILE}%")
    by_process = {r["process_name"]: r for r in opens}
    assert set(by_process) == {"sh", "cat", "dd"}, opens
    writer, reader = by_process["sh"], by_process["cat"]
    assert json.loads(writer["args"])["flags"] == "O_WRONLY|O_CREAT|O_TRUNC|O_LARGEFILE"
    assert json.loads(reader["args"])["flags"] == "O_RDONLY|O_LARGEFILE"
    assert (writer["pid"], writer["tid"], writer["ppid"]) == (shell, shell, shell_parent)
    assert reader["ppid"] == shell and reader["pid"] not in (shell, shell_parent)
    assert writer["returned"] == reader["returned"] == 1 and writer["retval"] >= 0 and reader["retval"] >= 0

    (write,) = query(
        db, "SELECT * FROM syscalls WHERE name = 'write' AND pid = ? AND args LIKE ?", shell, f"%{CONTENT}%"
    )
    args = json.loads(write["args"])
    assert (args["buf"], args["count"], write["retval"]) == (CONTENT, len(CONTENT), len(CONTENT))
    assert write["seq"] > writer["seq"] and write["process_name"] == "sh"

    (copy,) = query(db, "SELECT * FROM syscalls WHERE name = 'sendfile64' AND pid = ? AND retval > 0", reader["pid"])
    assert copy["retval"] == len(CONTENT) and json.loads(copy["args"])["in_fd"] == reader["retval"]

    (dd_open,) = query(
        db, "SELECT * FROM syscalls WHERE process_name = 'dd' AND name = 'openat' AND args LIKE ?", f"%{FILE}%"
    )
    (dd_read,) = query(db, "SELECT * FROM syscalls WHERE pid = ? AND name = 'read' AND retval > 0", dd_open["pid"])
    assert json.loads(dd_read["args"])["count"] == 64  # bs=64 (busybox dd reads from the file moved to fd 0)
    assert (json.loads(dd_read["outputs"])["buf"], dd_read["retval"]) == (CONTENT, len(CONTENT))

    (unlink,) = query(db, "SELECT * FROM syscalls WHERE name IN ('unlink', 'unlinkat') AND args LIKE ?", f"%{FILE}%")
    assert unlink["process_name"] == "rm" and unlink["ppid"] == shell and unlink["retval"] == 0

    cat_process = query(db, "SELECT * FROM processes WHERE id = ?", reader["process_id"])[0]
    assert (cat_process["pid"], cat_process["ppid"], cat_process["name"]) == (reader["pid"], shell, "cat")
    names = json.loads(cat_process["names"])  # forked as sh, exec'd busybox (comm "exe"), renamed to cat
    assert names[0] == "sh" and names[-1] == "cat"


@pytest.mark.boot
def test_calls_blocked_while_other_processes_run_pair_with_their_returns(known: tuple[Path, str]) -> None:
    db, console = known
    shell, _ = _guest_ids(console)
    bg = int(re.search(r"^bg (\d+)\r?$", console, re.M)[1])  # type: ignore[index]
    sleeps = "('nanosleep', 'clock_nanosleep', 'clock_nanosleep_time64')"
    (sleep,) = query(db, f"SELECT * FROM syscalls WHERE pid = ? AND name IN {sleeps}", bg)
    assert sleep["process_name"] == "sleep" and sleep["returned"] == 1 and sleep["retval"] == 0
    assert json.loads(sleep["args"])["rqtp"] == {"tv_sec": 0, "tv_nsec": 300_000_000}
    # ash's `wait` blocks in rt_sigsuspend until SIGCHLD, then reaps with wait4(WNOHANG).
    (suspend,) = query(
        db,
        "SELECT * FROM syscalls WHERE pid = ? AND name = 'rt_sigsuspend' AND insn_count < ? AND return_insn_count > ?",
        shell,
        sleep["insn_count"],
        sleep["return_insn_count"],
    )
    assert (suspend["retval"], suspend["errno"]) == (-4, "EINTR")
    (reap,) = query(db, "SELECT * FROM syscalls WHERE pid = ? AND name = 'wait4' AND retval = ?", shell, bg)
    assert reap["insn_count"] > suspend["return_insn_count"]
    # Foreground children: the shell's blocking wait4 spans the child's whole life and returns its pid.
    waits = query(
        db, "SELECT * FROM syscalls WHERE pid = ? AND name = 'wait4' AND json_extract(args, '$.options') = '0'", shell
    )
    spanning = 0
    for wait in waits:
        (exit_call,) = query(db, "SELECT * FROM syscalls WHERE pid = ? AND name = 'exit_group'", wait["retval"])
        assert exit_call["ppid"] == shell and exit_call["insn_count"] < wait["return_insn_count"], (wait, exit_call)
        spanning += wait["insn_count"] < exit_call["insn_count"]  # the child was still running when wait4 began
    assert spanning >= 3


@pytest.mark.boot
def test_pipe_read_blocks_while_the_writer_runs(known: tuple[Path, str]) -> None:
    db, console = known
    assert re.search(r"^late\r?$", console, re.M)
    shell, _ = _guest_ids(console)  # the pipeline's cat is the shell's child (the agent's own cat reads the script)
    sql = "SELECT * FROM syscalls WHERE name = 'read' AND process_name = 'cat' AND ppid = ? AND outputs LIKE '%late%'"
    (read,) = query(db, sql, shell)
    assert read["retval"] == 5 and json.loads(read["outputs"])["buf"] == "late\n"
    echo = query(
        db,
        "SELECT * FROM syscalls WHERE name = 'write' AND args LIKE '%late%' AND insn_count > ? AND insn_count < ?",
        read["insn_count"],
        read["return_insn_count"],
    )
    assert len(echo) == 1 and echo[0]["pid"] != read["pid"] and echo[0]["retval"] == 5


@pytest.mark.boot
def test_workload_children_execs_and_processes(workload: tuple[Path, str]) -> None:
    db, console = workload
    assert "=== qppsuite: processes ===" in console
    assert query(db, "SELECT COUNT(*) AS n FROM syscalls WHERE process_id IS NULL OR pid IS NULL")[0]["n"] == 0
    forks = query(
        db,
        "SELECT * FROM syscalls WHERE name IN ('fork', 'vfork', 'clone', 'clone3') AND child = 0 AND retval > 0",
    )
    assert len(forks) > 20
    pids = {r["pid"] for r in query(db, "SELECT pid FROM processes")}
    missing = [f["retval"] for f in forks if f["retval"] not in pids]
    assert missing == []
    children = {r["parent_seq"]: r for r in query(db, "SELECT * FROM syscalls WHERE child = 1")}
    for fork in forks:
        child = children.get(fork["seq"])
        assert child is not None, fork
        assert (child["pid"], child["ppid"], child["retval"]) == (fork["retval"], fork["pid"], 0)
        # dated at the call, both ways (break test of issue 14: its virtual time was the child's return's)
        assert (child["insn_count"], child["virtual_ns"]) == (fork["insn_count"], fork["virtual_ns"]), (fork, child)
    execs = query(db, "SELECT * FROM syscalls WHERE name = 'execve'")
    assert any(r["ending"] == "exec" for r in execs)
    for row in execs:
        args = json.loads(row["args"])
        assert isinstance(args["filename"], str) and args["filename"], row
        assert isinstance(args["argv"], list) and args["argv"] and all(isinstance(a, str) for a in args["argv"]), row
        assert row["returned"] == 1 or row["ending"] == "exec", row
    # a successful exec renames the process: the new name shows up in the process's names
    renamed = query(db, "SELECT names FROM processes WHERE names LIKE '%\"wc\"%'")
    assert renamed and all(json.loads(r["names"])[-1] == "wc" for r in renamed)


@pytest.mark.boot
def test_query_commands_on_the_workload_database(workload: tuple[Path, str]) -> None:
    db, _ = workload
    runner = CliRunner()
    got = runner.invoke(app, ["syscalls", str(db), "--name", "execve", "--format", "json"])
    assert got.exit_code == 0, got.output
    execs = json.loads(got.output)
    assert execs and {r["name"] for r in execs} == {"execve"}
    tree = runner.invoke(app, ["processes", str(db)])
    assert tree.exit_code == 0 and "init pid 1," in tree.output
    stats = runner.invoke(app, ["stats", str(db), "-f", "json"])
    total = query(db, "SELECT COUNT(*) AS n FROM syscalls")[0]["n"]
    assert json.loads(stats.output)["calls"] == total
    refused = runner.invoke(app, ["query", str(db), "DELETE FROM syscalls"])
    assert refused.exit_code != 0 and "read-only" in str(refused.exception)
    assert query(db, "SELECT COUNT(*) AS n FROM syscalls")[0]["n"] == total
