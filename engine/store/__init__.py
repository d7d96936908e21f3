"""The workspace store: a folder with `scarp.db` (SQLite) and the rasters, scenes and models it records.

Standard library only, so the app, the CLI and worker processes can all open a workspace cheaply;
raster writing is left to a caller-supplied callable that fills a path the store picks.
"""

from __future__ import annotations

from engine.store.db import schema_version
from engine.store.files import (
    DiskFullError,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    copy_file_atomic,
    ensure_inside,
    is_temp_file,
    safe_filename,
    sha256_file,
)
from engine.store.records import (
    JOB_FINAL_STATUSES,
    JOB_STATUSES,
    MASK_SOURCES,
    Activity,
    Job,
    MaskVersion,
    ModelVersion,
    Prediction,
    Scene,
)
from engine.store.review import REVIEW_METHODS, REVIEW_STATUSES, ReviewItem
from engine.store.workspace import MaskConflictError, Workspace, Writer

__all__ = [
    "JOB_FINAL_STATUSES",
    "JOB_STATUSES",
    "MASK_SOURCES",
    "REVIEW_METHODS",
    "REVIEW_STATUSES",
    "Activity",
    "DiskFullError",
    "Job",
    "MaskConflictError",
    "MaskVersion",
    "ModelVersion",
    "Prediction",
    "ReviewItem",
    "Scene",
    "Workspace",
    "Writer",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "copy_file_atomic",
    "ensure_inside",
    "is_temp_file",
    "safe_filename",
    "schema_version",
    "sha256_file",
]
