"""The coverage plugin on real programs: python3 and perl in the oracle image, checked against their own ELF files.

Each program runs a short script that prints its own ``/proc/self/maps`` and pid.  The drcov file is read
back by the tests' own reader; its module table must be the guest's own map (paths and bases), and its
blocks must be the program's real code: Debian's ``/usr/bin/python3.11`` (a fixed-address executable),
``/usr/bin/perl`` (position-independent) and ``libc.so.6`` are taken from the image's initramfs and their
exported functions (``.dynsym``) read with pyelftools.  The functions the script must run start a covered
block each, the program's entry point (``e_entry``, ``_start``) does too, and no block starting inside an
exported function runs past its end.  The run database holds the same modules and blocks, for the same
process.
"""

from __future__ import annotations

import bisect
import io
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import ORACLE_RAM_MIB
from console_sink import Console
from drcov_reader import Drcov, Module, read_drcov_file
from elftools.elf.elffile import ELFFile

from qppsuite.images.bundle import ImageBundle
from qppsuite.images.initramfs import gunzip_members, read_cpio_newc
from qppsuite.session import RunOptions, run

PYTHON_SCRIPT = (
    "import os, json; print(json.dumps({'sum': sum(range(10))})); print('=== pid %d ===' % os.getpid()); "
    "print('=== maps ==='); print(open('/proc/self/maps').read()); print('=== end ===')"
)
PERL_SCRIPT = (
    "print join(q(,), map { $_ * 2 } 1..5), qq(\\n); print qq(=== pid $$ ===\\n); open(M, q(/proc/self/maps)); "
    "print qq(=== maps ===\\n), <M>, qq(=== end ===\\n);"
)
#: Exported functions the interpreter runs on any script: its start, a -c string's run, a few objects...
PYTHON_RUNS = ("Py_BytesMain", "Py_RunMain", "PyRun_SimpleStringFlags", "PyList_New", "PyDict_New", "PyLong_FromLong")
#: ... perl's life cycle (perlembed(1): alloc, construct, parse, run, destruct, free)...
PERL_RUNS = ("perl_alloc", "perl_construct", "perl_parse", "perl_run", "perl_destruct", "perl_free")
#: ... and glibc's start, allocator, output and exit.
LIBC_RUNS = ("__libc_start_main", "malloc", "free", "write", "exit")


@dataclass(frozen=True)
class Program:
    """A program to cover: the command, the name to choose it by, what it prints, its executable's file name
    and the exported functions it must run in it."""

    cmd: str
    name: str
    prints: str
    executable: str
    runs: tuple[str, ...]


PROGRAMS = {
    "python3": Program(f'python3 -c "{PYTHON_SCRIPT}"', "python3", '{"sum": 45}', "python3.11", PYTHON_RUNS),
    "perl": Program(f"perl -e '{PERL_SCRIPT}'", "perl", "2,4,6,8,10", "perl", PERL_RUNS),
}


@dataclass(frozen=True)
class Covered:
    program: Program
    console: str
    pid: int
    maps: list[tuple[int, int, str, int, str]]  # start, end, perms, offset, path
    drcov: Drcov
    path: Path
    db: Path
    image: ImageBundle

    def rows(self, sql: str) -> list[dict[str, Any]]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql)]
        finally:
            conn.close()


@pytest.fixture(scope="module", params=list(PROGRAMS))
def covered(
    request: pytest.FixtureRequest, oracle_image: ImageBundle, tmp_path_factory: pytest.TempPathFactory
) -> Covered:
    program = PROGRAMS[request.param]
    tmp = tmp_path_factory.mktemp("coverage")
    console = Console()
    result = run(
        RunOptions(
            cmd=program.cmd,
            plugins=["osi_linux", "coverage"],
            plugin_args={"coverage": {"process": program.name, "out": str(tmp / "out"), "db": str(tmp / "run.db")}},
            strict=True,
            ram_mib=ORACLE_RAM_MIB,
            warm=True,
        ),
        console,
        image=oracle_image,
    )
    text = console.text.replace("\r", "")
    assert result.ok and program.prints in text, (result.reason, text[-3000:])
    pid = int(re.findall(r"=== pid (\d+) ===", text)[0])
    maps = []
    for line in text.split("=== maps ===\n", 1)[1].split("=== end ===", 1)[0].splitlines():
        fields = line.split(None, 5)
        if len(fields) >= 5:
            start, end = (int(v, 16) for v in fields[0].split("-"))
            maps.append((start, end, fields[1], int(fields[2], 16), fields[5] if len(fields) == 6 else ""))
    files = list((tmp / "out").iterdir())
    # 0: the shell's fork child before its execve
    assert [f.name for f in files] == [f"drcov.{program.name}.{pid}.1.proc.log"]
    return Covered(program, text, pid, maps, read_drcov_file(files[0]), files[0], tmp / "run.db", oracle_image)


def _elf(image: ImageBundle, path: str) -> ELFFile:
    assert image.initrd_path is not None
    entries = {e.path: e for e in read_cpio_newc(gunzip_members(image.initrd_path.read_bytes()))}
    return ELFFile(io.BytesIO(entries[path.lstrip("/")].data))


def _functions(elf: ELFFile) -> tuple[int, list[tuple[int, int, str]]]:
    """The address of file offset 0 (the module base's counterpart) and the defined exported functions as
    ``(offset from it, size, name)``, Thumb bit cleared, sorted."""
    low = min(s["p_vaddr"] for s in elf.iter_segments() if s["p_type"] == "PT_LOAD" and s["p_offset"] == 0)
    dynsym = elf.get_section_by_name(".dynsym")
    functions = sorted(
        ((s["st_value"] & ~1) - low, s["st_size"], s.name)
        for s in dynsym.iter_symbols()  # type: ignore[union-attr]
        if s["st_info"]["type"] == "STT_FUNC" and s["st_shndx"] != "SHN_UNDEF" and s["st_size"]
    )
    return low, functions


@pytest.mark.boot
def test_the_module_table_is_the_programs_own_map(covered: Covered) -> None:
    bases = {}
    for start, _end, _perms, offset, path in covered.maps:
        if path.startswith("/") and offset == 0:
            bases.setdefault(path, start)
    executable = {path for _s, _e, perms, _o, path in covered.maps if path.startswith("/") and "x" in perms}
    modules = {m.path: m for m in covered.drcov.modules}
    executable_path = f"/usr/bin/{covered.program.executable}"
    assert {executable_path, "/lib/arm-linux-gnueabihf/libc.so.6"} <= set(modules) <= executable
    assert any(p.endswith("/ld-linux-armhf.so.3") for p in modules)
    for path, module in modules.items():
        ends = [end for start, end, _p, _o, p in covered.maps if p == path]
        assert (module.base, module.end) == (bases[path], max(ends)), path
    assert len(covered.drcov.blocks) > 5_000  # python3: about 40,000; perl: about 9,000
    assert len(set(covered.drcov.blocks)) == len(covered.drcov.blocks)


@pytest.mark.parametrize("in_libc", [False, True], ids=["executable", "libc"])
@pytest.mark.boot
def test_blocks_are_the_programs_real_basic_blocks(covered: Covered, in_libc: bool) -> None:
    program = covered.program
    name, runs = ("libc.so.6", LIBC_RUNS) if in_libc else (program.executable, program.runs)
    module: Module = covered.drcov.module_named(name)
    elf = _elf(covered.image, module.path)
    low, functions = _functions(elf)
    blocks = covered.drcov.blocks_of(module)
    starts = {start for start, _ in blocks}
    entered = {fname for offset, _, fname in functions if offset in starts}
    assert set(runs) <= entered, sorted(set(runs) - entered)
    if not in_libc:  # its entry point is where the program's first block starts (ld.so jumps there)
        position_independent = elf.header["e_type"] == "ET_DYN"
        assert module.entry == elf.header["e_entry"] + (module.base if position_independent else 0)
        assert (elf.header["e_entry"] & ~1) - low in starts
    offsets = [offset for offset, _, _ in functions]
    inside = 0
    for start, size in blocks:
        assert start % 2 == 0 and 2 <= size <= 4096 and start + size <= module.end - module.base, (start, size)
        at = bisect.bisect_right(offsets, start) - 1
        if at >= 0 and start < offsets[at] + functions[at][1]:
            inside += 1
            offset, length, fname = functions[at]
            assert start + size <= offset + length, (fname, hex(start), size)
    assert inside > 100, inside  # hundreds in every run seen (500 for perl in libc, thousands for python3)


@pytest.mark.boot
def test_the_run_database_holds_the_same_modules_and_blocks(covered: Covered) -> None:
    modules = covered.rows(
        "SELECT m.*, p.pid, p.name FROM coverage_modules m JOIN processes p ON p.id = m.process_id "
        "ORDER BY m.module_index"
    )
    assert [(m["path"], m["base"], m["end"], m["entry"]) for m in modules] == [
        (m.path, m.base, m.end, m.entry) for m in covered.drcov.modules
    ]
    assert {(m["pid"], m["name"], m["program"], m["exec_index"]) for m in modules} == {
        (covered.pid, covered.program.name, covered.program.name, 1)
    }
    assert all(m["drcov_file"] == str(covered.path) for m in modules)
    blocks = covered.rows(
        "SELECT m.module_index, b.offset, b.size FROM coverage_blocks b JOIN coverage_modules m ON m.id = b.module_id"
    )
    assert sorted((b["offset"], b["size"], b["module_index"]) for b in blocks) == sorted(covered.drcov.blocks)
    counts = {m["module_index"]: m["block_count"] for m in modules}
    assert counts == {m.id: len(covered.drcov.blocks_of(m)) for m in covered.drcov.modules}
    conn = sqlite3.connect(covered.db)
    try:
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        conn.close()
