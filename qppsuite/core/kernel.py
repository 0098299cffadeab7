"""Recognising an ARM Linux kernel and decompressing a zImage on the host.

Inside the guest, the zImage's own XZ decompressor costs ~2 G instructions
(~80 % of a boot, boot-recipe.md).  The payload is a plain compressed stream
inside the zImage, so the host can unpack it in well under a second and boot
the raw Image at the same load address: the kernel patches phys/virt itself
(ARM_PATCH_PHYS_VIRT).  A zImage whose payload we cannot unpack still boots
as-is.
"""

import hashlib
import lzma
import zlib
from dataclasses import dataclass
from pathlib import Path

from qppsuite.errors import ImageError
from qppsuite.hostfiles import replace_file

ZIMAGE_MAGIC = 0x016F2818
ZIMAGE_MAGIC_OFFSET = 0x24
BANNER = b"Linux version "

_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZIP_MAGIC = b"\x1f\x8b\x08"


#: The usual ARM TEXT_OFFSET, and where a zImage is always loaded (it relocates itself).
DEFAULT_TEXT_OFFSET = 0x8000


@dataclass(frozen=True)
class KernelImage:
    """What gets loaded at RAM + :attr:`load_offset`, and how it was obtained."""

    data: bytes
    source_format: str  # "zImage" or "Image"
    decompressed_on_host: bool

    @property
    def load_offset(self) -> int:
        """Offset from the start of RAM to load and enter the image at.

        A zImage goes at 0x8000.  A raw Image must sit exactly at TEXT_OFFSET,
        because ARM_PATCH_PHYS_VIRT derives PHYS_OFFSET from where it runs, and
        multiplatform kernels use 0x208000 when a platform needs it (Debian's
        armmp does).
        """
        if is_zimage(self.data) and not self.decompressed_on_host:
            return DEFAULT_TEXT_OFFSET
        return text_offset(self.data)

    @property
    def banner(self) -> str | None:
        """The ``Linux version ...`` string when visible (raw Images only)."""
        start = self.data.find(BANNER)
        if start < 0:
            return None
        end = self.data.find(b"\n", start, start + 512)
        return self.data[start : end if end > 0 else start + 200].decode("ascii", "replace")


def text_offset(image: bytes) -> int:
    """TEXT_OFFSET of a raw ARM Image, read from its own entry code (arch/arm/kernel/head.S).

    From Linux 5.11, ``stext`` computes PHYS_OFFSET with ``sub r8, r8, #TEXT_OFFSET``, the one place the value
    is written down in the binary.  Before (5.10), it adds the distance between where it runs and where it was
    linked to PAGE_OFFSET: ``adr r3, 2f; ldmia r3, {r4, r8}`` loads the pair ``2: .long .; .long PAGE_OFFSET``,
    so TEXT_OFFSET is that pair's link address, less its place in the Image and PAGE_OFFSET.
    """
    for pos in range(0, min(len(image), 0x10000) - 3, 4):
        word = _word(image, pos)
        value: int | None = None
        if word & 0xFFFFF000 == 0xE2488000:  # SUB r8, r8, #imm (ARM, AL)
            value = _arm_immediate(word)
        elif word == LDMIA_R3_R4_R8 and pos >= 4 and _word(image, pos - 4) & 0xFFFFF000 == ADD_R3_PC:
            pair = pos - 4 + 8 + _arm_immediate(_word(image, pos - 4))  # adr r3, 2f: pc reads 8 ahead
            if pair + 8 <= len(image):
                value = (_word(image, pair) - pair - _word(image, pair + 4)) & 0xFFFFFFFF
        if value is not None and value % 0x8000 == 0 and 0 < value < (16 << 20):
            return value
    return DEFAULT_TEXT_OFFSET


#: ``ldmia r3, {r4, r8}`` and ``add r3, pc, #imm`` (``adr r3, ...``), ARM encodings, condition AL.
LDMIA_R3_R4_R8 = 0xE8930110
ADD_R3_PC = 0xE28F3000


def _word(image: bytes, pos: int) -> int:
    return int.from_bytes(image[pos : pos + 4], "little")


def _arm_immediate(word: int) -> int:
    """The value of an ARM data-processing instruction's rotated 8-bit immediate."""
    rotate, imm8 = 2 * ((word >> 8) & 0xF), word & 0xFF
    return ((imm8 >> rotate) | (imm8 << (32 - rotate))) & 0xFFFFFFFF if rotate else imm8


def is_zimage(data: bytes) -> bool:
    return len(data) >= 0x30 and int.from_bytes(data[ZIMAGE_MAGIC_OFFSET : ZIMAGE_MAGIC_OFFSET + 4], "little") == (
        ZIMAGE_MAGIC
    )


def _payload_candidates(data: bytes) -> list[tuple[int, str]]:
    found = []
    for magic, kind in ((_XZ_MAGIC, "xz"), (_GZIP_MAGIC, "gzip")):
        pos = data.find(magic)
        while pos >= 0:
            found.append((pos, kind))
            pos = data.find(magic, pos + 1)
    return sorted(found)


def _try_decompress(data: bytes, pos: int, kind: str) -> bytes | None:
    try:
        if kind == "xz":
            out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[pos:])
        else:
            out = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data[pos:])
    except (lzma.LZMAError, zlib.error):
        return None
    return out if BANNER in out else None


def decompress_zimage(data: bytes) -> bytes | None:
    """The raw Image inside a zImage, or None when no supported payload decodes.

    Magic bytes can occur by chance in the decompressor's code, so every
    occurrence is tried until one yields a kernel (it contains the banner).
    """
    for pos, kind in _payload_candidates(data):
        image = _try_decompress(data, pos, kind)
        if image is not None:
            return image
    return None


def load_kernel(path: Path, *, decompress: bool = True, cache_dir: Path | None = None) -> KernelImage:
    """Read a zImage or raw Image; unpack zImages on the host (cached by content hash)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(f"cannot read kernel {path}: {exc.strerror}") from exc
    if is_zimage(data):
        if not decompress:
            return KernelImage(data, "zImage", False)
        digest = hashlib.sha256(data).hexdigest()
        cached = cache_dir / f"{digest}.Image" if cache_dir else None
        if cached and cached.is_file():
            return KernelImage(cached.read_bytes(), "zImage", True)
        image = decompress_zimage(data)
        if image is None:
            return KernelImage(data, "zImage", False)
        if cached:  # written under this process's own name, then renamed: two runs at once on a new cache
            cached.parent.mkdir(parents=True, exist_ok=True)  # (a batch's jobs) do not share a partial file
            replace_file(cached, image)
        return KernelImage(image, "zImage", True)
    if BANNER in data[: 64 << 20]:
        return KernelImage(data, "Image", False)
    raise ImageError(f"{path} is not an ARM Linux kernel (no zImage magic at 0x24 and no 'Linux version' banner)")
