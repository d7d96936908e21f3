"""Predict: queue landslide mapping of one or more scenes; the worker does the work, the page never waits."""

from __future__ import annotations

import streamlit as st

from app import services, state
from engine import api
from engine.errors import ScarpError

workspace = services.workspace()
st.title("Predict")

scenes = api.list_scenes(workspace)
if not scenes:
    st.info("No scenes to map yet. Import one on the Scenes page first.")
    st.stop()

names = {s.id: f"{s.id} · {s.name}" for s in scenes}
chosen = st.multiselect(
    "Scenes", list(names), format_func=names.__getitem__, key=state.widget_key("predict", "scenes")
)
choices = {c.spec: c for c in services.model_choices(str(workspace.root))}
spec = st.selectbox(
    "Model", list(choices), format_func=lambda s: choices[s].label, key=state.widget_key("predict", "model")
)
model = choices[spec]
if model.kind == "random":
    st.warning("Random weights map nothing useful: use them only to check the pipeline.")
elif model.kind == "default" and "none shipped" in model.label:
    st.warning("No default model is shipped yet: a job with it will fail with that message.")

defaults = api.prediction_defaults()
cols = st.columns(4)
tile = cols[0].number_input(
    "Tile size (px)", 64, 4096, int(defaults["tile"]), step=64, key=state.widget_key("predict", "tile")
)
overlap = cols[1].number_input(
    "Overlap (px)", 0, 1024, int(defaults["overlap"]), step=16, key=state.widget_key("predict", "overlap")
)
tta = cols[2].checkbox(
    "Test-time augmentation (flips)",
    value=bool(defaults["tta"]),
    key=state.widget_key("predict", "tta"),
    help="Averages predictions over flips: about 4× slower, often a little more accurate.",
)
crf = cols[3].checkbox(
    "DenseCRF refinement",
    value=bool(defaults["crf"]),
    key=state.widget_key("predict", "crf"),
    help="Snaps landslide outlines to colour edges with a dense CRF: about 2× slower.",
)

if st.button("Queue prediction", type="primary", disabled=not chosen, key=state.widget_key("predict", "go")):
    for scene_id in chosen:
        try:
            job = api.submit_prediction(
                workspace,
                scene_id,
                model=model.spec,
                tile=int(tile),
                overlap=int(overlap),
                tta=bool(tta),
                crf=bool(crf),
            )
            st.success(f"Queued job {job.id}: {names[scene_id]} with {model.label}.")
        except ScarpError as exc:
            st.error(f"{names[scene_id]}: {exc}")
