"""Review: a scene on a map with its probability, linked terrain layers and landslide outlines.

Panning and zooming stay in the browser (st_folium returns nothing), so the page reruns only when a
control changes; the layers are cached by the workspace ids they were built from. Presentation mode
(for demos) hides the sidebar, enlarges the type and the map, and puts the caption in one big line;
the swipe compares the pre- and post-event images, or two predictions, in the map itself.
"""

from __future__ import annotations

import html

import streamlit as st
from streamlit_folium import st_folium

from app import services, state
from app.components import map as review_map
from engine import api
from engine.errors import ScarpError

MAP_HEIGHT = 640
PRESENTATION_MAP_HEIGHT = 720  # under the headline and one row of controls, fills a 1440×900 screen
MAX_SIDE = 1024
LATEST = 0  # the select boxes' "latest" entry; real ids start at 1
SWIPE_OFF, SWIPE_PRE_POST, SWIPE_MODELS = "Off", "Pre / post-event", "Two predictions"
PRESENTATION_CSS = """<style>
[data-testid="stSidebar"], [data-testid="stSidebarCollapsedControl"], header[data-testid="stHeader"] {
    display: none;}
.block-container {padding-top: 1rem; max-width: 100%;}
html, body, [data-testid="stAppViewContainer"] {font-size: 20px;}
.scarp-presentation-caption {font-size: 1.7rem; font-weight: 650; line-height: 1.25; white-space: nowrap;
    overflow: hidden; text-overflow: ellipsis;}
</style>"""


workspace = services.workspace()
# the title (presenting: the one-line headline), then the pickers, the swipe and the presentation switch
head = st.empty()
picker_col, swipe_col, mode_col = st.columns([6, 2, 2], vertical_alignment="bottom")
present = mode_col.toggle(
    "Presentation mode",
    key="review.present",
    help="Full-width map, large type, no sidebar: for showing results to an audience.",
)
if present:
    st.markdown(PRESENTATION_CSS, unsafe_allow_html=True)
else:
    head.title("Review")

choices = api.review_choices(workspace)
if not choices.scenes:
    st.info("No scenes in this workspace yet. Import one on the Scenes page, then run a prediction.")
    st.stop()

# presenting, the pickers and sliders fold away so the map fills the screen
panel = picker_col.expander("Scene, prediction and layers") if present else st.container()
scenes = {s.id: s for s in choices.scenes}
if state.review_scene() not in scenes:  # open on the scene predicted last, else the newest one
    state.set_review_scene(api.latest_predicted_scene(workspace) or list(scenes)[-1])
scene_id = panel.selectbox(
    "Scene", list(scenes), format_func=lambda i: f"{i} · {scenes[i].name}", key=state.REVIEW_SCENE
)
choices = api.review_choices(workspace, scene_id)
if not choices.predictions and not choices.mask_versions:
    st.info(f"{scenes[scene_id].name} has no prediction yet. Run a prediction on the Predict page.")
    st.stop()

predictions = {p.id: p for p in choices.predictions}
masks = {m.id: m for m in choices.mask_versions}
cols = panel.columns(2)
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

swipes = [SWIPE_OFF]
if "pre_event" in dict(links):
    swipes.append(SWIPE_PRE_POST)
if len(predictions) >= 2:
    swipes.append(SWIPE_MODELS)
swipe_kind = swipe_col.selectbox(
    "Swipe",
    swipes,
    key=f"review.swipe.{scene_id}",
    help="Drag the divider on the map to compare the pre- and post-event images, or two predictions. "
    "Link a pre-event scene on the Scenes page, or run a second model, to enable them.",
    disabled=len(swipes) == 1,
)
other_prediction = None
if swipe_kind == SWIPE_MODELS:
    others = [i for i in predictions if i != prediction_id]
    other_prediction = panel.selectbox(
        "Compare with prediction",
        others,
        format_func=lambda i: f"{i} · {predictions[i].model_version}",
        key=f"review.swipe-other.{scene_id}",
    )

try:
    layers = services.review_layers(str(workspace.root), scene_id, prediction_id, mask_id, links, MAX_SIDE)
    swipe = None
    if swipe_kind == SWIPE_PRE_POST:
        swipe = review_map.pre_post_swipe(layers)
    elif swipe_kind == SWIPE_MODELS and other_prediction is not None:
        other = services.review_layers(str(workspace.root), scene_id, other_prediction, None, links, MAX_SIDE)
        swipe = review_map.two_model_swipe(layers, other)
except ScarpError as exc:
    st.error(str(exc))
    st.stop()

with panel if present else st.expander("Layers", expanded=False):
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

if present:
    headline = html.escape(layers.headline)
    head.markdown(f'<div class="scarp-presentation-caption">{headline}</div>', unsafe_allow_html=True)
else:
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
    review_map.build_map(layers, opacity, base_maps, swipe),
    key=f"review.map.{scene_id}",
    returned_objects=[],
    use_container_width=True,
    height=PRESENTATION_MAP_HEIGHT if present else MAP_HEIGHT,
)
