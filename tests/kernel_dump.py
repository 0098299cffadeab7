"""Kernel pages dumped from a real boot (``tests/data/osi/*.json.gz``) as memory the osi_linux readers can walk."""

import base64
import gzip
import json
from pathlib import Path
from typing import Any, TypeVar

from qppsuite.plugins.osi_linux.kernel_memory import KernelMemory
from qppsuite.plugins.osi_linux.layout import (
    CwdLayout,
    KernelLayout,
    MapleLayout,
    StackThreadInfo,
    UserRegsLayout,
    VmaListLayout,
)

PAGE = 4096
T = TypeVar("T")


def load_dump(path: Path) -> tuple[dict[str, Any], bytearray, KernelMemory]:
    """The dump (its ``pages``, by virtual page number in hex, and ``layout``), its pages as one writable buffer
    (to corrupt), and kernel memory over that buffer that translates only the dumped pages."""
    dump = json.loads(gzip.decompress(path.read_bytes()))
    order = {int(v, 16): i for i, v in enumerate(dump["pages"])}
    ram = bytearray(b"".join(base64.b64decode(d) for d in dump["pages"].values()))

    def translate(vaddr: int) -> int | None:
        index = order.get(vaddr >> 12)
        return None if index is None else index * PAGE

    return dump, ram, KernelMemory(memoryview(ram), 0, translate)


def dumped_layout(fields: dict[str, Any]) -> KernelLayout:
    """The KernelLayout a dump recorded (``dataclasses.asdict`` of it, through JSON), as the dataclass again."""

    def part(cls: type[T], name: str) -> T | None:
        value = fields.get(name)
        return None if value is None else cls(**value)

    return KernelLayout(**{
        **fields,
        "maple": part(MapleLayout, "maple"),
        "vma_list": part(VmaListLayout, "vma_list"),
        "stack_thread_info": part(StackThreadInfo, "stack_thread_info"),
        "user_regs": part(UserRegsLayout, "user_regs"),
        "cwd": part(CwdLayout, "cwd"),
        "module_sizes": tuple(fields["module_sizes"]),
    })
