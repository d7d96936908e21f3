"""Scarp's entry script: page config, navigation, the sidebar and the job panel every page shares."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `streamlit run app/Home.py` finds engine/

from app import services, state
from app.components import jobs
from engine import api
from engine.errors import ScarpError

st.set_page_config(page_title="Scarp · landslide mapping", page_icon=":material/landslide:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/scenes.py", title="Scenes", icon=":material/satellite_alt:"),
    st.Page("pages/predict.py", title="Predict", icon=":material/play_circle:"),
    st.Page("pages/review.py", title="Review", icon=":material/map:"),
    st.Page("pages/correct.py", title="Correct", icon=":material/edit:"),
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/models.py", title="Models", icon=":material/inventory_2:"),
    st.Page("pages/export.py", title="Export", icon=":material/download:"),
]
page = st.navigation(PAGES)

workspace = services.workspace()
with st.sidebar:
    st.caption("Workspace")
    st.code(str(workspace.root), language=None)
    name = st.text_input(
        "Reviewer", value=state.reviewer(), key=state.REVIEWER_WIDGET, placeholder="your name"
    )
    state.set_reviewer(name)

if not state.worker_checked():
    try:
        api.ensure_worker(workspace)
    except ScarpError as exc:
        st.sidebar.warning(f"The job worker is not running: {exc}")
    state.mark_worker_checked()

page.run()
jobs.job_panel(workspace)
