"""What reaches the user's terminal: text from the guest, a database, a file or the command line is data.

It is never interpreted as rich markup (``[bold]``, ``[/]``), emoji codes
(``:x:``) or terminal control sequences (ESC, C1 controls, bidirectional
overrides).  Every console the CLI prints with is a :class:`SafeConsole`,
whose string rendering is the one boundary: markup and emoji are off, and each
control or invisible formatting character is shown as an escape, the way
strace shows unprintable bytes (``\\x1b``, ``\\u202e``).  The CLI's own
styling is applied to :class:`rich.text.Text` built with :func:`styled`.
"""

import codecs
import contextlib
import io
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console, ConsoleDimensions
from rich.text import Text

if TYPE_CHECKING:
    from rich.progress import TaskID

#: The channel's transfers get a progress bar from this many bytes.
PROGRESS_FROM_BYTES = 1 << 20

#: Anything outside printable ASCII is looked at; only the categories below are escaped.
_CANDIDATE = re.compile(r"[^\x20-\x7e]")
#: Unicode categories a terminal acts on or does not show: controls (C0, DEL, C1), format characters
#: (bidi overrides, zero-width), line and paragraph separators, lone surrogates, unassigned, private use.
_INVISIBLE = frozenset(("Cc", "Cf", "Zl", "Zp", "Cs", "Cn", "Co"))


def _escape(char: str) -> str:
    """``\\xNN`` for an ASCII control; ``\\uNNNN`` (``\\UNNNNNNNN``) for any other character, C1 controls too, so
    that U+0085 is never spelt like the byte 0x85 of text that is not UTF-8 (``\\x85``, as the views show it)."""
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


#: The lone surrogates Python's ``surrogateescape`` gives the bytes 0x80-0xff of text that is not UTF-8 (a command
#: line's, a file name's): shown as those bytes, ``\\xNN``, as the views show such bytes of guest text.
_ESCAPED_BYTES = range(0xDC80, 0xDD00)


def _escape_invisible(match: re.Match[str]) -> str:
    char = match.group()
    if ord(char) in _ESCAPED_BYTES:
        return f"\\x{ord(char) - 0xDC00:02x}"
    return _escape(char) if unicodedata.category(char) in _INVISIBLE else char


def _escape_invisible_but_layout(match: re.Match[str]) -> str:
    char = match.group()
    return char if char in "\n\r\t" else _escape_invisible(match)


def visible(text: str) -> str:
    """``text`` with every control and invisible formatting character escaped (``"a\\x1bb"`` -> ``a\\x1bb``).

    Newlines and tabs are escaped too: in one table cell or one error line, a
    guest-chosen newline could forge a row.  Printable text, including
    non-ASCII letters, is unchanged.
    """
    return _CANDIDATE.sub(_escape_invisible, text)


def styled(*parts: str | tuple[str, str]) -> Text:
    """One line of CLI output: each part is data (``str``) or data with a style (``(text, "bold red")``)."""
    line = Text()
    for part in parts:
        if isinstance(part, tuple):
            line.append(visible(part[0]), style=part[1])
        else:
            line.append(visible(part))
    return line


def lines(items: Iterable[str]) -> Text:
    """Several data items, one per line (a table cell listing names): the newlines are ours, not the data's."""
    return Text("\n").join(styled(item) for item in items)


#: The width of a console writing to a pipe or a file: wide enough that no line of ours is wrapped.
PIPE_WIDTH = 10_000


class SafeConsole(Console):
    """A rich console that renders every string as data: no markup, no emoji, control bytes escaped."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **kwargs)

    @property
    def size(self) -> ConsoleDimensions:
        """The terminal's size; in a pipe or a file, no width limit unless COLUMNS or ``width=`` sets one.

        Rich would wrap at 80 columns (or at the width of a terminal on another of the standard streams),
        cutting a path, a command to copy or a summary line in two.
        """
        if self._width is None and not self.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
            return ConsoleDimensions(PIPE_WIDTH, super().size.height)
        return super().size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]

    def render_str(self, text: str, **kwargs: Any) -> Text:
        """Tables, trees, titles and ``print`` all turn strings into Text here."""
        kwargs["markup"] = False
        kwargs["emoji"] = False
        return super().render_str(visible(text), **kwargs)


#: What an interactive console passes to the terminal besides text: cursor moves, erasing and colours (CSI
#: with numeric parameters and one of these final bytes: ECMA-48 CUU CUD CUF CUB CHA CUP HVP ED EL DCH ECH ICH
#: SGR), backspace and the bell.  Nothing that sets modes, titles, the clipboard or asks the terminal to answer.
_SAFE_CONTROL = re.compile(r"\x1b\[[0-9;]{0,16}[ABCDGHfKPX@m]|\x1b\[[012]?J|[\x07\x08]")
#: A device status report request (ECMA-48 DSR, ``ESC [ 6 n``: where is the cursor?), which busybox's line
#: editor sends before each prompt: dropped (no terminal answers it here), neither passed nor shown.
_STATUS_REQUEST = re.compile(r"\x1b\[[0-9;]{0,16}n")
#: A text's tail that may be the start of a safe control, held back until the next write completes it.
_PARTIAL_CONTROL = re.compile(r"\x1b(\[[0-9;]{0,16})?$")


class ConsoleStream:
    """The guest's serial console on a stream: raw bytes to a file, escaped to a terminal.

    A real serial console would pass the guest's escape sequences to the
    terminal; a malicious guest could then retitle the window, redefine keys or
    hide lines.  On a terminal, bytes are decoded as UTF-8 (invalid bytes shown
    as ``\\xNN``) and every control except newline, carriage return and tab is
    escaped.  An ``interactive`` console (``run -i``, where the guest edits the
    line the user types) also passes the few controls in :data:`_SAFE_CONTROL`.
    Writes to a file or a pipe keep the bytes exactly.

    A write that fails (a full disk, a pipe whose reader left, as ``| head`` does) stops the console, not the
    run: :attr:`error` keeps the first failure, later output is dropped, and standard output is pointed at
    ``/dev/null`` so that nothing else the command prints there fails again.
    """

    def __init__(self, stream: IO[bytes], terminal: bool | None = None, *, interactive: bool = False) -> None:
        self.stream = stream
        self.terminal = stream.isatty() if terminal is None else terminal
        self.interactive = interactive
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="backslashreplace")
        self._held = ""
        #: The first write that failed; None while every write succeeded.
        self.error: OSError | None = None

    def __call__(self, data: bytes) -> None:
        if self.error is not None:
            return
        if self.terminal:
            text = self._decoder.decode(data)
            escape = self._interactive if self.interactive else self._plain
            data = escape(text)
        try:
            self.stream.write(data)
            if b"\n" in data or self.interactive:
                self.stream.flush()
        except OSError as exc:
            self.failed(exc)

    def failed(self, exc: OSError) -> None:
        """Stop the console after ``exc``: kept in :attr:`error`; standard output, if that is the stream, is
        pointed at ``/dev/null`` (what the failed write held goes there)."""
        if self.error is None:
            self.error = exc
        with contextlib.suppress(OSError, ValueError, io.UnsupportedOperation):
            fd = self.stream.fileno()
            if fd == 1:
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, fd)
                os.close(null)

    @staticmethod
    def _plain(text: str) -> bytes:
        return _CANDIDATE.sub(_escape_invisible_but_layout, text).encode("utf-8", errors="backslashreplace")

    def _interactive(self, text: str) -> bytes:
        text, self._held = self._held + text, ""
        partial = _PARTIAL_CONTROL.search(text)
        if partial is not None:
            text, self._held = text[: partial.start()], partial.group()
        text = _STATUS_REQUEST.sub("", text)
        out = []
        position = 0
        for control in _SAFE_CONTROL.finditer(text):
            out.append(_CANDIDATE.sub(_escape_invisible_but_layout, text[position : control.start()]))
            out.append(control.group())
            position = control.end()
        out.append(_CANDIDATE.sub(_escape_invisible_but_layout, text[position:]))
        return "".join(out).encode("utf-8", errors="backslashreplace")


@contextlib.contextmanager
def channel_progress(console: Console, quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on ``console`` for the channel's bytes, shown for :data:`PROGRESS_FROM_BYTES` or more."""
    if quiet:
        yield None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    bar = Progress(BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=console, transient=True)
    task: list[TaskID] = []

    def update(sent: int, total: int) -> None:
        if total < PROGRESS_FROM_BYTES:
            return
        if not task:
            bar.start()
            task.append(bar.add_task("to the guest", total=total))
        bar.update(task[0], completed=sent)
        if sent >= total:
            bar.stop()  # transient: the bar goes, and the console has the terminal again

    try:
        yield update
    finally:
        if task:  # a bar never shown prints nothing, not even the newline rich ends one with
            bar.stop()


#: A kernel log line as the console shows it: printk's time stamp first, ``[%5lu.%06lu] `` (kernel/printk/
#: printk.c, print_time: seconds padded to five columns, then six digits of microseconds): ``[    0.673589] ``.
_PRINTK = re.compile(rb"\[ *\d+\.\d{6}\] ")
#: What a line that may still become a time stamp starts with, while its end has not arrived.
_PRINTK_PREFIX = re.compile(rb"\[ *(\d+(\.\d{0,6}\]?)?)?")
#: The line init.sh prints on the console with the command's exit status, the last before it powers off.
_EXIT_MARK = b"QPPSUITE-EXIT "
#: That line, at the end of a console line (a command's output may lack its last newline).
_EXIT_LINE = re.compile(rb"QPPSUITE-EXIT (-?\d{1,3})\r?\n\Z")


def _exit_mark_start(text: bytes) -> int:
    """Where a part of ``text`` that may still become the exit line begins (``len(text)`` if none does)."""
    for at in range(max(0, len(text) - len(_EXIT_MARK) - 5), len(text)):
        tail = text[at:]
        if _EXIT_MARK.startswith(tail) or (
            tail.startswith(_EXIT_MARK) and re.fullmatch(rb"-?\d{0,3}\r?", tail[len(_EXIT_MARK) :])
        ):
            return at
    return len(text)


class CommandConsole:
    """The console of a run of the user's command with the kernel quiet: printk's lines are left out, and
    ``mark`` is called when the command starts (``"start"``) and, at :meth:`finish`, with the command's exit
    status (``"end N"``), or ``"unfinished"`` when the run stopped first.  With the channel the start is
    :meth:`handed_over` (the agent was handed the script) and the status is the agent's report
    (:meth:`reported`), so nothing the program prints can fake either; a kernel-like line after the start is
    counted (``"hidden N"``), the command's first line too.  A run without the channel (``--cold`` with no
    file to carry: /init runs the command) has neither: there the first line that is not the kernel's starts
    the command, a kernel-like line before it cannot be told from the boot's log, and the status is init.sh's
    line (below).

    init.sh's ``QPPSUITE-EXIT N`` line, the last before it powers off, is not passed on.  A guest program
    can print such a line too: one is taken as init.sh's only when nothing but the kernel's lines follows it
    before the run ends; until then it is held, and passed on as the program's output when more output
    comes, or, with the channel, when the agent reported no status (the program powered the guest off).
    Lines pass to ``sink`` as they come; only a line's start that may still turn out to be a time stamp
    (``[  12.``) or the exit line is held until it can be told apart.  A kernel line is a whole line starting
    with printk's exact stamp; one a program prints that way is left out too (``--kernel-log`` shows all).
    """

    def __init__(self, sink: Callable[[bytes], None], mark: Callable[[str], None], *, kernel: bool = False) -> None:
        self.sink = sink
        self.mark = mark
        #: Pass the kernel's lines too (``--kernel-log``): the marks still say where the command's output is.
        self.kernel = kernel
        self._held = b""
        self._mode = "start"  # at a line's start; "pass", "drop" or "kernel": the rest of a line
        self._started = False
        self._exit: tuple[bytes, bytes] | None = None  # an exit line seen last: (its bytes, its status)
        self._after: list[bytes] = []  # the kernel's lines since it (--kernel-log), shown after the end mark
        self._hidden = 0  # kernel-like lines left out since the command started
        self._hidden_after_exit = 0  # those since an exit line: power-off's, unless more output follows
        self._midline = False  # the output passed so far ends inside a line
        self._channel = False  # the channel said when the command started, and says how it ended
        self._status: int | None = None  # the agent's report of the script's exit status

    def handed_over(self) -> None:
        """The channel handed the agent the script (``GuestIO.on_script``): the command starts now."""
        self._channel = True
        self.start()

    def reported(self, status: int) -> None:
        """The agent reported the script's exit status (``GuestIO.on_status``)."""
        self._status = status

    def start(self) -> None:
        """The command starts: the agent has been handed its script (``GuestIO.on_script``), or, in a run
        without the channel, its first line that is not the kernel's has come."""
        if not self._started:
            self._started = True
            self.mark("start")

    def __call__(self, data: bytes) -> None:
        held = self._held + data
        while held:
            if self._mode == "start":
                if _PRINTK.match(held):
                    self._mode = "kernel" if self.kernel else "drop"
                    if self._started and not self.kernel:  # after an exit line: power-off's, until output
                        if self._exit is None:
                            self._hidden += 1
                        else:
                            self._hidden_after_exit += 1
                    continue
                if b"\n" not in held and _PRINTK_PREFIX.fullmatch(held):
                    break  # not told apart yet
                self._not_the_end()
                self.start()  # without the channel's word (see above), the command's first line
                self._mode = "pass"
                continue
            end = held.find(b"\n")
            if self._mode == "pass" and end < 0:
                keep = _exit_mark_start(held)
                if keep:
                    self._pass(held[:keep])
                held = held[keep:]
                break
            line, held = (held, b"") if end < 0 else (held[: end + 1], held[end + 1 :])
            if self._mode == "pass":
                found = _EXIT_LINE.search(line)
                if found is None:
                    self._pass(line)
                else:
                    if found.start():
                        self._pass(line[: found.start()])
                    self._exit = (line[found.start() :], found[1])
            elif self._mode == "kernel":
                (self._after.append if self._exit is not None else self.sink)(line)
            if end >= 0:
                self._mode = "start"
        self._held = held

    def _not_the_end(self) -> None:
        """Output came after an exit line: it was the program's, not init.sh's."""
        if self._exit is not None:
            self._pass(self._exit[0])
            for line in self._after:
                self._pass(line)
            self._exit, self._after = None, []
            self._hidden += self._hidden_after_exit
        self._hidden_after_exit = 0

    def _pass(self, data: bytes) -> None:
        if data:
            self.sink(data)
            self._midline = not data.endswith(b"\n")

    def finish(self) -> None:
        """The run has ended: mark the command's end with its status (or ``"unfinished"``), then pass on what
        was held after it.  Before the end mark: ``"midline"`` when the output ended inside a line (a
        ``printf`` without a newline), and ``"hidden N"`` when N of the command's lines looked like the
        kernel's and were left out."""
        held, self._held = self._held, b""
        kernel_like = self._mode == "kernel" or (self._mode == "start" and _PRINTK_PREFIX.fullmatch(held))
        if held and kernel_like:  # a line cut by the power-off: the kernel's, most likely
            if self.kernel:
                (self._after.append if self._exit is not None else self._pass)(held)
        elif held and self._mode != "drop":  # the program's last line, never ended
            self._not_the_end()
            self._pass(held)
        if self._channel and self._status is None:  # no report: an exit line held was the program's own
            self._not_the_end()
        if self._midline:
            self.mark("midline")
        if self._hidden:
            self.mark(f"hidden {self._hidden}")
        if self._channel:
            self.mark("unfinished" if self._status is None else f"end {self._status}")
        else:
            self.mark(f"end {self._exit[1].decode('ascii')}" if self._exit is not None else "unfinished")
        for line in self._after:
            self.sink(line)
        self._exit, self._after = None, []
