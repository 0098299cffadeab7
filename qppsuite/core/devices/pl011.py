"""ARM PrimeCell PL011 UART (DDI0183): the ``ttyAMA0`` console.

Transmission is instantaneous: a UARTDR write hands the byte to ``on_tx`` and
the transmit FIFO is empty again at once, so UARTFR always shows TXFE and never
TXFF or BUSY, and the transmit interrupt behaves as the TRM's "FIFO at or below
its trigger level" condition does: TXRIS is set at reset and after every
transmitted byte, and only UARTICR clears it.  Linux's driver enables TXIM when
it has more to send and masks it when its buffer is empty; that handshake is
just ``UARTMIS = UARTRIS & UARTIMSC`` on the interrupt line.

Reception (:meth:`Pl011.push_rx`, used for input and replay) is deterministic:
bytes wait in a backlog and move into the 16-entry receive FIFO (1 entry with
FIFOs disabled) as room appears, so nothing is ever overrun.  RXRIS follows the
UARTIFLS trigger level; the receive timeout (32 bit periods of silence on real
hardware) is modelled as elapsing as soon as bytes have arrived, so RTRIS is set
then and cleared when the FIFO empties or by UARTICR: Linux reads a FIFO that
holds fewer bytes than the trigger level because of it.  Line errors,
modem-status changes, DMA, IrDA and loopback are not modelled, and (as in QEMU)
UARTEN/TXE/RXE do not gate data: those registers hold what the guest writes.

The board's channel port is a *line* (``now_ns`` given) that carries bytes in
bursts: up to 256 bytes (what Linux's interrupt handler takes at a time) enter
the FIFO as fast as the guest reads them, then the line rests for the time those
bytes take at the baud rate the guest programmed (UARTIBRD/UARTFBRD against the
24 MHz UARTCLK, 10 bit periods a byte), in virtual time.  The rest matters: a
line that refilled the FIFO at every read forever would keep the interrupt
handler from ever returning with it empty, and Linux's tty layer, which only
throttles from its own worker, would overflow its buffers and drop bytes.  The
bursts matter too: a byte at a time would cost an interrupt per byte.  The
sender also honours flow control, as a host wired for ``crtscts`` does: bytes
move only while the guest asserts RTS (UARTCR.RTS) or leaves it to the hardware
(UARTCR.RTSEN), CTS reads as asserted, and a full FIFO holds the line.
"""

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from qppsuite.core.devices.base import (
    DeviceStateError,
    IrqLine,
    WordRegisterDevice,
    state_field,
    state_int,
)

# Register offsets (DDI0183 table 3-1).
UARTDR = 0x000
UARTRSR = 0x004  # UARTECR on write
UARTFR = 0x018
UARTILPR = 0x020
UARTIBRD = 0x024
UARTFBRD = 0x028
UARTLCR_H = 0x02C
UARTCR = 0x030
UARTIFLS = 0x034
UARTIMSC = 0x038
UARTRIS = 0x03C
UARTMIS = 0x040
UARTICR = 0x044
UARTDMACR = 0x048
UARTPeriphID0 = 0xFE0
UARTPCellID3 = 0xFFC
PL011_ID = (0x11, 0x10, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1)

# UARTFR bits.
UARTFR_CTS = 1 << 0
UARTFR_DSR = 1 << 1
UARTFR_DCD = 1 << 2
UARTFR_BUSY = 1 << 3
UARTFR_RXFE = 1 << 4
UARTFR_TXFF = 1 << 5
UARTFR_RXFF = 1 << 6
UARTFR_TXFE = 1 << 7
UARTFR_RI = 1 << 8

# Interrupt bits shared by UARTIMSC, UARTRIS, UARTMIS and UARTICR.
UART_RIMIM = 1 << 0
UART_CTSMIM = 1 << 1
UART_DCDMIM = 1 << 2
UART_DSRMIM = 1 << 3
UART_RXIM = 1 << 4
UART_TXIM = 1 << 5
UART_RTIM = 1 << 6
UART_FEIM = 1 << 7
UART_PEIM = 1 << 8
UART_BEIM = 1 << 9
UART_OEIM = 1 << 10
UART_INT_MASK = 0x7FF

# UARTLCR_H and UARTCR fields used by the model.
UARTLCR_H_FEN = 1 << 4
UARTLCR_H_MASK = 0xFF
UARTCR_UARTEN = 1 << 0
UARTCR_TXE = 1 << 8
UARTCR_RXE = 1 << 9
UARTCR_RTS = 1 << 11
UARTCR_RTSEN = 1 << 14
UARTCR_MASK = 0xFF87  # bits 6:3 are reserved
UARTIFLS_RXIFLSEL_SHIFT = 3
UARTIFLS_MASK = 0x3F
UARTILPR_MASK = 0xFF
UARTIBRD_MASK = 0xFFFF
UARTFBRD_MASK = 0x3F
UARTDMACR_MASK = 0x7

# Reset values.
UARTCR_RESET = UARTCR_RXE | UARTCR_TXE
UARTIFLS_RESET = 0x12

#: Bytes a line carries at a time before it rests (Linux's pl011_fifo_to_tty takes at most 256 an interrupt).
LINE_BURST = 256

#: The reference clock (the board's ``apb-pclk``, which its device tree gives as ``uartclk``).
UARTCLK_HZ = 24_000_000

#: Revision r1p4 and earlier (this ID's revision field is 1): 16-entry FIFOs, as Linux assumes.
FIFO_DEPTH = 16
# RXIFLSEL 0b000..0b100: the FIFO becomes >= 1/8, 1/4, 1/2, 3/4, 7/8 full.
RX_TRIGGER_LEVELS = (2, 4, 8, 12, 14)


class Pl011(WordRegisterDevice):
    """The UART; ``on_tx`` is the console sink, ``irq_out`` the combined UARTINTR (SPI 1)."""

    name = "pl011"
    size = 0x1000

    def __init__(
        self, on_tx: Callable[[bytes], None], irq_out: IrqLine, now_ns: Callable[[], int] | None = None
    ) -> None:
        super().__init__()
        self._on_tx = on_tx
        #: Virtual time, for a line with a baud rate and flow control (None: bytes arrive at once).
        self._now = now_ns
        #: When the line may begin its next burst (virtual ns), and the bytes left in the current one.
        self._line_ns = 0
        self._burst_left = 0
        self._irq_out = irq_out
        self._irq_level = False
        self.rx_fifo: deque[int] = deque()
        self.rx_backlog: deque[int] = deque()
        self.reset()

    # -- machine interface -------------------------------------------------------------
    @property
    def irq_level(self) -> bool:
        """The level last driven on UARTINTR."""
        return self._irq_level

    def push_rx(self, data: bytes) -> None:
        """Queue bytes arriving on the receive line; they enter the FIFO as it has room."""
        self.rx_backlog.extend(data)
        self._receive()
        self._drive()

    def next_deadline_ns(self) -> int | None:
        """When the line can deliver its next byte into the FIFO (virtual ns), or None if it cannot."""
        if self._now is None or not self.rx_backlog or self._burst_left or not self._rts():
            return None
        return self._line_ns

    def update(self) -> None:
        """Deliver what the line has carried up to now."""
        self._receive()
        self._drive()

    # -- Device ---------------------------------------------------------------------------
    def reset(self) -> None:
        self.rsr = 0
        self.ilpr = 0
        self.ibrd = 0
        self.fbrd = 0
        self.lcr_h = 0
        self.cr = UARTCR_RESET
        self.ifls = UARTIFLS_RESET
        self.imsc = 0
        # The empty transmit FIFO is at or below any trigger level.
        self.ris = UART_TXIM
        self.dmacr = 0
        self.rx_fifo.clear()
        self.rx_backlog.clear()
        self._line_ns = 0
        self._burst_left = 0
        self._drive()

    def get_state(self) -> dict[str, Any]:
        return {
            "rsr": self.rsr,
            "ilpr": self.ilpr,
            "ibrd": self.ibrd,
            "fbrd": self.fbrd,
            "lcr_h": self.lcr_h,
            "cr": self.cr,
            "ifls": self.ifls,
            "imsc": self.imsc,
            "ris": self.ris,
            "dmacr": self.dmacr,
            "rx_fifo": bytes(self.rx_fifo).hex(),
            "rx_backlog": bytes(self.rx_backlog).hex(),
            "line_ns": self._line_ns,
            "burst_left": self._burst_left,
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        masks = {
            "rsr": 0xF,
            "ilpr": UARTILPR_MASK,
            "ibrd": UARTIBRD_MASK,
            "fbrd": UARTFBRD_MASK,
            "lcr_h": UARTLCR_H_MASK,
            "cr": UARTCR_MASK,
            "ifls": UARTIFLS_MASK,
            "imsc": UART_INT_MASK,
            "ris": UART_INT_MASK,
            "dmacr": UARTDMACR_MASK,
        }
        registers = {}
        for key, mask in masks.items():
            value = state_int(state, self.name, key)
            if value & ~mask:
                raise DeviceStateError(f"{self.name} state field {key!r} = {value:#x} sets reserved bits")
            registers[key] = value
        queues = {}
        for key in ("rx_fifo", "rx_backlog"):
            text = state_field(state, self.name, key, str)
            try:
                queues[key] = bytes.fromhex(text)
            except ValueError as err:
                raise DeviceStateError(f"{self.name} state field {key!r} is not hex bytes") from err
        depth = FIFO_DEPTH if registers["lcr_h"] & UARTLCR_H_FEN else 1
        if len(queues["rx_fifo"]) > depth:
            raise DeviceStateError(
                f"{self.name} state holds {len(queues['rx_fifo'])} bytes in a {depth}-entry receive FIFO"
            )
        for key, value in registers.items():
            setattr(self, key, value)
        self.rx_fifo = deque(queues["rx_fifo"])
        self.rx_backlog = deque(queues["rx_backlog"])
        self._line_ns = state_int(state, self.name, "line_ns", bits=64)  # virtual ns: past 4.3 s after 2**32
        self._burst_left = state_int(state, self.name, "burst_left")
        self._irq_level = bool(self.ris & self.imsc)
        self._irq_out(self._irq_level)

    # -- MMIO -----------------------------------------------------------------------------
    def read_word(self, offset: int) -> int:
        if offset == UARTDR:
            return self._read_data()
        if offset == UARTRSR:
            return self.rsr
        if offset == UARTFR:
            return self._flags()
        if offset == UARTMIS:
            return self.ris & self.imsc
        register = _PLAIN_REGISTERS.get(offset)
        if register is not None:
            value: int = getattr(self, register[0])
            return value
        if UARTPeriphID0 <= offset <= UARTPCellID3:
            return PL011_ID[(offset - UARTPeriphID0) >> 2]
        self.guest_error(("read", offset), f"read of write-only or unknown offset {offset:#x}")
        return 0

    def write_word(self, offset: int, value: int) -> None:
        if offset == UARTDR:
            self._on_tx(bytes((value & 0xFF,)))
            self.ris |= UART_TXIM  # the byte left at once: the FIFO fell to/below its trigger level
        elif offset == UARTRSR:
            self.rsr = 0  # UARTECR: any write clears the error flags
        elif offset == UARTICR:
            self.ris &= ~value & UART_INT_MASK
        elif offset == UARTLCR_H:
            if (self.lcr_h ^ value) & UARTLCR_H_FEN:
                # Enabling or disabling the FIFOs flushes them (the backlog is still on the wire).
                self.rx_fifo.clear()
                self.ris &= ~(UART_RXIM | UART_RTIM)
            self.lcr_h = value & UARTLCR_H_MASK
            self._receive()
        elif offset == UARTIFLS:
            self.ifls = value & UARTIFLS_MASK
            self._update_rx_level()
        elif offset in _PLAIN_REGISTERS and offset not in (UARTRIS,):
            name, mask = _PLAIN_REGISTERS[offset]
            if value & ~mask:
                self.guest_error(("reserved-bits", offset), f"write of {value:#x} sets reserved bits at {offset:#x}")
            setattr(self, name, value & mask)
            if offset == UARTCR:
                self._receive()  # RTS may have been raised (flow control)
        else:
            self.guest_error(("write", offset), f"write of {value:#x} to read-only or unknown offset {offset:#x}")
        self._drive()

    # -- receive path ----------------------------------------------------------------------
    def _depth(self) -> int:
        return FIFO_DEPTH if self.lcr_h & UARTLCR_H_FEN else 1

    def _rx_trigger(self) -> int:
        if not self.lcr_h & UARTLCR_H_FEN:
            return 1
        select = (self.ifls >> UARTIFLS_RXIFLSEL_SHIFT) & 0x7
        if select >= len(RX_TRIGGER_LEVELS):
            self.guest_error(("rxiflsel", select), f"reserved RXIFLSEL {select:#b}; using 1/2")
            select = 2
        return RX_TRIGGER_LEVELS[select]

    def _receive(self) -> None:
        """Move backlog bytes into the FIFO while it has room (on a line: as they arrive, and while RTS is up)."""
        depth = self._depth()
        arrived = False
        if self._now is None:
            while self.rx_backlog and len(self.rx_fifo) < depth:
                self.rx_fifo.append(self.rx_backlog.popleft())
                arrived = True
        elif self._rts():
            now = self._now()
            if not self._burst_left and self.rx_backlog and now >= self._line_ns:
                self._burst_left = LINE_BURST
            while self.rx_backlog and len(self.rx_fifo) < depth and self._burst_left:
                self.rx_fifo.append(self.rx_backlog.popleft())
                self._burst_left -= 1
                arrived = True
                if not self._burst_left or not self.rx_backlog:
                    self._burst_left = 0
                    self._line_ns = now + LINE_BURST * self._char_ns()
        if arrived:
            self.ris |= UART_RTIM  # the receive timeout is modelled as elapsing at once
        self._update_rx_level()

    def _rts(self) -> bool:
        return bool(self.cr & (UARTCR_RTS | UARTCR_RTSEN))

    def _char_ns(self) -> int:
        """Ten bit periods at the programmed baud rate: UARTCLK / (16 x (IBRD + FBRD / 64)) (DDI0183 3.3.6)."""
        divisor_64ths = max(64, self.ibrd * 64 + self.fbrd)  # unprogrammed: the fastest the divisor allows
        return 10 * 1_000_000_000 * 16 * divisor_64ths // (64 * UARTCLK_HZ)

    def _update_rx_level(self) -> None:
        if len(self.rx_fifo) >= self._rx_trigger():
            self.ris |= UART_RXIM
        else:
            self.ris &= ~UART_RXIM

    def _read_data(self) -> int:
        if not self.rx_fifo:
            return 0
        data = self.rx_fifo.popleft()
        self.rsr = 0  # no line errors are modelled
        if not self.rx_fifo:
            self.ris &= ~UART_RTIM
        self._receive()
        self._drive()
        return data

    def _flags(self) -> int:
        flags = UARTFR_TXFE | (UARTFR_CTS if self._now is not None else 0)
        if not self.rx_fifo:
            flags |= UARTFR_RXFE
        if len(self.rx_fifo) >= self._depth():
            flags |= UARTFR_RXFF
        return flags

    def _drive(self) -> None:
        level = bool(self.ris & self.imsc)
        if level != self._irq_level:
            self._irq_level = level
            self._irq_out(level)


# Registers whose read returns a stored field and whose write stores it masked.
_PLAIN_REGISTERS: dict[int, tuple[str, int]] = {
    UARTILPR: ("ilpr", UARTILPR_MASK),
    UARTIBRD: ("ibrd", UARTIBRD_MASK),
    UARTFBRD: ("fbrd", UARTFBRD_MASK),
    UARTLCR_H: ("lcr_h", UARTLCR_H_MASK),
    UARTCR: ("cr", UARTCR_MASK),
    UARTIFLS: ("ifls", UARTIFLS_MASK),
    UARTIMSC: ("imsc", UART_INT_MASK),
    UARTRIS: ("ris", UART_INT_MASK),
    UARTDMACR: ("dmacr", UARTDMACR_MASK),
}
