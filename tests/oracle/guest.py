"""One logged run of the oracle image: the three plugins writing a database, the console kept."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import ORACLE_RAM_MIB
from console_sink import Console

from qppsuite.channel import GuestFile
from qppsuite.core.qpp import Plugin
from qppsuite.images.bundle import ImageBundle
from qppsuite.session import RunOptions, run


@dataclass(frozen=True)
class LoggedRun:
    """What a run printed (carriage returns removed) and the database it wrote."""

    console: str
    db: Path

    def rows(self, table: str = "syscalls") -> list[dict[str, Any]]:
        """Every row of ``table`` (syscalls in call order), read-only."""
        order = " ORDER BY seq" if table == "syscalls" else ""
        return query(self.db, f"SELECT * FROM {table}{order}")


def query(db: Path, sql: str, *params: object) -> list[dict[str, Any]]:
    """The rows ``sql`` selects from the database ``db``, opened read-only, as dicts."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, params)]
    finally:
        conn.close()


def logged_run(
    image: ImageBundle,
    cmd: str,
    db: Path,
    extra: Sequence[type[Plugin]] = (),
    on_loaded: Callable[[Any], None] | None = None,
    *,
    warm: bool = True,
    files: Sequence[GuestFile] = (),
) -> LoggedRun:
    """Run ``cmd`` in ``image`` with osi_linux + syscalls + syscalls_logger (into ``db``) and ``extra`` plugins,
    from the image's ready snapshot (``warm``, made by the first such run) or from power-on, with ``files``
    put in the guest through the channel first.

    Strict: a failing plugin fails the run, and a run that does not power off fails the test.
    """
    console = Console()
    result = run(
        RunOptions(
            cmd=cmd,
            plugins=["osi_linux", "syscalls", "syscalls_logger", *extra],  # type: ignore[list-item]
            plugin_args={"syscalls_logger": {"db": str(db)}},
            strict=True,
            ram_mib=ORACLE_RAM_MIB,
            warm=warm,
            files=files,
        ),
        console,
        image=image,
        on_loaded=on_loaded,
    )
    assert result.ok, (result.reason, console.text[-3000:])
    return LoggedRun(console.text.replace("\r", ""), db)
