"""The coverage plugin without a guest: drcov files, module tables from memory maps, and which blocks it hooks.

A stand-in osi_linux answers with processes and maps the test sets, and a stand-in machine runs the block
hooks the plugin adds on the blocks the test says run; the guest tests (test_coverage_guest.py) check the
same against real programs.
"""

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from drcov_reader import read_drcov, read_drcov_file
from syscall_harness import NoMachineCore, rows

from qppsuite.core.events import AddressSpaceSwitch, SvcEvent
from qppsuite.core.guest import GuestMemoryError
from qppsuite.core.qpp import QPP, Plugin, export
from qppsuite.errors import PluginError
from qppsuite.plugins.coverage import NR_PRCTL, PR_SET_NAME, TASK_SIZE, Coverage
from qppsuite.plugins.coverage.drcov import DrcovModule, escape_path, render
from qppsuite.plugins.coverage.modules import Module, ModuleMap, modules_from_mappings
from qppsuite.plugins.osi_linux import OsiLinux
from qppsuite.plugins.osi_linux.model import OsiMapping, OsiProcess, OsiThread, split_text

# /proc/PID/maps of python3 -c in the oracle image (bookworm armhf), as osi_linux reads it: a non-PIE
# executable whose data segment is mapped at another distance from its file offset than its text.
PYTHON_MAPS = [
    OsiMapping(0x00010000, 0x00356000, "r-xp", 0, "/usr/bin/python3.11"),
    OsiMapping(0x00365000, 0x00366000, "r--p", 0x345000, "/usr/bin/python3.11"),
    OsiMapping(0x00366000, 0x0049C000, "rw-p", 0x346000, "/usr/bin/python3.11"),
    OsiMapping(0x0049C000, 0x00520000, "rw-p", 0, "[heap]"),
    OsiMapping(0xB6A00000, 0xB6C00000, "r--p", 0, "/usr/lib/locale/C.utf8/LC_CTYPE"),
    OsiMapping(0xB6D7E000, 0xB6E6C000, "r-xp", 0, "/lib/arm-linux-gnueabihf/libc.so.6"),
    OsiMapping(0xB6E6C000, 0xB6E7B000, "---p", 0xEE000, "/lib/arm-linux-gnueabihf/libc.so.6"),
    OsiMapping(0xB6E7B000, 0xB6E7D000, "r--p", 0xED000, "/lib/arm-linux-gnueabihf/libc.so.6"),
    OsiMapping(0xB6E7D000, 0xB6E7F000, "rw-p", 0xEF000, "/lib/arm-linux-gnueabihf/libc.so.6"),
    OsiMapping(0xB6E7F000, 0xB6E8B000, "rw-p", 0, ""),
    OsiMapping(0xB6F2C000, 0xB6F4B000, "r-xp", 0, "/lib/arm-linux-gnueabihf/ld-linux-armhf.so.3"),
    OsiMapping(0xB6F4E000, 0xB6F4F000, "r-xp", 0, "[sigpage]"),
    OsiMapping(0xBE8D1000, 0xBE8F2000, "rw-p", 0, "[stack]"),
    OsiMapping(0xFFFF0000, 0xFFFF1000, "r-xp", 0, "[vectors]"),
]
PYTHON = Module("/usr/bin/python3.11", 0x10000, 0x49C000)
LIBC = Module("/lib/arm-linux-gnueabihf/libc.so.6", 0xB6D7E000, 0xB6E7F000)
LD_SO = Module("/lib/arm-linux-gnueabihf/ld-linux-armhf.so.3", 0xB6F2C000, 0xB6F4B000)
SH_MAPS = [
    OsiMapping(0x00400000, 0x00520000, "r-xp", 0, "/bin/busybox"),
    OsiMapping(0x00530000, 0x00532000, "rw-p", 0x120000, "/bin/busybox"),
]


def test_a_module_is_based_where_its_file_offset_0_is_mapped() -> None:
    assert modules_from_mappings(PYTHON_MAPS) == [PYTHON, LIBC, LD_SO]


def test_separate_code_libraries_and_a_file_mapped_twice() -> None:
    """ld's -z separate-code maps the headers r--p from offset 0 and the text r-xp after it; a second copy of
    a file (offset 0 again) is another module; a file mapped only from a later offset is based at start - offset."""
    maps = [
        OsiMapping(0x40000000, 0x40001000, "r--p", 0, "/lib/libsep.so"),
        OsiMapping(0x40001000, 0x40005000, "r-xp", 0x1000, "/lib/libsep.so"),
        OsiMapping(0x40005000, 0x40006000, "rw-p", 0x5000, "/lib/libsep.so"),
        OsiMapping(0x50000000, 0x50001000, "r--p", 0, "/lib/libsep.so"),
        OsiMapping(0x50001000, 0x50005000, "r-xp", 0x1000, "/lib/libsep.so"),
        OsiMapping(0x60003000, 0x60004000, "r-xp", 0x3000, "/opt/blob"),
        OsiMapping(0x70000000, 0x70001000, "r--p", 0, "/data/only-read"),
    ]
    assert modules_from_mappings(maps) == [
        Module("/lib/libsep.so", 0x40000000, 0x40006000),
        Module("/lib/libsep.so", 0x50000000, 0x50005000),
        Module("/opt/blob", 0x60000000, 0x60004000),
    ]


def test_the_module_map_finds_a_pc_and_replaces_what_a_new_module_overlaps() -> None:
    modules = ModuleMap()
    modules.update([PYTHON, LIBC])
    assert (modules.find(0x10000), modules.find(0x49BFFF), modules.find(0x49C000)) == (0, 0, None)
    assert modules.find(0xB6D7E123) == 1 and modules.find(0xFFFF0000) is None
    other = Module("/lib/other.so", 0xB6D70000, 0xB6D90000)  # libc unloaded, another library there
    modules.update([PYTHON, other])
    assert modules.find(0xB6D7E123) == 2 and modules.modules == [PYTHON, LIBC, other]
    modules.update([LIBC])  # and libc back: it keeps its id
    assert modules.find(0xB6D7E123) == 1 and len(modules) == 3


def test_a_drcov_file_reads_back_as_written() -> None:
    modules = [DrcovModule(PYTHON.path, PYTHON.base, PYTHON.end, 0x15F529), DrcovModule(LIBC.path, LIBC.base, LIBC.end)]
    data = render(modules, [(0, 0x14F528, 16), (1, 0x1E4A8, 6), (0, 0, 0xFFFF)])
    drcov = read_drcov(data)
    assert drcov.columns == ["id", "base", "end", "entry", "checksum", "timestamp", "path"]
    assert [(m.path, m.base, m.end, m.entry, m.checksum, m.timestamp) for m in drcov.modules] == [
        (PYTHON.path, 0x10000, 0x49C000, 0x15F529, 0, 0),
        (LIBC.path, LIBC.base, LIBC.end, 0, 0, 0),
    ]
    assert drcov.blocks == [(0x14F528, 16, 0), (0x1E4A8, 6, 1), (0, 0xFFFF, 0)]
    assert b"\nBB Table: 3 bbs\n" in data
    with pytest.raises(ValueError, match="names module 2"):
        render(modules, [(2, 0, 4)])


def test_a_hostile_path_cannot_break_the_module_table() -> None:
    """Cartographer and Dragon Dance split a module line at every comma, Lighthouse at ', ', all by lines."""
    path = "/tmp/a, b,c\nBB Table: 9 bbs\r%41"
    escaped = escape_path(path)
    assert escaped == "/tmp/a%2C b%2Cc%0ABB Table: 9 bbs%0D%2541"
    drcov = read_drcov(render([DrcovModule(path, 0x1000, 0x2000)], [(0, 0, 4)]))
    assert drcov.modules[0].path == escaped and drcov.blocks == [(0, 4, 0)]
    line = render([DrcovModule(path, 0x1000, 0x2000)], []).split(b"\n")[4]
    assert len(line.split(b",")) == 7


# -- the plugin with stand-ins --------------------------------------------------------------


def process(pid: int, name: str, asid: int | None, start_time: int = 1_000) -> OsiProcess:
    return OsiProcess(pid, pid, 1, name, asid, 0xC1000000 + pid * 0x1000, start_time, asid is None)


class StandInOsi(Plugin):
    """osi_linux's callbacks and the exports coverage uses, answering with what the test sets."""

    name = "osi_linux"
    callbacks = OsiLinux.callbacks

    def load(self) -> None:
        self.processes: dict[int, OsiProcess] = {}  # task -> process
        self.maps: dict[int, list[OsiMapping]] = {}  # pid -> its map
        self.current: OsiProcess | None = None

    @export
    def get_task(self, task: int) -> tuple[OsiProcess | None, OsiThread | None]:
        found = self.processes.get(task)
        return found, None if found is None else OsiThread(found.pid, found.pid, found.name, task)

    @export
    def get_current_process(self) -> OsiProcess | None:
        return self.current

    @export
    def get_mappings(self, process: OsiProcess) -> list[OsiMapping]:
        return self.maps.get(process.pid, [])


class StandInMachine:
    """Block hooks run on the blocks the test runs; guest memory holds ELF headers at the test's addresses."""

    def __init__(self) -> None:
        self.blocks: dict[int, tuple[Callable[[int, int], None], int, int]] = {}  # handle -> hook
        self.added = 0
        self.insn_count = 0
        self.headers: dict[int, bytes] = {}
        self.memory = SimpleNamespace(read=self.read)
        self.hooks = SimpleNamespace(on_blocks=self.on_blocks, remove=self.remove)
        self.regs = {"r0": 0, "r7": 0}
        self.registers = SimpleNamespace(reader=lambda *names: lambda: tuple(self.regs[n] for n in names))

    def on_blocks(self, fn: Callable[[int, int], None], *, begin: int, end: int) -> int:
        self.added += 1
        self.blocks[self.added] = (fn, begin, end)
        return self.added

    def remove(self, handle: int) -> None:
        del self.blocks[handle]

    def run(self, *blocks: tuple[int, int]) -> None:
        for pc, size in blocks:
            self.insn_count += size // 4
            for fn, begin, end in list(self.blocks.values()):
                if begin <= pc <= end:
                    fn(pc, size)

    def read(self, vaddr: int, size: int, *, ttbr0: int | None = None) -> bytes:
        if vaddr not in self.headers:
            raise GuestMemoryError(vaddr)
        return self.headers[vaddr][:size]


class Run:
    def __init__(self, qpp: QPP, machine: StandInMachine, tmp: Path) -> None:
        self.qpp, self.machine, self.tmp = qpp, machine, tmp
        self.osi: StandInOsi = qpp.get("osi_linux")  # type: ignore[assignment]

    def switch_to(self, proc: OsiProcess) -> None:
        """A task switch to ``proc``'s leader: osi_linux at __switch_to, the core at the next exception."""
        task = proc.task
        self.osi.processes[task] = proc
        self.osi.current = proc
        self.qpp.callback("osi_linux", "on_task_change")(old=None, new=OsiThread(proc.pid, proc.pid, proc.name, task))
        self.asid_change(proc)

    def asid_change(self, proc: OsiProcess) -> None:
        self.osi.processes[proc.task] = proc
        self.osi.current = proc
        switch = AddressSpaceSwitch(0, proc.asid or 0, 0, self.machine.insn_count)
        self.qpp.callback("core", "on_asid_change")(switch=switch)

    def svc(self, number: int, r0: int) -> None:
        """The current process is about to make system call ``number`` with ``r0``: the core's on_svc."""
        self.machine.regs.update(r7=number, r0=r0)
        self.qpp.callback("core", "on_svc")(event=SvcEvent(0x76F0A1C0, False, self.machine.insn_count))

    def exit(self, proc: OsiProcess) -> None:
        self.qpp.callback("osi_linux", "on_thread_exit")(
            thread=OsiThread(proc.pid, proc.pid, proc.name, proc.task), code=0
        )
        self.osi.maps.pop(proc.pid, None)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    qpps: list[QPP] = []

    def started(current: tuple[OsiProcess, list[OsiMapping]] | None = None, **args: str) -> Run:
        """Coverage loaded with ``args`` and started, ``current`` (a process and its map) running as it starts."""
        machine = StandInMachine()
        qpp = QPP(machine)  # type: ignore[arg-type]
        qpps.append(qpp)
        qpp.add_builtin(NoMachineCore())
        qpp.add_builtin(StandInOsi())
        plugin_args = {"out": str(tmp_path / "out"), "db": str(tmp_path / "run.db"), **args}
        qpp.load_all([Coverage], {"coverage": plugin_args})
        if current is not None:
            osi: StandInOsi = qpp.get("osi_linux")  # type: ignore[assignment]
            osi.current, osi.maps[current[0].pid] = current
        qpp.start_all()
        qpp.callback("core", "on_start")()  # the machine's run begins with it
        return Run(qpp, machine, tmp_path)

    yield started
    for qpp in qpps:
        qpp.unload_all()


def elf_header(entry: int, e_type: int) -> bytes:
    return b"\x7fELF\x01\x01\x01" + bytes(9) + e_type.to_bytes(2, "little") + bytes(6) + entry.to_bytes(4, "little")


def test_a_process_chosen_by_name_is_covered_from_its_execve_and_nothing_else(start: Callable[..., Run]) -> None:
    run = start(process="python3")
    machine, osi = run.machine, run.osi
    machine.headers[0x10000] = elf_header(0x15F529, 2)  # ET_EXEC: e_entry as it is
    machine.headers[LD_SO.base] = elf_header(0x10891, 3)  # ET_DYN: relocated
    shell, child = process(100, "sh", 0x4000), process(101, "sh", 0x5000)
    osi.maps = {100: SH_MAPS, 101: SH_MAPS}
    run.switch_to(shell)
    machine.run((0x400100, 8))
    run.switch_to(child)  # the fork child: still the shell's program
    machine.run((0x400200, 8))
    assert machine.blocks == {}
    # execve, seen while it is under way: a new page directory, the old name, nothing mapped yet
    osi.maps[101] = []
    run.asid_change(process(101, "sh", 0x6000))
    assert len(machine.blocks) == 1  # the first block decides
    osi.current = python = process(101, "python3", 0x6000)
    osi.maps[101] = PYTHON_MAPS
    machine.run((0xB6F3C890, 12), (0x15F528, 16), (0x15F528, 16), (0xB6D80000, 6), (TASK_SIZE, 4))
    run.switch_to(shell)
    assert machine.blocks == {}
    machine.run((0x400100, 8))
    run.switch_to(python)
    machine.run((0x20000, 4), (0x15F528, 4), (0xB6F4E000, 8))  # a one-instruction block, and the sigpage
    run.exit(python)
    run.switch_to(shell)
    run.qpp.unload_all()

    (path,) = (run.tmp / "out").iterdir()
    assert path.name == "drcov.python3.101.1.proc.log"
    drcov = read_drcov_file(path)
    assert [(m.path, m.base, m.end, m.entry) for m in drcov.modules] == [  # in the map's order
        (PYTHON.path, PYTHON.base, PYTHON.end, 0x15F529),
        (LIBC.path, LIBC.base, LIBC.end, 0),  # its header page is not in memory
        (LD_SO.path, LD_SO.base, LD_SO.end, LD_SO.base + 0x10891),
    ]
    assert sorted(drcov.blocks) == [
        (0x2000, 6, 1),
        (0x10000, 4, 0),
        (0x10890, 12, 2),
        (0x14F528, 4, 0),
        (0x14F528, 16, 0),
    ]
    db = run.tmp / "run.db"
    modules = rows(db, "SELECT * FROM coverage_modules ORDER BY module_index")
    assert [(m["path"], m["block_count"], m["exec_index"], m["program"]) for m in modules] == [
        (PYTHON.path, 3, 1, "python3"),
        (LIBC.path, 1, 1, "python3"),
        (LD_SO.path, 1, 1, "python3"),
    ]
    (owner,) = rows(
        db, "SELECT p.pid, p.name FROM processes p JOIN coverage_modules m ON m.process_id = p.id GROUP BY p.id"
    )
    assert owner == {"pid": 101, "name": "python3"}
    blocks = rows(
        db, "SELECT m.path, b.offset, b.size FROM coverage_blocks b JOIN coverage_modules m ON m.id = b.module_id"
    )
    assert len(blocks) == 5 and {"path": PYTHON.path, "offset": 0x14F528, "size": 16} in blocks


def test_a_process_chosen_by_pid_keeps_each_program_apart_and_only_the_chosen_modules_are_written(
    start: Callable[..., Run],
) -> None:
    shell = process(100, "sh", 0x4000)
    run = start((shell, SH_MAPS), pid="100", modules="busybox,python3.11")  # it runs as the guest starts
    osi = run.osi
    run.machine.run((0x400100, 8), (0x400100, 8))
    osi.maps[100] = PYTHON_MAPS
    run.asid_change(python := process(100, "python3", 0x6000))  # exec sh -> python3
    run.machine.run((0x15F528, 16), (0xB6D80000, 6))
    run.switch_to(process(7, "init", 0x8000))
    run.machine.run((0x15F528, 8))
    run.switch_to(python)
    run.machine.run((0x15F528, 12))
    run.qpp.unload_all()
    first, second = sorted((run.tmp / "out").iterdir())
    assert (first.name, second.name) == ("drcov.python3.100.1.proc.log", "drcov.sh.100.0.proc.log")
    sh, py = read_drcov_file(second), read_drcov_file(first)
    assert [m.path for m in sh.modules] == ["/bin/busybox"] and sh.blocks == [(0x100, 8, 0)]
    assert [m.path for m in py.modules] == [PYTHON.path] and py.blocks == [(0x14F528, 12, 0), (0x14F528, 16, 0)]


def test_a_module_path_that_is_not_utf8_is_percent_escaped_in_drcov_and_hex_in_the_table(
    start: Callable[..., Run],
) -> None:
    """python3 dlopens /tmp/li,b\\n\\x1b[2J%zz\\xff.so (a hostile file name): each unsafe character and each byte
    that is not UTF-8 is ``%XX`` in the drcov table; ``coverage_modules.path`` is ``{"hex": ...}``."""
    raw = b"/tmp/li,b\n\x1b[2J%zz\xff.so"
    text, raw_path = split_text(raw)
    run = start(process="python3")
    run.osi.maps = {101: [*SH_MAPS[:1], OsiMapping(0xB6000000, 0xB6001000, "r-xp", 0, text, raw_path=raw_path)]}
    run.switch_to(process(101, "python3", 0x6000))
    run.machine.run((0xB6000010, 8))
    run.qpp.unload_all()
    (path,) = (run.tmp / "out").iterdir()
    assert [m.path for m in read_drcov_file(path).modules] == ["/bin/busybox", "/tmp/li%2Cb%0A%1B[2J%25zz%FF.so"]
    assert b"\xef\xbf\xbd" not in path.read_bytes()
    stored = rows(run.tmp / "run.db", "SELECT path, block_count FROM coverage_modules ORDER BY module_index")
    assert stored[1] == {"path": json.dumps({"hex": raw.hex()}), "block_count": 1}


def test_a_busybox_applet_named_by_prctl_is_covered_from_its_new_name(
    start: Callable[..., Run], caplog: pytest.LogCaptureFixture
) -> None:
    """ash runs ``cat`` as a re-executed /proc/self/exe (named ``exe``) or a forked child (named ``sh``) that
    busybox renames with prctl(PR_SET_NAME, "cat") before the applet runs, all within one turn."""
    run = start(process="cat")
    machine, osi = run.machine, run.osi
    osi.maps = {100: SH_MAPS}
    run.switch_to(exe := process(100, "exe", 0x4000))
    machine.run((0x400100, 8))
    run.svc(NR_PRCTL, 16)  # PR_GET_NAME: nothing to decide
    assert machine.blocks == {}
    run.svc(NR_PRCTL, PR_SET_NAME)
    osi.current = cat = replace(exe, name="cat")
    machine.run((0x400200, 8), (0x400300, 4))
    run.exit(cat)
    run.qpp.unload_all()
    (path,) = (run.tmp / "out").iterdir()
    assert path.name == "drcov.cat.100.0.proc.log"

    assert sorted(read_drcov_file(path).blocks) == [(0x200, 8, 0), (0x300, 4, 0)]
    assert not [r for r in caplog.records if r.name == "qppsuite.coverage"]


def test_the_writes_at_the_end_record_no_stale_name(start: Callable[..., Run]) -> None:
    """A covered process renamed later (the logger or proc_events saw it so): its row keeps the last name."""
    run = start(process="sh")
    run.osi.maps = {100: SH_MAPS}
    run.switch_to(sh := process(100, "sh", 0x4000))
    run.machine.run((0x400100, 8))
    coverage: Coverage = run.qpp.get("coverage")  # type: ignore[assignment]
    coverage.db.process_id(replace(sh, name="EVIL"))
    run.qpp.unload_all()
    (row,) = rows(run.tmp / "run.db", "SELECT name, names FROM processes")
    assert row == {"name": "EVIL", "names": '["sh", "EVIL"]'}


def test_a_process_renamed_another_way_is_covered_from_its_next_switch_in(start: Callable[..., Run]) -> None:
    run = start(process="worker")
    run.osi.maps = {100: SH_MAPS, 7: SH_MAPS}
    run.switch_to(sh := process(100, "sh", 0x4000))
    run.machine.run((0x400100, 8))
    run.switch_to(process(7, "init", 0x8000))  # meanwhile: echo worker > /proc/100/comm
    run.switch_to(replace(sh, name="worker"))
    run.machine.run((0x400200, 8))
    run.qpp.unload_all()
    (path,) = (run.tmp / "out").iterdir()
    assert read_drcov_file(path).blocks == [(0x200, 8, 0)]


def test_a_run_in_which_no_chosen_process_ran_ends_with_a_warning(
    start: Callable[..., Run], caplog: pytest.LogCaptureFixture
) -> None:
    run = start(process="cat,tac", pid="4242")
    run.osi.maps = {100: SH_MAPS}
    run.switch_to(process(100, "exe", 0x4000))
    run.machine.run((0x400100, 8))
    run.qpp.unload_all()
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "qppsuite.coverage"]
    assert warning == "coverage: no process named cat or named tac or pid 4242 ran during the run; nothing was covered"


def test_the_processes_to_cover_must_be_named(tmp_path: Path) -> None:
    with QPP(StandInMachine()) as qpp, pytest.raises(PluginError, match="needs the processes to cover"):  # type: ignore[arg-type]
        qpp.add_builtin(NoMachineCore())
        qpp.add_builtin(StandInOsi())
        qpp.load_all([Coverage], {"coverage": {"out": str(tmp_path)}})
    with QPP(StandInMachine()) as qpp, pytest.raises(PluginError, match="not a comma-separated list of pids"):  # type: ignore[arg-type]
        qpp.add_builtin(NoMachineCore())
        qpp.add_builtin(StandInOsi())
        qpp.load_all([Coverage], {"coverage": {"out": str(tmp_path), "pid": "12,x"}})


def test_a_program_with_no_module_to_write_has_no_file(start: Callable[..., Run]) -> None:
    run = start(process="sh", modules="libc.so.6")
    run.osi.maps = {100: SH_MAPS}
    run.switch_to(process(100, "sh", 0x4000))
    run.machine.run((0x400100, 8))
    run.qpp.unload_all()
    assert list((run.tmp / "out").iterdir()) == []
    assert rows(run.tmp / "run.db", "SELECT * FROM coverage_modules") == []
