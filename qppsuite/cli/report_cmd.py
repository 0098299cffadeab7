"""``qppsuite report DB``: the run as one self-contained HTML page (see docs/report.md)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from qppsuite.cli import app, err_console
from qppsuite.cli.logs_cmd import DbArg, RunOpt, _plural, _reading, _warn
from qppsuite.cli.terminal import styled, visible
from qppsuite.errors import QppsuiteError


def write_atomically(path: Path, data: str) -> None:
    """Replace ``path`` whole or not at all (a temporary file beside it, renamed); one line if it cannot.

    A symbolic link is followed, never replaced.  Anything else that is not a regular file (a device such as
    /dev/stdout, a FIFO) is written through, as ``open()`` would, never renamed over: renaming over
    /dev/full once replaced the device with a file.  The file gets the mode ``open()`` would give it (0666
    less the umask), not mkstemp's 0600.
    """
    given, path = path, path.resolve()  # errors name the path as given (/proc/self/status, not /proc/6830/...)
    if path.exists() and not path.is_file():
        try:
            with path.open("w", encoding="utf-8") as out:
                out.write(data)
        except OSError as exc:
            raise QppsuiteError(f"cannot write {given}: {exc.strerror or exc}") from None
        return
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise QppsuiteError(f"cannot write {given}: {exc.strerror or exc}") from None


#: The files SQLite keeps beside a database (its write-ahead log, the log's index, a rollback journal): the
#: database's committed rows may live there until a checkpoint.
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


@app.command("report")
def report(
    db: DbArg,
    run: RunOpt = None,
    output: Annotated[
        str | None,
        typer.Option("--output", "-o", help="The HTML file (default: DB's name with .html); - for standard output"),
    ] = None,
) -> None:
    """One self-contained HTML page of a run: summary, process tree, timeline, activity, each process's calls,
    files, endpoints and errors. Opens offline (plotly.js is inside)."""
    from qppsuite.plugins.syscalls_logger import reader
    from qppsuite.report import data, html

    out = _output(db, output)
    with _reading(db) as conn:
        run_id = reader.select_run(conn, run, shown=visible)
        _warn(conn, run_id)
        built = data.build(conn, run_id)
        # Rendered while reading: a value of the wrong type in a damaged or edited file (text where SQLite
        # holds counts) fails in the formatting, and is then one line about the file too.
        page = html.render(built)
    if out is None:
        sys.stdout.write(page)
        sys.stdout.flush()
    else:
        write_atomically(out, page)
    err_console.print(
        styled(
            f"report of run {run_id} ({_plural(built.summary['processes'], 'process', 'processes')}, "
            f"{_plural(built.summary['syscalls'], 'call', 'calls')}): {'standard output' if out is None else out}"
        ),
        soft_wrap=True,
    )


def _output(db: Path, output: str | None) -> Path | None:
    """Where ``-o`` puts the page (None: standard output, ``-o -``), checked: not empty, not a directory (nor a
    name ending in ``/``, which only a directory has), not the database or its journal.  One line if not."""
    if output == "-":
        return None
    if output is not None and output in ("", "."):
        raise QppsuiteError("-o: the report's file name is empty")
    if output is not None and output.endswith("/"):
        raise QppsuiteError(f"-o {output}: names a directory (it ends in /); give a file name")
    out = Path(output) if output is not None else db.with_suffix(".html")
    if out.is_dir():
        raise QppsuiteError(f"-o {out}: is a directory; give a file name")
    database = db.resolve()
    if out.resolve() in {database, *(database.with_name(database.name + s) for s in SQLITE_SIDE_FILES)}:
        raise QppsuiteError(f"the report would replace the database {db} or its journal: give another file with -o")
    return out

