"""Plugins attached to a restored snapshot are right from its first instruction (issue 11).

One ``--warm`` run restores the ready snapshot (the channel agent waiting for work; booted and saved first
if the cache has none) with osi_linux, syscalls, syscalls_logger and a probe that asks osi_linux everything
before the guest runs one instruction.  The guest then prints its own view: the agent's pid (the script's
parent, qppsuite/images/guest/agent.sh), ``/proc/1/syscall`` (init is still blocked in the very call it
was in at the snapshot: its ``wait4`` for the agent) and every process's ``/proc/PID/stat`` and threads.

Without osi_linux's ``get_syscall`` and syscalls' start-time pass, the snapshot's blocked calls (init's
wait4, the agent's write of its ready line) have no rows: their returns pair with nothing.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from console_sink import Console

from qppsuite.core.image import ImageBundle
from qppsuite.core.qpp import Plugin
from qppsuite.plugins.osi_linux import OsiLinux, OsiProcess, OsiSyscall, OsiThread
from qppsuite.session import RunOptions, RunResult, ready_snapshot_key, ready_snapshot_path, run

GUEST_CMD = (
    "echo \"=== agent $PPID ===\"\n"
    "echo \"=== init $(cat /proc/1/syscall) ===\"\n"
    "for p in /proc/[0-9]*; do\n"
    "  echo \"=== stat $(cat $p/stat) ===\"; echo \"=== tasks ${p#/proc/} \"$(ls $p/task)\" ===\"\n"
    "done\n"
)
USER_HZ = 100
"""/proc/PID/stat's starttime is in USER_HZ ticks (fs/proc/array.c, nsec_to_clock_t)."""
READY_LINE = b"QPPSUITE-READY\n"
"""What the agent writes to the channel to say it is ready (agent.sh): the host stops it in that write."""


class StartProbe(Plugin):
    """osi_linux's answers before the restored guest runs an instruction, and its first task change."""

    name = "start_probe"
    requires = ("osi_linux",)

    def load(self) -> None:
        self.osi: OsiLinux = self.qpp.get("osi_linux")  # type: ignore[assignment]
        self.first_change: tuple[OsiThread | None, OsiThread] | None = None
        self.qpp.register("osi_linux", "on_task_change", self.on_task_change, owner=self.name)

    def start(self) -> None:
        osi = self.osi
        self.insn_count = self.machine.insn_count
        self.current = osi.get_current()
        self.processes = osi.get_processes()
        self.threads = {p.pid: osi.get_threads(p) for p in self.processes}
        self.syscalls: dict[int, OsiSyscall | None] = {
            t.tid: osi.get_syscall(t) for threads in self.threads.values() for t in threads
        }

    def on_task_change(self, old: OsiThread | None, new: OsiThread) -> None:
        if self.first_change is None:
            self.first_change = (old, new)


@dataclass
class Restored:
    result: RunResult
    console: str
    probe: StartProbe
    db: Path
    snapshot: str

    def marked(self, kind: str) -> list[str]:
        return re.findall(rf"=== {kind} (.*?) ===", self.console)

    @property
    def agent(self) -> int:
        return int(self.marked("agent")[0])

    def rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        conn = sqlite3.connect(self.db)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql, args)]
        finally:
            conn.close()


@pytest.fixture(scope="module")
def restored(default_image: ImageBundle, tmp_path_factory: pytest.TempPathFactory) -> Restored:
    path = ready_snapshot_path(RunOptions(), default_image, ready_snapshot_key(RunOptions(), default_image,
                                                                              default_image.bootargs))
    if not path.is_file():  # boot once to save it
        assert run(RunOptions(cmd="true", warm=True), None, image=default_image).ok
    db = tmp_path_factory.mktemp("restored") / "calls.db"
    console = Console()
    probes: list[StartProbe] = []
    result = run(
        RunOptions(
            cmd=GUEST_CMD,
            warm=True,
            plugins=["osi_linux", StartProbe, "syscalls", "syscalls_logger"],  # type: ignore[list-item]
            plugin_args={"syscalls_logger": {"db": str(db)}},
            strict=True,
        ),
        console,
        image=default_image,
        on_loaded=lambda qpp: probes.append(qpp.get("start_probe")),  # type: ignore[arg-type]
    )
    assert result.ok and result.start == "restored", (result.reason, console.text[-2000:])
    return Restored(result, console.text.replace("\r\n", "\n"), probes[0], db, path.stem)


def _guest_stat(line: str) -> tuple[int, str, str, int, int]:
    """(pid, comm, state, ppid, starttime) of a /proc/PID/stat line; comm is in parentheses and may hold anything."""
    pid, rest = line.split(" (", 1)
    comm, fields = rest.rsplit(") ", 1)
    values = fields.split()
    return int(pid), comm, values[0], int(values[1]), int(values[19])


def _same_name(guest: str, osi: OsiProcess) -> bool:
    """/proc shows a kernel thread's full name, of which comm is the start (get_kthread_comm), and a workqueue
    worker as comm + '-'/'+' + its work (wq_worker_comm, fs/proc/array.c); any other task as comm."""
    return guest == osi.name or (osi.is_kernel_thread and guest.startswith(osi.name))


@pytest.mark.boot
def test_osi_linux_is_right_on_its_first_query_after_the_restore(restored: Restored) -> None:
    probe = restored.probe
    guest = {pid: (comm, ppid, start) for pid, comm, _, ppid, start in map(_guest_stat, restored.marked("stat"))}
    tasks = {int(pid): sorted(map(int, tids.split())) for pid, tids in
             (line.split(" ", 1) for line in restored.marked("tasks"))}  # fmt: skip
    assert len(probe.processes) > 20 and 1 in guest
    for process in probe.processes:  # every one of them still runs when the guest prints (its start time says so)
        comm, ppid, start = guest[process.pid]
        assert _same_name(comm, process) and ppid == process.ppid, (process, comm, ppid)
        assert start == process.start_time * USER_HZ // 1_000_000_000, process
        assert sorted(t.tid for t in probe.threads[process.pid]) == tasks[process.pid], process
    # The agent is current: the host stopped the guest in its write of the ready line, in the kernel.
    process, thread = probe.current
    assert process is not None and thread is not None
    assert (process.pid, thread.tid, process.name, thread.state) == (restored.agent, restored.agent, "sh", "R")
    # ...and the first switch after the restore is away from it.
    assert probe.first_change is not None and probe.first_change[0] is not None
    assert probe.first_change[0].tid == restored.agent


@pytest.mark.boot
def test_get_syscall_gives_what_proc_pid_syscall_shows(restored: Restored) -> None:
    """/proc/1/syscall: number, six arguments, sp and the saved pc (the instruction after the SVC)."""
    number, *args, sp, pc = (int(v, 0) for v in restored.marked("init")[0].split())
    init = restored.probe.syscalls[1]
    assert init is not None
    assert (init.number, init.args[:6], init.sp, init.pc + (2 if init.thumb else 4)) == (number, tuple(args), sp, pc)
    assert number == 114  # wait4, as /init waits for its command
    probe = restored.probe
    kernel_threads = {t.tid for p in probe.processes if p.is_kernel_thread for t in probe.threads[p.pid]}
    assert all(probe.syscalls[tid] is None for tid in kernel_threads)


@pytest.mark.boot
def test_the_calls_blocked_at_the_snapshot_pair_with_their_returns(restored: Restored) -> None:
    found = restored.rows("SELECT * FROM syscalls WHERE found_blocked = 1 ORDER BY seq")
    # One per user thread blocked at the snapshot, as the probe saw them; the first rows of the run.
    blocked = {tid for tid, call in restored.probe.syscalls.items() if call is not None}
    assert {row["tid"] for row in found} == blocked == {1, restored.agent}
    assert [row["seq"] for row in found] == list(range(1, len(found) + 1))
    assert all(row["insn_count"] == restored.probe.insn_count for row in found)
    by_tid = {row["tid"]: row for row in found}
    init = by_tid[1]
    # init's wait4(-1, ...) as /proc/1/syscall shows it, returning the agent's pid when the agent exits.
    assert (init["pid"], init["process_name"], init["name"], init["returned"]) == (1, "init", "wait4", 1)
    assert json.loads(init["args"])["pid"] == -1 and init["retval"] == restored.agent
    assert json.loads(init["outputs"])["stat_addr"]["exit_status"] == 0
    # The agent's write of its ready line, which the host stopped it in: the whole line written.
    agent = by_tid[restored.agent]
    assert (agent["process_name"], agent["name"], agent["returned"], agent["retval"]) == (
        "sh", "write", 1, len(READY_LINE))
    assert json.loads(agent["args"]) == {"fd": 1, "buf": READY_LINE.decode(), "count": len(READY_LINE)}
    # No call of theirs went without its return (init's last wait4, for poweroff, is pending at the end).
    assert not restored.rows("SELECT seq FROM syscalls WHERE ending = 'lost' AND tid IN (1, ?)", restored.agent)


@pytest.mark.boot
def test_the_runs_row_names_the_snapshot(restored: Restored) -> None:
    (row,) = restored.rows("SELECT started_from, stop_reason FROM runs")
    assert row == {"started_from": restored.snapshot, "stop_reason": "poweroff"}
    assert restored.snapshot.startswith("ready-")


@pytest.mark.boot
def test_a_booted_run_finds_the_same_blocked_calls_and_names_no_snapshot(
    restored: Restored, default_image: ImageBundle, tmp_path: Path
) -> None:
    """Booting to the ready point instead of restoring it attaches the plugins at the same instant."""
    db = tmp_path / "booted.db"
    result = run(
        RunOptions(
            cmd=GUEST_CMD,
            warm=True,
            cold=True,
            plugins=["osi_linux", "syscalls", "syscalls_logger"],
            plugin_args={"syscalls_logger": {"db": str(db)}},
            strict=True,
        ),
        None,
        image=default_image,
    )
    assert result.ok and result.start == "booted", result.reason
    booted = Restored(result, "", restored.probe, db, "")
    assert booted.rows("SELECT started_from FROM runs") == [{"started_from": None}]
    columns = "seq, insn_count, pid, tid, name, args, outputs, retval, return_insn_count"
    sql = f"SELECT {columns} FROM syscalls WHERE found_blocked = 1 ORDER BY seq"
    assert booted.rows(sql) == restored.rows(sql)
