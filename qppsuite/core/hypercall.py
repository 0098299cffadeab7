"""Hypercalls: a guest program takes bytes from the host, or gives it bytes, with one undefined instruction.

PANDA's guest hypercalls, on this board.  A user-mode process executes ``UDF
#0x5150`` (A32 only: ARM ARM A8.8.247, permanently undefined, so no program
uses it for anything else) with::

    r0 = FROM_HOST (1) or TO_HOST (2)
    r1 = a buffer's virtual address in the calling process
    r2 = its length in bytes (at most MAX_LENGTH is moved)

and continues at the next instruction with r0 = the bytes moved, 0 when the
host has nothing more (FROM_HOST), or a negative errno: -EFAULT for a buffer
the host cannot read or write through the process's page tables, -EINVAL for
another operation.  The instruction retires like any other.  Only a run with a
source of FROM_HOST bytes (:attr:`qppsuite.core.machine.Machine.hypercall_source`:
every run through the channel, for its bulk transfers,
:mod:`qppsuite.images.guest.transfer`) sees them; otherwise, and from any other
mode, it is undefined as on hardware (SIGILL).

FROM_HOST bytes are guest input: the machine stamps each answer with the
instruction count (port :data:`PORT`, zero-length answers included, since they
end a file) and a replay answers from its recording.  TO_HOST bytes are guest
output (:attr:`qppsuite.core.machine.Machine.hypercall_sink`; a TO_HOST of length 0 says
the guest program has no more).
"""

from collections.abc import Callable

#: The immediate that marks the hypercall instruction ("QP").
IMM16 = 0x5150
#: ``UDF #IMM16`` in A32: cond 1110, 0111 1111, imm12, 1111, imm4.
HYPERCALL_A32 = 0xE7F000F0 | (IMM16 >> 4) << 8 | (IMM16 & 0xF)
FROM_HOST = 1
TO_HOST = 2
#: The most bytes one hypercall moves.
MAX_LENGTH = 1 << 20
#: Errno values returned negated in r0 (include/uapi/asm-generic/errno-base.h).
EFAULT = 14
EINVAL = 22
#: The input port name of FROM_HOST bytes in stamps and recordings.
PORT = "bulk"

#: The host's source of FROM_HOST bytes: called with the most wanted, returns the next bytes (b"": none).
Source = Callable[[int], bytes]
