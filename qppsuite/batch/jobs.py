"""The jobs of a batch: a YAML jobs file (``defaults:`` applied to each entry of ``jobs:``), or a directory of
samples with one template job applied to each file, resolved into :class:`Job` values.

A job names an image, plugins and their arguments, a command (``cmd``) or a script (``cmd_file``), host files to
put in the guest, a budget (guest instructions, wall-clock seconds) and a label; docs/batch.md has the format.
Both files are checked against JSON Schemas beside this module (``file.schema.json``, ``jobs.schema.json``) with
the project's validator (:func:`qppsuite.schemas.schema_problem`), so a bad field is one line naming the job and
the field.  Host paths are relative to the jobs file's directory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shlex
import stat
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qppsuite.channel import ChannelError, parse_file_spec
from qppsuite.core.qpp import parse_plugin_list
from qppsuite.errors import QppsuiteError
from qppsuite.schemas import load_schema, schema_problem
from qppsuite.session import DEFAULT_IMAGE

FILE_SCHEMA = Path(__file__).with_name("file.schema.json")
JOB_SCHEMA = Path(__file__).with_name("jobs.schema.json")

ImageHasher = Callable[[str], str]
"""``(image name or path) -> sha256 hex`` of the image's content (:func:`qppsuite.batch.shipping.image_hash`)."""

#: Plugins a job loads when it names none: the system-call log, which makes the job's run database.
DEFAULT_PLUGINS = ("osi_linux", "syscalls", "syscalls_logger")
#: Plugins that open the run database (its ``db`` argument): the batch gives the first one the job loads its path.
DATABASE_PLUGINS = ("syscalls_logger", "file_activity", "proc_events", "net_activity", "coverage")
#: A job's wall-clock budget (seconds) unless its ``budget.timeout`` says otherwise.
DEFAULT_TIMEOUT_S = 600.0
#: Where a template's sample goes in the guest, and what its ``cmd`` says to name it.
SAMPLE_DIR = "/root/samples"
SAMPLE_PLACEHOLDER = "{sample}"
#: A job id: a file name on any file system (no separator, no leading dot), from the label.
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_ID_MAX = 80
#: Fields whose mapping a job's own mapping extends (key by key) instead of replacing.
_MERGED = ("plugin_args", "budget")
#: A jobs file or template larger than this is refused before it is read (bytes): no job list needs it.
MAX_JOBS_FILE = 64 << 20
#: How many skipped sample names the note about them shows.
_SHOWN_SKIPPED = 3


class JobsFileError(QppsuiteError):
    """A jobs file, template or samples directory that cannot make a batch: one line naming the job and field."""


@dataclass(frozen=True)
class Job:
    """One resolved job: ``spec`` is its JSON form (defaults applied, host paths absolute), ``id`` its directory
    name in the batch's output, ``sha256`` what a complete result must match (the spec, the image's manifest,
    every host file and the script it reads)."""

    id: str
    label: str
    spec: dict[str, Any]
    sha256: str

    @property
    def timeout_s(self) -> float:
        return float(self.spec.get("budget", {}).get("timeout", DEFAULT_TIMEOUT_S))

    @property
    def plugins(self) -> list[str]:
        plugins = self.spec.get("plugins", list(DEFAULT_PLUGINS))
        return parse_plugin_list([plugins] if isinstance(plugins, str) else plugins)

    def run_arguments(self, database: Path, console: Path, copy_dir: Path, image: str | None = None) -> list[str]:
        """The ``qppsuite run`` arguments of this job: its database at ``database`` (given to the first plugin
        that writes one; a job without such a plugin has none), the guest console to ``console``, copied-out
        files into ``copy_dir``; ``image`` replaces the job's image (a worker's copy of the bundle)."""
        spec = self.spec
        args = [image or spec.get("image", DEFAULT_IMAGE), "-q", "--console", str(console)]
        plugins = self.plugins
        if plugins:
            args += ["--plugins", ",".join(plugins)]
        for plugin, values in spec.get("plugin_args", {}).items():
            args += [item for key, value in values.items() for item in ("-p", f"{plugin}:{key}={_arg_text(value)}")]
        writer = next((name for name in plugins if name in DATABASE_PLUGINS), None)
        if writer is not None:
            args += ["-p", f"{writer}:db={database}"]
        if "cmd" in spec:
            args += ["--cmd", spec["cmd"]]
        if "cmd_file" in spec:
            args += ["--cmd-file", spec["cmd_file"]]
        for item in spec.get("files", []):
            args += ["--file", f"{item['host']}:{item['guest']}" if "guest" in item else item["host"]]
        for guest in spec.get("copy_out", []):
            args += ["--copy-out", f"{guest}:{copy_dir / Path(guest).name}"]
        budget = spec.get("budget", {})
        if "instructions" in budget:
            args += ["--max-insns", str(budget["instructions"])]
        args += ["--timeout", f"{self.timeout_s:g}"]
        if "ram" in spec:
            args += ["--ram", str(spec["ram"])]
        if "bootargs" in spec:
            args += ["--bootargs", spec["bootargs"]]
        return args


def _arg_text(value: object) -> str:
    """A plugin argument as ``-p plugin:key=VALUE`` spells it (YAML's true is ``true``)."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


def load_jobs_file(path: Path, image_hash: ImageHasher) -> list[Job]:
    """The jobs of the YAML file ``path``; a file that is not YAML, or a job that breaks the schema, is one
    :class:`JobsFileError` line (``jobs.yaml: job 3 ('x'): budget/instructions: ...``)."""
    document = _read_yaml(path)
    problem = schema_problem(document, load_schema(FILE_SCHEMA))
    if problem is not None:
        raise JobsFileError(f"{path}: {problem}")
    defaults = document.get("defaults") or {}
    entries = [_with_defaults(defaults, entry) for entry in document["jobs"]]
    return _resolve_all(path, entries, path.parent, image_hash)


def load_samples(
    samples: Path, template: Path, image_hash: ImageHasher, note: Callable[[str], None] | None = None
) -> list[Job]:
    """One job per regular file in the directory ``samples`` (sorted by name), the template job of the YAML file
    ``template`` applied to each: the sample goes into the guest at ``/root/samples/NAME``, ``{sample}`` in the
    template's ``cmd`` becomes that path (shell-quoted), and the label is the file name (:func:`sample_label`).
    A symbolic link is no sample (it may point anywhere on the host), nor a directory, FIFO or device:
    ``note`` gets one line saying how many entries were skipped and the first names."""
    if not samples.is_dir():
        raise JobsFileError(f"{samples}: not a directory of samples")
    document = _read_yaml(template)
    if not isinstance(document, dict):
        raise JobsFileError(f"{template}: the template must be one job (a mapping)")
    if "label" in document:
        raise JobsFileError(f"{template}: label: each sample's job is labelled by its file name: remove it")
    script = document.get("cmd_file")
    if isinstance(script, str) and note is not None:
        _note_placeholder_in_script(template.parent / Path(script).expanduser(), template, note)
    entries = []
    skipped: list[str] = []
    for sample in sorted(samples.iterdir()):
        shown = os.fsencode(sample.name).decode("utf-8", "backslashreplace")
        if not _is_regular(sample):
            skipped.append(shown)
            continue
        guest = f"{SAMPLE_DIR}/{_guest_sample_name(sample.name)}"
        entry = _with_defaults(document, {"label": sample_label(sample.name)})
        entry["files"] = [*entry.get("files", []), {"host": str(sample.absolute()), "guest": guest}]
        if isinstance(entry.get("cmd"), str):
            entry["cmd"] = entry["cmd"].replace(SAMPLE_PLACEHOLDER, shlex.quote(guest))
        entries.append(entry)
    if skipped and note is not None:
        first = ", ".join(json.dumps(name) for name in skipped[:_SHOWN_SKIPPED])
        more = f" and {len(skipped) - _SHOWN_SKIPPED} more" if len(skipped) > _SHOWN_SKIPPED else ""
        what = "entry that is not a regular file" if len(skipped) == 1 else "entries that are not regular files"
        note(f"{samples}: skipped {len(skipped)} {what} (links, directories, ...): {first}{more}")
    if not entries:
        raise JobsFileError(f"{samples}: no sample files in it")
    return _resolve_all(template, entries, template.parent, image_hash)


def _note_placeholder_in_script(script: Path, template: Path, note: Callable[[str], None]) -> None:
    """One ``note`` line if the template's ``cmd_file`` (``script``) holds ``{sample}``, which is replaced in
    ``cmd`` only: the script is sent as it is and runs with no arguments.  A script that is no regular file or
    cannot be read says nothing here (the job check reports it)."""
    try:
        if not script.is_file() or script.stat().st_size > MAX_JOBS_FILE:
            return
        text = script.read_bytes()
    except (OSError, RuntimeError):  # RuntimeError: ~nosuchuser
        return
    if SAMPLE_PLACEHOLDER.encode() in text:
        note(
            f"{template}: cmd_file: {SAMPLE_PLACEHOLDER} is replaced in cmd only, and stays as written in the script,"
            f" which runs with no arguments: the sample is the file in {SAMPLE_DIR}/"
        )


#: The longest label (jobs.schema.json's maxLength); a sample's longer one is cut, with a hash of its name.
LABEL_MAX = 255


def sample_label(name: str) -> str:
    """The label of the sample file ``name`` (as :func:`os.listdir` gives it): the name, with a backslash
    doubled and each byte that is not UTF-8 shown as ``\\xNN``, so two names never make one label (``x``
    followed by the byte 0xff is ``x\\xff``, the four characters ``x\\xff`` are ``x\\\\xff``).  One longer
    than :data:`LABEL_MAX` (a 255-byte name of such bytes is 1,020 characters) is cut and ends in ``…`` and the
    first 16 hex digits of the name's sha256, so it stays a label and stays its own."""
    label = "\\\\".join(os.fsencode(part).decode("utf-8", "backslashreplace") for part in name.split("\\"))
    if len(label) <= LABEL_MAX:
        return label
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    return f"{label[: LABEL_MAX - len(digest) - 1]}…{digest}"


#: The longest file name the guest's file systems take, in bytes (include/uapi/linux/limits.h NAME_MAX).
NAME_MAX = 255


def _guest_sample_name(name: str) -> str:
    """The name the sample file ``name`` (as :func:`os.listdir` gives it) has in the guest: each byte that is
    not UTF-8, each control character (a newline would end the agent's request line) and white space at the end
    (the request line loses it) shown as ``\\xNN``, one for each of its UTF-8 bytes, so every sample can run.  A
    name that grows past :data:`NAME_MAX` bytes that way is cut and ends in ``-`` and the first 16 hex digits of
    the name's sha256."""
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    body = text.rstrip()
    shown = "".join(_bytes_shown(char) if unicodedata.category(char) == "Cc" else char for char in body)
    shown += "".join(_bytes_shown(char) for char in text[len(body) :])
    if len(shown.encode()) <= NAME_MAX:
        return shown
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]  # so two long names stay two files
    cut = shown.encode()[: NAME_MAX - len(digest) - 1].decode("utf-8", "ignore")
    return f"{cut.rstrip()}-{digest}"


def _bytes_shown(char: str) -> str:
    return "".join(f"\\x{byte:02x}" for byte in char.encode())


def _is_regular(path: Path) -> bool:
    """Whether ``path`` itself (a link not followed) is a regular file."""
    try:
        return stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return False


def _read_yaml(path: Path) -> Any:
    import yaml  # only batch reads YAML: not paid at every start-up

    try:
        mode, size = (info := path.stat()).st_mode, info.st_size
    except OSError as exc:
        raise JobsFileError(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):  # a FIFO or /dev/zero would never end
        raise JobsFileError(f"{path}: not a regular file")
    if size > MAX_JOBS_FILE:
        raise JobsFileError(f"{path}: {size} bytes, more than a jobs file may hold ({MAX_JOBS_FILE >> 20} MiB)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise JobsFileError(f"{path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from exc
    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise JobsFileError(f"{path}: nested too deeply to be a jobs file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not YAML"
        raise JobsFileError(f"{path}: not valid YAML{where}: {problem}") from None


def _with_defaults(defaults: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """``entry`` over ``defaults``; plugin_args and budget are merged key by key (a job's plugin's arguments
    extend the defaults' for that plugin)."""
    merged = {**defaults, **entry}
    for field in _MERGED:
        base, own = defaults.get(field), entry.get(field)
        if isinstance(base, dict) and isinstance(own, dict):
            if field == "plugin_args":
                merged[field] = {
                    name: {**(base.get(name) or {}), **(own.get(name) or {})}
                    if isinstance(base.get(name), dict) and isinstance(own.get(name), dict)
                    else own.get(name, base.get(name))
                    for name in {**base, **own}
                }
            else:
                merged[field] = {**base, **own}
    return merged


def _resolve_all(source: Path, entries: list[dict[str, Any]], base: Path, image_hash: ImageHasher) -> list[Job]:
    jobs: list[Job] = []
    specs: list[tuple[str, str, dict[str, Any]]] = []
    ids: dict[str, str] = {}
    labels: set[str] = set()
    schema = load_schema(JOB_SCHEMA)
    for number, entry in enumerate(entries, 1):
        label = entry.get("label")
        name = f"job {number}" + (f" ({json.dumps(label)})" if isinstance(label, str) else "")
        problem = schema_problem(entry, schema)
        if problem is not None:
            raise JobsFileError(f"{source}: {name}: {problem}")
        label = str(entry["label"])
        _check_values(entry, source, name)
        if "cmd" in entry and "cmd_file" in entry:
            raise JobsFileError(f"{source}: {name}: cmd and cmd_file both give the command: use one")
        if label in labels:
            raise JobsFileError(f"{source}: {name}: label used by an earlier job (labels name results: make it unique)")
        labels.add(label)
        for plugin, values in entry.get("plugin_args", {}).items():
            if "db" in values:
                raise JobsFileError(f"{source}: {name}: plugin_args/{plugin}/db: the batch names each job's database")
        job_id = _job_id(label, ids)
        ids[job_id] = label
        specs.append((job_id, label, _absolute_paths(entry, base, source, name)))
    # every job checked before any image is opened: a bad field is reported as such, whatever the images
    images: dict[str, str] = {}  # image -> its hash: each image opened once, not once per job
    contents: dict[tuple[str, bool], str] = {}  # (host path, modes) -> hash: a file many jobs share read once
    for job_id, label, spec in specs:
        image = spec.get("image", DEFAULT_IMAGE)
        if image not in images:
            images[image] = image_hash(image)
        identity = _identity(spec, images[image], contents, source, label)
        jobs.append(Job(job_id, label, spec, hashlib.sha256(identity.encode()).hexdigest()))
    return jobs


def _identity(
    spec: dict[str, Any], image: str, contents: dict[tuple[str, bool], str], source: Path, label: str
) -> str:
    """What a job's sha256 covers, as text: the spec with each host file given by its content (and, for
    ``files``, the mode bits the guest gets and the name the guest sees, when that is the host file's), not its
    host path, so a project or corpus moved elsewhere resumes; the image by ``image``, the hash of its manifest
    (a bundle's path is left out)."""

    def content(text: str, modes: bool) -> str:
        if (text, modes) not in contents:
            contents[text, modes] = _content_hash(Path(text), source, label, modes)
        return contents[text, modes]

    shown = dict(spec)
    if "cmd_file" in spec:  # read as the script's text: its mode does not reach the guest
        shown["cmd_file"] = {"sha256": content(spec["cmd_file"], False)}
    if "files" in spec:
        shown["files"] = [
            {"sha256": content(item["host"], True), **({"guest": item["guest"]} if "guest" in item else
                                                       {"name": _guest_name(Path(item["host"]))})}
            for item in spec["files"]
        ]
    shown["image"] = {"manifest_sha256": image} if "/" in spec.get("image", "") else spec.get("image")
    return json.dumps(shown, sort_keys=True)


def _check_values(entry: dict[str, Any], source: Path, name: str) -> None:
    """What the schema cannot say: no NUL in a text the run passes on (no argument or path holds one), a finite
    timeout (YAML's ``.nan`` is a number), and copies out whose file names differ (each lands in the job's
    ``copied/`` directory by its name)."""
    _check_text(entry, source, name, "")
    texts = [("cmd", entry.get("cmd")), ("bootargs", entry.get("bootargs")), ("label", entry.get("label"))]
    texts += [(f"copy_out/{n}", guest) for n, guest in enumerate(entry.get("copy_out", []))]
    for field, text in texts:
        if isinstance(text, str) and "\0" in text:
            raise JobsFileError(f"{source}: {name}: {field}: a NUL byte, which no command line or path holds")
    timeout = entry.get("budget", {}).get("timeout")
    if isinstance(timeout, float) and not math.isfinite(timeout):
        raise JobsFileError(f"{source}: {name}: budget/timeout: {timeout} is no number of seconds")
    seen: dict[str, str] = {}
    for guest in entry.get("copy_out", []):
        if ":" in guest:  # --copy-out GUEST:HOST: the rest would be taken for the host path
            raise JobsFileError(f"{source}: {name}: copy_out: {guest}: a guest path with ':' cannot be copied out")
        named = Path(guest).name
        if named in seen:
            raise JobsFileError(
                f"{source}: {name}: copy_out: {seen[named]} and {guest} would both be copied/{named}: copy one"
            )
        seen[named] = guest


#: Fields that are host paths: a name that is not UTF-8 is kept as os.fsdecode gives it (surrogate escapes).
_HOST_PATH = re.compile(r"(cmd_file|image|files/\d+(/host)?)")


def _check_text(value: Any, source: Path, name: str, field: str) -> None:
    """Every text of a job (keys and values, nested) but its host paths is UTF-8: YAML's ``"\\udcff"`` escape
    gives a lone surrogate, which no argument, guest path or database column can hold."""
    if _HOST_PATH.fullmatch(field):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _check_text(key, source, name, field)
            _check_text(item, source, name, f"{field}/{key}" if field else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_text(item, source, name, f"{field}/{index}")
    elif isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            raise JobsFileError(f"{source}: {name}: {field or 'a key'}: not text (a lone surrogate)") from None


def _absolute_paths(entry: dict[str, Any], base: Path, source: Path, name: str) -> dict[str, Any]:
    """The job with its host paths made absolute (relative ones are relative to ``base``) and each checked to
    exist; ``files`` entries become ``{"host", "guest"?}`` mappings."""
    spec = dict(entry)

    def host(text: str, field: str, kinds: tuple[str, ...] = ("regular file",)) -> str:
        """``text`` made absolute; it must be one of ``kinds`` (a regular file, a directory): a FIFO or a
        device would be read for ever."""
        try:
            path = (base / Path(text).expanduser()).absolute()
        except RuntimeError as exc:  # ~nosuchuser
            raise JobsFileError(f"{source}: {name}: {field}: {text}: {exc}") from None
        try:
            mode = path.stat().st_mode
        except OSError as exc:
            why = "does not exist" if isinstance(exc, FileNotFoundError) else f"cannot be read: {exc.strerror}"
            raise JobsFileError(f"{source}: {name}: {field}: {text} {why}") from None
        kind = "regular file" if stat.S_ISREG(mode) else "directory" if stat.S_ISDIR(mode) else None
        if kind not in kinds:
            raise JobsFileError(f"{source}: {name}: {field}: {text} is not a {' or a '.join(kinds)}")
        return str(path)

    if "cmd_file" in spec:
        spec["cmd_file"] = host(spec["cmd_file"], "cmd_file")
    files = []
    for index, item in enumerate(spec.get("files", [])):
        item = {"host": item} if isinstance(item, str) else dict(item)
        field = f"files/{index}"
        item["host"] = host(item["host"], field, ("regular file", "directory"))
        if Path(item["host"]).is_symlink():
            raise JobsFileError(f"{source}: {name}: {field}: {_shown(item['host'])}: {_LINK}: name what it points to")
        try:
            if Path(item["host"]).is_dir():
                _tree_files(Path(item["host"]))
        except _Unshippable as exc:
            raise JobsFileError(f"{source}: {name}: {field}: {exc}") from None
        except OSError as exc:
            why = f"cannot read {_shown(exc.filename)}: {exc.strerror}"
            raise JobsFileError(f"{source}: {name}: {field}: {why}") from None
        if "guest" in item:  # as the run checks it, so a bad one is refused now and not at every run
            try:
                parse_file_spec(f"{item['host']}:{item['guest']}")
            except ChannelError as exc:
                raise JobsFileError(f"{source}: {name}: {field}/guest: {exc}") from None
        files.append(item)
    if files:
        spec["files"] = files
    image = spec.get("image")
    if isinstance(image, str) and ("/" in image or image.startswith(".")):
        spec["image"] = host(image, "image", ("directory",))
    return spec


_LINK = "a symbolic link (it may point anywhere on the host)"


class _Unshippable(Exception):
    """An entry of a ``files`` directory that cannot go into the guest as it is: the message names it."""


def _tree_files(top: Path) -> list[Path]:
    """The regular files under the directory ``top``, in name order (directories are walked; one that holds no
    file is not made in the guest).  What ``--file`` would follow or drop is refused, as a sample is: a symbolic
    link (it may point anywhere on the host, or loop), a FIFO, socket or device, and a name the guest path cannot
    take (not UTF-8, a control character, white space at the end of a file's name) raise :class:`_Unshippable`
    naming the entry, escaped; a directory that cannot be listed raises OSError."""
    found: list[Path] = []
    pending = [top]
    while pending:
        directory = pending.pop()
        with os.scandir(directory) as listing:
            entries = list(listing)
        for entry in entries:
            path = Path(entry.path)
            shown = _shown(path)
            if _odd_name(entry.name):
                raise _Unshippable(f"{shown}: a name that is not UTF-8 or holds a control character, "
                                   "which no guest path takes")
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISLNK(mode):
                raise _Unshippable(f"{shown}: {_LINK}: only regular files and directories go in the guest")
            if stat.S_ISDIR(mode):
                pending.append(path)
            elif not stat.S_ISREG(mode):
                raise _Unshippable(f"{shown}: a FIFO, socket or device: only regular files and directories go "
                                   "in the guest")
            elif entry.name != entry.name.rstrip():  # the agent's request line loses it
                raise _Unshippable(f"{shown}: a file name ending in white space, which no guest path takes")
            else:
                found.append(path)
    return sorted(found)


def _odd_name(name: str) -> bool:
    """Whether the file name ``name`` (as :func:`os.listdir` gives it) is not UTF-8 or holds a control
    character."""
    try:
        text = os.fsencode(name).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return any(unicodedata.category(char) == "Cc" for char in text)


def _shown(path: object) -> str:
    """A host path for a one-line message: quoted, each control character escaped, bytes that are not UTF-8
    as ``\\xNN``."""
    return json.dumps(os.fsencode(str(path)).decode("utf-8", "backslashreplace"), ensure_ascii=False)


def _guest_name(host: Path) -> str:
    """The name ``--file HOST`` gives the file in the guest: a file's own, a directory's resolved one."""
    return host.resolve().name if host.is_dir() else host.name


def _content_hash(path: Path, source: Path, label: str, modes: bool) -> str:
    """sha256 of a file's bytes, or of a directory's regular files (in name order, each its relative name as
    bytes and its content's sha256); with ``modes``, each file's permission bits too (``--file`` gives the guest
    file the host file's: a ``chmod +x`` changes what the guest runs).  One :class:`JobsFileError` line if it
    cannot be read."""
    try:
        if not path.is_dir():
            mode, content = _file_hash(path)
            return hashlib.sha256(f"{mode:o}\0".encode() + content).hexdigest() if modes else content.hex()
        digest = hashlib.sha256()
        for member in _tree_files(path):
            mode, content = _file_hash(member)
            digest.update(os.fsencode(member.relative_to(path)) + b"\0" + (f"{mode:o}\0".encode() if modes else b""))
            digest.update(content)
    except _Unshippable as exc:  # changed since the job was checked
        raise JobsFileError(f"{source}: {json.dumps(label)}: {exc}") from None
    except OSError as exc:
        shown = os.fsencode(str(exc.filename or path)).decode("utf-8", "backslashreplace")
        raise JobsFileError(f"{source}: {json.dumps(label)}: cannot read {shown}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def _file_hash(path: Path) -> tuple[int, bytes]:
    """``(permission bits, sha256 digest of the bytes)`` of the regular file ``path``; OSError if it cannot be
    read."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
        return stat.S_IMODE(os.fstat(stream.fileno()).st_mode), digest.digest()


def _job_id(label: str, taken: dict[str, str]) -> str:
    """A directory name for ``label``: the label itself when it is a safe file name, else its safe characters and
    a hash of the label (two labels never share an id)."""
    safe = _UNSAFE.sub("_", label)[:_ID_MAX].lstrip(".-") or "job"
    if safe != label or safe in taken:
        safe = f"{safe}-{hashlib.sha256(label.encode()).hexdigest()[:8]}"
    return safe
