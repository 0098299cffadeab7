"""The core's events, and the ``core`` plugin that publishes them through QPP.

Plugins see the guest only through these callbacks, registered like any other
plugin's: ``qpp.register("core", "on_svc", fn, owner=...)``.  Until a plugin
host attaches, every event is a falsy no-op, so a bare machine pays one truth
test per event and builds no event objects.
"""

from dataclasses import dataclass
from typing import Any, ClassVar

from qppsuite.core.qpp import Plugin

CORE_EVENTS = ("on_start", "on_stop", "on_svc", "on_exception", "on_asid_change", "on_console")


@dataclass(frozen=True, slots=True)
class SvcEvent:
    """A system-call instruction about to be taken: ``pc`` is the SVC itself."""

    pc: int
    thumb: bool
    insn_count: int


@dataclass(frozen=True, slots=True)
class AddressSpaceSwitch:
    """TTBR0 changed: the guest switched to another process's page tables.

    Seen where the machine next runs Python after the switch: the next
    exception (a system call, an abort, an interrupt) or the end of the
    quantum.  The engine's MMU reads TTBR0 itself, so user code of the new
    address space may run before the event, but no system call or abort of
    it is reported before it.
    """

    old_ttbr0: int
    new_ttbr0: int
    contextidr: int
    insn_count: int


@dataclass(frozen=True, slots=True)
class StopReason:
    """Why a run ended. ``kind`` is one of poweroff, reset, max_insns, timeout, panic, hang, error, interrupted,
    plugin, initramfs (the kernel could not unpack the initrd: :mod:`qppsuite.core.rootfs`), detached (the user
    left an interactive console), or (a replay that did not reproduce its recording) diverged."""

    kind: str
    message: str
    insn_count: int

    @property
    def ok(self) -> bool:
        return self.kind == "poweroff"


class _Silent:
    """A callback with nothing registered: falsy, and calling it does nothing."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def __call__(self, *args: Any) -> None:
        return None


_SILENT = _Silent()


class CoreEvents:
    """The machine's event outlets; each is a QPP callback once a host attaches."""

    def __init__(self) -> None:
        self.on_start: Any = _SILENT
        self.on_stop: Any = _SILENT
        self.on_svc: Any = _SILENT
        self.on_exception: Any = _SILENT
        self.on_asid_change: Any = _SILENT
        self.on_console: Any = _SILENT


class CorePlugin(Plugin):
    """The machine itself, as a plugin: it creates the core event callbacks."""

    name = "core"
    description = "The emulated machine: system calls, exceptions, address-space switches, console, start/stop"
    callbacks: ClassVar[tuple[str, ...]] = CORE_EVENTS

    def load(self) -> None:
        events = self.machine.events
        for event in CORE_EVENTS:
            setattr(events, event, self.callback(event))
