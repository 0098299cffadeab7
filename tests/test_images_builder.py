"""Builder and private-apt logic with apt and packages faked (fast, no network)."""

from __future__ import annotations

import errno
import json
import lzma
import re
import shutil
import struct
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from qppsuite.errors import BuildError
from qppsuite.images import builder
from qppsuite.images.apt import INST_LINE, AptPackage, PrivateApt, Source, _apt_errors, file_sha256, sources_for_suite
from qppsuite.images.builder import (
    BUSYBOX_DIRS,
    ZIMAGE_MAGIC,
    busybox_applets,
    check_zimage,
    default_image_name,
    guest_script,
    modinfo,
    parse_package_list,
    select_kernel,
)

# --- names and package lists -------------------------------------------------------------------------


def test_default_names_and_package_lists() -> None:
    assert default_image_name([]) == "debian-armhf"
    assert default_image_name(["strace", "python3"]) == "debian-armhf+strace+python3"
    assert default_image_name(["strace"], "trixie") == "debian-armhf-trixie+strace"
    assert parse_package_list(" strace, python3,,strace ") == ["strace", "python3"]
    assert parse_package_list("") == []


def test_invalid_image_name_is_a_build_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="invalid image name 'a/b'"):
        builder.build_image("a/b", cache=tmp_path)


# --- busybox applet table ------------------------------------------------------------------------------

APPLETS = ["[", "[[", "cat", "init", "insmod", "mount", "nc", "poweroff", "sh", "udhcpd"]
PLACES = ["usr/bin", "usr/bin", "bin", "sbin", "sbin", "bin", "usr/bin", "sbin", "bin", "usr/sbin"]


def _fake_busybox(with_table: bool) -> bytes:
    codes = [BUSYBOX_DIRS.index(place) for place in PLACES]
    table = bytes(codes[i] | ((codes[i + 1] if i + 1 < len(codes) else 0) << 4) for i in range(0, len(codes), 2))
    names = b"\0".join(name.encode() for name in APPLETS) + b"\0\0"
    junk = bytes(range(0x80, 0x100)) * 2  # nibbles >= 5: never a valid table
    return junk + (table if with_table else b"") + junk + names + junk


def test_busybox_applets_come_with_their_install_directories() -> None:
    assert busybox_applets(_fake_busybox(with_table=True)) == dict(zip(APPLETS, PLACES, strict=True))


def test_busybox_without_a_location_table_puts_applets_in_bin() -> None:
    assert busybox_applets(_fake_busybox(with_table=False)) == dict.fromkeys(APPLETS, "bin")


def test_a_binary_without_applets_is_refused() -> None:
    with pytest.raises(BuildError, match="no applet name table"):
        busybox_applets(b"\x7fELF not busybox")


# --- kernel checks ---------------------------------------------------------------------------------


def _fake_zimage(payload: bytes) -> bytearray:
    image = bytearray(0x40)
    struct.pack_into("<I", image, 0x24, ZIMAGE_MAGIC)
    image += b"decompressor code quoting the magic \xfd7zXZ\x00 first"
    image += payload + struct.pack("<I", 1234)
    return image


def test_check_zimage_accepts_an_intact_payload_after_a_decoy_magic() -> None:
    check_zimage(bytes(_fake_zimage(lzma.compress(b"kernel" * 5000, format=lzma.FORMAT_XZ))), "k.deb")


def test_check_zimage_rejects_damage() -> None:
    payload = lzma.compress(bytes(range(256)) * 400, format=lzma.FORMAT_XZ)
    with pytest.raises(BuildError, match=r"corrupt kernel in k\.deb: no intact XZ payload"):
        check_zimage(bytes(_fake_zimage(payload[: len(payload) // 2])), "k.deb")
    flipped = _fake_zimage(payload)
    flipped[-100] ^= 0x55
    with pytest.raises(BuildError, match="corrupt kernel"):
        check_zimage(bytes(flipped), "k.deb")
    no_magic = _fake_zimage(payload)
    no_magic[0x24:0x28] = b"\0\0\0\0"
    with pytest.raises(BuildError, match="no ARM zImage magic"):
        check_zimage(bytes(no_magic), "k.deb")
    with pytest.raises(BuildError, match="only 3 bytes"):
        check_zimage(b"abc", "k.deb")


def make_module(modinfo_strings: Sequence[str]) -> bytes:
    """A minimal ELF32 relocatable holding just a .modinfo section, as a .ko would."""
    modinfo_data = b"".join(s.encode() + b"\0" for s in modinfo_strings)
    shstrtab = b"\0.modinfo\0.shstrtab\0"
    modinfo_off = 52
    shstr_off = modinfo_off + len(modinfo_data)
    shoff = (shstr_off + len(shstrtab) + 3) & ~3
    header = b"\x7fELF\x01\x01\x01" + bytes(9)
    header += struct.pack("<HHIIIIIHHHHHH", 1, 40, 1, 0, 0, shoff, 0, 52, 0, 0, 40, 3, 2)
    body = header + modinfo_data + shstrtab
    body += bytes(shoff - len(body))
    sections = [
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        (1, 1, 2, 0, modinfo_off, len(modinfo_data), 0, 0, 1, 0),
        (10, 3, 0, 0, shstr_off, len(shstrtab), 0, 0, 1, 0),
    ]
    return body + b"".join(struct.pack("<IIIIIIIIII", *s) for s in sections)


def test_modinfo_reads_the_modinfo_section() -> None:
    ko = make_module(["license=GPL", "depends=", "name=nls_ascii", "vermagic=6.1.0-50-armmp SMP mod_unload"])
    assert modinfo(ko) == {
        "license": "GPL",
        "depends": "",
        "name": "nls_ascii",
        "vermagic": "6.1.0-50-armmp SMP mod_unload",
    }
    with pytest.raises(BuildError, match="not a valid ELF"):
        modinfo(b"not an elf at all")


def test_the_first_self_contained_module_for_this_release_is_chosen() -> None:
    release = "6.1.0-50-armmp"
    base = f"lib/modules/{release}/kernel/fs/nls/"
    found = {
        base + "nls_ascii.ko": make_module(["depends=nls_base", f"vermagic={release} SMP"]),
        base + "nls_cp437.ko": make_module(["depends=", "vermagic=6.1.0-47-armmp SMP"]),
        base + "nls_iso8859-1.ko": make_module(["depends=", f"vermagic={release} SMP"]),
    }
    assert builder._choose_module(found, release, "k.deb") == {
        base + "nls_iso8859-1.ko": found[base + "nls_iso8859-1.ko"]
    }
    del found[base + "nls_iso8859-1.ko"]
    with pytest.raises(BuildError, match="none of the self-contained modules"):
        builder._choose_module(found, release, "k.deb")


def make_deb(path: Path, files: dict[str, bytes]) -> Path:
    """A Debian package (ar: debian-binary, control.tar.xz, data.tar.xz) holding ``files`` in its data.tar."""
    import io
    import tarfile

    def tar_xz(members: dict[str, bytes]) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:xz") as tar:
            for name, data in members.items():
                info = tarfile.TarInfo(f"./{name}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return out.getvalue()

    archive = b"!<arch>\n"
    for name, data in (("debian-binary", b"2.0\n"), ("control.tar.xz", tar_xz({"control": b"Package: k\n"})),
                       ("data.tar.xz", tar_xz(files))):  # fmt: skip
        archive += f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode() + data
        archive += b"\n" if len(data) % 2 else b""
    path.write_bytes(archive)
    return path


def test_trixie_modules_come_from_usr_lib_and_go_in_decompressed(tmp_path: Path) -> None:
    """Trixie's kernel package ships usr/lib/modules/RELEASE/...ko.xz; the image has lib/modules/RELEASE/...ko,
    where the workload's insmod finds it."""
    release = "6.12.117+deb13-armmp"
    ko = make_module(["depends=", f"vermagic={release} SMP"])
    zimage = bytearray(0x40)
    struct.pack_into("<I", zimage, 0x24, ZIMAGE_MAGIC)
    deb = make_deb(
        tmp_path / "k.deb",
        {
            f"boot/vmlinuz-{release}": bytes(zimage) + lzma.compress(b"kernel", format=lzma.FORMAT_XZ),
            f"boot/config-{release}": b"CONFIG_MODULE_COMPRESS_XZ=y\n",
            f"usr/lib/modules/{release}/kernel/fs/nls/nls_ascii.ko.xz": lzma.compress(ko, format=lzma.FORMAT_XZ),
        },
    )
    parts = builder.extract_kernel(deb, release)
    assert parts.modules == {f"lib/modules/{release}/kernel/fs/nls/nls_ascii.ko": ko}
    assert parts.config == b"CONFIG_MODULE_COMPRESS_XZ=y\n"


# --- apt, faked at the process boundary -------------------------------------------------------------


def pkg(name: str, version: str = "1.0", data: bytes = b"deb") -> AptPackage:
    import hashlib

    return AptPackage(name, version, "armhf", len(data), hashlib.sha256(data).hexdigest())


class FakeApt(PrivateApt):
    """PrivateApt with apt-get/apt-cache replaced by canned answers; records every call."""

    def __init__(self, root: Path, answers: dict[tuple[str, str], tuple[int, str, str]]) -> None:
        super().__init__(root)
        self.answers = answers
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def _run(self, tool: str, args: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        self.calls.append((tool, tuple(args)))
        code, out, err = self.answers.get((tool, args[0]), (0, "", ""))
        if tool == "apt-get" and args[0] == "update" and code == 0:
            (self.state_dir / "lists" / "x_Packages.lz4").write_text("lists")
        return subprocess.CompletedProcess([tool, *args], code, out, err)


def test_options_keep_apt_private_and_single_architecture(tmp_path: Path) -> None:
    options = PrivateApt(tmp_path / "apt").options()
    pairs = dict(options[i + 1].split("=", 1) for i in range(0, len(options), 2))
    assert pairs["Dir::State"] == str(tmp_path / "apt/state")
    assert pairs["Dir::State::status"] == str(tmp_path / "apt/state/status")
    assert pairs["Dir::Cache"] == str(tmp_path / "apt/cache")
    assert pairs["APT::Architecture"] == "armhf" and pairs["APT::Architectures::"] == "armhf"
    assert (tmp_path / "apt/state/status").read_bytes() == b""


def test_update_runs_only_when_lists_are_stale_and_once(tmp_path: Path) -> None:
    apt = FakeApt(tmp_path, {})
    apt.refresh()
    assert [c[1][0] for c in apt.calls] == ["update"]
    apt.refresh(force=True)  # already updated in this build
    assert len(apt.calls) == 1
    again = FakeApt(tmp_path, {})
    again.refresh()  # lists are fresh now
    assert again.calls == []


def test_a_failed_index_is_remembered_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "state/lists").mkdir(parents=True)
    (tmp_path / "state/lists/x_Packages.lz4").write_text("old lists")
    apt = FakeApt(tmp_path, {("apt-get", "update"): (100, "", "E: Failed to fetch security index\nW: meh")})
    apt.refresh(force=True)
    assert apt.update_problem == "E: Failed to fetch security index"
    apt.answers[("apt-get", "-s")] = (100, "", "E: Unable to locate package nosuch")
    with pytest.raises(BuildError) as caught:
        apt.resolve(["busybox-static", "nosuch"])
    message = str(caught.value)
    assert message.startswith("apt cannot install nosuch: E: Unable to locate package nosuch")
    assert "(apt-get update also reported: E: Failed to fetch security index)" in message
    assert "\n" not in message


def test_update_without_any_lists_is_fatal(tmp_path: Path) -> None:
    apt = FakeApt(tmp_path, {("apt-get", "update"): (100, "", "E: Could not resolve host")})
    with pytest.raises(BuildError, match="apt-get update found no package lists: E: Could not resolve host"):
        apt.refresh()


def test_resolve_parses_simulated_installs(tmp_path: Path) -> None:
    simulation = "\n".join(
        [
            "NOTE: This is only a simulation!",
            "Inst gcc-12-base (12.2.0-14+deb12u1 Debian:12.15/oldstable [armhf])",
            "Inst libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [armhf]) []",
            "Inst busybox-static (1:1.35.0-4+deb12u1+b1 Debian:12.15/oldstable [armhf])",
            "Conf libc6 (2.36-9+deb12u14 Debian:12.15/oldstable [armhf])",
        ]
    )
    records = "\n\n".join(
        f"Package: {n}\nVersion: {v}\nArchitecture: armhf\nSize: 10\nSHA256: {'ab' * 32}"
        for n, v in [("busybox-static", "1:1.35.0-4+deb12u1+b1"), ("gcc-12-base", "12.2.0-14+deb12u1"),
                     ("libc6", "2.36-9+deb12u14")]
    )  # fmt: skip
    apt = FakeApt(tmp_path, {("apt-get", "-s"): (0, simulation, ""), ("apt-cache", "show"): (0, records, "")})
    resolved = apt.resolve(["busybox-static"])
    assert [(p.name, p.version) for p in resolved] == [
        ("busybox-static", "1:1.35.0-4+deb12u1+b1"),
        ("gcc-12-base", "12.2.0-14+deb12u1"),
        ("libc6", "2.36-9+deb12u14"),
    ]
    show_call = apt.calls[-1]
    assert "libc6=2.36-9+deb12u14" in show_call[1]


def test_inst_line_and_error_extraction() -> None:
    match = INST_LINE.match("Inst libgcc-s1 (12.2.0-14+deb12u1 Debian:12.15/oldstable [armhf]) []")
    assert match and (match["name"], match["version"], match["arch"]) == ("libgcc-s1", "12.2.0-14+deb12u1", "armhf")
    assert _apt_errors("Reading...\nW: warn\nE: first\nE: second") == "E: first; E: second"
    assert _apt_errors("W: only a warning") == "W: only a warning"


def test_deb_file_names_quote_the_epoch() -> None:
    assert pkg("busybox-static", "1:1.35.0-4").deb_filename == "busybox-static_1%3a1.35.0-4_armhf.deb"


def test_download_reuses_a_verified_cached_deb_and_replaces_a_damaged_one(tmp_path: Path) -> None:
    apt = FakeApt(tmp_path, {})
    package = pkg("strace", "6.1-0.1", b"the real deb")
    apt.cached_path(package).write_bytes(b"the real deb")
    assert apt.missing_bytes([package]) == 0
    assert apt.download(package) == apt.cached_path(package)
    assert apt.calls == []
    apt.cached_path(package).write_bytes(b"the fake deb")  # same size, wrong hash
    with pytest.raises(BuildError, match=re.escape("apt cannot download strace=6.1-0.1")):
        apt.download(package)  # the fake apt fetches nothing
    assert apt.calls == [("apt-get", ("download", "strace=6.1-0.1"))]
    assert not apt.cached_path(package).exists()


class KernelApt(FakeApt):
    def __init__(self, root: Path, names: list[str], suite: str | None = None) -> None:
        super().__init__(root, {})
        self.names = names
        self.suite = suite

    def package_names(self, prefix: str) -> list[str]:
        return sorted(n for n in self.names if n.startswith(prefix))

    def has_package(self, name: str) -> bool:
        return name in self.names

    def show(self, specs: Sequence[str]) -> list[AptPackage]:
        return [pkg(spec) for spec in specs]


def test_select_kernel_takes_the_newest_abi_that_has_a_dbg_package(tmp_path: Path) -> None:
    listed = [
        "linux-image-6.1.0-9-armmp", "linux-image-6.1.0-9-armmp-dbg",
        "linux-image-6.1.0-10-armmp", "linux-image-6.1.0-10-armmp-dbg",
        "linux-image-6.1.0-11-armmp",  # newest, but no -dbg: unusable for a profile
        "linux-image-6.1.0-12-armmp-lpae", "linux-image-6.1.0-12-armmp-lpae-dbg",
        "linux-image-6.1.0-12-rt-armmp", "linux-image-armmp",
    ]  # fmt: skip
    image, dbg = select_kernel(KernelApt(tmp_path, listed))
    assert (image.name, dbg.name) == ("linux-image-6.1.0-10-armmp", "linux-image-6.1.0-10-armmp-dbg")
    with pytest.raises(BuildError, match=r"no linux-image-\*-armmp kernel with an installable -dbg package .*"
                       r"without one: 6.1.0-11-armmp; listed: 6.1.0-11-armmp$"):  # fmt: skip
        select_kernel(KernelApt(tmp_path / "x", ["linux-image-6.1.0-11-armmp"]))


TRIXIE_KERNELS = [
    name + dbg
    for release in ("6.12.107+deb13", "6.12.115+deb13.1", "6.12.117+deb13")
    for name in (f"linux-image-{release}-armmp", f"linux-image-{release}-armmp-lpae", f"linux-image-{release}-rt-armmp")
    for dbg in ("", "-dbg")
] + ["linux-image-armmp", "linux-image-armmp-dbg"]


def test_trixie_kernel_names_match_and_the_newest_is_taken(tmp_path: Path) -> None:
    """Trixie names its kernels 6.12.117+deb13-armmp (bookworm: 6.1.0-28-armmp); the pattern used to match only
    the latter, and the build said "listed: none" with 18 linux-image-*armmp* packages in the lists."""
    image, dbg = select_kernel(KernelApt(tmp_path, TRIXIE_KERNELS, "trixie"))
    assert (image.name, dbg.name) == ("linux-image-6.12.117+deb13-armmp", "linux-image-6.12.117+deb13-armmp-dbg")


@pytest.mark.parametrize("wanted", ["6.12.107+deb13", "6.12.107+deb13-armmp", "linux-image-6.12.107+deb13-armmp"])
def test_kernel_picks_one_listed_release(tmp_path: Path, wanted: str) -> None:
    image, dbg = select_kernel(KernelApt(tmp_path, TRIXIE_KERNELS, "trixie"), wanted)
    assert (image.name, dbg.name) == ("linux-image-6.12.107+deb13-armmp", "linux-image-6.12.107+deb13-armmp-dbg")


def test_a_kernel_not_listed_is_refused_naming_those_that_are(tmp_path: Path) -> None:
    apt = KernelApt(tmp_path, TRIXIE_KERNELS, "trixie")
    with pytest.raises(BuildError) as caught:
        select_kernel(apt, "6.1.0-28")
    assert str(caught.value) == (
        "no armmp kernel 6.1.0-28 in trixie; listed: 6.12.117+deb13-armmp, 6.12.115+deb13.1-armmp, 6.12.107+deb13-armmp"
    )
    with pytest.raises(BuildError, match=r"no linux-image-\*-armmp kernel in trixie in apt's lists; listed: "
                       r"linux-image-6.12.1-rt-armmp$"):  # fmt: skip
        select_kernel(KernelApt(tmp_path / "x", ["linux-image-6.12.1-rt-armmp"], "trixie"))


def test_a_suite_is_the_hosts_release_entries_rewritten() -> None:
    host = [
        Source("http://mirror.invalid/debian/", "bookworm", ("main",)),
        Source("http://mirror.invalid/debian/", "bookworm-updates", ("main",)),
        Source("http://security.invalid/debian-security/", "bookworm-security", ("main", "contrib")),
        Source("http://third.invalid/repo/", "nodistro", ("main",)),
    ]
    assert [s.line for s in sources_for_suite(host, "trixie")] == [
        "deb http://mirror.invalid/debian/ trixie main",
        "deb http://mirror.invalid/debian/ trixie-updates main",
        "deb http://security.invalid/debian-security/ trixie-security main contrib",
    ]
    assert sources_for_suite(host, "bookworm")[:1] == host[:1]
    for bad in ("trixie-updates", "../x", "Trixie", ""):
        with pytest.raises(BuildError, match="invalid suite"):
            sources_for_suite(host, bad)
    with pytest.raises(BuildError, match="no deb sources"):
        sources_for_suite([], "trixie")


def test_a_private_sources_list_makes_stale_lists_and_is_what_apt_reads(tmp_path: Path) -> None:
    sources = [Source("http://mirror.invalid/debian/", "trixie", ("main",))]
    apt = PrivateApt(tmp_path, suite="trixie", sources=sources)
    pairs = dict(arg.split("=", 1) for arg in apt.options()[1::2])
    assert pairs["Dir::State"] == str(tmp_path / "suites/trixie")
    assert Path(pairs["Dir::Etc::sourcelist"]).read_text() == "deb http://mirror.invalid/debian/ trixie main\n"
    assert not any(Path(pairs["Dir::Etc::sourceparts"]).iterdir())
    (apt.state_dir / "lists/x_Packages.lz4").write_text("lists")
    (apt.state_dir / "qppsuite-updated").touch()
    assert PrivateApt(tmp_path, suite="trixie", sources=sources).lists_age() is not None
    other = [Source("http://other.invalid/debian/", "trixie", ("main",))]
    assert PrivateApt(tmp_path, suite="trixie", sources=other).lists_age() is None


# --- disk space, atomic install, profile hook -------------------------------------------------------


def test_too_little_disk_space_is_reported_before_downloading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: shutil._ntuple_diskusage(100, 90, 10 * 2**20))  # type: ignore[attr-defined]
    with pytest.raises(BuildError, match=r"not enough disk space in .*: the build needs about 700 MiB, 10 MiB free"):
        builder._check_free_space(tmp_path, 700 * 2**20)


def test_enospc_during_a_build_becomes_a_build_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(*_args: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(builder, "_build", full_disk)
    with pytest.raises(BuildError, match=f"no space left on the device holding {tmp_path} while building image 'x'"):
        builder.build_image("x", cache=tmp_path)


def test_install_replaces_a_bundle_without_leaving_debris(tmp_path: Path) -> None:
    dest = tmp_path / "img"
    dest.mkdir()
    (dest / "old").write_text("old")
    staging = tmp_path / ".build-img-1"
    staging.mkdir()
    (staging / "new").write_text("new")
    builder._install_bundle(staging, dest)
    assert [p.name for p in tmp_path.iterdir()] == ["img"]
    assert [p.name for p in dest.iterdir()] == ["new"]


def test_profile_is_built_from_a_temporary_vmlinux(tmp_path: Path) -> None:
    seen: list[Path] = []

    def extract(dbg_deb: Path, dest: Path) -> Path:
        assert dbg_deb == tmp_path / "k-dbg.deb"
        vmlinux = dest / "vmlinux-6.1.0-50-armmp"
        vmlinux.write_bytes(b"\x7fELF")
        return vmlinux

    def profile(vmlinux: Path) -> dict[str, Any]:
        seen.append(vmlinux)
        return {"z": 1, "a": {"b": 2}}

    data = builder.build_profile(tmp_path / "k-dbg.deb", tmp_path, extract, profile)
    assert json.loads(data) == {"z": 1, "a": {"b": 2}}
    assert data.index(b'"a"') < data.index(b'"z"'), "keys are sorted for reproducible bytes"
    assert seen and not seen[0].exists(), "the vmlinux is deleted once the profile is built"
    assert list(tmp_path.iterdir()) == []


# --- guest scripts ------------------------------------------------------------------------------------


@pytest.mark.parametrize("script", ["init.sh", "workload.sh"])
def test_guest_scripts_are_valid_posix_shell(script: str, tmp_path: Path) -> None:
    path = tmp_path / script
    path.write_bytes(guest_script(script))
    result = subprocess.run(["sh", "-n", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_init_reports_the_exit_status_and_powers_off() -> None:
    init = guest_script("init.sh").decode()
    lines = [line.strip() for line in init.splitlines()]
    tmp = '[ -n "$kept" ] || mount -t tmpfs tmpfs /tmp'
    for needed in ("mount -t proc proc /proc", "mount -t devtmpfs devtmpfs /dev", tmp):
        assert needed in lines
    assert lines[-2:] == ['echo "QPPSUITE-EXIT $status"', "poweroff -f"]
    assert 'PATH=$user_path "$user_sh" /etc/qppsuite/cmd' in lines
    assert 'PATH=$user_path "$user_sh" /etc/qppsuite/workload.sh' in lines
    assert "QPPSUITE_PATH=$user_path QPPSUITE_SH=$user_sh sh /etc/qppsuite/agent" in lines


def test_file_sha256(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    assert file_sha256(tmp_path / "f") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_a_file_that_is_no_ar_archive_is_one_line(tmp_path: Path) -> None:
    """python-debian raises ArError for it, which the builder let through as a traceback (seen by helper-23)."""
    bad = tmp_path / "busybox-static_1_armhf.deb"
    bad.write_bytes(b"not an ar archive at all")
    with pytest.raises(BuildError, match="is not a readable Debian package"):
        builder.build_initramfs(bad, builder.KernelParts("6.1.0-1-armmp", b"", b"", {}), [], lambda _m: None)
