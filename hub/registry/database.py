"""SQLite connections of the registry whose storage errors name the file and the way out.

A database that is missing, truncated or overwritten (``file is not a database``,
``database disk image is malformed``) or that cannot be opened raises
``sqlite3.DatabaseError`` at whatever statement first touches the bad page. Every
connection made here turns such an error, on any statement or row fetch, into a
``RegistryUnavailableError`` whose one line names the database and the commands that
recover it; the servicer answers it with ``UNAVAILABLE`` and the CLIs exit with code 2.
Constraint violations (``sqlite3.IntegrityError``) and misuse (``ProgrammingError``)
are bugs or races the caller handles, and pass through unchanged.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any, Literal

from shared.errors import RegistryUnavailableError

__all__ = ["check_database", "connect", "unavailable"]

_PASS_THROUGH = (sqlite3.IntegrityError, sqlite3.ProgrammingError)


def unavailable(db_path: Path, error: BaseException) -> RegistryUnavailableError:
    """The one-line error for a database that cannot be used."""
    root = Path(db_path).parent
    return RegistryUnavailableError(
        f"{db_path}: the registry database cannot be used ({error}); restore the last backup "
        f"with `radshare-hub restore --from BACKUP_DIR --root {root} --force`, "
        f"then check the blobs with `radshare-hub verify --root {root}`"
    )


def _storage_error(error: sqlite3.Error) -> bool:
    return isinstance(error, sqlite3.DatabaseError) and not isinstance(error, _PASS_THROUGH)


class _Cursor(sqlite3.Cursor):
    """A cursor whose storage errors (also while fetching rows) name the database."""

    db_path: Path

    def _call(self, method: Any, *args: Any) -> Any:
        try:
            return method(*args)
        except sqlite3.Error as error:
            if _storage_error(error):
                raise unavailable(self.db_path, error) from error
            raise

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:  # type: ignore[override]
        return self._call(super().execute, sql, parameters)  # type: ignore[no-any-return]

    def executemany(self, sql: str, seq_of_parameters: Any, /) -> _Cursor:  # type: ignore[override]
        return self._call(super().executemany, sql, seq_of_parameters)  # type: ignore[no-any-return]

    def executescript(self, sql_script: str, /) -> _Cursor:  # type: ignore[override]
        return self._call(super().executescript, sql_script)  # type: ignore[no-any-return]

    def fetchone(self) -> Any:
        return self._call(super().fetchone)

    def fetchall(self) -> list[Any]:
        return self._call(super().fetchall)  # type: ignore[no-any-return]

    def fetchmany(self, size: int | None = 1) -> list[Any]:
        return self._call(super().fetchmany, size)  # type: ignore[no-any-return]

    def __next__(self) -> Any:
        return self._call(super().__next__)


class _Connection(sqlite3.Connection):
    """A connection whose ``execute*`` shortcuts use ``_Cursor``."""

    db_path: Path

    def cursor(self, factory: Any = None) -> _Cursor:  # type: ignore[override]
        cursor = super().cursor(_Cursor)
        cursor.db_path = self.db_path
        return cursor

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:  # type: ignore[override]
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> _Cursor:  # type: ignore[override]
        return self.cursor().executemany(sql, parameters)

    def executescript(self, sql_script: str, /) -> _Cursor:  # type: ignore[override]
        return self.cursor().executescript(sql_script)


def connect(
    db_path: Path, *, timeout_s: float = 30.0, mode: Literal["ro", "rw", "rwc"] = "rw"
) -> sqlite3.Connection:
    """Open ``db_path`` in autocommit, errors translated; only ``mode="rwc"`` creates it.

    A database deleted while the hub serves is thus reported, never silently
    replaced by an empty one.
    """
    db_path = Path(db_path)
    try:
        db = sqlite3.connect(
            f"{db_path.resolve().as_uri()}?mode={mode}",
            timeout=timeout_s,
            isolation_level=None,
            factory=_Connection,
            uri=True,
            check_same_thread=True,
        )
    except sqlite3.Error as error:
        raise unavailable(db_path, error) from error
    assert isinstance(db, _Connection)
    db.db_path = db_path
    return db


def check_database(db_path: Path) -> None:
    """RegistryUnavailableError naming the file unless SQLite's ``integrity_check`` says ok."""
    with closing(connect(db_path)) as db:
        problems = [row[0] for row in db.execute("PRAGMA integrity_check(5)")]
    if problems != ["ok"]:
        raise unavailable(db_path, RuntimeError("integrity_check: " + "; ".join(problems)))
