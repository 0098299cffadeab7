"""PL011 UART: console output, flags, interrupt handshakes, receive FIFO, IDs, snapshots."""

import json
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qppsuite.core.devices.base import DeviceStateError
from qppsuite.core.devices.pl011 import (
    UART_RTIM,
    UART_RXIM,
    UART_TXIM,
    UARTCR,
    UARTDMACR,
    UARTDR,
    UARTFBRD,
    UARTFR,
    UARTFR_BUSY,
    UARTFR_RXFE,
    UARTFR_RXFF,
    UARTFR_TXFE,
    UARTFR_TXFF,
    UARTIBRD,
    UARTICR,
    UARTIFLS,
    UARTILPR,
    UARTIMSC,
    UARTLCR_H,
    UARTLCR_H_FEN,
    UARTMIS,
    UARTRIS,
    UARTRSR,
    Pl011,
)


class Rig:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.events: list[bool] = []
        self.uart = Pl011(on_tx=self.sent.append, irq_out=self.events.append)

    def w(self, offset: int, value: int, size: int = 4) -> None:
        self.uart.write(offset, value, size)

    def r(self, offset: int, size: int = 4) -> int:
        return self.uart.read(offset, size)

    def drain(self) -> bytes:
        """What Linux's pl011_fifo_to_tty does: read UARTDR until UARTFR says empty."""
        data = bytearray()
        while not self.r(UARTFR) & UARTFR_RXFE:
            data.append(self.r(UARTDR) & 0xFF)
        return bytes(data)


def test_transmitted_bytes_reach_the_sink() -> None:
    rig = Rig()
    for byte in b"Linux\n":
        rig.w(UARTDR, byte)
    rig.w(UARTDR, 0x121, 4)  # only the data bits leave
    rig.w(UARTDR, ord("!"), 1)  # strb works too
    assert b"".join(rig.sent) == b"Linux\n!!"


def test_flags_show_an_always_empty_transmitter() -> None:
    rig = Rig()
    assert rig.r(UARTFR) == UARTFR_TXFE | UARTFR_RXFE
    for _ in range(100):
        rig.w(UARTDR, 0x41)
        flags = rig.r(UARTFR)
        assert flags & UARTFR_TXFE and not flags & (UARTFR_TXFF | UARTFR_BUSY)
    rig.w(UARTFR, 0)  # read-only: ignored
    assert rig.r(UARTFR) == UARTFR_TXFE | UARTFR_RXFE


def test_identification_registers() -> None:
    rig = Rig()
    assert [rig.r(0xFE0 + 4 * i) for i in range(8)] == [0x11, 0x10, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1]


def test_reset_values_and_plain_registers() -> None:
    rig = Rig()
    assert (rig.r(UARTCR), rig.r(UARTIFLS), rig.r(UARTLCR_H), rig.r(UARTIMSC)) == (0x300, 0x12, 0, 0)
    assert rig.r(UARTRIS) == UART_TXIM  # empty transmit FIFO: at or below its trigger level
    for offset, value, expected in (
        (UARTIBRD, 0x12345, 0x2345),
        (UARTFBRD, 0xFF, 0x3F),
        (UARTILPR, 0x1FF, 0xFF),
        (UARTLCR_H, 0x70, 0x70),
        (UARTCR, 0xC301, 0xC301),
        (UARTDMACR, 0x7, 0x7),
        (UARTIFLS, 0x3F, 0x3F),
    ):
        rig.w(offset, value)
        assert rig.r(offset) == expected, hex(offset)


def test_linux_tx_interrupt_handshake() -> None:
    rig = Rig()
    # pl011_start_tx: the driver writes what fits and enables TXIM because more is queued.
    rig.w(UARTDR, ord("a"))
    rig.w(UARTIMSC, UART_TXIM)
    assert rig.uart.irq_level and rig.events == [True]
    assert rig.r(UARTMIS) == UART_TXIM
    # pl011_int -> pl011_tx_chars: writing keeps the condition true until the buffer is empty ...
    for byte in b"bcdefgh":
        rig.w(UARTDR, byte)
        assert rig.r(UARTMIS) & UART_TXIM
    # ... then pl011_stop_tx masks TXIM and the line drops.
    rig.w(UARTIMSC, 0)
    assert not rig.uart.irq_level and rig.events == [True, False]
    assert b"".join(rig.sent) == b"abcdefgh"


def test_icr_clears_tx_until_the_next_byte() -> None:
    rig = Rig()
    rig.w(UARTICR, UART_TXIM)
    assert rig.r(UARTRIS) == 0
    rig.w(UARTIMSC, UART_TXIM)
    assert not rig.uart.irq_level
    rig.w(UARTDR, 0x30)
    assert rig.uart.irq_level and rig.r(UARTMIS) == UART_TXIM
    rig.w(UARTICR, 0x7FF)
    assert not rig.uart.irq_level and rig.events == [True, False]


def test_receive_with_fifos_disabled() -> None:
    rig = Rig()
    rig.w(UARTIMSC, UART_RXIM | UART_RTIM)
    rig.uart.push_rx(b"abc")
    assert rig.uart.irq_level
    assert rig.r(UARTMIS) == UART_RXIM | UART_RTIM
    flags = rig.r(UARTFR)
    assert not flags & UARTFR_RXFE and flags & UARTFR_RXFF  # one-entry FIFO holds a byte
    assert rig.drain() == b"abc"
    assert not rig.uart.irq_level and rig.r(UARTRIS) & (UART_RXIM | UART_RTIM) == 0
    assert rig.r(UARTDR) == 0  # reading an empty FIFO is harmless
    assert rig.r(UARTRSR) == 0


def test_receive_fifo_trigger_level_and_timeout() -> None:
    rig = Rig()
    rig.w(UARTLCR_H, UARTLCR_H_FEN | 0x60)
    rig.w(UARTIFLS, 2 << 3)  # RX interrupt at 1/2 full: 8 of 16
    rig.w(UARTIMSC, UART_RXIM | UART_RTIM)
    rig.uart.push_rx(b"abc")
    assert rig.r(UARTRIS) & (UART_RXIM | UART_RTIM) == UART_RTIM  # below trigger: only the timeout
    assert rig.uart.irq_level
    rig.w(UARTICR, UART_RTIM)
    assert not rig.uart.irq_level
    rig.uart.push_rx(b"defgh")
    assert rig.r(UARTRIS) & UART_RXIM
    assert rig.r(UARTDR) == ord("a")
    assert not rig.r(UARTRIS) & UART_RXIM  # 7 left: below the trigger level again
    assert rig.r(UARTRIS) & UART_RTIM
    assert rig.drain() == b"bcdefgh"
    assert rig.r(UARTRIS) & (UART_RXIM | UART_RTIM) == 0


def test_receive_backlog_fills_the_fifo_in_order_without_overrun() -> None:
    rig = Rig()
    rig.w(UARTLCR_H, UARTLCR_H_FEN)
    message = bytes(range(40)) + b"tail"
    rig.uart.push_rx(message)
    assert rig.r(UARTFR) & UARTFR_RXFF
    assert len(rig.uart.rx_fifo) == 16
    assert rig.drain() == message
    assert rig.r(UARTFR) & UARTFR_RXFE


def test_toggling_fifo_enable_flushes_received_bytes() -> None:
    rig = Rig()
    rig.w(UARTLCR_H, UARTLCR_H_FEN)
    rig.uart.push_rx(b"x" * 20)
    rig.w(UARTLCR_H, 0)  # the 16 in the FIFO are lost; the 4 still on the wire arrive
    assert rig.drain() == b"xxxx"


def test_mis_is_ris_and_imsc() -> None:
    rig = Rig()
    rig.uart.push_rx(b"q")
    assert rig.r(UARTRIS) == UART_TXIM | UART_RXIM | UART_RTIM
    assert rig.r(UARTMIS) == 0 and not rig.uart.irq_level
    rig.w(UARTIMSC, UART_RTIM)
    assert rig.r(UARTMIS) == UART_RTIM and rig.events == [True]
    rig.w(UARTICR, UART_RTIM | UART_TXIM)
    assert rig.r(UARTRIS) == UART_RXIM and rig.events == [True, False]


def test_unknown_and_read_only_offsets_do_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    rig = Rig()
    with caplog.at_level(logging.WARNING, logger="qppsuite.guest"):
        assert rig.r(0x800) == 0
        assert rig.r(0x800) == 0
        assert rig.r(UARTICR) == 0  # write-only
        rig.w(0x800, 1)
        rig.w(UARTRIS, 0xFFFF)  # read-only
        rig.w(UARTDR + 1, 0x41, 1)  # into the middle of a register
        assert rig.r(0x1000) == 0
        assert rig.r(0x6, 4) == 0
    assert len(caplog.records) == 7
    assert rig.r(UARTRIS) == UART_TXIM
    assert rig.sent == []
    assert rig.r(0xFE4, 1) == 0x10 and rig.r(UARTCR + 1, 1) == 0x03


def test_state_round_trip_through_json_gives_identical_behaviour() -> None:
    original = Rig()
    original.w(UARTLCR_H, UARTLCR_H_FEN | 0x60)
    original.w(UARTIBRD, 13)
    original.w(UARTIMSC, UART_RXIM | UART_RTIM | UART_TXIM)
    original.uart.push_rx(b"0123456789abcdefghijklmnop")
    original.r(UARTDR)
    original.w(UARTICR, UART_TXIM)
    saved = json.loads(json.dumps(original.uart.get_state()))

    restored = Rig()
    restored.uart.set_state(saved)
    assert restored.uart.get_state() == original.uart.get_state()
    assert restored.events == [original.uart.irq_level]
    for rig in (original, restored):
        rig.events.clear()
    script = [(UARTDR, 0x41), (UARTIMSC, UART_TXIM), (UARTIMSC, UART_RXIM)]
    traces = []
    for rig in (original, restored):
        trace: list[object] = [rig.drain(), rig.r(UARTRIS)]
        for offset, value in script:
            rig.w(offset, value)
            trace.append((rig.r(UARTMIS), rig.r(UARTFR)))
        trace.append(list(rig.events))
        traces.append(trace)
    assert traces[0] == traces[1]
    assert traces[0][0] == b"123456789abcdefghijklmnop"
    assert original.sent[-1] == restored.sent[-1] == b"A"


def test_a_line_time_past_four_seconds_is_restored() -> None:
    """``line_ns`` is virtual time in ns: past 2**32 after 4.3 s (a snapshot taken after a ``sleep 5``)."""
    rig = Rig()
    state = {**rig.uart.get_state(), "line_ns": 5_962_811_088}
    rig.uart.set_state(state)
    assert rig.uart.get_state()["line_ns"] == 5_962_811_088


def test_set_state_rejects_corrupt_snapshots() -> None:
    rig = Rig()
    good = rig.uart.get_state()
    with pytest.raises(DeviceStateError, match="rx_fifo"):
        rig.uart.set_state({**good, "rx_fifo": "zz"})
    with pytest.raises(DeviceStateError, match="1-entry"):
        rig.uart.set_state({**good, "rx_fifo": "6162"})
    with pytest.raises(DeviceStateError, match="reserved"):
        rig.uart.set_state({**good, "cr": 0x78})
    with pytest.raises(DeviceStateError, match="no field 'imsc'"):
        rig.uart.set_state({k: v for k, v in good.items() if k != "imsc"})
    assert rig.uart.get_state() == good


def test_reset_discards_input_and_drops_the_line() -> None:
    rig = Rig()
    rig.w(UARTIMSC, UART_RXIM)
    rig.uart.push_rx(b"abc")
    rig.uart.reset()
    assert rig.events == [True, False]
    assert rig.r(UARTFR) & UARTFR_RXFE and rig.drain() == b""


_OFFSETS = st.sampled_from(
    [UARTDR, UARTRSR, UARTFR, UARTLCR_H, UARTCR, UARTIFLS, UARTIMSC, UARTRIS, UARTMIS, UARTICR, UARTDMACR]
) | st.integers(0, 0xFFF)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("w"), _OFFSETS, st.integers(0, 0xFFFFFFFF), st.sampled_from([1, 2, 4, 3])),
            st.tuples(st.just("r"), _OFFSETS, st.just(0), st.sampled_from([1, 2, 4])),
            st.tuples(st.just("rx"), st.just(0), st.binary(max_size=40), st.just(0)),
        ),
        max_size=60,
    )
)
def test_random_guest_traffic_never_raises_and_line_follows_registers(ops: list[tuple[str, int, Any, int]]) -> None:
    rig = Rig()
    logging.getLogger("qppsuite.guest").disabled = True
    try:
        for kind, offset, value, size in ops:
            if kind == "w":
                rig.w(offset, value, size)
            elif kind == "r":
                assert 0 <= rig.r(offset, size) <= 0xFFFFFFFF
            else:
                rig.uart.push_rx(value)
            assert rig.uart.irq_level == bool(rig.r(UARTRIS) & rig.r(UARTIMSC))
            assert rig.events == [] or rig.events[-1] == rig.uart.irq_level
            assert bool(rig.r(UARTFR) & UARTFR_RXFE) == (not rig.uart.rx_fifo)
    finally:
        logging.getLogger("qppsuite.guest").disabled = False
    json.dumps(rig.uart.get_state())


def test_a_line_carries_bursts_at_the_baud_rate_and_only_while_rts_is_up() -> None:
    """The channel port (docs in qppsuite/core/devices/pl011.py): 256 bytes as fast as they are read, then the
    line rests for their time at the programmed baud rate; nothing moves while the guest holds RTS down."""
    from qppsuite.core.devices.pl011 import LINE_BURST, UARTCR_RTS

    now = [0]
    rig = Rig()
    rig.uart = Pl011(on_tx=rig.sent.append, irq_out=rig.events.append, now_ns=lambda: now[0])
    rig.w(UARTLCR_H, UARTLCR_H_FEN)
    rig.w(UARTIBRD, 1)  # 24 MHz / 16: 1.5 Mbaud, 6,666 ns a byte
    data = bytes(range(256)) * 3
    rig.uart.push_rx(data)
    assert rig.drain() == b"" and rig.uart.next_deadline_ns() is None  # RTS down: the line holds
    rig.w(UARTCR, UARTCR_RTS)
    first = rig.drain()
    assert first == data[:LINE_BURST]  # one burst, read as fast as the guest likes
    rest = LINE_BURST * 6_666  # ns a byte: 10 bits at 1.5 Mbaud
    assert rig.uart.next_deadline_ns() == rest
    now[0] = rest - 1
    rig.uart.update()
    assert rig.drain() == b""
    now[0] = rest
    rig.uart.update()
    assert rig.drain() == data[LINE_BURST : 2 * LINE_BURST]
    state = rig.uart.get_state()
    clone = Pl011(on_tx=rig.sent.append, irq_out=rig.events.append, now_ns=lambda: now[0])
    clone.set_state(json.loads(json.dumps(state)))
    assert clone.get_state() == state and clone.next_deadline_ns() == rig.uart.next_deadline_ns()
