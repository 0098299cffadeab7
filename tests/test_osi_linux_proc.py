"""osi_linux against the guest's own /proc, for real Debian programs stopped at one instant.

One boot of the oracle image of each kernel version (5.10, 6.1, 6.12) starts eight processes
(pigz with two worker threads, python3 with three threads, a python3 listening socket, perl
with files and a pipe and a zombie child, busybox sh and sleep), stops them with SIGSTOP,
prints their /proc/PID/{stat,maps,fd,cwd,task/*/stat}, then opens a marker path; at that openat
a test plugin asks osi_linux the same questions.  Nothing of the stopped processes can change
in between, so the answers must be equal, field for field.

The same plugin saves every kernel page osi_linux read to answer
(``tests/data/osi/stopped_processes-SUITE.json.gz``, rewritten with ``QPPSUITE_WRITE_DUMPS=1``), with
what the guest printed; the unit test replays osi_linux's walkers on those real pages, so the
walkers are checked on the kernel's own data structures without a boot.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import KERNEL_SUITES, ORACLE_RAM_MIB
from console_sink import Console
from kernel_dump import PAGE, dumped_layout, load_dump

from qppsuite.core.qpp import Plugin
from qppsuite.images.bundle import ImageBundle
from qppsuite.plugins.osi_linux import OsiLinux
from qppsuite.plugins.osi_linux.kernel_memory import KernelMemory
from qppsuite.plugins.osi_linux.layout import KernelLayout, MapleLayout
from qppsuite.plugins.osi_linux.maple_tree import MAPLE_ENODE_NULL, MAPLE_NODE_MASK, maple_entries
from qppsuite.plugins.osi_linux.mappings import VECTORS, MappingReader
from qppsuite.plugins.osi_linux.model import OsiProcess
from qppsuite.plugins.osi_linux.modules import read_modules
from qppsuite.plugins.osi_linux.paths import PathReader
from qppsuite.plugins.osi_linux.tasks import TaskReader
from qppsuite.plugins.syscalls.context import SyscallContext
from qppsuite.session import RunOptions, run

#: One dump per kernel version (conftest's KERNEL_SUITES), named by the suite whose oracle image made it.
DUMPS = {suite: Path(__file__).parent / "data" / "osi" / f"stopped_processes-{suite}.json.gz"
         for suite in KERNEL_SUITES}
MARKER = "/tmp/qpp-osi-marker"

PYTHON_THREADS = (
    "import threading, time, os\n"
    "def w():\n    time.sleep(1000)\n"
    "for i in range(3):\n    threading.Thread(target=w, daemon=True).start()\n"
    "open('/tmp/ready-threads', 'w').close()\ntime.sleep(1000)\n"
)
PYTHON_SOCKET = (
    "import socket, time\ns = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
    "open('/tmp/ready-socket', 'w').close()\ntime.sleep(1000)\n"
)
PERL = (
    "open(my $f, '>', '/tmp/perl-out'); pipe(my $r, my $w); my $z = fork; exit 5 if !$z; "
    "open(my $p, '>', '/tmp/zpid'); print $p $z; close $p; sleep 1000"
)
GUEST_CMD = f"""
cd /tmp
insmod /lib/modules/*/kernel/fs/nls/nls_ascii.ko
pigz -p 2 -b 128 </dev/zero >/dev/null & PIDS="$!"
cat > threads.py <<'QPP_EOF'
{PYTHON_THREADS}QPP_EOF
cat > listen.py <<'QPP_EOF'
{PYTHON_SOCKET}QPP_EOF
cat > zombie.pl <<'QPP_EOF'
{PERL}
QPP_EOF
python3 threads.py & PIDS="$PIDS $!"
python3 listen.py & PIDS="$PIDS $!"
perl zombie.pl & PIDS="$PIDS $!"
sh -c 'cd /etc && exec 3<passwd; sleep 1000 & echo $! > /tmp/spid; wait' & PIDS="$PIDS $!"
sleep 1000 & PIDS="$PIDS $!"
n=0
while [ ! -e /tmp/ready-threads ] || [ ! -e /tmp/ready-socket ] || [ ! -s /tmp/zpid ] || [ ! -s /tmp/spid ]; do
  n=$((n + 1)); [ $n -gt 150 ] && break
  sleep 0.2
done
sleep 0.5
PIDS="$PIDS $(cat /tmp/spid)"
kill -STOP $PIDS
sleep 0.2
for p in $PIDS $(cat /tmp/zpid); do
  echo "=== proc $p"
  cat /proc/$p/stat
  echo "--- maps"
  cat /proc/$p/maps
  echo "--- fd"
  for f in /proc/$p/fd/*; do [ -L "$f" ] && echo "${{f##*/}} $(readlink $f)"; done
  echo "--- cwd"
  readlink /proc/$p/cwd 2>/dev/null
  echo "--- task"
  for t in /proc/$p/task/*; do cat $t/stat; echo; done
done
echo "=== modules"
cat /proc/modules
echo "=== end"
cat {MARKER} 2>/dev/null
kill -KILL $PIDS
"""


@dataclasses.dataclass
class GuestProc:
    """What the guest printed for one process."""

    pid: int
    comm: str
    state: str
    ppid: int
    exit_code: int
    maps: list[tuple[int, int, str, int, str]]
    fds: dict[int, str]
    cwd: str  # "" where readlink found none (a zombie's: exit_fs)
    threads: dict[int, tuple[str, str]]  # tid -> (comm, state)


def _stat(line: str) -> tuple[int, str, list[str]]:
    """pid, comm and the fields after it of a /proc/PID/stat line (comm may hold spaces and parens)."""
    pid, rest = line.split(" (", 1)
    comm, fields = rest.rsplit(") ", 1)
    return int(pid), comm, fields.split()


def parse_guest(console: str) -> dict[int, GuestProc]:
    text = console.replace("\r", "")
    body = text[text.index("=== proc ") : text.index("=== modules")]
    out: dict[int, GuestProc] = {}
    for block in body.split("=== proc ")[1:]:
        head, rest = block.split("--- maps\n", 1)
        maps_text, rest = rest.split("--- fd\n", 1)
        fd_text, rest = rest.split("--- cwd\n", 1)
        cwd_text, task_text = rest.split("--- task\n", 1)
        pid, comm, fields = _stat(head.splitlines()[1])
        maps = []
        for line in maps_text.splitlines():
            parts = line.split(None, 5)
            start, end = (int(x, 16) for x in parts[0].split("-"))
            maps.append((start, end, parts[1], int(parts[2], 16), parts[5] if len(parts) > 5 else ""))
        fds = {int(line.split(" ", 1)[0]): line.split(" ", 1)[1] for line in fd_text.splitlines() if line}
        threads = {}
        for line in task_text.splitlines():
            if line.strip():
                tid, tcomm, tfields = _stat(line)
                threads[tid] = (tcomm, tfields[0])
        cwd = cwd_text.strip()
        out[pid] = GuestProc(pid, comm, fields[0], int(fields[1]), int(fields[-1]), maps, fds, cwd, threads)
    return out


@dataclasses.dataclass
class OsiView:
    """osi_linux's answers for the same processes."""

    processes: dict[int, OsiProcess]
    modules: list[tuple[str, int, int]]  # name, size, base
    maps: dict[int, list[tuple[int, int, str, int, str]]]
    fds: dict[int, dict[int, str]]
    cwds: dict[int, str]  # "" for none
    threads: dict[int, dict[int, tuple[str, str]]]


def guest_modules(console: str) -> list[tuple[str, int, int]]:
    """``/proc/modules`` as the guest printed it: name, size, load address."""
    text = console.replace("\r", "")
    body = text[text.index("=== modules\n") + 12 : text.index("=== end")]
    return sorted((f[0], int(f[1]), int(f[5], 16)) for f in (line.split() for line in body.splitlines() if line))


def compare(guest: dict[int, GuestProc], osi: OsiView, modules: list[tuple[str, int, int]]) -> list[str]:
    """Every difference between the two views, as readable lines (empty when equal)."""
    wrong = []
    if sorted(osi.modules) != modules:
        wrong.append(f"modules: guest {modules} != osi {sorted(osi.modules)}")
    for pid, proc in guest.items():
        found = osi.processes.get(pid)
        if found is None:
            wrong.append(f"{pid}: not in osi_linux's process list")
            continue
        exit_code = proc.exit_code if proc.state == "Z" else None
        mine = (found.name, found.state, found.ppid, found.exit_code)
        if mine != (proc.comm, proc.state, proc.ppid, exit_code):
            wrong.append(f"{pid}: stat {(proc.comm, proc.state, proc.ppid, exit_code)} != osi {mine}")
        if osi.maps.get(pid, []) != proc.maps:
            wrong.append(f"{pid} maps:\n  guest {proc.maps}\n  osi   {osi.maps.get(pid)}")
        if osi.fds.get(pid, {}) != proc.fds:
            wrong.append(f"{pid} fds: guest {proc.fds} != osi {osi.fds.get(pid)}")
        if osi.cwds.get(pid) != proc.cwd:
            wrong.append(f"{pid} cwd: guest {proc.cwd!r} != osi {osi.cwds.get(pid)!r}")
        if osi.threads.get(pid, {}) != proc.threads:
            wrong.append(f"{pid} threads: guest {proc.threads} != osi {osi.threads.get(pid)}")
    return wrong


def _view(tasks: TaskReader, maps: MappingReader, paths: PathReader, pids: set[int], files_at: int) -> OsiView:
    """osi_linux's answers, through the same readers the plugin uses."""
    view = OsiView({}, [(m.name, m.size, m.base) for m in read_modules(tasks.mem, tasks.layout)], {}, {}, {}, {})
    for process in tasks.processes():
        if process.pid not in pids:
            continue
        view.processes[process.pid] = process
        ident = tasks.identity(process.task)
        view.maps[process.pid] = [
            (m.start, m.end, m.perms, m.offset, m.path) for m in (maps.mappings(ident.mm) if ident and ident.mm else [])
        ]
        files = tasks.mem.u32(process.task + files_at)
        opened = paths.open_files(files)[0] if files else {}
        view.fds[process.pid] = {fd: paths.file_path(file)[0] for fd, file in opened.items()}
        cwd = paths.working_directory(process.task)
        view.cwds[process.pid] = cwd.path if cwd is not None else ""
        view.threads[process.pid] = {t.tid: (t.name, t.state) for t in tasks.threads(process)}
    return view


class ProcProbe(Plugin):
    """At the marker openat, asks osi_linux (and records the kernel pages it read)."""

    name = "proc_probe"
    requires = ("osi_linux", "syscalls")

    def load(self) -> None:
        self.view: OsiView | None = None
        self.pages: dict[int, bytes] = {}
        self.pids: set[int] = set()
        self.qpp.register("syscalls", "on_sys_openat", self._openat, owner=self.name)

    def _openat(self, ctx: SyscallContext) -> None:
        args = {a.name: a.value for a in ctx.decoded()}
        if args.get("filename") != MARKER or self.view is not None:
            return
        osi: OsiLinux = self.qpp.get("osi_linux")  # type: ignore[assignment]
        osi.get_processes()  # validates and opens the epoch
        mem = osi.mem
        translate = mem._translate
        seen: dict[int, int | None] = {}

        def recording(vaddr: int) -> int | None:
            paddr = translate(vaddr)
            seen[vaddr >> 12] = paddr
            return paddr

        mem.set_translate(recording)
        try:
            self.view = _view(osi.tasks, osi.maps, osi.paths, self.pids, osi.layout.task_files)
        finally:
            mem.set_translate(translate)
        read_phys = self.machine.memory.read_phys
        self.pages = {v: read_phys(p & ~(PAGE - 1), PAGE) for v, p in seen.items() if p is not None}
        self.layout = osi.layout


@pytest.fixture(scope="module")
def stopped(suite_oracle_image: ImageBundle) -> dict[str, Any]:
    console = Console()
    probes: list[ProcProbe] = []
    guest_pids: set[int] = set()

    def loaded(qpp: Any) -> None:
        probe = qpp.get("proc_probe")
        probe.pids = guest_pids
        probes.append(probe)

    # The pids are only known once the guest printed them: the probe reads them from the console.
    def sink(data: bytes) -> None:
        console(data)
        guest_pids.update(int(p) for p in re.findall(r"=== proc (\d+)\n", console.text.replace("\r", "")))

    result = run(
        RunOptions(
            cmd=GUEST_CMD,
            plugins=["osi_linux", "syscalls", ProcProbe],  # type: ignore[list-item]
            strict=True,
            ram_mib=ORACLE_RAM_MIB,
            max_insns=6_000_000_000,
        ),
        sink,
        image=suite_oracle_image,
        on_loaded=loaded,
    )
    assert result.ok, (result.reason, console.text[-3000:])
    probe = probes[0]
    assert probe.view is not None, "the marker openat was not seen"
    guest = parse_guest(console.text)
    if os.environ.get("QPPSUITE_WRITE_DUMPS"):
        text = console.text.replace("\r", "")
        suite = suite_oracle_image.manifest.get("suite", "bookworm")  # images made before --suite are bookworm's
        DUMPS[suite].write_bytes(
            gzip.compress(
                json.dumps(
                    {
                        "layout": dataclasses.asdict(probe.layout),
                        "pids": sorted(probe.pids),
                        "guest": text[text.index("=== proc ") : text.index("=== end") + 8],
                        "pages": {f"{v:#x}": base64.b64encode(d).decode() for v, d in sorted(probe.pages.items())},
                    }
                ).encode(),
                mtime=0,
            )
        )
    return {"guest": guest, "modules": guest_modules(console.text), "view": probe.view}


@pytest.mark.boot
def test_osi_linux_equals_proc_for_eight_stopped_processes(stopped: dict[str, Any]) -> None:
    guest: dict[int, GuestProc] = stopped["guest"]
    assert len(guest) >= 8, sorted(guest)
    assert any(p.state == "Z" for p in guest.values()) and any(len(p.maps) > 30 for p in guest.values())
    assert any(len(p.threads) >= 4 for p in guest.values())
    assert stopped["modules"], "the guest lists no modules"
    assert {"/tmp", "/etc", ""} <= {p.cwd for p in guest.values()}  # "": the zombie has none
    wrong = compare(guest, stopped["view"], stopped["modules"])
    assert not wrong, "\n".join(wrong)


@dataclasses.dataclass
class Replay:
    """The dumped kernel pages as osi_linux's memory, writable so that tests can corrupt them."""

    dump: dict[str, Any]
    layout: KernelLayout
    ram: bytearray
    mem: KernelMemory

    def write_u32(self, vaddr: int, value: int) -> None:
        offset = self.mem.physical(vaddr)
        assert offset is not None
        self.ram[offset : offset + 4] = value.to_bytes(4, "little")
        self.mem.invalidate()


def replay(suite: str = "bookworm") -> Replay:
    dump, ram, memory = load_dump(DUMPS[suite])
    return Replay(dump, dumped_layout(dump["layout"]), ram, memory)


@pytest.mark.parametrize("suite", list(KERNEL_SUITES))
def test_the_walkers_on_dumped_kernel_pages_give_what_the_guest_printed(suite: str) -> None:
    r = replay(suite)
    dump, layout, mem = r.dump, r.layout, r.mem
    paths = PathReader(mem, layout)
    view = _view(
        TaskReader(mem, layout), MappingReader(mem, layout, paths), paths, set(dump["pids"]), layout.task_files
    )
    guest = parse_guest(dump["guest"])
    assert len(guest) >= 8 and {"/tmp", "/etc", ""} <= {p.cwd for p in guest.values()}
    wrong = compare(guest, view, guest_modules(dump["guest"]))
    assert not wrong, "\n".join(wrong)


def _pigz(r: Replay) -> int:
    """pigz's mm_struct."""
    tasks = TaskReader(r.mem, r.layout)
    pigz = next(p for p in tasks.processes() if p.name == "pigz")
    ident = tasks.identity(pigz.task)
    assert ident is not None
    return ident.mm


def _pigz_tree(r: Replay) -> tuple[MapleLayout, int, list[int]]:
    maple = r.layout.maple
    assert maple is not None
    root = r.mem.u32(_pigz(r) + maple.mm_mt_root)
    assert root is not None
    entries, complete = maple_entries(r.mem, maple, r.layout.page_offset, root)
    assert complete and len(entries) > 30
    return maple, root, entries


def test_a_cycle_in_a_real_multi_level_maple_tree_ends_the_walk_incomplete() -> None:
    r = replay()
    maple, root, entries = _pigz_tree(r)
    node, kind = root & ~MAPLE_NODE_MASK, (root >> 3) & 0xF
    assert kind == maple.maple_arange_64  # an internal root: the tree has more than one level
    # The root's second child becomes the root node itself, encoded as a child (mt_mk_node).
    r.write_u32(node + maple.arange64_slot + 4, node | (kind << 3) | MAPLE_ENODE_NULL)
    cut, complete = maple_entries(r.mem, maple, r.layout.page_offset, root)
    assert not complete and 0 < len(cut) < len(entries) and cut == entries[: len(cut)]


def test_a_cycle_in_the_real_vma_list_ends_the_map_and_marks_it() -> None:
    """5.10's VMAs are a list (mm->mmap, vm_next): a vm_next pointing back ends the walk, the map marked partial."""
    r = replay("bullseye")
    vma_list = r.layout.vma_list
    assert vma_list is not None and r.layout.maple is None
    maps = MappingReader(r.mem, r.layout, PathReader(r.mem, r.layout))
    mm = _pigz(r)
    whole = maps.mappings(mm)
    assert len(whole) > 30 and not any(m.partial for m in whole)
    first = r.mem.u32(mm + vma_list.mm_mmap)
    assert first is not None
    second = r.mem.u32(first + vma_list.vma_next)
    assert second is not None
    third = r.mem.u32(second + vma_list.vma_next)
    assert third is not None
    r.write_u32(third + vma_list.vma_next, first)
    cut = maps.mappings(mm)
    assert [m.start for m in cut] == [m.start for m in whole[:3]] + [VECTORS.start] and cut[2].partial


def test_a_cycle_in_the_real_task_list_ends_the_walk_and_marks_it() -> None:
    r = replay()
    tasks = TaskReader(r.mem, r.layout)
    whole = tasks.processes()
    third = whole[2].task + r.layout.task_tasks
    r.write_u32(third, whole[1].task + r.layout.task_tasks)  # the third task's next is the second
    cut = TaskReader(r.mem, r.layout).processes()
    assert [p.pid for p in cut] == [p.pid for p in whole[:3]] and cut[-1].partial
