"""Models: the workspace's model versions with their lineage, training data and scores; set the default,
rename, delete (each signed with the reviewer name, in the activity list); and see where two
predictions of one scene disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st
from streamlit_folium import st_folium

from app import access, services, state
from app.components import map as review_map
from engine import api
from engine.errors import ScarpError

COLUMNS = [
    "Default", "Name", "Source", "Architecture", "Parent", "Val. mIoU (%)", "Before → after", "Created (UTC)",
    "Training data",
]  # fmt: skip


def _miou(metrics: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """(before, after) validation mIoU: a trained version has both, a registered checkpoint only its own."""
    metrics = metrics or {}
    if "after" in metrics:
        return metrics["before"].get("miou"), metrics["after"].get("miou")
    return None, metrics.get("miou")


def _before_after(before: float | None, after: float | None) -> str | None:
    if before is None or after is None:
        return None
    return f"{100 * before:.2f} → {100 * after:.2f} ({100 * (after - before):+.2f})"


def _training_data(snapshot: dict[str, Any] | None) -> str | None:
    """The snapshot in one line: scenes with their mask versions, the labelled folder, the mode."""
    snapshot = snapshot or {}
    parts = []
    if masks := snapshot.get("mask_version_ids"):
        parts.append("scenes " + ", ".join(f"{scene} (mask v{mask})" for scene, mask in masks.items()))
    if dataset := snapshot.get("dataset") or snapshot.get("labeled"):
        parts.append(f"dataset {dataset}")
    if mode := snapshot.get("mode"):
        parts.append(f"mode {mode}")
    return " · ".join(parts) or None


@st.cache_data(show_spinner="Comparing the two predictions…", max_entries=8)
def _compare(root: str, prediction_a: int, prediction_b: int) -> api.PredictionComparison:
    """Keyed by prediction ids: a stored prediction never changes."""
    return api.compare_predictions(services.workspace(), prediction_a, prediction_b)


def _act(where: Any, done: str, change: Callable[..., object], *args: object) -> None:
    """Apply a registry change signed with the reviewer name: on success a toast and a fresh page, else
    the engine's one-line reason (or why the change needs a name first)."""
    if unsigned := access.reviewer_problem(state.reviewer()):
        where.error(f"Changing a model needs a reviewer name: {unsigned}")
        return
    try:
        change(workspace, *args, author=state.reviewer())
    except ScarpError as exc:
        where.error(str(exc))
    else:
        st.toast(done)
        st.rerun()


def registry(models: dict[int, Any], default: Any) -> None:
    """The table: workspace versions, then the shipped checkpoints (read-only)."""
    rows = []
    for m in models.values():
        before, after = _miou(m.metrics)
        rows.append({
            "Default": default is not None and default.id == m.id,
            "Name": m.name,
            "Source": "workspace",
            "Architecture": m.architecture,
            "Parent": models[m.parent_id].name if m.parent_id in models else None,
            "Val. mIoU (%)": None if after is None else 100 * after,
            "Before → after": _before_after(before, after),
            "Training data": _training_data(m.training_snapshot),
            "Created (UTC)": m.created,
        })  # fmt: skip
    menu = api.model_choices(workspace, random_weights=False)
    for shipped in api.shipped_models():  # the menu's first entry reads "default (<name>)"
        rows.append({
            "Default": default is None and menu[0].label == f"default ({shipped.name})",
            "Name": shipped.name,
            "Source": "shipped (read-only)",
            "Architecture": shipped.architecture,
            "Val. mIoU (%)": None if shipped.val_miou is None else 100 * shipped.val_miou,
            "Training data": shipped.data,
        })  # fmt: skip
    st.dataframe(
        pd.DataFrame(rows, columns=COLUMNS),
        hide_index=True,
        placeholder="—",
        column_config={
            "Default": st.column_config.CheckboxColumn(help="Predictions with `default` use this model"),
            "Parent": st.column_config.TextColumn(help="The version it was trained from"),
            "Val. mIoU (%)": st.column_config.NumberColumn(format="%.2f", help="On its validation set"),
            "Before → after": st.column_config.TextColumn(help="Its parent's mIoU and its own, same images"),
            "Training data": st.column_config.TextColumn(width="large"),
            "Created (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm"),
        },
    )


def manage(models: dict[int, Any], default: Any) -> None:
    """Set as default, rename, delete (after a confirmation) the chosen version."""
    model = models[
        st.selectbox(
            "Version", list(models), format_func=lambda i: models[i].name,
            key=state.widget_key("models", "version"),
        )
    ]  # fmt: skip
    is_default = default is not None and default.id == model.id
    default_col, rename_col, delete_col = st.columns(3)
    if default_col.button(
        "Set as default",
        disabled=is_default,
        help="It is the default already." if is_default else "Predictions with `default` will use it.",
        key=state.widget_key("models", "set-default", model.id),
    ):
        _act(default_col, f"{model.name} is now the default.", api.set_default_model, model.id)
    with rename_col.form(state.widget_key("models", "rename-form", model.id), clear_on_submit=True):
        new_name = st.text_input(
            "New name", placeholder=model.name, key=state.widget_key("models", "new-name", model.id)
        )
        if st.form_submit_button("Rename", key=state.widget_key("models", "rename", model.id)):
            _act(st, f"Renamed {model.name} to {new_name.strip()}.", api.rename_model, model.id, new_name)
    sure = delete_col.checkbox(
        f"Yes, delete {model.name}",
        help="Its checkpoint file is removed too when it lies in the workspace's models/ folder.",
        key=state.widget_key("models", "confirm-delete", model.id),
    )
    if delete_col.button("Delete", disabled=not sure, key=state.widget_key("models", "delete", model.id)):
        _act(delete_col, f"Deleted {model.name}.", api.delete_model, model.id)


def compare() -> None:
    """Two predictions of one scene: the fraction of pixels whose landslide call differs, and where."""
    scenes = {s.id: s for s in api.list_scenes(workspace)}
    if not scenes:
        st.info("No scenes yet. Import one on the Scenes page and predict it with two models.")
        return
    latest = api.latest_predicted_scene(workspace)
    scene_id = st.selectbox(
        "Scene", list(scenes), index=list(scenes).index(latest) if latest in scenes else 0,
        format_func=lambda i: f"{i} · {scenes[i].name}", key=state.widget_key("models", "compare-scene"),
    )  # fmt: skip
    predictions = {p.id: p for p in api.review_choices(workspace, scene_id).predictions}
    if len(predictions) < 2:
        st.info(
            f"{scenes[scene_id].name} has {len(predictions)} prediction(s): run another model on Predict."
        )
        return

    def label(prediction_id: int) -> str:
        p = predictions[prediction_id]
        return f"{p.id} · {p.model_version} · {p.created:%Y-%m-%d %H:%M}"

    a_col, b_col = st.columns(2)
    a = a_col.selectbox(
        "Prediction A", list(predictions), format_func=label, key=state.widget_key("models", "a", scene_id)
    )
    b = b_col.selectbox(
        "Prediction B", [i for i in predictions if i != a], index=None, format_func=label,
        placeholder="choose a second prediction", key=state.widget_key("models", "b", scene_id),
    )  # fmt: skip
    if b is None:
        return
    try:
        comparison = _compare(str(workspace.root), a, b)
    except ScarpError as exc:
        st.error(str(exc))
        return
    if comparison.disagreement is None:
        st.warning("No pixel is valid in both predictions, so there is nothing to compare.")
        return
    st.metric("Pixels where A and B disagree (at p = 0.5)", f"{100 * comparison.disagreement:.2f} %")
    st_folium(
        review_map.build_map(api.disagreement_layers(workspace, comparison)),
        key=f"models.compare.{a}.{b}",
        returned_objects=[],
        use_container_width=True,
        height=520,
    )


workspace = services.workspace()
st.title("Models")
st.caption("Every model version of this workspace: where it came from, what it learned from, how it scores.")
models = {m.id: m for m in api.list_models(workspace)}
default = api.default_model(workspace)
registry(models, default)
if models:
    st.subheader("Manage a version")
    manage(models, default)
else:
    st.info("No trained versions in this workspace yet. Fine-tune one on the Train page.")
st.subheader("Compare two versions on a scene")
compare()
with st.expander("Activity: deleted scenes, renamed and deleted models, default choices"):
    events = api.activity(workspace)
    if events:
        st.dataframe(
            pd.DataFrame(
                [{"When (UTC)": e.at, "Who": e.author or "—", "What": e.action, "Subject": e.subject,
                  "Detail": e.detail} for e in events]
            ),
            hide_index=True,
            column_config={"When (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")},
        )  # fmt: skip
    else:
        st.caption("Nothing yet.")
