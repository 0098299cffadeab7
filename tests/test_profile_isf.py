"""KernelProfile: our JSON and Volatility 3 ISF load to the same answers; errors name what exists."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_profile_layouts import LAYOUT_C

from qppsuite.errors import ImageError, QppsuiteError
from qppsuite.profiles.dwarf import extract_layouts
from qppsuite.profiles.profile import (
    PROFILE_FORMAT,
    KernelProfile,
    ProfileError,
    save_profile,
    to_isf,
    type_descriptor_from_text,
    type_text_from_descriptor,
)

BANNER = "Linux version 6.1.0-50-armmp (debian-kernel@lists.debian.org) (gcc-12) #1 SMP Debian 6.1.176-1"


def _field(desc: dict[str, Any], offset: int, anonymous: bool = False) -> dict[str, Any]:
    field: dict[str, Any] = {"type": desc, "offset": offset}
    if anonymous:
        field["anonymous"] = True
    return field


BASE = {"kind": "base"}
UINT = {**BASE, "name": "unsigned int"}
INT = {**BASE, "name": "int"}


def _ptr(desc: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "pointer", "subtype": desc}


# Shaped like `dwarf2json linux --elf vmlinux` output: typedefs resolved to their
# base types, anonymous members as `unnamed_field_N` naming `unnamed_<hash>` types,
# bitfields as byte offset + bit_position, banner bytes in constant_data.
DWARF2JSON_SHAPED: dict[str, Any] = {
    "metadata": {
        "format": "6.2.0",
        "producer": {"name": "dwarf2json", "version": "0.8.0"},
        "linux": {"symbols": [{"kind": "symtab", "name": "vmlinux", "hash_type": "sha256",
                               "hash_value": "00ff"}]},
    },
    "base_types": {
        "int": {"size": 4, "signed": True, "kind": "int", "endian": "little"},
        "unsigned int": {"size": 4, "signed": False, "kind": "int", "endian": "little"},
        "char": {"size": 1, "signed": False, "kind": "char", "endian": "little"},
        "long long unsigned int": {"size": 8, "signed": False, "kind": "int", "endian": "little"},
        "pointer": {"size": 4, "signed": False, "kind": "int", "endian": "little"},
        "void": {"size": 0, "signed": False, "kind": "void", "endian": "little"},
    },
    "user_types": {
        "task_struct": {"kind": "struct", "size": 64, "fields": {
            "tasks": _field({"kind": "struct", "name": "list_head"}, 8),
            "pid": _field(INT, 16),
            "comm": _field({"kind": "array", "count": 16, "subtype": {**BASE, "name": "char"}}, 20),
            "mm": _field(_ptr({"kind": "struct", "name": "mm_struct"}), 36),
            "in_execve": _field({"kind": "bitfield", "bit_position": 3, "bit_length": 1, "type": UINT}, 41),
            "unnamed_field_0": _field({"kind": "union", "name": "unnamed_8e1f0c2a9b3d4e5f"}, 44, True),
            "mode": _field({"kind": "enum", "name": "pid_type"}, 60),
        }},
        "unnamed_8e1f0c2a9b3d4e5f": {"kind": "union", "size": 16, "fields": {
            "start_time": _field({**BASE, "name": "long long unsigned int"}, 0),
            "unnamed_field_0": _field({"kind": "struct", "name": "unnamed_17a2b3c4d5e6f708"}, 8, True),
        }},
        "unnamed_17a2b3c4d5e6f708": {"kind": "struct", "size": 8, "fields": {
            "a": _field(INT, 0),
            "b": _field(_ptr({"kind": "function"}), 4),
        }},
        "list_head": {"kind": "struct", "size": 8, "fields": {
            "next": _field(_ptr({"kind": "struct", "name": "list_head"}), 0),
            "prev": _field(_ptr({"kind": "struct", "name": "list_head"}), 4),
        }},
        "mm_struct": {"kind": "struct", "size": 12, "fields": {
            "unnamed_field_0": _field({"kind": "struct", "name": "unnamed_0f0e0d0c0b0a0908"}, 0, True),
            "cpu_bitmap": _field({"kind": "array", "count": 0, "subtype": UINT}, 12),
        }},
        "unnamed_0f0e0d0c0b0a0908": {"kind": "struct", "size": 12, "fields": {
            "mm_mt": _field(UINT, 0),
            "pgd": _field(_ptr(UINT), 4),
            "map_count": _field(INT, 8),
        }},
        "kuid_t": {"kind": "struct", "size": 4, "fields": {"val": _field(UINT, 0)}},
    },
    "enums": {"pid_type": {"size": 4, "base": "unsigned int",
                           "constants": {"PIDTYPE_PID": 0, "PIDTYPE_TGID": 1, "PIDTYPE_MAX": 4}}},
    "symbols": {
        "init_task": {"address": 0xC140F5C0, "type": {"kind": "struct", "name": "task_struct"}},
        "linux_banner": {"address": 0xC0F46740,
                         "constant_data": base64.b64encode(BANNER.encode() + b"\n\0").decode()},
        "_text": {"address": 0xC0208000},
        "__start_init_task": {"address": 0xC1400000},
        "__end_init_task": {"address": 0xC1402000},
        "vector_swi": {"address": 0xC03001E0},
        "__entry_task": {"address": 0xC132A04C},
    },
}


def test_dwarf2json_shaped_isf_loads_flattened(tmp_path: Path) -> None:
    path = tmp_path / "kernel.isf.json"
    path.write_text(json.dumps(DWARF2JSON_SHAPED))
    profile = KernelProfile.load(path)
    assert profile.source_format == "isf"
    assert profile.banner == BANNER
    assert profile.release == "6.1.0-50-armmp"
    assert (profile.arch, profile.pointer_size, profile.endian) == ("arm", 4, "little")
    assert profile.symbol("init_task") == 0xC140F5C0
    assert profile.size("task_struct") == 64
    assert profile.offset("task_struct", "tasks") == 8
    # Two levels of anonymous members, offsets accumulated: 44 + 8 + 4.
    assert profile.offset("task_struct", "start_time") == 44
    assert profile.offset("task_struct", "b") == 56
    assert profile.member("task_struct", "b").type == "function *"
    assert not profile.has_member("task_struct", "unnamed_field_0")
    assert profile.offset("mm_struct", "pgd") == 4
    comm = profile.member("task_struct", "comm")
    assert (comm.type, comm.size) == ("char[16]", 16)
    bit = profile.member("task_struct", "in_execve")
    assert (bit.offset, bit.bit_offset, bit.bit_size, bit.size, bit.is_bitfield) == (41, 3, 1, 4, True)
    assert profile.member("task_struct", "mode").size == 4
    assert profile.member("task_struct", "mm").type == "struct mm_struct *"
    assert profile.enum("pid_type")["PIDTYPE_TGID"] == 1
    assert profile.constants == {
        "THREAD_SIZE": 0x2000, "PAGE_OFFSET": 0xC0000000, "TASK_COMM_LEN": 16,
        "CONFIG_CURRENT_POINTER_IN_TPIDRURO": 1,
    }


@pytest.fixture(scope="module")
def probe_profile(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A complete profile whose layouts come from the DWARF builder run on a C probe."""
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc")
    work = tmp_path_factory.mktemp("isf-probe")
    (work / "probe.c").write_text(LAYOUT_C)
    subprocess.run(["gcc", "-g", "-c", "-o", str(work / "probe.o"), str(work / "probe.c")], check=True)
    found = extract_layouts(work / "probe.o", ["sample", "my_kuid_t"], enum_names=["color"])
    return {
        # A host (x86-64) probe: 8-byte pointers, and an arch ISF cannot name (it records none).
        "format": PROFILE_FORMAT, "banner": BANNER, "release": "6.1.0-50-armmp", "arch": "unknown",
        "pointer_size": 8, "endian": "little",
        "symbols": {"linux_banner": 0xC0F46740, "init_task": 0xC140F5C0, "_text": 0xC0208000},
        "types": found.types, "enums": found.enums, "enum_sizes": found.enum_sizes,
        "base_types": found.base_types, "constants": {},
    }


def test_isf_round_trip_is_identical(probe_profile: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "probe.isf.json"
    save_profile(to_isf(probe_profile), path)
    loaded = KernelProfile.load(path)
    assert loaded.source_format == "isf"
    assert loaded.as_dict() == probe_profile
    sample = probe_profile["types"]["sample"]["members"]
    for name, info in sample.items():
        member = loaded.member("sample", name)
        assert (member.offset, member.size, member.type) == (info["offset"], info["size"], info["type"])


def test_isf_enum_base_matches_size_and_sign(probe_profile: dict[str, Any]) -> None:
    isf = to_isf(probe_profile)
    color = isf["enums"]["color"]
    assert color["constants"]["BLUE"] == -2
    base = isf["base_types"][color["base"]]
    assert (base["kind"], base["size"], base["signed"]) == ("int", color["size"], True)


def test_own_format_round_trips_through_save(probe_profile: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "probe.json"
    save_profile(probe_profile, path)
    loaded = KernelProfile.load(path)
    assert loaded.source_format == "qppsuite"
    assert loaded.as_dict() == probe_profile
    assert not list(tmp_path.glob("*.part"))


# --- the type grammar -------------------------------------------------------------------

_names = st.from_regex(r"[a-z_][a-z0-9_]{0,8}(\.[a-z_][a-z0-9_]{0,6})?", fullmatch=True)
_leaves = st.one_of(
    st.sampled_from(["int", "unsigned int", "long long unsigned int", "pid_t", "void", "_Bool"]).map(
        lambda name: {"kind": "base", "name": name}
    ),
    st.builds(lambda kind, name: {"kind": kind, "name": name},
              st.sampled_from(["struct", "union", "enum"]), _names),
    st.just({"kind": "function"}),
)
_descriptors = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        inner.map(lambda sub: {"kind": "pointer", "subtype": sub}),
        st.builds(lambda count, sub: {"kind": "array", "count": count, "subtype": sub},
                  st.integers(0, 4096), inner),
    ),
    max_leaves=6,
)


@given(_descriptors)
def test_type_text_and_descriptor_convert_losslessly(desc: dict[str, Any]) -> None:
    text = type_text_from_descriptor(desc)
    assert type_descriptor_from_text(text) == desc


def test_type_text_examples() -> None:
    assert type_descriptor_from_text("int[2][3]") == {
        "kind": "array", "count": 2, "subtype": {"kind": "array", "count": 3, "subtype": INT}}
    assert type_descriptor_from_text("int[4] *") == _ptr({"kind": "array", "count": 4, "subtype": INT})
    assert type_descriptor_from_text("struct page **") == _ptr(_ptr({"kind": "struct", "name": "page"}))
    with pytest.raises(ProfileError, match="unreadable suffix"):
        type_descriptor_from_text("int *)")


# --- errors --------------------------------------------------------------------------------


@pytest.fixture
def small(probe_profile: dict[str, Any]) -> KernelProfile:
    return KernelProfile(probe_profile, "probe.json")


def test_missing_member_names_closest_members(small: KernelProfile) -> None:
    with pytest.raises(ProfileError) as caught:
        small.member("sample", "colr")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("profile has no member sample.colr; sample has ")
    assert "closest: color" in message


def test_missing_member_of_small_type_lists_all(small: KernelProfile) -> None:
    with pytest.raises(ProfileError, match=r"no member my_kuid_t\.value; my_kuid_t has: val$"):
        small.offset("my_kuid_t", "value")


def test_missing_type_symbol_constant_enum(small: KernelProfile) -> None:
    with pytest.raises(ProfileError, match=r"no type task_struct; it has: inner, my_kuid_t, node, sample, "):
        small.size("task_struct")
    with pytest.raises(ProfileError, match=r"no symbol init_mm; it has: _text, init_task, linux_banner$"):
        small.symbol("init_mm")
    with pytest.raises(ProfileError, match=r"no constant THREAD_SIZE; it has none$"):
        small.constant("THREAD_SIZE")
    with pytest.raises(ProfileError, match="no enum maple_type; it has: color"):
        small.enum("maple_type")
    assert not small.has_type("task_struct") and small.has_type("sample")
    assert small.has_symbol("init_task") and not small.has_symbol("init_mm")


def test_profile_error_is_a_user_error() -> None:
    assert issubclass(ProfileError, ImageError) and issubclass(ProfileError, QppsuiteError)


def test_load_rejects_what_is_not_a_profile(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="does not exist"):
        KernelProfile.load(tmp_path / "none.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ProfileError, match="not readable JSON"):
        KernelProfile.load(broken)
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ProfileError, match="holds a JSON list, not an object"):
        KernelProfile.load(listed)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"name": "x", "version": 2}))
    with pytest.raises(ProfileError, match="neither a qppsuite-profile/1 profile nor a Volatility 3 ISF; "
                                           "its keys: name, version"):
        KernelProfile.load(other)
    with pytest.raises(ProfileError, match="to_isf needs a qppsuite-profile/1 profile"):
        to_isf({"format": "something-else"})
