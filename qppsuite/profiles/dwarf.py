"""Derive a kernel profile (symbols, struct layouts, constants) from a vmlinux's DWARF.

PANDA asks its users to hand-write ``kernelinfo.conf``; here the Debian
``-dbg`` package's vmlinux answers every question.  The obvious way (walk
all ~2600 compile units with pyelftools) takes many minutes on a 240 MB
vmlinux, so this module reads only what it needs:

* ``.symtab`` is decoded with :mod:`struct` straight from the section bytes;
* ``.debug_aranges`` maps a few well-known functions (``copy_process`` in
  kernel/fork.c, ``path_mount`` in fs/namespace.c, ...) to the compile units
  that include the headers defining the wanted types, and only those units'
  top-level DIEs are indexed;
* from each wanted type, the layouts of every struct/union/enum it holds *by
  value* are emitted too, so nested named members always have a layout.

The layout conventions (flattened anonymous members, bitfield offsets, the
type-string grammar) are documented in :mod:`qppsuite.profiles.profile`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from elftools.common.exceptions import ELFError
from elftools.dwarf.compileunit import CompileUnit
from elftools.dwarf.die import DIE
from elftools.dwarf.dwarfinfo import DWARFInfo
from elftools.elf.elffile import ELFFile

from qppsuite.errors import BuildError
from qppsuite.profiles.profile import PROFILE_FORMAT, derive_constants, release_from_banner

# Symbols osi_linux and its users may want; the profile holds those the kernel has.
KERNEL_SYMBOLS: tuple[str, ...] = (
    # data: task list, address spaces, namespaces, modules
    "init_task", "init_mm", "init_pid_ns", "init_uts_ns", "init_fs", "init_files",
    "swapper_pg_dir", "modules", "linux_banner", "jiffies", "jiffies_64",
    "__cpu_online_mask", "nr_cpu_ids",
    # per-cpu: current task on CONFIG_CURRENT_POINTER_IN_TPIDRURO kernels
    "__entry_task", "__per_cpu_offset", "__per_cpu_start", "__per_cpu_end",
    # image layout: PAGE_OFFSET and THREAD_SIZE are derived from these
    "_text", "_stext", "_etext", "_sdata", "_edata", "__bss_start", "__bss_stop", "_end",
    "__init_begin", "__init_end", "__start_init_task", "__end_init_task", "__start_init_stack", "__end_init_stack",
    "init_stack",
    # entry/exit paths: syscalls, returns to user, vectors
    "vector_swi", "sys_call_table", "ret_fast_syscall", "ret_slow_syscall", "ret_to_user",
    "ret_to_user_from_irq", "ret_from_fork", "__vectors_start", "__stubs_start",
    # task lifetime and scheduling
    "__switch_to", "cpu_v7_switch_mm", "finish_task_switch", "schedule_tail", "kernel_clone",
    "copy_process", "wake_up_new_task", "begin_new_exec", "do_exit", "do_group_exit",
    "commit_creds",
    # address space changes and modules
    "mmap_region", "do_munmap", "load_module", "do_init_module",
    # failure and idle
    "panic", "die", "_printk", "arch_cpu_idle", "do_idle", "start_kernel",
)
REQUIRED_SYMBOLS = ("init_task", "linux_banner")

# Layouts the profile must have: without them osi_linux cannot list a process.
REQUIRED_TYPES: tuple[str, ...] = (
    "task_struct", "list_head", "mm_struct", "thread_info", "cred", "signal_struct", "pid", "upid",
    "files_struct", "fdtable", "file", "path", "dentry", "qstr", "inode", "vm_area_struct",
)
# Layouts used when present; some exist only in some kernel versions (maple tree: 6.1+; module_memory: 6.4+,
# which replaced module_layout).
OPTIONAL_TYPES: tuple[str, ...] = (
    "maple_tree", "maple_node", "maple_range_64", "maple_arange_64", "maple_metadata", "maple_alloc",
    "vfsmount", "mount", "mnt_namespace", "super_block", "fs_struct", "kuid_t", "kgid_t",
    "hlist_node", "hlist_head", "module", "module_layout", "module_memory", "kernel_symbol", "cpu_context_save",
    "pt_regs", "thread_struct", "nsproxy", "pid_namespace", "uts_namespace", "new_utsname",
    "linux_binprm", "rb_node", "callback_head",
)
KERNEL_ENUMS: tuple[str, ...] = ("maple_type", "pid_type", "module_state", "mod_mem_type")

# Functions whose compile units include the headers defining the types above,
# most productive first; aranges map each to its unit without a full scan.
KERNEL_CU_HINTS: tuple[str, ...] = (
    "copy_process",      # kernel/fork.c: task, mm, files, fs, cred, signal, pid
    "path_mount",        # fs/namespace.c: mount, mnt_namespace
    "mas_walk",          # lib/maple_tree.c: maple nodes, enum maple_type
    "load_module",       # kernel/module/main.c: module, module_layout, kernel_symbol
    "begin_new_exec",    # fs/exec.c: linux_binprm
    "start_kernel",      # init/main.c
)

_ELF_MACHINES = {"EM_ARM": "arm", "EM_AARCH64": "arm64", "EM_X86_64": "x86_64", "EM_386": "x86"}
_SHN_UNDEF = 0
_STT_FUNC = 2
_STT_SECTION = 3
_STT_FILE = 4
_BIND_RANK = {1: 0, 2: 1, 0: 2}  # GLOBAL before WEAK before LOCAL

_DW_ATE_BOOLEAN = 0x02
_DW_ATE_FLOAT = 0x04
_DW_ATE_SIGNED = 0x05
_DW_ATE_SIGNED_CHAR = 0x06
_DW_ATE_UNSIGNED_CHAR = 0x08
_DW_OP_PLUS_UCONST = 0x23

_QUALIFIERS = frozenset({
    "DW_TAG_const_type", "DW_TAG_volatile_type", "DW_TAG_restrict_type", "DW_TAG_atomic_type",
    "DW_TAG_immutable_type",
})
_AGGREGATES = {"DW_TAG_structure_type": "struct", "DW_TAG_union_type": "union",
               "DW_TAG_class_type": "struct"}
_ANONYMOUS = "<anonymous>"
_BANNER_SCAN = 1024


@dataclass(frozen=True)
class ElfSymbol:
    """One ``.symtab`` entry, reduced to what a profile needs."""

    value: int
    size: int
    kind: int
    bind: int


@dataclass(frozen=True)
class _Rendered:
    text: str
    size: int


def _tag(die: DIE) -> str:
    return str(die.tag)


def _attr(die: DIE, name: str) -> Any:
    attribute = die.attributes.get(name)
    return None if attribute is None else attribute.value


def _name(die: DIE) -> str | None:
    value = _attr(die, "DW_AT_name")
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _uleb128(data: Sequence[int]) -> int:
    result = shift = 0
    for byte in data:
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return result


def _member_location(die: DIE) -> int:
    """Byte offset of a member; DWARF2-era producers wrote it as a location expression."""
    value = _attr(die, "DW_AT_data_member_location")
    if value is None:
        return 0  # union members and the first member may omit it
    if isinstance(value, int):
        return value
    if value and value[0] == _DW_OP_PLUS_UCONST:
        return _uleb128(value[1:])
    raise BuildError(f"member {_name(die)} has a location expression this builder cannot evaluate")


def read_symbols(elf: ELFFile, wanted: Iterable[str]) -> dict[str, ElfSymbol]:
    """Look up ``wanted`` names in ``.symtab`` by decoding the section bytes directly.

    pyelftools builds a Python object per symbol (~220k in a vmlinux); this
    reads the table with one :func:`struct.iter_unpack` and decodes only names.
    When a name is both global and local (static functions share names across
    files), the global definition wins.
    """
    symtab = elf.get_section_by_name(".symtab")
    if symtab is None:
        raise BuildError(f"{getattr(elf.stream, 'name', 'ELF')} has no .symtab (a stripped kernel?)")
    strtab = elf.get_section(symtab["sh_link"]).data()
    data = symtab.data()
    order = "<" if elf.little_endian else ">"
    if elf.elfclass == 32:
        entries: Iterator[tuple[int, ...]] = (
            (n, info, shndx, value, size)
            for n, value, size, info, _other, shndx in struct.iter_unpack(order + "IIIBBH", data)
        )
    else:
        entries = (
            (n, info, shndx, value, size)
            for n, info, _other, shndx, value, size in struct.iter_unpack(order + "IBBHQQ", data)
        )
    wanted_bytes = {name.encode(): name for name in wanted}
    found: dict[str, ElfSymbol] = {}
    for name_offset, info, shndx, value, size in entries:
        if shndx == _SHN_UNDEF or not name_offset:
            continue
        raw = strtab[name_offset : strtab.find(b"\0", name_offset)]
        name = wanted_bytes.get(raw)
        if name is None:
            continue
        kind, bind = info & 0xF, info >> 4
        if kind in (_STT_SECTION, _STT_FILE):
            continue
        if kind == _STT_FUNC and elf["e_machine"] == "EM_ARM":
            value &= ~1  # Thumb functions carry their mode in bit 0
        candidate = ElfSymbol(value, size, kind, bind)
        current = found.get(name)
        if current is None or _BIND_RANK.get(bind, 3) < _BIND_RANK.get(current.bind, 3):
            found[name] = candidate
    return found


def read_banner(elf: ELFFile, symbol: ElfSymbol) -> str:
    """The NUL-terminated ``linux_banner`` string, read from its section in the file."""
    for section in elf.iter_sections():
        start, size = section["sh_addr"], section["sh_size"]
        if section["sh_type"] == "SHT_NOBITS" or not start <= symbol.value < start + size:
            continue
        length = min(symbol.size or _BANNER_SCAN, start + size - symbol.value)
        stream = elf.stream
        stream.seek(section["sh_offset"] + symbol.value - start)
        raw = stream.read(length)
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace").rstrip()
    raise BuildError(f"linux_banner at {symbol.value:#x} lies in no section with file contents")


@dataclass
class TypeLayouts:
    """The layouts found in DWARF, in the profile's JSON shapes."""

    types: dict[str, Any] = field(default_factory=dict)
    enums: dict[str, dict[str, int]] = field(default_factory=dict)
    enum_sizes: dict[str, int] = field(default_factory=dict)
    base_types: dict[str, Any] = field(default_factory=dict)


class _TypeCollector:
    """Indexes the top-level type definitions of chosen CUs and renders layouts from them."""

    def __init__(self, pointer_size: int) -> None:
        self.pointer_size = pointer_size
        self.out = TypeLayouts()
        self._aggregates: dict[str, DIE] = {}
        self._enum_dies: dict[str, DIE] = {}
        self._typedefs: dict[str, DIE] = {}
        self._indexed: set[int] = set()
        self._rendered: dict[tuple[int, str | None], _Rendered] = {}
        self._pending: list[tuple[str, DIE]] = []

    # -- indexing
    def add_cu(self, cu: CompileUnit) -> None:
        if cu.cu_offset in self._indexed:
            return
        self._indexed.add(cu.cu_offset)
        for die in cu.get_top_DIE().iter_children():
            name = _name(die)
            if name is None or _attr(die, "DW_AT_declaration"):
                continue
            if _tag(die) in _AGGREGATES:
                self._aggregates.setdefault(name, die)
            elif _tag(die) == "DW_TAG_enumeration_type":
                self._enum_dies.setdefault(name, die)
            elif _tag(die) == "DW_TAG_typedef":
                self._typedefs.setdefault(name, die)

    def find(self, name: str) -> DIE | None:
        """A struct/union of that tag name, or a typedef naming an anonymous one."""
        if name in self._aggregates:
            return self._aggregates[name]
        typedef = self._typedefs.get(name)
        if typedef is not None:
            target = self._strip_qualifiers(self._type_of(typedef))
            if target is not None and _tag(target) in _AGGREGATES and _name(target) is None:
                return target
        return None

    # -- emitting
    def emit_layout(self, name: str, die: DIE) -> None:
        """Emit ``name``'s layout and, transitively, those of the aggregates it holds by value."""
        self._pending.append((name, die))
        self.drain()

    def drain(self) -> None:
        """Lay out every aggregate some type string has named since the last drain."""
        while self._pending:
            layout_name, layout_die = self._pending.pop()
            if layout_name in self.out.types:
                continue
            members: dict[str, Any] = {}
            self.out.types[layout_name] = {
                "kind": _AGGREGATES[_tag(layout_die)],
                "size": int(_attr(layout_die, "DW_AT_byte_size") or 0),
                "members": members,
            }
            self._collect_members(layout_name, layout_die, 0, members)

    def emit_enum(self, name: str) -> bool:
        die = self._enum_dies.get(name)
        if die is None:
            return False
        self._record_enum(name, die)
        return True

    def _record_enum(self, name: str, die: DIE) -> None:
        if name in self.out.enums:
            return
        self.out.enums[name] = {
            _name(child) or "": int(_attr(child, "DW_AT_const_value"))
            for child in die.iter_children()
            if _tag(child) == "DW_TAG_enumerator"
        }
        self.out.enum_sizes[name] = int(_attr(die, "DW_AT_byte_size") or 0)
        underlying = self._type_of(die)
        if underlying is not None:
            self._render(underlying, None)  # registers the storage base type for ISF's enum "base"

    def _collect_members(self, layout: str, die: DIE, base: int, out: dict[str, Any]) -> None:
        for child in die.iter_children():
            if _tag(child) != "DW_TAG_member":
                continue
            offset = base + _member_location(child)
            type_die = self._type_of(child)
            name = _name(child)
            if name is None:
                target = self._strip_typedefs(type_die)
                if target is not None and _tag(target) in _AGGREGATES:
                    self._collect_members(layout, target, offset, out)  # anonymous struct/union
                continue  # otherwise an unnamed bitfield: padding
            rendered = self._render(type_die, f"{layout}.{name}")
            info: dict[str, Any] = {"offset": offset, "size": rendered.size, "type": rendered.text}
            bit_size = _attr(child, "DW_AT_bit_size")
            if bit_size is not None:
                first_bit = self._first_bit(child, offset, rendered.size, bit_size, base)
                info["offset"], info["bit_offset"], info["bit_size"] = first_bit // 8, first_bit % 8, bit_size
            out[name] = info

    @staticmethod
    def _first_bit(member: DIE, offset: int, type_size: int, bit_size: int, base: int) -> int:
        """Absolute index of a bitfield's least significant bit (little endian)."""
        data_bit_offset = _attr(member, "DW_AT_data_bit_offset")
        if data_bit_offset is not None:
            return base * 8 + int(data_bit_offset)
        # DWARF 2-4: DW_AT_bit_offset counts from the storage unit's most significant bit.
        storage = int(_attr(member, "DW_AT_byte_size") or type_size)
        return offset * 8 + storage * 8 - int(_attr(member, "DW_AT_bit_offset") or 0) - bit_size

    # -- type strings
    @staticmethod
    def _type_of(die: DIE) -> DIE | None:
        return die.get_DIE_from_attribute("DW_AT_type") if "DW_AT_type" in die.attributes else None

    def _strip_qualifiers(self, die: DIE | None) -> DIE | None:
        while die is not None and _tag(die) in _QUALIFIERS:
            die = self._type_of(die)
        return die

    def _strip_typedefs(self, die: DIE | None) -> DIE | None:
        die = self._strip_qualifiers(die)
        while die is not None and _tag(die) == "DW_TAG_typedef":
            die = self._strip_qualifiers(self._type_of(die))
        return die

    def _render(self, die: DIE | None, anon_name: str | None) -> _Rendered:
        """Spell ``die`` in the profile's type grammar; ``anon_name`` names an anonymous aggregate."""
        if die is None:
            return _Rendered("void", 0)
        key = (die.offset, anon_name)
        cached = self._rendered.get(key)
        if cached is None:
            cached = self._render_uncached(die, anon_name)
            self._rendered[key] = cached
        return cached

    def _render_uncached(self, die: DIE, anon_name: str | None) -> _Rendered:
        tag = _tag(die)
        if tag in _QUALIFIERS:
            return self._render(self._type_of(die), anon_name)
        if tag == "DW_TAG_base_type":
            name = _name(die) or "void"
            self._record_base(name, die)
            return _Rendered(name, int(_attr(die, "DW_AT_byte_size") or 0))
        if tag == "DW_TAG_typedef":
            return self._render_typedef(die, anon_name)
        if tag in _AGGREGATES or tag == "DW_TAG_enumeration_type":
            return self._render_user(die, _name(die) or anon_name or _ANONYMOUS)
        if tag == "DW_TAG_pointer_type" or tag == "DW_TAG_reference_type":
            inner = self._render_pointee(self._type_of(die))
            size = int(_attr(die, "DW_AT_byte_size") or self.pointer_size)
            return _Rendered(inner + ("*" if inner.endswith("*") else " *"), size)
        if tag == "DW_TAG_array_type":
            return self._render_array(die, anon_name)
        if tag == "DW_TAG_subroutine_type":
            return _Rendered("function", 0)
        if tag == "DW_TAG_unspecified_type":
            return _Rendered("void", 0)
        raise BuildError(f"DWARF type tag {tag} at {die.offset:#x} is not supported by the profile builder")

    def _render_typedef(self, die: DIE, anon_name: str | None) -> _Rendered:
        name = _name(die) or _ANONYMOUS
        target = self._strip_typedefs(die)
        if target is not None and _tag(target) == "DW_TAG_base_type":
            rendered = self._render(target, None)
            self.out.base_types.setdefault(name, self.out.base_types[_name(target) or "void"])
            return _Rendered(name, rendered.size)
        direct = self._strip_qualifiers(self._type_of(die))
        if direct is not None and _name(direct) is None and (
            _tag(direct) in _AGGREGATES or _tag(direct) == "DW_TAG_enumeration_type"
        ):
            return self._render_user(direct, name)  # typedef struct {...} kuid_t;
        return self._render(self._type_of(die), anon_name)

    def _render_user(self, die: DIE, name: str) -> _Rendered:
        kind = _AGGREGATES.get(_tag(die), "enum")
        size = int(_attr(die, "DW_AT_byte_size") or 0)
        if _attr(die, "DW_AT_declaration"):
            return _Rendered(f"{kind} {name}", size)
        if kind == "enum":
            self._record_enum(name, die)
        elif name not in self.out.types:
            self._pending.append((name, die))
        return _Rendered(f"{kind} {name}", size)

    def _render_pointee(self, die: DIE | None) -> str:
        """A pointer's target, named but not laid out: pointers do not pull in layouts."""
        die = self._strip_qualifiers(die)
        if die is None:
            return "void"
        if _tag(die) in _AGGREGATES or _tag(die) == "DW_TAG_enumeration_type":
            return f"{_AGGREGATES.get(_tag(die), 'enum')} {_name(die) or _ANONYMOUS}"
        if _tag(die) == "DW_TAG_typedef":
            target = self._strip_typedefs(die)
            direct = self._strip_qualifiers(self._type_of(die))
            if target is not None and _tag(target) in _AGGREGATES and _name(target) is not None:
                return self._render_pointee(target)
            if direct is not None and _tag(direct) in _AGGREGATES and _name(direct) is None:
                return f"{_AGGREGATES[_tag(direct)]} {_name(die)}"
        return self._render(die, None).text

    def _render_array(self, die: DIE, anon_name: str | None) -> _Rendered:
        element = self._render(self._type_of(die), anon_name)
        dims: list[int] = []
        for sub in die.iter_children():
            if _tag(sub) != "DW_TAG_subrange_type":
                continue
            count = _attr(sub, "DW_AT_count")
            if count is None:
                upper = _attr(sub, "DW_AT_upper_bound")
                count = upper + 1 if isinstance(upper, int) else 0  # flexible array member
            dims.append(int(count))
        text = element.text
        run_start = len(text)
        while run_start > 0 and text[run_start - 1] == "]":
            run_start = text.rfind("[", 0, run_start)
        text = text[:run_start] + "".join(f"[{n}]" for n in dims) + text[run_start:]
        total = element.size
        for n in dims:
            total *= n
        return _Rendered(text, total)

    def _record_base(self, name: str, die: DIE) -> None:
        if name in self.out.base_types:
            return
        encoding = _attr(die, "DW_AT_encoding")
        kind = {_DW_ATE_BOOLEAN: "bool", _DW_ATE_FLOAT: "float", _DW_ATE_SIGNED_CHAR: "char",
                _DW_ATE_UNSIGNED_CHAR: "char"}.get(encoding, "int")
        signed = encoding in (_DW_ATE_SIGNED, _DW_ATE_SIGNED_CHAR, _DW_ATE_FLOAT)
        self.out.base_types[name] = {"size": int(_attr(die, "DW_AT_byte_size") or 0),
                                     "signed": signed, "kind": kind}


def _open_elf(path: Path) -> tuple[BinaryIO, ELFFile]:
    path = Path(path)
    if not path.is_file():
        raise BuildError(f"ELF file {path} does not exist")
    stream = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    try:
        elf = ELFFile(stream)
    except ELFError as exc:
        stream.close()
        raise BuildError(f"{path} is not an ELF file: {exc}") from exc
    if not elf.has_dwarf_info() or elf.get_section_by_name(".debug_info") is None:
        stream.close()
        raise BuildError(f"{path} has no DWARF (.debug_info); use the kernel from the -dbg package")
    if not elf.little_endian:
        stream.close()
        raise BuildError(f"{path} is big-endian; the profile builder reads little-endian ELFs only")
    return stream, elf


def _hinted_cus(dwarf: DWARFInfo, addresses: Iterable[int]) -> Iterator[CompileUnit]:
    """The CUs whose code covers ``addresses``, via ``.debug_aranges`` (no CU walk)."""
    aranges = dwarf.get_aranges()
    if aranges is None:
        return
    for address in addresses:
        offset = aranges.cu_offset_at_addr(address)
        if offset is not None:
            yield dwarf.get_CU_at(offset)


def _collect(
    dwarf: DWARFInfo,
    pointer_size: int,
    cus: Iterable[CompileUnit],
    type_names: Sequence[str],
    enum_names: Sequence[str],
) -> TypeLayouts:
    """Index CUs one at a time until every wanted type and enum is found (or CUs run out)."""
    collector = _TypeCollector(pointer_size)
    missing_types = list(type_names)
    missing_enums = list(enum_names)
    for cu in cus:
        if not missing_types and not missing_enums:
            break
        collector.add_cu(cu)
        still: list[str] = []
        for name in missing_types:
            die = collector.find(name)
            if die is None:
                still.append(name)
            else:
                collector.emit_layout(name, die)
        missing_types = still
        missing_enums = [name for name in missing_enums if not collector.emit_enum(name)]
    collector.drain()
    return collector.out


def extract_layouts(
    elf_path: Path,
    type_names: Sequence[str],
    enum_names: Sequence[str] = (),
    hint_functions: Sequence[str] | None = None,
) -> TypeLayouts:
    """Layouts of ``type_names`` (and what they hold by value) from any little-endian ELF with DWARF.

    With ``hint_functions`` only the CUs containing those functions are read
    (the way to stay fast on a vmlinux); without, every CU is, in order.
    Names not found are simply absent from the result.
    """
    stream, elf = _open_elf(elf_path)
    with stream:
        dwarf = elf.get_dwarf_info()
        pointer_size = elf.elfclass // 8
        if hint_functions is None:
            cus: Iterable[CompileUnit] = dwarf.iter_CUs()
        else:
            symbols = read_symbols(elf, hint_functions)
            cus = _hinted_cus(dwarf, (symbols[f].value for f in hint_functions if f in symbols))
        return _collect(dwarf, pointer_size, cus, type_names, enum_names)


def build_kernel_profile(vmlinux: Path) -> dict[str, Any]:
    """Build a ``qppsuite-profile/1`` dict from a vmlinux with debug info (the -dbg package's)."""
    vmlinux = Path(vmlinux)
    stream, elf = _open_elf(vmlinux)
    with stream:
        arch = _ELF_MACHINES.get(elf["e_machine"], str(elf["e_machine"]).removeprefix("EM_").lower())
        pointer_size = elf.elfclass // 8
        symbols = read_symbols(elf, (*KERNEL_SYMBOLS, *KERNEL_CU_HINTS))
        absent = [name for name in REQUIRED_SYMBOLS if name not in symbols]
        if absent:
            raise BuildError(f"{vmlinux.name} is not a Linux vmlinux: .symtab lacks {', '.join(absent)}")
        banner = read_banner(elf, symbols["linux_banner"])
        dwarf = elf.get_dwarf_info()
        hints = [symbols[name].value for name in KERNEL_CU_HINTS if name in symbols]
        layouts = _collect(
            dwarf, pointer_size, _hinted_cus(dwarf, hints), (*REQUIRED_TYPES, *OPTIONAL_TYPES), KERNEL_ENUMS
        )
    lacking = [name for name in REQUIRED_TYPES if name not in layouts.types]
    if lacking:
        raise BuildError(
            f"{vmlinux.name}: no DWARF definition of {', '.join(lacking)} in the CUs of "
            f"{', '.join(name for name in KERNEL_CU_HINTS if name in symbols)}"
        )
    addresses = {name: symbols[name].value for name in KERNEL_SYMBOLS if name in symbols}
    return {
        "format": PROFILE_FORMAT,
        "banner": banner,
        "release": release_from_banner(banner),
        "arch": arch,
        "pointer_size": pointer_size,
        "endian": "little",
        "symbols": addresses,
        "types": layouts.types,
        "enums": layouts.enums,
        "enum_sizes": layouts.enum_sizes,
        "base_types": layouts.base_types,
        "constants": derive_constants(arch, addresses, layouts.types),
    }
