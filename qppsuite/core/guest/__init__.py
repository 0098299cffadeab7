"""The guest as plugins see it: the typed facade a plugin reaches as ``self.machine``.

A plugin reads and changes the guest only through this facade (registers by name, guest memory, hooks,
time, stopping the run), never through the engine or the machine's internals: the built-in plugins, which
users copy, import nothing else from the core (``tests/test_plugin_imports.py`` checks it).  The host
(``qppsuite run``, a test) makes one :class:`Guest` for its :class:`~qppsuite.core.machine.Machine` and
hands it to :class:`~qppsuite.core.qpp.QPP`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qppsuite.core.guest.hooks import FailureSink, Hooks
from qppsuite.core.guest.memory import GuestMemory
from qppsuite.core.guest.registers import Registers
from qppsuite.core.memory import GuestMemoryError

if TYPE_CHECKING:
    from qppsuite.core.machine import Machine

__all__ = ["Guest", "GuestMemory", "GuestMemoryError", "Hooks", "Registers"]


class Guest:
    """One guest machine: :attr:`registers`, :attr:`memory`, :attr:`hooks`, its time, and its stop."""

    __slots__ = ("_machine", "hooks", "memory", "registers")

    def __init__(self, machine: Machine) -> None:
        self._machine = machine
        #: The CPU's registers by name (:class:`Registers`).
        self.registers = Registers(machine.cpu)
        #: Guest memory, virtual and physical (:class:`GuestMemory`).
        self.memory = GuestMemory(machine.phys, machine.memory, machine.cpu.translation_regs)
        #: Execution hooks and their costs (:class:`Hooks`).
        self.hooks = Hooks(machine)

    def for_plugin(self, owner: str, failed: FailureSink) -> Guest:
        """The same guest as plugin ``owner`` sees it: its hooks report their exceptions through ``failed``
        naming ``owner`` (the plugin manager gives each plugin its own)."""
        view = object.__new__(Guest)
        view._machine = self._machine
        view.registers = self.registers
        view.memory = self.memory
        view.hooks = Hooks(self._machine, owner, failed)
        return view

    @property
    def insn_count(self) -> int:
        """Guest instructions executed so far: the run's deterministic clock (docs/engine.md, "Time")."""
        return self._machine.insn_count

    @property
    def virtual_ns(self) -> int:
        """Virtual time in nanoseconds since power-on, derived from the instruction count."""
        return self._machine.clock.now_ns()

    @property
    def kernel_load_address(self) -> int | None:
        """The physical address the host loaded the kernel image at (a raw Image's ``_text``), or None."""
        layout = getattr(self._machine, "layout", None)
        return getattr(layout, "kernel", None)

    def request_stop(self, kind: str, message: str) -> None:
        """Stop the run at the next chance with this reason (``kind`` "plugin" for a plugin's refusal):
        the run's stop reason then carries ``message``."""
        self._machine.request_stop(kind, message)
