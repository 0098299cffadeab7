"""Kernel images: recognising them, unpacking zImages on the host, and booting a zImage as-is."""

from pathlib import Path

import pytest

from qppsuite.core.kernel import DEFAULT_TEXT_OFFSET, is_zimage, load_kernel, text_offset
from qppsuite.errors import ImageError
from qppsuite.images.bundle import ImageBundle
from qppsuite.session import RunOptions, run


@pytest.mark.boot
def test_debian_zimage_unpacks_on_the_host_to_an_image_at_its_text_offset(default_image: ImageBundle) -> None:
    raw = default_image.kernel_path.read_bytes()
    assert is_zimage(raw)
    kernel = load_kernel(default_image.kernel_path)
    assert kernel.decompressed_on_host and kernel.source_format == "zImage"
    assert not is_zimage(kernel.data)
    assert kernel.banner is not None and kernel.banner.startswith("Linux version 6.1")
    # Debian's armmp enables platforms that need TEXT_OFFSET 0x208000; the profile's _text agrees.
    assert kernel.load_offset == 0x208000
    assert load_kernel(default_image.kernel_path, decompress=False).load_offset == DEFAULT_TEXT_OFFSET


def test_text_offset_is_read_from_the_entry_code() -> None:
    sub_r8 = (0xE2488982).to_bytes(4, "little")  # sub r8, r8, #0x208000
    assert text_offset(b"\0" * 0x50 + sub_r8) == 0x208000
    assert text_offset(b"\0" * 256) == DEFAULT_TEXT_OFFSET


def test_text_offset_of_a_5_10_kernel_is_read_from_its_phys_offset_pair() -> None:
    """Before 5.11, stext loads ``2: .long .; .long PAGE_OFFSET`` (bullseye's armmp: at 0x84, 0xc0208084 and
    0xc0000000) with ``adr r3, 2f; ldmia r3, {r4, r8}``; loaded at 0x8000 instead, it never printed a byte."""
    entry = (0xE28F3038).to_bytes(4, "little") + (0xE8930110).to_bytes(4, "little")  # adr r3, 0x84; ldmia
    image = bytearray(0x100)
    image[0x44:0x4C] = entry
    image[0x84:0x8C] = (0xC0208084).to_bytes(4, "little") + (0xC0000000).to_bytes(4, "little")
    assert text_offset(bytes(image)) == 0x208000
    image[0x88:0x8C] = (0xC0000001).to_bytes(4, "little")  # not a TEXT_OFFSET: the default
    assert text_offset(bytes(image)) == DEFAULT_TEXT_OFFSET


def test_not_a_kernel_is_a_one_line_image_error(tmp_path: Path) -> None:
    junk = tmp_path / "vmlinuz"
    junk.write_bytes(b"MZ" + b"\x5a" * 4096)
    with pytest.raises(ImageError, match="is not an ARM Linux kernel"):
        load_kernel(junk)
    with pytest.raises(ImageError, match="cannot read kernel"):
        load_kernel(tmp_path / "missing")


@pytest.mark.boot
def test_zimage_boots_as_is_with_its_own_decompressor(default_image: ImageBundle) -> None:
    """A user's zImage whose payload we do not unpack must still boot (slow: ~2 G guest instructions)."""
    console = bytearray()
    result = run(
        RunOptions(cmd="echo zimage-ok", host_decompress=False), console.extend, image=default_image
    )
    assert result.ok, result.reason
    assert b"zimage-ok" in console
    assert result.insn_count > 1_500_000_000, "the guest ran the XZ decompressor itself"
