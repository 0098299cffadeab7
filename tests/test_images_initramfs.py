"""The newc cpio writer/reader, overlay archives and the initramfs tree (no network, fast)."""

from __future__ import annotations

import gzip
import io
import random
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from host_tools import host_tool
from hypothesis import given, settings
from hypothesis import strategies as st

from qppsuite.errors import ImageError
from qppsuite.images.initramfs import (
    FIXED_MTIME,
    NEWC_FIELDS,
    NEWC_HEADER_SIZE,
    CpioEntry,
    InitramfsTree,
    cpio_newc,
    gunzip_members,
    gzip_reproducible,
    normalize_path,
    overlay_archive,
    read_cpio_newc,
    with_parent_directories,
)

SAMPLE = [
    CpioEntry.directory("bin"),
    CpioEntry.file("bin/busybox", b"\x7fELF" + bytes(range(256)) * 3, 0o755),
    CpioEntry.symlink("bin/sh", "/bin/busybox"),
    CpioEntry.directory("etc"),
    CpioEntry.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
    CpioEntry.directory("tmp", 0o1777),
    CpioEntry.file("init", b"#!/bin/sh\necho hi\n", 0o755),
    CpioEntry.file("empty", b""),
    CpioEntry.file("odd", b"abc"),  # data length not a multiple of 4 exercises padding
]


def _headers(archive: bytes) -> list[dict[str, int | str]]:
    """Raw header fields of every member, trailer included (what the reader hides)."""
    out: list[dict[str, int | str]] = []
    pos = 0
    while pos < len(archive) and archive[pos : pos + 6] == b"070701":
        values = [int(archive[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(len(NEWC_FIELDS))]
        fields: dict[str, int | str] = dict(zip(NEWC_FIELDS, values, strict=True))
        name_end = pos + NEWC_HEADER_SIZE + values[NEWC_FIELDS.index("namesize")]
        fields["name"] = archive[pos + NEWC_HEADER_SIZE : name_end - 1].decode()
        out.append(fields)
        data_start = name_end + (-(name_end - pos) % 4)
        size = values[NEWC_FIELDS.index("filesize")]
        pos = data_start + size + (-size % 4)
    return out


def test_round_trip_keeps_every_entry() -> None:
    entries = read_cpio_newc(cpio_newc(SAMPLE))
    assert sorted(entries, key=lambda e: e.path) == sorted(SAMPLE, key=lambda e: e.path)


def test_directories_precede_their_contents_and_order_is_sorted() -> None:
    names = [e.path for e in read_cpio_newc(cpio_newc(reversed(SAMPLE)))]
    assert names.index("bin") < names.index("bin/busybox") < names.index("bin/sh")
    assert names == sorted(names, key=lambda p: p.split("/"))


def test_headers_are_normalised_for_reproducibility() -> None:
    headers = _headers(cpio_newc(SAMPLE))
    assert headers[-1]["name"] == "TRAILER!!!"
    members = headers[:-1]
    assert {h["uid"] for h in members} == {0}
    assert {h["gid"] for h in members} == {0}
    assert {h["mtime"] for h in members} == {FIXED_MTIME}
    inodes = [h["ino"] for h in members]
    assert len(set(inodes)) == len(inodes), "every member needs its own inode (else the kernel links them)"
    for header in members:
        expected_links = 2 if stat.S_ISDIR(int(header["mode"])) else 1
        assert header["nlink"] == expected_links


def test_input_order_does_not_change_the_bytes() -> None:
    shuffled = list(SAMPLE)
    random.Random(7).shuffle(shuffled)
    assert cpio_newc(shuffled) == cpio_newc(SAMPLE)


def test_gzip_is_reproducible_with_zero_mtime() -> None:
    first = gzip_reproducible(b"payload" * 100)
    assert first == gzip_reproducible(b"payload" * 100)
    assert first[4:8] == b"\0\0\0\0"
    assert gzip.decompress(first) == b"payload" * 100


path_part = st.text(alphabet="abcdefgh_-.0123456789", min_size=1, max_size=6).filter(lambda s: s not in (".", ".."))


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.lists(path_part, min_size=1, max_size=3).map("/".join),
        st.binary(max_size=40),
        min_size=1,
        max_size=12,
    )
)
def test_any_file_set_round_trips_and_is_deterministic(files: dict[str, bytes]) -> None:
    # A path that is also another path's parent directory cannot be a file too.
    parents = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
    files = {p: d for p, d in files.items() if p not in parents}
    entries = with_parent_directories(CpioEntry.file(p, d) for p, d in files.items())
    archive = cpio_newc(entries)
    assert archive == cpio_newc(list(reversed(entries)))
    back = {e.path: e.data for e in read_cpio_newc(archive) if not e.is_dir}
    assert back == files


@pytest.mark.boot  # may install GNU cpio through apt
def test_gnu_cpio_reads_and_extracts_the_archive(tmp_path: Path) -> None:
    cpio = host_tool("cpio", "cpio")
    archive = cpio_newc(SAMPLE)
    listing = subprocess.run([cpio, "-t", "--quiet"], input=archive, capture_output=True, check=True)
    assert sorted(listing.stdout.decode().split()) == sorted(e.path for e in SAMPLE)
    subprocess.run(
        [cpio, "-i", "-d", "--quiet", "--no-absolute-filenames"],
        input=archive,
        cwd=tmp_path,
        check=True,
    )
    assert (tmp_path / "bin/busybox").read_bytes() == SAMPLE[1].data
    assert (tmp_path / "bin/busybox").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "bin/sh").is_symlink() and str((tmp_path / "bin/sh").readlink()) == "/bin/busybox"
    assert (tmp_path / "odd").read_bytes() == b"abc"
    assert (tmp_path / "empty").read_bytes() == b""


def test_device_nodes_keep_their_numbers() -> None:
    (console,) = read_cpio_newc(cpio_newc([CpioEntry.char_device("dev/console", 5, 1)]))
    assert stat.S_ISCHR(console.mode) and console.rdev == (5, 1)


def test_duplicate_paths_are_refused() -> None:
    with pytest.raises(ImageError, match="appears twice"):
        cpio_newc([CpioEntry.file("a", b"1"), CpioEntry.file("./a", b"2")])


@pytest.mark.parametrize("bad", ["", "/", "..", "etc/../../x", "./.."])
def test_paths_outside_the_root_are_refused(bad: str) -> None:
    with pytest.raises(ImageError, match="invalid initramfs path"):
        normalize_path(bad)


def test_paths_are_normalised() -> None:
    assert normalize_path("/etc//qppsuite/./cmd") == "etc/qppsuite/cmd"


def test_truncated_or_garbage_archives_raise_image_error() -> None:
    archive = cpio_newc(SAMPLE)
    with pytest.raises(ImageError, match="truncated"):
        read_cpio_newc(archive[: len(archive) // 2])
    with pytest.raises(ImageError, match="not a newc cpio header"):
        read_cpio_newc(b"garbage" + archive)


def test_truncated_gzip_initrd_is_an_image_error() -> None:
    data = gzip_reproducible(cpio_newc(SAMPLE))
    with pytest.raises(ImageError, match="not a complete gzip stream"):
        gunzip_members(data[:-10])


def test_overlay_holds_the_files_and_their_parents() -> None:
    overlay = overlay_archive({"/etc/qppsuite/cmd": b"echo hello\n"})
    entries = {e.path: e for e in read_cpio_newc(gzip.decompress(overlay))}
    assert set(entries) == {"etc", "etc/qppsuite", "etc/qppsuite/cmd"}
    assert entries["etc"].is_dir and entries["etc/qppsuite"].is_dir
    assert entries["etc/qppsuite/cmd"].data == b"echo hello\n"
    assert overlay == overlay_archive({"etc/qppsuite/cmd": b"echo hello\n"})


def test_overlay_appended_to_an_initrd_replaces_files_in_order() -> None:
    """What the kernel does with initrd + overlay: unpack both, the later entry wins."""
    base = gzip_reproducible(cpio_newc(with_parent_directories([CpioEntry.file("etc/qppsuite/cmd", b"old")])))
    combined = base + overlay_archive({"etc/qppsuite/cmd": b"new", "root/extra": b"x"})
    unpacked: dict[str, bytes] = {}
    for entry in read_cpio_newc(gunzip_members(combined)):
        unpacked[entry.path] = entry.data
    assert unpacked["etc/qppsuite/cmd"] == b"new"
    assert unpacked["root/extra"] == b"x"


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> tarfile.TarFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    buffer.seek(0)
    return tarfile.open(fileobj=buffer, mode="r")


def _info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname = kind, mode, link
    return info


def test_tree_takes_a_package_data_tar() -> None:
    tar = _tar(
        [
            (_info("./", tarfile.DIRTYPE, 0o755), None),
            (_info("./usr", tarfile.DIRTYPE, 0o755), None),
            (_info("./usr/bin", tarfile.DIRTYPE, 0o755), None),
            (_info("./usr/bin/tool", mode=0o755), b"#!tool"),
            (_info("./usr/bin/alias", tarfile.SYMTYPE, 0o777, "tool"), None),
            (_info("./usr/bin/hard", tarfile.LNKTYPE, 0o755, "./usr/bin/tool"), None),
            (_info("./usr/share/man/man1/tool.1.gz"), b"man"),
            (_info("./usr/share/man", tarfile.DIRTYPE, 0o755), None),
            (_info("./usr/share/doc/tool/changelog.gz"), b"log"),
            (_info("./usr/share/doc/tool/copyright"), b"GPL"),
        ]
    )
    tree = InitramfsTree()
    tree.add_tar(tar, "tool.deb")
    entries = {e.path: e for e in tree.entries()}
    assert entries["usr/bin/tool"].data == b"#!tool"
    assert entries["usr/bin/tool"].mode & 0o777 == 0o755
    assert entries["usr/bin/alias"].data == b"tool" and stat.S_ISLNK(entries["usr/bin/alias"].mode)
    assert entries["usr/bin/hard"].data == b"#!tool" and stat.S_ISREG(entries["usr/bin/hard"].mode)
    assert entries["usr/share/doc/tool/copyright"].data == b"GPL"
    assert "usr/share/doc/tool/changelog.gz" not in entries
    assert not any(p.startswith("usr/share/man") for p in entries)


def test_tree_later_files_win_but_directories_keep_their_first_mode() -> None:
    tree = InitramfsTree()
    tree.add_directory("tmp", 0o1777)
    tree.add_directory("tmp", 0o755)
    tree.add_symlink("bin/ls", "/bin/busybox")
    tree.add_file("bin/ls", b"real ls", 0o755)
    entries = {e.path: e for e in tree.entries()}
    assert entries["tmp"].mode & 0o7777 == 0o1777
    assert entries["bin/ls"].data == b"real ls" and stat.S_ISREG(entries["bin/ls"].mode)
    assert entries["bin"].is_dir  # parent synthesised
    assert read_cpio_newc(gzip.decompress(tree.archive())) == sorted(tree.entries(), key=lambda e: e.path.split("/"))


def test_tree_refuses_a_dangling_hard_link() -> None:
    tar = _tar([(_info("./x", tarfile.LNKTYPE, 0o644, "./missing"), None)])
    with pytest.raises(ImageError, match="hard link"):
        InitramfsTree().add_tar(tar, "bad.deb")


def test_a_merged_usr_tree_links_bin_sbin_and_lib_into_usr() -> None:
    """Trixie's packages ship /usr/bin and /usr/lib only (the dynamic loader is /usr/lib/ld-linux-armhf.so.3,
    found as /lib/...): the tree makes /bin, /sbin and /lib links, and whatever is added under them is stored
    under usr/, so the archive never writes through a link."""
    tar = _tar(
        [
            (_info("./usr/bin/busybox", mode=0o755), b"busybox"),
            (_info("./lib/old-style.so"), b"so"),
            (_info("./bin", tarfile.DIRTYPE, 0o755), None),
        ]
    )
    tree = InitramfsTree(merged_usr=True)
    tree.add_tar(tar, "busybox.deb")
    tree.add_symlink("sbin/init", "/bin/busybox")
    entries = {e.path: e for e in tree.entries()}
    assert {p: entries[p].data for p in ("bin", "sbin", "lib")} == {"bin": b"usr/bin", "sbin": b"usr/sbin",
                                                                     "lib": b"usr/lib"}  # fmt: skip
    assert all(stat.S_ISLNK(entries[p].mode) for p in ("bin", "sbin", "lib"))
    assert entries["usr/lib/old-style.so"].data == b"so" and entries["usr/sbin/init"].data == b"/bin/busybox"
    assert "bin/busybox" in tree and tree.get("bin/busybox") == entries["usr/bin/busybox"]
    assert not [p for p in entries if p.split("/")[0] in ("bin", "sbin", "lib") and "/" in p]
    assert read_cpio_newc(gzip.decompress(tree.archive())) == sorted(tree.entries(), key=lambda e: e.path.split("/"))
