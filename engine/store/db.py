"""SQLite access for a workspace: connection settings, short explicit transactions and schema migrations.

Several processes (the studio, a training job, a CLI run) share one `scarp.db`. WAL lets readers go on
while one writer commits; `BEGIN IMMEDIATE` takes the write lock up front, so a transaction never fails
half-way with "database is locked" when it tries to upgrade a read lock; the busy timeout makes a
writer wait for its turn instead of failing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.errors import ScarpError

BUSY_TIMEOUT_S = 30.0

# Migration 1: the first schema. Ids use AUTOINCREMENT so that an id once shown to a user (in a note,
# an export, a log) never comes back for a different record after a deletion.
SCHEMA_V1 = """
CREATE TABLE scenes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    source_path TEXT NOT NULL,
    stored_path TEXT,
    checksum TEXT NOT NULL UNIQUE CHECK (length(checksum) = 64),
    descriptor TEXT NOT NULL DEFAULT '{}',
    created TEXT NOT NULL
);

CREATE TABLE predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scene_id INTEGER NOT NULL REFERENCES scenes (id) ON DELETE RESTRICT,
    model_version TEXT NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    raster_path TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE INDEX predictions_scene ON predictions (scene_id);

CREATE TABLE mask_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scene_id INTEGER NOT NULL REFERENCES scenes (id) ON DELETE RESTRICT,
    parent_id INTEGER REFERENCES mask_versions (id),
    source TEXT NOT NULL CHECK (source IN ('prediction', 'correction', 'import')),
    prediction_id INTEGER REFERENCES predictions (id),
    author TEXT NOT NULL DEFAULT '',
    note TEXT NOT NULL DEFAULT '',
    raster_path TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE INDEX mask_versions_scene ON mask_versions (scene_id, id);
CREATE INDEX mask_versions_prediction ON mask_versions (prediction_id);
-- A scene's history is a single chain: one first version, and no version is the parent of two others.
-- The store checks this before inserting; the indexes make a fork impossible even for a buggy writer.
CREATE UNIQUE INDEX mask_versions_one_child ON mask_versions (parent_id) WHERE parent_id IS NOT NULL;
CREATE UNIQUE INDEX mask_versions_one_root ON mask_versions (scene_id) WHERE parent_id IS NULL;

CREATE TABLE models (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    architecture TEXT NOT NULL,
    config TEXT NOT NULL DEFAULT '{}',
    checkpoint_path TEXT NOT NULL,
    parent_id INTEGER REFERENCES models (id) ON DELETE RESTRICT,
    training_snapshot TEXT,
    metrics TEXT,
    created TEXT NOT NULL
);
CREATE INDEX models_parent ON models (parent_id);

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    progress REAL NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 1),
    message TEXT NOT NULL DEFAULT '',
    error TEXT,
    created TEXT NOT NULL,
    started TEXT,
    finished TEXT
);
CREATE INDEX jobs_status ON jobs (status);
"""

# Migration 2: links from a scene to its auxiliary layers (engine/store/links.py).
SCHEMA_V2_SCENE_LINKS = """
CREATE TABLE scene_links (
    scene_id INTEGER NOT NULL REFERENCES scenes (id) ON DELETE CASCADE,
    role TEXT NOT NULL CHECK (role IN ('pre_event', 'dem', 'slope', 'hillshade')),
    linked_scene_id INTEGER NOT NULL REFERENCES scenes (id) ON DELETE CASCADE,
    PRIMARY KEY (scene_id, role),
    CHECK (scene_id <> linked_scene_id)
);
CREATE INDEX scene_links_linked ON scene_links (linked_scene_id);
"""

# Migration 3: the review queue (engine/store/review.py) and the workspace's default model
# (engine/store/registry.py). A review item is bookkeeping about a window of a scene, not user work:
# deleting the scene or a prediction it was scored from drops it. The default model is a one-row table
# whose foreign key keeps the default from being deleted under it.
SCHEMA_V3_REVIEW = """
CREATE TABLE review_items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scene_id INTEGER NOT NULL REFERENCES scenes (id) ON DELETE CASCADE,
    tile_row INTEGER NOT NULL CHECK (tile_row >= 0),
    tile_col INTEGER NOT NULL CHECK (tile_col >= 0),
    height INTEGER NOT NULL CHECK (height > 0),
    width INTEGER NOT NULL CHECK (width > 0),
    method TEXT NOT NULL CHECK (method IN ('entropy', 'disagreement')),
    score REAL NOT NULL,
    prediction_id INTEGER NOT NULL REFERENCES predictions (id) ON DELETE CASCADE,
    other_prediction_id INTEGER REFERENCES predictions (id) ON DELETE CASCADE,
    status TEXT NOT NULL DEFAULT 'todo' CHECK (status IN ('todo', 'accepted', 'corrected', 'rejected')),
    reviewer TEXT NOT NULL DEFAULT '',
    updated TEXT,
    UNIQUE (scene_id, tile_row, tile_col, height, width)
);
CREATE INDEX review_items_rank ON review_items (score DESC, id);
CREATE INDEX review_items_prediction ON review_items (prediction_id);
CREATE INDEX review_items_other_prediction ON review_items (other_prediction_id);

CREATE TABLE workspace_settings (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    default_model_id INTEGER REFERENCES models (id) ON DELETE RESTRICT
);
INSERT INTO workspace_settings (id) VALUES (1);
"""

# Migration 4: who deleted a scene, or renamed, deleted or chose the default model, and when. The
# subject is kept as text (its id and name at the time), so the record outlives what it names.
SCHEMA_V4_ACTIVITY = """
CREATE TABLE activity (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    author TEXT NOT NULL DEFAULT '',
    action TEXT NOT NULL
        CHECK (action IN ('scene deleted', 'model renamed', 'model deleted', 'default model set')),
    subject TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
"""

# Forward migrations, oldest first; the schema version of a database is how many of them it has had.
# Append new scripts, never edit a released one: workspaces out there already ran it.
MIGRATIONS: list[str] = [SCHEMA_V1, SCHEMA_V2_SCENE_LINKS, SCHEMA_V3_REVIEW, SCHEMA_V4_ACTIVITY]


def schema_version() -> int:
    """Read at call time so a test can extend MIGRATIONS."""
    return len(MIGRATIONS)


def connect(path: Path) -> sqlite3.Connection:
    """Open with the settings every workspace connection needs (they are per connection in SQLite)."""
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise ScarpError(f"{path}: cannot open the workspace database ({exc})") from exc
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise ScarpError(
                f"{path}: SQLite refused write-ahead logging (journal mode stays {mode!r}); "
                "keep the workspace on a local disk"
            )
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = FULL")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise ScarpError(f"{path}: not a usable Scarp workspace database ({exc})") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def is_full(exc: sqlite3.Error) -> bool:
    """SQLITE_FULL: the disk holding the database (or its WAL) has no space left."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (code is not None and code & 0xFF == sqlite3.SQLITE_FULL) or "disk is full" in str(exc).lower()


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


@contextmanager
def transaction(conn: sqlite3.Connection, *, write: bool = True) -> Iterator[sqlite3.Connection]:
    """One explicit transaction; writes take the lock at BEGIN so they wait in line, not fail mid-way."""
    try:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    except sqlite3.OperationalError as exc:
        if _is_busy(exc):
            raise ScarpError(
                f"The workspace database stayed locked by another process for {BUSY_TIMEOUT_S:.0f} s; "
                "nothing was changed, try again"
            ) from exc
        raise
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def split_statements(script: str) -> list[str]:
    """Split a script so it can run inside our own transaction (executescript would COMMIT first)."""
    statements: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                statements.append(pending.strip())
            pending = ""
    if pending.strip(" \t\r\n;"):
        raise ScarpError(f"migration script ends inside a statement: {pending.strip()[:80]!r}")
    return statements


def migrate(conn: sqlite3.Connection, where: Path) -> int:
    """Bring the schema up to date, one transaction per migration, so a crash never leaves half of one."""
    target = schema_version()
    current = user_version(conn)
    if current > target:
        raise _too_new(where, current, target)
    for version in range(current + 1, target + 1):
        with transaction(conn):
            now = user_version(conn)  # another process may have migrated while we waited for the lock
            if now > target:
                raise _too_new(where, now, target)
            if now >= version:
                continue
            try:
                for statement in split_statements(MIGRATIONS[version - 1]):
                    conn.execute(statement)
            except sqlite3.Error as exc:
                raise ScarpError(
                    f"{where}: upgrading the workspace database to schema version {version} failed ({exc}); "
                    f"it was left at version {now}"
                ) from exc
            conn.execute(f"PRAGMA user_version = {version}")
    return target


def _too_new(where: Path, found: int, known: int) -> ScarpError:
    return ScarpError(
        f"{where}: the workspace database has schema version {found}, newer than this Scarp knows "
        f"(version {known}); it was written by a newer Scarp, update Scarp to open it"
    )
