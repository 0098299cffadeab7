"""The host<->guest channel: the user's files in, a script run, files back out, over ``ttyAMA1``.

The board's second PL011 (:mod:`qppsuite.core.board`) is the wire; the guest
end is ``qppsuite/images/guest/agent.sh``, which /init runs as the command.
Each time it waits for work the agent says ``QPPSUITE-READY`` (a point a
snapshot may be taken at: the ready snapshot at the first, a user's named one
after a script), then asks for one request with a ``G`` line, and the host
answers each with the next one :meth:`Channel.prepare` queued: files, then the
script, then copies out, then the exit (none when a named snapshot is taken
after the script).  The line delivers them as fast as the guest reads (with flow
control), so what the guest receives, and when, is a function of the guest
alone: the run stays deterministic.

The line carries about 150 KB/s: each byte costs the UART model two register
reads in Python and the guest's tty layer a pass per character.  So a file of
:data:`BULK_FROM` bytes or more goes in by hypercall (:mod:`qppsuite.core.hypercall`):
the line carries only its header, and the agent runs ``qpp-recv`` (a program
of :mod:`qppsuite.images.guest.transfer`, sent first as a small file), which
takes the bytes in 64 KB chunks; a copy-out comes back the same way through
``qpp-send``.

Everything that comes back is hostile input: a line is at most
:data:`MAX_LINE` bytes, a copy-out at most :data:`MAX_COPY_OUT` bytes and only
for a path the host asked for; anything else is a :class:`ChannelError`.
"""

from __future__ import annotations

import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from qppsuite.errors import QppsuiteError
from qppsuite.hostfiles import replace_file, unwritable
from qppsuite.images.guest import transfer

#: Where a file given without a guest path goes (the agent puts it first on the PATH).
DEFAULT_GUEST_DIR = "/usr/local/bin"
READY = b"QPPSUITE-READY"
#: The longest header line the guest may send back.
MAX_LINE = 4096
#: The largest file the guest may send back.
MAX_COPY_OUT = 1 << 30
#: Files from this size go in by hypercall, not on the line.
BULK_FROM = 16 << 10
#: Where the agent finds the bulk programs (sent as the first requests of a run that needs them).
RECEIVER = "/tmp/.qppsuite/qpp-recv"
SENDER = "/tmp/.qppsuite/qpp-send"


class ChannelError(QppsuiteError):
    """A file or path the channel cannot carry, or a guest that broke the channel's protocol."""

    exit_code = 2


@dataclass(frozen=True)
class GuestFile:
    """A host file for the guest: ``guest`` is its absolute path there, ``mode`` its permission bits."""

    host: Path
    guest: str
    mode: int


@dataclass(frozen=True)
class CopyOut:
    """A guest file to bring back after the script: ``guest`` (absolute) to ``host``."""

    guest: str
    host: Path


def _guest_path(text: str, what: str) -> str:
    if not text.startswith("/") or "\n" in text or "\0" in text or any(part == ".." for part in text.split("/")):
        raise ChannelError(f"{what} {text!r}: a guest path must be absolute, with no '..', newline or NUL")
    if text != text.strip():
        raise ChannelError(f"{what} {text!r}: a guest path may not begin or end with white space")
    try:
        text.encode()
    except UnicodeEncodeError:
        raise ChannelError(f"{what} {text!r}: a guest path must be text (UTF-8), and this name is not") from None
    return text


def parse_file_spec(spec: str) -> list[GuestFile]:
    """``HOST[:GUEST]`` of ``--file``: a file, or a directory with everything under it, permissions kept.

    Without GUEST a file lands in :data:`DEFAULT_GUEST_DIR` under its own name, a directory as
    ``/root/NAME``.  A GUEST ending in ``/`` is a directory to put it in (a directory lands there as NAME).
    A host name may hold ``:``: HOST is the longest part before a ``:`` (or the whole) that exists on the host.
    """
    host_text, sep, guest_text = _split_existing(spec)
    if not host_text:  # Path("") is the current directory
        where = "before the ':'" if sep else "given"
        raise ChannelError(f"--file {spec!r}: no host file or directory {where}")
    host = Path(host_text).expanduser()
    if not host.exists():
        raise ChannelError(f"--file {spec!r}: {host} does not exist")
    if host.is_dir():
        base = guest_text or f"/root/{host.resolve().name}"
        if guest_text.endswith("/"):  # a directory to put it in, as for a file
            base = f"{guest_text}{host.resolve().name}"
        base = _guest_path(base.rstrip("/") or "/", "--file")
        files = []
        for path in _regular_files(host):
            relative = path.relative_to(host).as_posix()
            guest = _guest_path(f"{base.rstrip('/')}/{relative}", f"--file {spec!r}: the file")
            files.append(GuestFile(path, guest, _mode(path)))
        return files
    if not host.is_file():
        raise ChannelError(f"--file {spec!r}: {host} is not a regular file")
    if not sep or not guest_text:
        guest = f"{DEFAULT_GUEST_DIR}/{host.name}"
    elif guest_text.endswith("/"):
        guest = f"{guest_text}{host.name}"
    else:
        guest = guest_text
    return [GuestFile(host, _guest_path(guest, "--file"), _mode(host))]


def _regular_files(top: Path) -> list[Path]:
    """The regular files under ``top`` in name order, symbolic links followed as ``cp -rL`` follows them; a link
    back to a directory it is inside (a loop) is left out, as are broken links, FIFOs, sockets and devices.  A
    directory that cannot be listed is one :class:`ChannelError` line."""
    found: list[Path] = []
    stack = [(top, frozenset({top.resolve()}))]
    while stack:
        directory, inside = stack.pop()
        try:
            entries = sorted(directory.iterdir(), reverse=True)  # popped in name order
        except OSError as exc:
            raise ChannelError(f"--file: cannot read the directory {directory}: {exc.strerror or exc}") from None
        for path in entries:
            if path.is_dir():
                real = path.resolve()
                if real not in inside:
                    stack.append((path, inside | {real}))
        found.extend(path for path in reversed(entries) if path.is_file())
    return sorted(found)


def _split_existing(spec: str) -> tuple[str, str, str]:
    """``spec`` as ``(host, ":", guest)`` at the last ``:`` whose left part exists on the host (the whole spec
    first), or at the first ``:`` when none does (the error then names that part)."""
    if Path(spec).expanduser().exists():
        return spec, "", ""
    at = len(spec)
    while (at := spec.rfind(":", 0, at)) >= 0:
        if Path(spec[:at]).expanduser().exists():
            return spec[:at], ":", spec[at + 1 :]
    return spec.partition(":")


def parse_copy_outs(specs: Sequence[str]) -> list[CopyOut]:
    """:func:`parse_copy_out` of each; two that would write one host file are refused (the first was lost)."""
    wanted = [parse_copy_out(spec) for spec in specs]
    seen: dict[Path, str] = {}
    for want in wanted:
        where = want.host.resolve()
        if where in seen:
            raise ChannelError(f"--copy-out {seen[where]} and {want.guest} would both be written to {want.host}")
        seen[where] = want.guest
    return wanted


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def parse_copy_out(spec: str) -> CopyOut:
    """``GUEST[:HOST]`` of ``--copy-out``; without HOST, the file's name in the current directory, and with a
    HOST that is a directory (or ends in ``/``), in it.  A HOST that cannot be written is refused now, before
    the run."""
    guest_text, _, host_text = spec.partition(":")
    guest = _guest_path(guest_text, "--copy-out")
    host = Path(host_text).expanduser() if host_text else Path(PurePosixPath(guest).name or "copy-out")
    if host.is_dir() or host_text.endswith("/"):
        host = host / PurePosixPath(guest).name
    why = unwritable(host)
    if why is not None:
        raise ChannelError(f"--copy-out {spec!r}: cannot write {host}: {why}")
    return CopyOut(guest, host)


@dataclass
class Channel:
    """One run's conversation with the agent: ``script`` is the shell script it runs; ``on_ready`` is
    called when the agent says it is ready, from inside the run (the machine's channel output)."""

    files: Sequence[GuestFile] = ()
    script: bytes = b""
    copy_out: Sequence[CopyOut] = ()
    #: The script's exit status, once the agent reported it.
    status: int | None = None
    #: Guest path -> contents, for each copy-out the guest answered; ``missing`` for those it had not.
    received: dict[str, bytes] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    #: Guest paths of files the agent could not write (no room, a directory in the way): the run stops there.
    not_written: list[str] = field(default_factory=list)
    #: Copies out the host could not write after all (the path checked before the run changed): why, each.
    unsaved: list[str] = field(default_factory=list)
    on_ready: Callable[[], None] | None = None
    #: Called when the agent is handed the script (its "R" request is sent): the command's console output,
    #: and any kernel line during it, comes after this.
    on_script: Callable[[], None] | None = None
    #: Called with the script's exit status when the agent reports it ("S STATUS").
    on_status: Callable[[int], None] | None = None
    #: Where the requests go (the machine's channel port), one for each "G" the agent sends; None: the
    #: channel only listens (a replay, whose input comes from its recording).
    send: Callable[[bytes], None] | None = None
    #: Called as ``progress(sent, total)``, in bytes of the file requests (the user's files, the bulk
    #: programs), as they are sent.
    progress: Callable[[int, int], None] | None = None
    _queue: list[tuple[bytes, bytes]] = field(default_factory=list)
    _pending: bytearray = field(default_factory=bytearray)
    _body: tuple[str, int] | None = None
    _body_data: bytearray = field(default_factory=bytearray)
    _sent: int = 0
    _total: int = 0
    #: The file the guest's ``qpp-recv`` is taking (:meth:`take`), from the last bulk request.
    _bulk: memoryview = field(default_factory=lambda: memoryview(b""))

    def prepare(self, *, then_exit: bool = True) -> None:
        """Read the host files and queue every request, in the agent's protocol (see agent.sh); a file
        that cannot be read fails here, before the run.  ``then_exit=False`` leaves the agent waiting for
        more work after the script and the copies out, instead of powering the guest off."""
        queue: list[tuple[bytes, bytes]] = []  # (header and line bytes, bulk bytes)
        bulk = False
        for item in self.files:
            try:
                data = item.host.read_bytes()
            except OSError as exc:
                raise ChannelError(f"--file {item.host}: {exc.strerror}") from exc
            if len(data) >= BULK_FROM:
                queue.append((f"B {len(data)} {item.mode:o} {item.guest}\n".encode(), data))
                bulk = True
            else:
                queue.append((f"F {len(data)} {item.mode:o} {item.guest}\n".encode() + data, b""))
        queue.append((f"R {len(self.script)} - -\n".encode() + self.script, b""))
        queue += [(f"O - - {want.guest}\n".encode(), b"") for want in self.copy_out]
        if then_exit:
            queue.append((b"X - - -\n", b""))
        programs = [(RECEIVER, transfer.receiver())] if bulk else []
        programs += [(SENDER, transfer.sender())] if self.copy_out else []
        queue[:0] = [(f"F {len(program)} 755 {path}\n".encode() + program, b"") for path, program in programs]
        self._queue = queue
        self._total = sum(len(line) + len(data) for line, data in queue if line[:1] in (b"F", b"B"))

    @property
    def served(self) -> bool:
        """Whether every request :meth:`prepare` queued has been sent: a READY now means the agent has
        done them all and waits for work the host does not have."""
        return not self._queue

    def feed(self, data: bytes) -> None:
        """What the guest wrote on the channel, as it comes."""
        self._pending += data
        while self._pending:
            end = self._pending.find(b"\n")
            if end < 0:
                if len(self._pending) > MAX_LINE:
                    raise ChannelError("the guest sent a channel line longer than 4096 bytes")
                return
            line = bytes(self._pending[:end])
            del self._pending[: end + 1]
            self._line(line)

    def _line(self, line: bytes) -> None:
        if line == b"G":
            if self.send is None:
                return
            if not self._queue:
                raise ChannelError("the guest asked for a request after the last one")
            request, data = self._queue.pop(0)
            self._bulk = memoryview(data)
            self.send(request)
            if request[:1] in (b"F", b"B"):  # the files (progress): not the script, the copies out, the exit
                self._count(len(request))
            elif request[:1] == b"R" and self.on_script is not None:
                self.on_script()
            return
        if line == READY:
            if self.on_ready is not None:
                self.on_ready()
            return
        kind, _, rest = line.partition(b" ")
        asked = {want.guest for want in self.copy_out}
        try:
            if kind == b"S":
                self.status = int(rest)
                if self.on_status is not None:
                    self.on_status(self.status)
            elif kind == b"W":
                status_text, _, dash_path = rest.partition(b" ")
                if int(status_text) != 0:
                    self.not_written.append(dash_path.partition(b" ")[2].decode())
                    if self.send is not None:
                        self._queue = [(b"X - - -\n", b"")]  # nothing more runs: the agent exits
            elif kind == b"D":
                size_text, _, path_bytes = rest.partition(b" ")
                size, path = int(size_text), path_bytes.decode()
                if path not in asked or size < 0:
                    raise ValueError(line[:80])
                if size > MAX_COPY_OUT:
                    raise ChannelError(f"--copy-out {path}: {size:,} bytes, more than a copy-out may have (1 GiB)")
                self._body = (path, size)
            elif kind == b"N":
                path = rest.partition(b" ")[2].decode()
                if path not in asked:
                    raise ValueError(line[:80])
                self.missing.append(path)
            else:
                raise ValueError(line[:80])
        except (ValueError, UnicodeDecodeError) as exc:
            raise ChannelError(f"the guest broke the channel's protocol: {exc}") from None

    def give(self, data: bytes) -> None:
        """What the guest's ``qpp-send`` hands over by hypercall: the body of the copy-out the agent announced,
        at most its announced size (a file that grew is cut), and, when ``data`` is empty (its end), padded
        with zeros to it (a file that shrank).  Bytes with no copy-out announced are dropped."""
        if self._body is None:
            return
        path, size = self._body
        if data:
            self._body_data += data[: size - len(self._body_data)]
            return
        self._body_data += bytes(size - len(self._body_data))
        self.received[path] = bytes(self._body_data)
        self._body, self._body_data = None, bytearray()

    def take(self, limit: int) -> bytes:
        """The next at most ``limit`` bytes of the file of the last bulk request, for the guest's ``qpp-recv``
        (its hypercalls: :mod:`qppsuite.core.hypercall`); b"" once it is all taken."""
        data, self._bulk = self._bulk[:limit], self._bulk[limit:]
        self._count(len(data))
        return bytes(data)

    def _count(self, sent: int) -> None:
        self._sent += sent
        if self.progress is not None and sent:
            self.progress(self._sent, self._total)

    def write_copies(self) -> list[Path]:
        """Write every copy-out the guest answered to its host path; the paths written (those that fail are
        in :attr:`unsaved`)."""
        written = []
        for want in self.copy_out:
            data = self.received.get(want.guest)
            if data is None:
                continue
            try:
                want.host.parent.mkdir(parents=True, exist_ok=True)
                replace_file(want.host, data)
            except OSError as exc:
                self.unsaved.append(f"{want.host}: {exc.strerror or exc}")
                continue
            written.append(want.host)
        return written
