"""Image bundles: the on-disk unit the core boots (kernel, initrd, OSI profile, manifest).

A bundle is a directory ``<cache>/images/<name>/`` whose ``manifest.json``
names every file with its sha256 and size.  The manifest is the contract
between the builder (:mod:`qppsuite.images.builder`), the core and the
plugins, so this loader checks it strictly and reports problems as one-line
:class:`~qppsuite.errors.ImageError` messages that say what was asked for and
what exists.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qppsuite.cache import cache_dir
from qppsuite.errors import ImageError
from qppsuite.schemas import load_schema, schema_problem

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
MANIFEST_SCHEMA = Path(__file__).with_name("manifest.schema.json")
IMAGES_SUBDIR = "images"


@dataclass(frozen=True)
class ImageBundle:
    """A loaded bundle; paths are absolute, optional parts are None when the image lacks them."""

    path: Path
    name: str
    manifest: dict[str, Any]
    kernel_path: Path
    initrd_path: Path | None
    profile_path: Path | None
    bootargs: str
    #: The root filesystem's disk image (``image import --disk``), the guest's /dev/vda; None: no disk.
    disk_path: Path | None = None

    @property
    def file_hashes(self) -> dict[str, str]:
        """Each file's name and sha256, as the manifest lists them (verified by :func:`open_image`): what
        recordings and snapshots pin an image by."""
        files = self.manifest.get("files") or {}
        return {name: str(info["sha256"]) for name, info in sorted(files.items())}


def images_dir(override: Path | None = None) -> Path:
    return cache_dir(override) / IMAGES_SUBDIR


def _bundle_dirs(cache: Path | None) -> list[Path]:
    root = images_dir(cache)
    if not root.is_dir():
        return []
    # Dot-directories are builds in progress or being replaced.
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _resolve(ref: str | Path, cache: Path | None) -> Path:
    if isinstance(ref, Path) or "/" in ref or ref in (".", ".."):
        path = Path(ref).expanduser()
        if not path.is_dir():
            raise ImageError(f"image directory '{path}' does not exist")
        return path.absolute()
    candidate = images_dir(cache) / ref
    if candidate.is_dir():
        return candidate
    if Path(ref).is_dir():
        return Path(ref).absolute()
    available = ", ".join(p.name for p in _bundle_dirs(cache)) or "none"
    raise ImageError(
        f"image '{ref}' not found in {images_dir(cache)}; available: {available}",
        hint="build it with `qppsuite image build`",
    )


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ImageError(f"'{path}' is not an image bundle: it has no {MANIFEST_NAME}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ImageError(f"{manifest_path} is unreadable: {err}") from None
    if not isinstance(manifest, dict):
        raise ImageError(f"{manifest_path} is not a JSON object")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ImageError(
            f"{manifest_path} has format {manifest.get('format')!r}; this qppsuite reads format {MANIFEST_FORMAT}"
        )
    problem = schema_problem(manifest, load_schema(MANIFEST_SCHEMA))
    if problem is not None:
        raise ImageError(f"{manifest_path} is not a valid manifest: {problem}")
    for key in ("name", "kernel", "files"):
        if key not in manifest:
            raise ImageError(f"{manifest_path} lacks the required key '{key}'")
    if not isinstance(manifest["kernel"], dict) or "file" not in manifest["kernel"]:
        raise ImageError(f"{manifest_path}: 'kernel' must be an object with a 'file'")
    if not isinstance(manifest["files"], dict):
        raise ImageError(f"{manifest_path}: 'files' must be an object of file name -> sha256/size")
    return manifest


def _part(path: Path, manifest: dict[str, Any], key: str) -> Path | None:
    """The file a manifest section (kernel/initrd/profile/disk) names, which must be listed and present."""
    section = manifest.get(key)
    if section is None:
        return None
    if not isinstance(section, dict) or not isinstance(section.get("file"), str):
        raise ImageError(f"image '{manifest['name']}': manifest '{key}' must be null or have a 'file'")
    name = section["file"]
    if name not in manifest["files"]:
        raise ImageError(f"image '{manifest['name']}': {key} file '{name}' is not listed in the manifest's files")
    file_path = path / name
    if not file_path.is_file():
        raise ImageError(f"image '{manifest['name']}' is missing its {key} file '{name}' ({path})")
    return file_path


def verify_files(path: Path, manifest: dict[str, Any]) -> None:
    """Check every listed file's presence, size and sha256; the first mismatch is the error.

    Size is compared first so a truncated file is reported as truncated, the
    most common damage (an interrupted copy), rather than as a bare hash
    mismatch.
    """
    name = manifest["name"]
    for file_name, expected in sorted(manifest["files"].items()):
        file_path = path / file_name
        if not file_path.is_file():
            raise ImageError(f"image '{name}' is missing '{file_name}' listed in its manifest ({path})")
        size = file_path.stat().st_size
        want_size = expected.get("size")
        if isinstance(want_size, int) and size != want_size:
            what = "truncated" if size < want_size else "longer than recorded"
            raise ImageError(f"image '{name}': '{file_name}' is {what} ({size} bytes, manifest says {want_size})")
        with file_path.open("rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        if digest != expected.get("sha256"):
            raise ImageError(
                f"image '{name}': '{file_name}' is corrupt (sha256 {digest[:16]}…, "
                f"manifest says {str(expected.get('sha256'))[:16]}…)",
                hint="rebuild it with `qppsuite image build`",
            )


def open_image(ref: str | Path, *, cache: Path | None = None, verify: bool = True) -> ImageBundle:
    """Load a bundle by directory path or by name in :func:`images_dir`; ``verify`` checks every sha256."""
    path = _resolve(ref, cache)
    manifest = _read_manifest(path)
    if verify:
        verify_files(path, manifest)
    kernel_path = _part(path, manifest, "kernel")
    assert kernel_path is not None  # _read_manifest guarantees a kernel section
    return ImageBundle(
        path=path,
        name=str(manifest["name"]),
        manifest=manifest,
        kernel_path=kernel_path,
        initrd_path=_part(path, manifest, "initrd"),
        profile_path=_part(path, manifest, "profile"),
        bootargs=str(manifest.get("bootargs", "")),
        disk_path=_part(path, manifest, "disk"),
    )


def list_images(cache: Path | None = None) -> list[ImageBundle]:
    """Every readable bundle in :func:`images_dir`, by name; unreadable directories are skipped.

    Listing does not hash files (that is :func:`open_image`'s ``verify``), so
    it stays instant even with many large images.
    """
    bundles = []
    for path in _bundle_dirs(cache):
        try:
            bundles.append(open_image(path, verify=False))
        except ImageError:
            continue
    return bundles
