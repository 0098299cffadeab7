"""ARM SP804 dual timer (DDI0271): Linux's clockevent (timer 1) and clocksource/sched_clock (timer 2).

Counters are never ticked.  Each running counter is a pure function of virtual
time: it held ``count`` at the tick boundary ``base_ns`` and has counted down
since, so TimerValue (read very often through sched_clock) is a little
arithmetic, and the machine can skip idle time straight to
:meth:`Sp804.next_deadline_ns`.

Counting, as this model defines it (the TRM's description, made exact):

* Loading N starts the count at N; it decrements once per (prescaled) TIMCLK
  tick and reaches 0 after N ticks, which raises TimerRIS (loading 0 raises it
  at once).
* On the tick after 0 the counter reloads: from TimerLoad/TimerBGLoad in
  periodic mode (period N+1 ticks), from the maximum (0xFFFF or 0xFFFFFFFF) in
  free-running mode; in one-shot mode it halts at 0.
* Zero times are computed from the period, never from when :meth:`Sp804.update`
  ran, so periodic interrupts do not drift however late the machine looks.
* A TimerLoad write restarts the count at the write; a TimerBGLoad write only
  changes the next reload.  In 16-bit mode the counter runs on the low 16 bits
  of the loaded value; a stopped counter reads back all 32 bits (0xFFFFFFFF at
  reset, as the TRM gives).  A prescale change restarts the tick phase at the
  write (the partial tick is lost, as in QEMU).
"""

from collections.abc import Mapping
from typing import Any

from qppsuite.core.devices.base import (
    DeviceStateError,
    IrqLine,
    VirtualNow,
    WordRegisterDevice,
    state_field,
    state_int,
)

# Per-timer registers, relative to the timer's base (timer 1 at 0x00, timer 2 at 0x20).
TimerLoad = 0x00
TimerValue = 0x04
TimerControl = 0x08
TimerIntClr = 0x0C
TimerRIS = 0x10
TimerMIS = 0x14
TimerBGLoad = 0x18
TIMER1_BASE = 0x00
TIMER2_BASE = 0x20
TIMER_WINDOW = 0x20

# Integration test registers: not modelled (test-harness only).
TimerITCR = 0xF00
TimerITOP = 0xF04

# TimerPeriphID0-3 then TimerPCellID0-3, one byte per word.
TimerPeriphID0 = 0xFE0
TimerPCellID3 = 0xFFC
SP804_ID = (0x04, 0x18, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1)

# TimerControl fields.
TIMER_CTRL_ONESHOT = 1 << 0
TIMER_CTRL_32BIT = 1 << 1
TIMER_CTRL_PRESCALE_SHIFT = 2
TIMER_CTRL_PRESCALE_MASK = 3 << TIMER_CTRL_PRESCALE_SHIFT
TIMER_CTRL_IE = 1 << 5
TIMER_CTRL_PERIODIC = 1 << 6
TIMER_CTRL_ENABLE = 1 << 7
# Bit 4 is reserved; bits 31:8 are reserved.
TIMER_CTRL_WRITABLE = (
    TIMER_CTRL_ONESHOT
    | TIMER_CTRL_32BIT
    | TIMER_CTRL_PRESCALE_MASK
    | TIMER_CTRL_IE
    | TIMER_CTRL_PERIODIC
    | TIMER_CTRL_ENABLE
)
# TimerPre encodings 00, 01, 10 -> divide by 1, 16, 256; 11 is undefined (treated as 256).
PRESCALE_DIVISORS = (1, 16, 256, 256)

# Reset values (DDI0271 register summary).
TIMER_CTRL_RESET = TIMER_CTRL_IE
TIMER_VALUE_RESET = 0xFFFFFFFF

#: The board's TIMCLK is a 1 MHz fixed clock: one tick per microsecond of virtual time.
TIMCLK_PERIOD_NS = 1000


class _Counter:
    """One of the two identical timers; the Sp804 owns two and merges their interrupts.

    Invariants while enabled: the counter held ``count`` at ``base_ns`` (a tick
    boundary), ``zero_done`` says whether a :attr:`start` of 0 at ``base_ns`` has
    already raised RIS, and ``next_zero_ns`` is the earliest zero that has not.
    ``count`` keeps all 32 bits that were loaded: Linux loads the clockevent
    while the control register still says 16-bit, then switches to 32-bit.
    """

    control: int
    load: int
    ris: bool
    count: int
    zero_done: bool
    base_ns: int
    next_zero_ns: int | None

    def __init__(self, timclk_ns: int) -> None:
        self.timclk_ns = timclk_ns
        self.reset()

    def reset(self) -> None:
        self.control = TIMER_CTRL_RESET
        self.load = 0
        self.ris = False
        self.count = TIMER_VALUE_RESET
        self.zero_done = False
        self.base_ns = 0
        self.next_zero_ns = None

    # -- derived from control -------------------------------------------------
    @property
    def enabled(self) -> bool:
        return bool(self.control & TIMER_CTRL_ENABLE)

    @property
    def oneshot(self) -> bool:
        return bool(self.control & TIMER_CTRL_ONESHOT)

    @property
    def mask(self) -> int:
        return 0xFFFFFFFF if self.control & TIMER_CTRL_32BIT else 0xFFFF

    @property
    def tick_ns(self) -> int:
        prescale = (self.control & TIMER_CTRL_PRESCALE_MASK) >> TIMER_CTRL_PRESCALE_SHIFT
        return self.timclk_ns * PRESCALE_DIVISORS[prescale]

    @property
    def reload(self) -> int:
        """The value the counter takes on the tick after zero (one-shot mode never reloads)."""
        return self.load & self.mask if self.control & TIMER_CTRL_PERIODIC else self.mask

    @property
    def masked_irq(self) -> bool:
        return self.ris and bool(self.control & TIMER_CTRL_IE)

    # -- time ------------------------------------------------------------------
    @property
    def start(self) -> int:
        """The count at ``base_ns`` as the counter sees it (16-bit mode counts the low half)."""
        return self.count & self.mask

    def value(self, now: int) -> int:
        if not self.enabled:
            return self.count
        start = self.start
        ticks = (now - self.base_ns) // self.tick_ns
        if ticks <= start:
            return start - ticks
        if self.oneshot:
            return 0
        reload = self.reload
        return reload - (ticks - start - 1) % (reload + 1)

    def latch(self, now: int) -> None:
        """Record every zero at or before ``now`` in RIS and find the next one."""
        if self.next_zero_ns is None or now < self.next_zero_ns:
            return
        self.ris = True
        if self.oneshot:
            self.next_zero_ns = None
            return
        tick = self.tick_ns
        period = self.reload + 1
        ticks_now = (now - self.base_ns) // tick
        # Smallest count + n*period beyond ticks_now: later zeros keep the period's phase exactly.
        periods = -(-(ticks_now + 1 - self.start) // period)
        self.next_zero_ns = self.base_ns + (self.start + periods * period) * tick

    def _freeze(self, now: int) -> int:
        """Fold the elapsed ticks into ``count``; returns the tick boundary where it holds."""
        ticks = (now - self.base_ns) // self.tick_ns
        self.count = self.value(now)
        # latch(now) ran first, so a zero at or before now has already been signalled.
        self.zero_done = self.count == 0
        return self.base_ns + ticks * self.tick_ns

    def _start(self, base_ns: int) -> None:
        self.base_ns = base_ns
        if not self.zero_done:
            self.next_zero_ns = base_ns + self.start * self.tick_ns
        elif self.oneshot:
            self.next_zero_ns = None
        else:
            self.next_zero_ns = base_ns + (self.reload + 1) * self.tick_ns

    # -- register writes (the caller latches at now first) ---------------------
    def write_load(self, now: int, value: int) -> None:
        self.load = value
        self.count = value
        self.zero_done = False
        if self.enabled:
            self._start(now)
            self.latch(now)

    def write_bgload(self, now: int, value: int) -> None:
        if self.enabled:
            boundary = self._freeze(now)
            self.load = value
            self._start(boundary)
        else:
            self.load = value

    def write_control(self, now: int, value: int) -> None:
        old_tick = self.tick_ns
        was_enabled = self.enabled
        boundary = self._freeze(now) if was_enabled else now
        self.control = value & TIMER_CTRL_WRITABLE
        if not self.enabled:
            self.next_zero_ns = None
            return
        # A new prescale restarts the tick phase; otherwise keep the boundary so nothing drifts.
        self._start(boundary if was_enabled and self.tick_ns == old_tick else now)
        self.latch(now)

    # -- snapshot ----------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {
            "control": self.control,
            "load": self.load,
            "ris": self.ris,
            "count": self.count,
            "zero_done": self.zero_done,
            "base_ns": self.base_ns,
            "next_zero_ns": self.next_zero_ns,
        }

    def set_state(self, state: Mapping[str, Any], where: str) -> None:
        control = state_int(state, where, "control")
        if control & ~TIMER_CTRL_WRITABLE:
            raise DeviceStateError(f"{where} state field 'control' = {control:#x} sets reserved bits")
        load = state_int(state, where, "load")
        count = state_int(state, where, "count")
        ris = state_field(state, where, "ris", bool)
        zero_done = state_field(state, where, "zero_done", bool)
        base_ns = state_int(state, where, "base_ns", bits=64)
        if "next_zero_ns" not in state:
            raise DeviceStateError(f"{where} state has no field 'next_zero_ns'")
        next_zero = None if state["next_zero_ns"] is None else state_int(state, where, "next_zero_ns", bits=64)
        self.control, self.load, self.count = control, load, count
        self.ris, self.zero_done, self.base_ns, self.next_zero_ns = ris, zero_done, base_ns, next_zero


class Sp804(WordRegisterDevice):
    """The dual timer; both timers share one interrupt output (SPI 2 on this board).

    ``update()`` must be called by the machine after virtual time advanced (at
    least when :meth:`next_deadline_ns` has passed); register accesses also
    catch up by themselves, so the guest never sees stale state.
    """

    name = "sp804"
    size = 0x1000

    def __init__(self, now_ns: VirtualNow, irq_out: IrqLine, timclk_ns: int = TIMCLK_PERIOD_NS) -> None:
        super().__init__()
        if timclk_ns <= 0:
            raise ValueError(f"sp804: TIMCLK period must be positive, got {timclk_ns} ns")
        self._now = now_ns
        self._irq_out = irq_out
        self._irq_level = False
        self.timers = (_Counter(timclk_ns), _Counter(timclk_ns))
        self.reset()

    # -- machine interface ---------------------------------------------------------
    @property
    def irq_level(self) -> bool:
        """The level last driven on the combined interrupt output."""
        return self._irq_level

    def next_deadline_ns(self) -> int | None:
        """Earliest virtual time at which a timer's masked interrupt will rise, or None.

        Zeros that cannot change the output (interrupt disabled, or RIS already
        set) are left out so idle time can be skipped past them; they still set
        RIS when time passes them.  Ask again after any register write.
        """
        deadline: int | None = None
        for timer in self.timers:
            zero = timer.next_zero_ns
            if zero is not None and not timer.ris and timer.control & TIMER_CTRL_IE:
                deadline = zero if deadline is None else min(deadline, zero)
        return deadline

    def update(self) -> None:
        """Latch every expiry up to now and drive the interrupt output."""
        now = self._now()
        for timer in self.timers:
            timer.latch(now)
        self._drive()

    def _drive(self) -> None:
        level = self.timers[0].masked_irq or self.timers[1].masked_irq
        if level != self._irq_level:
            self._irq_level = level
            self._irq_out(level)

    # -- Device ----------------------------------------------------------------------
    def reset(self) -> None:
        for timer in self.timers:
            timer.reset()
        self._drive()

    def get_state(self) -> dict[str, Any]:
        return {"timer1": self.timers[0].get_state(), "timer2": self.timers[1].get_state()}

    def set_state(self, state: Mapping[str, Any]) -> None:
        parts = [state_field(state, self.name, key, Mapping) for key in ("timer1", "timer2")]
        # Validate both before touching either, so a bad snapshot leaves the device as it was.
        scratch = [_Counter(t.timclk_ns) for t in self.timers]
        for counter, part, key in zip(scratch, parts, ("timer1", "timer2"), strict=True):
            counter.set_state(part, f"{self.name}.{key}")
        for timer, part, key in zip(self.timers, parts, ("timer1", "timer2"), strict=True):
            timer.set_state(part, f"{self.name}.{key}")
        # Re-drive the output so the interrupt controller agrees with the restored state.
        self._irq_level = self.timers[0].masked_irq or self.timers[1].masked_irq
        self._irq_out(self._irq_level)

    # -- MMIO ----------------------------------------------------------------------------
    def read_word(self, offset: int) -> int:
        if offset < 2 * TIMER_WINDOW:
            timer = self.timers[offset // TIMER_WINDOW]
            register = offset % TIMER_WINDOW
            if register == TimerValue:
                # Hot path (sched_clock): pure arithmetic, no latching needed.
                return timer.value(self._now())
            if register in (TimerLoad, TimerBGLoad):
                return timer.load
            if register == TimerControl:
                return timer.control
            if register in (TimerRIS, TimerMIS):
                self.update()
                return int(timer.ris if register == TimerRIS else timer.masked_irq)
            self.guest_error(("read", offset), f"read of write-only or reserved offset {offset:#x}")
            return 0
        if TimerPeriphID0 <= offset <= TimerPCellID3:
            return SP804_ID[(offset - TimerPeriphID0) >> 2]
        if offset in (TimerITCR, TimerITOP):
            self.guest_error(("itest", offset), f"integration test register {offset:#x} is not modelled")
            return 0
        self.guest_error(("read", offset), f"read of unknown offset {offset:#x}")
        return 0

    def write_word(self, offset: int, value: int) -> None:
        if offset >= 2 * TIMER_WINDOW:
            if offset in (TimerITCR, TimerITOP):
                self.guest_error(("itest", offset), f"integration test register {offset:#x} is not modelled")
            else:
                self.guest_error(("write", offset), f"write of {value:#x} to read-only or unknown offset {offset:#x}")
            return
        timer = self.timers[offset // TIMER_WINDOW]
        register = offset % TIMER_WINDOW
        now = self._now()
        for each in self.timers:
            each.latch(now)
        if register == TimerLoad:
            timer.write_load(now, value)
        elif register == TimerBGLoad:
            timer.write_bgload(now, value)
        elif register == TimerControl:
            if (value & TIMER_CTRL_PRESCALE_MASK) == TIMER_CTRL_PRESCALE_MASK:
                self.guest_error(("prescale", offset), "TimerPre = 0b11 is undefined; dividing by 256")
            timer.write_control(now, value)
        elif register == TimerIntClr:
            timer.ris = False
        elif register == TimerValue:
            # Read-only, but Linux's sp804 clocksource init writes it: ignore quietly, as QEMU does.
            pass
        else:
            self.guest_error(("write", offset), f"write of {value:#x} to read-only or reserved offset {offset:#x}")
        self._drive()
