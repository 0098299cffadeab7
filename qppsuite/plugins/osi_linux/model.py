"""What osi_linux answers with: plain frozen values, safe to keep after the guest has moved on.

Every answer is a snapshot of guest kernel memory at one instruction.  The
guest's memory is untrusted, so a value read through a broken or garbage
pointer is not guessed: the affected record carries ``partial=True`` and the
fields it could not read hold neutral values (0, "" or None).

Names and paths are guest bytes: their ``str`` fields are text for display, each byte sequence that is
not UTF-8 replaced by U+FFFD, and the bytes themselves are kept alongside (``raw_name``, ``raw_path``)
whenever that replaced any.  ``name_bytes``/``path_bytes`` give the bytes either way, and
``stored_name``/``stored_path`` the form the run database stores guest text in: the text, or
``{"hex": "<every byte>"}`` when it is not UTF-8 (the syscalls plugin's ``text_or_hex``).
"""

from dataclasses import dataclass, field
from typing import Any


def split_text(data: bytes) -> tuple[str, bytes | None]:
    """``data`` as display text (U+FFFD for each sequence that is not UTF-8) and, when that lost bytes,
    ``data`` itself; else ``(text, None)``."""
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace"), data


def _stored(text: str, raw: bytes | None) -> str | dict[str, Any]:
    return text if raw is None else {"hex": raw.hex()}


class _Comm:
    """A task's name (``comm``) as text, and as the bytes the kernel holds when they are not UTF-8."""

    name: str
    raw_name: bytes | None

    @property
    def name_bytes(self) -> bytes:
        """``comm`` as the kernel holds it (up to its NUL)."""
        return self.raw_name if self.raw_name is not None else self.name.encode()

    @property
    def stored_name(self) -> str | dict[str, Any]:
        """``name`` as the run database stores it: the text, or ``{"hex": ...}`` of bytes not UTF-8."""
        return _stored(self.name, self.raw_name)


class _Path:
    """A path as text, and as the bytes the kernel holds when they are not UTF-8."""

    path: str
    raw_path: bytes | None

    @property
    def path_bytes(self) -> bytes:
        """The path as the kernel gives it (``/proc/PID/maps``, ``readlink``), in bytes."""
        return self.raw_path if self.raw_path is not None else self.path.encode()

    @property
    def stored_path(self) -> str | dict[str, Any]:
        """``path`` as the run database stores it: the text, or ``{"hex": ...}`` of bytes not UTF-8."""
        return _stored(self.path, self.raw_path)


@dataclass(frozen=True)
class OsiProcess(_Comm):
    """A thread group (what ``ps`` lists), seen through its leader task.

    ``asid`` is the physical address of ``mm->pgd``, i.e. the TTBR0 base the
    process runs with (compare it with ``AddressSpaceSwitch.new_ttbr0 &
    ~0x3fff``); kernel threads have no mm and so no ``asid``.
    ``start_time`` is ``task_struct.start_time`` (ns of monotonic time).
    ``state`` is the leader's state letter exactly as ``/proc/PID/stat`` shows it
    (R S D T t X Z P I, fs/proc/array.c); ``exit_code`` is a zombie's wait status
    (``task_struct.exit_code``: exit status << 8, or the killing signal), None otherwise.
    """

    pid: int
    tgid: int
    ppid: int
    name: str
    asid: int | None
    task: int
    start_time: int
    is_kernel_thread: bool
    partial: bool = False
    state: str = "R"
    exit_code: int | None = None
    raw_name: bytes | None = field(default=None, compare=False)  # comm's bytes when ``name`` lost some


@dataclass(frozen=True)
class OsiThread(_Comm):
    """One task (a thread); ``pid`` is its thread group's id (tgid), ``tid`` its own; ``state`` as for a process."""

    tid: int
    pid: int
    name: str
    task: int
    partial: bool = False
    state: str = "R"
    raw_name: bytes | None = field(default=None, compare=False)  # comm's bytes when ``name`` lost some


@dataclass(frozen=True)
class OsiMapping(_Path):
    """One line of ``/proc/PID/maps``: ``perms`` like ``r-xp``, ``path`` like the kernel names it.

    ``path`` is a file's full path, ``[heap]``, ``[stack]``, ``[vdso]``,
    ``[vvar]``, ``[sigpage]``, ``[vectors]``, ``[anon:NAME]``, or "" for an
    anonymous mapping.  ``truncated``: the file's path is longer than PATH_MAX
    (4096 bytes) and ``path`` is ``.../`` and its deepest components.
    """

    start: int
    end: int
    perms: str
    offset: int
    path: str
    partial: bool = False
    truncated: bool = False
    raw_path: bytes | None = field(default=None, compare=False)  # the path's bytes when ``path`` lost some


@dataclass(frozen=True)
class OsiFile(_Path):
    """An open file of a process: ``path`` as ``readlink /proc/PID/fd/N`` gives it.

    ``truncated``: the path is longer than PATH_MAX (4096 bytes, where the
    kernel's own readlink fails with ENAMETOOLONG); ``path`` is then ``.../``
    and its deepest components.  ``partial``: a pointer on the way was bad
    and ``path`` is what could be read.
    """

    path: str
    truncated: bool = False
    partial: bool = False
    raw_path: bytes | None = field(default=None, compare=False)  # the path's bytes when ``path`` lost some


@dataclass(frozen=True)
class OsiModule:
    """A loaded kernel module; ``size`` counts core and init sections like ``/proc/modules``."""

    name: str
    base: int
    size: int


@dataclass(frozen=True)
class OsiSyscall:
    """The system call a thread is inside, as ``/proc/PID/syscall`` reports it, from what the kernel saved.

    On entry from user mode (arch/arm/kernel/entry-common.S, ``vector_swi``) the kernel pushes the user
    registers as ``struct pt_regs`` at the top of the thread's kernel stack (``task_pt_regs()``) and keeps
    the call's number in ``thread_info``.  ``number`` is that number (r7, ARM EABI); ``args`` are the six
    arguments and r6 as the call got them (``ARM_ORIG_r0``, then r1-r6); ``pc`` is the SVC instruction
    (the saved pc is the instruction after it) and ``thumb`` its instruction set; ``sp`` the user stack
    pointer; ``stack`` the base of the thread's kernel stack (``task_struct.stack``).
    """

    number: int
    args: tuple[int, ...]
    pc: int
    thumb: bool
    sp: int
    stack: int
