"""A table a plugin adds to the run database: its schema, declared once, and its rows, written at each commit.

Every such table names its run (a ``run_id`` column, a foreign key to ``runs(id)``, added when the
declaration lacks it) and may refer to ``processes(id)`` (or any other table with an ``id``) by foreign
key.  Rows are plain dicts; the table keeps those added or changed since the last commit, and the run
database writes them in the same transaction as the logger's batch, processes first, so a foreign key
to a process row created in the same batch holds.  A row written again (changed in place, then marked
with :meth:`PluginTable.changed`) replaces its earlier version: one row per primary key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from qppsuite.errors import PluginError
from qppsuite.plugins.syscalls_logger.database import TABLE_COLUMNS, sqlite_utils

RESERVED = frozenset(TABLE_COLUMNS)
"""The logger's tables, which no plugin may declare."""

COLUMN_TYPES = (int, str, float, bytes)


class PluginTable:
    """One plugin's table in the run database; rows go in with :meth:`add` and are written at the next commit.

    ``columns`` maps names to ``int``, ``str``, ``float`` or ``bytes``, in order; ``pk`` is a column or a
    tuple of columns.  With ``pk="id"`` (an int column) :meth:`add` gives each new row an id unique in
    the file (``run_id * ROW_ID_STRIDE + n``, as process rows have), so rows of this table can be
    referred to before they are written.  ``foreign_keys`` are ``(column, table)`` pairs naming that
    table's ``id``; ``indexes`` are tuples of columns.
    """

    def __init__(
        self,
        name: str,
        columns: Mapping[str, type],
        *,
        pk: str | tuple[str, ...],
        foreign_keys: Sequence[tuple[str, str]],
        indexes: Sequence[tuple[str, ...]],
        run_id: int,
        first_id: int,
        buffered: Callable[[], None],
    ) -> None:
        self.name = name
        self.pk: tuple[str, ...] = (pk,) if isinstance(pk, str) else tuple(pk)
        self.columns = _with_run_id(dict(columns), self.pk)
        self.foreign_keys = [("run_id", "runs", "id"), *((column, table, "id") for column, table in foreign_keys)]
        self.indexes = tuple(tuple(index) for index in indexes)
        self.run_id = run_id
        self._next_id = first_id
        self._auto_id = self.pk == ("id",) and self.columns["id"] is int
        self._buffered = buffered
        self._pending: dict[Any, dict[str, Any]] = {}
        self.rows_written = 0
        self._check()
        names = list(self.columns)
        updates = ", ".join(f"[{c}] = excluded.[{c}]" for c in names if c not in self.pk)
        self._upsert = (
            f"INSERT INTO [{name}] ({', '.join(f'[{c}]' for c in names)}) VALUES ({', '.join('?' * len(names))}) "
            f"ON CONFLICT ({', '.join(f'[{c}]' for c in self.pk)}) DO "
            + (f"UPDATE SET {updates}" if updates else "NOTHING")
        )

    def _check(self) -> None:
        where = f"table {self.name!r}"
        if self.name in RESERVED or self.name.startswith("sqlite_") or not self.name.isidentifier():
            raise PluginError(
                f"{where}: not a name a plugin may give a table (the logger's: {', '.join(sorted(RESERVED))})"
            )
        for column, kind in self.columns.items():
            if not column.isidentifier() or kind not in COLUMN_TYPES:
                raise PluginError(f"{where}: column {column!r} must be an identifier of type int, str, float or bytes")
        for column in (*self.pk, *(fk[0] for fk in self.foreign_keys), *(c for index in self.indexes for c in index)):
            if column not in self.columns:
                raise PluginError(f"{where} names column {column!r}, which it does not declare")

    def renumber(self, run_id: int, first_id: int) -> None:
        """The run moved to another file before any row was added: its ``run_id`` there, and ids from ``first_id``."""
        self.run_id = run_id
        self._next_id = first_id

    def create(self, db: sqlite_utils.Database) -> None:
        """Create the table and its indexes unless the file has them; an existing table must have the columns."""
        table = db[self.name]
        assert isinstance(table, sqlite_utils.db.Table)
        if table.exists():
            have = set(table.columns_dict)
            lacking = [column for column in self.columns if column not in have]
            if lacking:
                raise PluginError(
                    f"table {self.name!r} has no column {lacking[0]!r}; it was written by another version of "
                    "its plugin: log into a new file"
                )
        else:
            pk: str | tuple[str, ...] = self.pk[0] if len(self.pk) == 1 else self.pk
            table.create(self.columns, pk=pk, foreign_keys=self.foreign_keys)
        for index in self.indexes:
            table.create_index(index, if_not_exists=True)

    def add(self, row: dict[str, Any]) -> int | None:
        """Buffer a new row (a dict of this table's columns; ``run_id`` is filled in); returns its ``id`` with
        ``pk="id"``, else None.  The dict is written as it is at the next commit: change it and call
        :meth:`changed` to write it again."""
        row["run_id"] = self.run_id
        row_id: int | None = None
        if self._auto_id and row.get("id") is None:
            row_id = row["id"] = self._next_id
            self._next_id += 1
        self._pending[self._key(row)] = row
        self._buffered()
        return row_id

    def changed(self, row: dict[str, Any]) -> None:
        """Write ``row`` (added earlier, changed in place) again at the next commit."""
        self._pending[self._key(row)] = row
        self._buffered()

    def _key(self, row: dict[str, Any]) -> Any:
        return row[self.pk[0]] if len(self.pk) == 1 else tuple(row[c] for c in self.pk)

    def write(self, db: sqlite_utils.Database) -> int:
        """Write the buffered rows (inside the caller's transaction); returns how many."""
        if not self._pending:
            return 0
        rows, self._pending = list(self._pending.values()), {}
        names = list(self.columns)
        db.conn.executemany(self._upsert, [[row.get(c) for c in names] for row in rows])
        self.rows_written += len(rows)
        return len(rows)

    def discard(self) -> None:
        """Forget the buffered rows (the disk would not take them)."""
        self._pending = {}


def _with_run_id(columns: dict[str, type], pk: tuple[str, ...]) -> dict[str, type]:
    """``columns`` with ``run_id`` (int) after the primary key's columns, unless declared."""
    if "run_id" in columns:
        return columns
    ordered: dict[str, type] = {c: columns[c] for c in pk if c in columns}
    ordered["run_id"] = int
    ordered.update(columns)
    return ordered
