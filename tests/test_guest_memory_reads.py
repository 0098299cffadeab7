"""Reading guest memory where the hardware page tables say nothing but the page is resident.

After fork, ARM Linux leaves the child's hardware PTEs at 0 until each page is touched
("young" emulation, arch/arm/mm/proc-v7-2level.S); the Linux PTE beside it says present.
Introspection must read those pages as the kernel would.  And an input string in a page the
process has not touched yet is read again when the call returns, after the kernel faulted it in.

The oracle is the guest's own strace: ``strace -f -v`` prints execve's argv and environment in full.
The unit test replays pages dumped at the child's execve in a real boot, with what the guest's
strace printed for that execve (``tests/data/memory/perl_fork_execve.json.gz``, 5 KB; rewritten by
``QPPSUITE_WRITE_DUMPS=1 python -m pytest tests/test_guest_memory_reads.py``).
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from oracle.guest import logged_run

from qppsuite.core.memory import GuestMemoryError, PhysicalMemory, VirtualMemory, linux_pte
from qppsuite.core.mmu import ACCESS_READ, FS_TRANSLATION_PAGE, MmuFault, TranslationRegs, walk
from qppsuite.core.qpp import Plugin
from qppsuite.images.bundle import ImageBundle
from qppsuite.plugins.syscalls.context import SyscallContext

DUMP = Path(__file__).parent / "data" / "memory" / "perl_fork_execve.json.gz"
PERL = """perl -e 'if (!fork) { exec "/bin/echo", "argone", "argtwo" } wait'"""
CMD = (
    f"strace -f -v -s 256 -e trace=execve -o /tmp/s.txt {PERL}; "
    "echo STRACE-BEGIN; cat /tmp/s.txt; echo STRACE-END; readlink /proc/self/exe"
)
PAGE = 4096


class ExecveDump(Plugin):
    """At the fork child's execve of /bin/echo, saves every page a read of argv and envp touches."""

    name = "execve_dump"
    requires = ("syscalls",)

    def load(self) -> None:
        self.dump: dict[str, Any] | None = None
        self.qpp.register("syscalls", "on_sys_execve", self._execve, owner=self.name)

    def _execve(self, ctx: SyscallContext) -> None:
        machine = self.machine._machine  # white-box: the dump needs the page-table registers and RAM's extent
        path = machine.memory.read_cstring(ctx.raw_args[0], 64)
        if path != b"/bin/echo" or self.dump is not None:
            return
        regs = machine.cpu.translation_regs()
        pages: dict[int, bytes] = {}

        def keep(paddr: int) -> None:
            base = paddr & ~(PAGE - 1)
            pages.setdefault(base, machine.phys.read(base, PAGE))

        def keep_walk(vaddr: int) -> None:
            l1_addr = (regs.ttbr0 & 0xFFFFC000) | ((vaddr >> 18) & 0x3FFC)
            keep(l1_addr)
            l1 = machine.phys.read_u32(l1_addr)
            if l1 is not None and l1 & 3 == 1:
                keep(l1 & 0xFFFFFC00)
            keep(machine.memory.translate(vaddr))

        for table in ctx.raw_args[1:3]:
            for i in range(64):
                keep_walk(table + 4 * i)
                pointer = machine.memory.read_u32(table + 4 * i)
                if pointer == 0:
                    break
                keep_walk(pointer)
        self.dump = {
            "regs": regs._asdict(),
            "ram_base": machine.phys.base,
            "ram_size": machine.phys.size,
            "argv": ctx.raw_args[1],
            "envp": ctx.raw_args[2],
            "pages": {f"{p:#x}": base64.b64encode(data).decode() for p, data in sorted(pages.items())},
        }


def _strace_execve(console: str, path: str) -> tuple[list[str], list[str]]:
    """argv and envp of the execve of ``path`` as the guest's ``strace -v`` printed them."""
    body = console.replace("\r", "")
    block = body[body.index("STRACE-BEGIN") : body.index("STRACE-END")]
    line = next(x for x in block.splitlines() if f'execve("{path}"' in x)
    argv, envp = re.search(r"\[(.*?)\], \[(.*?)\]\)", line).groups()  # type: ignore[union-attr]
    return re.findall(r'"((?:[^"\\]|\\.)*)"', argv), re.findall(r'"((?:[^"\\]|\\.)*)"', envp)


def _read_array(memory: VirtualMemory, table: int) -> list[str]:
    out = []
    for i in range(64):
        pointer = memory.read_u32(table + 4 * i)
        if pointer == 0:
            return out
        out.append(memory.read_cstring(pointer, 256).decode())
    raise AssertionError("array without its NULL")


def _replay(dump: dict[str, Any]) -> tuple[VirtualMemory, TranslationRegs]:
    ram = bytearray(dump["ram_size"])
    for page, data in dump["pages"].items():
        offset = int(page, 16) - dump["ram_base"]
        ram[offset : offset + PAGE] = base64.b64decode(data)
    regs = TranslationRegs(**dump["regs"])
    return VirtualMemory(PhysicalMemory(ram, dump["ram_base"]), lambda: regs), regs


@pytest.fixture(scope="module")
def traced(oracle_image: ImageBundle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    dumps: list[ExecveDump] = []
    logged = logged_run(
        oracle_image,
        CMD,
        tmp_path_factory.mktemp("young") / "young.db",
        extra=[ExecveDump],
        on_loaded=lambda qpp: dumps.append(qpp.get("execve_dump")),
    )
    dump = dumps[0].dump
    assert dump is not None
    argv, envp = _strace_execve(logged.console, "/bin/echo")
    dump["strace"] = {"argv": argv, "envp": envp}  # what the guest itself printed for this execve
    if os.environ.get("QPPSUITE_WRITE_DUMPS"):
        DUMP.write_bytes(gzip.compress(json.dumps(dump, indent=0).encode(), mtime=0))
    return {"console": logged.console, "rows": logged.rows(), "dump": dump}


@pytest.mark.boot
def test_the_fork_childs_execve_shows_argv_and_environment_as_the_guests_strace(traced: dict[str, Any]) -> None:
    argv, envp = _strace_execve(traced["console"], "/bin/echo")
    row = next(r for r in traced["rows"] if r["name"] == "execve" and '"/bin/echo"' in r["text"])
    args = json.loads(row["args"])
    assert (args["argv"], args["envp"]) == (argv, envp)
    assert argv == ["/bin/echo", "argone", "argtwo"] and len(envp) >= 3


@pytest.mark.boot
def test_strings_in_pages_not_yet_touched_are_read_at_the_return(traced: dict[str, Any]) -> None:
    readlinks = [r for r in traced["rows"] if r["name"] == "readlink"]
    assert readlinks, "busybox's readlink of /proc/self/exe was not seen"
    assert all(json.loads(r["args"])["path"] == "/proc/self/exe" for r in readlinks), [r["text"] for r in readlinks]


def test_a_dumped_fork_child_reads_through_the_linux_pte_where_the_hardware_entry_is_empty() -> None:
    dump = json.loads(gzip.decompress(DUMP.read_bytes()))
    memory, regs = _replay(dump)
    read_u32 = memory.phys.read_u32
    hidden = [
        address
        for address in (dump["argv"], dump["envp"], *(memory.read_u32(dump["envp"] + 4 * i) for i in range(3)))
        if (fault := walk(read_u32, regs._replace(dacr=0xFFFFFFFF), address, ACCESS_READ, True)) is not None
        and isinstance(fault, MmuFault)
        and fault.status == FS_TRANSLATION_PAGE
    ]
    assert hidden, "the dump should hold pages whose hardware entry is empty"
    assert _read_array(memory, dump["argv"]) == dump["strace"]["argv"] == ["/bin/echo", "argone", "argtwo"]
    assert _read_array(memory, dump["envp"]) == dump["strace"]["envp"]


def test_a_write_never_goes_through_a_read_only_linux_pte_as_a_fork_childs_copy_on_write_pages() -> None:
    dump = json.loads(gzip.decompress(DUMP.read_bytes()))
    memory, regs = _replay(dump)
    read_u32 = memory.phys.read_u32
    address = dump["envp"]  # the child's copy of perl's heap: no hardware entry after fork, read-only in Linux's
    assert isinstance(walk(read_u32, regs._replace(dacr=0xFFFFFFFF), address, ACCESS_READ, True), MmuFault)
    assert linux_pte(read_u32, regs, address) is not None  # readable, through Linux's own entry
    assert linux_pte(read_u32, regs, address, write=True) is None  # copy-on-write: still shared with perl
    before = memory.read(address, 4)
    with pytest.raises(GuestMemoryError):
        memory.write(address, b"EVIL")
    assert memory.read(address, 4) == before
