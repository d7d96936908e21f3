"""The workspace folder, its database connection and the path rules every part of the store shares."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Self

from engine.errors import InputError, ScarpError
from engine.store import db
from engine.store.files import DiskFullError, ensure_inside
from engine.store.records import Activity, from_db_path, to_db_path, utc_now

log = logging.getLogger(__name__)

DB_NAME = "scarp.db"
LAYOUT = ("scenes", "masks", "predictions", "models", "tmp")
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")


class WorkspaceBase:
    """Owns one connection; every public operation runs in its own short transaction.

    Each process opens its own Workspace on the same folder; within a process the object may be shared
    between threads (a lock serialises its transactions). A forked child gets a fresh connection, since
    SQLite connections must not cross a fork.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        if self.root.exists() and not self.root.is_dir():
            raise InputError(root, "is a file, not a workspace folder")
        try:
            for folder in LAYOUT:
                (self.root / folder).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(root, f"cannot create the workspace folders ({exc.strerror})") from exc
        self.db_path = self.root / DB_NAME
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._group: list[Path] | None = None  # files written inside `atomic()`, while one is open
        self._depth = 0
        self._db: sqlite3.Connection | None = db.connect(self.db_path)
        try:
            db.migrate(self._db, self.db_path)
        except BaseException:
            self.close()
            raise

    @classmethod
    def open(cls, root: str | Path) -> Self:
        """Open the workspace at `root`, creating its folders and database if missing."""
        return cls(root)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    @contextmanager
    def _tx(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction on this process's connection; reads use one too, for a consistent snapshot.

        Inside `atomic()` it is a savepoint of the enclosing transaction instead: a step that fails
        undoes only itself, and nothing is committed until the whole group is.
        """
        if os.getpid() != self._pid:
            self._after_fork()
        with self._lock:
            if self._db is None:
                raise ScarpError(f"the workspace {self.root} is closed")
            try:
                if self._group is not None:
                    with self._savepoint(self._db) as conn:
                        yield conn
                else:
                    with db.transaction(self._db, write=write) as conn:
                        yield conn
            except sqlite3.OperationalError as exc:
                if db.is_full(exc):
                    raise DiskFullError(self.db_path, "was not changed") from exc
                raise

    @contextmanager
    def _savepoint(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        self._depth += 1
        name = f"step{self._depth}"
        conn.execute(f"SAVEPOINT {name}")
        try:
            yield conn
            conn.execute(f"RELEASE {name}")
        except BaseException:
            if conn.in_transaction:  # SQLite rolls a whole transaction back on some errors (disk full)
                try:
                    conn.execute(f"ROLLBACK TO {name}")
                    conn.execute(f"RELEASE {name}")
                except sqlite3.Error:
                    pass
            raise
        finally:
            self._depth -= 1

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """Group several operations into one write transaction: all of them are committed, or none.

        The worker registers a job's results and marks the job done this way, so a process killed
        half-way (SIGKILL, power cut) leaves neither a half-registered result nor a finished job without
        its result. Files the group's operations wrote are removed if the group is rolled back. Other
        threads of this process wait for the group; other processes wait for its write lock.
        """
        if os.getpid() != self._pid:
            self._after_fork()
        with self._lock:
            if self._db is None:
                raise ScarpError(f"the workspace {self.root} is closed")
            if self._group is not None:
                raise ScarpError("atomic() groups cannot be nested")
            self._group = []
            try:
                try:
                    with db.transaction(self._db, write=True):
                        yield
                except sqlite3.OperationalError as exc:
                    if db.is_full(exc):
                        raise DiskFullError(self.db_path, "was not changed") from exc
                    raise
            except BaseException:
                created, self._group = self._group, None
                self._remove_files(created, prune=False)
                raise
            self._group = None

    def remove_on_rollback(self, path: Path) -> None:
        """A file written for a row of the current `atomic()` group: removed again if it rolls back."""
        if self._group is not None:
            self._group.append(path)

    def _after_fork(self) -> None:
        # The inherited connection belongs to the parent: leave it unclosed and open our own.
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._group, self._depth = None, 0
        if self._db is not None:
            self._db = db.connect(self.db_path)

    # --- activity: changes that are not mask versions, with who made them -------------------------

    def activity(self, limit: int = 100) -> list[Activity]:
        """The latest changes first: scene deletions, model renames and deletions, default choices."""
        with self._tx(write=False) as conn:
            rows = conn.execute("SELECT * FROM activity ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [
            Activity(
                row["id"],
                datetime.fromisoformat(row["at"]),
                row["author"],
                row["action"],
                row["subject"],
                row["detail"],
            )
            for row in rows
        ]

    @staticmethod
    def _log_activity(
        conn: sqlite3.Connection, author: str, action: str, subject: str, detail: str = ""
    ) -> None:
        """Record a change inside the transaction that makes it: both commit, or neither."""
        conn.execute(
            "INSERT INTO activity (at, author, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
            (utc_now(), author.strip(), action, subject, detail),
        )

    def _rel(self, path: Path) -> str:
        return to_db_path(self.root, path)

    def _abs(self, text: str) -> Path:
        return from_db_path(self.root, text)

    def _new_file(self, folder: str, scene_id: int, suffix: str) -> Path:
        """A fresh name no other writer can pick, so concurrent saves never touch each other's files."""
        if not _SUFFIX.match(suffix):
            raise InputError(suffix, "is not a file extension like '.tif'")
        return self.root / folder / str(scene_id) / f"{uuid.uuid4().hex}{suffix}"

    def _remove_files(self, paths: Iterable[Path], *, prune: bool = True) -> list[Path]:
        """Best effort, after a commit: a file that cannot go is only an orphan, the records are right.

        `prune=False` where another writer may be about to create a file in the same folder.
        """
        removed: list[Path] = []
        for path in paths:
            try:
                target = ensure_inside(self.root, path)
            except InputError:
                log.warning("not removing %s: it is outside the workspace %s", path, self.root)
                continue
            try:
                target.unlink()
                removed.append(target)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("could not remove %s (%s); remove_orphan_files will retry", target, exc)
                continue
            if prune:
                self._prune_empty_dirs(target.parent)
        return removed

    def _prune_empty_dirs(self, directory: Path) -> None:
        """Drop per-scene folders left empty, but never the layout folders themselves."""
        keep = {self.root, *(self.root / folder for folder in LAYOUT)}
        while directory not in keep and directory.is_relative_to(self.root):
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent
