"""The core's events, and the ``core`` plugin that publishes them through QPP.

Plugins see the guest only through these callbacks, registered like any other
plugin's: ``qpp.register("core", "on_svc", fn, owner=...)``.  Until a plugin
host attaches, every event is a falsy no-op, so a bare machine pays one truth
test per event and builds no event objects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from qppsuite.core.cpu import ExceptionEvent
from qppsuite.core.qpp import CallbackSpec, Plugin

if TYPE_CHECKING:
    from qppsuite.core.machine import Machine


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

    def __call__(self, **kwargs: Any) -> None:
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


CORE_CALLBACKS = (
    CallbackSpec("on_start", "the guest is about to run"),
    CallbackSpec("on_stop", "the guest stopped, for this reason", reason=StopReason),
    CallbackSpec("on_svc", "a system-call instruction is about to be taken in user mode", event=SvcEvent),
    CallbackSpec("on_exception", "an exception other than a system call is taken", event=ExceptionEvent),
    CallbackSpec("on_asid_change", "TTBR0 changed: another process's page tables", switch=AddressSpaceSwitch),
    CallbackSpec("on_console", "bytes the guest wrote to its console (ttyAMA0), as the UART sent them", data=bytes),
)
CORE_EVENTS = tuple(spec.name for spec in CORE_CALLBACKS)


class CorePlugin(Plugin):
    """The machine itself, as a plugin: it creates the core event callbacks."""

    name = "core"
    description = "The emulated machine: system calls, exceptions, address-space switches, console, start/stop"
    callbacks: ClassVar[tuple[CallbackSpec, ...]] = CORE_CALLBACKS

    def __init__(self, machine: Machine) -> None:
        self._machine = machine

    def load(self) -> None:
        events = self._machine.events
        for event in CORE_EVENTS:
            setattr(events, event, self.callback(event))
