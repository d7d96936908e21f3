"""The model registry: trained checkpoints with their lineage, config, training data snapshot and metrics."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from engine.errors import InputError, NotFoundError, ScarpError
from engine.store.base import WorkspaceBase
from engine.store.records import ModelVersion, model_from_row, to_json, utc_now


class ModelRegistry(WorkspaceBase):
    """Model versions in a workspace; names are unique so people can refer to a model by name."""

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

    def rename_model(self, model_id: int, new_name: str) -> ModelVersion:
        new_name = self._model_name(new_name)
        with self._tx() as conn:
            row = self._model_row(conn, model_id)
            if row["name"] != new_name:
                self._refuse_taken_name(conn, new_name)
                conn.execute("UPDATE models SET name = ? WHERE id = ?", (new_name, model_id))
                row = self._model_row(conn, model_id)
        return model_from_row(row, self.root)

    def delete_model(self, model_id: int) -> None:
        """Forget a model; refused while other models were trained from it, so lineage never breaks.

        A checkpoint under the workspace's models/ folder that no other model uses is removed after the
        commit; a checkpoint elsewhere belongs to the user and is left alone.
        """
        with self._tx() as conn:
            model = model_from_row(self._model_row(conn, model_id), self.root)
            children = conn.execute(
                "SELECT id, name FROM models WHERE parent_id = ? ORDER BY id", (model_id,)
            )
            named = [f"{row['id']} ({row['name']})" for row in children.fetchall()]
            if named:
                raise ScarpError(
                    f"Model {model_id} ({model.name}) cannot be deleted: model"
                    f"{'s' if len(named) > 1 else ''} {', '.join(named)} "
                    f"{'were' if len(named) > 1 else 'was'} trained from it. Delete "
                    f"{'those' if len(named) > 1 else 'that one'} first."
                )
            conn.execute("DELETE FROM models WHERE id = ?", (model_id,))
            shared = conn.execute(
                "SELECT count(*) FROM models WHERE checkpoint_path = ?", (self._rel(model.checkpoint_path),)
            ).fetchone()[0]
        if not shared and model.checkpoint_path.resolve().is_relative_to(self.root / "models"):
            self._remove_files([model.checkpoint_path])

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
