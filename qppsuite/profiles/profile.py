"""The kernel profile osi_linux reads guest memory through: symbols, struct layouts, constants.

Two on-disk shapes load into one :class:`KernelProfile`:

* our own JSON (``"format": "qppsuite-profile/1"``), written by
  :func:`qppsuite.profiles.dwarf.build_kernel_profile`;
* a Volatility 3 ISF (what ``dwarf2json linux --elf vmlinux`` emits), so a user
  who already has one for their kernel needs no vmlinux at all.

Member types are spelled in one small grammar shared by both shapes, so an ISF
type descriptor and our type string convert into each other losslessly::

    base        "int", "pid_t", "void", "function"    (a bare name is a base type)
    user type   "struct list_head", "union foo", "enum pid_type"
    pointer     "<type> *"                            ("char *", "struct page **")
    array       "<type>[N]"; a run "[2][3]" is C order (2 arrays of 3)
    mixed       "struct page *[4]" (4 pointers), "int[4] *" (pointer to int[4])

Typedefs of scalars keep their name and appear in ``base_types``; typedefs of
anonymous structs name the struct (``struct kuid_t``), as dwarf2json does.
Members of anonymous structs/unions are flattened into their parent with
accumulated offsets (ISF's ``anonymous`` fields are flattened on load).  A
bitfield's ``offset`` is the byte holding its lowest bit and ``bit_offset``
counts from that byte's least significant bit, which is ISF's convention too.
"""

from __future__ import annotations

import base64
import contextlib
import difflib
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qppsuite.cache import cache_dir
from qppsuite.errors import ImageError
from qppsuite.schemas import load_schema, schema_problem

PROFILE_FORMAT = "qppsuite-profile/1"
ISF_FORMAT_VERSION = "6.2.0"
ISF_PRODUCER = "qppsuite"

# ARM's PAGE_OFFSET is one of a few 256 MiB-aligned splits and the kernel image
# starts less than 16 MiB above it (TEXT_OFFSET), so rounding _text down finds it.
ARM_PAGE_OFFSET_ALIGN = 1 << 24

# Arrays whose element counts are the maple tree's per-node slot constants
# (maple_tree.h spells them only as #defines, which DWARF does not keep).
MAPLE_SLOT_ARRAYS = {
    "MAPLE_NODE_SLOTS": ("maple_node", "slot"),
    "MAPLE_RANGE64_SLOTS": ("maple_range_64", "slot"),
    "MAPLE_ARANGE64_SLOTS": ("maple_arange_64", "slot"),
    "MAPLE_ALLOC_SLOTS": ("maple_alloc", "slot"),
}

_ARRAY_RUN = re.compile(r"(\[\d+\])+$")
_SUFFIX_TOKEN = re.compile(r"\s*(\*|\[(\d+)\])")
_USER_KINDS = ("struct", "union", "enum")
_LIST_ALL_LIMIT = 20
PROFILE_SCHEMA = Path(__file__).with_name("profile.schema.json")
#: Bound on any offset or size, in bytes (the schema's ``bytes``): no C type of a kernel comes near 16 MiB.
MAX_LAYOUT_BYTES = 1 << 24


class ProfileError(ImageError):
    """A profile is unreadable, or lacks the symbol, type, member or constant asked for."""


@dataclass(frozen=True)
class MemberInfo:
    """One member of a struct/union layout, as a consumer reading guest memory needs it."""

    name: str
    offset: int
    size: int
    type: str
    bit_offset: int | None = None
    bit_size: int | None = None

    @property
    def is_bitfield(self) -> bool:
        return self.bit_size is not None


def _choices(what: str, asked: str, available: Iterable[str], where: str) -> str:
    """A one-line "no X; here is what exists" message, short even for 200-member structs."""
    names = [name.encode("unicode_escape").decode("ascii") for name in sorted(available)]  # the file's own text
    if not names:
        return f"profile has no {what} {asked}; {where} has none"
    if len(names) <= _LIST_ALL_LIMIT:
        return f"profile has no {what} {asked}; {where} has: {', '.join(names)}"
    close = difflib.get_close_matches(asked.rsplit(".", 1)[-1], names, n=6, cutoff=0.5)
    shown = close or names[:_LIST_ALL_LIMIT]
    label = "closest" if close else "first"
    return (
        f"profile has no {what} {asked}; {where} has {len(names)}, {label}: {', '.join(shown)}"
    )


# --- the type grammar <-> ISF type descriptors ---------------------------------------------


def type_text_from_descriptor(desc: Mapping[str, Any]) -> str:
    """Spell an ISF type descriptor in the profile's type grammar (bitfields: their base type)."""
    kind = desc.get("kind")
    if kind == "base":
        return str(desc["name"])
    if kind in ("struct", "union", "class"):
        return f"{'struct' if kind == 'class' else kind} {desc['name']}"
    if kind == "enum":
        return f"enum {desc['name']}"
    if kind == "function":
        return "function"
    if kind == "pointer":
        inner = type_text_from_descriptor(desc["subtype"])
        return inner + ("*" if inner.endswith("*") else " *")
    if kind == "array":
        inner = type_text_from_descriptor(desc["subtype"])
        dim = f"[{int(desc['count'])}]"
        run = _ARRAY_RUN.search(inner)
        return inner[: run.start()] + dim + inner[run.start() :] if run else inner + dim
    if kind == "bitfield":
        return type_text_from_descriptor(desc["type"])
    raise ProfileError(f"ISF type descriptor has unknown kind {kind!r}; known: base, struct, union, "
                       "class, enum, function, pointer, array, bitfield")


def type_descriptor_from_text(text: str) -> dict[str, Any]:
    """Parse a type string of the profile grammar into an ISF type descriptor."""
    cut = min((i for i in (text.find("*"), text.find("[")) if i >= 0), default=len(text))
    base = text[:cut].strip()
    head, _, tail = base.partition(" ")
    desc: dict[str, Any]
    if head in _USER_KINDS and tail:
        desc = {"kind": head, "name": tail}
    elif base == "function":
        desc = {"kind": "function"}
    elif base:
        desc = {"kind": "base", "name": base}
    else:
        raise ProfileError(f"type {text!r} has no base type")
    pos = cut
    dims: list[int] = []

    def close_run() -> None:
        nonlocal desc
        for count in reversed(dims):
            desc = {"kind": "array", "count": count, "subtype": desc}
        dims.clear()

    while pos < len(text):
        match = _SUFFIX_TOKEN.match(text, pos)
        if match is None:
            raise ProfileError(f"type {text!r} has an unreadable suffix at {text[pos:]!r}")
        if match.group(1) == "*":
            close_run()
            desc = {"kind": "pointer", "subtype": desc}
        else:
            dims.append(int(match.group(2)))
        pos = match.end()
    close_run()
    return desc


# --- constants that follow from symbols and layouts ----------------------------------------


def _array_count(type_text: str) -> int | None:
    """Outermost element count of an array type string, None if it is not an array."""
    desc = type_descriptor_from_text(type_text)
    return int(desc["count"]) if desc["kind"] == "array" else None


def derive_constants(arch: str, symbols: Mapping[str, int], types: Mapping[str, Any]) -> dict[str, int]:
    """Constants osi_linux needs that are not in DWARF as such but follow from what is.

    Shared by the DWARF builder and the ISF loader, so both shapes of the same
    kernel's profile agree without ISF having to carry them.
    """
    constants: dict[str, int] = {}
    # The linker script reserves exactly THREAD_SIZE for init_task's stack (INIT_TASK_DATA in
    # include/asm-generic/vmlinux.lds.h): between __start_init_task and __end_init_task in 5.10 and 6.1,
    # __start_init_stack and __end_init_stack in 6.12.
    for start, end in (("__start_init_task", "__end_init_task"), ("__start_init_stack", "__end_init_stack")):
        if start in symbols and end in symbols:
            constants["THREAD_SIZE"] = symbols[end] - symbols[start]
    if arch == "arm" and "_text" in symbols:
        constants["PAGE_OFFSET"] = symbols["_text"] & ~(ARM_PAGE_OFFSET_ALIGN - 1)
    comm = types.get("task_struct", {}).get("members", {}).get("comm")
    if comm is not None:
        count = _array_count(comm["type"])
        if count is not None:
            constants["TASK_COMM_LEN"] = count
    for name, (layout, member) in MAPLE_SLOT_ARRAYS.items():
        info = types.get(layout, {}).get("members", {}).get(member)
        count = _array_count(info["type"]) if info is not None else None
        if count is not None:
            constants[name] = count
    if arch == "arm":
        # Only kernels built with CONFIG_CURRENT_POINTER_IN_TPIDRURO define __entry_task
        # (arch/arm/kernel/entry-armv.S reloads TPIDRURO from it on kernel entry).
        constants["CONFIG_CURRENT_POINTER_IN_TPIDRURO"] = int("__entry_task" in symbols)
    return constants


def release_from_banner(banner: str) -> str:
    """``"Linux version 6.1.0-50-armmp (...)"`` -> ``"6.1.0-50-armmp"``."""
    words = banner.split()
    if len(words) >= 3 and words[0] == "Linux" and words[1] == "version":
        return words[2]
    raise ProfileError(f"kernel banner {banner[:60]!r} does not start with 'Linux version'")


def _guess_arch(symbols: Mapping[str, int], pointer_size: int) -> str:
    """ISF records no architecture; ARM kernels are the ones with the SWI vector entry."""
    if pointer_size == 4 and "vector_swi" in symbols:
        return "arm"
    return "unknown"


# --- ISF reading ---------------------------------------------------------------------------


class _IsfTypes:
    """Converts an ISF's user types to profile layouts on demand.

    A dwarf2json ISF of a whole kernel holds ~10k user types; converting them
    all at load would cost seconds for the dozen osi_linux touches.
    """

    def __init__(self, isf: Mapping[str, Any]) -> None:
        self._isf = isf
        self._user = isf.get("user_types", {})
        self._base = isf.get("base_types", {})
        self._enums = isf.get("enums", {})
        self._pointer_size = int(self._base.get("pointer", {}).get("size", 0))
        self._cache: dict[str, dict[str, Any]] = {}

    def names(self) -> list[str]:
        return list(self._user)

    def get(self, name: str) -> dict[str, Any] | None:
        if name not in self._user:
            return None
        if name not in self._cache:
            entry = self._user[name]
            members: dict[str, Any] = {}
            self._flatten(entry, 0, members, (name,))
            self._cache[name] = {"kind": entry.get("kind", "struct"), "size": int(entry["size"]),
                                 "members": members}
        return self._cache[name]

    def _flatten(self, entry: Mapping[str, Any], base: int, out: dict[str, Any], within: tuple[str, ...]) -> None:
        """Members of ``entry`` at ``base``, anonymous members inlined; ``within``: the types being flattened."""
        fields = sorted(entry.get("fields", {}).items(), key=lambda item: item[1].get("offset", 0))
        for fname, field in fields:
            desc = field["type"]
            offset = base + int(field.get("offset", 0))
            where = ".".join((*within, fname)).encode("unicode_escape").decode("ascii")  # for messages: one line
            if field.get("anonymous"):
                inner_name = desc.get("name", "")
                inner = self._user.get(inner_name)
                if inner is None:
                    raise ProfileError(f"ISF anonymous field {where} refers to missing type {inner_name!r}")
                if inner_name in within:
                    raise ProfileError(f"ISF anonymous field {where} contains its own type")
                self._flatten(inner, offset, out, (*within, inner_name))
                continue
            size = self.descriptor_size(desc)
            if offset + size > MAX_LAYOUT_BYTES:
                raise ProfileError(
                    f"ISF field {where} ends at byte {offset + size}, beyond the "
                    f"{MAX_LAYOUT_BYTES}-byte bound of any kernel type"
                )
            info: dict[str, Any] = {"offset": offset, "size": size,
                                    "type": type_text_from_descriptor(desc)}
            if desc.get("kind") == "bitfield":
                info["bit_offset"] = int(desc["bit_position"])
                info["bit_size"] = int(desc["bit_length"])
            out[fname] = info

    def descriptor_size(self, desc: Mapping[str, Any]) -> int:
        kind = desc.get("kind")
        if kind == "pointer":
            return self._pointer_size
        if kind == "array":
            return min(int(desc["count"]) * self.descriptor_size(desc["subtype"]), MAX_LAYOUT_BYTES + 1)
        if kind == "bitfield":
            return self.descriptor_size(desc["type"])
        if kind == "function":
            return 0
        table = {"base": self._base, "enum": self._enums}.get(str(kind), self._user)
        entry = table.get(desc.get("name", ""))
        if entry is None:
            raise ProfileError(
                f"ISF refers to {kind} {desc.get('name')!r}, which it does not define"
            )
        return int(entry["size"])


def _profile_from_isf(isf: Mapping[str, Any]) -> tuple[dict[str, Any], _IsfTypes]:
    """The scalar parts of a profile from an ISF; layouts stay with the lazy converter."""
    raw_symbols = isf.get("symbols", {})
    symbols = {name: int(entry["address"]) for name, entry in raw_symbols.items()}
    banner = ""
    data = raw_symbols.get("linux_banner", {}).get("constant_data")
    if data:
        try:
            raw = base64.b64decode(data, validate=True)
        except ValueError as exc:
            raise ProfileError(f"ISF symbols/linux_banner/constant_data is not base64: {exc}") from exc
        banner = raw.split(b"\0", 1)[0].decode("utf-8", "replace").rstrip()
    base_types = dict(isf.get("base_types", {}))
    pointer = base_types.pop("pointer", {})
    base_types.pop("void", None)
    pointer_size = int(pointer.get("size", 0))
    endian = str(pointer.get("endian", "little"))
    arch = _guess_arch(symbols, pointer_size)
    types = _IsfTypes(isf)
    wanted_layouts = {"task_struct", *(layout for layout, _ in MAPLE_SLOT_ARRAYS.values())}
    known = {name: layout for name in wanted_layouts if (layout := types.get(name)) is not None}
    profile = {
        "format": PROFILE_FORMAT,
        "banner": banner,
        "release": release_from_banner(banner) if banner else "",
        "arch": arch,
        "pointer_size": pointer_size,
        "endian": endian,
        "symbols": symbols,
        "enums": {name: dict(e.get("constants", {})) for name, e in isf.get("enums", {}).items()},
        "enum_sizes": {name: int(e["size"]) for name, e in isf.get("enums", {}).items()},
        "base_types": {
            name: {"size": int(b["size"]), "signed": bool(b["signed"]), "kind": str(b["kind"])}
            for name, b in base_types.items()
        },
        "constants": derive_constants(arch, symbols, known),
    }
    return profile, types


def _checked_memo(text: bytes) -> Path:
    """The cache's record that a profile file of these bytes passed this schema: jsonschema's import and check
    cost 0.17 s, at every run with osi_linux (bench/RESULTS.md, issue 10); its content's hash says as much."""
    key = hashlib.sha256(PROFILE_SCHEMA.read_bytes() + b"\0" + text).hexdigest()
    return cache_dir() / "profiles-checked" / key


def _is_isf(data: Mapping[str, Any]) -> bool:
    return all(key in data for key in ("metadata", "base_types", "user_types", "enums", "symbols"))


# --- the runtime profile --------------------------------------------------------------------


class KernelProfile:
    """Read-only answers about one kernel build: where symbols are and how structs are laid out."""

    def __init__(self, data: Mapping[str, Any], source: str = "<dict>", *, checked: bool = False) -> None:
        """``checked``: ``data`` is known to pass the profile schema (:meth:`load`'s memo), not checked again."""
        self.source = source
        self._isf_types: _IsfTypes | None = None
        if not checked and ("format" in data or _is_isf(data)):
            try:
                problem = schema_problem(data, load_schema(PROFILE_SCHEMA))
            except RecursionError:
                problem = "the top level: nested too deeply to be a profile"
            if problem is not None:
                raise ProfileError(f"profile {source} is damaged at {problem}")
        if data.get("format") == PROFILE_FORMAT:
            self._data: dict[str, Any] = dict(data)
            self.source_format = "qppsuite"
        elif _is_isf(data):
            self._data, self._isf_types = _profile_from_isf(data)
            self.source_format = "isf"
        else:
            keys = ", ".join(sorted(data)).encode("unicode_escape").decode("ascii") or "none"
            raise ProfileError(
                f"{source} is neither a {PROFILE_FORMAT} profile nor a Volatility 3 ISF; its keys: {keys}"
            )

    @classmethod
    def load(cls, path: Path | str) -> KernelProfile:
        """Load our profile JSON or a Volatility 3 ISF JSON, whichever ``path`` holds."""
        path = Path(path)
        try:
            text = path.read_bytes()
            data = json.loads(text.decode("utf-8"))
        except FileNotFoundError as exc:
            raise ProfileError(f"profile {path} does not exist") from exc
        except (OSError, ValueError, RecursionError) as exc:  # ValueError: bad JSON, UTF-8 or a >4300-digit number
            reason = " ".join(str(exc).split()) or "nested too deeply"
            raise ProfileError(f"profile {path} is not readable JSON: {reason}") from exc
        if not isinstance(data, dict):
            raise ProfileError(f"profile {path} holds a JSON {type(data).__name__}, not an object")
        memo = _checked_memo(text)
        profile = cls(data, str(path), checked=memo.exists())
        with contextlib.suppress(OSError):  # a cache that cannot be written: checked again next time
            memo.parent.mkdir(parents=True, exist_ok=True)
            memo.touch()
        return profile

    # -- identity
    @property
    def banner(self) -> str:
        return str(self._data.get("banner", ""))

    @property
    def release(self) -> str:
        return str(self._data.get("release", ""))

    @property
    def arch(self) -> str:
        return str(self._data.get("arch", "unknown"))

    @property
    def pointer_size(self) -> int:
        return int(self._data.get("pointer_size", 0))

    @property
    def endian(self) -> str:
        return str(self._data.get("endian", "little"))

    # -- symbols
    def symbol(self, name: str) -> int:
        symbols = self._data.get("symbols", {})
        if name not in symbols:
            raise ProfileError(_choices("symbol", name, symbols, "it"))
        return int(symbols[name])

    def has_symbol(self, name: str) -> bool:
        return name in self._data.get("symbols", {})

    # -- layouts
    def type_names(self) -> list[str]:
        if self._isf_types is not None:
            return self._isf_types.names()
        return list(self._data.get("types", {}))

    def has_type(self, type_name: str) -> bool:
        return self._layout_or_none(type_name) is not None

    def size(self, type_name: str) -> int:
        return int(self._layout(type_name)["size"])

    def members(self, type_name: str) -> list[str]:
        return list(self._layout(type_name)["members"])

    def has_member(self, type_name: str, member: str) -> bool:
        layout = self._layout_or_none(type_name)
        return layout is not None and member in layout["members"]

    def member(self, type_name: str, member: str) -> MemberInfo:
        members = self._layout(type_name)["members"]
        if member not in members:
            raise ProfileError(_choices("member", f"{type_name}.{member}", members, type_name))
        info = members[member]
        size = self._layout(type_name)["size"]
        if info["offset"] + info["size"] > size:
            raise ProfileError(
                f"profile {self.source}: {type_name}.{member} (offset {info['offset']}, size {info['size']}) "
                f"ends beyond {type_name}'s own {size} bytes"
            )
        return MemberInfo(
            name=member,
            offset=int(info["offset"]),
            size=int(info["size"]),
            type=str(info["type"]),
            bit_offset=info.get("bit_offset"),
            bit_size=info.get("bit_size"),
        )

    def offset(self, type_name: str, member: str) -> int:
        return self.member(type_name, member).offset

    # -- enums and constants
    def enum(self, name: str) -> dict[str, int]:
        enums = self._data.get("enums", {})
        if name not in enums:
            raise ProfileError(_choices("enum", name, enums, "it"))
        return dict(enums[name])

    def enum_value(self, name: str, constant: str) -> int:
        """The value of ``constant`` in enum ``name``."""
        values = self.enum(name)
        if constant not in values:
            raise ProfileError(_choices("enum constant", f"{name}.{constant}", values, f"enum {name}"))
        return values[constant]

    @property
    def constants(self) -> dict[str, int]:
        return {name: int(value) for name, value in self._data.get("constants", {}).items()}

    def constant(self, name: str) -> int:
        constants = self._data.get("constants", {})
        if name not in constants:
            raise ProfileError(_choices("constant", name, constants, "it"))
        return int(constants[name])

    def as_dict(self) -> dict[str, Any]:
        """The profile in our JSON shape; for an ISF this converts every user type (slow for a kernel)."""
        data = dict(self._data)
        if self._isf_types is not None:
            data["types"] = {name: self._isf_types.get(name) for name in self._isf_types.names()}
        return data

    def _layout_or_none(self, type_name: str) -> dict[str, Any] | None:
        if self._isf_types is not None:
            return self._isf_types.get(type_name)
        layout = self._data.get("types", {}).get(type_name)
        return layout if isinstance(layout, dict) else None

    def _layout(self, type_name: str) -> dict[str, Any]:
        layout = self._layout_or_none(type_name)
        if layout is None:
            raise ProfileError(_choices("type", type_name, self.type_names(), "it"))
        return layout


# --- writing ISF ----------------------------------------------------------------------------


def _enum_base(base_types: Mapping[str, Any], size: int, signed: bool) -> str:
    """The integer base type an ISF enum names as its storage, chosen like dwarf2json does."""
    for name in sorted(base_types):
        entry = base_types[name]
        if entry["kind"] == "int" and entry["size"] == size and entry["signed"] == signed:
            return name
    return "void"


def to_isf(profile: Mapping[str, Any]) -> dict[str, Any]:
    """Convert one of our profiles to a Volatility 3 ISF (schema 6.x) holding the same facts.

    Constants, arch and release are not stored: ISF has no place for them, and
    loading re-derives them from the symbols, layouts and banner it does hold.
    """
    if profile.get("format") != PROFILE_FORMAT:
        raise ProfileError(f"to_isf needs a {PROFILE_FORMAT} profile, got format {profile.get('format')!r}")
    endian = profile["endian"]
    base_types: dict[str, Any] = {
        name: {"size": b["size"], "signed": b["signed"], "kind": b["kind"], "endian": endian}
        for name, b in profile.get("base_types", {}).items()
    }
    base_types["pointer"] = {"size": profile["pointer_size"], "signed": False, "kind": "int", "endian": endian}
    base_types["void"] = {"size": 0, "signed": False, "kind": "void", "endian": endian}
    user_types: dict[str, Any] = {}
    for name, layout in profile.get("types", {}).items():
        fields: dict[str, Any] = {}
        for mname, info in layout["members"].items():
            desc = type_descriptor_from_text(info["type"])
            if info.get("bit_size") is not None:
                desc = {"kind": "bitfield", "bit_position": info["bit_offset"],
                        "bit_length": info["bit_size"], "type": desc}
            fields[mname] = {"type": desc, "offset": info["offset"]}
        user_types[name] = {"kind": layout.get("kind", "struct"), "size": layout["size"], "fields": fields}
    enum_sizes = profile.get("enum_sizes", {})
    enums = {
        name: {
            "size": enum_sizes[name],
            "base": _enum_base(base_types, enum_sizes[name], any(v < 0 for v in constants.values())),
            "constants": dict(constants),
        }
        for name, constants in profile.get("enums", {}).items()
    }
    symbols: dict[str, Any] = {name: {"address": address} for name, address in profile["symbols"].items()}
    if profile.get("banner") and "linux_banner" in symbols:
        banner = (profile["banner"] + "\n").encode() + b"\0"
        symbols["linux_banner"]["constant_data"] = base64.b64encode(banner).decode("ascii")
    return {
        "metadata": {
            "format": ISF_FORMAT_VERSION,
            "producer": {"name": ISF_PRODUCER, "version": "0.1.0"},
            "linux": {"symbols": [], "types": []},
        },
        "base_types": base_types,
        "user_types": user_types,
        "enums": enums,
        "symbols": symbols,
    }


def save_profile(data: Mapping[str, Any], path: Path | str) -> None:
    """Write a profile (or ISF) dict as JSON, atomically, so a reader never sees half a file."""
    path = Path(path)
    partial = path.with_name(path.name + ".part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        partial.replace(path)
    except OSError as exc:
        raise ProfileError(f"cannot write profile {path}: {exc.strerror or exc}") from exc
