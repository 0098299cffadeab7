"""Tasks and processes from ``task_struct``: the task list, thread groups, and cheap re-reads.

A process's identity lives in one span of its leader's ``task_struct`` (ids,
parent, mm, start time, comm).  One block read of that span unpacks into a
tuple that both answers a query and keys a cache: when the tuple is
unchanged the cached answer still holds, so the pointer chases behind it
(parent's tgid, the page-table base) are skipped.  Fields that change all the
time (run-time counters sitting in the same span) are not part of the tuple.
"""

import struct
from collections.abc import Iterator
from dataclasses import replace
from operator import itemgetter
from typing import NamedTuple

from qppsuite.plugins.osi_linux.kernel_memory import KernelMemory
from qppsuite.plugins.osi_linux.layout import KernelLayout
from qppsuite.plugins.osi_linux.model import OsiProcess, OsiThread, split_text

#: task_struct.flags: the task is a kernel thread (include/linux/sched.h).
PF_KTHREAD = 0x00200000
#: Linux's ceiling on pids (PID_MAX_LIMIT): a larger value means a garbage task pointer.
PID_MAX_LIMIT = 4 * 1024 * 1024
#: task_state_array of fs/proc/array.c, indexed by fls() of the reported state bits.
STATE_LETTERS = "RSDTtXZPI"
TASK_REPORT = 0x7F  # running .. TASK_PARKED (include/linux/sched.h)
TASK_IDLE = 0x402  # TASK_UNINTERRUPTIBLE | TASK_NOLOAD: shown as I
TASK_RTLOCK_WAIT = 0x1000  # shown as D
EXIT_ZOMBIE = 0x20


def state_letter(state: int, exit_state: int) -> str:
    """The letter ``/proc/PID/stat`` shows for ``task_struct.__state`` and ``exit_state``
    (``__task_state_index`` in include/linux/sched.h, 6.1)."""
    report = (state | exit_state) & TASK_REPORT
    if state & TASK_IDLE == TASK_IDLE:
        report = TASK_REPORT + 1
    if state & TASK_RTLOCK_WAIT:
        report = 0x2
    return STATE_LETTERS[report.bit_length()]


#: Walk bounds: no real guest has more, so more means a corrupt or cyclic list.
MAX_TASKS = 32768
MAX_THREADS = 8192
#: Entries kept in each per-task cache before it is dropped wholesale.
CACHE_LIMIT = 4096



class TaskIdentity(NamedTuple):
    """The fields of a task that make up its OsiProcess/OsiThread, read in one block."""

    mm: int
    pid: int
    tgid: int
    real_parent: int
    group_leader: int
    start_time: int
    signal: int
    comm: bytes
    exit_state: int
    exit_code: int


def comm_name(raw: bytes) -> tuple[str, bytes | None]:
    """A ``comm`` field up to its NUL: display text, and its bytes when they are not UTF-8 (:func:`split_text`)."""
    return split_text(raw.split(b"\0", 1)[0])


class TaskReader:
    """Reads tasks, thread groups and the task list; every answer is bounded and never raises."""

    def __init__(self, mem: KernelMemory, layout: KernelLayout) -> None:
        self.mem = mem
        self.layout = layout
        self._lo, self._size = layout.process_block
        fields = sorted(
            [
                (layout.task_mm, "I", 0),
                (layout.task_pid, "i", 1),
                (layout.task_tgid, "i", 2),
                (layout.task_real_parent, "I", 3),
                (layout.task_group_leader, "I", 4),
                (layout.task_start_time, "Q", 5),
                (layout.task_signal, "I", 6),
                (layout.task_comm, f"{layout.comm_len}s", 7),
                (layout.task_exit_state, "i", 8),
                (layout.task_exit_code, "i", 9),
            ]
        )
        fmt, pos = "<", self._lo
        for offset, code, _ in fields:
            fmt += f"{offset - pos}x{code}" if offset > pos else code
            pos = offset + struct.calcsize("<" + code)
        self._unpack = struct.Struct(fmt).unpack_from
        # the unpack result (in offset order) in TaskIdentity's order
        position = {field[2]: i for i, field in enumerate(fields)}
        self._pick = itemgetter(*(position[index] for index in range(len(fields))))
        self._processes: dict[int, tuple[TaskIdentity, OsiProcess]] = {}
        self._threads: dict[int, tuple[TaskIdentity, OsiThread]] = {}
        self._identities: dict[int, TaskIdentity | None] = {}

    def is_kernel_pointer(self, value: int) -> bool:
        return self.layout.page_offset <= value <= 0xFFFFF000 and value & 3 == 0

    def invalidate(self) -> None:
        """Forget the identities read: the guest ran since (the owner calls this with KernelMemory's)."""
        self._identities.clear()

    def identity(self, task: int) -> TaskIdentity | None:
        """What identifies ``task`` now, or None when it is not a readable, plausible task.

        Read once until :meth:`invalidate` (a process and its thread are asked for at the same instant).
        """
        if task in self._identities:
            return self._identities[task]
        ident = self._read_identity(task)
        self._identities[task] = ident
        return ident

    def _read_identity(self, task: int) -> TaskIdentity | None:
        if not self.is_kernel_pointer(task):
            return None
        raw = self.mem.read(task + self._lo, self._size)
        if raw is None:
            return None
        ident = TaskIdentity._make(self._pick(self._unpack(raw)))
        if not (0 <= ident.pid < PID_MAX_LIMIT and 0 <= ident.tgid < PID_MAX_LIMIT):
            return None
        return ident

    def group_leader(self, task: int) -> int | None:
        leader = self.mem.u32(task + self.layout.task_group_leader)
        return leader if leader is not None and self.is_kernel_pointer(leader) else None

    def state(self, task: int, ident: TaskIdentity, running: bool = False) -> str:
        """The task's state letter now (``__state`` changes all the time, so it is read on every query).

        ``running``: the caller knows the task is the one the CPU runs (``current``), whose
        ``__state`` is TASK_RUNNING; the read (another page of task_struct) is skipped.
        """
        if running and not ident.exit_state:
            return "R"
        state = self.mem.u32(task + self.layout.task_state)
        return state_letter(state or 0, ident.exit_state)

    # -- answers ----------------------------------------------------------------------

    def thread(self, task: int, running: bool = False) -> OsiThread | None:
        """The task as a thread, or None when ``task`` does not point at a readable task.

        ``running``: see :meth:`state`.
        """
        ident = self.identity(task)
        if ident is None:
            return None
        state = self.state(task, ident, running)
        cached = self._threads.get(task)
        if cached is not None and cached[0] == ident and cached[1].state == state:
            return cached[1]
        name, raw_name = comm_name(ident.comm)
        thread = OsiThread(tid=ident.pid, pid=ident.tgid, name=name, task=task, state=state, raw_name=raw_name)
        if len(self._threads) >= CACHE_LIMIT:
            self._threads.clear()
        self._threads[task] = (ident, thread)
        return thread

    def process(self, task: int, running: bool = False) -> OsiProcess | None:
        """The thread group ``task`` belongs to, described by its leader; None if unreadable.

        ``running``: ``task`` is the one the CPU runs (see :meth:`state`), which makes its
        leader's state known only when it is the leader.
        """
        ident = self.identity(task)
        if ident is None:
            return None
        current = task
        leader = ident.group_leader
        if leader != task:
            if not self.is_kernel_pointer(leader):
                return None
            task = leader
            ident = self.identity(task)
            if ident is None:
                return None
        state = self.state(task, ident, running and task == current)
        cached = self._processes.get(task)
        if cached is not None and cached[0] == ident:
            if cached[1].state == state:
                return cached[1]
            process = replace(cached[1], state=state)
        else:
            process = self._build_process(task, ident, state)
        if len(self._processes) >= CACHE_LIMIT:
            self._processes.clear()
        self._processes[task] = (ident, process)
        return process

    def _build_process(self, task: int, ident: TaskIdentity, state: str) -> OsiProcess:
        mem, layout = self.mem, self.layout
        partial = False
        ppid = 0
        parent = ident.real_parent
        if self.is_kernel_pointer(parent):
            parent_tgid = mem.u32(parent + layout.task_tgid)
            if parent_tgid is None or parent_tgid >= PID_MAX_LIMIT:
                partial = True
            else:
                ppid = parent_tgid
        elif parent != 0:
            partial = True
        flags = mem.u32(task + layout.task_flags)
        if flags is None:
            partial = True
        mm = ident.mm
        asid: int | None = None
        if mm:
            pgd = mem.u32(mm + layout.mm_pgd) if self.is_kernel_pointer(mm) else None
            asid = mem.physical(pgd) if pgd is not None and self.is_kernel_pointer(pgd) else None
            if asid is None:
                partial = True
        name, raw_name = comm_name(ident.comm)
        return OsiProcess(
            pid=ident.tgid,
            tgid=ident.tgid,
            ppid=ppid,
            name=name,
            raw_name=raw_name,
            asid=asid,
            task=task,
            start_time=ident.start_time,
            is_kernel_thread=bool(flags is not None and flags & PF_KTHREAD),
            partial=partial,
            state=state,
            exit_code=ident.exit_code if ident.exit_state & EXIT_ZOMBIE else None,
        )

    # -- lists ------------------------------------------------------------------------

    def _list(self, head: int, member_offset: int, limit: int) -> Iterator[int | None]:
        """Containers of a ``list_head`` ring; yields None (and stops) at a broken link or a cycle."""
        mem = self.mem
        seen = {head}
        node = mem.u32(head)
        count = 0
        while node != head:
            if node is None or not self.is_kernel_pointer(node) or node in seen or count >= limit:
                yield None
                return
            seen.add(node)
            count += 1
            yield node - member_offset
            node = mem.u32(node)

    def leaders(self) -> tuple[list[int], bool]:
        """Thread-group leaders on ``init_task.tasks`` (without the idle task), and whether the walk completed."""
        layout = self.layout
        out: list[int] = []
        for task in self._list(layout.init_task + layout.task_tasks, layout.task_tasks, MAX_TASKS):
            if task is None:
                return out, False
            out.append(task)
        return out, True

    def threads_of(self, leader: int) -> tuple[list[int], bool]:
        """Every task of ``leader``'s thread group (``signal->thread_head``), and whether the walk completed."""
        layout = self.layout
        signal = self.mem.u32(leader + layout.task_signal) if self.is_kernel_pointer(leader) else None
        if signal is None or not self.is_kernel_pointer(signal):
            return [], False
        out: list[int] = []
        for task in self._list(signal + layout.signal_thread_head, layout.task_thread_node, MAX_THREADS):
            if task is None:
                return out, False
            out.append(task)
        return out, True

    def processes(self) -> list[OsiProcess]:
        """Every process like ``ps`` lists them; an interrupted walk marks its last process partial."""
        leaders, complete = self.leaders()
        out: list[OsiProcess] = []
        for task in leaders:
            process = self.process(task)
            if process is None:
                complete = False
                continue
            out.append(process)
        if not complete and out:
            out[-1] = replace(out[-1], partial=True)
        return out

    def threads(self, process: OsiProcess) -> list[OsiThread]:
        tasks, complete = self.threads_of(process.task)
        out: list[OsiThread] = []
        for task in tasks:
            thread = self.thread(task)
            if thread is None:
                complete = False
                continue
            out.append(thread)
        if not complete:
            if not out:
                return [OsiThread(tid=process.pid, pid=process.pid, name=process.name, task=process.task,
                                  partial=True, raw_name=process.raw_name)]
            out[-1] = replace(out[-1], partial=True)
        return out
