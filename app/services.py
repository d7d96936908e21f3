"""Long-lived handles shared by every page of a Streamlit session."""

from __future__ import annotations

import streamlit as st

from engine import api


@st.cache_resource
def workspace():
    """One workspace connection per server process; it is safe across sessions and threads."""
    return api.open_workspace()
