"""The only module that names st.session_state keys, so pages cannot drift apart on spelling or shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

_REVIEWER = "reviewer"
_WORKER_CHECKED = "worker_checked"
_DISPLAY = "display"
_CONFIRM_DELETE = "confirm_delete"
_DEMO_JOB = "demo_job"
_DISMISSED_JOBS = "dismissed_jobs"
_TRAIN_JOB = "train_job"
_EDITS = "edit_sessions"
_EDIT_TILE = "edit_tile"
_QUEUE_ITEM = "queue_item"
_DRAWING_ROUND = "drawing_round"
_SAVE_OUTCOME = "save_outcome"
_ACCESS_GRANTED = "access_granted"  # the password gate's verdict: a boolean, never the password

REVIEWER_WIDGET = "reviewer_widget"  # the sidebar text input's key; its value is copied to _REVIEWER


@dataclass(frozen=True)
class DisplaySettings:
    """How one scene is drawn: a band preset name or three 0-based band indices, and a percentile stretch."""

    bands: str | tuple[int, int, int] = "rgb"
    low: float = 2.0
    high: float = 98.0


def _get(key: str, default: Any) -> Any:
    if key not in st.session_state:
        st.session_state[key] = default
    return st.session_state[key]


def reviewer() -> str:
    return str(_get(_REVIEWER, ""))


def set_reviewer(name: str) -> None:
    st.session_state[_REVIEWER] = " ".join(name.split())


def access_granted() -> bool:
    """Whether this browser session has given the shared password (asked again in a new session)."""
    return _get(_ACCESS_GRANTED, False) is True


def grant_access() -> None:
    st.session_state[_ACCESS_GRANTED] = True


def revoke_access() -> None:
    st.session_state[_ACCESS_GRANTED] = False


def worker_checked() -> bool:
    """The worker check runs once per session; a dead worker is restarted by the next session or click."""
    return bool(_get(_WORKER_CHECKED, False))


def mark_worker_checked() -> None:
    st.session_state[_WORKER_CHECKED] = True


def display(scene_id: int) -> DisplaySettings:
    return _get(_DISPLAY, {}).get(scene_id, DisplaySettings())


def set_display(scene_id: int, settings: DisplaySettings) -> None:
    _get(_DISPLAY, {})[scene_id] = settings


def confirm_delete() -> int | None:
    """The scene whose delete waits for confirmation (one at a time)."""
    return _get(_CONFIRM_DELETE, None)


def set_confirm_delete(scene_id: int | None) -> None:
    st.session_state[_CONFIRM_DELETE] = scene_id


def demo_job() -> int | None:
    """The demo's prediction job, watched on Home until it ends."""
    return _get(_DEMO_JOB, None)


def set_demo_job(job_id: int | None) -> None:
    st.session_state[_DEMO_JOB] = job_id


REVIEW_SCENE = "w:review:scene"  # the Review page's scene select; others may preset it


def review_scene() -> int | None:
    return _get(REVIEW_SCENE, None)


def set_review_scene(scene_id: int) -> None:
    """Open the Review page on this scene (set before switching to it)."""
    st.session_state[REVIEW_SCENE] = scene_id


def train_job() -> int | None:
    """The training job the Train page follows (its chart and before/after scores)."""
    return _get(_TRAIN_JOB, None)


def set_train_job(job_id: int | None) -> None:
    st.session_state[_TRAIN_JOB] = job_id


def edit_session(scene_id: int) -> Any | None:
    """The scene's unsaved edits (an engine EditSession), kept across reruns until saved or discarded."""
    return edit_sessions().get(scene_id)


def set_edit_session(scene_id: int, session: Any | None) -> None:
    sessions = edit_sessions()
    if session is None:
        sessions.pop(scene_id, None)
    else:
        sessions[scene_id] = session


def edit_tile(scene_id: int) -> int:
    """Which tile of the scene the tile editor shows (an index into its tile grid)."""
    return int(_get(_EDIT_TILE, {}).get(scene_id, 0))


def set_edit_tile(scene_id: int, index: int) -> None:
    _get(_EDIT_TILE, {})[scene_id] = int(index)


def queue_item() -> int | None:
    """The review-queue item being looked at."""
    return _get(_QUEUE_ITEM, None)


def set_queue_item(item_id: int | None) -> None:
    st.session_state[_QUEUE_ITEM] = item_id


def drawing_round(scene_id: int, surface: str = "map") -> int:
    """Bumped after the shapes drawn on `surface` ("map" or "canvas") are applied, so it starts clean.
    One count per surface: a new round makes a new component, which reports its empty drawing back with
    a rerun of its own, so an edit on the map does not remake the tile canvas (and vice versa)."""
    return int(_get(_DRAWING_ROUND, {}).get((scene_id, surface), 0))


def next_drawing_round(scene_id: int, surface: str = "map") -> None:
    rounds = _get(_DRAWING_ROUND, {})
    rounds[(scene_id, surface)] = rounds.get((scene_id, surface), 0) + 1


def set_save_outcome(scene_id: int, kind: str, message: str) -> None:
    """What the last save of the scene's edits did ("saved", "conflict" or "error"), shown once."""
    save_outcomes()[scene_id] = (kind, message)


def take_save_outcome(scene_id: int) -> tuple[str, str] | None:
    return save_outcomes().pop(scene_id, None)


# Streamlit may stop a callback at any st.session_state access once another rerun request has arrived
# (a second click, a map reporting its drawings, a busy server). A callback that has written to the
# workspace must then record the result without touching st.session_state: it gets these plain dicts
# (fetched while the page was drawn, passed in the callback's args) and changes them in place.


def save_outcomes() -> dict[int, tuple[str, str]]:
    """The dict behind set_save_outcome/take_save_outcome, scene id → (kind, message)."""
    return _get(_SAVE_OUTCOME, {})


def edit_sessions() -> dict[int, Any]:
    """The dict behind edit_session/set_edit_session, scene id → EditSession."""
    return _get(_EDITS, {})


def dismissed_jobs() -> set[int]:
    """Failed jobs this session has acknowledged; they stay failed in the database for other tabs."""
    return _get(_DISMISSED_JOBS, set())


def dismiss_job(job_id: int) -> None:
    dismissed_jobs().add(job_id)


def widget_key(*parts: object) -> str:
    """Widget keys built in one place, so two pages never collide on a key."""
    return "w:" + ":".join(str(p) for p in parts)
