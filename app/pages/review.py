"""Review: a scene on a map with its probability, linked terrain layers and landslide outlines.

Panning and zooming stay in the browser (st_folium returns nothing), so the page reruns only when a
control changes; the layers are cached by the workspace ids they were built from.
"""

from __future__ import annotations

import streamlit as st
from streamlit_folium import st_folium

from app import services, state
from app.components import map as review_map
from engine import api
from engine.errors import ScarpError

MAP_HEIGHT = 640
MAX_SIDE = 1024
LATEST = 0  # the select boxes' "latest" entry; real ids start at 1


@st.cache_data(show_spinner="Preparing the map layers…", max_entries=8)
def _layers(
    root: str, scene_id: int, prediction_id: int | None, mask_id: int | None, links: tuple, max_side: int
) -> api.ReviewLayers:
    """Keyed by concrete ids (and the links), never "latest", so a new save is never hidden by the cache."""
    return api.review_layers(
        services.workspace(),
        scene_id,
        prediction_id=prediction_id,
        mask_version_id=mask_id,
        max_side=max_side,
    )


workspace = services.workspace()
st.title("Review")

choices = api.review_choices(workspace)
if not choices.scenes:
    st.info("No scenes in this workspace yet. Import one on the Scenes page, then run a prediction.")
    st.stop()

scenes = {s.id: s for s in choices.scenes}
if state.review_scene() not in scenes:  # open on the scene predicted last, else the newest one
    state.set_review_scene(api.latest_predicted_scene(workspace) or list(scenes)[-1])
scene_id = st.selectbox(
    "Scene", list(scenes), format_func=lambda i: f"{i} · {scenes[i].name}", key=state.REVIEW_SCENE
)
choices = api.review_choices(workspace, scene_id)
if not choices.predictions and not choices.mask_versions:
    st.info(f"{scenes[scene_id].name} has no prediction yet. Run a prediction on the Predict page.")
    st.stop()

predictions = {p.id: p for p in choices.predictions}
masks = {m.id: m for m in choices.mask_versions}
cols = st.columns(2)
picked_prediction = cols[0].selectbox(
    "Prediction",
    [LATEST, *predictions],
    format_func=lambda i: "latest" if i == LATEST else f"{i} · {predictions[i].model_version}",
    key=f"review.prediction.{scene_id}",
)
picked_mask = cols[1].selectbox(
    "Mask version",
    [LATEST, *masks],
    format_func=lambda i: "latest" if i == LATEST else f"v{i} · {masks[i].source} {masks[i].author}".strip(),
    key=f"review.mask.{scene_id}",
)
mask_id = picked_mask or (choices.mask_versions[0].id if choices.mask_versions else None)
prediction_id = picked_prediction or None
if prediction_id is None and mask_id is not None and masks[mask_id].prediction_id is not None:
    prediction_id = masks[mask_id].prediction_id
if prediction_id is None and choices.predictions:
    prediction_id = choices.predictions[0].id
links = tuple((role, s.id) for role, s in api.scene_links(workspace, scene_id).items())

try:
    layers = _layers(str(workspace.root), scene_id, prediction_id, mask_id, links, MAX_SIDE)
except ScarpError as exc:
    st.error(str(exc))
    st.stop()

with st.expander("Layers", expanded=False):
    keys = ["scene", *layers.layers, *(["probability"] if layers.probability else []), "outlines"]
    slider_cols = st.columns(min(3, len(keys)))
    opacity = {
        key: slider_cols[i % len(slider_cols)].slider(
            f"{review_map.LAYER_TITLES.get(key, key)} opacity",
            0.0,
            1.0,
            review_map.DEFAULT_OPACITY.get(key, 1.0),
            0.05,
            key=f"review.opacity.{key}",
        )
        for i, key in enumerate(keys)
    }
    base_maps = st.toggle(
        "Online base maps (OpenStreetMap, Esri imagery)",
        value=False,
        disabled=layers.crs == "pixel",
        help="Need internet; without it they stay blank. Not available for images without coordinates.",
        key="review.base_maps",
    )

st.caption(layers.caption)
for note in layers.notes:
    st.warning(note)
if layers.probability is None:
    st.info(
        "This scene has no prediction yet, so no probability layer. Run a prediction on the Predict page."
    )
if not review_map.static_assets_present():
    st.warning("Leaflet is not installed under app/static, so the map cannot load offline: run `make setup`.")

st_folium(
    review_map.build_map(layers, opacity, base_maps),
    key=f"review.map.{scene_id}",
    returned_objects=[],
    use_container_width=True,
    height=MAP_HEIGHT,
)
