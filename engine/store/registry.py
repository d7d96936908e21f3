"""The model registry: trained checkpoints with their lineage, config, training data snapshot and metrics."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from engine.errors import InputError, NotFoundError
from engine.store.base import WorkspaceBase
from engine.store.records import ModelVersion, model_from_row, to_json, utc_now


class ModelRegistry(WorkspaceBase):
    """Model versions in a workspace; names are unique so people can refer to a model by name.

    One of them may be the workspace default (a one-row settings table), which cannot be deleted.
    """

    def add_model(
        self,
        name: str,
        architecture: str,
        config: dict[str, Any],
        checkpoint_path: str | Path,
        *,
        parent_id: int | None = None,
        training_snapshot: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> ModelVersion:
        """Register a checkpoint (a relative path is taken inside the workspace; it must exist)."""
        name = self._model_name(name)
        checkpoint = self.root / Path(checkpoint_path).expanduser()
        if not checkpoint.is_file():
            raise InputError(checkpoint, "checkpoint file does not exist")
        values = (
            name,
            architecture,
            to_json(config, "config"),
            self._rel(checkpoint),
            parent_id,
            to_json(training_snapshot, "training_snapshot"),
            to_json(metrics, "metrics"),
            utc_now(),
        )
        with self._tx() as conn:
            self._refuse_taken_name(conn, name)
            if parent_id is not None:
                self._model_row(conn, parent_id)
            cursor = conn.execute(
                "INSERT INTO models (name, architecture, config, checkpoint_path, parent_id,"
                " training_snapshot, metrics, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
            row = conn.execute("SELECT * FROM models WHERE id = ?", (cursor.lastrowid,)).fetchone()
        return model_from_row(row, self.root)

    def get_model(self, model_id: int) -> ModelVersion:
        with self._tx(write=False) as conn:
            return model_from_row(self._model_row(conn, model_id), self.root)

    def get_model_by_name(self, name: str) -> ModelVersion:
        with self._tx(write=False) as conn:
            row = conn.execute("SELECT * FROM models WHERE name = ?", (name.strip(),)).fetchone()
        if row is None:
            raise NotFoundError(f"No model named {name.strip()!r} in this workspace")
        return model_from_row(row, self.root)

    def list_models(self) -> list[ModelVersion]:
        with self._tx(write=False) as conn:
            rows = conn.execute("SELECT * FROM models ORDER BY id").fetchall()
        return [model_from_row(row, self.root) for row in rows]

    def free_model_name(self, base: str) -> str:
        """`base`, or `base-2`, `base-3`, ... : the first name no model version has yet."""
        taken = {m.name for m in self.list_models()}
        name, suffix = base, 1
        while name in taken:
            suffix += 1
            name = f"{base}-{suffix}"
        return name

    def rename_model(self, model_id: int, new_name: str, *, author: str = "") -> ModelVersion:
        new_name = self._model_name(new_name)
        with self._tx() as conn:
            row = self._model_row(conn, model_id)
            if row["name"] != new_name:
                self._refuse_taken_name(conn, new_name)
                conn.execute("UPDATE models SET name = ? WHERE id = ?", (new_name, model_id))
                self._log_activity(
                    conn, author, "model renamed", f"model {model_id}", f"{row['name']} → {new_name}"
                )
                row = self._model_row(conn, model_id)
        return model_from_row(row, self.root)

    def delete_model(self, model_id: int, *, author: str = "") -> None:
        """Forget a model; refused while it is the workspace default or other models were trained from it.

        A checkpoint under the workspace's models/ folder that no other model uses is removed after the
        commit; a checkpoint elsewhere belongs to the user and is left alone.
        """
        with self._tx() as conn:
            model = model_from_row(self._model_row(conn, model_id), self.root)
            who = f"model {model_id} ({model.name})"
            if self._default_model_id(conn) == model_id:
                raise InputError(who, "cannot be deleted: it is the workspace default; choose another first")
            children = conn.execute(
                "SELECT id, name FROM models WHERE parent_id = ? ORDER BY id", (model_id,)
            )
            named = [f"{row['id']} ({row['name']})" for row in children.fetchall()]
            if named:
                many = len(named) > 1
                raise InputError(
                    who,
                    f"cannot be deleted: model{'s' if many else ''} {', '.join(named)} "
                    f"{'were' if many else 'was'} trained from it; "
                    f"delete {'those' if many else 'that one'} first",
                )
            conn.execute("DELETE FROM models WHERE id = ?", (model_id,))
            self._log_activity(conn, author, "model deleted", who)
            shared = conn.execute(
                "SELECT count(*) FROM models WHERE checkpoint_path = ?", (self._rel(model.checkpoint_path),)
            ).fetchone()[0]
        if not shared and model.checkpoint_path.resolve().is_relative_to(self.root / "models"):
            self._remove_files([model.checkpoint_path])

    def set_default_model(self, model_id: int | None, *, author: str = "") -> ModelVersion | None:
        """Make a model the workspace default (None clears it); returns the new default."""
        with self._tx() as conn:
            row = None if model_id is None else self._model_row(conn, model_id)
            if self._default_model_id(conn) != model_id:
                subject = "none" if row is None else f"model {model_id} ({row['name']})"
                self._log_activity(conn, author, "default model set", subject)
            conn.execute("UPDATE workspace_settings SET default_model_id = ? WHERE id = 1", (model_id,))
        return None if row is None else model_from_row(row, self.root)

    def default_model(self) -> ModelVersion | None:
        with self._tx(write=False) as conn:
            model_id = self._default_model_id(conn)
            return None if model_id is None else model_from_row(self._model_row(conn, model_id), self.root)

    @staticmethod
    def _default_model_id(conn: sqlite3.Connection) -> int | None:
        return conn.execute("SELECT default_model_id FROM workspace_settings WHERE id = 1").fetchone()[0]

    def _model_row(self, conn: sqlite3.Connection, model_id: int) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM models WHERE id = ?", (model_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"Model {model_id} does not exist in this workspace")
        return row

    @staticmethod
    def _model_name(name: str) -> str:
        name = str(name).strip()
        if not name:
            raise InputError("model name", "must not be empty")
        return name

    @staticmethod
    def _refuse_taken_name(conn: sqlite3.Connection, name: str) -> None:
        row = conn.execute("SELECT id FROM models WHERE name = ?", (name,)).fetchone()
        if row is not None:
            raise InputError(
                f"model name {name!r}", f"is already used by model {row[0]}; choose another name"
            )
