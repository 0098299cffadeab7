"""A static ARM Linux program that makes system calls from as many distinct addresses as asked.

The guest has no compiler, so the program is assembled here, by hand, into a
minimal ELF32 executable (one PT_LOAD segment, no libc)::

    _start: movw r4, #rounds
    outer:  movw r5, #:lower16:stubs ; movt r5, #:upper16:stubs
            movw r6, #sites
    inner:  mov r7, #20              @ getpid
            blx r5                   @ stub i: svc #0 ; bx lr
            add r5, r5, #8
            subs r6, r6, #1
            bne inner
            subs r4, r4, #1
            bne outer
            mov r0, #0 ; mov r7, #1 ; svc #0   @ exit(0)
    stubs:  sites x (svc #0 ; bx lr)

So it makes ``rounds * sites`` getpid calls, from ``sites`` distinct SVC
addresses, then exits.  Encodings are from the ARM ARM (A8.8.105 MOVW, A8.8.106
MOVT, A8.8.27 BLX register, A8.8.228 SVC); the ELF wrapper is the channel's
(:func:`qppsuite.images.guest.transfer.elf_executable`).
``uudecode_command`` wraps it as a shell command for busybox's uudecode.

Usage: ``python tools/arm_svc_program.py SITES ROUNDS > prog`` writes the ELF.
"""

import base64
import struct
import sys

from qppsuite.images.guest.transfer import CODE_START, elf_executable, movt, movw

GETPID = 20
EXIT = 1


def _bne(at: int, target: int) -> int:
    return 0x1A000000 | (((target - (at + 8)) >> 2) & 0xFFFFFF)


def program(sites: int, rounds: int) -> bytes:
    """The ELF: ``rounds`` passes over ``sites`` stubs, each an SVC at its own address (both < 65536)."""
    if not (0 < sites < 1 << 16 and 0 < rounds < 1 << 16):
        raise ValueError("sites and rounds must be between 1 and 65535")
    entry = CODE_START
    code_len = 14 * 4
    stubs = entry + code_len
    words = [movw(4, rounds)]
    outer = entry + 4 * len(words)
    words += [movw(5, stubs & 0xFFFF), movt(5, stubs >> 16), movw(6, sites)]
    inner = entry + 4 * len(words)
    words += [0xE3A07000 | GETPID, 0xE12FFF35, 0xE2855008, 0xE2566001]
    words.append(_bne(entry + 4 * len(words), inner))
    words.append(0xE2544001)
    words.append(_bne(entry + 4 * len(words), outer))
    words += [0xE3A00000, 0xE3A07000 | EXIT, 0xEF000000]
    assert len(words) * 4 == code_len
    code = struct.pack(f"<{len(words)}I", *words) + struct.pack("<II", 0xEF000000, 0xE12FFF1E) * sites
    return elf_executable(code)


def uudecode_command(data: bytes, path: str) -> str:
    """A shell command that writes ``data`` to ``path`` as an executable (busybox uudecode, base64 form)."""
    encoded = base64.encodebytes(data).decode()
    return f"uudecode -o {path} <<'EOF'\nbegin-base64 755 {path}\n{encoded}====\nEOF\n"


if __name__ == "__main__":
    sys.stdout.buffer.write(program(int(sys.argv[1]), int(sys.argv[2])))
