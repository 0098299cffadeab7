"""The system call a task is inside, from what the kernel saved when it entered (``/proc/PID/syscall``'s view).

On entry from user mode the kernel pushes the user registers as ``struct pt_regs``
(``uregs[18]``: r0-r12, sp, lr, pc, cpsr, ORIG_r0; arch/arm/include/uapi/asm/ptrace.h)
at the top of the task's kernel stack, ``task_pt_regs()`` (arch/arm/include/asm/processor.h).
``vector_swi`` (arch/arm/kernel/entry-common.S) stores the call's r0 in ``ORIG_r0`` and its
number (r7, ARM EABI) in ``thread_info`` (on every call from Linux 5.15; see
:class:`~qppsuite.plugins.osi_linux.layout.UserRegsLayout`); an interrupt or abort from user mode
(``usr_entry``, entry-armv.S) stores -1 in ``ORIG_r0`` and leaves the number of the task's last call.
"""

import struct
from collections.abc import Callable

from qppsuite.plugins.osi_linux.model import OsiSyscall
from qppsuite.plugins.osi_linux.tasks import TaskReader

PT_REGS_WORDS = 18
ARM_R7, ARM_SP, ARM_PC, ARM_CPSR, ARM_ORIG_R0 = 7, 13, 15, 16, 17
NOT_A_SYSCALL = 0xFFFFFFFF
"""``ORIG_r0`` of an entry from user mode that is no system call (``usr_entry``)."""
CPSR_MODE_MASK = 0x1F
MODE_USR = 0x10
CPSR_T = 0x20

#: ``read_code(pc, thumb)``: the instruction at ``pc`` in the task's address space (a halfword in Thumb), or None.
CodeReader = Callable[[int, bool], int | None]


def is_svc(insn: int | None, thumb: bool) -> bool:
    """``SVC`` (ARM ARM A8.8.228): Thumb ``0xDFxx``; ARM ``cond 1111 imm24`` with a condition other than 0b1111."""
    if insn is None:
        return False
    if thumb:
        return insn >> 8 == 0xDF
    return insn >> 28 != 0xF and insn >> 24 & 0xF == 0xF


def saved_syscall(tasks: TaskReader, task: int, read_code: CodeReader) -> OsiSyscall | None:
    """The call whose entry registers ``task``'s kernel stack holds, or None (see ``OsiLinux.get_syscall``).

    The saved cpsr must be user mode, the recorded number the saved r7 (where the kernel records one at
    every call; elsewhere the number is the saved r7, as ARM EABI passes it), ``ORIG_r0`` not the -1 of
    another kind of entry (unless r0 is -1 too: ``wait4(-1, ...)``), and the instruction before the saved pc
    an SVC.  The caller knows the task is a user task that is not running in user mode now.
    """
    layout, mem = tasks.layout.user_regs, tasks.mem
    if layout is None:
        return None
    stack = mem.u32(task + layout.task_stack)
    if stack is None or not tasks.is_kernel_pointer(stack):
        return None
    raw = mem.read(stack + layout.pt_regs, 4 * PT_REGS_WORDS)
    number = mem.u32((task if layout.thread_info_in_task else stack) + layout.syscall)
    if raw is None or number is None:
        return None
    regs = struct.unpack(f"<{PT_REGS_WORDS}I", raw)
    cpsr, orig_r0 = regs[ARM_CPSR], regs[ARM_ORIG_R0]
    if not layout.records_number:
        number = regs[ARM_R7]
    if cpsr & CPSR_MODE_MASK != MODE_USR or number != regs[ARM_R7]:
        return None
    if orig_r0 == NOT_A_SYSCALL and regs[0] != NOT_A_SYSCALL:
        return None
    thumb = bool(cpsr & CPSR_T)
    pc = regs[ARM_PC] - (2 if thumb else 4)
    if not is_svc(read_code(pc, thumb), thumb):
        return None
    return OsiSyscall(number, (orig_r0, *regs[1:7]), pc, thumb, regs[ARM_SP], stack)
