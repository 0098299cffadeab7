"""Streaming vmlinux out of a -dbg .deb, on small packages built here in the Debian layout."""

from __future__ import annotations

import io
import random
import tarfile
from pathlib import Path

import pytest

from qppsuite.errors import BuildError
from qppsuite.profiles.dbg import extract_vmlinux

RELEASE = "9.9.9-test-armmp"
BOOT = "./usr/lib/debug/boot/"


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    out.write(b"!<arch>\n")
    for name, data in members:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}".encode() + b"`\n"
        assert len(header) == 60
        out.write(header + data + (b"\n" if len(data) % 2 else b""))
    return out.getvalue()


def _tar(files: list[tuple[str, bytes]], mode: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:  # type: ignore[call-overload]
        for directory in ("./", "./usr/", "./usr/lib/", "./usr/lib/debug/", BOOT):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _deb(path: Path, files: list[tuple[str, bytes]], data_name: str = "data.tar.xz",
         mode: str = "w:xz", data: bytes | None = None) -> Path:
    control = _tar([("./control", b"Package: linux-image-test-dbg\n")], "w:xz")
    data = _tar(files, mode) if data is None else data
    path.write_bytes(_ar([("debian-binary", b"2.0\n"), ("control.tar.xz", control), (data_name, data)]))
    return path


@pytest.fixture
def payload() -> dict[str, bytes]:
    rng = random.Random(4)
    return {
        "map": b"c0008000 T stext\n" * 100,
        "vmlinux": b"\x7fELF" + rng.randbytes(256 << 10),  # incompressible, like the real one's bulk
        "tail": rng.randbytes(512 << 10),
    }


def _files(payload: dict[str, bytes]) -> list[tuple[str, bytes]]:
    return [
        (f"{BOOT}System.map-{RELEASE}", payload["map"]),
        (f"{BOOT}vmlinux-{RELEASE}", payload["vmlinux"]),
        ("./usr/lib/debug/lib/modules/x/kernel/fs/ext4.ko", payload["tail"]),
    ]


def test_extracts_vmlinux_and_system_map(tmp_path: Path, payload: dict[str, bytes]) -> None:
    deb = _deb(tmp_path / "pkg.deb", _files(payload))
    out = extract_vmlinux(deb, tmp_path / "out")
    assert out == tmp_path / "out" / f"vmlinux-{RELEASE}"
    assert out.read_bytes() == payload["vmlinux"]
    assert (tmp_path / "out" / f"System.map-{RELEASE}").read_bytes() == payload["map"]
    assert sorted(p.name for p in out.parent.iterdir()) == [f"System.map-{RELEASE}", f"vmlinux-{RELEASE}"]


def test_stops_reading_after_vmlinux(tmp_path: Path, payload: dict[str, bytes]) -> None:
    # Cut the compressed data inside the member after vmlinux: decompressing
    # past vmlinux would hit the truncation and fail.
    whole = _tar(_files(payload), "w:xz")
    cut = whole[: int(len(whole) * 0.6)]
    with (
        pytest.raises((EOFError, tarfile.ReadError)),
        tarfile.open(fileobj=io.BytesIO(cut), mode="r|xz") as tar,
    ):
        for member in tar:
            if member.isfile():
                tar.extractfile(member).read()  # type: ignore[union-attr]
    deb = _deb(tmp_path / "cut.deb", [], data=cut)
    assert extract_vmlinux(deb, tmp_path / "out").read_bytes() == payload["vmlinux"]


def test_gzip_data_member(tmp_path: Path, payload: dict[str, bytes]) -> None:
    deb = _deb(tmp_path / "gz.deb", _files(payload), data_name="data.tar.gz", mode="w:gz")
    assert extract_vmlinux(deb, tmp_path / "out").read_bytes() == payload["vmlinux"]


def test_package_without_vmlinux(tmp_path: Path, payload: dict[str, bytes]) -> None:
    deb = _deb(tmp_path / "nodbg.deb", [("./boot/vmlinuz-9.9.9", payload["map"])])
    with pytest.raises(BuildError, match=r"nodbg.deb has no \./usr/lib/debug/boot/vmlinux-\*"):
        extract_vmlinux(deb, tmp_path / "out")


def test_unreadable_inputs(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="does not exist"):
        extract_vmlinux(tmp_path / "missing.deb", tmp_path)
    text = tmp_path / "text.deb"
    text.write_text("not an archive at all")
    with pytest.raises(BuildError, match="is not a Debian package"):
        extract_vmlinux(text, tmp_path)
    zstd = tmp_path / "zstd.deb"
    zstd.write_bytes(_ar([("debian-binary", b"2.0\n"), ("data.tar.zst", b"\x28\xb5\x2f\xfd")]))
    with pytest.raises(BuildError, match=r"compresses its data as data\.tar\.zst; readable: data\.tar\.xz"):
        extract_vmlinux(zstd, tmp_path)
    nodata = tmp_path / "nodata.deb"
    nodata.write_bytes(_ar([("debian-binary", b"2.0\n")]))
    with pytest.raises(BuildError, match="has no data member; it has: debian-binary"):
        extract_vmlinux(nodata, tmp_path)
    corrupt = tmp_path / "corrupt.deb"
    corrupt.write_bytes(b"!<arch>\n" + b"x" * 60)
    with pytest.raises(BuildError, match="corrupt ar member header at byte 8"):
        extract_vmlinux(corrupt, tmp_path)
