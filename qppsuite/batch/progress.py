"""What a batch shows while it runs: jobs done, running, failed, the ETA and the guest MIPS of all workers.

On a terminal it is one rich progress line, with each failed job's line printed above it; otherwise (a pipe,
CI) one plain line per finished job.  The MIPS
figure is measured, not estimated: the guest instructions the finished jobs of this invocation executed (their
count from power-on less the snapshot they started from) divided by the wall-clock seconds since the jobs were
dispatched, so it is the throughput of all workers together, start-up costs included; running jobs count once
they finish.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from qppsuite.cli.terminal import SafeConsole, styled


class BatchProgress:
    """Counts of a running batch and their display on ``console`` (a :class:`SafeConsole`, stderr)."""

    def __init__(self, console: SafeConsole, total: int, skipped: int) -> None:
        self.console = console
        self.total, self.skipped = total, skipped
        self.ok = self.failed = self.running = 0
        self.executed = 0  # guest instructions of this invocation's finished jobs
        self.started_at = time.monotonic()
        self._live = console.is_terminal
        self._progress: Progress | None = None
        self._status: str | None = None  # what the batch does before its jobs run, instead of the counts

    @property
    def done(self) -> int:
        return self.skipped + self.ok + self.failed

    @property
    def mips(self) -> float:
        elapsed = time.monotonic() - self.started_at
        return self.executed / elapsed / 1e6 if elapsed > 0 else 0.0

    def __enter__(self) -> BatchProgress:
        self.started_at = time.monotonic()
        if self._live:
            self._progress = Progress(
                TextColumn("batch"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("batch", total=self.total, completed=self.done, status="")
            self._refresh()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.__exit__(kind, value, traceback)

    def preparing(self, machines: int) -> None:
        """The batch boots ``machines`` machines for their ready snapshots before its jobs start."""
        what = f"preparing {machines} machine{'s' if machines != 1 else ''}"
        self._status = f"{what} (booting each once for its ready snapshot)"
        if not self._live:
            self.console.print(styled((f"{what}:", "dim"), " booting each once for its ready snapshot"),
                               soft_wrap=True)
        self._refresh()

    def prepared(self) -> None:
        """The machines are ready and the jobs are dispatched now: the MIPS figure counts from here."""
        self._status = None
        self.started_at = time.monotonic()
        self._refresh()

    def job_started(self) -> None:
        self.running += 1
        self._refresh()

    def job_stopped(self) -> None:
        """A running job ended without a result (the batch is stopping)."""
        self.running = max(0, self.running - 1)
        self._refresh()

    def job_finished(self, result: dict[str, Any], elapsed: float | None = None) -> None:
        """Count a finished job; its line shows its run's wall-clock seconds, or ``elapsed`` (seconds since the
        batch started it, or submitted it to Ray) when its result has none (its worker died, or the batch could
        not start its run)."""
        self.running = max(0, self.running - 1)
        ok = result.get("status") == "ok"
        self.ok += ok
        self.failed += not ok
        executed = result.get("insns_executed")
        self.executed += executed if isinstance(executed, int) and executed > 0 else 0
        if not self._live or not ok:  # on a terminal, failures are printed above the progress line
            what = ("ok", "green") if ok else ("failed", "red")
            reason = "" if ok else f": {result.get('reason')}"
            wall = result.get("wall_s")  # None when the job's worker died before it timed anything
            wall = wall if isinstance(wall, (int, float)) else elapsed
            took = f"({wall:.1f} s)" if wall is not None else ""
            self.console.print(
                styled(f"[{self.done}/{self.total}] ", what, f" {result.get('label')}{reason} ", (took, "dim")),
                soft_wrap=True,
            )
        self._refresh()

    def _refresh(self) -> None:
        if self._progress is None:
            return
        status = self._status or f"running {self.running}  failed {self.failed}  {self.mips:,.0f} MIPS"
        self._progress.update(self._task, completed=self.done, status=status)
