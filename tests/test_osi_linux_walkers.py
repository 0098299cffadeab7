"""osi_linux's walkers on a fake guest kernel: answers, bounds, cycles and garbage pointers.

The fake is guest RAM behind a linear kernel mapping (0xc0000000 -> RAM, one
page left unmapped), with structures laid out by a small synthetic profile
layout; the real layouts are exercised by tests/test_osi_linux_guest.py.
"""

import itertools
import random
import struct
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qppsuite.plugins.osi_linux.kernel_memory import KernelMemory
from qppsuite.plugins.osi_linux.layout import KernelLayout, MapleLayout
from qppsuite.plugins.osi_linux.maple_tree import maple_entries
from qppsuite.plugins.osi_linux.mappings import VECTORS, MappingReader
from qppsuite.plugins.osi_linux.model import OsiProcess
from qppsuite.plugins.osi_linux.modules import read_modules
from qppsuite.plugins.osi_linux.paths import PIPEFS_MAGIC, PathReader
from qppsuite.plugins.osi_linux.ps_report import tree_order
from qppsuite.plugins.osi_linux.tasks import PF_KTHREAD, TaskReader

RAM_BASE = 0x40000000
RAM_SIZE = 1 << 20
PAGE_OFFSET = 0xC0000000
HOLE = PAGE_OFFSET + 0x80000  # an unmapped kernel page
GARBAGE = 0xDEAD0000  # a kernel-looking address outside RAM

# symbols at fixed places; everything else is allocated above 0x1000
INIT_TASK = PAGE_OFFSET + 0x400
MODULES = PAGE_OFFSET + 0x100

MAPLE = MapleLayout(
    mm_mt_root=0x04, range64_pivot=4, range64_slot=128, range64_meta_end=252, range64_slots=32,
    arange64_pivot=4, arange64_slot=84, arange64_meta_end=252, arange64_slots=21,
    maple_leaf_64=1, maple_range_64=2, maple_arange_64=3,
)
LAYOUT = KernelLayout(
    banner="Linux version 6.1.0-test", release="6.1.0-test", page_offset=PAGE_OFFSET, comm_len=16,
    text=PAGE_OFFSET, init_task=INIT_TASK, linux_banner=PAGE_OFFSET + 0x200, switch_to=PAGE_OFFSET + 0x300,
    do_exit=PAGE_OFFSET + 0x320,
    entry_task=PAGE_OFFSET + 0x310, modules=MODULES, swapper_pg_dir=PAGE_OFFSET + 0x4000,
    task_tasks=0x20, task_pid=0x40, task_tgid=0x44, task_real_parent=0x48, task_group_leader=0x4C,
    task_thread_node=0x50, task_signal=0x58, task_comm=0x70, task_mm=0x30, task_start_time=0x60,
    task_files=0x68, task_flags=0x10, task_state=0x08, task_exit_state=0x34, task_exit_code=0x38,
    signal_thread_head=0x10,
    mm_pgd=0x10, mm_start_brk=0x20, mm_brk=0x24, mm_start_stack=0x28,
    maple=MAPLE,
    vma_list=None,
    vma_start=0, vma_end=4, vma_flags=8, vma_pgoff=12, vma_file=16, vma_ops=20, vma_private_data=24,
    vma_anon_name=28,
    files_fdt=4, fdt_max_fds=0, fdt_fd=4, file_path_mnt=8, file_path_dentry=12, file_inode=16,
    dentry_parent=0x10, dentry_name_len=0x1C, dentry_name_ptr=0x20, dentry_sb=0x24, dentry_hash_pprev=0x0C,
    inode_ino=8, sb_magic=0x10, mount_vfsmount=0x10, mount_parent=0x08, mount_mountpoint=0x0C, vfsmount_root=0,
    module_list=4, module_name=12, module_name_len=56, module_state=0, module_unformed=3,
    module_base=0x80, module_sizes=(0x84, 0x94), stack_thread_info=None, task_thread_info=0,
)


class FakeKernel:
    """Guest RAM with a bump allocator and typed writes at kernel virtual addresses."""

    def __init__(self) -> None:
        self.ram = bytearray(RAM_SIZE)
        self.next = PAGE_OFFSET + 0x1000
        self.mem = KernelMemory(memoryview(self.ram), RAM_BASE, self.translate)
        self.tasks = TaskReader(self.mem, LAYOUT)
        self.paths = PathReader(self.mem, LAYOUT)
        self.maps = MappingReader(self.mem, LAYOUT, self.paths)
        self.link(INIT_TASK + LAYOUT.task_tasks, INIT_TASK + LAYOUT.task_tasks)
        self.link(MODULES, MODULES)

    @staticmethod
    def translate(vaddr: int) -> int | None:
        if PAGE_OFFSET <= vaddr < PAGE_OFFSET + RAM_SIZE and vaddr & ~0xFFF != HOLE:
            return vaddr - PAGE_OFFSET + RAM_BASE
        return None

    def alloc(self, size: int, align: int = 64) -> int:
        self.next = (self.next + align - 1) & ~(align - 1)
        if self.next & ~0xFFF == HOLE:
            self.next = HOLE + 0x1000
        addr, self.next = self.next, self.next + size
        return addr

    def put(self, vaddr: int, data: bytes) -> None:
        off = vaddr - PAGE_OFFSET
        self.ram[off : off + len(data)] = data

    def u32(self, vaddr: int, value: int) -> None:
        self.put(vaddr, struct.pack("<I", value & 0xFFFFFFFF))

    def link(self, node: int, next_node: int) -> None:
        self.u32(node, next_node)

    def string(self, text: bytes) -> int:
        addr = self.alloc(len(text) + 1, 4)
        self.put(addr, text + b"\0")
        return addr

    def ring(self, head: int, nodes: list[int]) -> None:
        """Make ``head -> nodes... -> head`` a list_head ring (next pointers only; the walk uses next)."""
        chain = [head, *nodes, head]
        for a, b in itertools.pairwise(chain):
            self.link(a, b)

    def task(self, pid: int, comm: bytes, *, tgid: int | None = None, parent: int = INIT_TASK, mm: int = 0,
             flags: int = 0, start: int = 0, leader: int | None = None, signal: int | None = None) -> int:
        task = self.alloc(0x100)
        L = LAYOUT
        self.u32(task + L.task_pid, pid)
        self.u32(task + L.task_tgid, pid if tgid is None else tgid)
        self.u32(task + L.task_real_parent, parent)
        self.u32(task + L.task_group_leader, task if leader is None else leader)
        self.u32(task + L.task_mm, mm)
        self.u32(task + L.task_flags, flags)
        self.put(task + L.task_start_time, struct.pack("<Q", start))
        self.put(task + L.task_comm, comm.ljust(16, b"\0"))
        if signal is None:
            signal = self.alloc(0x20)
            self.ring(signal + L.signal_thread_head, [task + L.task_thread_node])
        self.u32(task + L.task_signal, signal)
        return task

    def task_list(self, tasks: list[int]) -> None:
        self.ring(INIT_TASK + LAYOUT.task_tasks, [t + LAYOUT.task_tasks for t in tasks])

    def mm(self, vmas: list[int], *, brk: tuple[int, int] = (0, 0), stack: int = 0) -> int:
        mm = self.alloc(0x40)
        pgd = self.alloc(0x4000, 0x4000)
        self.u32(mm + LAYOUT.mm_pgd, pgd)
        self.u32(mm + LAYOUT.mm_start_brk, brk[0])
        self.u32(mm + LAYOUT.mm_brk, brk[1])
        self.u32(mm + LAYOUT.mm_start_stack, stack)
        self.u32(mm + MAPLE.mm_mt_root, self.leaf(vmas) if vmas else 0)
        return mm

    def leaf(self, entries: list[int], node_max: int = 0xFFFFFFFF) -> int:
        """A maple_leaf_64 root holding ``entries`` (VMAs) with their pivots; returns it encoded as ``ma_root``."""
        node = self.alloc(256, 256)
        for i, vma in enumerate(entries):
            end = struct.unpack_from("<I", self.ram, vma - PAGE_OFFSET + LAYOUT.vma_end)[0]
            self.u32(node + MAPLE.range64_slot + 4 * i, vma)
            self.u32(node + MAPLE.range64_pivot + 4 * i, end - 1)
        self.ram[node - PAGE_OFFSET + MAPLE.range64_meta_end] = len(entries) - 1
        return node | (MAPLE.maple_leaf_64 << 3) | 2

    def vma(self, start: int, end: int, flags: int, *, file: int = 0, pgoff: int = 0, ops: int = 0,
            private: int = 0, anon_name: int = 0) -> int:
        vma = self.alloc(32, 4)
        for off, value in ((0, start), (4, end), (8, flags), (12, pgoff), (16, file), (20, ops), (24, private),
                           (28, anon_name)):
            self.u32(vma + off, value)
        return vma

    def dentry(self, name: bytes, parent: int | None, sb: int, *, hashed: bool = True) -> int:
        dentry = self.alloc(0x40, 4)
        self.u32(dentry + LAYOUT.dentry_parent, dentry if parent is None else parent)
        self.u32(dentry + LAYOUT.dentry_name_len, len(name))
        self.u32(dentry + LAYOUT.dentry_name_ptr, self.string(name))
        self.u32(dentry + LAYOUT.dentry_sb, sb)
        self.u32(dentry + LAYOUT.dentry_hash_pprev, dentry + 0x30 if hashed else 0)
        return dentry

    def superblock(self, magic: int) -> int:
        sb = self.alloc(0x20, 4)
        self.u32(sb + LAYOUT.sb_magic, magic)
        return sb

    def mount(self, root: int, parent: int | None, mountpoint: int = 0) -> int:
        mount = self.alloc(0x20, 4)
        self.u32(mount + LAYOUT.mount_parent, mount if parent is None else parent)
        self.u32(mount + LAYOUT.mount_mountpoint, mountpoint)
        self.u32(mount + LAYOUT.mount_vfsmount + LAYOUT.vfsmount_root, root)
        return mount

    def file(self, mount: int, dentry: int, ino: int = 0) -> int:
        inode = self.alloc(0x10, 4)
        self.u32(inode + LAYOUT.inode_ino, ino)
        file = self.alloc(0x20, 4)
        self.u32(file + LAYOUT.file_path_mnt, mount + LAYOUT.mount_vfsmount)
        self.u32(file + LAYOUT.file_path_dentry, dentry)
        self.u32(file + LAYOUT.file_inode, inode)
        return file


@pytest.fixture
def k() -> FakeKernel:
    return FakeKernel()


# -- tasks ------------------------------------------------------------------------------


def test_processes_with_parents_names_and_address_spaces(k: FakeKernel) -> None:
    mm = k.mm([])
    init = k.task(1, b"init", mm=mm, start=100)
    kthreadd = k.task(2, b"kthreadd", flags=PF_KTHREAD)
    shell = k.task(79, b"sh", parent=init, mm=k.mm([]), start=5000)
    k.task_list([init, kthreadd, shell])
    got = {p.pid: p for p in k.tasks.processes()}
    assert sorted(got) == [1, 2, 79]
    assert (got[1].ppid, got[1].name, got[1].start_time, got[1].is_kernel_thread) == (0, "init", 100, False)
    pgd = struct.unpack_from("<I", k.ram, mm - PAGE_OFFSET + LAYOUT.mm_pgd)[0]
    assert got[1].asid == pgd - PAGE_OFFSET + RAM_BASE
    assert got[2].is_kernel_thread and got[2].asid is None
    assert (got[79].ppid, got[79].task) == (1, shell)
    assert not any(p.partial for p in got.values())


def test_a_cycle_in_the_task_list_ends_the_walk_and_marks_it(k: FakeKernel) -> None:
    a, b = k.task(10, b"a"), k.task(11, b"b")
    k.ring(INIT_TASK + LAYOUT.task_tasks, [a + LAYOUT.task_tasks, b + LAYOUT.task_tasks])
    k.link(b + LAYOUT.task_tasks, a + LAYOUT.task_tasks)  # b -> a, never back to the head
    got = k.tasks.processes()
    assert [p.pid for p in got] == [10, 11]
    assert got[-1].partial and not got[0].partial


@pytest.mark.parametrize("bad", [0, 0x1234, GARBAGE, HOLE + 0x20, PAGE_OFFSET + 2])
def test_a_garbage_link_gives_a_partial_list(k: FakeKernel, bad: int) -> None:
    a = k.task(10, b"a")
    k.task_list([a])
    k.link(a + LAYOUT.task_tasks, bad)
    got = k.tasks.processes()
    assert [(p.pid, p.partial) for p in got] == [(10, True)]


def test_unreadable_parent_and_page_table_are_partial_fields(k: FakeKernel) -> None:
    mm = k.alloc(0x40)
    k.u32(mm + LAYOUT.mm_pgd, GARBAGE)
    task = k.task(5, b"x", parent=HOLE, mm=mm)
    process = k.tasks.process(task)
    assert process is not None
    assert (process.ppid, process.asid, process.partial) == (0, None, True)


def test_an_implausible_task_is_no_answer(k: FakeKernel) -> None:
    task = k.task(5, b"x")
    k.u32(task + LAYOUT.task_pid, 0x7FFFFFFF)
    assert k.tasks.process(task) is None
    assert k.tasks.thread(task) is None
    assert k.tasks.thread(GARBAGE) is None and k.tasks.thread(0x1000) is None


def test_threads_of_a_group_and_a_thread_resolves_to_its_process(k: FakeKernel) -> None:
    leader = k.task(50, b"server")
    signal = struct.unpack_from("<I", k.ram, leader - PAGE_OFFSET + LAYOUT.task_signal)[0]
    t1 = k.task(51, b"worker1", tgid=50, leader=leader, signal=signal)
    t2 = k.task(52, b"worker2", tgid=50, leader=leader, signal=signal)
    k.ring(signal + LAYOUT.signal_thread_head, [t + LAYOUT.task_thread_node for t in (leader, t1, t2)])
    process = k.tasks.process(t2)
    assert process is not None and (process.pid, process.name, process.task) == (50, "server", leader)
    threads = k.tasks.threads(process)
    assert [(t.tid, t.pid, t.name) for t in threads] == [(50, 50, "server"), (51, 50, "worker1"), (52, 50, "worker2")]
    k.link(t2 + LAYOUT.task_thread_node, t1 + LAYOUT.task_thread_node)  # cycle
    threads = k.tasks.threads(process)
    assert [t.tid for t in threads] == [50, 51, 52] and threads[-1].partial


def test_cached_answers_follow_changes_of_comm_and_parent(k: FakeKernel) -> None:
    init = k.task(1, b"init")
    task = k.task(7, b"sh", parent=init)
    first = k.tasks.process(task)
    assert k.tasks.process(task) is first  # unchanged task: the cached value itself
    k.put(task + LAYOUT.task_comm, b"busybox".ljust(16, b"\0"))
    k.u32(task + LAYOUT.task_real_parent, INIT_TASK)
    assert k.tasks.process(task) is first  # the same instant: what was read is kept
    k.tasks.invalidate()  # the guest ran (osi_linux does this when the instruction count moves)
    second = k.tasks.process(task)
    assert second is not None and (second.name, second.ppid) == ("busybox", 0)


# -- memory maps --------------------------------------------------------------------------


def _fs(k: FakeKernel) -> tuple[int, int, int]:
    """A root mount with /bin/busybox, and /dev mounted from another superblock.

    Returns (root mount, busybox dentry, dev mount).
    """
    sb = k.superblock(0x858458F6)
    root = k.dentry(b"/", None, sb)
    bin_dir = k.dentry(b"bin", root, sb)
    busybox = k.dentry(b"busybox", bin_dir, sb)
    dev_dir = k.dentry(b"dev", root, sb)
    root_mount = k.mount(root, None)
    dev_sb = k.superblock(0x01021994)
    dev_root = k.dentry(b"/", None, dev_sb)
    dev_mount = k.mount(dev_root, root_mount, dev_dir)
    k.u32(k.alloc(4), 0)
    return root_mount, busybox, dev_mount


def test_mappings_named_like_proc_maps(k: FakeKernel) -> None:
    root_mount, busybox, _ = _fs(k)
    exe = k.file(root_mount, busybox)
    vdso = k.alloc(16, 4)
    k.u32(vdso, k.string(b"[vdso]"))
    vmas = [
        k.vma(0x10000, 0x145000, 0x5, file=exe),
        k.vma(0x149000, 0x14B000, 0x3, file=exe, pgoff=0x138),
        k.vma(0x14B000, 0x14F000, 0x3),
        k.vma(0xA48000, 0xA6A000, 0x3),
        k.vma(0xBEE70000, 0xBEE91000, 0x3),
        k.vma(0xBEF44000, 0xBEF45000, 0x5, ops=PAGE_OFFSET + 0x900, private=vdso),
        k.vma(0xBEF50000, 0xBEF51000, 0x8B),
    ]
    mm = k.mm(vmas, brk=(0xA48000, 0xA6A000), stack=0xBEE90F00)
    got = [(m.start, m.end, m.perms, m.offset, m.path) for m in k.maps.mappings(mm)]
    assert got == [
        (0x10000, 0x145000, "r-xp", 0, "/bin/busybox"),
        (0x149000, 0x14B000, "rw-p", 0x138000, "/bin/busybox"),
        (0x14B000, 0x14F000, "rw-p", 0, ""),
        (0xA48000, 0xA6A000, "rw-p", 0, "[heap]"),
        (0xBEE70000, 0xBEE91000, "rw-p", 0, "[stack]"),
        (0xBEF44000, 0xBEF45000, "r-xp", 0, "[vdso]"),
        (0xBEF50000, 0xBEF51000, "rw-s", 0, ""),
        (VECTORS.start, VECTORS.end, "r-xp", 0, "[vectors]"),
    ]


def test_garbage_maple_roots_are_incomplete(k: FakeKernel) -> None:
    # Multi-level trees, and a cycle in one, are tested on a real tree: tests/test_osi_linux_proc.py.
    assert maple_entries(k.mem, MAPLE, PAGE_OFFSET, GARBAGE | 0x12) == ([], False)
    assert maple_entries(k.mem, MAPLE, PAGE_OFFSET, (HOLE + 0x100) | (MAPLE.maple_leaf_64 << 3) | 2) == ([], False)
    dense = (k.alloc(256, 256)) | 2
    assert maple_entries(k.mem, MAPLE, PAGE_OFFSET, dense) == ([], False)


def test_overlapping_or_broken_vmas_mark_the_map_partial(k: FakeKernel) -> None:
    good = k.vma(0x1000, 0x3000, 0x1)
    overlapping = k.vma(0x2000, 0x4000, 0x1)
    inverted = k.vma(0x9000, 0x8000, 0x1)
    mm = k.mm([good, overlapping, inverted])
    got = k.maps.mappings(mm)
    assert [(m.start, m.partial) for m in got] == [(0x1000, True), (VECTORS.start, False)]
    assert k.maps.mappings(GARBAGE) == []


# -- files ------------------------------------------------------------------------------


def test_paths_cross_mounts_and_name_pseudo_files(k: FakeKernel) -> None:
    root_mount, busybox, dev_mount = _fs(k)
    dev_root = struct.unpack_from("<I", k.ram, dev_mount - PAGE_OFFSET + LAYOUT.mount_vfsmount)[0]
    console = k.dentry(b"console", dev_root, k.superblock(0x01021994))
    assert k.paths.file_path(k.file(dev_mount, console)) == ("/dev/console", False, False, None)
    assert k.paths.file_path(k.file(root_mount, busybox)) == ("/bin/busybox", False, False, None)
    pipe_sb = k.superblock(PIPEFS_MAGIC)
    pipe = k.file(root_mount, k.dentry(b"", None, pipe_sb), ino=1234)
    assert k.paths.file_path(pipe) == ("pipe:[1234]", False, False, None)
    sb = k.superblock(0x01021994)
    gone = k.dentry(b"gone.txt", dev_root, sb, hashed=False)
    assert k.paths.file_path(k.file(dev_mount, gone)) == ("/dev/gone.txt (deleted)", False, False, None)


def test_names_and_paths_that_are_not_utf8_keep_their_bytes(k: FakeKernel) -> None:
    """prctl(PR_SET_NAME, b"\\xff\\xfe[red]x\\n") and a file /tmp/bad\\xff\\xfe mapped executable: the text shows
    U+FFFD, the bytes and the stored form (``{"hex"}``, as the syscalls plugin stores such a path) are exact."""
    comm = b"\xff\xfe[red]x\n"
    task = k.task(9, comm)
    process, thread = k.tasks.process(task), k.tasks.thread(task)
    assert process is not None and thread is not None
    for named in (process, thread):
        assert named.name == "\ufffd\ufffd[red]x\n" and named.name_bytes == comm
        assert named.stored_name == {"hex": comm.hex()}
    plain = k.tasks.process(k.task(10, b"sh"))
    assert plain is not None and (plain.raw_name, plain.stored_name, plain.name_bytes) == (None, "sh", b"sh")
    root_mount, busybox, _ = _fs(k)
    tmp = k.dentry(b"tmp", struct.unpack_from("<I", k.ram, busybox - PAGE_OFFSET + LAYOUT.dentry_parent)[0],
                   k.superblock(0x01021994))
    bad = k.file(root_mount, k.dentry(b"bad\xff\xfe", tmp, k.superblock(0x01021994)))
    path = k.paths.file_path(bad)
    assert path.path.endswith("/tmp/bad\ufffd\ufffd") and path.raw is not None
    assert path.raw.endswith(b"/tmp/bad\xff\xfe") and path.raw.decode("utf-8", "replace") == path.path
    (mapping, _) = k.maps.mappings(k.mm([k.vma(0x10000, 0x11000, 0x5, file=bad)]))
    assert (mapping.path, mapping.path_bytes, mapping.stored_path) == (path.path, path.raw, {"hex": path.raw.hex()})


def test_a_dentry_cycle_or_garbage_name_is_partial(k: FakeKernel) -> None:
    root_mount, _, _ = _fs(k)
    sb = k.superblock(1)
    a = k.dentry(b"a", None, sb)
    b = k.dentry(b"b", a, sb)
    k.u32(a + LAYOUT.dentry_parent, b)  # a <-> b, never reaching the mount root
    assert k.paths.file_path(k.file(root_mount, b))[1]
    k.u32(b + LAYOUT.dentry_name_len, 100000)
    assert k.paths.file_path(k.file(root_mount, b))[1]
    assert k.paths.file_path(GARBAGE) == ("", True, False, None)


def test_open_files_from_the_fd_table(k: FakeKernel) -> None:
    root_mount, busybox, _ = _fs(k)
    file = k.file(root_mount, busybox)
    array = k.alloc(4 * 32, 4)
    k.u32(array + 0, file)
    k.u32(array + 4 * 7, file)
    fdt = k.alloc(8, 4)
    k.u32(fdt + LAYOUT.fdt_max_fds, 32)
    k.u32(fdt + LAYOUT.fdt_fd, array)
    files = k.alloc(8, 4)
    k.u32(files + LAYOUT.files_fdt, fdt)
    assert k.paths.open_files(files) == ({0: file, 7: file}, True)
    k.u32(fdt + LAYOUT.fdt_max_fds, 0xFFFFFFFF)  # garbage size: bounded read, marked incomplete
    assert k.paths.open_files(files)[1] is False


# -- modules and the report ----------------------------------------------------------------


def _module(k: FakeKernel, name: bytes, state: int = 0) -> int:
    module = k.alloc(0xA0, 4)
    k.u32(module + LAYOUT.module_state, state)
    k.put(module + LAYOUT.module_name, name.ljust(56, b"\0"))
    k.u32(module + LAYOUT.module_base, 0xBF000000)
    k.u32(module + LAYOUT.module_sizes[0], 12288)
    k.u32(module + LAYOUT.module_sizes[1], 4096)
    return module


def test_modules_skip_unformed_and_stop_at_cycles(k: FakeKernel) -> None:
    a, b, c = _module(k, b"nls_ascii"), _module(k, b"loading", state=3), _module(k, b"ext4")
    k.ring(MODULES, [m + LAYOUT.module_list for m in (a, b, c)])
    assert [(m.name, m.base, m.size) for m in read_modules(k.mem, LAYOUT)] == [
        ("nls_ascii", 0xBF000000, 16384), ("ext4", 0xBF000000, 16384)]
    k.link(c + LAYOUT.module_list, a + LAYOUT.module_list)
    assert [m.name for m in read_modules(k.mem, LAYOUT)] == ["nls_ascii", "ext4"]


def _proc(pid: int, ppid: int) -> OsiProcess:
    return OsiProcess(pid, pid, ppid, f"p{pid}", None, 0, 0, False)


def test_process_tree_order_survives_a_parent_cycle() -> None:
    order = tree_order([_proc(1, 0), _proc(5, 1), _proc(2, 0), _proc(9, 5), _proc(7, 8), _proc(8, 7)])
    assert [(depth, p.pid) for depth, p in order] == [(0, 1), (1, 5), (2, 9), (0, 2), (0, 7), (0, 8)]


# -- never raise, never loop ------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 0x3FF))
def test_walkers_on_random_memory_never_raise(seed: int, pick: int) -> None:
    k = FakeKernel()
    noise = random.Random(seed).randbytes(0x4000)
    # random kernel-looking pointers make the walks wander inside the noise
    words = bytearray(noise)
    for i in range(0, len(words), 16):
        words[i : i + 4] = struct.pack("<I", PAGE_OFFSET + (struct.unpack_from("<H", noise, i)[0] & 0x3FFC))
    k.put(PAGE_OFFSET, bytes(words))
    target = PAGE_OFFSET + pick * 16
    k.tasks.processes()
    k.tasks.process(target)
    process = OsiProcess(1, 1, 0, "x", None, target, 0, False)
    k.tasks.threads(process)
    k.maps.mappings(target)
    k.paths.file_path(target)
    k.paths.open_files(target)
    read_modules(k.mem, LAYOUT)
    maple_entries(k.mem, MAPLE, PAGE_OFFSET, target | (MAPLE.maple_range_64 << 3) | 2)


def test_kernel_memory_reads_across_pages_and_holes(k: FakeKernel) -> None:
    k.put(HOLE - 4, b"abcd")
    assert k.mem.read(HOLE - 4, 4) == b"abcd"
    assert k.mem.read(HOLE - 4, 8) is None
    assert k.mem.cstring(HOLE - 4, 64) is None
    assert k.mem.u32(HOLE - 2) is None
    assert k.mem.u32(0xFFFFFFFE) is None and k.mem.read(0xFFFFFFFF, 4) is None
    k.put(HOLE + 0x2000 - 2, b"xy")
    k.put(HOLE + 0x2000, b"zw\0")
    assert k.mem.cstring(HOLE + 0x2000 - 2, 64) == b"xyzw"
    assert k.mem.u32(HOLE + 0x2000 - 2) == int.from_bytes(b"xyzw", "little")
    assert k.mem.physical(HOLE) is None and k.mem.physical(PAGE_OFFSET + 0x10) == RAM_BASE + 0x10


def test_layout_process_block_covers_every_identity_field() -> None:
    lo, size = LAYOUT.process_block
    assert lo == LAYOUT.task_mm and lo + size >= LAYOUT.task_comm + 16
    moved = replace(LAYOUT, task_comm=0x08)
    assert moved.process_block[0] == 0x08
