"""Record a guest run once, replay it under heavy analysis later, and prove it is the same run.

PANDA records to decouple a cheap capture from expensive analyses.  Here the
machine is deterministic and owns its time, so a recording is the exact set of
inputs: the image's files by sha256, the run's options, and every byte the
guest received on its serial ports (the user's files and script on the
channel, keys typed or piped into ``run -i``), each stamped with the
instruction count at which it reached the port; plus what the run produced
(instruction count, console and channel digests).  Replaying re-executes from
those inputs with plugins attached, delivering the input at the same counts,
and checks the outcome is identical; a plugin that perturbs the guest, or a
changed image, is reported as a divergence instead of silently analysing a
different execution.  A run through the channel starts from the guest's ready
point, restored or booted to (the same machine state either way); its digests
cover what the guest said from that point.  ``recordings/README.md`` describes
the format for users.
"""

import base64
import binascii
import hashlib
import json
import re
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qppsuite import __version__
from qppsuite.core.events import StopReason
from qppsuite.core.machine import HostInput
from qppsuite.errors import QppsuiteError
from qppsuite.hostfiles import unwritable
from qppsuite.images.bundle import open_image
from qppsuite.schemas import load_schema, schema_problem
from qppsuite.session import GuestIO, RunOptions, RunResult, channel_script, disk_sha256, run

RECORDING_FORMAT = "qppsuite-recording/2"
#: Formats :meth:`Recording.load` reads: 1 had no input and no channel.
READABLE_FORMATS = ("qppsuite-recording/1", RECORDING_FORMAT)
RECORDING_SCHEMA = Path(__file__).with_name("recording.schema.json")
#: The options that determine the guest's execution; plugins and output paths do not.  A channel run's files
#: and script are not options: their bytes are in the recorded input.
PINNED_OPTIONS = (
    "cmd",
    "max_insns",
    "ram_mib",
    "host_decompress",
    "extra_bootargs",
    "interactive",
    "warm",
    "cold",
    "start_from",
    "cold_channel",
)
#: Stops a replay cannot meet by itself (the wall clock, the user leaving the console): the recording pins
#: the instruction count instead, and the replay ends there (``max_insns``).
PINNED_AT_COUNT = ("timeout", "detached")
#: The most input bytes a recording may hold (its files included), decompressed.
MAX_INPUT_BYTES = 4 << 30
#: Where ``qppsuite record`` writes when not told (the repository's top-level recordings/ folder).
DEFAULT_DIR = Path("recordings")
Stamp = tuple[int, str, bytes]


class RecordingError(QppsuiteError):
    """A recording that cannot be read, or a replay that diverged from it."""


@dataclass(frozen=True)
class Recording:
    """A recorded run: its inputs, and the outcome a faithful replay must reproduce."""

    image: str
    image_files: dict[str, str]
    options: dict[str, Any]
    stop_kind: str
    insn_count: int
    console_sha256: str
    console_bytes: int
    channel_sha256: str = ""
    channel_bytes: int = 0
    #: The input as delivered (:func:`pack_inputs`).
    inputs: dict[str, Any] = field(default_factory=lambda: pack_inputs([]))
    created: str = ""
    qppsuite_version: str = __version__
    format: str = RECORDING_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)
    #: The run's disk, if it had one: {"path": the file as recorded, "sha256": its digest}.
    disk: dict[str, str] = field(default_factory=dict)

    def save(self, path: Path, *, new: bool = False) -> None:
        """Write the recording as JSON; an unwritable path is a one-line :class:`RecordingError`.  With ``new``,
        a file that exists is left alone (FileExistsError)."""
        data = asdict(self)
        if not self.disk:
            del data["disk"]  # a run without a disk is recorded as before disks existed
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("x" if new else "w", encoding="utf-8") as stream:
                stream.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
        except FileExistsError:
            if new:
                raise
            raise RecordingError(f"cannot write recording {path}: it exists and is no file") from None
        except OSError as exc:
            raise RecordingError(f"cannot write recording {path}: {exc.strerror}") from exc

    def save_new(self, image: str) -> Path:
        """Write the recording under :func:`default_path`, never over another's (two records ending in the same
        second, even at once, get their own names); the path written."""
        while True:
            path = default_path(image)
            try:
                self.save(path, new=True)
            except FileExistsError:
                continue  # another record took that name since default_path looked
            return path

    @classmethod
    def load(cls, path: Path) -> "Recording":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise RecordingError(f"cannot read recording {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise RecordingError(f"{path} is not a qppsuite recording (not UTF-8 text: {exc.reason})") from None
        except (json.JSONDecodeError, RecursionError) as exc:
            raise RecordingError(f"{path} is not a qppsuite recording (bad JSON: {exc})") from None
        if not isinstance(data, dict) or data.get("format") not in READABLE_FORMATS:
            raise RecordingError(f"{path} is not a qppsuite recording (expected format {RECORDING_FORMAT})")
        problem = schema_problem(data, load_schema(RECORDING_SCHEMA))
        if problem is not None:
            raise RecordingError(f"{path} is a damaged recording: {problem}")
        recording = cls(**data)
        try:
            recording.input_stamps()
        except ValueError as exc:
            raise RecordingError(f"{path} is a damaged recording: {exc}") from None
        return recording

    def input_stamps(self) -> list[Stamp]:
        """The recorded input, ``(insn_count, port, bytes)`` in delivery order; :class:`ValueError` if damaged."""
        return unpack_inputs(self.inputs)


def pack_inputs(stamps: Sequence[Stamp]) -> dict[str, Any]:
    """The recording's ``inputs``: ``stamps`` as ``[count, port, length]`` rows and all bytes, zlib, base64."""
    data = zlib.compress(b"".join(chunk for _, _, chunk in stamps), 6)
    return {
        "stamps": [[count, port, len(chunk)] for count, port, chunk in stamps],
        "data": base64.b64encode(data).decode("ascii"),
    }


def unpack_inputs(inputs: dict[str, Any]) -> list[Stamp]:
    """The inverse of :func:`pack_inputs`; :class:`ValueError` for bytes that do not match the stamps, or
    counts out of order."""
    total = sum(length for _, _, length in inputs["stamps"])
    if total > MAX_INPUT_BYTES:
        raise ValueError(f"its input stamps claim {total:,} bytes, more than a recording may hold")
    try:
        inflate = zlib.decompressobj()
        data = inflate.decompress(base64.b64decode(inputs["data"], validate=True), total + 1)
    except (binascii.Error, zlib.error) as exc:
        raise ValueError(f"its input data does not decode ({exc})") from None
    if inflate.unconsumed_tail:  # a decompression bomb stops here, at the size the stamps claim
        raise ValueError(f"its input data holds more than the {total:,} bytes its stamps cover")
    stamps: list[Stamp] = []
    position = 0
    last = 0
    for count, port, length in inputs["stamps"]:
        if count < last:
            raise ValueError(f"its input at instruction {count} comes after instruction {last}")
        stamps.append((count, port, data[position : position + length]))
        position += length
        last = count
    if position != len(data):
        raise ValueError(f"its input stamps cover {position} bytes of {len(data)}")
    return stamps


def check_writable(path: Path) -> None:
    """Refuse, before a run, a recording path that cannot be written (:func:`qppsuite.hostfiles.unwritable`).

    Raises :class:`RecordingError` naming the path and the system's reason.
    """
    why = unwritable(path)
    if why is not None:
        raise RecordingError(f"cannot write recording {path}: {why}")


class _Digest:
    """Console sink that hashes what the guest prints and forwards it; :meth:`reset` starts over."""

    def __init__(self, forward: Callable[[bytes], None] | None = None) -> None:
        self.forward = forward
        self.reset()

    def reset(self) -> None:
        self.sha = hashlib.sha256()
        self.size = 0

    def __call__(self, data: bytes) -> None:
        self.sha.update(data)
        self.size += len(data)
        if self.forward is not None:
            self.forward(data)


class _Watch:
    """The digests of one run from its starting point, and the input it received."""

    def __init__(self, console: Callable[[bytes], None] | None) -> None:
        self.console = _Digest(console)
        self.channel = _Digest()
        self.stamps: list[Stamp] = []

    def io(self, **kwargs: Any) -> GuestIO:
        return GuestIO(at_start=self.start, on_channel_output=self.channel, **kwargs)

    def start(self) -> None:
        self.console.reset()
        self.channel.reset()

    def stamp(self, count: int, port: str, data: bytes) -> None:
        self.stamps.append((count, port, data))


def record(
    options: RunOptions,
    console: Callable[[bytes], None] | None = None,
    host: HostInput | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    on_script: Callable[[], None] | None = None,
    on_status: Callable[[int], None] | None = None,
) -> tuple[Recording, RunResult]:
    """Run once (with the given plugins, and ``host`` as an interactive run's keyboard) and pin the run's
    inputs and outcome; ``on_script`` and ``on_status`` as :class:`GuestIO`'s."""
    image = open_image(options.image, cache=options.cache)
    disk = {} if options.disk is None else {"path": str(options.disk.resolve()), "sha256": disk_sha256(options.disk)}
    watch = _Watch(console)
    io = watch.io(host=host, on_input=watch.stamp, progress=progress, on_script=on_script, on_status=on_status)
    result = run(options, watch.console, image=image, io=io)
    pinned = {key: getattr(options, key) for key in PINNED_OPTIONS} | {"warm": options.uses_channel}
    pinned["cold_channel"] = options.cold and result.start == "booted"  # files went in through the channel
    if result.reason.kind in PINNED_AT_COUNT:
        pinned["max_insns"] = result.insn_count
    recording = Recording(
        image=image.name,
        image_files=image.file_hashes,
        options=pinned,
        stop_kind=result.reason.kind,
        insn_count=result.insn_count,
        console_sha256=watch.console.sha.hexdigest(),
        console_bytes=watch.console.size,
        channel_sha256=watch.channel.sha.hexdigest(),
        channel_bytes=watch.channel.size,
        inputs=pack_inputs(watch.stamps),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        extra={"start": result.start} if result.start else {},
        disk=disk,
    )
    return recording, result


def _check_script(recording: Recording, options: RunOptions) -> None:
    """A channel run's command reached the guest as recorded input, which the replay feeds back: when that
    input carries a script (``R SIZE`` and its bytes), the recording's ``options.cmd`` must be it, or the file
    no longer says what ran.  (A command a run booted without the channel took in through /init: another one
    changes the guest's execution, which the replay finds.)"""
    line = b"".join(data for _count, port, data in recording.input_stamps() if port == "channel")
    if re.search(rb"(?:^|\n)R \d+ - -\n", line) is None:
        return  # the script never went in this way: a run booted without the channel, or one stopped before
    script = channel_script(options)
    if b"R %d - -\n%s" % (len(script), script) not in line:
        raise RecordingError(
            "the recording's options do not describe its input: the command it names is not the script the "
            "guest received",
            hint="the file was edited; record the run again",
        )


def _recorded_disk(recording: Recording, given: Path | None) -> Path | None:
    """The disk a replay of ``recording`` runs with: ``given`` or the recorded path, checked by sha256."""
    if not recording.disk:
        if given is not None:
            raise RecordingError("the recording was made without a disk: --disk does not apply")
        return None
    path = given if given is not None else Path(recording.disk["path"])
    found, recorded = disk_sha256(path), recording.disk["sha256"]
    if found != recorded:
        raise RecordingError(
            f"disk {path} is not the recorded one (sha256 {found[:16]}…, recorded {recorded[:16]}…)",
            hint="give the recorded disk with --disk",
        )
    return path


def default_path(image: str) -> Path:
    """Where ``qppsuite record`` writes when not told: recordings/IMAGE-YYYYmmddTHHMMSSZ.json (UTC), with
    ``-2``, ``-3``... before ``.json`` when a recording of that second exists, so none is overwritten."""
    stem = f"{Path(image).name or 'image'}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    path = DEFAULT_DIR / f"{stem}.json"
    suffix = 1
    while path.exists():
        suffix += 1
        path = DEFAULT_DIR / f"{stem}-{suffix}.json"
    return path


def replay(
    recording: Recording,
    plugins: Sequence[Any] = (),
    plugin_args: dict[str, dict[str, str]] | None = None,
    *,
    strict: bool = False,
    cache: Path | None = None,
    console: Callable[[bytes], None] | None = None,
    timeout_seconds: float | None = None,
    disk: Path | None = None,
) -> RunResult:
    """Re-run the recording with plugins; raise :class:`RecordingError` on any divergence.

    The replay stops at the recorded instruction count whatever happens, and after ``timeout_seconds`` of
    wall-clock time (None: no limit).  A recording with a disk replays with the file it names, or ``disk``;
    either must have the recorded sha256 (:class:`RecordingError` otherwise).
    """
    image = open_image(recording.image, cache=cache)
    files = image.file_hashes
    if files != recording.image_files:
        changed = sorted(
            k for k in set(files) | set(recording.image_files) if files.get(k) != recording.image_files.get(k)
        )
        raise RecordingError(
            f"image '{recording.image}' is not the recorded one: {', '.join(changed)} changed",
            hint="rebuild the recording, or restore the image it was made with",
        )
    options = RunOptions(
        image=image.path,
        disk=_recorded_disk(recording, disk),
        plugins=list(plugins),
        plugin_args=plugin_args or {},
        strict=strict,
        cache=cache,
        timeout_seconds=timeout_seconds,
        **recording.options,
    )
    if recording.format == RECORDING_FORMAT and options.uses_channel:
        _check_script(recording, options)
    watch = _Watch(console)
    if recording.format == RECORDING_FORMAT:
        # a format-1 recording is checked as it was made: its console from power-on, no channel
        io = watch.io(replayed=recording.input_stamps(), on_input=watch.stamp, end_at=recording.insn_count)
    else:
        io = GuestIO(on_input=watch.stamp)
    channel_sha = recording.channel_sha256 or hashlib.sha256().hexdigest()

    def verify(reason: StopReason, insn_count: int) -> StopReason:
        if reason.kind in ("plugin", "interrupted", "timeout"):
            return reason  # a strict-mode plugin failure, a signal or --timeout is its own end, not a divergence
        # a run the wall clock or the user stopped was pinned to its instruction count: its replay ends there
        kind = "max_insns" if recording.stop_kind in PINNED_AT_COUNT else recording.stop_kind
        outcome = (reason.kind, insn_count, watch.console.sha.hexdigest(), watch.channel.sha.hexdigest())
        if outcome == (kind, recording.insn_count, recording.console_sha256, channel_sha):
            return reason
        return StopReason(
            "diverged",
            f"replay diverged: {insn_count} instructions, console {outcome[2][:12]}, channel {outcome[3][:12]} "
            f"({reason.kind}); recorded {recording.insn_count}, {recording.console_sha256[:12]}, "
            f"{channel_sha[:12]} ({recording.stop_kind})",
            insn_count,
        )

    result = run(options, watch.console, image=image, verify=verify, io=io)
    if result.reason.kind == "diverged":
        raise RecordingError(
            result.reason.message, hint="a plugin wrote guest state, or the emulator changed since the recording"
        )
    return result
