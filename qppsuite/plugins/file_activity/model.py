"""The tables of ``file_activity``: what each process did to each file, and the renames and deletions.

``file_activity`` has one row per process and file, its counts kept up to date as the run goes (the
row is written again at each commit where it changed); ``file_ops`` one row per rename or deletion;
``file_fds`` one row each time osi_linux named what an fd referred to (which lets the query commands
name fds the run never saw opened, such as those inherited from before it).
docs/plugins.md describes every column.
"""

from __future__ import annotations

from typing import Any

FILE_COLUMNS: dict[str, type] = {
    "id": int,
    "run_id": int,
    "process_id": int,
    "pid": int,
    "path": str,
    "opens": int,
    "open_errors": int,
    "reads": int,
    "bytes_read": int,
    "read_errors": int,
    "writes": int,
    "bytes_written": int,
    "write_errors": int,
    "first_insn_count": int,
    "last_insn_count": int,
}
FILE_FOREIGN_KEYS = (("process_id", "processes"),)
FILE_INDEXES = (("process_id",), ("path",))

OP_COLUMNS: dict[str, type] = {
    "id": int,
    "run_id": int,
    "process_id": int,
    "pid": int,
    "tid": int,
    "insn_count": int,
    "virtual_ns": int,
    "syscall_seq": int,
    "call": str,
    "op": str,
    "path": str,
    "new_path": str,
    "flags": str,
    "ok": int,
    "errno": str,
}
OP_FOREIGN_KEYS = (("process_id", "processes"),)
OP_INDEXES = (("run_id", "insn_count"), ("process_id",), ("path",))

FD_COLUMNS: dict[str, type] = {
    "id": int,
    "run_id": int,
    "process_id": int,
    "pid": int,
    "fd": int,
    "path": str,
    "syscall_seq": int,
    "insn_count": int,
}
FD_FOREIGN_KEYS = (("process_id", "processes"),)
FD_INDEXES = (("run_id", "syscall_seq"),)

RENAME = "rename"
UNLINK = "unlink"
RMDIR = "rmdir"

COUNTS = ("opens", "open_errors", "reads", "bytes_read", "read_errors", "writes", "bytes_written", "write_errors")


def new_file_row(process_id: int, pid: int, path: str, insn_count: int) -> dict[str, Any]:
    """A ``file_activity`` row with nothing counted yet."""
    return {
        "process_id": process_id,
        "pid": pid,
        "path": path,
        **dict.fromkeys(COUNTS, 0),
        "first_insn_count": insn_count,
        "last_insn_count": insn_count,
    }
