"""Correct: fix the model's mask on the map or tile by tile, then save it as a new mask version.

Edits collect in an undoable session (per scene, per browser session) until Save writes a new version
on top of the one they started from. If someone saved a newer version meanwhile, the save is refused
and the page offers to reload theirs: nothing is overwritten silently. The review queue ranks tiles by
the model's uncertainty (or two models' disagreement) so a big scene is worked through tile by tile.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st
from streamlit_drawable_canvas import st_canvas
from streamlit_folium import st_folium

from app import access, services, state
from app.components import canvas
from app.components import map as review_map
from engine import api
from engine.errors import ConflictError, ScarpError

TILE_SIZES = (256, 512)
CANVAS_SIDE = 512  # the tile editor's on-screen size (px); tiles are enlarged to about this
TOOLS = {
    "brush": "Brush (add)",
    "eraser": "Eraser",
    "grow": "Grow from probability (click)",
    "grabcut": "GrabCut (outline)",
}
STATUS_LABELS = {"accepted": "Accept", "corrected": "Corrected", "rejected": "Reject"}

workspace = services.workspace()
st.title("Correct")

scenes = {s.id: s for s in api.list_scenes(workspace)}
if not scenes:
    st.info("No scenes yet. Import one on the Scenes page, run a prediction, then correct it here.")
    st.stop()
if state.review_scene() not in scenes:
    state.set_review_scene(api.latest_predicted_scene(workspace) or list(scenes)[-1])
scene_id = st.selectbox(
    "Scene", list(scenes), format_func=lambda i: f"{i} · {scenes[i].name}", key=state.REVIEW_SCENE
)

session = state.edit_session(scene_id)
if session is None:
    session = api.open_edit_session(workspace, scene_id)
    state.set_edit_session(scene_id, session)
grid = api.scene_grid(workspace, scene_id)
latest = api.latest_mask_version(workspace, scene_id)
reviewer = state.reviewer()
unsigned = access.reviewer_problem(reviewer)  # why a save would be refused now (None: it would not)


def scene_region(window, tile_region: np.ndarray) -> np.ndarray:
    """A tile's boolean region placed in a scene-sized map (the session holds the whole scene)."""
    y, x, h, w = window
    region = np.zeros(session.mask.shape, bool)
    region[y : y + h, x : x + w] = tile_region
    return region


def open_tile(item) -> None:
    """A queue item opened in the tile view (a callback: it sets the tile pickers before they are drawn)."""
    size = max(item.height, item.width)
    windows = api.tile_grid(workspace, scene_id, size) if size in TILE_SIZES else []
    match = [i for i, window in enumerate(windows) if window[:2] == (item.row, item.col)]
    if match:
        st.session_state[state.widget_key("correct", "tile-size")] = size
        st.session_state[state.widget_key("correct", "tile", scene_id, size)] = match[0]
        state.set_edit_tile(scene_id, match[0])
        st.toast("The Tile view tab now shows this tile.")


def save(outcomes: dict, sessions: dict) -> None:
    """The Save button's callback, so the page that follows is drawn from the saved state (the new latest
    version, an empty note). It reads st.session_state once, first, for the note: Streamlit may stop a
    callback at any session-state access when another rerun request arrives (a busy server, the map
    reporting its drawings), and stopped there nothing has happened yet. Past that line it touches only
    the plain dicts it was given, so a version written to the workspace is always recorded for the page
    (not left looking unsaved, to fail as a conflict on the next click)."""
    note = st.session_state.get(state.widget_key("correct", "note"), "")
    if unsigned:  # checked before the engine sees it: the edits and the note stay as they are
        outcomes[scene_id] = ("error", f"Not saved: {unsigned} Your edits are kept.")
        return
    try:
        saved = api.save_edited_mask(workspace, scene_id, session.mask, session.parent_id, reviewer, note)
    except ConflictError as exc:
        outcomes[scene_id] = (
            "conflict",
            f"Not saved: {exc}. Reload to continue from the newer version (your unsaved edits are lost).",
        )
    except ScarpError as exc:
        outcomes[scene_id] = ("error", f"Not saved: {exc}. Your edits are kept.")
    else:
        sessions.pop(scene_id, None)
        message = f"Saved version {saved.id} (parent {saved.parent_id or 'none'}), by {saved.author}."
        outcomes[scene_id] = ("saved", message)


def edited(count: int, surface: str) -> None:
    state.next_drawing_round(scene_id, surface)
    st.toast(f"{count:,} pixels changed" if count else "Nothing changed: those pixels already were so.")


# --- the session: what is being edited, undo/redo, save ---------------------------------------------------
base = f"version {session.parent_id}" if session.parent_id else "an empty mask"
changes = (
    f"+{session.added_px:,} / −{session.removed_px:,} px unsaved" if session.dirty else "no unsaved changes"
)
st.caption(f"Editing on top of {base} · {changes}")
outcome = state.take_save_outcome(scene_id)
if outcome is not None and outcome[0] == "saved":  # the saved version took the note with it
    st.session_state[state.widget_key("correct", "note")] = ""
bar = st.columns([1, 1, 1, 4, 2], vertical_alignment="bottom")
if bar[0].button("Undo", disabled=not session.can_undo, key=state.widget_key("correct", "undo")):
    session.undo()
    st.rerun()
if bar[1].button("Redo", disabled=not session.can_redo, key=state.widget_key("correct", "redo")):
    session.redo()
    st.rerun()
if bar[2].button("Discard", disabled=not session.dirty, key=state.widget_key("correct", "discard")):
    state.set_edit_session(scene_id, None)
    st.rerun()
bar[3].text_input("Note for this version", key=state.widget_key("correct", "note"), placeholder="optional")
bar[4].button(
    "Save version",
    type="primary",
    disabled=not session.dirty,
    on_click=save,
    args=(state.save_outcomes(), state.edit_sessions()),
    key=state.widget_key("correct", "save"),
)
notice = st.container()  # always there, so what follows keeps its place whether or not it says anything
if outcome is not None:
    kind, message = outcome
    if kind == "saved":
        notice.success(message)
    else:
        notice.error(message)
    if kind == "conflict":
        notice.button(
            "Reload the newer version",
            on_click=state.set_edit_session,
            args=(scene_id, None),
            key=state.widget_key("correct", "reload"),
        )
if unsigned:
    notice.caption(f"Saving needs a reviewer name: {unsigned}")

map_tab, tile_tab, history_tab, queue_tab = st.tabs(["On the map", "Tile view", "History", "Review queue"])

# --- on the map: polygons that add or erase --------------------------------------------------------------
with map_tab:
    try:
        predicted = api.list_predictions(workspace, scene_id)
        links = tuple((role, s.id) for role, s in api.scene_links(workspace, scene_id).items())
        layers = services.review_layers(
            str(workspace.root), scene_id, predicted[-1].id if predicted else None,
            latest.id if latest else None, links, 1024,
        )  # fmt: skip
        working = api.mask_outlines(workspace, scene_id, session.mask)
    except ScarpError as exc:
        st.error(str(exc))
    else:
        st.caption(
            "Draw a polygon or a rectangle (tools at the top left), then add it to the mask or erase it. "
            "The working mask is outlined in red."
        )
        drawn = st_folium(
            review_map.edit_map(layers, working),
            key=f"correct.map.{scene_id}.{state.drawing_round(scene_id, 'map')}",
            returned_objects=["all_drawings"],
            use_container_width=True,
            height=560,
        )
        shapes = [d for d in (drawn or {}).get("all_drawings") or [] if d]
        cols = st.columns(3)
        cols[0].write(f"{len(shapes)} shape{'' if len(shapes) == 1 else 's'} drawn")
        for col, mode, label in ((cols[1], "add", "Add to mask"), (cols[2], "erase", "Erase from mask")):
            if col.button(label, disabled=not shapes, key=state.widget_key("correct", "map", mode)):
                try:
                    region = np.zeros(session.mask.shape, bool)
                    for shape in shapes:
                        region |= api.rasterize_geometry(shape, grid)
                except ScarpError as exc:
                    st.error(str(exc))
                else:
                    edited(session.edit(region, mode), "map")
                    st.rerun()

# --- tile view: brush, eraser and smart fill --------------------------------------------------------------
with tile_tab:
    cols = st.columns([1, 3])
    tile = cols[0].selectbox("Tile size", TILE_SIZES, key=state.widget_key("correct", "tile-size"))
    windows = api.tile_grid(workspace, scene_id, tile)
    index = min(state.edit_tile(scene_id), len(windows) - 1)
    index = cols[1].selectbox(
        "Tile",
        range(len(windows)),
        index=index,
        format_func=lambda i: (
            f"{i + 1}/{len(windows)} · rows {windows[i][0]}–{windows[i][0] + windows[i][2]}, "
            f"columns {windows[i][1]}–{windows[i][1] + windows[i][3]}"
        ),
        key=state.widget_key("correct", "tile", scene_id, tile),
    )
    state.set_edit_tile(scene_id, index)
    window = windows[index]
    view = api.tile_view(workspace, scene_id, window)
    y, x, h, w = window
    tile_mask = session.mask[y : y + h, x : x + w]
    scale = max(1, CANVAS_SIDE // max(h, w))
    tcols = st.columns([2, 1, 1])
    tool = tcols[0].radio(
        "Tool",
        list(TOOLS),
        format_func=TOOLS.__getitem__,
        horizontal=True,
        key=state.widget_key("correct", "tool"),
    )
    size = tcols[1].slider("Brush size (px)", 1, 40, 6, key=state.widget_key("correct", "brush-size"))
    threshold = tcols[2].slider(
        "Grow threshold", 0.05, 0.95, 0.5, 0.05, key=state.widget_key("correct", "grow")
    )
    if tool == "grow" and view.probability is None:
        st.info("Grow from probability needs a prediction of this scene: run one on the Predict page.")
    drawing_mode = {"brush": "freedraw", "eraser": "freedraw", "grow": "point", "grabcut": "polygon"}[tool]
    result = st_canvas(
        background_image=canvas.background(view.rgb, tile_mask, scale),
        drawing_mode=drawing_mode,
        stroke_width=size * scale if tool in ("brush", "eraser") else 2,
        stroke_color={"eraser": "#1e90ff", "grabcut": "#ffd400"}.get(tool, "#ff3b30"),
        fill_color="rgba(255, 212, 0, 0.3)",
        point_display_radius=max(3, scale),
        width=w * scale,
        height=h * scale,
        return_image_data=True,
        key=f"correct.canvas.{scene_id}.{tile}.{index}.{tool}.{state.drawing_round(scene_id, 'canvas')}",
    )
    marks = canvas.drawn_region(result.image_data if result is not None else None, (h, w), scale)
    if st.button("Apply to mask", disabled=not marks.any(), key=state.widget_key("correct", "apply")):
        try:
            if tool in ("brush", "eraser"):
                count = session.edit(scene_region(window, marks), "add" if tool == "brush" else "erase")
            elif tool == "grow":
                if view.probability is None:
                    raise ScarpError("this scene has no prediction to grow from")
                grown = np.zeros((h, w), bool)
                for seed in api.seeds(marks):
                    grown |= api.grow_from_probability(view.probability, seed, threshold)
                count = session.edit(scene_region(window, grown), "add")
            else:
                count = session.edit(scene_region(window, api.grabcut(view.rgb, marks)), "add")
        except ScarpError as exc:
            st.error(str(exc))
        else:
            edited(count, "canvas")
            st.rerun()

# --- history: versions, what each changed, revert ----------------------------------------------------------
with history_tab:
    history = api.mask_history(workspace, scene_id)
    if not history:
        st.info("No mask versions yet: run a prediction, or save an edit.")
    else:
        rows = [
            {
                "version": c.version.id,
                "parent": c.version.parent_id,
                "source": c.version.source,
                "author": c.version.author,
                "note": c.version.note,
                "created": c.version.created,
                "added px": c.added_px,
                "removed px": c.removed_px,
                "added m²": c.added_m2,
                "removed m²": c.removed_m2,
            }
            for c in reversed(history)
        ]
        newest = history[-1]
        author = f", by {newest.version.author}" if newest.version.author else ""
        count = f"{len(history)} version{'s' if len(history) > 1 else ''}"
        st.caption(
            f"{count}; the latest is version {newest.version.id} ({newest.version.source}{author}): "
            f"+{newest.added_px:,} / −{newest.removed_px:,} px"
            + (f" · “{newest.version.note}”" if newest.version.note else "")
        )
        area = st.column_config.NumberColumn(format="%.0f")
        st.dataframe(
            pd.DataFrame(rows),
            hide_index=True,
            width="stretch",
            column_config={"added m²": area, "removed m²": area},
        )
        older = [c.version.id for c in history if latest is None or c.version.id != latest.id]
        if older:
            rcols = st.columns([2, 1], vertical_alignment="bottom")
            target = rcols[0].selectbox(
                "Revert to version", older[::-1], key=state.widget_key("correct", "revert-to")
            )
            clicked = rcols[1].button("Revert", key=state.widget_key("correct", "revert"))
            if clicked and unsigned:
                st.error(f"Not reverted: {unsigned}")
            elif clicked:
                sessions = state.edit_sessions()  # before the write: after it, no st.session_state access
                try:
                    saved = api.revert_mask(
                        workspace, scene_id, target, latest.id if latest else None, reviewer
                    )
                except ScarpError as exc:
                    st.error(f"Not reverted: {exc}")
                else:
                    sessions.pop(scene_id, None)
                    st.success(f"Version {saved.id} restores version {target}.")

# --- review queue: tiles ranked by uncertainty or disagreement ------------------------------------------
with queue_tab:
    predictions = api.list_predictions(workspace, scene_id)
    qcols = st.columns(3, vertical_alignment="bottom")
    method = qcols[0].selectbox(
        "Rank by",
        ["entropy", "disagreement"],
        format_func={"entropy": "Model uncertainty", "disagreement": "Two models' disagreement"}.__getitem__,
        key=state.widget_key("correct", "queue-method"),
    )
    queue_tile = qcols[1].selectbox(
        "Queue tile size", TILE_SIZES, key=state.widget_key("correct", "queue-tile")
    )
    needed = 2 if method == "disagreement" else 1
    if qcols[2].button(
        "Build queue", disabled=len(predictions) < needed, key=state.widget_key("correct", "queue-build")
    ):
        try:
            api.build_review_queue(workspace, scene_id, method, queue_tile)
        except ScarpError as exc:
            st.error(str(exc))
    if len(predictions) < needed:
        st.caption(f"Needs {needed} prediction{'s' if needed > 1 else ''} of this scene.")
    progress = api.review_progress(workspace, [scene_id])
    if progress["total"]:
        done = progress["total"] - progress["todo"]
        st.progress(done / progress["total"], text=f"{done}/{progress['total']} reviewed · " + ", ".join(
            f"{progress[s]} {s}" for s in ("accepted", "corrected", "rejected")
        ))  # fmt: skip
        current_id = state.queue_item()
        items = {i.id: i for i in api.review_items(workspace, [scene_id])}
        if current_id not in items:
            first = api.next_review_item(workspace, None, [scene_id], status="todo")
            current_id = (first or next(iter(items.values()))).id
            state.set_queue_item(current_id)
        item = items[current_id]
        st.write(
            f"**Tile at rows {item.row}–{item.row + item.height}, "
            f"columns {item.col}–{item.col + item.width}** · "
            f"score {item.score:.3f} · status **{item.status}**"
            + (f" ({item.reviewer})" if item.reviewer else "")
        )
        ncols = st.columns(6)
        moves = (
            (ncols[0], "◀ Previous", api.previous_review_item),
            (ncols[1], "Next ▶", api.next_review_item),
        )
        for col, label, move in moves:
            if col.button(label, key=state.widget_key("correct", "queue", label)):
                found = move(workspace, current_id, [scene_id])
                if found is not None:
                    state.set_queue_item(found.id)
                    st.rerun()
        for col, (status, label) in zip(ncols[2:5], STATUS_LABELS.items(), strict=True):
            clicked = col.button(label, key=state.widget_key("correct", "status", status))
            if clicked and unsigned:
                st.error(f"Not marked {status}: {unsigned}")
            elif clicked:
                api.set_review_status(workspace, current_id, status, reviewer)
                following = api.next_review_item(workspace, current_id, [scene_id], status="todo")
                state.set_queue_item(following.id if following else current_id)
                st.rerun()
        ncols[5].button(
            "Edit this tile", on_click=open_tile, args=(item,), key=state.widget_key("correct", "queue-edit")
        )
    else:
        st.info("No queue for this scene yet: build one to work through its tiles, most uncertain first.")
