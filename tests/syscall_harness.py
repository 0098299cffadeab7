"""A stand-in osi_linux and a harness firing syscalls' callbacks by hand, for plugins tested without a guest.

Used by the logger's tests and those of the plugins that stack on syscalls and the run database.
"""

import sqlite3
from pathlib import Path
from typing import Any

from qppsuite.core.events import CorePlugin
from qppsuite.core.memory import GuestMemoryError
from qppsuite.core.qpp import QPP, Plugin, export
from qppsuite.plugins.osi_linux import OsiLinux
from qppsuite.plugins.osi_linux.model import OsiFile, OsiProcess, OsiThread, split_text
from qppsuite.plugins.syscalls.context import Limits, SyscallContext
from qppsuite.plugins.syscalls.table import by_name

STRING_AT = 0x10000
BLOCKED_TASK = 0xC1800000
BLOCKED_INIT = OsiProcess(1, 1, 0, "init", 0x8000, BLOCKED_TASK, 1_000, False, state="S")


class Memory:
    """A C string at STRING_AT and whatever a test puts; everything else is unmapped."""

    def __init__(self, text: bytes) -> None:
        self.regions: dict[int, bytes] = {STRING_AT: text + b"\0"}

    def put(self, vaddr: int, data: bytes) -> None:
        self.regions[vaddr] = data

    def _region(self, vaddr: int) -> tuple[int, bytes]:
        for start, data in self.regions.items():
            if start <= vaddr < start + len(data):
                return start, data
        raise GuestMemoryError(vaddr)

    def read(self, vaddr: int, size: int) -> bytes:
        start, data = self._region(vaddr)
        if vaddr + size > start + len(data):
            raise GuestMemoryError(start + len(data))
        return data[vaddr - start : vaddr - start + size]

    def read_cstring(self, vaddr: int, limit: int) -> bytes:
        start, data = self._region(vaddr)
        return data[vaddr - start :].split(b"\0")[0][:limit]


class FakeOsi(Plugin):
    """osi_linux's exports, answering with whatever process the test sets as current."""

    name = "osi_linux"
    callbacks = tuple(spec for spec in OsiLinux.callbacks if spec.name == "on_thread_exit")

    def load(self) -> None:
        self.process = OsiProcess(100, 100, 1, "sh", 0x4000, 0xC1000000, 5_000, False)
        self.tid = 100
        self.known: list[OsiProcess] = []  # other processes: get_task and get_process find them
        self.fds: dict[tuple[int, int], str | bytes] = {}  # (pid, fd) -> path, for fd_to_filename
        self.cwds: dict[int, str] = {}  # pid -> working directory, for get_cwd

    @export
    def get_current_process(self) -> OsiProcess | None:
        return self.process

    @export
    def get_current_thread(self) -> OsiThread | None:
        return OsiThread(self.tid, self.process.pid, self.process.name, self.process.task)

    @export
    def get_current(self) -> tuple[OsiProcess | None, OsiThread | None]:
        return self.get_current_process(), self.get_current_thread()

    @export
    def get_processes(self) -> list[OsiProcess]:
        return [self.process]

    @export
    def get_task(self, task: int) -> tuple[OsiProcess | None, OsiThread | None]:
        """Any other task than current's is the blocked init of BLOCKED_TASK."""
        if task == BLOCKED_TASK:
            return BLOCKED_INIT, OsiThread(1, 1, "init", BLOCKED_TASK, state="S")
        for known in self.known:
            if known.task == task:
                return known, OsiThread(known.pid, known.pid, known.name, known.task)
        return self.get_current()

    @export
    def get_process(self, pid: int) -> OsiProcess | None:
        """Current's process or one of ``known``."""
        return next((p for p in (self.process, *self.known) if p.pid == pid), None)

    @export
    def fd_to_filename(self, process: OsiProcess, fd: int) -> OsiFile | None:
        """What ``fds`` says of ``(pid, fd)``; bytes as osi_linux gives a path's (text, and bytes not UTF-8)."""
        path = self.fds.get((process.pid, fd))
        if isinstance(path, bytes):
            text, raw = split_text(path)
            return OsiFile(text, raw_path=raw)
        return OsiFile(path) if path is not None else None

    @export
    def get_cwd(self, process: OsiProcess) -> OsiFile | None:
        """What ``cwds`` says of the process."""
        path = self.cwds.get(process.pid)
        return OsiFile(path) if path is not None else None

    @export
    def get_fds(self, process: OsiProcess) -> dict[int, OsiFile]:
        """Every fd ``fds`` has for the process."""
        return {fd: file for (pid, fd) in self.fds if pid == process.pid and (file := self.fd_to_filename(process, fd))}


class NoMachineCore(CorePlugin):
    """The core's callbacks without a machine to wire them to (nothing here fires SVC events)."""

    def __init__(self) -> None:
        pass

    def load(self) -> None:
        pass


class Harness:
    def __init__(self, qpp: QPP) -> None:
        self.qpp = qpp
        self.osi: FakeOsi = qpp.get("osi_linux")  # type: ignore[assignment]
        self.memory = Memory(b"/tmp/unique-name")
        self.seq = 0

    def ctx(self, name: str, args: tuple[int, ...], **extra: Any) -> SyscallContext:
        spec = by_name(name)
        self.seq += 1
        fields: dict[str, Any] = dict(
            seq=self.seq,
            insn_count=1000 * self.seq,
            pc=0x76F0A1C0,
            thumb=False,
            number=spec.number,
            name=name,
            spec=spec,
            raw_args=args + (0,) * (7 - len(args)),
            asid=0x4000,
            thread=0xD0810000,
            user_sp=0xBEC3A800,
            memory=self.memory,
            limits=Limits(),
        )
        fields.update(extra)
        return SyscallContext(**fields)

    def fire(self, callback: str, *args: Any, **kwargs: Any) -> None:
        """Run one of syscalls' callbacks with ``args`` in its specification's order, by name as syscalls does."""
        run = self.qpp.callback("syscalls", callback)
        run(**dict(zip(run.spec.params, args, strict=False)), **kwargs)

    def made(self, ctx: SyscallContext) -> SyscallContext:
        """The call's callbacks as syscalls runs them: on_syscall, then on_sys_<name>."""
        self.fire("on_syscall", ctx=ctx)
        self.fire(f"on_sys_{ctx.name}", ctx=ctx)
        return ctx

    def returned(self, ctx: SyscallContext, retval: int) -> None:
        """The return's: on_syscall_return, then on_sys_<name>_return."""
        ctx.retval = retval
        self.fire("on_syscall_return", ctx=ctx, retval=retval)
        self.fire(f"on_sys_{ctx.name}_return", ctx=ctx, retval=retval)

    def ended(self, ctx: SyscallContext, ending: str, retval: int | None = None) -> None:
        """A call found never to return (``ending``: exec, exit, killed, pending...)."""
        ctx.noreturn, ctx.ending, ctx.retval = True, ending, retval
        self.fire("on_syscall_noreturn", ctx=ctx)

    def thread_exit(self, process: OsiProcess, tid: int, code: int) -> None:
        """osi_linux's on_thread_exit for thread ``tid`` of ``process`` (which ``known`` must hold)."""
        self.qpp.callback("osi_linux", "on_thread_exit")(
            thread=OsiThread(tid, process.pid, process.name, process.task), code=code
        )


def rows(path: Path, sql: str) -> list[dict[str, Any]]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql)]
    finally:
        conn.close()
