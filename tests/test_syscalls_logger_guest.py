"""What syscalls_logger stores for endings, results and threads, against what the guest says.

One boot of the oracle image: a killed sleep, perl making an unknown call and a signal handler
return, a zombie's parent, and python3 naming three threads; the guest's strace prints the calls
and /proc the thread names, which the rows must equal.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from oracle.guest import logged_run
from oracle.strace_log import parse

from qppsuite.images.bundle import ImageBundle

THREADS = """
import ctypes, threading, time
libc = ctypes.CDLL(None)
def work(i):
    libc.prctl(15, f"worker{i}".encode(), 0, 0, 0)
    time.sleep(0.05)
    tid = threading.get_native_id()
    print(f"TASK {tid} " + open(f"/proc/self/task/{tid}/comm").read().strip(), flush=True)
ts = [threading.Thread(target=work, args=(i,)) for i in range(3)]
[t.start() for t in ts]
[t.join() for t in ts]
"""
PERL = (
    "syscall(452, 1, 2); syscall(999, -5); syscall(0xf0009, -7); "
    "$SIG{USR1} = sub { }; kill 'USR1', $$; print \"PERL $$\\n\";"
)
CMD = (
    "sleep 100 & P=$!; sleep 0.2; kill $P; wait $P; echo KILLED $P; "
    f"echo {base64.b64encode(PERL.encode()).decode()} | base64 -d > /tmp/t.pl; "
    "strace -f -o /tmp/s.txt perl /tmp/t.pl; echo STRACE-BEGIN; cat /tmp/s.txt; echo STRACE-END; "
    f"echo {base64.b64encode(THREADS.encode()).decode()} | base64 -d > /tmp/t.py; python3 /tmp/t.py"
)


@pytest.fixture(scope="module")
def logged(oracle_image: ImageBundle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    logged = logged_run(oracle_image, CMD, tmp_path_factory.mktemp("logger") / "logger.db")
    text = logged.console
    strace = parse(text[text.index("STRACE-BEGIN") : text.index("STRACE-END")].split("\n", 1)[1])
    return {
        "db": logged.db,
        "console": text,
        "rows": logged.rows(),
        "processes": logged.rows("processes"),
        "threads": logged.rows("threads"),
        "strace": strace,
    }


def _qppsuite(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "qppsuite", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.boot
def test_a_call_blocked_in_a_killed_thread_ends_killed_with_the_signal(logged: dict[str, Any]) -> None:
    pid = int(re.search(r"KILLED (\d+)", logged["console"])[1])  # type: ignore[index]
    sleeps = [r for r in logged["rows"] if r["pid"] == pid and r["name"] == "clock_nanosleep"]
    assert [(r["returned"], r["ending"], r["signal"]) for r in sleeps] == [(0, "killed", "SIGTERM")]
    (process,) = [p for p in logged["processes"] if p["pid"] == pid]
    assert (process["state"], process["exit_status"]) == ("X", 15)  # wait status of a SIGTERM death


@pytest.mark.boot
def test_unknown_calls_and_signal_returns_record_what_the_guests_strace_printed(logged: dict[str, Any]) -> None:
    pid = int(re.search(r"PERL (\d+)", logged["console"])[1])  # type: ignore[index]
    ours = {r["name"]: r for r in logged["rows"] if r["pid"] == pid}
    theirs = {c.name: c for c in logged["strace"]}
    # Past the table (452, 999: sys_ni_syscall) and an ARM private number the kernel lacks (0xf0009: arm_syscall).
    for name, arg0 in (("syscall_0x1c4", 1), ("syscall_0x3e7", -5), ("syscall_0xf0009", -7)):
        unknown = ours[name]
        assert (unknown["retval"], unknown["errno"]) == (-38, theirs[name].errno) == (-38, "ENOSYS")
        assert json.loads(unknown["args"])["arg0"] == arg0
    failed = json.loads(_qppsuite("syscalls", str(logged["db"]), "--pid", str(pid), "--failed", "--format", "json"))
    assert {"syscall_0x1c4", "syscall_0x3e7", "syscall_0xf0009"} <= {r["name"] for r in failed}
    (returned,) = {"sigreturn", "rt_sigreturn"} & set(theirs)  # glibc picks one by SA_SIGINFO
    assert ours[returned]["retval"] == theirs[returned].retval is not None
    assert ours["execve"]["retval"] == theirs["execve"].retval == 0 and ours["execve"]["ending"] == "exec"
    stats = json.loads(_qppsuite("stats", str(logged["db"]), "--format", "json", "--top", "50"))
    assert {"errno": "ENOSYS", "calls": 3} in stats["top_errors"]


@pytest.mark.boot
def test_thread_names_are_those_proc_shows(logged: dict[str, Any]) -> None:
    proc = {int(tid): name for tid, name in re.findall(r"TASK (\d+) (\S+)", logged["console"])}
    assert sorted(proc.values()) == ["worker0", "worker1", "worker2"]
    named = {t["tid"]: t for t in logged["threads"]}
    for tid, name in proc.items():
        assert named[tid]["name"] == name and json.loads(named[tid]["names"]) == ["python3", name]
        last = [r for r in logged["rows"] if r["tid"] == tid][-1]
        assert last["thread_name"] == name


@pytest.mark.boot
def test_syscalls_by_tid_in_json_and_csv(logged: dict[str, Any]) -> None:
    tid = next(int(t) for t in re.findall(r"TASK (\d+)", logged["console"]))
    records = json.loads(_qppsuite("syscalls", str(logged["db"]), "--tid", str(tid), "--format", "json"))
    assert records and {r["tid"] for r in records} == {tid}
    first = records[0]
    assert isinstance(first["args"], dict) and isinstance(first["raw_args"], list)
    assert {"parent_seq", "truncated", "asid", "thumb", "thread_name", "signal"} <= set(first)
    table = list(csv.DictReader(io.StringIO(_qppsuite("syscalls", str(logged["db"]), "--tid", str(tid), "-f", "csv"))))
    assert len(table) == len(records)
    prctl = next(row for row in table if row["name"] == "prctl")
    assert prctl["args.option"] == "PR_SET_NAME" and prctl["args.arg2"].startswith("worker")
    listed = json.loads(_qppsuite("processes", str(logged["db"]), "--threads", "--format", "json"))
    mine = next(p for p in listed if any(t["tid"] == tid for t in p["threads"]))
    assert mine["name"] == "python3" and len(mine["threads"]) == 4


def test_a_database_of_another_schema_is_refused_in_one_line(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE runs (id INTEGER); CREATE TABLE processes (id INTEGER); CREATE TABLE syscalls (id);"
    )
    conn.close()
    done = subprocess.run([sys.executable, "-m", "qppsuite", "syscalls", str(db)], capture_output=True, text=True)
    assert done.returncode != 0 and "schema 0" in done.stderr and "Traceback" not in done.stderr
