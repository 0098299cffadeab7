"""Plugins attached to a restored snapshot are right from its first instruction (issue 11), on every kernel the
archive serves (5.10, 6.1, 6.12: issue 12).

One run restores the ready snapshot (the channel agent waiting for work; booted and saved first
if the cache has none) with osi_linux, syscalls, syscalls_logger and a probe that asks osi_linux everything
before the guest runs one instruction.  The guest then prints its own view: the agent's pid (the script's
parent, qppsuite/images/guest/agent.sh), ``/proc/1/syscall`` (init is still blocked in the very call it
was in at the snapshot: its ``wait4`` for the agent) and every process's ``/proc/PID/stat`` and threads.

Without osi_linux's ``get_syscall`` and syscalls' start-time pass, the snapshot's blocked calls (init's
wait4, the agent's write of its ready line) have no rows: their returns pair with nothing.

The probe also records the kernel pages ``get_syscall`` reads there (``tests/data/osi/ready_syscalls.json.gz``,
rewritten from the bookworm image with ``QPPSUITE_WRITE_DUMPS=1``), which the tests without a boot replay.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import os
import re
import sqlite3
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from console_sink import Console
from kernel_dump import PAGE, dumped_layout, load_dump

from qppsuite.core.memory import GuestMemoryError
from qppsuite.core.qpp import Plugin
from qppsuite.images.bundle import ImageBundle
from qppsuite.plugins.osi_linux import OsiLinux, OsiProcess, OsiSyscall, OsiThread
from qppsuite.plugins.osi_linux.syscall_regs import saved_syscall
from qppsuite.plugins.osi_linux.tasks import TaskReader
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
DUMP = Path(__file__).parent / "data" / "osi" / "ready_syscalls.json.gz"

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
        self._record(osi)

    def _record(self, osi: OsiLinux) -> None:
        """The kernel pages and user instructions saved_syscall reads for every task: the unit test's fixture."""
        mem, translate = osi.mem, osi.mem._translate
        seen: dict[int, int | None] = {}
        self.code: dict[str, int | None] = {}

        def recording(vaddr: int) -> int | None:
            seen[vaddr >> 12] = translate(vaddr)
            return seen[vaddr >> 12]

        mem.set_translate(recording)
        try:
            for process in self.processes:
                for thread in self.threads[process.pid]:
                    saved_syscall(osi.tasks, thread.task, partial(self._read_code, process.asid))
        finally:
            mem.set_translate(translate)
        read_phys = self.machine.memory.read_phys
        self.pages = {v: read_phys(p & ~(PAGE - 1), PAGE) for v, p in seen.items() if p is not None}

    def _read_code(self, asid: int | None, pc: int, thumb: bool) -> int | None:
        memory, value = self.machine.memory, None
        try:
            if asid is not None:
                value = memory.read_u16(pc, ttbr0=asid) if thumb else memory.read_u32(pc, ttbr0=asid)
        except GuestMemoryError:
            pass
        self.code[f"{asid}:{pc:#x}"] = value
        return value

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
def restored(suite_image: ImageBundle, tmp_path_factory: pytest.TempPathFactory) -> Restored:
    path = ready_snapshot_path(RunOptions(), suite_image, ready_snapshot_key(RunOptions(), suite_image,
                                                                            suite_image.bootargs))
    if not path.is_file():  # boot once to save it
        assert run(RunOptions(cmd="true", warm=True), None, image=suite_image).ok
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
        image=suite_image,
        on_loaded=lambda qpp: probes.append(qpp.get("start_probe")),  # type: ignore[arg-type]
    )
    assert result.ok and result.start == "restored", (result.reason, console.text[-2000:])
    restored = Restored(result, console.text.replace("\r\n", "\n"), probes[0], db, path.stem)
    if os.environ.get("QPPSUITE_WRITE_DUMPS") and suite_image.manifest.get("suite", "bookworm") == "bookworm":
        _write_dump(restored)
    return restored


def _write_dump(restored: Restored) -> None:
    probe = restored.probe
    threads = [
        {"tid": t.tid, "pid": p.pid, "task": t.task, "asid": p.asid, "kernel_thread": p.is_kernel_thread}
        for p in probe.processes
        for t in probe.threads[p.pid]
    ]
    dump = {
        "layout": dataclasses.asdict(probe.osi.layout),
        "threads": threads,
        "agent": restored.agent,
        "init_syscall": restored.marked("init")[0],
        "code": probe.code,
        "pages": {f"{v:#x}": base64.b64encode(d).decode() for v, d in sorted(probe.pages.items())},
    }
    DUMP.write_bytes(gzip.compress(json.dumps(dump).encode(), mtime=0))


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
    # The host stopped the guest in the agent's write of the ready line: the agent is current, in the kernel,
    # or (6.12, whose serial core transmits from a workqueue) the kernel worker sending the line is.
    process, thread = probe.current
    assert process is not None and thread is not None and thread.state == "R"
    if process.is_kernel_thread:
        assert process.name.startswith("kworker/"), process
    else:
        assert (process.pid, thread.tid, process.name) == (restored.agent, restored.agent, "sh")
    # ...and the first switch after the restore is away from it.
    assert probe.first_change is not None and probe.first_change[0] is not None
    assert probe.first_change[0].tid == thread.tid


@pytest.mark.boot
def test_get_syscall_gives_what_proc_pid_syscall_shows(restored: Restored) -> None:
    """/proc/1/syscall: number, six arguments, sp and the saved pc (the instruction after the SVC)."""
    number, *args, sp, pc = (int(v, 0) for v in restored.marked("init")[0].split())
    init = restored.probe.syscalls[1]
    assert init is not None
    assert (init.args[:6], init.sp, init.pc + (2 if init.thumb else 4)) == (tuple(args), sp, pc)
    assert init.number == 114  # wait4, as /init waits for its command
    # 5.10 records the number of a traced task's call alone: its /proc/PID/syscall says 0 (layout.UserRegsLayout)
    user_regs = restored.probe.osi.layout.user_regs
    assert user_regs is not None
    assert number == 114 if user_regs.records_number else number in (0, 114)
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
    # PID 1's name is "init" (the script's name) on 6.1 and 6.12 and "sh" (its interpreter's) on 5.10, as the
    # guest's /proc/1/stat shows (test_osi_linux_is_right_on_its_first_query_after_the_restore).
    name = next(p.name for p in restored.probe.processes if p.pid == 1)
    assert name in ("init", "sh")
    assert (init["pid"], init["process_name"], init["name"], init["returned"]) == (1, name, "wait4", 1)
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
    restored: Restored, suite_image: ImageBundle, tmp_path: Path
) -> None:
    """Booting to the ready point instead of restoring it attaches the plugins at the same instant."""
    db = tmp_path / "booted.db"
    cache = tmp_path / "cache"  # the image, but no ready snapshot: the run boots to the ready point
    cache.mkdir()
    (cache / "images").symlink_to(suite_image.path.parent)
    result = run(
        RunOptions(
            cmd=GUEST_CMD,
            warm=True,
            cache=cache,
            plugins=["osi_linux", "syscalls", "syscalls_logger"],
            plugin_args={"syscalls_logger": {"db": str(db)}},
            strict=True,
        ),
        None,
        image=suite_image,
    )
    assert result.ok and result.start == "booted", result.reason
    booted = Restored(result, "", restored.probe, db, "")
    assert booted.rows("SELECT started_from FROM runs") == [{"started_from": None}]
    columns = "seq, insn_count, pid, tid, name, args, outputs, retval, return_insn_count"
    sql = f"SELECT {columns} FROM syscalls WHERE found_blocked = 1 ORDER BY seq"
    assert booted.rows(sql) == restored.rows(sql)


def _replay() -> tuple[dict[str, Any], TaskReader, bytearray]:
    """The dumped pages as kernel memory (writable, to corrupt), the reader over them, and the dump."""
    dump, ram, memory = load_dump(DUMP)
    return dump, TaskReader(memory, dumped_layout(dump["layout"])), ram


def _found(dump: dict[str, Any], tasks: TaskReader) -> dict[int, OsiSyscall | None]:
    def read_code(asid: int | None, pc: int, _thumb: bool) -> int | None:
        return dump["code"].get(f"{asid}:{pc:#x}")

    return {t["tid"]: saved_syscall(tasks, t["task"], partial(read_code, t["asid"])) for t in dump["threads"]}


def test_saved_syscall_on_the_dumped_ready_point_gives_what_the_guest_showed() -> None:
    """Kernel pages of the ready snapshot (tests/data/osi/README.md), read as get_syscall reads them."""
    dump, tasks, _ = _replay()
    found = _found(dump, tasks)
    number, *args, sp, pc = (int(v, 0) for v in dump["init_syscall"].split())
    init = found[1]
    assert init is not None
    assert (init.number, init.args[:6], init.sp, init.pc + (2 if init.thumb else 4)) == (number, tuple(args), sp, pc)
    agent = found[dump["agent"]]
    assert agent is not None and (agent.number, agent.args[0], agent.args[2]) == (4, 1, len(READY_LINE))  # write
    assert {tid for tid, call in found.items() if call is not None} == {1, dump["agent"]}
    assert len(dump["threads"]) > 20  # every kernel thread among them: none is in a call


def test_saved_syscall_refuses_registers_of_another_kind_of_entry() -> None:
    """Edited pages: an interrupt's ORIG_r0, a number that is not r7, user code that is no SVC, a bad stack."""
    dump, tasks, ram = _replay()
    (init,) = (t for t in dump["threads"] if t["tid"] == 1)
    regs_layout = tasks.layout.user_regs
    assert regs_layout is not None
    stack = tasks.mem.u32(init["task"] + regs_layout.task_stack)
    assert stack is not None
    pt_regs = stack + regs_layout.pt_regs

    def edit(vaddr: int, value: int) -> int:
        offset = tasks.mem.physical(vaddr)
        assert offset is not None
        old = int.from_bytes(ram[offset : offset + 4], "little")
        ram[offset : offset + 4] = value.to_bytes(4, "little")
        tasks.mem.invalidate()
        return old

    assert _found(dump, tasks)[1] is not None
    r0 = edit(pt_regs, 5)  # ORIG_r0 -1 but r0 is not: an interrupt or abort from user mode
    assert _found(dump, tasks)[1] is None
    edit(pt_regs, r0)
    r7 = edit(pt_regs + 4 * 7, 3)  # the number recorded is not the saved r7
    assert _found(dump, tasks)[1] is None
    edit(pt_regs + 4 * 7, r7)
    dump["code"] = {key: 0x4770 for key in dump["code"]}  # bx lr, not an SVC
    assert _found(dump, tasks)[1] is None
    dump, tasks, ram = _replay()
    edit(init["task"] + regs_layout.task_stack, 0x1000)  # not a kernel pointer
    assert _found(dump, tasks)[1] is None
