"""Record a guest run once, replay it under heavy analysis later, and prove it is the same run.

PANDA records to decouple a cheap capture from expensive analyses.  Here the
machine is deterministic and the guest takes no outside input (time is
virtual; the UART receives nothing), so a recording is the exact set of
inputs: the image's files by sha256 and the run's options, plus what the run
produced (instruction count, console digest).  Replaying re-executes from
those inputs with plugins attached and checks the outcome is identical; a
plugin that perturbs the guest, or a changed image, is reported as a
divergence instead of silently analysing a different execution.
"""

import errno
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qppsuite import __version__
from qppsuite.core.events import StopReason
from qppsuite.core.image import open_image
from qppsuite.errors import QppsuiteError
from qppsuite.schemas import load_schema, schema_problem
from qppsuite.session import RunOptions, RunResult, run

RECORDING_FORMAT = "qppsuite-recording/1"
RECORDING_SCHEMA = Path(__file__).with_name("recording.schema.json")
#: The options that determine the guest's execution; plugins and output paths do not.
PINNED_OPTIONS = ("cmd", "max_insns", "ram_mib", "host_decompress", "extra_bootargs")


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
    created: str = ""
    qppsuite_version: str = __version__
    format: str = RECORDING_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        """Write the recording as JSON; an unwritable path is a one-line :class:`RecordingError`."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            raise RecordingError(f"cannot write recording {path}: {exc.strerror}") from exc

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
        if not isinstance(data, dict) or data.get("format") != RECORDING_FORMAT:
            raise RecordingError(f"{path} is not a qppsuite recording (expected format {RECORDING_FORMAT})")
        problem = schema_problem(data, load_schema(RECORDING_SCHEMA))
        if problem is not None:
            raise RecordingError(f"{path} is a damaged recording: {problem}")
        return cls(**data)


def check_writable(path: Path) -> None:
    """Refuse, before a run, a recording path that cannot be written: a probe file is created beside it.

    Raises :class:`RecordingError` naming the path and the system's reason.
    """
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        raise RecordingError(f"cannot write recording {path}: {exc.strerror}") from None


class _Digest:
    """Console sink that hashes what the guest prints and forwards it."""

    def __init__(self, forward: Callable[[bytes], None] | None) -> None:
        self.sha = hashlib.sha256()
        self.size = 0
        self.forward = forward

    def __call__(self, data: bytes) -> None:
        self.sha.update(data)
        self.size += len(data)
        if self.forward is not None:
            self.forward(data)


def record(options: RunOptions, console: Callable[[bytes], None] | None = None) -> tuple[Recording, RunResult]:
    """Run once with the given plugins and pin the run's inputs and outcome."""
    image = open_image(options.image, cache=options.cache)
    digest = _Digest(console)
    result = run(options, digest, image=image)
    recording = Recording(
        image=image.name,
        image_files=image.file_hashes,
        options={key: getattr(options, key) for key in PINNED_OPTIONS}
        | ({"max_insns": result.insn_count} if result.reason.kind == "timeout" else {}),
        stop_kind=result.reason.kind,
        insn_count=result.insn_count,
        console_sha256=digest.sha.hexdigest(),
        console_bytes=digest.size,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    return recording, result


def replay(
    recording: Recording,
    plugins: Sequence[Any] = (),
    plugin_args: dict[str, dict[str, str]] | None = None,
    *,
    strict: bool = False,
    cache: Path | None = None,
    console: Callable[[bytes], None] | None = None,
) -> RunResult:
    """Re-run the recording with plugins; raise :class:`RecordingError` on any divergence."""
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
        plugins=list(plugins),
        plugin_args=plugin_args or {},
        strict=strict,
        cache=cache,
        **recording.options,
    )
    digest = _Digest(console)

    def verify(reason: StopReason, insn_count: int) -> StopReason:
        if reason.kind in ("plugin", "interrupted"):
            return reason  # a strict-mode plugin failure or a signal is its own end, not a divergence
        # a run the wall clock stopped was pinned to its instruction count, so its replay ends at that budget
        kind = "max_insns" if recording.stop_kind == "timeout" else recording.stop_kind
        if (reason.kind, insn_count, digest.sha.hexdigest()) == (kind, recording.insn_count, recording.console_sha256):
            return reason
        return StopReason(
            "diverged",
            f"replay diverged: {insn_count} instructions and console {digest.sha.hexdigest()[:12]} "
            f"({reason.kind}), recorded {recording.insn_count} and {recording.console_sha256[:12]} "
            f"({recording.stop_kind})",
            insn_count,
        )

    result = run(options, digest, image=image, verify=verify)
    if result.reason.kind == "diverged":
        raise RecordingError(
            result.reason.message, hint="a plugin wrote guest state, or the emulator changed since the recording"
        )
    return result
