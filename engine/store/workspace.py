"""The workspace: scenes, their predictions and mask history, plus maintenance.

Files are written completely before their row is committed, and removed only after a commit that
drops their row, so a crash at any moment leaves every row pointing at a whole file; the worst left
behind is an unreferenced file, which `remove_orphan_files` clears.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import ConflictError, InputError, NotFoundError, ScarpError
from engine.store.files import atomic_write, copy_file_atomic, is_temp_file, safe_filename, sha256_file
from engine.store.jobs import JobQueue
from engine.store.links import SceneLinks
from engine.store.records import (
    MASK_SOURCES,
    MaskVersion,
    Prediction,
    Scene,
    mask_from_row,
    prediction_from_row,
    scene_from_row,
    show_time,
    to_json,
    utc_now,
)
from engine.store.registry import ModelRegistry
from engine.store.review import ReviewQueue

Writer = Callable[[Path], None]
"""Writes a complete file at the path it is given (with rasterio, numpy, PIL...); the store owns names."""


class MaskConflictError(ConflictError):
    """A mask was saved on top of a version that is no longer the latest; `latest` is what to reload."""

    def __init__(self, message: str, latest: MaskVersion | None):
        super().__init__(message)
        self.latest = latest


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class Workspace(ModelRegistry, JobQueue, SceneLinks, ReviewQueue):
    """A landslide mapping workspace folder: `scarp.db` plus scenes/, masks/, predictions/, models/, tmp/."""

    # --- scenes -------------------------------------------------------------------------------------

    def add_scene(
        self, source: str | Path, descriptor: dict[str, Any], *, name: str | None = None, copy: bool = True
    ) -> Scene:
        """Import a scene (a copy under scenes/, or referenced in place with copy=False).

        Scenes are identified by content: importing a file whose sha256 is already in the workspace
        returns the existing scene unchanged (its name and descriptor win), so the same image can never
        carry two diverging mask histories.
        """
        source = Path(source).expanduser().resolve()
        if not source.is_file():
            raise InputError(source, "does not exist or is not a file")
        descriptor_json = to_json(descriptor, "descriptor")
        name = (name or "").strip() or source.name
        checksum = sha256_file(source)
        existing = self._scene_with_checksum(checksum)
        if existing is not None:
            return existing
        stored: Path | None = None
        if copy:
            stored = self.root / "scenes" / uuid.uuid4().hex / safe_filename(source.name, fallback="scene")
            checksum = copy_file_atomic(source, stored)  # the hash of what was copied is the one that counts
        try:
            with self._tx() as conn:
                row = conn.execute("SELECT * FROM scenes WHERE checksum = ?", (checksum,)).fetchone()
                duplicate = row is not None  # imported by another process while we copied
                if not duplicate:
                    cursor = conn.execute(
                        "INSERT INTO scenes (name, source_path, stored_path, checksum, descriptor, created)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (
                            name,
                            self._rel(source),
                            None if stored is None else self._rel(stored),
                            checksum,
                            descriptor_json,
                            utc_now(),
                        ),
                    )
                    row = conn.execute("SELECT * FROM scenes WHERE id = ?", (cursor.lastrowid,)).fetchone()
        except BaseException:
            if stored is not None:
                self._remove_files([stored])
            raise
        if duplicate and stored is not None:
            self._remove_files([stored])
        return scene_from_row(row, self.root)

    def _scene_with_checksum(self, checksum: str) -> Scene | None:
        with self._tx(write=False) as conn:
            row = conn.execute("SELECT * FROM scenes WHERE checksum = ?", (checksum,)).fetchone()
        return None if row is None else scene_from_row(row, self.root)

    def get_scene(self, scene_id: int) -> Scene:
        with self._tx(write=False) as conn:
            return scene_from_row(self._scene_row(conn, scene_id), self.root)

    def list_scenes(self) -> list[Scene]:
        with self._tx(write=False) as conn:
            rows = conn.execute("SELECT * FROM scenes ORDER BY id").fetchall()
        return [scene_from_row(row, self.root) for row in rows]

    def delete_scene(self, scene_id: int, *, drop_masks: bool = False, author: str = "") -> None:
        """Delete a scene with its predictions; its mask versions only when asked to, never silently.

        Rows go in one transaction (with the activity record naming `author`), files only after it
        commits. A scene referenced in place keeps its source file: it belongs to the user.
        """
        with self._tx() as conn:
            scene = scene_from_row(self._scene_row(conn, scene_id), self.root)
            masks = conn.execute("SELECT raster_path FROM mask_versions WHERE scene_id = ?", (scene_id,))
            mask_paths = [self._abs(row[0]) for row in masks.fetchall()]
            if mask_paths and not drop_masks:
                raise ScarpError(
                    f"Scene {scene_id} ({scene.name}) has {_plural(len(mask_paths), 'mask version')} "
                    "that would be lost; nothing was deleted. Delete the scene together with its masks "
                    "to go ahead."
                )
            predictions = conn.execute("SELECT raster_path FROM predictions WHERE scene_id = ?", (scene_id,))
            prediction_paths = [self._abs(row[0]) for row in predictions.fetchall()]
            conn.execute("DELETE FROM mask_versions WHERE scene_id = ?", (scene_id,))
            conn.execute("DELETE FROM predictions WHERE scene_id = ?", (scene_id,))
            conn.execute("DELETE FROM scenes WHERE id = ?", (scene_id,))
            lost = f"with {_plural(len(mask_paths), 'mask version')}" if mask_paths else ""
            self._log_activity(conn, author, "scene deleted", f"scene {scene_id} ({scene.name})", lost)
        stored = [scene.stored_path] if scene.stored_path is not None else []
        self._remove_files([*mask_paths, *prediction_paths, *stored])

    def _scene_row(self, conn: sqlite3.Connection, scene_id: int) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM scenes WHERE id = ?", (scene_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"Scene {scene_id} does not exist in this workspace")
        return row

    # --- predictions --------------------------------------------------------------------------------

    def add_prediction(
        self, scene_id: int, model_version: str, params: dict[str, Any], write: Writer, suffix: str = ".tif"
    ) -> Prediction:
        """Store a prediction raster: `write` fills a temporary path, the row is added once it is whole."""
        params_json = to_json(params, "params")
        self.get_scene(scene_id)  # fail before spending time on the raster
        final = self._new_file("predictions", scene_id, suffix)
        with atomic_write(final) as tmp:
            write(tmp)
        self.remove_on_rollback(final)
        try:
            with self._tx() as conn:
                self._scene_row(conn, scene_id)
                cursor = conn.execute(
                    "INSERT INTO predictions (scene_id, model_version, params, raster_path, created)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (scene_id, model_version, params_json, self._rel(final), utc_now()),
                )
                row = conn.execute("SELECT * FROM predictions WHERE id = ?", (cursor.lastrowid,)).fetchone()
        except BaseException:
            self._remove_files([final], prune=False)
            raise
        return prediction_from_row(row, self.root)

    def get_prediction(self, prediction_id: int) -> Prediction:
        with self._tx(write=False) as conn:
            row = conn.execute("SELECT * FROM predictions WHERE id = ?", (prediction_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"Prediction {prediction_id} does not exist in this workspace")
        return prediction_from_row(row, self.root)

    def list_predictions(self, scene_id: int) -> list[Prediction]:
        with self._tx(write=False) as conn:
            self._scene_row(conn, scene_id)
            rows = conn.execute("SELECT * FROM predictions WHERE scene_id = ? ORDER BY id", (scene_id,))
            return [prediction_from_row(row, self.root) for row in rows.fetchall()]

    # --- mask versions ------------------------------------------------------------------------------

    def save_mask_version(
        self,
        scene_id: int,
        write: Writer,
        *,
        parent_id: int | None,
        source: str,
        author: str = "",
        note: str = "",
        prediction_id: int | None = None,
        suffix: str = ".tif",
    ) -> MaskVersion:
        """Save a new mask version on top of `parent_id`, which must be the scene's latest version.

        If someone saved since the caller loaded `parent_id`, MaskConflictError (a ConflictError) names
        the newer version and nothing is written: edits are never silently overwritten. The raster is
        written whole first; the row is inserted after re-checking the parent under the write lock.
        """
        if source not in MASK_SOURCES:
            raise InputError(source, f"is not a mask source; use one of {', '.join(MASK_SOURCES)}")
        with self._tx(write=False) as conn:  # cheap early refusal before writing megabytes
            self._check_mask_parent(conn, scene_id, parent_id)
        final = self._new_file("masks", scene_id, suffix)
        with atomic_write(final) as tmp:
            write(tmp)
        self.remove_on_rollback(final)
        try:
            with self._tx() as conn:
                self._check_mask_parent(conn, scene_id, parent_id)
                if prediction_id is not None:
                    self._check_prediction_of(conn, prediction_id, scene_id)
                cursor = conn.execute(
                    "INSERT INTO mask_versions"
                    " (scene_id, parent_id, source, prediction_id, author, note, raster_path, created)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (scene_id, parent_id, source, prediction_id, author, note, self._rel(final), utc_now()),
                )
                row = conn.execute("SELECT * FROM mask_versions WHERE id = ?", (cursor.lastrowid,)).fetchone()
        except BaseException:
            self._remove_files([final], prune=False)
            raise
        return mask_from_row(row, self.root)

    def _check_mask_parent(self, conn: sqlite3.Connection, scene_id: int, parent_id: int | None) -> None:
        self._scene_row(conn, scene_id)
        row = conn.execute(
            "SELECT * FROM mask_versions WHERE scene_id = ? ORDER BY id DESC LIMIT 1", (scene_id,)
        ).fetchone()
        latest = None if row is None else mask_from_row(row, self.root)
        if (latest.id if latest else None) == parent_id:
            return
        if latest is None:
            raise MaskConflictError(
                f"Scene {scene_id} has no mask version {parent_id} any more (it has no mask versions); "
                "nothing was saved. Reload the scene and save again.",
                None,
            )
        started = "no saved mask" if parent_id is None else f"version {parent_id}"
        raise MaskConflictError(
            f"The mask of scene {scene_id} was changed meanwhile: version {latest.id} by "
            f"{latest.author or 'an unnamed author'} at {show_time(latest.created)} is newer than "
            f"{started}, which you started from. Nothing was overwritten; reload the latest version "
            "and re-apply your edits.",
            latest,
        )

    def _check_prediction_of(self, conn: sqlite3.Connection, prediction_id: int, scene_id: int) -> None:
        row = conn.execute("SELECT scene_id FROM predictions WHERE id = ?", (prediction_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"Prediction {prediction_id} does not exist in this workspace")
        if row[0] != scene_id:
            raise InputError(
                f"prediction {prediction_id}", f"belongs to scene {row[0]}, not scene {scene_id}"
            )

    def latest_mask_version(self, scene_id: int) -> MaskVersion | None:
        with self._tx(write=False) as conn:
            self._scene_row(conn, scene_id)
            row = conn.execute(
                "SELECT * FROM mask_versions WHERE scene_id = ? ORDER BY id DESC LIMIT 1", (scene_id,)
            ).fetchone()
        return None if row is None else mask_from_row(row, self.root)

    def list_mask_versions(self, scene_id: int) -> list[MaskVersion]:
        """Oldest first, so the list reads as the scene's editing history."""
        with self._tx(write=False) as conn:
            self._scene_row(conn, scene_id)
            rows = conn.execute("SELECT * FROM mask_versions WHERE scene_id = ? ORDER BY id", (scene_id,))
            return [mask_from_row(row, self.root) for row in rows.fetchall()]

    def get_mask_version(self, mask_id: int) -> MaskVersion:
        with self._tx(write=False) as conn:
            row = conn.execute("SELECT * FROM mask_versions WHERE id = ?", (mask_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"Mask version {mask_id} does not exist in this workspace")
        return mask_from_row(row, self.root)

    # --- maintenance --------------------------------------------------------------------------------

    def summary(self) -> dict[str, int]:
        with self._tx(write=False) as conn:

            def count(sql: str) -> int:
                return int(conn.execute(sql).fetchone()[0])

            return {
                "scenes": count("SELECT count(*) FROM scenes"),
                "mask_versions": count("SELECT count(*) FROM mask_versions"),
                "predictions": count("SELECT count(*) FROM predictions"),
                "models": count("SELECT count(*) FROM models"),
                "jobs_running": count("SELECT count(*) FROM jobs WHERE status = 'running'"),
                "jobs_queued": count("SELECT count(*) FROM jobs WHERE status = 'queued'"),
            }

    def integrity_check(self) -> str:
        """SQLite's own check, plus foreign keys (which it does not cover); "ok" when all is well."""
        with self._tx(write=False) as conn:
            lines = [str(row[0]) for row in conn.execute("PRAGMA integrity_check").fetchall()]
            broken = conn.execute("PRAGMA foreign_key_check").fetchall()
        if broken:
            lines = [line for line in lines if line != "ok"]
            lines += [f"row {row[1]} of {row[0]} points to a missing {row[2]} row" for row in broken]
        return "\n".join(lines)

    def remove_orphan_files(self, *, min_age_s: float = 0.0) -> list[Path]:
        """Delete files no row references under scenes/, masks/, predictions/, and temporaries anywhere.

        Only call it deliberately: a file another process is writing right now is unreferenced until its
        row commits. `min_age_s` spares files younger than that, for running it next to live writers.
        """
        candidates: list[tuple[str, Path]] = []
        for folder in ("scenes", "masks", "predictions", "models", "tmp"):
            for directory, _dirs, names in os.walk(self.root / folder):
                candidates += [(folder, Path(directory) / name) for name in names]
        with self._tx(write=False) as conn:  # after listing, so a file committed meanwhile is kept
            referenced = {
                self._abs(row[0]).resolve()
                for sql in (
                    "SELECT raster_path FROM mask_versions",
                    "SELECT raster_path FROM predictions",
                    "SELECT stored_path FROM scenes WHERE stored_path IS NOT NULL",
                    "SELECT source_path FROM scenes",
                    "SELECT checkpoint_path FROM models",
                )
                for row in conn.execute(sql).fetchall()
            }
        now = time.time()
        doomed: list[Path] = []
        for folder, path in sorted(candidates):
            try:
                if path.is_symlink() or not path.is_file() or now - path.stat().st_mtime < min_age_s:
                    continue
            except OSError:
                continue  # vanished meanwhile
            owned = folder in ("scenes", "masks", "predictions")
            if is_temp_file(path) or (owned and path.resolve() not in referenced):
                doomed.append(path)
        return self._remove_files(doomed)
