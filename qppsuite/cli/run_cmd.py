"""``qppsuite run``: boot an image with plugins stacked on it."""

import contextlib
import errno
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer

from qppsuite.channel import DEFAULT_GUEST_DIR, ChannelError, parse_copy_outs, parse_file_spec
from qppsuite.cli import app, err_console
from qppsuite.cli.keyboard import keyboard
from qppsuite.cli.terminal import CommandConsole, ConsoleStream, channel_progress, styled
from qppsuite.core.board import RAM_MAX_MIB
from qppsuite.core.qpp import parse_plugin_args, parse_plugin_list
from qppsuite.errors import GuestError, GuestStopped, ImageError, Interrupted, PluginError
from qppsuite.images.bundle import images_dir, open_image
from qppsuite.session import DEFAULT_IMAGE, PLUGIN_FAILURES_HINT, GuestIO, RunOptions, RunResult, run


def ensure_default_image(cache: Path | None) -> None:
    """Build the default image on first use, with progress, so `qppsuite run` works on a fresh machine."""
    if (images_dir(cache) / DEFAULT_IMAGE / "manifest.json").is_file():
        return
    from qppsuite.images.builder import build_image

    where = images_dir(cache) / DEFAULT_IMAGE
    err_console.print(
        styled(("qppsuite:", "bold"), f" image '{DEFAULT_IMAGE}' is not built yet; building it in {where} now (once)"),
        soft_wrap=True,
    )
    began = time.monotonic()
    with err_console.status(styled("building image")) as status:
        build_image(DEFAULT_IMAGE, cache=cache, progress=lambda msg: status.update(styled(msg)))
    took = time.monotonic() - began
    err_console.print(styled(("qppsuite:", "bold"), f" built image '{DEFAULT_IMAGE}' in {took:.0f} s"))


RAM_HELP = f"Guest RAM in MiB, at most {RAM_MAX_MIB} (default: what the image needs, at least {RunOptions.ram_mib})"
RamOption = Annotated[int | None, typer.Option("--ram", min=16, max=RAM_MAX_MIB, help=RAM_HELP)]


def image_ram_mib(image: str, cache: Path | None) -> int:
    """--ram's default for ``image``: the RAM its manifest records its rootfs needs (``initrd.ram_mib``, a
    minbase image's is above the usual 256), else :attr:`RunOptions.ram_mib`.  An image that does not open
    gets the usual default: the run then says what is wrong with it."""
    try:
        bundle = open_image(image, cache=cache, verify=False)
    except ImageError:
        return RunOptions.ram_mib
    value = (bundle.manifest.get("initrd") or {}).get("ram_mib")
    if isinstance(value, int) and not isinstance(value, bool) and RunOptions.ram_mib < value <= RAM_MAX_MIB:
        return value
    return RunOptions.ram_mib


DEFAULT_TIMEOUT = 3600.0
TimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout",
        min=0,
        help="Stop the run after this many wall-clock seconds, whatever the guest does (0: no limit)",
    ),
]


FilesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--file",
        help="HOST[:GUEST] file or directory to put in the guest before the command, permissions kept "
        f"(default place: a file in {DEFAULT_GUEST_DIR}, on the PATH; a directory in /root); repeatable",
    ),
]
DiskOption = Annotated[
    Path | None,
    typer.Option(
        "--disk",
        metavar="FILE",
        help="Raw disk image (whole 512-byte sectors) the guest sees as /dev/vda; its writes stay in memory and "
        "the file never changes; snapshots and recordings pin it by sha256",
    ),
]
CmdFileOption = Annotated[
    Path | None, typer.Option("--cmd-file", help="Shell script to run in the guest (instead of --cmd)")
]
ColdOption = Annotated[
    bool,
    typer.Option(
        "--cold",
        help="Boot from power-on with the plugins attached from the first instruction and the command run by "
        "/init, instead of starting from the snapshot (with --file or --copy-out: boot, and save a new snapshot)",
    ),
]
InteractiveOption = Annotated[
    bool,
    typer.Option(
        "--interactive",
        "-i",
        help="Make this terminal (or piped stdin) the guest console's keyboard: a shell, or --cmd, with "
        "the console as its terminal; Ctrl-] leaves",
    ),
]


FromOption = Annotated[
    str | None,
    typer.Option("--from", metavar="NAME", help="Start from your snapshot NAME (`qppsuite snapshot save`)"),
]
ConsoleOption = Annotated[
    Path | None, typer.Option("--console", help="Write the guest console to FILE instead of the terminal")
]
QuietOption = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="Do not show the console (but with -i) or the summary; the run database's path is still said",
    ),
]
KernelLogOption = Annotated[
    bool,
    typer.Option(
        "--kernel-log",
        help="With --cmd, show the kernel's log lines on the console too (by default they are left out, "
        "and the command's output is marked)",
    ),
]
MAX_INSNS_HELP = (
    "Stop after this many guest instructions, counted from power-on (a restored run counts the boot the "
    "snapshot holds); a budget that ends before the snapshot of the booted guest boots from power-on instead"
)


def command_text(cmd: str | None, cmd_file: Path | None) -> str | None:
    """The guest command of --cmd or --cmd-file (one of them); a --cmd that is not UTF-8, and a file that cannot
    be read, is not UTF-8 or holds a NUL byte (which no shell reads), is one :class:`ChannelError` line, as a
    bad --file is."""
    if cmd is not None and cmd_file is not None:
        raise GuestError("--cmd and --cmd-file both give the command: use one")
    if cmd_file is None:
        if cmd is not None:
            try:
                cmd.encode()
            except UnicodeEncodeError as exc:  # a byte the shell's locale could not decode (surrogateescape)
                byte = ord(cmd[exc.start]) & 0xFF
                raise ChannelError(
                    f"--cmd: byte {byte:#04x} at offset {exc.start} is not UTF-8", hint="give the command as UTF-8"
                ) from None
        return cmd
    try:
        data = cmd_file.read_bytes()
    except OSError as exc:
        raise ChannelError(f"--cmd-file {cmd_file}: {exc.strerror or exc}") from exc
    try:
        text = data.decode()
    except UnicodeDecodeError as exc:
        raise ChannelError(
            f"--cmd-file {cmd_file}: byte {data[exc.start]:#04x} at offset {exc.start} is not UTF-8",
            hint="save the script as UTF-8 (iconv -t UTF-8)",
        ) from None
    if "\0" in text:
        raise ChannelError(f"--cmd-file {cmd_file}: a NUL byte at offset {text.index(chr(0))}, which no shell reads")
    return text


@contextmanager
def guest_console(console: Path | None, quiet: bool, interactive: bool = False) -> Iterator[ConsoleStream | None]:
    """Where the guest console goes: the file ``console``, else the terminal unless ``quiet`` (an
    ``interactive`` console always shows, :class:`ConsoleStream`); the file is closed (stdout flushed)
    however the block ends."""
    sink: BinaryIO | None = None
    stream: ConsoleStream | None = None
    try:
        if console is not None:
            try:
                sink = console.open("wb")
            except OSError as exc:
                raise ImageError(f"cannot write console file {console}: {exc.strerror}") from exc
        elif not quiet or interactive:
            sink = sys.stdout.buffer
        stream = ConsoleStream(sink, interactive=interactive) if sink else None
        yield stream
    finally:
        try:
            if sink is not None and sink is not sys.stdout.buffer:
                sink.close()
            else:
                sys.stdout.flush()
        except OSError as exc:  # what the last write left in the buffer
            if stream is not None:
                stream.failed(exc)


def check_console(stream: ConsoleStream | None, console: Path | None) -> None:
    """One error when the console could not be written (call it after the run's results are kept: the
    database, the recording); a reader of standard output that left early (``| head``) is not one."""
    error = None if stream is None else stream.error
    if error is None or (console is None and error.errno == errno.EPIPE):
        return
    where = f"console file {console}" if console is not None else "the console to standard output"
    raise ImageError(f"cannot write {where}: {error.strerror or error}; the rest of the console was not written")


@contextmanager
def shown_console(
    stream: ConsoleStream | None, *, to_file: bool, cmd: str | None, kernel_log: bool
) -> Iterator[tuple[Callable[[bytes], None] | None, dict[str, Any]]]:
    """What a run shows of the guest console on ``stream``, and the :class:`GuestIO` hooks that feed it.

    A ``--cmd`` on the terminal (not an interactive one) shows the command's output between marks, the kernel's
    log lines left out unless ``kernel_log`` (:class:`CommandConsole`: it starts when the channel hands the
    agent its script and ends with the agent's status report); otherwise the console as it is.  The command's
    end is marked when the block ends normally."""
    if stream is None or to_file or cmd is None or stream.interactive:
        yield stream, {}
        return
    shown = CommandConsole(stream, _command_mark, kernel=kernel_log)
    yield shown, {"on_script": shown.handed_over, "on_status": shown.reported}
    shown.finish()


def notice(message: str) -> None:
    """A one-line notice on stderr (not an error: the command goes on)."""
    err_console.print(styled(("qppsuite:", "yellow"), f" {message}"), soft_wrap=True)


def say_database(result: RunResult) -> None:
    """The run database's path and run id on stderr, if the run wrote one: always, ``-q`` too (a default-named
    file is otherwise hard to find), before whatever else the run's end says."""
    if result.database is None:
        return
    path, run_id = result.database
    err_console.print(
        styled(
            ("qppsuite:", "green"),
            f" run database {path.resolve()} (run {run_id}): qppsuite syscalls {shlex.quote(str(path))}",
        ),
        soft_wrap=True,
    )


def _command_mark(what: str) -> None:
    """CommandConsole's marks, on stderr between the console's lines: where the command's output starts and ends."""
    with contextlib.suppress(OSError):  # the console's own next write, or its end, says why
        sys.stdout.flush()
    if what == "start":
        err_console.print(styled(("── the command's output ──", "dim")))
    elif what == "midline":  # the output's last line has no end: the mark starts a line of its own
        if sys.stdout.isatty() and sys.stderr.isatty():
            err_console.print()
    elif what.startswith("hidden "):
        hidden = int(what.removeprefix("hidden "))
        lines = "line" if hidden == 1 else "lines"
        err_console.print(
            styled((f"── {hidden} {lines} like the kernel's log left out (--kernel-log shows them) ──", "dim"))
        )
    elif what == "unfinished":
        err_console.print(styled(("── the run stopped before the command ended ──", "dim")))
    else:
        err_console.print(styled((f"── the command ended: exit status {what.removeprefix('end ')} ──", "dim")))


#: The longest ``--label``: a batch's labels are at most this long (qppsuite/batch/jobs.schema.json).
LABEL_MAX = 255


def _check_label(label: str | None) -> None:
    """``--label``: 1 to :data:`LABEL_MAX` characters of text (UTF-8, no NUL), as a batch's labels; anything
    else is one line (exit 2), not a failure of the plugin that writes it."""
    if label is None:
        return
    try:
        label.encode()
    except UnicodeEncodeError:
        raise typer.BadParameter("a label must be text (UTF-8), and this one is not", param_hint="'--label'") from None
    if not label or len(label) > LABEL_MAX or "\0" in label:
        raise typer.BadParameter(
            f"a label is 1 to {LABEL_MAX} characters, without NUL ({len(label)} given)", param_hint="'--label'"
        )


@app.command("run")
def run_command(
    image: Annotated[str, typer.Argument(help="Image name (see `qppsuite image list`) or bundle path")] = DEFAULT_IMAGE,
    cmd: Annotated[
        str | None, typer.Option("--cmd", help="Shell command to run in the guest instead of the default workload")
    ] = None,
    plugins: Annotated[
        list[str] | None, typer.Option("--plugins", help="Plugins to load: names or .py paths, comma-separated")
    ] = None,
    plugin_args: Annotated[
        list[str] | None, typer.Option("-p", "--plugin-arg", help="plugin:key=value (repeatable)")
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Stop the run when a plugin callback raises")] = False,
    max_insns: Annotated[int | None, typer.Option("--max-insns", min=1, help=MAX_INSNS_HELP)] = None,
    console: ConsoleOption = None,
    ram: RamOption = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT,
    quiet: QuietOption = False,
    bootargs: Annotated[str, typer.Option("--bootargs", help="Extra kernel command-line arguments")] = "",
    guest_decompress: Annotated[
        bool, typer.Option("--guest-decompress", help="Boot a zImage as-is, decompressing in the guest")
    ] = False,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="Cache directory (default: $QPPSUITE_CACHE or the XDG cache)")
    ] = None,
    files: FilesOption = None,
    copy_out: Annotated[
        list[str] | None,
        typer.Option("--copy-out", help="GUEST[:HOST] file to bring back after the command; repeatable"),
    ] = None,
    cmd_file: CmdFileOption = None,
    cold: ColdOption = False,
    start_from: FromOption = None,
    interactive: InteractiveOption = False,
    disk: DiskOption = None,
    kernel_log: KernelLogOption = False,
    label: Annotated[
        str | None,
        typer.Option(
            "--label",
            help="A name for the run, recorded in its database's runs.label (`--run LABEL` picks it; a batch "
            "gives each job's label, and checks it when it resumes)",
        ),
    ] = None,
) -> None:
    """Run the command (the default workload unless --cmd) in IMAGE with the plugins on it.

    The run starts from a snapshot of the booted guest, waiting for work, and the command goes in
    through the host<->guest channel; the first run of an image (and RAM size, boot arguments) boots
    to make that snapshot.  Plugins attach there, so restored and booted runs are the same run.
    """
    cmd = command_text(cmd, cmd_file)
    _check_label(label)
    if image == DEFAULT_IMAGE:
        ensure_default_image(cache_dir)
    options = RunOptions(
        image=image,
        cmd=cmd,
        files=[item for spec in files or [] for item in parse_file_spec(spec)],
        copy_out=parse_copy_outs(copy_out or []),
        warm=True,
        cold=cold,
        interactive=interactive,
        start_from=start_from,
        notice=None if quiet else notice,
        plugins=parse_plugin_list(plugins or []),
        plugin_args=parse_plugin_args(plugin_args or []),
        strict=strict,
        max_insns=max_insns,
        ram_mib=ram if ram is not None else image_ram_mib(image, cache_dir),
        cache=cache_dir,
        host_decompress=not guest_decompress,
        extra_bootargs=bootargs,
        timeout_seconds=timeout or None,
        disk=disk,
        label=label,
    )
    with (
        guest_console(console, quiet, interactive) as stream,
        keyboard(interactive, quiet) as host,
        channel_progress(err_console, quiet) as progress,
        shown_console(stream, to_file=console is not None, cmd=cmd, kernel_log=kernel_log) as (shown, hooks),
    ):
        result = run(options, shown, io=GuestIO(host=host, progress=progress, **hooks))
    say_database(result)
    mips = result.insn_count / result.wall_seconds / 1e6 if result.wall_seconds else 0.0
    summary = f"{result.insn_count:,} instructions in {result.wall_seconds:.2f} s ({mips:.0f} MIPS)"
    if result.signal is not None:
        raise Interrupted(f"{result.reason.message} after {summary}", result.signal)
    if result.shutdown_failures:
        raise PluginError(result.shutdown_failures[0], hint="its output may be incomplete; earlier writes are kept")
    if result.plugin_failures and result.ok:
        raise PluginError(result.plugin_failures_line(), hint=PLUGIN_FAILURES_HINT)
    if result.reason.kind == "detached":
        if not quiet:
            err_console.print(styled(("qppsuite:", "green"), f" left the guest console after {summary}"))
        return
    if not result.ok:
        if result.reason.kind == "error":  # "error: error: ..." says nothing
            raise GuestError(f"{result.reason.message} (stopped after {summary})")
        raise GuestStopped(result.reason.kind, result.reason.message, summary)
    check_console(stream, console)  # after the guest's own failures, which matter more
    if result.not_written:
        raise GuestError(
            f"--file: the guest could not write {result.not_written[0]}, so the command did not run "
            f"(stopped after {summary})",
            hint="the guest's own message is on its console (no room: a bigger --ram; a directory of that name; "
            "a program running from that file)",
        )
    if result.unsaved:
        raise ImageError(f"--copy-out: cannot write {result.unsaved[0]}")
    if result.unanswered:
        raise GuestError(
            f"--copy-out: {result.unanswered[0]} was not copied: the guest stopped before the copy "
            f"(the command powered it off, or ended the channel's agent) (stopped after {summary})"
        )
    if result.not_copied:
        raise GuestError(
            f"--copy-out: {result.not_copied[0]} was not copied: no regular file of that name in the guest, "
            f"or it could not be read (stopped after {summary})"
        )
    if not quiet:
        for path in result.copied:
            err_console.print(styled(("qppsuite:", "green"), f" copied out {path}"))
        start = f" from snapshot {start_from}" if start_from is not None else ""
        err_console.print(styled(("qppsuite:", "green"), f" guest powered off{start} after {summary}"))
