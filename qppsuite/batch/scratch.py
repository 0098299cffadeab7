"""Scratch directories of Ray tasks: where a worker runs a job before sending its files to the driver.

Each is ``<cache>/batch-scratch/<pid>@<host>@<job id>-<random>``, made by the worker process ``pid`` on ``host``
and removed by it when the task ends.  A worker killed meanwhile (SIGKILL, its batch killed, its node's Ray
stopped) cannot remove its own: each task removes, as it starts, those of its host whose process is gone, and a
local batch does so again once its Ray instance has stopped.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

from qppsuite.cache import cache_dir

SCRATCH_DIR = "batch-scratch"
"""Where a worker's tasks run their jobs: ``<cache>/batch-scratch/``."""


def make(cache: Path | None, job_id: str) -> Path:
    """A new scratch directory for the job ``job_id`` in ``cache``'s (None: this process's default cache),
    owned by this process; the stale ones of this host are removed first."""
    root = cache_dir(cache) / SCRATCH_DIR
    remove_stale(cache)
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=root, prefix=f"{os.getpid()}@{socket.gethostname()}@{job_id[:40]}-"))


def remove_stale(cache: Path | None) -> None:
    """Remove the scratch directories in ``cache`` that this host's processes made and that are gone (a cache
    that other hosts share keeps theirs).  Errors are ignored: a directory left is removed by a later call."""
    root = cache_dir(cache) / SCRATCH_DIR
    try:
        entries = list(root.iterdir())
    except OSError:
        return
    host = socket.gethostname()
    for entry in entries:
        pid, _, rest = entry.name.partition("@")
        owner_host, _, _ = rest.partition("@")
        if owner_host == host and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True
