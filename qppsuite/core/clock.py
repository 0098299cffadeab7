"""Virtual time: the emulator, not the host, owns the clock.

Time is a pure function of the instructions executed plus the idle time the
machine skipped at WFI, so two runs of the same image see the same timer
values at the same instructions and print byte-identical consoles.
"""

from collections.abc import Callable

from qppsuite.core.devices.base import DeviceStateError, state_int

#: Virtual nanoseconds per guest instruction: a 250 MIPS guest, close to what
#: the engine really achieves, so guest timeouts feel like wall time.
NS_PER_INSN = 4


class VirtualClock:
    """``now_ns() = (retired + in_flight()) * NS_PER_INSN + skipped``.

    ``in_flight`` reads the engine's live counter for the running quantum, so a
    timer read in the middle of a quantum sees time move.
    """

    def __init__(self, in_flight: Callable[[], int], ns_per_insn: int = NS_PER_INSN) -> None:
        self.ns_per_insn = ns_per_insn
        self.retired = 0
        self.skipped_ns = 0
        self._in_flight = in_flight

    @property
    def insn_count(self) -> int:
        """Instructions executed so far, including the running quantum."""
        return self.retired + self._in_flight()

    def now_ns(self) -> int:
        return (self.retired + self._in_flight()) * self.ns_per_insn + self.skipped_ns

    def retire(self, executed: int) -> None:
        """Account a finished quantum (the engine's counter restarts at every quantum)."""
        self.retired += executed

    def insns_until(self, deadline_ns: int) -> int:
        """Instructions to run before virtual time reaches ``deadline_ns`` (at least 1)."""
        now = self.retired * self.ns_per_insn + self.skipped_ns
        return max(1, -(-(deadline_ns - now) // self.ns_per_insn))

    def skip_to(self, deadline_ns: int) -> None:
        """Jump over idle time (WFI): costs no host time."""
        now = self.retired * self.ns_per_insn + self.skipped_ns
        if deadline_ns > now:
            self.skipped_ns += deadline_ns - now

    def get_state(self) -> dict[str, int]:
        return {"retired": self.retired, "skipped_ns": self.skipped_ns, "ns_per_insn": self.ns_per_insn}

    def set_state(self, state: dict[str, int]) -> None:
        """Restore :meth:`get_state`; :class:`DeviceStateError` for a field that is no count this clock can
        hold (a negative or non-integer count, another rate than this machine's)."""
        retired = state_int(state, "clock", "retired", 63)
        skipped_ns = state_int(state, "clock", "skipped_ns", 63)
        if state_int(state, "clock", "ns_per_insn", 63) != self.ns_per_insn:
            raise DeviceStateError(f"clock state field 'ns_per_insn' is not this machine's {self.ns_per_insn}")
        self.retired, self.skipped_ns = retired, skipped_ns
