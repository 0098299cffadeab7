"""file_activity without a guest: syscalls' callbacks fired by hand, a stand-in osi_linux, a real SQLite file."""

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from syscall_harness import STRING_AT, FakeOsi, Harness, NoMachineCore, rows

from qppsuite.core.qpp import QPP
from qppsuite.plugins.osi_linux.model import OsiProcess, split_text
from qppsuite.plugins.syscalls_logger import reader

AT_FDCWD = 0xFFFFFF9C
NAME_AT = 0x20000  # "two"
O_WRONLY_CREAT = 0o101


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    with QPP(None) as qpp:
        qpp.add_builtin(NoMachineCore())
        qpp.add_builtin(FakeOsi())
        qpp.load_all(["syscalls", "file_activity"], {"file_activity": {"db": str(tmp_path / "f.db")}})
        harness = Harness(qpp)
        harness.memory.put(NAME_AT, b"two\0")
        yield harness


def files(path: Path) -> dict[str, dict[str, int]]:
    return {
        r.pop("path"): r
        for r in rows(
            path,
            "SELECT path, opens, open_errors, reads, bytes_read, read_errors, writes, "
            "bytes_written, write_errors FROM file_activity",
        )
    }


def test_an_opened_file_is_named_by_its_fd_and_counts_its_bytes(harness: Harness, tmp_path: Path) -> None:
    osi = harness.osi
    osi.fds[(100, 3)] = "/tmp/resolved"  # what the kernel says fd 3 is once the open returned
    opened = harness.made(harness.ctx("openat", (AT_FDCWD, STRING_AT, O_WRONLY_CREAT, 0o644)))
    harness.returned(opened, 3)
    for count, retval in ((10, 10), (5, 5), (7, -28)):  # the last: ENOSPC
        harness.returned(harness.made(harness.ctx("write", (3, 0, count))), retval)
    harness.returned(harness.made(harness.ctx("read", (3, 0, 100))), 15)
    harness.made(harness.ctx("close", (3,)))
    osi.fds[(100, 3)] = "/tmp/other"  # fd 3 reused by something file_activity never saw open (a socket...)
    harness.returned(harness.made(harness.ctx("read", (3, 0, 100))), 4)
    failed = harness.made(harness.ctx("openat", (AT_FDCWD, STRING_AT, 0, 0)))
    harness.returned(failed, -2)
    harness.qpp.unload_all()
    got = files(tmp_path / "f.db")
    assert got["/tmp/resolved"] == {
        "opens": 1, "open_errors": 0, "reads": 1, "bytes_read": 15, "read_errors": 0,
        "writes": 2, "bytes_written": 15, "write_errors": 1,
    }  # fmt: skip
    assert (got["/tmp/other"]["reads"], got["/tmp/other"]["bytes_read"]) == (1, 4)
    assert (got["/tmp/unique-name"]["opens"], got["/tmp/unique-name"]["open_errors"]) == (0, 1)  # as given
    conn = sqlite3.connect(tmp_path / "f.db")
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    conn.close()


def test_renames_and_deletions_relative_to_a_directory_fd(harness: Harness, tmp_path: Path) -> None:
    harness.osi.fds[(100, 5)] = "/tmp/dir"
    harness.memory.put(STRING_AT, b"one\0")
    renamed = harness.made(harness.ctx("renameat2", (5, STRING_AT, 5, NAME_AT, 1)))  # RENAME_NOREPLACE
    harness.returned(renamed, 0)
    harness.returned(harness.made(harness.ctx("unlinkat", (5, NAME_AT, 0))), 0)
    harness.returned(harness.made(harness.ctx("unlinkat", (AT_FDCWD, NAME_AT, 0x200))), -39)  # ENOTEMPTY
    harness.returned(harness.made(harness.ctx("rmdir", (STRING_AT,))), 0)
    harness.qpp.unload_all()
    got = rows(tmp_path / "f.db", "SELECT call, op, path, new_path, flags, ok, errno FROM file_ops ORDER BY id")
    assert got == [
        {"call": "renameat2", "op": "rename", "path": "/tmp/dir/one", "new_path": "/tmp/dir/two",
         "flags": "RENAME_NOREPLACE", "ok": 1, "errno": None},
        {"call": "unlinkat", "op": "unlink", "path": "/tmp/dir/two", "new_path": None, "flags": None, "ok": 1,
         "errno": None},
        {"call": "unlinkat", "op": "rmdir", "path": "two", "new_path": None, "flags": "AT_REMOVEDIR", "ok": 0,
         "errno": "ENOTEMPTY"},
        {"call": "rmdir", "op": "rmdir", "path": "one", "new_path": None, "flags": None, "ok": 1, "errno": None},
    ]  # fmt: skip


def test_paths_and_names_that_are_not_utf8_are_stored_as_hex_in_every_table(harness: Harness, tmp_path: Path) -> None:
    """open("/tmp/bad\\xff\\xfe") as fd 3, and a process renamed with prctl(PR_SET_NAME, b"\\xff\\xfe[red]x\\n"):
    file_activity.path, file_ops.path and processes.name hold ``{"hex": ...}`` as the syscalls plugin stores
    such a path (a join on path works), never U+FFFD."""
    bad, comm = b"/tmp/bad\xff\xfe", b"\xff\xfe[red]x\n"
    name, raw_name = split_text(comm)
    harness.osi.process = OsiProcess(100, 100, 1, name, 0x4000, 0xC1000000, 5_000, False, raw_name=raw_name)
    harness.memory.put(STRING_AT, bad + b"\0")
    harness.osi.fds.update({(100, 3): bad, (100, 5): b"/tmp/d\xff"})
    harness.returned(harness.made(harness.ctx("openat", (AT_FDCWD, STRING_AT, O_WRONLY_CREAT, 0o644))), 3)
    harness.returned(harness.made(harness.ctx("write", (3, 0, 4))), 4)
    harness.returned(harness.made(harness.ctx("unlinkat", (AT_FDCWD, STRING_AT, 0))), 0)
    harness.returned(harness.made(harness.ctx("unlinkat", (5, NAME_AT, 0))), -2)
    harness.qpp.unload_all()
    db = tmp_path / "f.db"
    stored = json.dumps({"hex": bad.hex()})
    assert stored == '{"hex": "2f746d702f626164fffe"}'
    assert files(db)[stored]["bytes_written"] == 4
    assert rows(db, "SELECT path FROM file_ops ORDER BY id") == [
        {"path": stored}, {"path": json.dumps({"hex": b"/tmp/d\xff/two".hex()})}
    ]
    joined = rows(db, "SELECT a.opens FROM file_activity a JOIN file_ops o ON o.path = a.path")
    assert joined == [{"opens": 1}]
    (process,) = rows(db, "SELECT name, names FROM processes")
    assert process == {"name": json.dumps({"hex": comm.hex()}), "names": json.dumps([{"hex": comm.hex()}])}
    conn = reader.open_readonly(db)  # what logs and report show: the bytes escaped, as text
    (node,) = reader.process_tree(conn, 1)
    conn.close()
    assert (node.name, node.names) == ("\\xff\\xfe[red]x\n", ["\\xff\\xfe[red]x\n"])
    assert reader.stored_text(stored) == "/tmp/bad\\xff\\xfe"


def test_sendfile_reads_one_file_and_writes_another(harness: Harness, tmp_path: Path) -> None:
    harness.osi.fds.update({(100, 3): "/tmp/in", (100, 4): "/tmp/out"})
    harness.returned(harness.made(harness.ctx("sendfile64", (4, 3, 0, 4096))), 1000)
    harness.qpp.unload_all()
    got = files(tmp_path / "f.db")
    assert (got["/tmp/in"]["bytes_read"], got["/tmp/in"]["bytes_written"]) == (1000, 0)
    assert (got["/tmp/out"]["bytes_read"], got["/tmp/out"]["bytes_written"]) == (0, 1000)


def test_an_exec_forgets_the_fds(harness: Harness, tmp_path: Path) -> None:
    harness.osi.fds[(100, 3)] = "/tmp/before"
    harness.returned(harness.made(harness.ctx("read", (3, 0, 1))), 1)
    harness.osi.fds[(100, 3)] = "/tmp/after"  # closed on exec, reopened: the new program has a new address space
    harness.returned(harness.made(harness.ctx("read", (3, 0, 1), asid=0x8000)), 1)
    harness.qpp.unload_all()
    assert {p: r["bytes_read"] for p, r in files(tmp_path / "f.db").items()} == {"/tmp/before": 1, "/tmp/after": 1}


def test_the_working_directory_is_named_at_first_sight_and_after_each_chdir(harness: Harness, tmp_path: Path) -> None:
    """file_fds has the working directory as the fd AT_FDCWD (-100): osi_linux's get_cwd when the process is first
    seen and at the return of a chdir or fchdir that succeeded, nowhere else."""
    osi = harness.osi
    osi.fds[(100, 5)] = "/tmp/dir"
    osi.cwds[100] = "/root"
    harness.returned(harness.made(harness.ctx("read", (5, 0, 1))), 1)
    osi.cwds[100] = "/root/two"  # what the kernel resolved
    moved = harness.made(harness.ctx("chdir", (NAME_AT,)))
    harness.returned(moved, 0)
    harness.returned(harness.made(harness.ctx("chdir", (NAME_AT,))), -2)  # ENOENT: it stayed
    harness.returned(harness.made(harness.ctx("openat", (AT_FDCWD, NAME_AT, 0, 0))), -2)
    osi.cwds[100] = "/tmp/dir"
    harness.returned(harness.made(harness.ctx("fchdir", (5,))), 0)
    harness.qpp.unload_all()
    named = rows(tmp_path / "f.db", "SELECT path, syscall_seq FROM file_fds WHERE fd = -100 ORDER BY id")
    assert [r["path"] for r in named] == ["/root", "/root/two", "/tmp/dir"]
    assert named[1]["syscall_seq"] == moved.seq


def test_a_process_first_seen_at_its_chdir_is_named_once_with_the_new_directory(
    harness: Harness, tmp_path: Path
) -> None:
    harness.osi.cwds[100] = "/root/two"
    harness.returned(harness.made(harness.ctx("chdir", (NAME_AT,))), 0)
    harness.qpp.unload_all()
    assert rows(tmp_path / "f.db", "SELECT fd, path FROM file_fds") == [{"fd": -100, "path": "/root/two"}]
