"""Scarp's entry script: page config, navigation, the sidebar and the job panel every page shares."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `streamlit run app/Home.py` finds engine/

from app import access, services, state
from app.components import gate, jobs
from engine import api
from engine.errors import ScarpError

ICON = Path(__file__).with_name("icon.png")  # a file, not a Material icon: those load from the internet
st.set_page_config(page_title="Scarp · landslide mapping", page_icon=str(ICON), layout="wide")

PAGES = [
    st.Page("views/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("views/scenes.py", title="Scenes", icon=":material/satellite_alt:"),
    st.Page("views/predict.py", title="Predict", icon=":material/play_circle:"),
    st.Page("views/review.py", title="Review", icon=":material/map:"),
    st.Page("views/correct.py", title="Correct", icon=":material/edit:"),
    st.Page("views/train.py", title="Train", icon=":material/model_training:"),
    st.Page("views/models.py", title="Models", icon=":material/inventory_2:"),
    st.Page("views/export.py", title="Export", icon=":material/download:"),
]
identity = gate.require_access(PAGES)  # sign-in and/or password, when secrets.toml asks for them
page = st.navigation(PAGES)

workspace = services.workspace()
with st.sidebar:
    st.caption("Workspace")
    st.code(str(workspace.root), language=None)
    if identity:  # signed in: saves carry the identity provider's name, not a typed one
        st.text_input("Reviewer", value=identity, disabled=True, help="From your sign-in")
        state.set_reviewer(identity)
    else:
        name = st.text_input(
            "Reviewer", value=state.reviewer(), key=state.REVIEWER_WIDGET, placeholder="your name"
        )
        state.set_reviewer(name)
        problem = access.reviewer_problem(name) if name.strip() else None
        if problem:
            st.warning(f"Saves are refused until the name is fixed: {problem}")
    gate.sidebar_controls(identity)

if not state.worker_checked():
    try:
        api.ensure_worker(workspace)
    except ScarpError as exc:
        st.sidebar.warning(f"The job worker is not running: {exc}")
    state.mark_worker_checked()

page.run()
jobs.job_panel(workspace)
