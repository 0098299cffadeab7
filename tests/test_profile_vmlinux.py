"""The profile of the real Debian armmp kernel, from its -dbg package.

The package comes from ``$QPPSUITE_DBG_DEB`` or is the default image's (its
manifest names it) in the apt cache the image builder fills
(``<cache>/apt/cache/archives/``), never merely the newest there: that cache
also holds other suites' kernels.  The tests skip only when neither has one.
The known offsets are those of linux-image-6.1.0-*-armmp (6.1.176-1, checked
against pahole); other builds check only what holds for every 6.1 armmp kernel.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from qppsuite.images.apt import AptPackage
from qppsuite.images.bundle import ImageBundle, cache_dir
from qppsuite.profiles.dbg import extract_vmlinux
from qppsuite.profiles.dwarf import KERNEL_ENUMS, OPTIONAL_TYPES, REQUIRED_TYPES, build_kernel_profile
from qppsuite.profiles.profile import KernelProfile, save_profile, to_isf

pytestmark = pytest.mark.boot  # the real packages and image, through apt

BUILD_BUDGET_S = 30.0
# task_struct members of the 6.1.176-1 armmp build (pahole agrees).
KNOWN_6_1_176 = {"tasks": 1440, "pid": 1584, "tgid": 1588, "real_parent": 1596, "comm": 1920, "mm": 1480}


def _cache_root() -> Path:
    return cache_dir()


def _find_dbg_deb(image: ImageBundle) -> Path | None:
    """``$QPPSUITE_DBG_DEB``, or the -dbg package the image's manifest lists, from the apt cache."""
    env = os.environ.get("QPPSUITE_DBG_DEB")
    if env and Path(env).is_file():
        return Path(env)
    for package in image.manifest.get("packages", []):
        if package["name"].endswith("-dbg"):
            name = AptPackage(package["name"], package["version"], package["architecture"], 0, "").deb_filename
            deb = _cache_root() / "apt" / "cache" / "archives" / name
            return deb if deb.is_file() else None
    return None


@pytest.fixture(scope="module")
def kernel(default_image: ImageBundle, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    deb = _find_dbg_deb(default_image)
    if deb is None:
        pytest.skip(
            f"no -dbg package: set QPPSUITE_DBG_DEB or build an image to fill "
            f"{_cache_root() / 'apt' / 'cache' / 'archives'}"
        )
    work = tmp_path_factory.mktemp("vmlinux")
    started = time.monotonic()
    vmlinux = extract_vmlinux(deb, work)
    extracted = time.monotonic()
    profile = build_kernel_profile(vmlinux)
    built = time.monotonic()
    print(f"\n{deb.name}: extraction {extracted - started:.1f} s, profile build {built - extracted:.1f} s")
    return {"deb": deb, "vmlinux": vmlinux, "profile": profile, "build_s": built - extracted}


def test_build_fits_the_budget(kernel: dict[str, Any]) -> None:
    assert kernel["build_s"] < BUILD_BUDGET_S
    assert kernel["vmlinux"].stat().st_size > 100 * 2**20


def test_identity_and_constants(kernel: dict[str, Any]) -> None:
    profile = kernel["profile"]
    release = profile["release"]
    assert release.startswith("6.1.") and release.endswith("-armmp")
    assert release in kernel["vmlinux"].name
    assert profile["banner"].startswith(f"Linux version {release} (")
    assert (profile["arch"], profile["pointer_size"], profile["endian"]) == ("arm", 4, "little")
    assert profile["constants"] == {
        "THREAD_SIZE": 8192,
        "PAGE_OFFSET": 0xC0000000,
        "TASK_COMM_LEN": 16,
        "MAPLE_NODE_SLOTS": 63,
        "MAPLE_RANGE64_SLOTS": 32,
        "MAPLE_ARANGE64_SLOTS": 21,
        "MAPLE_ALLOC_SLOTS": 61,
        "CONFIG_CURRENT_POINTER_IN_TPIDRURO": 1,
    }


def test_symbols(kernel: dict[str, Any]) -> None:
    symbols = kernel["profile"]["symbols"]
    for name in (
        "init_task",
        "init_mm",
        "linux_banner",
        "__switch_to",
        "swapper_pg_dir",
        "modules",
        "__entry_task",
        "__per_cpu_offset",
        "vector_swi",
        "ret_fast_syscall",
        "do_exit",
        "panic",
    ):
        assert name in symbols, name
    assert symbols["init_task"] >= 0xC0000000
    assert symbols["__per_cpu_start"] <= symbols["__entry_task"] < symbols["__per_cpu_end"]
    assert symbols["__switch_to"] % 4 == 0  # an ARM (not Thumb) entry point


def test_layouts(kernel: dict[str, Any]) -> None:
    profile = KernelProfile(kernel["profile"])
    # struct module_memory and enum mod_mem_type came with Linux 6.4 (include/linux/module.h); this is 6.1.
    since_6_4 = {"module_memory", "mod_mem_type"}
    assert set(REQUIRED_TYPES) | set(OPTIONAL_TYPES) - since_6_4 <= set(profile.type_names())
    assert set(KERNEL_ENUMS) - since_6_4 <= set(kernel["profile"]["enums"])
    assert not since_6_4 & (set(profile.type_names()) | set(kernel["profile"]["enums"]))
    if "6.1.176-1" in kernel["deb"].name:
        assert {name: profile.offset("task_struct", name) for name in KNOWN_6_1_176} == KNOWN_6_1_176
        assert profile.size("task_struct") == 2752
    assert profile.member("task_struct", "comm").type == "char[16]"
    assert profile.member("task_struct", "real_parent").type == "struct task_struct *"
    # Members of anonymous structs/unions are reachable directly.
    assert profile.has_member("mm_struct", "mm_mt") and profile.has_member("mm_struct", "pgd")
    assert profile.offset("qstr", "len") == profile.offset("qstr", "hash") + 4
    assert profile.member("maple_node", "slot").type == "void *[63]"
    assert profile.size("maple_node") == 256
    assert profile.member("task_struct", "thread_node").type == "struct list_head"
    assert profile.member("signal_struct", "thread_head").type == "struct list_head"
    assert profile.member("pid", "numbers").type == "struct upid[0]"  # flexible: upid numbers[]
    assert kernel["profile"]["enums"]["maple_type"] == {
        "maple_dense": 0,
        "maple_leaf_64": 1,
        "maple_range_64": 2,
        "maple_arange_64": 3,
    }
    bit = profile.member("task_struct", "in_execve")
    assert bit.is_bitfield and bit.bit_size == 1


def test_isf_round_trip(kernel: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "kernel.isf.json"
    save_profile(to_isf(kernel["profile"]), path)
    assert KernelProfile.load(path).as_dict() == kernel["profile"]
