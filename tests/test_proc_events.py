"""proc_events without a guest: syscalls' and osi_linux's callbacks fired by hand, a real SQLite file."""

import json
import sqlite3
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from syscall_harness import STRING_AT, FakeOsi, Harness, NoMachineCore, rows

from qppsuite.core.qpp import QPP
from qppsuite.plugins.osi_linux.model import OsiProcess, split_text
from qppsuite.plugins.proc_events.model import ExitCode, ProcEvent

SH = OsiProcess(100, 100, 1, "sh", 0x4000, 0xC1000000, 5_000, False)
CHILD = OsiProcess(300, 300, 100, "sh", 0x8000, 0xC3000000, 7_000, False)
ARGV_AT = 0x20000
CLONE_ARGS_AT = 0x30000
CLONE_THREAD_FLAGS = 0x003D0F00  # what glibc's pthread_create passes: CLONE_VM|CLONE_FS|...|CLONE_THREAD|...


def started(tmp_path: Path, plugins: list[str], args: dict[str, dict[str, str]]) -> tuple[Harness, list[ProcEvent]]:
    qpp = QPP(None)
    qpp.add_builtin(NoMachineCore())
    qpp.add_builtin(FakeOsi())
    qpp.load_all(plugins, args)
    harness = Harness(qpp)
    harness.osi.known.extend([SH, CHILD])
    seen: list[ProcEvent] = []
    qpp.register("proc_events", "on_proc_event", lambda event: seen.append(event), owner="test")
    argv = [b"/bin/echo", b"hello", b"w\xffrld"]
    strings = ARGV_AT + 0x100
    pointers, blob = [], b""
    for arg in argv:
        pointers.append(strings + len(blob))
        blob += arg + b"\0"
    harness.memory.put(ARGV_AT, struct.pack(f"<{len(argv) + 1}I", *pointers, 0))
    harness.memory.put(strings, blob)
    harness.memory.put(CLONE_ARGS_AT, struct.pack("<Q", CLONE_THREAD_FLAGS) + bytes(80))
    return harness, seen


@pytest.fixture
def alone(tmp_path: Path) -> Iterator[tuple[Harness, list[ProcEvent]]]:
    harness, seen = started(tmp_path, ["syscalls", "proc_events"], {"proc_events": {"db": str(tmp_path / "p.db")}})
    with harness.qpp:
        yield harness, seen


def test_fork_exec_and_exit_make_the_timeline(alone: tuple[Harness, list[ProcEvent]], tmp_path: Path) -> None:
    harness, seen = alone
    fork = harness.made(harness.ctx("clone", (0x01200011, 0, 0, 0, 0x76FF0068)))  # glibc's fork()
    harness.returned(fork, 300)  # the parent returns first: the child is found by its pid
    harness.osi.process, harness.osi.tid = CHILD, 300
    harness.returned(harness.ctx("clone", (0x01200011,), child=True, parent_seq=fork.seq), 0)  # reported already
    failed = harness.made(harness.ctx("execve", (STRING_AT, ARGV_AT, 0)))
    harness.returned(failed, -2)
    execve = harness.made(harness.ctx("execve", (STRING_AT, ARGV_AT, 0)))
    harness.osi.process = echo = OsiProcess(300, 300, 100, "echo", 0x9000, 0xC3000000, 7_000, False)
    harness.osi.known = [SH, echo]
    harness.ended(execve, "exec", 0)  # the thread's next call, in the new program
    harness.thread_exit(CHILD, 300, 3 << 8)
    harness.thread_exit(SH, 100, 9)  # SIGKILL
    assert [(e.kind, e.pid, e.call) for e in seen] == [
        ("fork", 100, "clone"),
        ("exec", 300, "execve"),
        ("exec", 300, "execve"),
        ("exit", 300, None),
        ("exit", 100, None),
    ]
    forked, bad, good, exited, killed = seen
    assert (forked.child_pid, forked.child, forked.ok) == (300, CHILD, True)
    assert forked.flags == "CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD"
    assert (bad.ok, bad.retval, bad.errno, bad.process) == (False, -2, "ENOENT", CHILD)
    assert bad.path == "/tmp/unique-name" and bad.argv == ["/bin/echo", "hello", {"hex": "77ff726c64"}]
    assert (good.ok, good.retval, good.ending, good.process.name if good.process else None) == (True, 0, "exec", "echo")
    assert exited.code == ExitCode(3 << 8) and (exited.code.exit_status, exited.code.signal) == (3, None)
    assert killed.code is not None and (killed.code.exit_status, killed.code.signal) == (None, "SIGKILL")
    harness.qpp.unload_all()
    path = tmp_path / "p.db"
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()
    got = rows(
        path,
        "SELECT e.kind, e.pid, e.name, e.call, e.child_pid, c.pid AS child_row_pid, e.argv, e.ok, e.errno, "
        "e.exit_status, e.signal, p.pid AS row_pid FROM proc_events e JOIN processes p ON p.id = e.process_id "
        "LEFT JOIN processes c ON c.id = e.child_process_id ORDER BY e.id",
    )
    assert [(r["kind"], r["pid"], r["row_pid"], r["name"]) for r in got] == [
        ("fork", 100, 100, "sh"),
        ("exec", 300, 300, "sh"),
        ("exec", 300, 300, "echo"),
        ("exit", 300, 300, "echo"),
        ("exit", 100, 100, "sh"),
    ]
    assert (got[0]["child_pid"], got[0]["child_row_pid"]) == (300, 300)
    assert json.loads(got[1]["argv"]) == ["/bin/echo", "hello", {"hex": "77ff726c64"}]
    assert [(r["ok"], r["errno"]) for r in got[1:3]] == [(0, "ENOENT"), (1, None)]
    assert [(r["exit_status"], r["signal"]) for r in got[3:]] == [(3, None), (None, "SIGKILL")]
    assert rows(path, "SELECT pid, names FROM processes ORDER BY pid") == [
        {"pid": 100, "names": '["sh"]'},
        {"pid": 300, "names": '["sh", "echo"]'},
    ]


def test_a_vfork_child_that_runs_first_is_reported_at_its_return(alone: tuple[Harness, list[ProcEvent]]) -> None:
    harness, seen = alone
    vfork = harness.made(harness.ctx("vfork", ()))
    harness.osi.process, harness.osi.tid = CHILD, 300
    harness.returned(harness.ctx("vfork", (), child=True, parent_seq=vfork.seq, seq=50), 0)
    assert [(e.kind, e.call, e.child_pid, e.child, e.flags) for e in seen] == [("fork", "vfork", 300, CHILD, None)]
    harness.osi.process, harness.osi.tid = SH, 100
    harness.returned(vfork, 300)  # the parent, once the child exec'd: nothing more
    assert len(seen) == 1


def test_a_thread_is_its_own_kind_with_clone3s_flags(alone: tuple[Harness, list[ProcEvent]]) -> None:
    harness, seen = alone
    clone3 = harness.made(harness.ctx("clone3", (CLONE_ARGS_AT, 88)))
    harness.returned(clone3, 101)
    harness.thread_exit(SH, 101, 0)
    (thread, ended) = seen
    assert (thread.kind, thread.child_pid, thread.child, thread.pid) == ("thread", 101, SH, 100)
    assert thread.flags is not None and "CLONE_THREAD" in thread.flags
    assert (ended.kind, ended.tid, ended.pid) == ("thread_exit", 101, 100)


def test_a_leader_superseded_by_its_threads_exec_is_a_thread_exit(alone: tuple[Harness, list[ProcEvent]]) -> None:
    """A thread (tid 101) execs: de_thread (fs/exec.c) kills the leader (code 0), the thread goes on as pid 100
    and exits 12 (strace: ``+++ superseded by execve in pid 101 +++``, then one ``+++ exited with 12 +++``)."""
    harness, seen = alone
    harness.osi.tid = 101
    execve = harness.made(harness.ctx("execve", (STRING_AT, ARGV_AT, 0)))
    harness.thread_exit(SH, 100, 0)  # the leader, killed by de_thread
    harness.osi.tid = 100  # the exec'ing thread took the leader's pid
    harness.ended(execve, "exec", 0)
    harness.thread_exit(SH, 100, 12 << 8)
    assert [(e.kind, e.pid, e.tid) for e in seen] == [
        ("thread_exit", 100, 100),
        ("exec", 100, 101),
        ("exit", 100, 100),
    ]
    assert seen[2].code is not None and seen[2].code.exit_status == 12


def test_a_leader_that_exits_while_its_own_exec_is_pending_ends_the_process(
    alone: tuple[Harness, list[ProcEvent]],
) -> None:
    """The leader's own exec (killed in it), or another thread's with the leader exiting non-zero: an exit."""
    harness, seen = alone
    execve = harness.made(harness.ctx("execve", (STRING_AT, ARGV_AT, 0)))
    harness.thread_exit(SH, 100, 9)
    harness.osi.tid = 101
    other = harness.made(harness.ctx("execve", (STRING_AT, ARGV_AT, 0)))
    harness.thread_exit(SH, 100, 3 << 8)  # exit_group(3) of the leader: the whole group ends
    harness.ended(execve, "killed")
    harness.ended(other, "killed")
    assert [e.kind for e in seen] == ["exit", "exit", "exec", "exec"]


def test_a_name_that_is_not_utf8_is_stored_as_hex(alone: tuple[Harness, list[ProcEvent]], tmp_path: Path) -> None:
    """prctl(PR_SET_NAME, b"\\xff\\xfe[red]x\\n"), then the process ends: proc_events.name holds the bytes."""
    harness, seen = alone
    comm = b"\xff\xfe[red]x\n"
    name, raw_name = split_text(comm)
    renamed = OsiProcess(100, 100, 1, name, 0x4000, 0xC1000000, 5_000, False, raw_name=raw_name)
    harness.osi.process = renamed
    harness.osi.known = [renamed]
    harness.thread_exit(renamed, 100, 0)
    harness.qpp.unload_all()
    assert seen[0].process is not None and seen[0].process.name_bytes == comm
    (row,) = rows(tmp_path / "p.db", "SELECT name FROM proc_events")
    assert row == {"name": json.dumps({"hex": comm.hex()})}


def test_a_failed_fork_has_no_child(alone: tuple[Harness, list[ProcEvent]]) -> None:
    harness, seen = alone
    fork = harness.made(harness.ctx("fork", ()))
    harness.returned(fork, -11)
    (event,) = seen
    assert (event.ok, event.child_pid, event.child, event.errno) == (False, None, None, "EAGAIN")


def test_an_exec_the_run_ended_in_is_pending(alone: tuple[Harness, list[ProcEvent]]) -> None:
    harness, seen = alone
    execve = harness.made(harness.ctx("execve", (STRING_AT, ARGV_AT, 0)))
    harness.ended(execve, "pending")
    (event,) = seen
    assert (event.ok, event.ending, event.retval) == (None, "pending", None)


def test_with_the_logger_the_events_sit_in_its_file(tmp_path: Path) -> None:
    path = tmp_path / "logged.db"
    harness, _ = started(
        tmp_path, ["syscalls", "syscalls_logger", "proc_events"], {"syscalls_logger": {"db": str(path)}}
    )
    with harness.qpp:
        fork = harness.made(harness.ctx("fork", ()))
        harness.returned(fork, 300)
    got = rows(
        path,
        "SELECT e.kind, s.name, s.process_id = e.process_id AS same FROM proc_events e "
        "JOIN syscalls s ON s.seq = e.syscall_seq AND s.run_id = e.run_id",
    )
    assert got == [{"kind": "fork", "name": "fork", "same": 1}]


def test_table_false_writes_no_file(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    harness, seen = started(tmp_path, ["syscalls", "proc_events"], {"proc_events": {"table": "false"}})
    with harness.qpp:
        harness.returned(harness.made(harness.ctx("fork", ())), 300)
    assert len(seen) == 1 and list(tmp_path.iterdir()) == []
