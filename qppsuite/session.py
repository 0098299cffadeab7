"""One analysis run: an image, a machine, the plugins on it, and how it ended.

This is the glue the CLI calls and tests drive directly.  It is the one place
that knows both the image format (workloads, the ``--cmd`` overlay) and the
plugin host; the core machine knows neither.
"""

import hashlib
import json
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from qppsuite import __version__
from qppsuite.channel import Channel, CopyOut, GuestFile
from qppsuite.core import snapshot
from qppsuite.core.devices.virtio_blk import CowDisk, DiskError
from qppsuite.core.events import CorePlugin, StopReason
from qppsuite.core.guest import Guest
from qppsuite.core.kernel import load_kernel
from qppsuite.core.machine import HostInput, Machine, MachineConfig
from qppsuite.core.qpp import QPP, PluginCallbackError, RunContext, resolve
from qppsuite.core.snapshot import Snapshot, SnapshotError
from qppsuite.errors import GuestError, ImageError, Interrupted
from qppsuite.images.bundle import ImageBundle, cache_dir, open_image
from qppsuite.images.guest import guest_script
from qppsuite.images.initramfs import CpioEntry, overlay_archive, rootfs_bytes

DEFAULT_IMAGE = "debian-armhf"
#: What a kernel command line may hold: printable ASCII (the device tree's bootargs is a C string, and Linux
#: parses it as ASCII words); the manifest schema says the same of an image's own bootargs.
KERNEL_ARGS = re.compile(r"[ -~]*")
#: Where the guest's init looks for the user's command, run with the image's shell, and for the channel's
#: agent, run with the toolkit's (see qppsuite/images/guest/init.sh).
GUEST_CMD_PATH = "/etc/qppsuite/cmd"
GUEST_AGENT_PATH = "/etc/qppsuite/agent"
#: The toolkit every image carries: busybox applets for qppsuite's own guest scripts.
GUEST_TOOLS = "/.qppsuite/bin"


@dataclass
class RunOptions:
    """Everything ``qppsuite run`` can be told."""

    image: str | Path = DEFAULT_IMAGE
    cmd: str | None = None
    plugins: Sequence[str] = ()
    plugin_args: dict[str, dict[str, str]] = field(default_factory=dict)
    strict: bool = False
    max_insns: int | None = None
    ram_mib: int = 256
    cache: Path | None = None
    #: Boot a zImage as-is (its own decompressor runs in the guest) instead of unpacking it on the host.
    host_decompress: bool = True
    extra_bootargs: str = ""
    hang_seconds: float = 600.0
    #: Wall-clock budget of the whole run in seconds (None: none); the CLI's --timeout.
    timeout_seconds: float | None = None
    #: Files for the guest and files to bring back (the channel, :mod:`qppsuite.channel`).
    files: Sequence[GuestFile] = ()
    copy_out: Sequence[CopyOut] = ()
    #: Carry the command through the channel, from the ready snapshot (``qppsuite run``'s default), where
    #: the run can: an image with no initramfs, a ``max_insns`` before the ready point, or ``cold`` (all
    #: three with no file to carry) boot from power-on instead, with the command run by /init as without it.
    warm: bool = False
    #: Never restore the ready snapshot: boot from power-on (through the channel, saving a new ready
    #: snapshot, only when there are files to carry).
    cold: bool = False
    #: The command (an interactive shell without --cmd) runs with the console as its controlling terminal,
    #: and the host's input (:attr:`GuestIO.host`) reaches it.
    interactive: bool = False
    #: Start from this named snapshot (:func:`save_snapshot`) instead of the ready one.
    start_from: str | None = None
    #: The run's name (``qppsuite run --label``), recorded in its database's ``runs.label``; None: none.
    label: str | None = None
    #: With ``cold``: boot through the channel even with no file to carry, as a ``--cold`` run with files did
    #: (its files are in the recorded input a replay gives).
    cold_channel: bool = False
    #: Where one-line notices go (a ready snapshot refused and made again); None: nowhere.
    notice: Callable[[str], None] | None = None
    #: A raw disk image the guest sees as /dev/vda (read-only: its writes stay in memory); snapshots and
    #: recordings pin it by sha256 (:func:`disk_sha256`).  None: no disk.
    disk: Path | None = None

    @property
    def uses_channel(self) -> bool:
        """Whether the command goes through the channel, from the guest's ready point (a snapshot of it)."""
        return self.warm or self.interactive or bool(self.files) or bool(self.copy_out) or self.start_from is not None


@dataclass
class GuestIO:
    """The guest's input besides the channel's own answers, and who hears what it says, for one run.

    Every delivery of input to a serial port, whatever its source, reaches ``on_input(insn_count, port,
    data)`` (:meth:`Machine.send_to_channel` says when deliveries happen).  ``replayed`` makes the run a
    replay: exactly that input, ``(insn_count, port, data)``, at exactly those counts, and the channel only
    listens.  ``at_start`` is called once the run reaches the point it starts from (the guest's ready
    point, booted or restored), before plugins load; ``on_channel_output`` hears the guest's channel
    output after that point.
    """

    host: HostInput | None = None
    replayed: Sequence[tuple[int, str, bytes]] | None = None
    on_input: Callable[[int, str, bytes], None] | None = None
    at_start: Callable[[], None] | None = None
    on_channel_output: Callable[[bytes], None] | None = None
    #: Called as ``progress(sent, total)`` in bytes as the channel carries the user's files.
    progress: Callable[[int, int], None] | None = None
    #: Called when the channel hands the agent the command's script (not in a replay, whose channel only
    #: listens): what the console shows after it is the command's output and the kernel's lines during it.
    on_script: Callable[[], None] | None = None
    #: Called with the script's exit status when the channel's agent reports it (a replay's too).
    on_status: Callable[[int], None] | None = None
    #: A replay's end: the instruction count it stops at whatever happens (its recording's).
    end_at: int | None = None


@dataclass(frozen=True)
class RunResult:
    """How a run ended, with the figures a user or benchmark wants."""

    reason: StopReason
    insn_count: int
    wall_seconds: float
    image: ImageBundle
    plugins: list[str]
    #: The signal that stopped the run (SIGINT, SIGTERM), if one did.
    signal: int | None = None
    #: Plugin failures while stopping or unloading, where plugins write what they kept (a database's last
    #: batch): the run's output may be incomplete, so the CLI does not exit 0.
    shutdown_failures: tuple[str, ...] = ()
    #: How the run reached the guest's ready point: "restored" (a snapshot), "booted" (and saved one), or
    #: None when it did not use the channel.
    start: str | None = None
    #: Host files written from --copy-out, and the guest paths that were no regular files.
    copied: tuple[Path, ...] = ()
    not_copied: tuple[str, ...] = ()
    #: Guest paths of --file files the guest could not write (the command then did not run).
    not_written: tuple[str, ...] = ()
    #: Copies out the host could not write, with why.
    unsaved: tuple[str, ...] = ()
    #: Copy-outs the guest never answered: it stopped first (powered off, or its channel agent was gone).
    unanswered: tuple[str, ...] = ()
    #: The run database the plugins wrote (syscalls_logger's, file_activity's...) and the run's id in it.
    database: tuple[Path, int] | None = None
    #: Plugin failures while the guest ran (a callback or hook function raised), the first of each plugin and
    #: place with how often it happened: the run went on, but what the plugin recorded may be incomplete.
    plugin_failures: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.reason.ok

    def plugin_failures_line(self) -> str:
        """The first plugin failure of the run, and how many other plugins or places failed."""
        first, others = self.plugin_failures[0], len(self.plugin_failures) - 1
        return first + (f"; and {others} other plugin failure{'s' if others > 1 else ''}" if others else "")


#: What a run with plugin failures tells the user after its one line.
PLUGIN_FAILURES_HINT = "the run went on without what the failing function would have done; --strict stops at the first"


#: The channel's guest end (qppsuite/images/guest/agent.sh), run as /init's command.
AGENT = guest_script("agent.sh").decode()
#: The default workload, as the script the channel runs when no --cmd is given.
WORKLOAD_SCRIPT = "sh /etc/qppsuite/workload.sh\n"


def channel_script(options: RunOptions) -> bytes:
    """The shell script the agent runs: the command, or the default workload; an interactive run's is
    the command (a shell by default) in a new session whose controlling terminal is the console
    (busybox ``cttyhack`` finds the UART behind /dev/console), so the guest's Ctrl-C and job control work."""
    if not options.interactive:
        return (options.cmd if options.cmd is not None else WORKLOAD_SCRIPT).encode()
    command = "sh -i" if options.cmd is None else f"sh -c {shlex.quote(options.cmd)}"
    return f"exec {GUEST_TOOLS}/setsid {GUEST_TOOLS}/cttyhack {command}\n".encode()


def guest_command_overlay(path: str, cmd: str) -> bytes:
    """The ``--cmd`` delivery (or the agent's, at ``path``): a cpio appended to the initrd (no keystrokes,
    fully deterministic)."""
    return overlay_archive({path: _command_file(cmd)})


def _command_file(cmd: str) -> bytes:
    return cmd.encode() + b"\n"


def run_context(options: RunOptions, image: ImageBundle, snapshot: str | None) -> RunContext:
    """What every plugin of the run is told about it (``Plugin.context``; osi_linux finds its profile here)."""
    release = (image.manifest.get("kernel") or {}).get("release")
    given = {
        "cmd": options.cmd,
        "max_insns": options.max_insns,
        "ram_mib": options.ram_mib,
        "timeout": options.timeout_seconds,
        "interactive": options.interactive,
        "cold": options.cold,
        "disk": None if options.disk is None else str(options.disk),
        "bootargs": options.extra_bootargs,
        "plugin_args": {name: dict(values) for name, values in options.plugin_args.items()},
    }
    return RunContext(
        image=image.name,
        image_path=image.path,
        kernel_release=str(release) if release else None,
        profile=image.profile_path,
        snapshot=snapshot,
        plugins=("core", *options.plugins),
        options=MappingProxyType(given),
        label=options.label,
    )


def build_machine(
    options: RunOptions,
    image: ImageBundle,
    console: Callable[[bytes], None] | None,
    *,
    timeout_from: float | None = None,
) -> Machine:
    """A machine loaded with ``image`` (and the ``--cmd`` overlay), ready to run; its wall-clock budget
    (``options.timeout_seconds``) counts from ``timeout_from`` (``time.monotonic()``; None: its first run)."""
    kernel = load_kernel(
        image.kernel_path, decompress=options.host_decompress, cache_dir=cache_dir(options.cache) / "kernels"
    )
    initrd = b""
    if image.initrd_path is not None:
        try:
            initrd = image.initrd_path.read_bytes()
        except OSError as exc:
            raise ImageError(f"cannot read initrd {image.initrd_path}: {exc.strerror}") from exc
    unpacked = (image.manifest.get("initrd") or {}).get("rootfs_bytes")
    # Through the channel, /init's command is the agent, which takes the real one from the host.
    command, path = (AGENT, GUEST_AGENT_PATH) if options.uses_channel else (options.cmd, GUEST_CMD_PATH)
    if command is not None:
        if not initrd:
            raise ImageError(f"image '{image.name}' has no initramfs, so --cmd cannot be delivered")
        if image.manifest.get("toolkit") != GUEST_TOOLS:
            raise ImageError(
                f"image '{image.name}' has no qppsuite init that runs a command (made by an older qppsuite, or "
                "by hand)",
                hint=f"rebuild it: qppsuite image build {image.name} (or image import)",
            )
        initrd += guest_command_overlay(path, command)
        if unpacked is not None:
            unpacked += rootfs_bytes([CpioEntry.file(path, _command_file(command))])
    if not KERNEL_ARGS.fullmatch(options.extra_bootargs):
        raise GuestError(
            f"--bootargs {options.extra_bootargs!r}: the kernel command line takes printable ASCII only",
        )
    bootargs = _bootargs(options, image)
    config = MachineConfig(
        kernel=kernel,
        initrd=initrd,
        bootargs=bootargs,
        ram_mib=options.ram_mib,
        max_insns=options.max_insns,
        hang_seconds=options.hang_seconds,
        timeout_seconds=options.timeout_seconds,
        timeout_from=timeout_from,
        rootfs_bytes=unpacked,
        disk=machine_disk(options, image),
    )
    return Machine(config, console=console)


def machine_disk(options: RunOptions, image: ImageBundle) -> Path | None:
    """The guest's disk: ``--disk``, or the image's own (``image import --disk``: its root file system, which the
    image's file hashes pin already).  An image with its own disk takes no other: ImageError."""
    if image.disk_path is None:
        return options.disk
    if options.disk is not None:
        raise ImageError(f"image '{image.name}' has its own disk, its root file system: --disk cannot replace it")
    return image.disk_path


#: Digests already computed: (path, device, inode, size, mtime) -> sha256, so that a run hashes its disk once.
_DISK_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}


def disk_sha256(path: Path) -> str:
    """The sha256 of the disk file ``path``, which pins it in snapshot keys and recordings.

    A file that cannot back a disk (missing, unreadable, no regular file, not whole 512-byte sectors) is
    one :class:`~qppsuite.core.devices.virtio_blk.DiskError` line, the machine's own check.  Reads the whole
    file once per process (about 1 s a GiB), again only if its size or modification time change.
    """
    CowDisk(path)  # the machine's own checks; the descriptor closes as the object goes
    info = path.stat()
    key = (str(path.resolve()), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    if key not in _DISK_DIGESTS:
        try:
            with path.open("rb") as stream:
                _DISK_DIGESTS[key] = hashlib.file_digest(stream, "sha256").hexdigest()
        except OSError as exc:
            raise DiskError(f"disk {path}: {exc.strerror or exc}") from None
    return _DISK_DIGESTS[key]


def run(
    options: RunOptions,
    console: Callable[[bytes], None] | None,
    *,
    image: ImageBundle | None = None,
    on_loaded: Callable[[QPP], Any] | None = None,
    verify: Callable[[StopReason, int], StopReason] | None = None,
    io: GuestIO | None = None,
) -> RunResult:
    """Boot, run plugins, and always unload them (flushing their files), however the run ends.

    ``verify(reason, insn_count)`` may replace the stop reason before plugins hear it (a replay that
    diverged from its recording ends ``diverged``, and the logger's ``runs`` row says so).
    """
    io = io or GuestIO()
    for spec in options.plugins:  # a misspelt or broken plugin is one line before any boot, not after it
        source = resolve(spec)
        if source.kind != "file":  # a file is imported once, when it loads (its import may do things)
            source.plugin_class()
    if options.disk is not None:
        CowDisk(options.disk)  # a disk that cannot be used is one line before anything else happens
    image = image or open_image(options.image, cache=options.cache)
    start = time.monotonic()
    options, saved = _choose_start(options, image, start)
    # --timeout is the whole run's: any boot to make a snapshot included
    machine = build_machine(options, image, console, timeout_from=start)
    machine.on_input = io.on_input
    channel: Channel | None = None
    started: str | None = None
    with stop_on_signals(machine) as received:
        if options.uses_channel:
            replaying = io.replayed is not None
            channel = Channel(
                options.files,
                channel_script(options),
                options.copy_out,
                send=None if replaying else machine.send_to_channel,
                progress=io.progress,
                on_script=io.on_script,
                on_status=io.on_status,
            )
            channel.prepare()  # a host file that cannot be read fails here, before any boot
            started, early = _reach_ready(machine, options, image, channel, saved)
            if early is not None:  # the guest failed before it was ready: no plugin was loaded
                return RunResult(early, machine.insn_count, time.monotonic() - start, image, [], _signal(received))
            _connect(machine, channel, io.on_channel_output, replaying)
        if io.at_start is not None:
            io.at_start()
        if io.replayed is not None:
            try:
                machine.schedule_input(io.replayed)
            except ValueError as exc:  # a count before the start point, or an unknown port: an edited recording
                raise GuestError(
                    f"replay: the recorded input cannot be delivered: {exc}",
                    hint="the recording's options no longer lead to where it started: was it edited?",
                ) from None
            machine.end_at = io.end_at
            verify = _all_input_delivered(machine, verify)
        machine.host_input = io.host
        snapshot = saved[0] if started == "restored" and saved is not None else None
        context = run_context(options, image, snapshot)
        result = _run_plugins(machine, context, options, on_loaded, verify)
    reason, loaded, shutdown, failed, database = result
    copied: tuple[Path, ...] = ()
    not_copied: tuple[str, ...] = ()
    not_written: tuple[str, ...] = ()
    unsaved: tuple[str, ...] = ()
    unanswered: tuple[str, ...] = ()
    if channel is not None:
        copied = tuple(channel.write_copies())
        answered = set(channel.received) | set(channel.missing)
        not_copied = tuple(channel.missing)
        unanswered = tuple(w.guest for w in options.copy_out if w.guest not in answered)
        not_written = tuple(channel.not_written)
        unsaved = tuple(channel.unsaved)
    return RunResult(
        reason,
        machine.insn_count,
        time.monotonic() - start,
        image,
        loaded,
        _signal(received),
        shutdown,
        started,
        copied,
        not_copied,
        not_written,
        unsaved,
        unanswered,
        database,
        failed,
    )


def _all_input_delivered(
    machine: Machine, verify: Callable[[StopReason, int], StopReason] | None
) -> Callable[[StopReason, int], StopReason]:
    """``verify``, after checking that a replay delivered every recorded input (else it ends ``diverged``)."""

    def check(reason: StopReason, insn_count: int) -> StopReason:
        left = machine.pending_input
        if left and reason.kind not in ("plugin", "interrupted", "timeout"):
            return StopReason(
                "diverged", f"replay diverged: {left} recorded inputs were never delivered ({reason.kind})", insn_count
            )
        return verify(reason, insn_count) if verify is not None else reason

    return check


def _connect(
    machine: Machine, channel: Channel, heard: Callable[[bytes], None] | None = None, replaying: bool = False
) -> None:
    """The guest's channel output, on the line and by hypercall, to ``channel`` (and to ``heard``); the bulk
    hypercalls' input from ``channel``, unless a replay gives the recorded answers."""
    machine.channel_sink = channel.feed if heard is None else _both(heard, channel.feed)
    machine.hypercall_sink = channel.give if heard is None else _both(heard, channel.give)
    if not replaying:
        machine.hypercall_source = channel.take


def _both(first: Callable[[bytes], None], second: Callable[[bytes], None]) -> Callable[[bytes], None]:
    def sink(data: bytes) -> None:
        first(data)
        second(data)

    return sink


def _signal(received: list[int]) -> int | None:
    return received[0] if received else None


def _run_plugins(
    machine: Machine,
    context: RunContext,
    options: RunOptions,
    on_loaded: Callable[[QPP], Any] | None,
    verify: Callable[[StopReason, int], StopReason] | None,
) -> tuple[StopReason, list[str], tuple[str, ...], tuple[str, ...], tuple[Path, int] | None]:
    """Load the plugins, run the machine to its end, stop and unload them: (reason, loaded, shutdown failures,
    failures while the guest ran, the run database's file and run id if a plugin wrote one).  With --strict
    the first plugin failure stops the run, and is its stop reason (``plugin``), which plugins record."""
    with QPP(Guest(machine), context=context, strict=options.strict) as qpp:
        qpp.add_builtin(CorePlugin(machine))
        qpp.load_all(list(options.plugins), options.plugin_args)
        # Only a plugin that opened a run database imported its module: a run without one does not pay for SQLite.
        opened = sys.modules.get("qppsuite.plugins.syscalls_logger.run_database")
        database = opened.run_database_of(qpp) if opened is not None else None
        if on_loaded is not None:
            on_loaded(qpp)
        qpp.start_all()
        try:
            reason = machine.run()
        except PluginCallbackError as err:  # --strict: the first failure ends the run, with its reason
            reason = StopReason("plugin", str(err), machine.insn_count)
        if verify is not None:
            reason = verify(reason, machine.insn_count)
        qpp.stop_all(reason)
        loaded = [name for name in qpp.loaded if name != "core"]
    shutdown = tuple(str(f) for f in qpp.failures if f.where in ("stop()", "unload()"))
    counts = qpp.failure_counts
    failed = tuple(
        f"{f}" + (f" ({counts[f.plugin, f.where]} times)" if counts[f.plugin, f.where] > 1 else "")
        for f in qpp.failures
        if f.where not in ("stop()", "unload()")
    )
    return reason, loaded, shutdown, failed, database


#: The key fields a snapshot must share with a run to start it: the machine and what was loaded into it.
_MACHINE_KEY = ("qppsuite", "image_files", "ram_mib", "bootargs", "agent", "host_decompress", "disk")
#: A user's snapshot name: a file name in the cache, so no path separator, no control character, no dot first.
SNAPSHOT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
#: The prefix of the ready snapshots' names (``ready-<hash of the key>``), kept for them.
READY_PREFIX = "ready-"


def ready_snapshot_key(options: RunOptions, image: ImageBundle, bootargs: str) -> dict[str, Any]:
    """What a snapshot of the guest's ready point is valid for: this qppsuite, the image's files, the
    RAM, the boot arguments, the agent, how the kernel is loaded and, with a disk, the disk file's sha256
    (a key without a disk has no such field, as before disks existed)."""
    key: dict[str, Any] = {
        "kind": "ready",
        "qppsuite": __version__,
        "image_files": image.file_hashes,
        "ram_mib": options.ram_mib,
        "bootargs": bootargs,
        "agent": hashlib.sha256(AGENT.encode()).hexdigest(),
        "host_decompress": options.host_decompress,
    }
    if options.disk is not None:
        key["disk"] = disk_sha256(options.disk)
    return key


def snapshots_dir(cache: Path | None, image: ImageBundle) -> Path:
    """The cache's snapshots/IMAGE/: the ready snapshots and the user's named ones, ``NAME.snapshot`` each."""
    return cache_dir(cache) / "snapshots" / image.name


def ready_snapshot_file(options: RunOptions) -> Path:
    """Where the ready snapshot a run of ``options`` starts from is kept (it may not exist yet): for those who
    make it ahead of many runs (``qppsuite batch``).  An image that does not open is one :class:`ImageError`."""
    image = open_image(options.image, cache=options.cache, verify=False)
    return ready_snapshot_path(options, image, ready_snapshot_key(options, image, _bootargs(options, image)))


def ready_snapshot_path(options: RunOptions, image: ImageBundle, key: dict[str, Any]) -> Path:
    """Where the ready snapshot for ``key`` is kept: :func:`snapshots_dir`, named by the key's hash."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return snapshots_dir(options.cache, image) / f"{READY_PREFIX}{digest}.snapshot"


def snapshot_path(cache: Path | None, image: ImageBundle, name: str) -> Path:
    """The file of the snapshot ``name`` of ``image``; a name that is no plain file name (a path separator,
    a control character, a leading dot, over 64 characters) is one :class:`SnapshotError` line."""
    if not SNAPSHOT_NAME.fullmatch(name):
        raise SnapshotError(
            f"snapshot name {name!r}: use up to 64 letters, digits, '.', '_' and '-', not starting with '.' or '-'"
        )
    return snapshots_dir(cache, image) / f"{name}.snapshot"


def _refusal(found: dict[str, Any], wanted: dict[str, Any], image: ImageBundle) -> str | None:
    """Why a snapshot keyed ``found`` cannot start a run of ``image`` keyed ``wanted`` (the first difference),
    or None."""
    diff = next((field for field in _MACHINE_KEY if found.get(field) != wanted.get(field)), None)
    if diff is None:
        return None
    value = found.get(diff)
    return {
        "qppsuite": f"it was made by qppsuite {value}, and this is qppsuite {wanted['qppsuite']}",
        "image_files": f"it was made from other files of image '{image.name}' (the image was rebuilt since)",
        "ram_mib": f"it is of a guest with --ram {value}, and this run has --ram {wanted['ram_mib']}",
        "bootargs": f"its kernel command line is {value!r}, and this run's is {wanted['bootargs']!r}",
        "agent": "it was made with another channel agent (another qppsuite)",
        "host_decompress": f"it was made {'without' if value else 'with'} --guest-decompress",
        "disk": f"it was made with {_disk_words(value)}, and this run has {_disk_words(wanted.get('disk'))}",
    }[diff]


def _disk_words(digest: Any) -> str:
    return f"the disk of sha256 {str(digest)[:16]}…" if digest else "no disk"


def _read_named(options: RunOptions, image: ImageBundle, bootargs: str, name: str) -> Snapshot:
    """The user's snapshot ``name``, checked against the run; SnapshotError (one line) if it cannot start it."""
    path = snapshot_path(options.cache, image, name)
    if not path.is_file():
        raise SnapshotError(
            f"no snapshot '{name}' of image '{image.name}'", hint="`qppsuite snapshot list` shows the snapshots"
        )
    saved = snapshot.read(path)
    why = _refusal(saved.key, ready_snapshot_key(options, image, bootargs), image)
    if why is not None:
        raise SnapshotError(
            f"snapshot '{name}' cannot start this run: {why}",
            hint="save it again with `qppsuite snapshot save`",
        )
    if options.max_insns is not None and options.max_insns < saved.insn_count:
        raise SnapshotError(
            f"snapshot '{name}' lies at instruction {saved.insn_count:,}, past --max-insns {options.max_insns:,}",
            hint="--max-insns counts from power-on",
        )
    return saved


def _read_ready(options: RunOptions, image: ImageBundle, key: dict[str, Any], path: Path) -> Snapshot | None:
    """The ready snapshot at ``path``, or None when there is none or it cannot be used (a notice says why:
    the caller boots and makes it again)."""
    if not path.is_file():
        return None
    try:
        saved = snapshot.read(path)
    except SnapshotError as exc:
        why = str(exc)
    else:
        refusal = _refusal(saved.key, key, image)
        if refusal is None:
            return saved
        why = f"snapshot {path} cannot start this run: {refusal}"
    if options.notice is not None:
        options.notice(f"{why}; booting to make it again")
    return None


def _bootargs(options: RunOptions, image: ImageBundle) -> str:
    return " ".join(part for part in (image.bootargs, options.extra_bootargs) if part)


def _choose_start(
    options: RunOptions, image: ImageBundle, start: float
) -> tuple[RunOptions, tuple[str, Snapshot] | None]:
    """How the run starts: the options it really runs with (``warm`` off when it boots from power-on after
    all) and the snapshot it restores, with its name, if any.

    A run that may boot instead (``warm`` with no file to carry) does so when the image has no initramfs
    (the agent cannot run), when ``cold``, and when its ``max_insns`` lies before the ready snapshot: the
    count is from power-on, and plugins must see the run up to the budget.  A run with ``max_insns`` and
    no ready snapshot yet makes one first (a boot without console), so the choice depends on the options
    and the image only, never on what the cache holds; that boot counts against the run's wall-clock budget,
    which began at ``start`` (``time.monotonic()``).  Raises :class:`SnapshotError` for a named
    snapshot that cannot start the run.
    """
    if not options.uses_channel:
        return options, None
    may_boot = not (options.files or options.copy_out or options.cold_channel) and options.start_from is None
    booted = replace(options, warm=False)
    if may_boot and (options.cold or image.initrd_path is None):
        return booted, None
    if image.initrd_path is None:
        raise ImageError(f"image '{image.name}' has no initramfs, so the channel's agent cannot run in it")
    bootargs = _bootargs(options, image)
    if options.start_from is not None:
        if options.cold:
            raise SnapshotError("--cold and --from both say where the run starts: use one")
        return options, (options.start_from, _read_named(options, image, bootargs, options.start_from))
    if options.cold:
        return options, None
    key = ready_snapshot_key(options, image, bootargs)
    path = ready_snapshot_path(options, image, key)
    saved = _read_ready(options, image, key, path)
    if may_boot and options.max_insns is not None:
        if saved is None:
            saved = _make_ready(options, image, key, path, start)
        if saved is None or options.max_insns < saved.insn_count:
            return booted, None
    return options, None if saved is None else (path.stem, saved)


def _make_ready(
    options: RunOptions, image: ImageBundle, key: dict[str, Any], path: Path, start: float
) -> Snapshot | None:
    """Boot a machine of its own (no console, no instruction budget; the run's wall-clock budget, from
    ``start``) to the ready point and save it; None if the guest stopped before it was ready.  A signal
    stops it as it stops a run: :class:`Interrupted`."""
    machine = build_machine(replace(options, max_insns=None, warm=True), image, None, timeout_from=start)
    with stop_on_signals(machine) as received:
        reason = _boot_to_ready(machine, Channel(send=machine.send_to_channel))
    if received:
        raise Interrupted(f"{reason.message} while booting to make the ready snapshot", received[0])
    return _save_ready(machine, key, path) if reason.kind == "ready" else None


def _save_ready(machine: Machine, key: dict[str, Any], path: Path) -> Snapshot:
    """:func:`_save` the ready snapshot, and drop the image's ready snapshots that no run can use any more."""
    saved = _save(machine, key, path)
    _drop_stale_ready(key, path)
    return saved


#: Key fields that no later run of this image can share with a ready snapshot once they differ from the current
#: run's (another qppsuite, image files or agent); the others (RAM, boot arguments) are another run's choice.
_STALE_KEY = ("qppsuite", "image_files", "agent")


def _drop_stale_ready(key: dict[str, Any], path: Path) -> None:
    """Delete the image's other ready snapshots that can never start a run again (made by another qppsuite, from
    the image's files before a rebuild, or with another agent) or are damaged: each would stay in the cache for
    good, about 11 MB, since no run reads it.  The user's named snapshots are left alone."""
    for other in path.parent.glob(f"{READY_PREFIX}*.snapshot"):
        if other == path:
            continue
        try:
            found, _count = snapshot.describe(other)
        except SnapshotError:
            found = {}
        if any(found.get(field) != key[field] for field in _STALE_KEY):
            other.unlink(missing_ok=True)


def _boot_to_ready(machine: Machine, channel: Channel) -> StopReason:
    """Run the machine from power-on until the agent first says it is ready (stop kind ``ready``) or it stops."""
    machine.channel_sink = channel.feed
    channel.on_ready = lambda: machine.request_stop("ready", "the guest's channel agent is ready")
    reason = machine.run()
    channel.on_ready = None
    return reason


def _save(machine: Machine, key: dict[str, Any], path: Path, *, replace: bool = True) -> Snapshot:
    """Save the stopped machine to ``path`` (replaced whole, or with ``replace`` False never over a file another
    run put there meanwhile) and clear its stop, so it runs on; a cache that cannot be written is one
    :class:`SnapshotError` line."""
    machine.clear_stop()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SnapshotError(f"cannot write snapshot {path}: {exc.strerror or exc}") from None
    saved = machine.snapshot(key)
    snapshot.write(saved, path, replace=replace)
    return saved


def _reach_ready(
    machine: Machine,
    options: RunOptions,
    image: ImageBundle,
    channel: Channel,
    saved: tuple[str, Snapshot] | None,
) -> tuple[str, StopReason | None]:
    """Bring the guest to its ready point: restore ``saved`` (name, snapshot), or boot and save the ready
    snapshot.

    Returns how (``"restored"`` or ``"booted"``) and, if the guest stopped before it was ready, why.
    """
    machine.channel_sink = channel.feed
    if saved is not None:
        machine.restore(saved[1])
        return "restored", None
    reason = _boot_to_ready(machine, channel)
    if reason.kind != "ready":
        return "booted", reason
    key = ready_snapshot_key(options, image, machine.config.bootargs)
    _save_ready(machine, key, ready_snapshot_path(options, image, key))
    return "booted", None


@dataclass(frozen=True)
class SavedSnapshot:
    """What :func:`save_snapshot` made: the file, the instruction count (from power-on) it lies at, and the
    wall-clock seconds it took."""

    path: Path
    insn_count: int
    wall_seconds: float


def save_snapshot(name: str, options: RunOptions, console: Callable[[bytes], None] | None) -> SavedSnapshot:
    """Run the options' command (and files) through the channel from the ready snapshot (or
    ``options.start_from``) and, once it has ended and the agent waits for work again, save the machine
    as the snapshot ``name`` of the image: ``run(RunOptions(start_from=name, ...))`` starts there.

    No plugin is loaded.  Raises :class:`SnapshotError` for a bad or taken name (nothing is overwritten),
    :class:`GuestError` when the command fails (its exit status) or the guest stops first, and
    :class:`Interrupted` for a signal; nothing is saved then.
    """
    image = open_image(options.image, cache=options.cache)
    path = snapshot_path(options.cache, image, name)
    if name.startswith(READY_PREFIX):
        raise SnapshotError(f"snapshot name {name!r}: names starting with {READY_PREFIX!r} are the ready snapshots'")
    if path.exists():
        raise SnapshotError(
            f"snapshot '{name}' of image '{image.name}' exists", hint=f"`qppsuite snapshot delete {name}` first"
        )
    start = time.monotonic()
    options, saved = _choose_start(replace(options, warm=True, cold=False, max_insns=None), image, start)
    if not options.uses_channel:  # the image cannot run the agent
        raise ImageError(f"image '{image.name}' has no initramfs, so the channel's agent cannot run in it")
    machine = build_machine(options, image, console, timeout_from=start)
    channel = Channel(options.files, channel_script(options), send=machine.send_to_channel)
    channel.prepare(then_exit=False)
    with stop_on_signals(machine) as received:
        _, reason = _reach_ready(machine, options, image, channel, saved)
        if reason is None:
            _connect(machine, channel)  # files from 16 KB go in by hypercall

            def ended() -> None:  # the agent waits for work again once it has done all it was sent
                if channel.served:
                    machine.request_stop("ready", "the command has ended")

            channel.on_ready = ended
            reason = machine.run()
    if received:
        raise Interrupted(f"{reason.message}: snapshot '{name}' not saved", received[0])
    if reason.kind != "ready":
        raise GuestError(f"{reason.kind}: {reason.message} (snapshot '{name}' not saved)")
    if channel.status != 0:
        raise GuestError(f"the command exited with status {channel.status}: snapshot '{name}' not saved")
    key = ready_snapshot_key(options, image, machine.config.bootargs) | {"kind": "named"}
    _save(machine, key, path, replace=False)  # two saves of one NAME at once: the first stays
    return SavedSnapshot(path, machine.insn_count, time.monotonic() - start)


@contextmanager
def stop_on_signals(machine: Machine) -> Iterator[list[int]]:
    """SIGINT, SIGTERM, SIGHUP (a closed terminal) and SIGQUIT stop the run at the next safe point, and nothing else,
    for the whole block.

    The first signal asks the machine to stop (stop reason ``interrupted``);
    the run then ends as any other does: plugins are stopped and unloaded, the
    logger commits its last batch and ends its ``runs`` row.  Further signals
    during that shutdown are noted and ignored, so a second Ctrl-C cannot cut a
    commit short.  A Python exception raised from a signal handler would land
    inside whatever engine callback is running (a TLB fill, a hook), where C
    cannot carry it.  The yielded list receives the signal numbers seen; once
    one was, both signals stay ignored after the block.  Off the main thread
    (where Python cannot install handlers) this does nothing.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def stop(signum: int, _frame: object) -> None:
        received.append(signum)
        if len(received) == 1:
            machine.request_stop("interrupted", f"interrupted by {signal.Signals(signum).name}")

    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)  # SIGQUIT's core dump would skip the
    previous = {signum: signal.signal(signum, stop) for signum in handled}  # terminal's restore and the last commit
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            # After an interrupt the process is on its way out: more signals are ignored, not raised into the
            # error report and the exit (a user pressing Ctrl-C again still gets exit status 128 + signal).
            signal.signal(signum, signal.SIG_IGN if received else handler)
