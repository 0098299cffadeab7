"""The ``osi_linux`` plugin: Linux processes, threads, maps, files and modules from kernel memory.

It reads the guest kernel's own data structures through a profile of that
exact kernel build (``qppsuite profile``; the default image carries one), so
no guest-side agent or hand-written offsets are needed.  Before answering
anything it checks that the profile's banner is the ``linux_banner`` in guest
memory; a mismatch stops the run with both versions named.  It then checks the
profile's task_struct layout on init_task and init (:mod:`.layout_check`):
in the kernel image before the guest runs, and in guest memory until init
exists; a contradiction stops the run with a line naming the field.

Who is ``current``: in kernel mode TPIDRURO holds it
(CONFIG_CURRENT_POINTER_IN_TPIDRURO, 6.1 and 6.12); in user mode TPIDRURO is the user's TLS,
and the per-cpu ``__entry_task`` (at TPIDRPRW, the per-cpu offset) holds it,
written by ``switch_to`` just before ``__switch_to``.  An entry hook on
``__switch_to`` (r0 = prev task, r2 = next thread_info) keeps that
value as it is written, once the kernel is validated, so a query in user mode
(every system call) need not read it back through the page tables; the same
hook raises ``on_task_change``.  A kernel without ``__entry_task`` (5.10) keeps
``thread_info`` at the base of the kernel stack: ``current`` is then
``thread_info.task`` below the SVC-mode stack pointer, in every mode (a user
task's SVC stack pointer rests at its stack's top).  bench/RESULTS.md has the measurements: an
address (code) hook there costs ~30% of a whole run, the bounded block hook of
``Machine.add_entry_hook`` a few percent, and deriving changes from
address-space switches is no cheaper and misses switches between threads and
to kernel threads.  ``on_thread_exit(thread, code)`` is, the same
way, an entry hook on ``do_exit`` while a function is registered on it (an
entry hook costs nothing until its function runs: docs/engine.md, "Hooks").
"""

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from rich.console import Console

from qppsuite.core.events import AddressSpaceSwitch
from qppsuite.core.guest import GuestMemoryError
from qppsuite.core.qpp import Arg, CallbackSpec, Plugin, export
from qppsuite.errors import PluginError
from qppsuite.plugins.osi_linux.kernel_memory import KernelMemory
from qppsuite.plugins.osi_linux.layout import KernelLayout
from qppsuite.plugins.osi_linux.layout_check import task_list_mismatch
from qppsuite.plugins.osi_linux.mappings import MappingReader
from qppsuite.plugins.osi_linux.model import OsiFile, OsiMapping, OsiModule, OsiProcess, OsiSyscall, OsiThread
from qppsuite.plugins.osi_linux.modules import read_modules
from qppsuite.plugins.osi_linux.paths import PathReader
from qppsuite.plugins.osi_linux.ps_report import print_process_tree
from qppsuite.plugins.osi_linux.syscall_regs import saved_syscall
from qppsuite.plugins.osi_linux.tasks import TaskIdentity, TaskReader
from qppsuite.profiles.profile import KernelProfile, ProfileError, release_from_banner

__all__ = ["OsiFile", "OsiLinux", "OsiMapping", "OsiModule", "OsiProcess", "OsiSyscall", "OsiThread", "plugin"]

logger = logging.getLogger("qppsuite.osi_linux")

CPSR_MODE_MASK = 0x1F
MODE_USR = 0x10
SCTLR_M = 1 << 0
"""SCTLR.M, the MMU enable bit (ARM ARM B4.1.130)."""
#: Bytes of linux_banner compared (the real one is ~200).
BANNER_LIMIT = 512

T = TypeVar("T")


class OsiLinux(Plugin):
    """Linux process introspection: processes, threads, memory maps, open files, working directories, modules."""

    name = "osi_linux"
    description = "Linux processes, threads, memory maps, open files and modules read from kernel memory"
    callbacks = (
        CallbackSpec(
            "on_task_change",
            "a switch to another task (entry of __switch_to); old: None if unknown",
            old=OsiThread | None,
            new=OsiThread,
        ),
        CallbackSpec(
            "on_thread_exit", "a task ends (entry of do_exit); code is its wait status", thread=OsiThread, code=int
        ),
    )
    args: ClassVar[Any] = {
        "profile": Arg(str, "", help="kernel profile or Volatility ISF JSON (default: the image's own)"),
        "dump": Arg(str, "", choices=("", "ps"), help="ps: print the process tree when the guest stops"),
    }

    # -- lifecycle ----------------------------------------------------------------------

    def load(self) -> None:
        path = self.args.profile or self.context.profile
        if not path:
            image = self.context.image or "?"
            raise PluginError(
                f"osi_linux needs a kernel profile and image '{image}' carries none",
                hint="pass -p osi_linux:profile=FILE: a Volatility 3 ISF of this kernel (dwarf2json linux --elf "
                "VMLINUX), or `qppsuite profile build VMLINUX|linux-image-*-dbg.deb -o FILE` from its debug info",
            )
        try:
            profile = KernelProfile.load(Path(path))
            self.layout = KernelLayout.from_profile(profile)
        except ProfileError as err:
            raise PluginError(f"osi_linux cannot use profile {path}: {err}") from err
        if profile.arch != "arm" or profile.pointer_size != 4:
            raise PluginError(
                f"osi_linux reads 32-bit ARM kernels; profile {path} is for arch {profile.arch!r} "
                f"with {profile.pointer_size}-byte pointers"
            )
        if self.layout.entry_task is None and self.layout.stack_thread_info is None:
            raise PluginError(
                f"osi_linux cannot find current: profile {path} has no __entry_task symbol "
                "(CONFIG_CURRENT_POINTER_IN_TPIDRURO) and its task_struct holds its thread_info"
            )
        self.profile_path = str(path)
        machine = self.machine
        self._registers = machine.registers
        self._r0_r2 = machine.registers.reader("r0", "r2")
        self.mem = KernelMemory(machine.memory.ram, machine.memory.ram_base, self._translate)
        self.tasks = TaskReader(self.mem, self.layout)
        self.paths = PathReader(self.mem, self.layout)
        self.maps = MappingReader(self.mem, self.layout, self.paths)

        self._epoch = -1
        self._task: int | None = None
        self._task_epoch = -1  # the epoch _task was read in
        self._kernel_translate: Callable[[int], int | None] | None = None
        self._kernel_ttbr0: int | None = None
        self._validated = False
        self._layout_checked = False
        self._loaded_banner_seen = False
        self.refusal: str | None = None
        self._forced_task: int | None = None
        #: The task the last __switch_to went to, which switch_to has just stored in __entry_task; None until
        #: the hook has seen a switch (or when it went to an implausible pointer).
        self._switched_to: int | None = None
        self._memo: tuple[int, int, OsiProcess | None] | None = None
        #: (task, its identity, process, thread) of the last get_current() of a thread-group leader.
        self._last_current: tuple[int, TaskIdentity, OsiProcess | None, OsiThread | None] | None = None
        self._last_thread: OsiThread | None = None
        self._switch_hook: int | None = None
        self._exit_hook: int | None = None
        self._failed_exports: set[str] = set()
        self._tpidruro = machine.registers.reader("tpidruro")
        self._tpidrprw = machine.registers.reader("tpidrprw")
        self.on_task_change = self.callback("on_task_change")
        self.on_thread_exit = self.callback("on_thread_exit")
        self.qpp.register("core", "on_asid_change", self._on_asid_change, owner=self.name)

    def start(self) -> None:
        self._check_loaded_banner()
        self._check_loaded_init_task()
        self._update_hooks()

    def stop(self, reason: Any) -> None:
        if self.args.dump == "ps":
            self._dump_ps(Console(stderr=True))

    def unload(self) -> None:
        for hook in (self._switch_hook, self._exit_hook):
            if hook is not None:
                self.machine.hooks.remove(hook)
        self._switch_hook = self._exit_hook = None
        self._switched_to = None

    # -- guest memory and validation ----------------------------------------------------

    def _translate(self, vaddr: int) -> int | None:
        """Translate with the kernel's own tables (swapper_pg_dir once known), as every guest-memory read does.

        Once the kernel is validated the walk's registers are kept for the run
        (:meth:`GuestMemory.translator`): they are swapper_pg_dir and SCTLR/TTBCR,
        which Linux sets once at boot.  Translations themselves are cached per epoch only (KernelMemory).
        """
        translate = self._kernel_translate
        if translate is None:
            translate = self._kernel_translate = self.machine.memory.translator(ttbr0=self._kernel_ttbr0)
        return translate(vaddr)

    def _begin(self) -> bool:
        """Start a query: drop what the guest may have changed since the last one; False if not usable."""
        now = self.machine.insn_count
        if now != self._epoch:
            self._epoch = now
            self._forget_reads()
            if not self._validated:
                self._kernel_translate = None
        if not self._validated and not self._validate():
            return False
        if not self._layout_checked:
            self._check_layout(self.tasks)
        return self.refusal is None

    def _forget_reads(self) -> None:
        """Drop what was read of guest memory: translations, task identities, ``current``."""
        self.mem.invalidate()
        self.tasks.invalidate()
        self._task_epoch = -1

    def _validate(self) -> bool:
        """Compare linux_banner with the profile once the kernel's mappings exist (MMU on, banner mapped)."""
        if self.refusal is not None or not self._registers.read("sctlr") & SCTLR_M:
            return False
        raw = self.mem.cstring(self.layout.linux_banner, BANNER_LIMIT)
        if raw is None:
            return False  # MMU on but the kernel is not mapped yet (e.g. the zImage decompressor)
        guest = raw.decode("utf-8", "replace").rstrip("\n")
        if guest != self.layout.banner:
            self._refuse_banner(guest)
            return False
        kernel_ttbr0 = self.mem.physical(self.layout.swapper_pg_dir)
        if kernel_ttbr0 is None:
            return False
        self._kernel_ttbr0 = kernel_ttbr0
        self._kernel_translate = None
        self._forget_reads()
        self._validated = True
        return True

    def _check_loaded_banner(self) -> None:
        """Refuse before the guest runs when the host-loaded kernel image's banner already differs.

        A raw Image sits in RAM at the load address, so linux_banner is at the
        same distance from it as from ``_text``; a zImage (still compressed)
        has no banner there yet and waits for the lazy check.
        """
        load = self.machine.kernel_load_address
        if load is None or self.refusal is not None:
            return
        rel = self.layout.linux_banner - self.layout.text
        loaded = self.machine.memory.try_read_phys(load + rel, BANNER_LIMIT) if rel >= 0 else None
        if loaded is None:
            return
        raw = loaded.split(b"\0", 1)[0]
        if not raw.startswith(b"Linux version "):
            return
        self._loaded_banner_seen = True
        if raw.decode("utf-8", "replace").rstrip("\n") != self.layout.banner:
            self._refuse_banner(raw.decode("utf-8", "replace").rstrip("\n"))

    def _check_loaded_init_task(self) -> None:
        """Check init_task in the host-loaded raw Image, before the guest runs (static data: see layout_check).

        The Image holds the kernel from ``_text`` on at the load address; a
        zImage (still compressed) has no init_task there and waits for the lazy check.
        """
        load = self.machine.kernel_load_address
        if load is None or self.refusal is not None or not self._loaded_banner_seen:
            return
        text = self.layout.text

        def in_image(vaddr: int) -> int | None:
            return load + (vaddr - text) if vaddr >= text else None

        self._check_layout(
            TaskReader(KernelMemory(self.machine.memory.ram, self.machine.memory.ram_base, in_image), self.layout)
        )

    def _check_layout(self, tasks: TaskReader) -> None:
        """Refuse when init_task or init contradicts the profile; done once init was there to check."""
        problem, complete = task_list_mismatch(tasks)
        if problem is not None:
            self._refuse(f"does not fit the guest kernel: {problem}")
        self._layout_checked = complete

    def _refuse_banner(self, guest_banner: str) -> None:
        try:
            guest = f"Linux {release_from_banner(guest_banner)}"
        except ProfileError:
            guest = f"no Linux banner at linux_banner {self.layout.linux_banner:#x} ({guest_banner[:40]!r})"
        self._refuse(f"is for Linux {self.layout.release} but the guest runs {guest}")

    def _refuse(self, why: str) -> None:
        """Stop the run: ``why`` completes "profile PATH ..." in one line; every later query answers nothing."""
        self.refusal = (
            f"osi_linux: profile {self.profile_path} {why}; refusing to read kernel memory with the wrong layout"
        )
        self._validated = False
        self.machine.request_stop("plugin", self.refusal)  # the run's stop reason carries the message

    # -- current task -------------------------------------------------------------------

    def _current_task(self) -> int | None:
        """``current``: TPIDRURO in kernel mode, else the per-cpu ``__entry_task`` (as the last switch wrote it,
        once the switch hook has seen one); read once per instant."""
        if self._forced_task is not None:
            return self._forced_task
        if self._task_epoch == self._epoch:
            return self._task
        self._task = self._read_current_task()
        self._task_epoch = self._epoch
        return self._task

    def _read_current_task(self) -> int | None:
        on_stack = self.layout.stack_thread_info
        if on_stack is not None:
            thread_info = self._registers.banked("sp", "svc") & ~(on_stack.thread_size - 1)
            task = self.mem.u32(thread_info + on_stack.task)
            return task if task is not None and self.tasks.is_kernel_pointer(task) else None
        if self._registers.cpsr & CPSR_MODE_MASK != MODE_USR:
            task = self._tpidruro()[0]
            if task >= self.layout.page_offset:
                return task
            # kernel entry before reload_current: TPIDRURO still holds the user's TLS
        if self._switched_to is not None:
            return self._switched_to
        percpu = self._tpidrprw()[0]
        if percpu == 0:
            return None  # per-cpu areas are not set up yet (early boot)
        assert self.layout.entry_task is not None  # load() refuses a layout with neither way
        task = self.mem.u32((self.layout.entry_task + percpu) & 0xFFFFFFFF)
        return task if task is not None and self.tasks.is_kernel_pointer(task) else None

    def _same_process(self, process: OsiProcess) -> bool:
        """``process`` is still the live task it was read from (not exited, its task_struct not reused)."""
        ident = self.tasks.identity(process.task)
        return ident is not None and ident.tgid == process.pid and ident.start_time == process.start_time

    # -- task changes -------------------------------------------------------------------

    def _on_asid_change(self, switch: AddressSpaceSwitch) -> None:
        """Validate the banner as soon as the kernel runs processes, and follow (un)registrations.

        Registrations on on_task_change and on_thread_exit made after start take
        effect here, at the next address-space switch once the kernel is validated.
        """
        if not self._layout_checked and self.refusal is None:
            self._begin()
        # Hooks at kernel addresses wait until the kernel is known to be the profile's.
        wanted = (self._validated or bool(self.on_task_change), bool(self.on_thread_exit))
        if self._validated and wanted != (self._switch_hook is not None, self._exit_hook is not None):
            self._update_hooks()

    def _update_hooks(self) -> None:
        """An entry hook on ``__switch_to`` once the kernel is validated (it keeps ``current``) or while
        on_task_change has listeners; one on ``do_exit`` exactly while on_thread_exit has listeners."""
        switch_wanted = self._validated or bool(self.on_task_change)
        if switch_wanted and self._switch_hook is None:
            self._last_thread = None
            self._switched_to = None
            self._switch_hook = self.machine.hooks.at_entry(self.layout.switch_to, self._on_switch_to)
        elif not switch_wanted and self._switch_hook is not None:
            self.machine.hooks.remove(self._switch_hook)
            self._switch_hook = None
            self._switched_to = None
        if self.on_thread_exit and self._exit_hook is None:
            self._exit_hook = self.machine.hooks.at_entry(self.layout.do_exit, self._on_exit)
        elif not self.on_thread_exit and self._exit_hook is not None:
            self.machine.hooks.remove(self._exit_hook)
            self._exit_hook = None

    def _on_switch_to(self, _pc: int) -> None:
        """``__switch_to(prev, prev_thread_info, next_thread_info)`` (arch/arm/kernel/entry-armv.S): r0 is the
        previous task_struct; r2 is in the next one (THREAD_INFO_IN_TASK) or points at it (``thread_info.task``)."""
        prev, next_info = self._r0_r2()
        in_task = self.layout.task_thread_info
        self._switched_to = next_info - in_task if in_task is not None and self.tasks.is_kernel_pointer(
            next_info) else None
        self._task_epoch = -1
        if not self.on_task_change or not self._begin():
            return
        on_stack = self.layout.stack_thread_info
        next_task = (
            self.mem.u32(next_info + on_stack.task) if on_stack is not None and self.tasks.is_kernel_pointer(next_info)
            else self._switched_to
        )
        if next_task is None:
            return
        new = self.tasks.thread(next_task)
        if new is None:
            return
        last = self._last_thread
        old = last if last is not None and last.task == prev else self.tasks.thread(prev)
        self._last_thread = new
        self._forced_task = new.task
        try:
            self.on_task_change(old=old, new=new)
        finally:
            self._forced_task = None

    def _on_exit(self, _pc: int) -> None:
        """``do_exit(long code)`` (kernel/exit.c) is where every task ends, ``current`` being the task.

        A process's threads pass here as it dies (``do_group_exit`` hands each the group's code: the
        exit_group status, or the fatal signal), and so does a thread ending alone: the ``exit`` system call
        (``(status & 0xff) << 8``, which a static program without libc makes to end), pthread_exit, a kernel
        thread.  ``code`` is the argument, the task's wait status.
        """
        if not self.on_thread_exit or not self._begin():
            return
        task = self._current_task()
        thread = self.tasks.thread(task) if task is not None else None
        if thread is None:
            return
        self.on_thread_exit(thread=thread, code=self._registers.read("r0"))

    # -- exports ----------------------------------------------------------------------------

    def _guarded(self, name: str, default: T, query: Callable[[], T]) -> T:
        """Run a query; exports never raise, so a bug is logged once and answered with ``default``."""
        try:
            if not self._begin():
                return default
            return query()
        except Exception:
            if name not in self._failed_exports:
                self._failed_exports.add(name)
                logger.exception("osi_linux.%s failed; answering %r", name, default)
            return default

    @export
    def get_current_process(self) -> OsiProcess | None:
        """The process ``current`` belongs to (its thread group), or None before the kernel is up."""
        return self._guarded("get_current_process", None, self._current_process)

    def _current_process(self) -> OsiProcess | None:
        task = self._current_task()
        if task is None:
            return None
        memo = self._memo
        if memo is not None and memo[0] == self._epoch and memo[1] == task:
            return memo[2]
        process = self.tasks.process(task, running=True)
        self._memo = (self._epoch, task, process)
        return process

    @export
    def get_current_thread(self) -> OsiThread | None:
        """The task ``current`` is, or None before the kernel is up."""

        def query() -> OsiThread | None:
            task = self._current_task()
            return self.tasks.thread(task, running=True) if task is not None else None

        return self._guarded("get_current_thread", None, query)

    @export
    def get_current(self) -> tuple[OsiProcess | None, OsiThread | None]:
        """``(get_current_process(), get_current_thread())`` in one query, for a caller that wants both.

        ``current`` and its task_struct are read once for the two (the system call logger's question at
        every call).
        """
        nothing: tuple[OsiProcess | None, OsiThread | None] = (None, None)
        return self._guarded("get_current", nothing, self._current)

    def _current(self) -> tuple[OsiProcess | None, OsiThread | None]:
        """Both answers; when ``current`` leads its thread group and its identity block reads as last time,
        the last answers, which are a function of the two (the leader runs, so both are in state R)."""
        task = self._current_task()
        if task is None:
            return None, None
        ident = self.tasks.identity(task)
        last = self._last_current
        if last is not None and last[0] == task and last[1] == ident:
            return last[2], last[3]
        answers = self._current_process(), self.tasks.thread(task, running=True)
        if ident is not None and ident.group_leader == task and not ident.exit_state:
            self._last_current = (task, ident, *answers)
        else:
            self._last_current = None
        return answers

    @export
    def get_task(self, task: int) -> tuple[OsiProcess | None, OsiThread | None]:
        """``get_current()``'s two answers for any task: its process and itself (``task`` as in ``OsiThread.task``)."""
        nothing: tuple[OsiProcess | None, OsiThread | None] = (None, None)
        return self._guarded("get_task", nothing, lambda: (self.tasks.process(task), self.tasks.thread(task)))

    @export
    def get_syscall(self, thread: OsiThread) -> OsiSyscall | None:
        """The system call ``thread`` is inside now, from the registers its kernel stack holds, or None.

        None for a kernel thread, a thread that is gone, ``current`` while the CPU runs it in user mode
        (its saved registers are an earlier entry's), a thread that entered the kernel otherwise (an
        interrupt or a fault: ``ARM_ORIG_r0`` is -1 and r0 is not, or the instruction before the saved pc is
        no SVC), or a profile without ``pt_regs``.  Also None where that instruction cannot be read in the
        process's page tables: a fork child that has not run yet (fork copies no page-table entries of
        file mappings, mm/memory.c ``vma_needs_copy``) and an execve past its point of no return (the old
        image is gone; the call will not return).  The number is the one the kernel recorded in
        ``thread_info`` and must be the saved r7 (ARM EABI); on kernels before 5.15, which record it only for
        traced tasks, it is the saved r7.  ``/proc/PID/syscall`` in the guest shows the same number (0 on
        5.10 for an untraced task), arguments, sp and pc (plus 2 or 4: it gives the saved pc) for a thread
        blocked in a call.
        """
        return self._guarded("get_syscall", None, lambda: self._syscall(thread))

    def _syscall(self, thread: OsiThread) -> OsiSyscall | None:
        task = thread.task
        ident = self.tasks.identity(task)
        if ident is None or ident.pid != thread.tid or not ident.mm:
            return None
        if task == self._current_task() and self._registers.cpsr & CPSR_MODE_MASK == MODE_USR:
            return None
        process = self.tasks.process(task)
        asid = process.asid if process is not None else None
        if asid is None:
            return None
        memory = self.machine.memory

        def read_code(pc: int, thumb: bool) -> int | None:
            try:
                return memory.read_u16(pc, ttbr0=asid) if thumb else memory.read_u32(pc, ttbr0=asid)
            except GuestMemoryError:
                return None

        return saved_syscall(self.tasks, task, read_code)

    @export
    def get_processes(self) -> list[OsiProcess]:
        """Every thread-group leader on the task list, kernel threads included, like ``ps``."""
        return self._guarded("get_processes", [], self.tasks.processes)

    @export
    def get_process(self, pid: int) -> OsiProcess | None:
        """The process with this pid (a thread group id), or None."""

        def query() -> OsiProcess | None:
            leaders, _ = self.tasks.leaders()
            for task in leaders:
                ident = self.tasks.identity(task)
                if ident is not None and ident.tgid == pid:
                    return self.tasks.process(task)
            return None

        return self._guarded("get_process", None, query)

    @export
    def get_threads(self, process: OsiProcess) -> list[OsiThread]:
        """The threads of ``process``; empty when it no longer exists."""
        return self._guarded(
            "get_threads", [], lambda: self.tasks.threads(process) if self._same_process(process) else []
        )

    @export
    def get_mappings(self, process: OsiProcess) -> list[OsiMapping]:
        """The memory map of ``process`` as ``/proc/PID/maps`` lists it; empty for kernel threads."""

        def query() -> list[OsiMapping]:
            ident = self.tasks.identity(process.task)
            if ident is None or ident.tgid != process.pid or ident.start_time != process.start_time or not ident.mm:
                return []
            return self.maps.mappings(ident.mm)

        return self._guarded("get_mappings", [], query)

    def _open_files(self, process: OsiProcess) -> dict[int, int]:
        if not self._same_process(process):
            return {}
        files = self.mem.u32(process.task + self.layout.task_files)
        if not files or not self.tasks.is_kernel_pointer(files):
            return {}
        return self.paths.open_files(files)[0]

    def _open_file(self, file: int) -> OsiFile:
        path, partial, truncated, raw = self.paths.file_path(file)
        return OsiFile(path, truncated, partial, raw)

    @export
    def get_fds(self, process: OsiProcess) -> dict[int, OsiFile]:
        """{fd: file} of the open files of ``process``, paths as ``readlink /proc/PID/fd/N`` gives them."""
        return self._guarded(
            "get_fds", {}, lambda: {fd: self._open_file(file) for fd, file in self._open_files(process).items()}
        )

    @export
    def fd_to_filename(self, process: OsiProcess, fd: int) -> OsiFile | None:
        """One open fd of ``process`` (its ``path``, and whether it is ``truncated``), or None when it is not open."""

        def query() -> OsiFile | None:
            file = self._open_files(process).get(fd)
            return self._open_file(file) if file is not None else None

        return self._guarded("fd_to_filename", None, query)

    @export
    def get_cwd(self, process: OsiProcess) -> OsiFile | None:
        """The working directory of ``process`` (its leader's), ``path`` as ``readlink /proc/PID/cwd`` gives it;
        None when it no longer exists, has none (exiting), or the profile has no ``fs_struct``."""

        def query() -> OsiFile | None:
            if not self._same_process(process):
                return None
            found = self.paths.working_directory(process.task)
            return OsiFile(found.path, found.truncated, found.partial, found.raw) if found is not None else None

        return self._guarded("get_cwd", None, query)

    @export
    def get_modules(self) -> list[OsiModule]:
        """Loaded kernel modules, newest first (the order of ``/proc/modules``)."""
        return self._guarded("get_modules", [], lambda: read_modules(self.mem, self.layout))

    # -- report -------------------------------------------------------------------------------

    def _dump_ps(self, console: Console) -> None:
        processes = self.get_processes()
        if not processes:
            reason = self.refusal or "the guest kernel never came up far enough to have processes"
            console.print(f"osi_linux: no process list: {reason}", highlight=False, markup=False)
            return
        threads = {p.pid: len(self.get_threads(p)) for p in processes}
        title = f"osi_linux: {len(processes)} processes at instruction {self.machine.insn_count:,}"
        print_process_tree(processes, threads, console, title)


plugin = OsiLinux
