"""Images for workers by content hash: the driver packs an image bundle (and its ready snapshots) once, workers
unpack it once into their own cache under that hash and reuse it for every job, never rebuilding it.

The hash is the sha256 of the bundle's manifest.json, which lists every file's sha256 (:func:`open_image`
verifies them), so two bundles with one hash hold the same files.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from qppsuite.core import snapshot
from qppsuite.core.snapshot import SnapshotError
from qppsuite.images.bundle import MANIFEST_NAME, cache_dir, open_image

SHIPPED_DIR = "batch-images"
"""Where a worker keeps the bundles it was sent: ``<cache>/batch-images/<hash>/<bundle directory>``."""


def image_hash(ref: str, cache: Path | None = None) -> str:
    """sha256 hex of the image's manifest (``ref``: a name or a bundle path); an image that does not open is one
    :class:`~qppsuite.errors.ImageError` line."""
    bundle = open_image(ref, cache=cache, verify=False)
    return hashlib.sha256((bundle.path / MANIFEST_NAME).read_bytes()).hexdigest()


def pack(ref: str, cache: Path | None = None) -> bytes:
    """The image as a tar: ``image/`` holds the bundle, ``snapshots/`` the ready snapshots of its files."""
    bundle = open_image(ref, cache=cache, verify=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        archive.add(bundle.path, arcname="image")
        for path in sorted((cache_dir(cache) / "snapshots" / bundle.name).glob("ready-*.snapshot")):
            try:
                key, _insns = snapshot.describe(path)
            except SnapshotError:
                continue
            if key.get("image_files") == bundle.file_hashes:
                archive.add(path, arcname=f"snapshots/{path.name}")
    return buffer.getvalue()


def unpack(data: bytes, digest: str, cache: Path | None = None) -> Path:
    """The bundle ``data`` (of :func:`pack`, hash ``digest``) in this worker's cache, unpacked the first time
    only; its ready snapshots go where runs of it look for them.  Returns the bundle's directory."""
    root = cache_dir(cache) / SHIPPED_DIR
    target = root / digest
    if (target / MANIFEST_NAME).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=root, prefix=f".{digest[:12]}-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            archive.extractall(partial, filter="data")
        name = open_image(partial / "image", cache=cache, verify=True).name
        snapshots = cache_dir(cache) / "snapshots" / name
        snapshots.mkdir(parents=True, exist_ok=True)
        for path in sorted((partial / "snapshots").glob("*.snapshot")) if (partial / "snapshots").is_dir() else []:
            if not (snapshots / path.name).exists():
                os.replace(path, snapshots / path.name)
        try:
            os.rename(partial / "image", target)
        except OSError:  # another task of this worker unpacked it meanwhile
            if not (target / MANIFEST_NAME).is_file():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target
