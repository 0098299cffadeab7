"""The host side of ``qppsuite run -i``: the user's terminal (or a pipe) as the guest console's keyboard.

On a terminal, :func:`raw_terminal` hands every key to the guest (Ctrl-C
included: the guest's own tty turns it into SIGINT for its foreground job)
and restores the terminal however the run ends; :data:`LEAVE_KEY` (Ctrl-])
leaves the console, which stops the run as ``detached``.  From a pipe, the
bytes go to the guest as typed (a newline added after a last line without
one), then, at the pipe's end, Ctrl-D (end of file for a shell reading a
terminal line).  The bytes reach the guest when the
run loop polls (:class:`qppsuite.core.machine.HostInput`), where each is
stamped with the instruction count it arrived at, for the recording.

After a pipe's end, the Ctrl-D is given again as the guest keeps going idle, as
a user presses it until the shell leaves, at the 1st, 2nd, 4th, 8th... idle
after the last one: a Ctrl-D that reaches a tty in canonical mode while a
command runs becomes a NUL in its buffer (drivers/tty/n_tty.c), which busybox's
line editor ignores.
"""

import contextlib
import os
import sys
import termios
import threading
import tty
from collections.abc import Iterator

from qppsuite.cli import err_console
from qppsuite.cli.terminal import styled
from qppsuite.errors import QppsuiteError

#: Ctrl-], the key that leaves the console (as telnet's escape character).
LEAVE_KEY = 0x1D
#: What a pipe's end becomes for the guest: Ctrl-D, the terminal's end-of-file character.
END_OF_INPUT = b"\x04"


class KeyboardInput:
    """Reads ``fd`` on a thread; the run loop takes the bytes with :meth:`poll`.

    ``leave`` is the byte that leaves the console (None from a pipe, where every byte is data).
    """

    def __init__(self, fd: int, leave: int | None) -> None:
        self._fd = fd
        self._leave = leave
        self._buffer = bytearray()
        self._ended = False  # the pipe's end, or the leave key, was read
        self._left = False
        self._last = b""  # the last byte read
        #: After a pipe's end: the guest's idle waits since the last Ctrl-D, and how many the next one needs.
        self._idle = 0
        self._idle_needed = 1
        self._arrived = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._read, name="qppsuite-keyboard", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 4096)
            except OSError:
                data = b""
            with self._lock:
                if not data:
                    self._ended = True
                    if self._leave is None and self._last not in (b"", b"\n", b"\r"):
                        self._buffer += b"\n"  # a last line with no newline still ends, as a shell reads it
                elif self._leave is not None and self._leave in data:
                    self._buffer += data[: data.index(self._leave)]
                    self._ended = self._left = True
                else:
                    self._buffer += data
                if data:
                    self._last = data[-1:]
                self._arrived.set()
            if self._ended:
                return

    def poll(self, limit: int) -> bytes | None:
        """Up to ``limit`` bytes read so far; None once the user left and everything before it was taken."""
        with self._lock:
            if not self._buffer and self._idle >= self._idle_needed:
                self._buffer += END_OF_INPUT
                self._idle = 0
                self._idle_needed *= 2
            data = bytes(self._buffer[:limit])
            del self._buffer[:limit]
            if not self._buffer:
                self._arrived.clear()
                if not data and self._left:
                    return None
            return data

    def wait(self, seconds: float) -> None:
        """Block until bytes are waiting (or the user left) or ``seconds`` have passed."""
        with self._lock:
            if self._ended and not self._left and self._leave is None:
                self._idle += 1
        self._arrived.wait(seconds)  # after a pipe's end nothing arrives: the guest waits in real time


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """The terminal on ``fd`` in raw mode (no echo, no line editing, no signals from keys) for the block,
    and exactly as it was afterwards, however the block ends."""
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def keyboard(interactive: bool, quiet: bool) -> Iterator[KeyboardInput | None]:
    """The guest console's keyboard for ``-i``: this terminal in raw mode (restored afterwards), or the pipe."""
    if not interactive:
        yield None
        return
    if sys.stdin is None or sys.stdin.closed:  # started with stdin closed (`<&-`)
        raise QppsuiteError("-i: standard input is closed, so nothing can be typed into the guest")
    fd = sys.stdin.fileno()
    if not sys.stdin.isatty():
        yield KeyboardInput(fd, leave=None)
        return
    if not quiet:
        err_console.print(styled(("qppsuite:", "bold"), " this terminal is the guest console; Ctrl-] leaves"))
    with raw_terminal(fd):
        yield KeyboardInput(fd, leave=LEAVE_KEY)
