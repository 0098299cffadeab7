"""The guest's own ``ps`` as the oracle of the database's processes table (syscalls_logger)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

#: What the guest runs to list its processes: one ``PID PPID COMM`` row each (busybox and procps both take it).
PS_COMMAND = "ps -o pid,ppid,comm"


def ps_rows(console: str) -> dict[int, tuple[int, str]]:
    """pid -> (ppid, comm) of the user processes in ``PS_COMMAND``'s output (kernel threads, children of
    kthreadd, left out)."""
    rows: dict[int, tuple[int, str]] = {}
    for line in console.replace("\r", "").splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0].isdigit() and fields[1].isdigit():
            pid, ppid = int(fields[0]), int(fields[1])
            if pid != 2 and ppid != 2:
                rows[pid] = (ppid, fields[2])
    return rows


def assert_processes_match_ps(console: str, db: Path, *, least: int = 4) -> None:
    """Every user process ``ps`` listed is in the database with the same parent and name, but PID 1 (it made no
    call after the ready point) and ``ps`` itself (still running, its name may change as it prints)."""
    listed = ps_rows(console)
    assert len(listed) >= least, console[-2000:]
    with sqlite3.connect(db) as conn:
        logged = {pid: (ppid, name) for pid, ppid, name in conn.execute("SELECT pid, ppid, name FROM processes")}
    for pid, (ppid, comm) in listed.items():
        if pid == 1 or comm == "ps":
            continue
        assert logged.get(pid) == (ppid, comm), (pid, ppid, comm, logged)
