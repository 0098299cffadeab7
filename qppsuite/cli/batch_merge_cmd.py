"""``qppsuite batch merge OUTDIR``: a batch's jobs in one database, ``OUTDIR/batch.sqlite`` (docs/batch.md).

The command only prints; :mod:`qppsuite.batch.merge` does the work (``qppsuite batch`` calls it by itself when
the batch ends); it registers on the ``batch`` group as ``merge``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qppsuite.cli import err_console
from qppsuite.cli.batch_cmd import batch_app
from qppsuite.cli.terminal import SafeConsole, styled

console = SafeConsole()


@batch_app.command("merge")
def merge_command(
    outdir: Annotated[Path, typer.Argument(help="The batch's output directory (qppsuite batch's -o)")],
) -> None:
    """Merge the batch's jobs into OUTDIR/batch.sqlite, each run with its label, status and why.

    Each job is a run of the merged file, with its label, status (ok, failed, not run) and why; then
    `qppsuite stats|syscalls|processes|report|query` read the whole batch.  A job's input that cannot be read
    (a damaged result.json or run.sqlite) is that job's failure and one ``error:`` line, and the command exits 1
    once the file is written; a batch.json that cannot be read writes nothing.  A batch running in OUTDIR
    (its batch.lock held) is one line: that batch merges when it ends.
    """
    from qppsuite.batch.merge import STATUSES, merge_batch
    from qppsuite.batch.outdir import OutdirBusy, locked

    if outdir.is_dir():
        try:
            with locked(outdir):  # not while a batch writes into it: its merge and this one would race
                merged = merge_batch(outdir)
        except OutdirBusy as busy:
            raise OutdirBusy(str(busy), hint="that batch merges its jobs when it ends; merge again after it") from None
    else:
        merged = merge_batch(outdir)  # one line saying what OUTDIR is not
    for problem in merged.problems:
        err_console.print(styled(("error:", "bold red"), f" {problem}"), soft_wrap=True)
    for hint in merged.hints:
        err_console.print(styled((f"hint: {hint}", "dim")), soft_wrap=True)
    runs = len(merged.jobs)
    counts = ", ".join(f"{merged.count(status)} {status}" for status in STATUSES)
    console.print(f"{merged.path}: {runs} {'run' if runs == 1 else 'runs'} ({counts})", highlight=False, soft_wrap=True)
    if merged.problems:
        raise typer.Exit(1)
