"""SP804 dual timer: virtual-time counting, interrupt timing without drift, modes, snapshots."""

import json
import logging
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qppsuite.core.devices.base import DeviceStateError
from qppsuite.core.devices.sp804 import (
    TIMER2_BASE,
    TIMER_CTRL_32BIT,
    TIMER_CTRL_ENABLE,
    TIMER_CTRL_IE,
    TIMER_CTRL_ONESHOT,
    TIMER_CTRL_PERIODIC,
    Sp804,
    TimerBGLoad,
    TimerControl,
    TimerIntClr,
    TimerLoad,
    TimerMIS,
    TimerRIS,
    TimerValue,
)

US = 1000  # ns per TIMCLK tick at 1 MHz
PERIODIC_IRQ = TIMER_CTRL_32BIT | TIMER_CTRL_PERIODIC | TIMER_CTRL_IE | TIMER_CTRL_ENABLE
ONESHOT_IRQ = TIMER_CTRL_32BIT | TIMER_CTRL_ONESHOT | TIMER_CTRL_IE | TIMER_CTRL_ENABLE
FREE_32 = TIMER_CTRL_32BIT | TIMER_CTRL_ENABLE


class Clock:
    """Virtual time the test moves by hand."""

    def __init__(self, now: int = 0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


class Rig:
    def __init__(self, start_ns: int = 0) -> None:
        self.clock = Clock(start_ns)
        self.events: list[bool] = []
        self.timer = Sp804(now_ns=self.clock, irq_out=self.events.append)

    def at(self, ns: int) -> "Rig":
        assert ns >= self.clock.now, "virtual time only moves forward"
        self.clock.now = ns
        return self

    def w(self, offset: int, value: int) -> None:
        self.timer.write(offset, value, 4)

    def r(self, offset: int) -> int:
        return self.timer.read(offset, 4)


def test_identification_and_reset_values() -> None:
    rig = Rig()
    assert [rig.r(0xFE0 + 4 * i) for i in range(8)] == [0x04, 0x18, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1]
    for base in (0, TIMER2_BASE):
        assert rig.r(base + TimerControl) == TIMER_CTRL_IE
        assert rig.r(base + TimerValue) == 0xFFFFFFFF
        assert rig.r(base + TimerLoad) == 0
        assert rig.r(base + TimerRIS) == 0
    assert rig.timer.next_deadline_ns() is None
    assert rig.events == []


def test_periodic_interrupts_land_on_the_period_grid_without_drift() -> None:
    rig = Rig(start_ns=123_456)
    rig.w(TimerLoad, 999)  # Linux: DIV_ROUND_CLOSEST(1 MHz, HZ) style reload
    rig.w(TimerControl, PERIODIC_IRQ)
    start = rig.clock.now
    jitter = random.Random(7)
    deadlines = []
    for _ in range(5000):
        deadline = rig.timer.next_deadline_ns()
        assert deadline is not None
        deadlines.append(deadline)
        # The machine notices late, by up to most of a period, and the handler runs later still.
        rig.at(deadline + jitter.randrange(0, 900 * US))
        rig.timer.update()
        assert rig.timer.irq_level
        rig.at(rig.clock.now + jitter.randrange(0, 50 * US))
        rig.w(TimerIntClr, 1)
        assert not rig.timer.irq_level
    assert deadlines == [start + 999 * US + n * 1000 * US for n in range(5000)]
    assert rig.events == [True, False] * 5000


def test_missed_periods_coalesce_and_keep_the_phase() -> None:
    rig = Rig()
    rig.w(TimerLoad, 99)
    rig.w(TimerControl, PERIODIC_IRQ)
    rig.at(99 * US + 3 * 100 * US + 5 * US)  # four zeros have passed
    rig.timer.update()
    assert rig.events == [True]
    rig.w(TimerIntClr, 1)
    assert rig.timer.next_deadline_ns() == 99 * US + 4 * 100 * US


def test_periodic_count_sequence_and_reload() -> None:
    rig = Rig()
    rig.w(TimerLoad, 3)
    rig.w(TimerControl, PERIODIC_IRQ)
    values = []
    for tick in range(10):
        rig.at(tick * US + 500)  # mid-tick
        values.append(rig.r(TimerValue))
    assert values == [3, 2, 1, 0, 3, 2, 1, 0, 3, 2]


def test_one_shot_fires_once_and_halts_at_zero() -> None:
    rig = Rig()
    rig.w(TimerLoad, 500)
    rig.w(TimerControl, ONESHOT_IRQ)
    assert rig.timer.next_deadline_ns() == 500 * US
    rig.at(500 * US - 1)
    rig.timer.update()
    assert rig.events == [] and rig.r(TimerValue) == 1
    rig.at(500 * US)
    rig.timer.update()
    assert rig.events == [True] and rig.r(TimerValue) == 0
    rig.w(TimerIntClr, 1)
    assert rig.events == [True, False]
    rig.at(10_000_000 * US)
    rig.timer.update()
    assert rig.r(TimerValue) == 0 and rig.r(TimerRIS) == 0
    assert rig.timer.next_deadline_ns() is None
    assert rig.r(TimerControl) & TIMER_CTRL_ENABLE  # halted, not disabled
    # Linux's set_next_event: new load, then the same control value.
    rig.w(TimerLoad, 20)
    rig.w(TimerControl, ONESHOT_IRQ)
    assert rig.timer.next_deadline_ns() == 10_000_020 * US


def test_leaving_one_shot_mode_resumes_counting_from_zero() -> None:
    rig = Rig()
    rig.w(TimerLoad, 10)
    rig.w(TimerControl, ONESHOT_IRQ)
    rig.at(50 * US)
    rig.timer.update()
    rig.w(TimerIntClr, 1)
    rig.w(TimerControl, PERIODIC_IRQ)
    # At 0 already (and signalled): reload on the next tick, zero again 10 ticks later.
    assert rig.timer.next_deadline_ns() == 50 * US + 11 * US
    rig.at(51 * US)
    assert rig.r(TimerValue) == 10


def test_load_zero_interrupts_at_once() -> None:
    rig = Rig()
    rig.w(TimerControl, ONESHOT_IRQ)
    rig.at(7 * US)
    rig.w(TimerLoad, 0)
    assert rig.events == [True] and rig.r(TimerRIS) == 1


def test_free_running_counter_decrements_and_wraps_in_16_bit_mode() -> None:
    rig = Rig()
    rig.w(TimerControl, TIMER_CTRL_ENABLE)  # 16-bit, free-running, no interrupt enable
    assert rig.r(TimerValue) == 0xFFFF
    rig.at(0xFFFF * US)
    assert rig.r(TimerValue) == 0
    assert rig.r(TimerRIS) == 1 and rig.r(TimerMIS) == 0  # RIS regardless of IE
    assert rig.events == []
    rig.at((0xFFFF + 1) * US)
    assert rig.r(TimerValue) == 0xFFFF
    rig.at((0xFFFF + 1 + 0x10000 * 5 + 17) * US)
    assert rig.r(TimerValue) == 0xFFFF - 17


def test_free_running_32_bit_counter_is_exact_over_long_times() -> None:
    rig = Rig(start_ns=3)
    rig.w(TIMER2_BASE + TimerControl, FREE_32)
    rng = random.Random(11)
    now = 3
    for _ in range(2000):
        now += rng.randrange(0, 10**13)  # up to ~3 hours of virtual time per step
        rig.at(now)
        ticks = (now - 3) // US
        assert rig.r(TIMER2_BASE + TimerValue) == (0xFFFFFFFF - ticks) % (1 << 32)
    assert now > 10**15  # well past many wraps (2**32 us is ~72 minutes)


def test_linux_clocksource_setup_is_a_monotonic_32_bit_counter() -> None:
    rig = Rig()
    base = TIMER2_BASE
    rig.w(base + TimerControl, 0)
    rig.w(base + TimerLoad, 0xFFFFFFFF)
    rig.w(base + TimerValue, 0xFFFFFFFF)  # read-only, written by Linux: ignored quietly
    rig.w(base + TimerControl, TIMER_CTRL_32BIT | TIMER_CTRL_ENABLE | TIMER_CTRL_PERIODIC)
    previous = (~rig.r(base + TimerValue)) & 0xFFFFFFFF
    for step in range(1, 200):
        rig.at(step * 37_000_000_123)  # crosses several 2**32-tick wraps
        cycles = (~rig.r(base + TimerValue)) & 0xFFFFFFFF
        elapsed_ticks = rig.clock.now // US
        assert cycles == elapsed_ticks % (1 << 32)
        assert (cycles - previous) % (1 << 32) == (37_000_000_123 * step // US - 37_000_000_123 * (step - 1) // US)
        previous = cycles


def test_prescale_divides_the_tick() -> None:
    for prescale, divisor in ((0, 1), (1, 16), (2, 256)):
        rig = Rig()
        rig.w(TimerLoad, 10)
        rig.w(TimerControl, ONESHOT_IRQ | (prescale << 2))
        assert rig.timer.next_deadline_ns() == 10 * divisor * US
        rig.at(divisor * US * 3 + 1)
        assert rig.r(TimerValue) == 7


def test_undefined_prescale_logs_and_uses_256(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig()
    rig.w(TimerLoad, 2)
    with caplog.at_level(logging.WARNING, logger="qppsuite.guest"):
        rig.w(TimerControl, ONESHOT_IRQ | (3 << 2))
    assert "undefined" in caplog.text
    assert rig.timer.next_deadline_ns() == 2 * 256 * US


def test_next_deadline_only_counts_zeros_that_raise_the_output() -> None:
    rig = Rig()
    assert rig.timer.next_deadline_ns() is None
    rig.w(TimerLoad, 300)
    rig.w(TimerControl, ONESHOT_IRQ)
    rig.w(TIMER2_BASE + TimerLoad, 200)
    rig.w(TIMER2_BASE + TimerControl, ONESHOT_IRQ & ~TIMER_CTRL_IE)
    assert rig.timer.next_deadline_ns() == 300 * US  # timer 2's zero cannot raise the line
    rig.w(TIMER2_BASE + TimerControl, ONESHOT_IRQ)
    assert rig.timer.next_deadline_ns() == 200 * US
    rig.at(250 * US)
    rig.timer.update()
    assert rig.timer.next_deadline_ns() == 300 * US  # timer 2 fired; RIS set
    rig.w(TimerControl, 0)
    assert rig.timer.next_deadline_ns() is None


def test_ris_mis_and_intclr_drive_the_combined_line() -> None:
    rig = Rig()
    rig.w(TimerLoad, 5)
    rig.w(TimerControl, ONESHOT_IRQ & ~TIMER_CTRL_IE)
    rig.w(TIMER2_BASE + TimerLoad, 8)
    rig.w(TIMER2_BASE + TimerControl, ONESHOT_IRQ)
    rig.at(6 * US)
    rig.timer.update()
    assert (rig.r(TimerRIS), rig.r(TimerMIS), rig.events) == (1, 0, [])
    rig.w(TimerControl, ONESHOT_IRQ)  # enabling IE exposes the latched interrupt
    assert (rig.r(TimerMIS), rig.events) == (1, [True])
    rig.at(9 * US)
    rig.timer.update()
    assert rig.r(TIMER2_BASE + TimerMIS) == 1
    rig.w(TimerIntClr, 0)
    assert rig.events == [True]  # timer 2 still holds the shared line
    rig.w(TIMER2_BASE + TimerIntClr, 0)
    assert rig.events == [True, False]
    assert rig.r(TimerRIS) == 0 and rig.r(TIMER2_BASE + TimerRIS) == 0


def test_register_reads_catch_up_without_update() -> None:
    rig = Rig()
    rig.w(TimerLoad, 5)
    rig.w(TimerControl, ONESHOT_IRQ)
    rig.at(5 * US)
    assert rig.r(TimerRIS) == 1  # the guest never sees stale state
    assert rig.events == [True]


def test_16_bit_mode_truncates_load_and_period() -> None:
    rig = Rig()
    rig.w(TimerLoad, 0x12345)
    rig.w(TimerControl, TIMER_CTRL_PERIODIC | TIMER_CTRL_IE | TIMER_CTRL_ENABLE)
    assert rig.r(TimerValue) == 0x2345
    assert rig.r(TimerLoad) == 0x12345  # the register keeps what was written
    assert rig.timer.next_deadline_ns() == 0x2345 * US
    rig.at(0x2345 * US)
    rig.timer.update()
    rig.w(TimerIntClr, 1)
    assert rig.timer.next_deadline_ns() == (0x2345 + 0x2346) * US


def test_background_load_changes_the_next_period_only() -> None:
    rig = Rig()
    rig.w(TimerLoad, 100)
    rig.w(TimerControl, PERIODIC_IRQ)
    rig.at(40 * US + 300)
    rig.w(TimerBGLoad, 10)
    assert rig.r(TimerLoad) == 10 and rig.r(TimerBGLoad) == 10
    assert rig.r(TimerValue) == 60  # the current count carries on
    assert rig.timer.next_deadline_ns() == 100 * US
    rig.at(100 * US)
    rig.timer.update()
    rig.w(TimerIntClr, 1)
    assert rig.timer.next_deadline_ns() == 111 * US  # reloaded from 10: period 11 ticks
    rig.at(105 * US)
    rig.w(TimerLoad, 50)  # TimerLoad restarts the count at once
    assert rig.r(TimerValue) == 50
    assert rig.timer.next_deadline_ns() == 155 * US


def test_rewriting_control_mid_tick_keeps_the_phase() -> None:
    rig = Rig()
    rig.w(TimerLoad, 100)
    rig.w(TimerControl, PERIODIC_IRQ & ~TIMER_CTRL_IE)
    for step in range(1, 50):
        rig.at(step * 37 * US + 613)  # never on a tick boundary
        rig.w(TimerControl, PERIODIC_IRQ if step % 2 else PERIODIC_IRQ & ~TIMER_CTRL_IE)
        rig.w(TimerIntClr, 1)
        ticks = rig.clock.now // US
        assert rig.r(TimerValue) == (100 - ticks if ticks <= 100 else 100 - (ticks - 101) % 101)
    rig.w(TimerControl, PERIODIC_IRQ)
    deadline = rig.timer.next_deadline_ns()
    assert deadline is not None and (deadline - 100 * US) % (101 * US) == 0


def test_disabling_freezes_and_enabling_resumes() -> None:
    rig = Rig()
    rig.w(TimerLoad, 100)
    rig.w(TimerControl, PERIODIC_IRQ)
    rig.at(30 * US + 999)
    rig.w(TimerControl, PERIODIC_IRQ & ~TIMER_CTRL_ENABLE)
    assert rig.r(TimerValue) == 70
    rig.at(5_000 * US)
    assert rig.r(TimerValue) == 70 and rig.timer.next_deadline_ns() is None
    rig.w(TimerControl, PERIODIC_IRQ)
    assert rig.timer.next_deadline_ns() == 5_070 * US


def test_bad_accesses_are_logged_once_and_never_raise(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig()
    with caplog.at_level(logging.WARNING, logger="qppsuite.guest"):
        assert rig.r(0x800) == 0
        assert rig.r(0x800) == 0
        rig.w(TimerRIS, 1)
        rig.w(0xFE0, 1)
        assert rig.timer.read(0x2, 4) == 0  # misaligned
        assert rig.timer.read(0x1000, 4) == 0  # outside the window
        assert rig.r(TimerIntClr) == 0  # write-only
        assert rig.r(0xF00) == 0  # integration test register
    assert len(caplog.records) == 7
    assert rig.timer.read(0xFE0, 1) == 0x04 and rig.timer.read(0xFE4, 2) == 0x18
    rig.w(TimerLoad, 0x12345678)
    assert rig.timer.read(TimerLoad + 2, 2) == 0x1234


def _run(rig: Rig, until_ns: int) -> list[object]:
    """Drive the device like the machine does, and record what the guest would observe."""
    rig.timer.update()
    trace: list[object] = [rig.r(TimerRIS), rig.r(TIMER2_BASE + TimerRIS), rig.timer.irq_level]
    rig.w(TimerIntClr, 1)
    rig.w(TIMER2_BASE + TimerIntClr, 1)
    while True:
        deadline = rig.timer.next_deadline_ns()
        if deadline is None or deadline > until_ns:
            break
        rig.at(deadline)
        rig.timer.update()
        trace.append((deadline, rig.r(TimerValue), rig.r(TIMER2_BASE + TimerValue), rig.timer.irq_level))
        rig.w(TimerIntClr, 1)
        rig.w(TIMER2_BASE + TimerIntClr, 1)
    trace.append(list(rig.events))
    return trace


def test_state_round_trip_through_json_gives_identical_behaviour() -> None:
    original = Rig()
    original.w(TimerLoad, 777)
    original.w(TimerControl, PERIODIC_IRQ | (1 << 2))
    original.w(TIMER2_BASE + TimerLoad, 5000)
    original.w(TIMER2_BASE + TimerControl, PERIODIC_IRQ & ~TIMER_CTRL_32BIT)
    original.at(3_333_333_333)
    original.w(TimerBGLoad, 400)
    original.at(3_400_000_001)  # a zero has passed unlatched: the snapshot must carry that
    saved = json.loads(json.dumps(original.timer.get_state()))

    restored = Rig(start_ns=original.clock.now)
    restored.timer.set_state(saved)
    assert restored.timer.get_state() == original.timer.get_state()
    assert restored.r(TimerValue) == original.r(TimerValue)
    original.events.clear()
    restored.events.clear()
    expected = _run(original, 60_000_000_000)
    assert _run(restored, 60_000_000_000) == expected
    assert expected[:3] == [1, 1, True]  # zeros had passed unlatched when the snapshot was taken
    assert len(expected) > 100


def test_set_state_rejects_corrupt_snapshots_without_changing_anything() -> None:
    rig = Rig()
    rig.w(TimerLoad, 9)
    good = rig.timer.get_state()
    with pytest.raises(DeviceStateError, match="timer2"):
        rig.timer.set_state({"timer1": good["timer1"]})
    with pytest.raises(DeviceStateError, match="reserved"):
        rig.timer.set_state({**good, "timer2": {**good["timer2"], "control": 0x10}})
    with pytest.raises(DeviceStateError, match="next_zero_ns"):
        bad = dict(good["timer1"])
        del bad["next_zero_ns"]
        rig.timer.set_state({**good, "timer1": bad})
    with pytest.raises(DeviceStateError, match="expected bool"):
        rig.timer.set_state({"timer1": {**good["timer1"], "ris": 1}, "timer2": good["timer2"]})
    assert rig.timer.get_state() == good


def test_reset_drops_the_line_and_restores_power_on_values() -> None:
    rig = Rig()
    rig.w(TimerLoad, 0)
    rig.w(TimerControl, ONESHOT_IRQ)
    assert rig.events == [True]
    rig.timer.reset()
    assert rig.events == [True, False]
    assert rig.r(TimerControl) == TIMER_CTRL_IE and rig.r(TimerValue) == 0xFFFFFFFF


@settings(max_examples=200, deadline=None)
@given(
    load=st.integers(1, 0xFFFFFFFF),
    offsets=st.lists(st.integers(0, 10**12), min_size=2, max_size=40),
)
def test_value_decreases_by_elapsed_ticks_between_reloads(load: int, offsets: list[int]) -> None:
    rig = Rig()
    rig.w(TimerLoad, load)
    rig.w(TimerControl, PERIODIC_IRQ)
    horizon = load * US  # the first zero
    times = sorted(offset % (horizon + 1) for offset in offsets)
    values = []
    for t in times:
        rig.at(t)
        values.append(rig.r(TimerValue))
    assert values == [load - t // US for t in times]
    assert values == sorted(values, reverse=True)


@settings(max_examples=100, deadline=None)
@given(
    load=st.integers(0, 5000),
    prescale=st.integers(0, 2),
    steps=st.lists(st.tuples(st.integers(0, 3_000_000), st.booleans()), min_size=1, max_size=40),
)
def test_interrupts_stay_on_the_grid_whatever_the_update_pattern(
    load: int, prescale: int, steps: list[tuple[int, bool]]
) -> None:
    rig = Rig()
    rig.w(TimerLoad, load)
    rig.w(TimerControl, PERIODIC_IRQ | (prescale << 2))
    tick = US * (1, 16, 256)[prescale]
    for advance, clear in steps:
        rig.at(rig.clock.now + advance)
        rig.timer.update()
        if clear:
            rig.w(TimerIntClr, 1)
        deadline = rig.timer.next_deadline_ns()
        if deadline is not None:
            assert deadline > rig.clock.now
            assert (deadline - load * tick) % ((load + 1) * tick) == 0
        # The value always matches the closed form of periodic counting from t=0.
        ticks = rig.clock.now // tick
        expected = load - ticks if ticks <= load else load - (ticks - load - 1) % (load + 1)
        assert rig.r(TimerValue) == expected


_REGS = st.sampled_from([0x00, 0x04, 0x08, 0x0C, 0x10, 0x14, 0x18, 0x1C]).map(lambda r: r) | st.integers(0, 0xFFF)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 5_000_000),
            st.booleans(),
            st.sampled_from([0, TIMER2_BASE]),
            _REGS,
            st.integers(0, 0xFFFFFFFF),
            st.sampled_from([1, 2, 4, 3]),
        ),
        max_size=50,
    )
)
def test_random_register_traffic_never_raises(ops: list[tuple[int, bool, int, int, int, int]]) -> None:
    rig = Rig()
    logging.getLogger("qppsuite.guest").disabled = True
    try:
        for advance, write, base, register, value, size in ops:
            rig.at(rig.clock.now + advance)
            offset = (base + register) if register < 0x20 else register
            if write:
                rig.timer.write(offset, value, size)
            else:
                assert 0 <= rig.timer.read(offset, size) <= 0xFFFFFFFF
            rig.timer.update()
            deadline = rig.timer.next_deadline_ns()
            assert deadline is None or deadline > rig.clock.now
            assert rig.events == [] or rig.events[-1] == rig.timer.irq_level
    finally:
        logging.getLogger("qppsuite.guest").disabled = False
    json.dumps(rig.timer.get_state())
