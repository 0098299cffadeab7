"""The kernel facts osi_linux reads memory by, resolved from a profile once, at load.

Looking a member up in the profile costs a dict walk; the walkers run on hot
paths, so every offset they need is resolved here into a plain attribute.  A
profile that lacks one of them fails at load with the profile's own message
(which lists what exists), never halfway through a run.

One layout serves every kernel version: where a structure changed between
versions, the member the profile has decides which way it is read (as
Volatility's Linux support asks ``has_member``), never the version number.
The differences, as found in Debian's 5.10, 6.1 and 6.12 armmp profiles:

* ``current``: 6.1 and 6.12 keep it in TPIDRURO and the per-cpu ``__entry_task``
  (CONFIG_CURRENT_POINTER_IN_TPIDRURO, with ``thread_info`` first in
  ``task_struct``); 5.10 has neither, and its ``thread_info`` sits at the base
  of the task's kernel stack and points at the task (``thread_info.task``).
* a process's VMAs: the maple tree ``mm_struct.mm_mt`` (6.1, 6.12) or the
  sorted list ``mm_struct.mmap`` / ``vm_area_struct.vm_next`` (5.10).
* a module's extent: ``module.core_layout`` and ``init_layout`` (5.10, 6.1) or
  ``module.mem[MOD_*]`` (6.12; 6.4 replaced the two layouts with it).
* ``task_struct.state`` (5.10) is ``__state`` from 5.14.
"""

from dataclasses import dataclass

from qppsuite.profiles.profile import KernelProfile, ProfileError

TASK_COMM_LEN = 16
"""Bytes of ``task_struct.comm``, the same in every Linux (include/linux/sched.h)."""

#: Kernel structures whose layout osi_linux depends on (for the error message and the docs).
REQUIRED_TYPES = (
    "task_struct", "thread_info", "signal_struct", "mm_struct", "maple_tree", "maple_range_64", "maple_arange_64",
    "maple_metadata", "vm_area_struct", "files_struct", "fdtable", "file", "path", "dentry", "qstr", "inode",
    "super_block", "mount", "vfsmount", "module", "module_layout", "module_memory", "hlist_bl_node",
)


THREAD_START_SP_GAP = 8
"""``THREAD_START_SP`` is ``THREAD_SIZE - 8`` (arch/arm/include/asm/thread_info.h): ``task_pt_regs()`` is the
``pt_regs`` just below it (arch/arm/include/asm/processor.h)."""


@dataclass(frozen=True)
class UserRegsLayout:
    """Where a task keeps the user registers it saved on entering the kernel, and its last system call's number.

    ``pt_regs``: offset of ``task_pt_regs(task)`` from the task's stack base (``task_struct.stack``).
    ``syscall``: offset of ``thread_info.abi_syscall`` (``syscall`` before Linux 6.7 and its stable
    backports, arch/arm/include/asm/thread_info.h) from the task (``thread_info_in_task``, CONFIG_THREAD_INFO_IN_TASK)
    or else from its stack base, where thread_info then sits.
    ``records_number``: whether every system call stores its number there (``abi_syscall``: ``vector_swi``
    writes it at each entry).  The older ``syscall`` field is written at each entry only from Linux 5.15
    ("ARM: 9107/1: syscall: always store thread_info->syscall"); 5.10 writes it for traced tasks alone and
    its ``/proc/PID/syscall`` shows 0 for every other task.
    """

    task_stack: int
    pt_regs: int
    syscall: int
    thread_info_in_task: bool
    records_number: bool

    @classmethod
    def from_profile(cls, profile: KernelProfile) -> "UserRegsLayout | None":
        """None when the profile lacks ``pt_regs``, ``thread_info``'s number field or THREAD_SIZE."""
        p = profile
        thread_size = p.constants.get("THREAD_SIZE")
        field = next((f for f in ("abi_syscall", "syscall") if p.has_member("thread_info", f)), None)
        if thread_size is None or field is None or not p.has_type("pt_regs"):
            return None
        in_task = p.has_member("task_struct", "thread_info")
        base = p.offset("task_struct", "thread_info") if in_task else 0
        return cls(
            task_stack=p.offset("task_struct", "stack"),  # every task_struct has it
            pt_regs=thread_size - THREAD_START_SP_GAP - p.size("pt_regs"),
            syscall=base + p.offset("thread_info", field),
            thread_info_in_task=in_task,
            records_number=field == "abi_syscall",
        )


@dataclass(frozen=True)
class CwdLayout:
    """Where a task's working directory is: ``task_struct.fs``, the ``fs_struct`` whose ``pwd`` is a
    ``struct path`` (include/linux/fs_struct.h), read as ``get_fs_pwd`` does for ``/proc/PID/cwd``.

    ``pwd_mnt`` and ``pwd_dentry``: offsets of ``pwd.mnt`` and ``pwd.dentry`` in the ``fs_struct``.
    """

    task_fs: int
    pwd_mnt: int
    pwd_dentry: int

    @classmethod
    def from_profile(cls, profile: KernelProfile) -> "CwdLayout | None":
        """None when the profile lacks ``fs_struct`` or ``task_struct.fs`` (a profile built without them)."""
        p = profile
        if not p.has_type("fs_struct") or not p.has_member("task_struct", "fs"):
            return None
        pwd = p.offset("fs_struct", "pwd")
        return cls(p.offset("task_struct", "fs"), pwd + p.offset("path", "mnt"), pwd + p.offset("path", "dentry"))


@dataclass(frozen=True)
class MapleLayout:
    """The maple tree of an ``mm_struct`` (``mm_mt``, Linux 6.1 on) and its node layouts (lib/maple_tree.c).

    Node members: ``maple_range_64`` (internal nodes and leaves) and ``maple_arange_64``; ``*_meta_end`` is
    the offset of ``meta.end``; ``*_slots`` the slot count; the ``maple_*`` values are ``enum maple_type``'s.
    """

    mm_mt_root: int
    range64_pivot: int
    range64_slot: int
    range64_meta_end: int
    range64_slots: int
    arange64_pivot: int
    arange64_slot: int
    arange64_meta_end: int
    arange64_slots: int
    maple_leaf_64: int
    maple_range_64: int
    maple_arange_64: int

    @classmethod
    def from_profile(cls, profile: KernelProfile) -> "MapleLayout":
        p = profile
        off = p.offset
        return cls(
            mm_mt_root=off("mm_struct", "mm_mt") + off("maple_tree", "ma_root"),
            range64_pivot=off("maple_range_64", "pivot"),
            range64_slot=off("maple_range_64", "slot"),
            range64_meta_end=off("maple_range_64", "meta") + off("maple_metadata", "end"),
            range64_slots=p.constant("MAPLE_RANGE64_SLOTS"),
            arange64_pivot=off("maple_arange_64", "pivot"),
            arange64_slot=off("maple_arange_64", "slot"),
            arange64_meta_end=off("maple_arange_64", "meta") + off("maple_metadata", "end"),
            arange64_slots=p.constant("MAPLE_ARANGE64_SLOTS"),
            maple_leaf_64=p.enum_value("maple_type", "maple_leaf_64"),
            maple_range_64=p.enum_value("maple_type", "maple_range_64"),
            maple_arange_64=p.enum_value("maple_type", "maple_arange_64"),
        )


@dataclass(frozen=True)
class VmaListLayout:
    """The VMA list of an ``mm_struct`` before the maple tree (5.10): ``mm->mmap``, then each ``vm_next``,
    in address order (include/linux/mm_types.h)."""

    mm_mmap: int
    vma_next: int


@dataclass(frozen=True)
class StackThreadInfo:
    """``thread_info`` at the base of each task's kernel stack (no CONFIG_THREAD_INFO_IN_TASK: 5.10 on ARM).

    ``current`` is ``current_thread_info()->task``, and ``current_thread_info()`` is the SVC-mode stack
    pointer rounded down to ``THREAD_SIZE`` (arch/arm/include/asm/thread_info.h, 5.10).
    """

    thread_size: int
    task: int
    """Offset of ``thread_info.task``."""


def _module_extent(profile: KernelProfile) -> tuple[int, tuple[int, ...]]:
    """(offset of the module's load address, offsets of the sizes ``/proc/modules`` adds up), in ``struct module``.

    6.4+ (``module.mem``, kernel/module/procfs.c): ``mem[MOD_TEXT].base`` and every ``mem[type].size``
    (``module_total_size``).  Before: ``core_layout.base``, and ``init_layout.size + core_layout.size``.
    """
    p = profile
    if p.has_member("module", "mem"):
        mem = p.member("module", "mem")
        stride = p.size("module_memory")
        text = mem.offset + stride * p.enum_value("mod_mem_type", "MOD_TEXT")
        count = mem.size // stride
        size = p.offset("module_memory", "size")
        return text + p.offset("module_memory", "base"), tuple(mem.offset + stride * i + size for i in range(count))
    core, init = p.offset("module", "core_layout"), p.offset("module", "init_layout")
    size = p.offset("module_layout", "size")
    return core + p.offset("module_layout", "base"), (core + size, init + size)


@dataclass(frozen=True)
class KernelLayout:
    """Symbol addresses, member offsets and constants of one kernel build."""

    banner: str
    release: str
    page_offset: int
    comm_len: int
    # symbols
    text: int
    init_task: int
    linux_banner: int
    switch_to: int
    do_exit: int
    entry_task: int | None
    modules: int
    swapper_pg_dir: int
    # task_struct
    task_tasks: int
    task_pid: int
    task_tgid: int
    task_real_parent: int
    task_group_leader: int
    task_thread_node: int
    task_signal: int
    task_comm: int
    task_mm: int
    task_start_time: int
    task_files: int
    task_flags: int
    task_state: int
    task_exit_state: int
    task_exit_code: int
    signal_thread_head: int
    # mm_struct
    mm_pgd: int
    mm_start_brk: int
    mm_brk: int
    mm_start_stack: int
    # the VMAs: exactly one of the two
    maple: MapleLayout | None
    vma_list: VmaListLayout | None
    # vm_area_struct
    vma_start: int
    vma_end: int
    vma_flags: int
    vma_pgoff: int
    vma_file: int
    vma_ops: int
    vma_private_data: int
    vma_anon_name: int | None
    # files
    files_fdt: int
    fdt_max_fds: int
    fdt_fd: int
    file_path_mnt: int
    file_path_dentry: int
    file_inode: int
    dentry_parent: int
    dentry_name_len: int
    dentry_name_ptr: int
    dentry_sb: int
    dentry_hash_pprev: int
    inode_ino: int
    sb_magic: int
    mount_vfsmount: int
    mount_parent: int
    mount_mountpoint: int
    vfsmount_root: int
    # modules
    module_list: int
    module_name: int
    module_name_len: int
    module_state: int
    module_unformed: int
    module_base: int
    module_sizes: tuple[int, ...]
    # where current is when there is no __entry_task (entry_task None); else None
    stack_thread_info: StackThreadInfo | None
    # __switch_to's next thread_info is the task itself less this (THREAD_INFO_IN_TASK), or None
    task_thread_info: int | None
    # a task's saved user registers (None: the profile cannot say where)
    user_regs: UserRegsLayout | None = None
    # a task's working directory (None: the profile has no fs_struct)
    cwd: CwdLayout | None = None

    @property
    def process_block(self) -> tuple[int, int]:
        """(offset, size) of the task_struct span holding every field an OsiProcess/OsiThread reads.

        One read of it both answers a query and tells whether a cached answer
        for the same task still holds (comm, mm, parent, ids, start time).
        """
        fields = (self.task_mm, self.task_pid, self.task_tgid, self.task_real_parent, self.task_group_leader,
                  self.task_start_time, self.task_signal, self.task_exit_state, self.task_exit_code)
        lo = min((*fields, self.task_comm))
        hi = max(*(f + 8 for f in fields), self.task_comm + self.comm_len)
        return lo, hi - lo

    @classmethod
    def from_profile(cls, profile: KernelProfile) -> "KernelLayout":
        """Resolve everything at once; a missing fact raises the profile's ProfileError."""
        p = profile
        off = p.offset
        comm = p.member("task_struct", "comm")
        if comm.size != TASK_COMM_LEN:
            raise ProfileError(
                f"profile {p.source}: task_struct.comm is {comm.size} bytes; Linux's is TASK_COMM_LEN, "
                f"{TASK_COMM_LEN} (include/linux/sched.h)"
            )
        name = p.member("module", "name")
        constants = p.constants
        page_offset = constants.get("PAGE_OFFSET")
        if page_offset is None:
            raise ProfileError(f"profile {p.source} has no constant PAGE_OFFSET (needs the symbol _text)")
        # THREAD_INFO_IN_TASK: task_struct begins with its thread_info; else the stack base holds it
        in_task = p.has_member("task_struct", "thread_info")
        stack_thread_info = None
        if not p.has_symbol("__entry_task") and not in_task:
            stack_thread_info = StackThreadInfo(p.constant("THREAD_SIZE"), off("thread_info", "task"))
        module_base, module_sizes = _module_extent(p)
        return cls(
            banner=p.banner,
            release=p.release,
            page_offset=page_offset,
            comm_len=comm.size,
            text=p.symbol("_text"),
            init_task=p.symbol("init_task"),
            linux_banner=p.symbol("linux_banner"),
            switch_to=p.symbol("__switch_to"),
            do_exit=p.symbol("do_exit"),
            entry_task=p.symbol("__entry_task") if p.has_symbol("__entry_task") else None,
            modules=p.symbol("modules"),
            swapper_pg_dir=p.symbol("swapper_pg_dir"),
            task_tasks=off("task_struct", "tasks"),
            task_pid=off("task_struct", "pid"),
            task_tgid=off("task_struct", "tgid"),
            task_real_parent=off("task_struct", "real_parent"),
            task_group_leader=off("task_struct", "group_leader"),
            task_thread_node=off("task_struct", "thread_node"),
            task_signal=off("task_struct", "signal"),
            task_comm=comm.offset,
            task_mm=off("task_struct", "mm"),
            task_start_time=off("task_struct", "start_time"),
            task_files=off("task_struct", "files"),
            task_flags=off("task_struct", "flags"),
            # 5.14 renamed task_struct.state to __state (include/linux/sched.h)
            task_state=off("task_struct", "__state" if p.has_member("task_struct", "__state") else "state"),
            task_exit_state=off("task_struct", "exit_state"),
            task_exit_code=off("task_struct", "exit_code"),
            signal_thread_head=off("signal_struct", "thread_head"),
            mm_pgd=off("mm_struct", "pgd"),
            mm_start_brk=off("mm_struct", "start_brk"),
            mm_brk=off("mm_struct", "brk"),
            mm_start_stack=off("mm_struct", "start_stack"),
            # 6.1 replaced mm->mmap and vm_next with the maple tree mm->mm_mt
            maple=MapleLayout.from_profile(p) if p.has_member("mm_struct", "mm_mt") else None,
            vma_list=None if p.has_member("mm_struct", "mm_mt") else VmaListLayout(
                off("mm_struct", "mmap"), off("vm_area_struct", "vm_next")
            ),
            vma_start=off("vm_area_struct", "vm_start"),
            vma_end=off("vm_area_struct", "vm_end"),
            vma_flags=off("vm_area_struct", "vm_flags"),
            vma_pgoff=off("vm_area_struct", "vm_pgoff"),
            vma_file=off("vm_area_struct", "vm_file"),
            vma_ops=off("vm_area_struct", "vm_ops"),
            vma_private_data=off("vm_area_struct", "vm_private_data"),
            vma_anon_name=off("vm_area_struct", "anon_name") if p.has_member("vm_area_struct", "anon_name") else None,
            files_fdt=off("files_struct", "fdt"),
            fdt_max_fds=off("fdtable", "max_fds"),
            fdt_fd=off("fdtable", "fd"),
            file_path_mnt=off("file", "f_path") + off("path", "mnt"),
            file_path_dentry=off("file", "f_path") + off("path", "dentry"),
            file_inode=off("file", "f_inode"),
            dentry_parent=off("dentry", "d_parent"),
            dentry_name_len=off("dentry", "d_name") + off("qstr", "len"),
            dentry_name_ptr=off("dentry", "d_name") + off("qstr", "name"),
            dentry_sb=off("dentry", "d_sb"),
            dentry_hash_pprev=off("dentry", "d_hash") + off("hlist_bl_node", "pprev"),
            inode_ino=off("inode", "i_ino"),
            sb_magic=off("super_block", "s_magic"),
            mount_vfsmount=off("mount", "mnt"),
            mount_parent=off("mount", "mnt_parent"),
            mount_mountpoint=off("mount", "mnt_mountpoint"),
            vfsmount_root=off("vfsmount", "mnt_root"),
            module_list=off("module", "list"),
            module_name=name.offset,
            module_name_len=name.size,
            module_state=off("module", "state"),
            module_unformed=p.enum_value("module_state", "MODULE_STATE_UNFORMED"),
            module_base=module_base,
            module_sizes=module_sizes,
            stack_thread_info=stack_thread_info,
            task_thread_info=off("task_struct", "thread_info") if in_task else None,
            user_regs=UserRegsLayout.from_profile(p),
            cwd=CwdLayout.from_profile(p),
        )
