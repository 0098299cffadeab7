"""The ``coverage`` plugin: basic-block coverage of chosen processes, as drcov files and in the run database.

Which processes: ``process=NAME[,NAME...]`` (the name ``ps`` shows, the kernel's ``comm``: a program's
file name cut to 15 bytes) and ``pid=PID[,PID...]``.  A process chosen by name is covered from the
``execve`` that gave it that name (or from its first sight, a fork child of a chosen process having its
parent's name), or from the moment it takes that name: ``prctl(PR_SET_NAME)`` (busybox names a forked
applet so, and a re-executed ``/proc/self/exe`` is first named ``exe``) is seen at the call, at the core's
``on_svc``, and decided at the first block after it; another rename (``/proc/PID/comm``) at the process's
next switch-in.  One chosen by pid is covered for every program it runs.  Each program a process runs is
one coverage *image*: its own drcov file and rows.  A run in which no chosen process ran ends with a
warning (``logging``, on stderr).

How blocks are seen: one block hook (``hooks.on_blocks``) over user space, ``[0, TASK_SIZE)``, present
exactly while a chosen process runs, and added and removed at osi_linux's ``on_task_change``; user code
of any other process and the kernel run unhooked.  A process replacing its program is seen at the core's
``on_asid_change``: the new program runs on a new page directory, and its first instruction fetch faults
(nothing of it is mapped yet), so the change is reported before any of its blocks runs.  When that
report comes while the ``execve`` is still under way (no file is mapped executable yet, so the name may
still be the old one), the hook stays on and the first block of the new program decides.

Blocks are recorded as translated blocks (their start and size in bytes), each distinct pair once, and
given to their module when the process stops running (at the next task change, or at its exit: osi_linux's
``on_thread_exit`` comes before the kernel drops its memory map): the module is the file mapped there
(:mod:`.modules`), from the process's map as read each time it is switched in, and read again when a block
falls outside every known module.  Blocks outside every file (a JIT's code) are not written.  A module
both mapped and run within the turn that ends with an ``execve`` of the process is not known (the map it
was in is gone when the change is seen): its blocks are not written either.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from qppsuite.core.events import SvcEvent
from qppsuite.core.guest import GuestMemoryError
from qppsuite.core.qpp import Arg, Plugin
from qppsuite.errors import PluginError
from qppsuite.plugins.coverage import drcov
from qppsuite.plugins.coverage.modules import Module, ModuleMap, modules_from_mappings, wanted
from qppsuite.plugins.osi_linux.model import OsiMapping, OsiProcess, OsiThread
from qppsuite.plugins.syscalls.table import by_name
from qppsuite.plugins.syscalls.values import column_text, text_or_hex
from qppsuite.plugins.syscalls_logger.run_database import RunDatabase, open_run_database

TASK_SIZE = 0xBF000000
"""The end of user space on 32-bit ARM (``arch/arm/include/asm/memory.h``: ``PAGE_OFFSET - SZ_16M``, Debian's
armmp kernels splitting 3G/1G); above it are kernel modules and the kernel."""
ELF_HEADER = 28
"""Bytes of an ELF32 header up to ``e_entry`` included (``include/uapi/linux/elf.h``, ``Elf32_Ehdr``)."""
ET_DYN = 3
_FILE_NAME = re.compile(r"[^A-Za-z0-9._+-]")
NR_PRCTL = by_name("prctl").number
PR_SET_NAME = 15
"""include/uapi/linux/prctl.h: prctl's option that sets the calling thread's ``comm``."""
logger = logging.getLogger("qppsuite.coverage")


@dataclass(eq=False)
class Image:
    """One program one process ran: what was decided about it, and its blocks.

    ``raw`` holds ``pc << 16 | size`` of every block run (pc virtual, size in bytes); ``done`` those given
    to a module already (or found outside every module); ``blocks`` is
    ``(module id, offset from the module's base, size)``, ids indexing ``modules.modules``.
    """

    process: OsiProcess
    exec_index: int
    chosen: bool = False
    settled: bool = True
    raw: set[int] = field(default_factory=set)
    done: set[int] = field(default_factory=set)
    blocks: set[tuple[int, int, int]] = field(default_factory=set)
    modules: ModuleMap = field(default_factory=ModuleMap)
    entries: dict[Module, int] = field(default_factory=dict)
    first_insn: int = 0
    process_id: int = 0  # its processes row, taken when it is chosen (a later lookup with this stale
    # process would record its old name as a rename)

    def same_program(self, process: OsiProcess) -> bool:
        """Whether ``process`` is this image's process still running this program (same pid, start, mm)."""
        mine = self.process
        return mine.start_time == process.start_time and mine.asid == process.asid


class Coverage(Plugin):
    """Basic-block coverage of chosen processes: drcov files (Lighthouse, Cartographer) and SQLite tables"""

    name = "coverage"
    requires = ("osi_linux",)
    args: ClassVar[Any] = {
        "process": Arg(str, "", help="names of processes to cover, comma-separated (as ps shows them)"),
        "pid": Arg(str, "", help="pids of processes to cover, comma-separated"),
        "modules": Arg(str, "", help="modules to write, comma-separated paths or file names (default: all)"),
        "out": Arg(Path, Path("coverage"), help="directory for the drcov files (created)"),
        "db": Arg(Path, None, help="run database (default: the logger's, or its default name)"),
    }

    def load(self) -> None:
        self.names = frozenset(n.strip() for n in self.args.process.split(",") if n.strip())
        try:
            self.pids = frozenset(int(p, 0) for p in self.args.pid.split(",") if p.strip())
        except ValueError:
            raise PluginError(f"coverage: pid={self.args.pid!r} is not a comma-separated list of pids") from None
        if not self.names and not self.pids:
            raise PluginError(
                "coverage needs the processes to cover", hint="-p coverage:process=NAME[,NAME] or -p coverage:pid=PID"
            )
        self.selectors = tuple(m.strip() for m in self.args.modules.split(",") if m.strip())
        self.out: Path = self.args.out
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PluginError(f"coverage cannot make the directory {self.out}: {exc.strerror}") from None
        import_function = self.qpp.import_function
        self.get_task: Callable[[int], tuple[OsiProcess | None, OsiThread | None]] = import_function(
            "osi_linux", "get_task"
        )
        self.get_current_process: Callable[[], OsiProcess | None] = import_function("osi_linux", "get_current_process")
        self.get_mappings: Callable[[OsiProcess], list[OsiMapping]] = import_function("osi_linux", "get_mappings")
        self.images: list[Image] = []  # every chosen image, in order of first sight
        self._latest: dict[int, Image] = {}  # pid -> the image it runs (chosen or not)
        self._armed: Image | None = None
        self._hook: int | None = None
        self._recording = False  # the hook records into _armed (else it probes it)
        self.qpp.register("osi_linux", "on_task_change", self._on_task_change, owner=self.name)
        self.qpp.register("osi_linux", "on_thread_exit", self._on_thread_exit, owner=self.name)
        self.qpp.register("core", "on_asid_change", self._on_asid_change, owner=self.name)
        if self.names:
            self._svc_regs = self.machine.registers.reader("r7", "r0")
            self.qpp.register("core", "on_svc", self._on_svc, owner=self.name)
        self.db: RunDatabase = open_run_database(self, self.args.db)
        self.module_rows = self.db.table(
            self.name,
            "coverage_modules",
            {
                "id": int, "process_id": int, "exec_index": int, "program": str, "module_index": int,
                "path": str, "base": int, "end": int, "entry": int, "block_count": int, "drcov_file": str,
            },
            foreign_keys=[("process_id", "processes")],
            indexes=[("run_id", "process_id")],
        )  # fmt: skip
        self.block_rows = self.db.table(
            self.name,
            "coverage_blocks",
            {"module_id": int, "offset": int, "size": int},
            pk=("module_id", "offset", "size"),
            foreign_keys=[("module_id", "coverage_modules")],
        )

    def start(self) -> None:
        """Whoever runs as the guest starts (a restored snapshot's current process) until the first switch."""
        self._enter(self.get_current_process())

    # -- which process runs -------------------------------------------------------------

    def _on_task_change(self, new: OsiThread) -> None:
        process, _ = self.get_task(new.task)
        self._enter(process)

    def _on_asid_change(self) -> None:
        """A new page directory: a task switch (osi_linux reports it at ``__switch_to``) or an ``execve``."""
        self._enter(self.get_current_process())

    def _on_svc(self, event: SvcEvent) -> None:
        """``prctl(PR_SET_NAME, name)`` of a process not covered: its first block after the call decides again
        (the name is the new one then); r7 is the call's number, r0 its option (arch/arm/kernel/entry-common.S)."""
        if self._recording:
            return
        number, option = self._svc_regs()
        if number != NR_PRCTL or option != PR_SET_NAME:
            return
        process = self.get_current_process()
        image = self._latest.get(process.pid) if process is not None else None
        if process is None or image is None or image.chosen or not image.same_program(process):
            return
        image.settled = False
        self._arm(image)

    def _on_thread_exit(self, thread: OsiThread) -> None:
        """A thread of the covered process ends: its blocks go to their modules while its map is still there."""
        armed = self._armed
        if armed is not None and thread.pid == armed.process.pid:
            self._resolve(armed, read_map=True)

    def _enter(self, process: OsiProcess | None) -> None:
        """``process`` runs from now on (None or a kernel thread: no user code): hook its blocks or not."""
        if process is None or process.asid is None:
            self._disarm()
            return
        image = self._latest.get(process.pid)
        if image is None or not image.same_program(process):
            if image is not None and image is self._armed:
                self._disarm(read_map=False)  # the map is the new program's (or a new process's) now
            execed = image is not None and image.process.start_time == process.start_time
            previous_name = image.process.name if image is not None else ""
            exec_index = image.exec_index + 1 if image is not None and execed else 0
            image = self._latest[process.pid] = Image(process, exec_index, first_insn=self.machine.insn_count)
            # A process first seen runs its parent's program (seen at its first switch-in); after an execve, a
            # new name is the new program's (the kernel renames it after replacing the map): only an execve
            # seen under the old name may still be under way.
            self._decide(image, final=not execed or image.process.name != previous_name)
        elif not image.settled:
            image.process = process
            self._decide(image, final=False)
        elif not image.chosen and process.name != image.process.name:  # renamed since: /proc/PID/comm, prctl
            image.process = process
            self._decide(image, final=True)
        if image.chosen or not image.settled:
            self._arm(image)
        else:
            self._disarm()

    def _decide(self, image: Image, *, final: bool) -> None:
        """Whether ``image`` is covered; by name only once its ``execve`` has mapped the program (``final``: its
        name is the program's, or its code runs, so it has)."""
        process = image.process
        if process.pid in self.pids or not self.names:
            chosen, settled = process.pid in self.pids, True
        elif process.name not in self.names:
            chosen, settled = False, final or self._mapped(process)
        else:
            chosen = settled = final or self._mapped(process)
        image.settled = settled
        if chosen and not image.chosen:
            image.chosen = True
            image.process_id = self.db.process_id(process, image.first_insn)
            self.images.append(image)

    def _mapped(self, process: OsiProcess) -> bool:
        """Whether a file is mapped executable in ``process`` (an ``execve`` maps its program before it runs)."""
        return any(m.path.startswith("/") and m.perms[2:3] == "x" for m in self.get_mappings(process))

    # -- the block hook -----------------------------------------------------------------

    def _arm(self, image: Image) -> None:
        """Hook user-space blocks into ``image`` (or, while its ``execve`` is under way, into :meth:`_probe`)."""
        recording = image.chosen
        if self._armed is image and self._hook is not None and self._recording == recording:
            return
        self._disarm()
        self._armed, self._recording = image, recording
        if recording:
            self._read_map(image)  # what it has mapped so far: an execve ending its turn leaves no map to read
        function = _recorder(image.raw) if recording else self._probe
        self._hook = self.machine.hooks.on_blocks(function, begin=0, end=TASK_SIZE - 1)

    def _disarm(self, *, read_map: bool = True) -> None:
        armed = self._armed
        if armed is None:
            return
        self._armed = None
        if self._hook is not None:
            self.machine.hooks.remove(self._hook)
            self._hook = None
        if armed.chosen:
            self._resolve(armed, read_map=read_map)

    def _probe(self, pc: int, size: int) -> None:
        """The first block of a program whose ``execve`` was seen under way: it is mapped now; decide."""
        image = self._armed
        if image is None:
            return
        current = self.get_current_process()
        if current is not None and current.pid == image.process.pid:
            image.process = current  # its name as the execve left it
        self._decide(image, final=True)
        if image.chosen:
            image.raw.add(pc << 16 | size)
            self._arm(image)
        else:
            self._disarm()

    # -- blocks to modules ----------------------------------------------------------------

    def _resolve(self, image: Image, *, read_map: bool) -> None:
        """Give the blocks run since the last call to their modules, reading the map again for any outside them
        (``read_map``: the process still has it)."""
        fresh = image.raw - image.done
        if not fresh:
            return
        image.done |= fresh
        modules = image.modules
        outside: list[int] = []
        for attempt in (0, 1):
            for key in fresh:
                pc = key >> 16
                module_id = modules.find(pc)
                if module_id is None:
                    outside.append(key)
                else:
                    image.blocks.add((module_id, pc - modules.modules[module_id].base, key & 0xFFFF))
            if not outside or attempt or not read_map:
                break
            self._read_map(image)
            fresh, outside = set(outside), []

    def _read_map(self, image: Image) -> None:
        """Read the process's map again; a module's entry point is read until its header's page is in."""
        mapped = modules_from_mappings(self.get_mappings(image.process))
        image.modules.update(mapped)
        for module in mapped:
            if not image.entries.get(module):
                image.entries[module] = self._entry(image.process, module)

    def _entry(self, process: OsiProcess, module: Module) -> int:
        """The module's entry point from its ELF header in guest memory (``e_entry``, plus the base for a
        position-independent file); 0 when the header's page is not mapped in or is no ELF32 header."""
        try:
            header = self.machine.memory.read(module.base, ELF_HEADER, ttbr0=process.asid)
        except GuestMemoryError:
            return 0
        if header[:5] != b"\x7fELF\x01":
            return 0
        entry = int.from_bytes(header[24:28], "little")
        return (module.base + entry) & 0xFFFFFFFF if int.from_bytes(header[16:18], "little") == ET_DYN else entry

    # -- the run's end ------------------------------------------------------------------------

    def stop(self, reason: Any) -> None:
        self._disarm()
        self.db.stopped(reason)

    def unload(self) -> None:
        self._disarm()
        if not self.images:
            chosen = [f"named {name}" for name in sorted(self.names)] + [f"pid {pid}" for pid in sorted(self.pids)]
            logger.warning("coverage: no process %s ran during the run; nothing was covered", " or ".join(chosen))
        try:
            for image in self.images:
                self._write(image)
        finally:
            self.db.release(self.name)

    def drcov_path(self, image: Image) -> Path:
        """``drcov.<name>.<pid>.<exec index>.proc.log`` in ``out``, after DynamoRIO's ``drcov.<app>.<pid>....log``;
        characters of the name other than letters, digits and ``._+-`` become ``_``."""
        process = image.process
        return self.out / f"drcov.{_FILE_NAME.sub('_', process.name)}.{process.pid}.{image.exec_index}.proc.log"

    def _write(self, image: Image) -> None:
        """The image's drcov file and rows: its wanted modules, renumbered from 0, and their blocks; nothing for
        an image with no wanted module (Dragon Dance misreads an empty module table)."""
        self._resolve(image, read_map=False)
        modules = image.modules.modules
        keep = [i for i, module in enumerate(modules) if wanted(module, self.selectors)]
        if not keep:
            return
        new_id = {old: new for new, old in enumerate(keep)}
        blocks = sorted((new_id[m], offset, size) for m, offset, size in image.blocks if m in new_id)
        path = self.drcov_path(image)
        table = [
            drcov.DrcovModule(modules[i].path, modules[i].base, modules[i].end, image.entries.get(modules[i], 0))
            for i in keep
        ]
        try:
            drcov.write(path, table, blocks)
        except OSError as exc:
            raise PluginError(f"coverage cannot write {path}: {exc.strerror}") from None
        process_id = image.process_id
        counts = [0] * len(keep)
        for module_id, _, _ in blocks:
            counts[module_id] += 1
        row_ids = []
        for index, module in enumerate(table):
            row_ids.append(self.module_rows.add({
                "process_id": process_id, "exec_index": image.exec_index,
                "program": column_text(image.process.stored_name), "module_index": index,
                "path": column_text(text_or_hex(module.path.encode("utf-8", "surrogateescape"))),
                "base": module.base, "end": module.end,
                "entry": module.entry, "block_count": counts[index], "drcov_file": str(path),
            }))  # fmt: skip
        for module_id, offset, size in blocks:
            self.block_rows.add({"module_id": row_ids[module_id], "offset": offset, "size": size})


def _recorder(raw: set[int]) -> Callable[[int, int], None]:
    """The block hook's function for one image: ``pc << 16 | size`` into its set (one Python call per block)."""
    add = raw.add

    def record(pc: int, size: int) -> None:
        add(pc << 16 | size)

    return record


plugin = Coverage
