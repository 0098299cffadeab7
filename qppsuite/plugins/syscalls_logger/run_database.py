"""The run database: one SQLite file per run, shared by syscalls_logger and every plugin that adds tables to it.

A run has at most one open run database.  The first plugin of the run that asks for it
(:func:`open_run_database`: syscalls_logger with ``format=sqlite``, or a plugin with tables of its
own) opens it, at its ``db`` argument or at the logger's default name, and starts the run's ``runs``
row; every later one joins it, and the one ``db`` argument given (by any of them) names the file.
The run's row and tables are committed as the guest starts (core's ``on_start``) or with the first
rows: a run refused while its plugins load writes nothing.  So the tables of every plugin sit next to
``runs`` and ``processes`` in one file, whichever of them run and in whatever order they load, and
their rows commit in the same transactions as the logger's batches: whatever stops a run leaves the
file consistent up to the last commit.  syscalls_logger exports the database it uses
(``get_run_database``), which is this one.

What a plugin does with it (a :class:`RunDatabase`): declare its tables (:meth:`RunDatabase.table`),
add rows to them, and map an osi_linux process to its ``processes`` row id
(:meth:`RunDatabase.process_id`), the row being created if nobody wrote it yet.  Every user calls
:meth:`RunDatabase.stopped` in its ``stop`` and :meth:`RunDatabase.release` in its ``unload``; the
last release records how the run ended and closes the file.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

import qppsuite
from qppsuite.core.qpp import QPP, Plugin
from qppsuite.errors import PluginError
from qppsuite.plugins.osi_linux.model import OsiProcess
from qppsuite.plugins.syscalls_logger.database import ROW_ID_STRIDE, SyscallDatabase
from qppsuite.plugins.syscalls_logger.tables import PluginTable

if TYPE_CHECKING:
    from qppsuite.core.guest import Guest

DEFAULT_BATCH = 500
"""Rows per transaction unless the logger's ``batch`` argument says otherwise."""

_OPEN: WeakKeyDictionary[QPP, RunDatabase] = WeakKeyDictionary()
"""The open run database of each run (each QPP is one run)."""


def default_db_path(image: str, now: dt.datetime) -> Path:
    """``qppsuite-<image>-<UTC timestamp>.db`` in the current directory: one new file per run."""
    return Path(f"qppsuite-{image}-{now.strftime('%Y%m%dT%H%M%SZ')}.db")


class RunDatabase:
    """A run's open database as plugins use it: their tables, process row ids, commits in batches.

    ``path`` is the file, ``run_id`` the run's row in ``runs``; ``users`` the plugins that opened or
    joined it, in that order.  A commit that fails (disk full, I/O error) stops the run with a one-line
    reason (stop kind ``error``); what earlier commits wrote stays, and nothing more is written.
    """

    def __init__(self, file: SyscallDatabase, machine: Guest | None, batch: int, named_by: str | None) -> None:
        self.file = file
        self.named_by = named_by  # the plugin whose db argument named the file; None: the default name
        self.batch = batch
        self.users: list[str] = []
        self.write_error: str | None = None
        self.counts_syscalls = False  # syscalls_logger logs every call: runs.syscall_count is meaningful
        self.logged: str | None = None  # syscalls_logger's ``only``: runs.logged
        self._machine = machine
        self._stop_reason: Any = None
        self._stop_ns: int | None = None  # the guest's virtual time when it stopped: runs.virtual_ns
        self._tables: dict[str, str] = {}  # table name -> the plugin that declared it

    @property
    def path(self) -> Path:
        return self.file.path

    @property
    def run_id(self) -> int:
        return self.file.run_id

    # -- what a plugin does with it ----------------------------------------------------
    def table(
        self,
        owner: str,
        name: str,
        columns: Mapping[str, type],
        *,
        pk: str | tuple[str, ...] = "id",
        foreign_keys: Sequence[tuple[str, str]] = (),
        indexes: Sequence[tuple[str, ...]] = (),
    ) -> PluginTable:
        """Declare ``owner``'s table ``name`` (created unless the file has it) and return it, to add rows to.

        ``columns``: name -> ``int``/``str``/``float``/``bytes``, in order (``run_id`` is added after the
        primary key unless declared; it refers to ``runs(id)``).  ``foreign_keys``: ``(column, table)``
        pairs, each referring to that table's ``id``, e.g. ``("process_id", "processes")``.  ``indexes``:
        tuples of columns.  Raises :class:`PluginError` for a bad declaration, a name taken by the logger or
        by another plugin of the run, or an existing table lacking a declared column; ``owner`` then no
        longer uses the database (its load fails, so it will not release it).
        """
        try:
            return self._declare(owner, name, columns, pk, foreign_keys, indexes)
        except PluginError:
            self.release(owner)
            raise

    def _declare(
        self,
        owner: str,
        name: str,
        columns: Mapping[str, type],
        pk: str | tuple[str, ...],
        foreign_keys: Sequence[tuple[str, str]],
        indexes: Sequence[tuple[str, ...]],
    ) -> PluginTable:
        if name in self._tables:
            raise PluginError(f"table {name!r} of the run database is already declared by '{self._tables[name]}'")
        table = PluginTable(
            name,
            columns,
            pk=pk,
            foreign_keys=foreign_keys,
            indexes=indexes,
            run_id=self.run_id,
            first_id=self.run_id * ROW_ID_STRIDE + 1,
            buffered=self._buffered,
        )
        try:
            self.file.define(table)
        except sqlite3.Error as exc:
            raise PluginError(f"cannot create table {name!r} in {self.path}: {exc}") from None
        except PluginError as exc:
            raise PluginError(f"{self.path}: {exc}") from None
        self._tables[name] = owner
        return table

    def process_id(self, process: OsiProcess, insn_count: int | None = None) -> int:
        """The ``processes`` row id of an osi_linux process (its ``pid`` and ``start_time``), the row being
        created now (written at the next commit) if nobody wrote it yet; ``insn_count``: when it was seen."""
        return int(self.file.processes.process(process, insn_count)["id"])

    def flush(self) -> None:
        """Commit what every user buffered, in one transaction (done by itself every :attr:`batch` rows)."""
        if self.write_error is not None:
            self.file.discard()
            return
        try:
            self.file.flush()
        except (sqlite3.Error, OSError) as exc:
            self.write_error = f"cannot write the run database {self.path}: {exc}"
            self.file.discard()
            if self._machine is not None:
                self._machine.request_stop(
                    "error", f"{', '.join(self.users)}: {self.write_error}; earlier batches are kept"
                )

    def _buffered(self) -> None:
        if self.file.buffered() >= self.batch:
            self.flush()

    def guest_started(self) -> None:
        """core's ``on_start``: every plugin loaded, so the run's row and tables are committed now."""
        if self.write_error is not None:
            return
        try:
            self.file.begin_run()
        except (sqlite3.Error, OSError) as exc:
            self.write_error = f"cannot write the run database {self.path}: {exc}"
            if self._machine is not None:
                self._machine.request_stop("error", f"{', '.join(self.users)}: {self.write_error}")

    # -- the run's end ---------------------------------------------------------------------
    def stopped(self, reason: Any) -> None:
        """Note why the guest stopped (the core's stop reason) and its virtual time then, for the ``runs`` row."""
        self._stop_reason = reason
        self._stop_ns = self._machine.virtual_ns if self._machine is not None else None

    def release(self, user: str) -> None:
        """``user`` is done (its ``unload``); the last user's release commits, ends the run and closes the file."""
        if user in self.users:
            self.users.remove(user)
        if self.users:
            return
        for qpp, db in list(_OPEN.items()):
            if db is self:
                del _OPEN[qpp]
        if not self.file.started and self.file.empty():  # refused as the plugins loaded: leave no trace
            self.file.abandon()
            return
        try:
            self.flush()
            if self.write_error is None:
                reason = self._stop_reason
                ended = {
                    "stop_reason": getattr(reason, "kind", None),
                    "stop_message": getattr(reason, "message", None),
                    "insn_count": getattr(reason, "insn_count", None),
                    "virtual_ns": self._stop_ns,
                }
                if not self.counts_syscalls:
                    ended["syscall_count"] = None
                ended["logged"] = self.logged
                self.file.end_run(ended)
        finally:
            self.file.close()


def run_database_of(qpp: QPP) -> tuple[Path, int] | None:
    """The file and run id of the run database open in the run of ``qpp`` (call it once plugins are loaded:
    the last user's ``unload`` closes it), or None when no plugin opened one."""
    db = _OPEN.get(qpp)
    return None if db is None else (db.path, db.file.run_id)


def open_run_database(plugin: Plugin, path: Path | None, *, batch: int | None = None) -> RunDatabase:
    """The run's database for ``plugin`` (call it from ``load``): the one open in this run, else a new one.

    ``path`` is the plugin's ``db`` argument; None takes the open database, or the logger's default name
    (``qppsuite-<image>-<UTC time>.db`` here).  A path given after the database was opened at the default
    name moves it there (nothing is written before the guest starts), whatever the plugins' order; a
    second, different path is refused with one line naming both, as is a file that cannot be opened.
    ``batch`` (the logger's) sets the rows per transaction.
    """
    db = _OPEN.get(plugin.qpp)
    if db is None:
        started = dt.datetime.now(dt.UTC)
        where = path or default_db_path(plugin.context.image or "guest", started)
        file = SyscallDatabase(where, _run_row(plugin, started), pending=True)
        db = _OPEN[plugin.qpp] = RunDatabase(file, plugin.machine, DEFAULT_BATCH, plugin.name if path else None)
    elif path is not None and path.resolve() != db.path.resolve():
        if db.named_by is not None or db.file.started or not db.file.empty():
            opened = f"named by '{db.named_by}'" if db.named_by is not None else f"opened by '{db.users[0]}'"
            raise PluginError(
                f"this run's database is {db.path} ({opened}), not {path}",
                hint="give the same db to every plugin that writes one, or give it to one of them only",
            )
        db.file.move(path)
        db.named_by = plugin.name
    elif path is not None:
        db.named_by = db.named_by or plugin.name
    if batch is not None:
        db.batch = batch
    if "core" in plugin.qpp.loaded:  # one registration per user: it holds while any of them stays loaded
        plugin.qpp.register("core", "on_start", functools.partial(db.guest_started), owner=plugin.name)
    db.users.append(plugin.name)
    return db


def _run_row(plugin: Plugin, started: dt.datetime) -> dict[str, Any]:
    """The ``runs`` row as a run starts: image, kernel, the run's plugins, version, start time, snapshot and
    label."""
    context = plugin.context
    # Those loaded, and those the run will load (a host may give a plugin as its class).
    plugins = (*plugin.qpp.loaded, plugin.name, *(getattr(p, "name", p) for p in context.plugins))
    return {
        "image": context.image,
        "image_path": None if context.image_path is None else str(context.image_path),
        "kernel_release": context.kernel_release,
        "plugins": json.dumps([name for name in dict.fromkeys(plugins) if name != "core"]),
        "qppsuite_version": qppsuite.__version__,
        "started_at": started.isoformat(timespec="milliseconds"),
        "started_from": context.snapshot,
        "label": context.label,
    }
