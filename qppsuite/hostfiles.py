"""Host files qppsuite writes after a run (a recording, a copy-out): checked before the run starts, written whole."""

import errno
import os
import tempfile
from pathlib import Path


def unwritable(path: Path) -> str | None:
    """Why the file ``path`` could not be written (the system's reason), or None if it can.

    A probe file is created, and removed, beside it; missing parent directories are made.
    """
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def replace_file(path: Path, data: bytes) -> None:
    """Put ``data`` at ``path`` whole or not at all: written beside it under a hidden name (permissions as a new
    file's), then renamed over it, so a run killed meanwhile leaves the old file, not part of the new one."""
    partial = path.with_name(f".{path.name}.qppsuite-{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
