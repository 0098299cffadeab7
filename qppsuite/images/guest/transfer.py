"""The channel's bulk programs: two static ARM executables that move file bytes by hypercall, not by UART.

The channel's serial line costs two device reads per byte (about 7 µs of host
Python each byte, and the guest's tty layer per character: 150 KB/s).  For a
large file the agent runs one of these instead, and each of its hypercalls
moves up to :data:`CHUNK` bytes between a buffer in the program and the host
(:mod:`qppsuite.core.hypercall`)::

    qpp-recv > FILE        loop: r0 = hypercall(FROM_HOST, buf, CHUNK); 0 ends, < 0 fails;
                                 write(1, buf, r0) must write it all
    qpp-send < FILE        loop: n = read(0, buf, CHUNK); hypercall(TO_HOST, buf, n); n = 0 ends
                           (the empty hypercall tells the host the file is over)

Both first map their buffer with ``mmap2(NULL, CHUNK, PROT_READ|PROT_WRITE,
MAP_PRIVATE|MAP_ANONYMOUS|MAP_POPULATE, -1, 0)``, so the host finds every page
present and writable, and exit 0 at the end, 1 on any failure.  The guest has no
compiler, so they are assembled here, by hand: encodings from the ARM ARM
(A8.8.105 MOVW, A8.8.106 MOVT, A8.8.102 MOV, A8.8.115 MVN, A8.8.37 CMP, A8.8.18
B, A8.8.228 SVC, A8.8.247 UDF); system call numbers from
arch/arm/tools/syscall.tbl; the ELF layout from the System V ABI.
"""

import struct

from qppsuite.core.hypercall import FROM_HOST, HYPERCALL_A32, TO_HOST

#: Bytes moved by one hypercall (the programs' buffer).
CHUNK = 0x10000
#: Where the programs' single PT_LOAD segment is mapped.
BASE = 0x10000
ELF_HEADER_SIZE = 52
PROGRAM_HEADER_SIZE = 32
#: Where the code starts, after the ELF header and the two program headers (the entry point).
CODE_START = BASE + 52 + 2 * 32
#: The program header that gives the stack's permissions (without it Linux warns of an executable stack).
PT_GNU_STACK = 0x6474E551
_EXIT, _READ, _WRITE, _MMAP2 = 1, 3, 4, 192
_MAP_PRIVATE_ANONYMOUS_POPULATE = 0x02 | 0x20 | 0x8000
SVC = 0xEF000000
_MOV_R1_R6 = 0xE1A01006
_MOV_R2_R0 = 0xE1A02000
_MOV_R6_R0 = 0xE1A06000
_CMP_R0_0 = 0xE3500000
_CMP_R0_R2 = 0xE1500002
#: Condition fields (ARM ARM A8.3).
EQ, NE, LT, AL = 0x0, 0x1, 0xB, 0xE


def movw(rd: int, imm: int) -> int:
    """``movw rd, #imm`` (imm < 65536)."""
    return 0xE3000000 | ((imm >> 12) & 0xF) << 16 | rd << 12 | (imm & 0xFFF)


def movt(rd: int, imm: int) -> int:
    """``movt rd, #imm``: the top half of rd."""
    return 0xE3400000 | ((imm >> 12) & 0xF) << 16 | rd << 12 | (imm & 0xFFF)


class Assembler:
    """A32 words with forward branches to labels, resolved by :meth:`code`."""

    def __init__(self) -> None:
        self.words: list[int] = []
        self.labels: dict[str, int] = {}
        self.branches: list[tuple[int, int, str]] = []

    def emit(self, *words: int) -> None:
        self.words.extend(words)

    def label(self, name: str) -> None:
        self.labels[name] = len(self.words)

    def branch(self, cond: int, target: str) -> None:
        self.branches.append((len(self.words), cond, target))
        self.words.append(0)

    def call(self, number: int) -> None:
        """``mov r7, #number ; svc #0``: a system call (EABI)."""
        self.emit(movw(7, number), SVC)

    def code(self) -> bytes:
        for at, cond, target in self.branches:
            offset = (self.labels[target] - (at + 2)) & 0xFFFFFF  # words from this instruction's PC + 8
            self.words[at] = cond << 28 | 0x0A000000 | offset
        return struct.pack(f"<{len(self.words)}I", *self.words)


def _program(direction: int) -> bytes:
    asm = Assembler()
    # buffer = mmap2(NULL, CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0)
    asm.emit(movw(0, 0), movw(1, 0), movt(1, CHUNK >> 16), movw(2, 3), movw(3, _MAP_PRIVATE_ANONYMOUS_POPULATE))
    asm.emit(0xE3E04000, movw(5, 0))  # mvn r4, #0 ; movw r5, #0
    asm.call(_MMAP2)
    asm.emit(_MOV_R6_R0)
    asm.label("loop")
    if direction == FROM_HOST:
        asm.emit(movw(0, FROM_HOST), _MOV_R1_R6, movw(2, 0), movt(2, CHUNK >> 16), HYPERCALL_A32, _CMP_R0_0)
        asm.branch(EQ, "done")
        asm.branch(LT, "fail")
        asm.emit(_MOV_R2_R0, _MOV_R1_R6, movw(0, 1))  # write(1, buffer, n)
        asm.call(_WRITE)
        asm.emit(_CMP_R0_R2)
        asm.branch(NE, "fail")
    else:
        asm.emit(movw(0, 0), _MOV_R1_R6, movw(2, 0), movt(2, CHUNK >> 16))  # read(0, buffer, CHUNK)
        asm.call(_READ)
        asm.emit(_CMP_R0_0)
        asm.branch(LT, "fail")
        asm.emit(_MOV_R2_R0, movw(0, TO_HOST), _MOV_R1_R6, HYPERCALL_A32)  # n = 0 at the end: "that is all"
        asm.emit(_CMP_R0_0)
        asm.branch(LT, "fail")
        asm.emit(0xE3520000)  # cmp r2, #0
        asm.branch(EQ, "done")
    asm.branch(AL, "loop")
    asm.label("done")
    asm.emit(movw(0, 0))
    asm.call(_EXIT)
    asm.label("fail")
    asm.emit(movw(0, 1))
    asm.call(_EXIT)
    return elf_executable(asm.code())


def elf_executable(code: bytes) -> bytes:
    """A minimal static ELF32 ARM executable: one R+X PT_LOAD at :data:`BASE`, entry at the code's start
    (:data:`CODE_START`, after the headers), and a PT_GNU_STACK that keeps the stack non-executable."""
    entry = CODE_START
    size = entry - BASE + len(code)
    ident = b"\x7fELF" + bytes([1, 1, 1, 0]) + bytes(8)  # 32-bit, little-endian, version 1, System V
    header = ident + struct.pack(
        "<HHIIIIIHHHHHH",
        2,  # ET_EXEC
        40,  # EM_ARM
        1,
        entry,
        ELF_HEADER_SIZE,  # program headers follow the ELF header
        0,
        0x05000000,  # EF_ARM_EABI_VER5
        ELF_HEADER_SIZE,
        PROGRAM_HEADER_SIZE,
        2,  # PT_LOAD and PT_GNU_STACK
        40,
        0,
        0,
    )
    load = struct.pack("<IIIIIIII", 1, 0, BASE, BASE, size, size, 5, 0x1000)  # PT_LOAD, R+X
    stack = struct.pack("<IIIIIIII", PT_GNU_STACK, 0, 0, 0, 0, 0, 6, 0x10)  # RW: no executable stack
    return header + load + stack + code


def receiver() -> bytes:
    """``qpp-recv``: the host's bytes (hypercall FROM_HOST) to standard output, until the host says 0."""
    return _program(FROM_HOST)


def sender() -> bytes:
    """``qpp-send``: standard input to the host (hypercall TO_HOST), until end of file."""
    return _program(TO_HOST)
