"""syscalls_logger without a guest: syscalls' callbacks fired by hand, a stand-in osi_linux, a real SQLite file."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from syscall_harness import BLOCKED_TASK, STRING_AT, FakeOsi, Harness, NoMachineCore, rows

from qppsuite.core.qpp import QPP
from qppsuite.errors import PluginError
from qppsuite.plugins.osi_linux.model import OsiProcess


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    with QPP(None) as qpp:
        qpp.add_builtin(NoMachineCore())
        qpp.add_builtin(FakeOsi())
        qpp.load_all(["syscalls", "syscalls_logger"], {"syscalls_logger": {"db": str(tmp_path / "t.db"), "batch": "2"}})
        yield Harness(qpp)


def test_call_and_return_become_one_row_with_the_callers_process(harness: Harness, tmp_path: Path) -> None:
    openat = harness.ctx("openat", (0xFFFFFF9C, STRING_AT, 0o101, 0o644))
    harness.fire("on_syscall", openat)
    harness.osi.process = OsiProcess(200, 200, 100, "other", 0x8000, 0xC2000000, 6_000, False)  # a switch
    harness.fire("on_syscall_return", openat, 3)
    harness.fire("on_syscall_return", harness.ctx("getpid", ()), 200)  # call never seen: no row
    harness.qpp.unload_all()
    (row,) = rows(tmp_path / "t.db", "SELECT * FROM syscalls")
    assert (row["pid"], row["tid"], row["ppid"], row["process_name"]) == (100, 100, 1, "sh")
    assert json.loads(row["args"]) == {
        "dfd": -100,  # AT_FDCWD, a number in storage
        "filename": "/tmp/unique-name",
        "flags": "O_WRONLY|O_CREAT",
        "mode": 0o644,
    }
    assert (row["retval"], row["errno"], row["returned"]) == (3, None, 1)
    assert row["text"] == 'openat(AT_FDCWD, "/tmp/unique-name", O_WRONLY|O_CREAT, 0644) = 3'
    (proc,) = rows(tmp_path / "t.db", "SELECT * FROM processes")
    assert (proc["id"], proc["pid"], proc["name"], proc["syscall_count"]) == (row["process_id"], 100, "sh", 1)
    (run,) = rows(tmp_path / "t.db", "SELECT * FROM runs")
    assert run["syscall_count"] == 1 and run["ended_at"] is not None


def test_errors_noreturn_and_fork_children(harness: Harness, tmp_path: Path) -> None:
    bad = harness.ctx("openat", (0xFFFFFF9C, 0x4, 0, 0))
    harness.fire("on_syscall", bad)
    harness.fire("on_syscall_return", bad, -14)
    fork = harness.ctx("fork", ())
    harness.fire("on_syscall", fork)
    harness.fire("on_syscall_return", fork, 300)
    harness.osi.process = OsiProcess(300, 300, 100, "sh", 0x8000, 0xC3000000, 7_000, False)
    harness.osi.tid = 300
    child = harness.ctx("fork", (), child=True, parent_seq=fork.seq, seq=99)
    harness.fire("on_syscall_return", child, 0)
    execve = harness.ctx("execve", (STRING_AT, 0, 0))
    harness.fire("on_syscall", execve)
    execve.noreturn, execve.ending = True, "exec"
    harness.fire("on_syscall_noreturn", execve)
    harness.osi.process = OsiProcess(300, 300, 100, "cat", 0x9000, 0xC3000000, 7_000, False)
    exit_group = harness.ctx("exit_group", (0,), noreturn=True, ending="exit")
    harness.fire("on_syscall", exit_group)
    harness.fire("on_syscall_noreturn", exit_group)
    harness.qpp.unload_all()
    got = rows(
        tmp_path / "t.db",
        "SELECT seq, pid, name, retval, errno, returned, ending, child, args FROM syscalls ORDER BY seq",
    )
    by_seq = {r["seq"]: r for r in got}
    assert by_seq[bad.seq]["errno"] == "EFAULT" and by_seq[bad.seq]["retval"] == -14
    assert json.loads(by_seq[bad.seq]["args"])["filename"] == {"error": "bad address 0x4"}
    assert (by_seq[fork.seq]["pid"], by_seq[fork.seq]["retval"]) == (100, 300)
    assert (by_seq[99]["pid"], by_seq[99]["retval"], by_seq[99]["child"]) == (300, 0, 1)
    assert (by_seq[execve.seq]["returned"], by_seq[execve.seq]["ending"]) == (0, "exec")
    assert by_seq[exit_group.seq]["retval"] is None and by_seq[exit_group.seq]["ending"] == "exit"
    procs = rows(tmp_path / "t.db", "SELECT pid, name, names FROM processes ORDER BY pid")
    assert [(p["pid"], p["name"], json.loads(p["names"])) for p in procs] == [
        (100, "sh", ["sh"]),
        (300, "cat", ["sh", "cat"]),
    ]


def test_a_failing_plugin_mid_run_leaves_the_committed_batches(harness: Harness, tmp_path: Path) -> None:
    for _ in range(5):
        ctx = harness.ctx("getpid", ())
        harness.fire("on_syscall", ctx)
        harness.fire("on_syscall_return", ctx, 100)
    # batch=2: four rows are committed while the run is still going
    assert len(rows(tmp_path / "t.db", "SELECT seq FROM syscalls")) == 4
    harness.qpp.unload_all()
    assert len(rows(tmp_path / "t.db", "SELECT seq FROM syscalls")) == 5


def test_a_call_found_blocked_at_the_start_is_its_tasks_not_currents(harness: Harness, tmp_path: Path) -> None:
    wait = harness.ctx("wait4", (0xFFFFFFFF, 0, 0, 0), task=BLOCKED_TASK)  # what syscalls makes of init's wait4
    harness.fire("on_syscall", wait)
    seen = harness.ctx("getpid", ())
    harness.fire("on_syscall", seen)
    harness.fire("on_syscall_return", seen, 100)
    harness.fire("on_syscall_return", wait, 100)
    harness.qpp.unload_all()
    got = rows(tmp_path / "t.db", "SELECT seq, pid, process_name, found_blocked, retval FROM syscalls ORDER BY seq")
    assert got == [
        {"seq": wait.seq, "pid": 1, "process_name": "init", "found_blocked": 1, "retval": 100},
        {"seq": seen.seq, "pid": 100, "process_name": "sh", "found_blocked": 0, "retval": 100},
    ]
    (run,) = rows(tmp_path / "t.db", "SELECT started_from FROM runs")
    assert run == {"started_from": None}  # no machine, so no snapshot label: as a run that booted


def test_blocked_calls_at_the_end_are_written_as_pending(harness: Harness, tmp_path: Path) -> None:
    wait = harness.ctx("wait4", (0xFFFFFFFF, 0, 0, 0))
    harness.fire("on_syscall", wait)
    harness.qpp.unload_all()  # no stop(): e.g. the host died before the guest stopped
    (row,) = rows(tmp_path / "t.db", "SELECT returned, ending FROM syscalls")
    assert row == {"returned": 0, "ending": "pending"}


def test_unwritable_database_fails_at_load(tmp_path: Path) -> None:
    target = tmp_path / "no-such-dir" / "x.db"
    with QPP(None) as qpp:
        qpp.add_builtin(NoMachineCore())
        qpp.add_builtin(FakeOsi())
        with pytest.raises(PluginError) as err:
            qpp.load_all(["syscalls", "syscalls_logger"], {"syscalls_logger": {"db": str(target)}})
    assert str(target) in str(err.value) and "\n" not in str(err.value)


def test_text_format_writes_one_line_per_call(tmp_path: Path) -> None:
    out = tmp_path / "calls.txt"
    with QPP(None) as qpp:
        qpp.add_builtin(NoMachineCore())
        qpp.add_builtin(FakeOsi())
        qpp.load_all(["syscalls", "syscalls_logger"], {"syscalls_logger": {"format": "text", "out": str(out)}})
        harness = Harness(qpp)
        ctx = harness.ctx("openat", (0xFFFFFF9C, STRING_AT, 0, 0))
        harness.fire("on_syscall", ctx)
        harness.fire("on_syscall_return", ctx, -2)
    assert out.read_text() == (
        'Syscall at pc 0x76f0a1c0: openat(AT_FDCWD, "/tmp/unique-name", O_RDONLY) = -1 ENOENT: '
        "Process 'sh', pid 100, tid 100, ppid 1\n"
    )


def test_only_command_keeps_a_fork_child_that_runs_after_its_parent_exited(tmp_path: Path) -> None:
    """Break test 14b (found re-testing 2): `sleep 100 & echo hi` under only=command lost the sleep: its shell
    exited before the child first ran, reparented to init (ppid 1), and its clone had returned already."""
    import struct

    argv_at, strings = 0x20000, 0x20100
    argv = [b"/bin/sh", b"/tmp/.qppsuite/script"]
    with QPP(None) as qpp:
        qpp.add_builtin(NoMachineCore())
        qpp.add_builtin(FakeOsi())
        args = {"syscalls_logger": {"db": str(tmp_path / "c.db"), "only": "command"}}
        qpp.load_all(["syscalls", "syscalls_logger"], args)
        harness = Harness(qpp)
        harness.memory.put(argv_at, struct.pack("<3I", strings, strings + 8, 0))
        harness.memory.put(strings, b"\0".join(argv) + b"\0")
        harness.osi.process = OsiProcess(86, 86, 80, "sh", 0x4000, 0xC1000000, 5_000, False)
        harness.osi.tid = 86
        harness.returned(harness.made(harness.ctx("getpid", ())), 86)  # the agent's: not logged
        harness.ended(harness.made(harness.ctx("execve", (STRING_AT, argv_at, 0))), "exec", 0)
        clone = harness.made(harness.ctx("clone", (0x01200011, 0, 0, 0, 0)))
        harness.returned(clone, 87)
        harness.ended(harness.made(harness.ctx("exit_group", (0,))), "exit")
        harness.osi.process = OsiProcess(87, 87, 1, "sh", 0x8000, 0xC3000000, 7_000, False)  # init's child now
        harness.osi.tid = 87
        harness.returned(harness.ctx("clone", (0x01200011,), child=True, parent_seq=clone.seq), 0)
        harness.returned(harness.made(harness.ctx("getpid", ())), 87)
        qpp.unload_all()
    logged = [(r["pid"], r["name"]) for r in rows(tmp_path / "c.db", "SELECT pid, name FROM syscalls ORDER BY seq")]
    assert logged == [(86, "execve"), (86, "clone"), (86, "exit_group"), (87, "clone"), (87, "getpid")]


def _script_argv(harness: Harness) -> int:
    """Guest memory holding ``argv`` of the agent's ``sh /tmp/.qppsuite/script``; its address."""
    import struct

    argv_at, strings = 0x20000, 0x20100
    harness.memory.put(argv_at, struct.pack("<3I", strings, strings + 8, 0))
    harness.memory.put(strings, b"/bin/sh\0/tmp/.qppsuite/script\0")
    return argv_at


@pytest.mark.parametrize("only", ["all", "command"])
def test_every_process_row_says_whether_it_is_the_commands(tmp_path: Path, only: str) -> None:
    """Issue 15: a batch's 'which samples opened /etc/shadow' blamed a job for the agent's file delivery, since
    nothing in the database told the command's processes from the agent's.  processes.command does, with or
    without only=command: the agent and the children it forks are 0, the script's shell from its execve on 1,
    its children 1 (a fork child that first runs after its shell exited too), and a row another plugin creates
    before the logger sees the process is decided by its parent, then kept up to date."""
    with QPP(None) as qpp:
        qpp.add_builtin(NoMachineCore())
        qpp.add_builtin(FakeOsi())
        qpp.load_all(["syscalls", "syscalls_logger"], {"syscalls_logger": {"db": str(tmp_path / "c.db"), "only": only}})
        harness, osi = Harness(qpp), qpp.get("osi_linux")
        run_db = qpp.import_function("syscalls_logger", "get_run_database")()
        argv_at = _script_argv(harness)

        def becomes(pid: int, ppid: int, start: int) -> OsiProcess:
            osi.process, osi.tid = OsiProcess(pid, pid, ppid, "sh", 0x4000, 0xC1000000 + pid, start, False), pid
            return osi.process

        becomes(80, 1, 1_000)  # the agent
        harness.returned(harness.made(harness.ctx("getpid", ())), 80)
        deliver = harness.made(harness.ctx("clone", (0x01200011, 0, 0, 0, 0)))  # the agent's cat of a --file
        harness.returned(deliver, 85)
        becomes(85, 80, 2_000)
        harness.returned(harness.ctx("clone", (0x01200011,), child=True, parent_seq=deliver.seq), 0)
        harness.returned(harness.made(harness.ctx("openat", (0xFFFFFF9C, STRING_AT, 0o101, 0o644))), 3)
        becomes(80, 1, 1_000)
        subshell = harness.made(harness.ctx("clone", (0x01200011, 0, 0, 0, 0)))
        harness.returned(subshell, 86)
        becomes(86, 80, 3_000)
        harness.returned(harness.ctx("clone", (0x01200011,), child=True, parent_seq=subshell.seq), 0)
        early = harness.made(harness.ctx("clone", (0x01200011, 0, 0, 0, 0)))  # before it runs the script
        harness.returned(early, 89)
        harness.ended(harness.made(harness.ctx("execve", (STRING_AT, argv_at, 0))), "exec", 0)  # the script
        becomes(89, 86, 3_500)  # first runs once its parent is the command's: not the command's child all the same
        harness.returned(harness.ctx("clone", (0x01200011,), child=True, parent_seq=early.seq), 0)
        becomes(86, 80, 3_000)
        background = harness.made(harness.ctx("clone", (0x01200011, 0, 0, 0, 0)))
        harness.returned(background, 87)
        run_db.process_id(OsiProcess(87, 87, 86, "sh", 0x5000, 0xC1000087, 4_000, False))  # proc_events' first
        harness.ended(harness.made(harness.ctx("exit_group", (0,))), "exit")
        run_db.process_id(OsiProcess(90, 90, 80, "cat", 0x5000, 0xC1000090, 5_000, False))  # an agent's child
        becomes(87, 1, 4_000)  # reparented before it first ran
        harness.returned(harness.ctx("clone", (0x01200011,), child=True, parent_seq=background.seq), 0)
        harness.returned(harness.made(harness.ctx("getpid", ())), 87)
        qpp.unload_all()
    got = {r["pid"]: r["command"] for r in rows(tmp_path / "c.db", "SELECT pid, command FROM processes")}
    if only == "all":
        assert got == {80: 0, 85: 0, 86: 1, 87: 1, 89: 0, 90: 0}
    else:  # the logger writes the command's rows only; proc_events' row of the agent's child is there, and 0
        assert got == {86: 1, 87: 1, 90: 0}


def test_without_the_logger_a_process_row_s_command_is_unknown(tmp_path: Path) -> None:
    """Only syscalls_logger follows the command: a run database written by another plugin alone leaves it NULL."""
    with QPP(None) as qpp:
        qpp.add_builtin(NoMachineCore())
        qpp.add_builtin(FakeOsi())
        qpp.load_all(["syscalls", "file_activity"], {"file_activity": {"db": str(tmp_path / "f.db")}})
        harness = Harness(qpp)
        harness.returned(harness.made(harness.ctx("openat", (0xFFFFFF9C, STRING_AT, 0, 0))), -2)
        qpp.unload_all()
    assert rows(tmp_path / "f.db", "SELECT pid, command FROM processes") == [{"pid": 100, "command": None}]
