"""Host files qppsuite will write after a run (a recording, a copy-out), checked before the run starts."""

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
