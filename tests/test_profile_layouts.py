"""The DWARF layout extractor against the compiler's own answers, on a host-compiled C file.

The C program reports ``offsetof``/``sizeof`` and, for bitfields, where setting
the field to all ones lands in memory; the extractor must agree with it on
the DWARF of the same source.  DWARF 2 exercises the old big-endian-style
``DW_AT_bit_offset`` and location-expression member offsets; DWARF 4/5 the
``DW_AT_data_bit_offset`` form the Debian kernel uses.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from qppsuite.errors import BuildError
from qppsuite.profiles.dwarf import extract_layouts

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to compile the probe")

LAYOUT_C = r"""
#include <stddef.h>
#include <stdio.h>
#include <string.h>

typedef int my_pid_t;
typedef unsigned long long my_u64;
typedef struct { unsigned int val; } my_kuid_t;
enum color { RED, GREEN = 5, BLUE = -2 };
typedef enum { MODE_A = 1, MODE_B = 2 } mode_kind;

struct inner { short a; long long b; };
struct node { struct node *next; struct node *prev; };
union value { int i; char c[8]; };

struct sample {
    char tag;
    my_pid_t pid;
    const volatile my_u64 stamp;
    my_kuid_t uid;
    struct inner in;
    struct inner pair[2];
    union {
        struct { unsigned int lo; unsigned int hi; };
        my_u64 both;
    };
    struct {
        unsigned int f1 : 3;
        unsigned int f2 : 7;
        signed int f3 : 12;
        unsigned char f4 : 1;
    };
    unsigned int g1 : 1;
    unsigned int : 2;
    unsigned int g2 : 29;
    enum color color;
    enum color colors[3];
    unsigned short grid[2][3];
    struct node *ptrs[4];
    int (*matrix_ptr)[5];
    void (*callback)(int);
    struct { int x; int y; } point;
    union { int i; float f; } num;
    mode_kind mode;
    union value value;
    char name[16];
    struct node list;
    unsigned char tail[];
};

struct sample probe_sample;

int probe(void) { return probe_sample.pid; }

static void bits(const char *name, const unsigned char *raw, size_t size) {
    int first = -1, count = 0;
    for (size_t i = 0; i < size * 8; i++) {
        if (raw[i / 8] >> (i % 8) & 1) {
            if (first < 0) first = (int)i;
            count++;
        }
    }
    printf("\"bits %s\": [%d, %d],\n", name, first, count);
}

#define M(T, N, f) printf("\"%s.%s\": [%zu, %zu],\n", N, #f, offsetof(T, f), sizeof(((T *)0)->f))
#define S(T, N) printf("\"size %s\": [%zu, 0],\n", N, sizeof(T))
#define B(f) do { struct sample s; memset(&s, 0, sizeof s); s.f = -1; \
                  bits(#f, (const unsigned char *)&s, sizeof s); } while (0)

int main(void) {
    printf("{\n");
    S(struct sample, "sample"); S(struct inner, "inner"); S(my_kuid_t, "my_kuid_t");
    S(union value, "value"); S(struct node, "node");
    M(struct sample, "sample", tag); M(struct sample, "sample", pid); M(struct sample, "sample", stamp);
    M(struct sample, "sample", uid); M(struct sample, "sample", in); M(struct sample, "sample", pair);
    M(struct sample, "sample", lo); M(struct sample, "sample", hi); M(struct sample, "sample", both);
    M(struct sample, "sample", color); M(struct sample, "sample", colors);
    M(struct sample, "sample", grid); M(struct sample, "sample", ptrs);
    M(struct sample, "sample", matrix_ptr); M(struct sample, "sample", callback);
    M(struct sample, "sample", point); M(struct sample, "sample", num); M(struct sample, "sample", mode);
    M(struct sample, "sample", value); M(struct sample, "sample", name); M(struct sample, "sample", list);
    printf("\"sample.tail\": [%zu, 0],\n", offsetof(struct sample, tail));
    M(struct inner, "inner", a); M(struct inner, "inner", b);
    M(my_kuid_t, "my_kuid_t", val);
    M(union value, "value", i); M(union value, "value", c);
    B(f1); B(f2); B(f3); B(f4); B(g1); B(g2);
    printf("\"enum RED\": [%d, 0], \"enum GREEN\": [%d, 0], \"enum BLUE\": [%d, 0]\n}\n", RED, GREEN, BLUE);
    return 0;
}
"""

DWARF_VERSIONS = ["-gdwarf-2", "-gdwarf-4", "-gdwarf-5"]


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[int]]:
    """What the compiler itself says about the layouts, from running the probe."""
    work = tmp_path_factory.mktemp("layout-truth")
    source = work / "layout.c"
    source.write_text(LAYOUT_C)
    subprocess.run(["gcc", "-O0", "-o", str(work / "layout"), str(source)], check=True)
    out = subprocess.run([str(work / "layout")], check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out))


def _compile(tmp: Path, flags: list[str], link: bool) -> Path:
    source = tmp / "layout.c"
    source.write_text(LAYOUT_C)
    target = tmp / ("layout" if link else "layout.o")
    command = ["gcc", "-O0", *flags, "-o", str(target), str(source)]
    subprocess.run(command if link else [*command, "-c"], check=True, capture_output=True)
    return target


@pytest.fixture(scope="module", params=DWARF_VERSIONS)
def layouts(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    obj = _compile(tmp_path_factory.mktemp("layout-obj"), ["-g", request.param, "-gstrict-dwarf"], link=False)
    found = extract_layouts(obj, ["sample", "my_kuid_t", "value"], enum_names=["color", "unknown_enum"])
    return {"types": found.types, "enums": found.enums, "base_types": found.base_types}


def test_offsets_and_sizes_match_offsetof(layouts: dict[str, Any], truth: dict[str, list[int]]) -> None:
    types = layouts["types"]
    checked = 0
    for key, (first, second) in truth.items():
        if key.startswith("size "):
            assert types[key.removeprefix("size ")]["size"] == first, key
        elif "." in key:
            type_name, member = key.split(".")
            info = types[type_name]["members"][member]
            assert (info["offset"], info["size"]) == (first, second), key
            checked += 1
    assert checked == 27  # every M() line of the probe


def test_bitfields_land_where_the_compiler_put_them(layouts: dict[str, Any], truth: dict[str, list[int]]) -> None:
    members = layouts["types"]["sample"]["members"]
    for field in ("f1", "f2", "f3", "f4", "g1", "g2"):
        first_bit, width = truth[f"bits {field}"]
        info = members[field]
        assert info["offset"] * 8 + info["bit_offset"] == first_bit, field
        assert 0 <= info["bit_offset"] < 8
        assert info["bit_size"] == width, field
        # Reading `size` bytes at `offset` must cover the whole field (the ISF convention).
        assert info["bit_offset"] + info["bit_size"] <= info["size"] * 8, field
    assert all(not name.startswith("unnamed") for name in members)  # the `: 2` padding is dropped


def test_type_strings_follow_the_profile_grammar(layouts: dict[str, Any]) -> None:
    members = layouts["types"]["sample"]["members"]
    spelled = {name: members[name]["type"] for name in members}
    assert spelled["pid"] == "my_pid_t"
    assert spelled["stamp"] == "my_u64"  # const volatile dropped
    assert spelled["uid"] == "struct my_kuid_t"
    assert spelled["pair"] == "struct inner[2]"
    assert spelled["grid"] == "short unsigned int[2][3]"
    assert spelled["ptrs"] == "struct node *[4]"
    assert spelled["matrix_ptr"] == "int[5] *"
    assert spelled["callback"] == "function *"
    assert spelled["color"] == "enum color"
    assert spelled["colors"] == "enum color[3]"
    assert spelled["mode"] == "enum mode_kind"
    assert spelled["point"] == "struct sample.point"
    assert spelled["num"] == "union sample.num"
    assert spelled["tail"] == "unsigned char[0]"
    assert layouts["base_types"]["my_pid_t"] == {"size": 4, "signed": True, "kind": "int"}
    assert layouts["base_types"]["my_u64"]["signed"] is False


def test_by_value_types_get_their_own_layouts(layouts: dict[str, Any], truth: dict[str, list[int]]) -> None:
    types = layouts["types"]
    assert types["inner"]["members"]["b"]["offset"] == truth["inner.b"][0]
    assert set(types["sample.point"]["members"]) == {"x", "y"}
    assert types["sample.num"]["kind"] == "union"
    assert types["value"]["kind"] == "union"
    assert "node" in types  # held by value as `list`
    # `struct node *ptrs[4]` alone would not pull node in; a pointer is not a by-value hold.
    assert layouts["types"]["my_kuid_t"]["members"]["val"]["type"] == "unsigned int"


def test_enums_and_anonymous_enum_typedefs(layouts: dict[str, Any], truth: dict[str, list[int]]) -> None:
    expected = {name: truth[f"enum {name}"][0] for name in ("RED", "GREEN", "BLUE")}
    assert layouts["enums"]["color"] == expected
    assert layouts["enums"]["mode_kind"] == {"MODE_A": 1, "MODE_B": 2}
    assert "unknown_enum" not in layouts["enums"]


def test_hinted_cus_come_from_aranges(tmp_path: Path, truth: dict[str, list[int]]) -> None:
    exe = _compile(tmp_path, ["-g"], link=True)
    found = extract_layouts(exe, ["sample"], hint_functions=["probe"])
    assert found.types["sample"]["members"]["name"]["offset"] == truth["sample.name"][0]
    unhinted = extract_layouts(exe, ["sample"], hint_functions=["no_such_function"])
    assert unhinted.types == {}


def test_elf_without_dwarf_is_a_build_error(tmp_path: Path) -> None:
    obj = _compile(tmp_path, ["-g0"], link=False)
    with pytest.raises(BuildError, match="has no DWARF"):
        extract_layouts(obj, ["sample"])
    not_elf = tmp_path / "notes.txt"
    not_elf.write_text("hello")
    with pytest.raises(BuildError, match="is not an ELF file"):
        extract_layouts(not_elf, ["sample"])
    with pytest.raises(BuildError, match="does not exist"):
        extract_layouts(tmp_path / "missing", ["sample"])
