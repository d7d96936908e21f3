"""Immutable records handed out by the workspace, and the conversions between them and table rows.

Records are snapshots: holding one never locks anything, and a stale one is detected where it matters
(a mask saved on top of an outdated parent raises ConflictError).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.errors import InputError

MASK_SOURCES = ("prediction", "correction", "import")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
JOB_FINAL_STATUSES = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Scene:
    """An image the user mapped; `path` is the file to read, whether imported or referenced in place."""

    id: int
    name: str
    source_path: Path
    stored_path: Path | None
    checksum: str
    descriptor: dict[str, Any]
    created: datetime

    @property
    def path(self) -> Path:
        return self.stored_path if self.stored_path is not None else self.source_path

    @property
    def copied(self) -> bool:
        """Copied scenes are the workspace's own; referenced ones belong to the user and are never touched."""
        return self.stored_path is not None


@dataclass(frozen=True)
class Prediction:
    """A model's raw output for a scene, kept so a mask can say which prediction it started from."""

    id: int
    scene_id: int
    model_version: str
    params: dict[str, Any]
    raster_path: Path
    created: datetime


@dataclass(frozen=True)
class MaskVersion:
    """One saved state of a scene's landslide mask; versions form a chain through parent_id."""

    id: int
    scene_id: int
    parent_id: int | None
    source: str
    prediction_id: int | None
    author: str
    note: str
    raster_path: Path
    created: datetime


@dataclass(frozen=True)
class ModelVersion:
    """A trained network with what it was trained on, so a retrain can be traced back to its data."""

    id: int
    name: str
    architecture: str
    config: dict[str, Any]
    checkpoint_path: Path
    parent_id: int | None
    training_snapshot: dict[str, Any] | None
    metrics: dict[str, Any] | None
    created: datetime


@dataclass(frozen=True)
class Activity:
    """A change to the workspace that is not a mask version: who made it, when, and to what."""

    id: int
    at: datetime
    author: str
    action: str
    subject: str
    detail: str


@dataclass(frozen=True)
class Job:
    """Long work (prediction, training) tracked in the database so every process can watch it."""

    id: int
    kind: str
    params: dict[str, Any]
    status: str
    progress: float
    message: str
    error: str | None
    created: datetime
    started: datetime | None
    finished: datetime | None

    @property
    def done(self) -> bool:
        return self.status in JOB_FINAL_STATUSES


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def parse_time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def show_time(moment: datetime) -> str:
    """For messages: seconds are precise enough for a person."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _plain(value: Any) -> Any:
    """Accept numpy scalars/arrays and paths without importing numpy: they know how to become plain."""
    if isinstance(value, Path):
        return str(value)
    for method in ("tolist", "item"):
        if callable(getattr(value, method, None)):
            return getattr(value, method)()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(value: dict[str, Any] | None, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InputError(field, f"must be a dict, got {type(value).__name__}")
    try:
        return json.dumps(value, sort_keys=True, default=_plain)
    except (TypeError, ValueError) as exc:
        raise InputError(field, f"cannot be stored as JSON ({exc})") from exc


def from_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def to_db_path(root: Path, path: Path) -> str:
    """Relative (POSIX) inside the workspace so it survives a move; absolute for outside files."""
    resolved = Path(path).expanduser().resolve()
    if resolved.is_relative_to(root):
        return resolved.relative_to(root).as_posix()
    return str(resolved)


def from_db_path(root: Path, text: str) -> Path:
    path = Path(text)
    return path if path.is_absolute() else root / path


def scene_from_row(row: sqlite3.Row, root: Path) -> Scene:
    return Scene(
        id=row["id"],
        name=row["name"],
        source_path=from_db_path(root, row["source_path"]),
        stored_path=None if row["stored_path"] is None else from_db_path(root, row["stored_path"]),
        checksum=row["checksum"],
        descriptor=from_json(row["descriptor"]),
        created=datetime.fromisoformat(row["created"]),
    )


def prediction_from_row(row: sqlite3.Row, root: Path) -> Prediction:
    return Prediction(
        id=row["id"],
        scene_id=row["scene_id"],
        model_version=row["model_version"],
        params=from_json(row["params"]),
        raster_path=from_db_path(root, row["raster_path"]),
        created=datetime.fromisoformat(row["created"]),
    )


def mask_from_row(row: sqlite3.Row, root: Path) -> MaskVersion:
    return MaskVersion(
        id=row["id"],
        scene_id=row["scene_id"],
        parent_id=row["parent_id"],
        source=row["source"],
        prediction_id=row["prediction_id"],
        author=row["author"],
        note=row["note"],
        raster_path=from_db_path(root, row["raster_path"]),
        created=datetime.fromisoformat(row["created"]),
    )


def model_from_row(row: sqlite3.Row, root: Path) -> ModelVersion:
    return ModelVersion(
        id=row["id"],
        name=row["name"],
        architecture=row["architecture"],
        config=from_json(row["config"]),
        checkpoint_path=from_db_path(root, row["checkpoint_path"]),
        parent_id=row["parent_id"],
        training_snapshot=from_json(row["training_snapshot"]),
        metrics=from_json(row["metrics"]),
        created=datetime.fromisoformat(row["created"]),
    )


def job_from_row(row: sqlite3.Row, root: Path) -> Job:
    return Job(
        id=row["id"],
        kind=row["kind"],
        params=from_json(row["params"]),
        status=row["status"],
        progress=float(row["progress"]),
        message=row["message"],
        error=row["error"],
        created=datetime.fromisoformat(row["created"]),
        started=parse_time(row["started"]),
        finished=parse_time(row["finished"]),
    )
