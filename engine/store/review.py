"""The review queue: windows of scenes ranked by a score, each with a reviewer's status.

An item is a scene window (the whole scene, or one tile of it) scored by engine/review_queue.py from one
prediction (entropy) or two (disagreement). Each scene has one queue, the one its latest build stored:
rebuilding keeps the status of every window that is still in the queue and drops the others.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from engine.errors import InputError, NotFoundError
from engine.store.base import WorkspaceBase
from engine.store.records import parse_time, utc_now

REVIEW_STATUSES = ("todo", "accepted", "corrected", "rejected")
REVIEW_METHODS = ("entropy", "disagreement")

# Highest score first; the id breaks ties so the order (and next/previous) is stable.
_RANKED = "ORDER BY score DESC, id"


@dataclass(frozen=True)
class ReviewItem:
    """A window (row, col, height, width in pixels) of a scene, its score and where its review stands."""

    id: int
    scene_id: int
    row: int
    col: int
    height: int
    width: int
    method: str
    score: float
    prediction_id: int
    other_prediction_id: int | None
    status: str
    reviewer: str
    updated: datetime | None


def _item(row: sqlite3.Row) -> ReviewItem:
    return ReviewItem(
        id=row["id"],
        scene_id=row["scene_id"],
        row=row["tile_row"],
        col=row["tile_col"],
        height=row["height"],
        width=row["width"],
        method=row["method"],
        score=float(row["score"]),
        prediction_id=row["prediction_id"],
        other_prediction_id=row["other_prediction_id"],
        status=row["status"],
        reviewer=row["reviewer"],
        updated=parse_time(row["updated"]),
    )


class ReviewQueue(WorkspaceBase):
    """Review items per scene; every status change is one transaction."""

    def replace_review_items(
        self,
        scene_id: int,
        method: str,
        prediction_ids: Sequence[int],
        windows: Iterable[tuple[int, int, int, int, float]],
    ) -> list[ReviewItem]:
        """Make (row, col, height, width, score) windows the scene's queue; known windows keep status."""
        if method not in REVIEW_METHODS:
            raise InputError(f"review method {method!r}", f"is not one of {', '.join(REVIEW_METHODS)}")
        needed = 2 if method == "disagreement" else 1
        if len(prediction_ids) != needed:
            raise InputError(f"{method} ranking", f"needs {needed} prediction(s), got {list(prediction_ids)}")
        first, other = prediction_ids[0], (prediction_ids[1] if len(prediction_ids) == 2 else None)
        windows = [(int(r), int(c), int(h), int(w), float(s)) for r, c, h, w, s in windows]
        with self._tx() as conn:
            if conn.execute("SELECT 1 FROM scenes WHERE id = ?", (scene_id,)).fetchone() is None:
                raise NotFoundError(f"Scene {scene_id} does not exist in this workspace")
            for prediction_id in prediction_ids:
                row = conn.execute(
                    "SELECT scene_id FROM predictions WHERE id = ?", (prediction_id,)
                ).fetchone()
                if row is None or row[0] != scene_id:
                    raise InputError(
                        f"prediction {prediction_id}", f"is not a prediction of scene {scene_id}"
                    )
            kept = {(r, c, h, w) for r, c, h, w, _ in windows}
            old = conn.execute(
                "SELECT id, tile_row, tile_col, height, width FROM review_items WHERE scene_id = ?",
                (scene_id,),
            ).fetchall()
            stale = [(row["id"],) for row in old if tuple(row)[1:] not in kept]
            conn.executemany("DELETE FROM review_items WHERE id = ?", stale)
            conn.executemany(
                "INSERT INTO review_items (scene_id, tile_row, tile_col, height, width, method, score,"
                " prediction_id, other_prediction_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (scene_id, tile_row, tile_col, height, width) DO UPDATE SET"
                " method = excluded.method, score = excluded.score, prediction_id = excluded.prediction_id,"
                " other_prediction_id = excluded.other_prediction_id",
                [(scene_id, r, c, h, w, method, s, first, other) for r, c, h, w, s in windows],
            )
            rows = conn.execute(f"SELECT * FROM review_items WHERE scene_id = ? {_RANKED}", (scene_id,))
            return [_item(row) for row in rows.fetchall()]

    def review_items(
        self, scene_ids: Sequence[int] | None = None, *, status: str | None = None
    ) -> list[ReviewItem]:
        """Ranked items of the given scenes (all scenes when None), optionally only those in `status`."""
        where, args = self._review_scope(scene_ids)
        if status is not None:
            where, args = f"{where} AND status = ?", [*args, self._review_status(status)]
        with self._tx(write=False) as conn:
            rows = conn.execute(f"SELECT * FROM review_items WHERE {where} {_RANKED}", args).fetchall()
        return [_item(row) for row in rows]

    def get_review_item(self, item_id: int) -> ReviewItem:
        with self._tx(write=False) as conn:
            return _item(self._review_row(conn, item_id))

    def set_review_status(self, item_id: int, status: str, reviewer: str = "") -> ReviewItem:
        """Record a reviewer's verdict on an item, with the time it was given."""
        status = self._review_status(status)
        with self._tx() as conn:
            self._review_row(conn, item_id)
            conn.execute(
                "UPDATE review_items SET status = ?, reviewer = ?, updated = ? WHERE id = ?",
                (status, str(reviewer).strip(), utc_now(), item_id),
            )
            return _item(self._review_row(conn, item_id))

    def adjacent_review_item(
        self,
        item_id: int | None,
        step: int = 1,
        *,
        scene_ids: Sequence[int] | None = None,
        status: str | None = None,
    ) -> ReviewItem | None:
        """The next (step=1) or previous (step=-1) item in rank order, skipping items not in `status`.

        Positions come from the whole ranking, so the current item need not match the filter (it may have
        just been accepted while the reviewer walks the todo items). No current item: the first (or last).
        None past either end.
        """
        if step not in (1, -1):
            raise InputError("step", f"must be 1 (next) or -1 (previous), got {step!r}")
        wanted = None if status is None else self._review_status(status)
        ranked = self.review_items(scene_ids)
        ids = [item.id for item in ranked]
        if item_id is None:
            start = 0 if step == 1 else len(ranked) - 1
        elif item_id in ids:
            start = ids.index(item_id) + step
        else:
            raise NotFoundError(f"Review item {item_id} is not in this review queue")
        candidates = ranked[start:] if step == 1 else ranked[: start + 1][::-1]
        return next((item for item in candidates if wanted is None or item.status == wanted), None)

    def review_progress(self, scene_ids: Sequence[int] | None = None) -> dict[str, int]:
        """How many items are in each status (every status listed, zero included), plus `total`."""
        where, args = self._review_scope(scene_ids)
        with self._tx(write=False) as conn:
            rows = conn.execute(
                f"SELECT status, count(*) FROM review_items WHERE {where} GROUP BY status", args
            ).fetchall()
        counts = {status: 0 for status in REVIEW_STATUSES} | {row[0]: row[1] for row in rows}
        return counts | {"total": sum(counts.values())}

    @staticmethod
    def _review_scope(scene_ids: Sequence[int] | None) -> tuple[str, list[int]]:
        if scene_ids is None:
            return "1", []
        ids = [int(i) for i in scene_ids]
        return f"scene_id IN ({', '.join('?' * len(ids))})", ids

    @staticmethod
    def _review_row(conn: sqlite3.Connection, item_id: int) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM review_items WHERE id = ?", (item_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"Review item {item_id} does not exist in this workspace")
        return row

    @staticmethod
    def _review_status(status: str) -> str:
        if status not in REVIEW_STATUSES:
            raise InputError(f"review status {status!r}", f"is not one of {', '.join(REVIEW_STATUSES)}")
        return status
