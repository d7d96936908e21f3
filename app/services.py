"""Long-lived handles and caches shared by every page of a Streamlit session."""

from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from engine import api

if TYPE_CHECKING:
    import numpy as np


@st.cache_resource
def workspace():
    """One workspace connection per server process; it is safe across sessions and threads."""
    return api.open_workspace()


@st.cache_data(max_entries=256, show_spinner=False)
def thumbnail(
    root: str, scene_id: int, checksum: str, bands: str | tuple[int, ...], low: float, high: float
) -> np.ndarray:
    """Keyed by root and checksum too: ids restart in every workspace and may be reused after a delete."""
    return api.scene_thumbnail(workspace(), scene_id, bands=bands, low=low, high=high)


@st.cache_data(ttl=60, show_spinner=False)
def model_choices(root: str) -> list[api.ModelChoice]:
    """Cached because listing the architectures imports torch; a minute is fresh enough for new models."""
    return api.model_choices(workspace())


@st.cache_data(show_spinner="Preparing the map layers…", max_entries=8)
def review_layers(
    root: str, scene_id: int, prediction_id: int | None, mask_id: int | None, links: tuple, max_side: int
) -> api.ReviewLayers:
    """Keyed by concrete ids (and the links), never "latest", so a new save is never hidden by the cache."""
    return api.review_layers(
        workspace(), scene_id, prediction_id=prediction_id, mask_version_id=mask_id, max_side=max_side
    )
