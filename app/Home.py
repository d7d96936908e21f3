"""Scarp's entry page. For now a placeholder over the workspace; the map pages come next."""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `streamlit run app/Home.py` finds engine/

from app import services

st.set_page_config(page_title="Scarp · landslide mapping", page_icon="⛰️", layout="wide")
st.title("Scarp")
st.caption("Landslide mapping studio: segment imagery, review on a map, correct masks, retrain.")

workspace = services.workspace()
summary = workspace.summary()
st.subheader("Workspace")
st.code(str(workspace.root), language=None)
cols = st.columns(4)
cols[0].metric("Scenes", summary["scenes"])
cols[1].metric("Mask versions", summary["mask_versions"])
cols[2].metric("Models", summary["models"])
cols[3].metric("Jobs running", summary["jobs_running"])
if summary["scenes"] == 0:
    st.info("No scenes yet. Import one from a shell: `.venv/bin/python -m engine import PATH`.")
