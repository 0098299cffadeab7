#!/usr/bin/env python3
"""Generate qppsuite/plugins/syscalls/strace_classes.tsv: each ARM EABI syscall's strace trace classes.

strace sorts every system call into classes (``TRACE_FILE``, ``TRACE_PROCESS``, ``TRACE_MEMORY``,
``TRACE_NETWORK``, ``TRACE_SIGNAL``, ``TRACE_DESC``, ``TRACE_IPC``, ``TRACE_CLOCK``, ``TRACE_CREDS``, ...):
``strace -e trace=%file`` selects by them.  They are the flags column of strace's per-architecture
table, written with the shorthands of ``src/sysent_shorthand_defs.h`` (``TD`` = ``TRACE_DESC``...).

Where the inputs come from: a checkout of strace's repository (github.com/strace/strace), run as
``python3 tools/gen_syscall_classes.py --strace-src STRACE``.  Files read, as strace's build includes
them for ARM EABI:

* ``src/linux/arm/syscallent.h`` - numbers 0-402 and the ARM private calls, which strace shuffles to
  ``ARM_FIRST_SHUFFLED_SYSCALL + 1 + n`` (500 + 1 + n under ``__ARM_EABI__``) for the kernel's
  ``__ARM_NR_BASE + n`` (0x0f0000 + n, arch/arm/include/uapi/asm/unistd.h);
* ``src/linux/32/syscallent-common-32.h`` and ``src/linux/generic/syscallent-common.h`` - 403 on
  (``BASE_NR`` is 0 for ARM);
* ``src/sysent_shorthand_defs.h`` - the shorthand -> class name map.

Only rows whose number is in qppsuite's own table (``arm_syscalls.tsv``) are written, and a row whose
name differs from that table's is a stop: the two must name the same call.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from qppsuite.plugins.syscalls.table import SYSCALLS  # noqa: E402

OUT = REPO / "qppsuite" / "plugins" / "syscalls" / "strace_classes.tsv"
ARM_TABLE = "src/linux/arm/syscallent.h"
COMMON_32 = "src/linux/32/syscallent-common-32.h"
COMMON = "src/linux/generic/syscallent-common.h"
SHORTHANDS = "src/sysent_shorthand_defs.h"
ARM_NR_BASE = 0x0F0000
ARM_FIRST_SHUFFLED_SYSCALL = 500  # src/linux/arm/syscallent.h under __ARM_EABI__
#: Where strace names a call after its generic entry and the kernel's syscall.tbl (qppsuite's name) after
#: ARM's own: 270 is sys_arm_fadvise64_64, 341 sys_sync_file_range2 under the name arm_sync_file_range.
STRACE_NAMES = {"arm_fadvise64_64": "fadvise64_64", "arm_sync_file_range": "sync_file_range2"}

_ROW = re.compile(
    r"^\[\s*(?P<index>[^\]]+?)\s*\]\s*=\s*\{\s*(?P<nargs>\d+)\s*,\s*(?P<flags>[^,]+?)\s*,\s*SEN\(\w+\)\s*,"
    r"\s*\"(?P<name>\w+)\"\s*\}"
)
_SHORTHAND = re.compile(r"^#\s*define\s+(?P<short>[A-Z]+)\s+(?P<long>[A-Z_]+)\s*$")
#: strace's class flags; the others of the flags column (NF, MA, SI, CST, CC, TSD, PU's kin) say how
#: strace decodes a call, not what it is about, and are left out.
CLASSES = (
    "TRACE_FILE",
    "TRACE_IPC",
    "TRACE_NETWORK",
    "TRACE_PROCESS",
    "TRACE_SIGNAL",
    "TRACE_DESC",
    "TRACE_MEMORY",
    "TRACE_STAT_LIKE",
    "TRACE_STATFS_LIKE",
    "TRACE_PURE",
    "TRACE_CREDS",
    "TRACE_CLOCK",
)


def _shorthands(text: str) -> dict[str, str]:
    """``TD`` -> ``TRACE_DESC``, from the non-test half of sysent_shorthand_defs.h."""
    real = text.split("#else", 1)[1]
    return {m["short"]: m["long"] for line in real.splitlines() if (m := _SHORTHAND.match(line.strip()))}


def _number(index: str) -> int:
    """An index of strace's table -> the kernel's syscall number on ARM EABI."""
    index = index.replace("BASE_NR +", "").strip()
    if index.startswith("ARM_FIRST_SHUFFLED_SYSCALL"):
        offset = sum(int(n) for n in re.findall(r"\d+", index))  # "ARM_FIRST_SHUFFLED_SYSCALL+1+2"
        return ARM_NR_BASE + offset - 1 if offset else -1  # offset 0 is cmpxchg: gone from the kernel
    return int(index)


def _shown(number: int) -> str:
    """Numbers as arm_syscalls.tsv writes them: decimal, the ARM private calls in hex."""
    return f"{number:#x}" if number >= ARM_NR_BASE else str(number)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strace-src", type=Path, required=True, help="a checkout of strace's repository")
    args = parser.parse_args()
    src: Path = args.strace_src
    names = _shorthands((src / SHORTHANDS).read_text())
    rows: dict[int, tuple[str, list[str]]] = {}
    sums = []
    for rel in (ARM_TABLE, COMMON_32, COMMON, SHORTHANDS):
        data = (src / rel).read_bytes()
        sums.append(f"#   {rel}  {hashlib.sha256(data).hexdigest()}")
        if rel == SHORTHANDS:
            continue
        for line in data.decode().splitlines():
            m = _ROW.match(line.strip())
            if m is None:
                continue
            number = _number(m["index"])
            flags = [] if m["flags"] == "0" else [names[f.strip()] for f in m["flags"].split("|")]
            if number >= 0:
                rows.setdefault(number, (m["name"], [f for f in CLASSES if f in flags]))
    try:
        version = subprocess.run(
            ["git", "-C", str(src), "describe", "--tags"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        version = "unknown version"
    out = [
        "# ARM EABI system calls and strace's trace classes (strace -e trace=%file...): number, name, classes.",
        "# GENERATED by tools/gen_syscall_classes.py - do not edit; change the generator and rerun it.",
        f"# Source: strace {version} (github.com/strace/strace), LGPL-2.1-or-later data.",
        "# Inputs (path in strace's tree, sha256):",
        *sums,
    ]
    for number, spec in sorted(SYSCALLS.items()):
        if number not in rows:
            out.append(f"{_shown(number)}\t{spec.name}\t")
            continue
        name, classes = rows[number]
        if name != spec.name and STRACE_NAMES.get(spec.name) != name:
            raise SystemExit(f"number {number}: strace names it {name}, qppsuite's table {spec.name}")
        out.append(f"{_shown(number)}\t{spec.name}\t{'|'.join(classes)}")
    OUT.write_text("\n".join(out) + "\n")
    print(f"wrote {OUT} ({len(SYSCALLS)} calls, {sum(1 for n in SYSCALLS if n in rows)} classed by strace)")


if __name__ == "__main__":
    main()
