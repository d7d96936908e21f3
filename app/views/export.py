"""Export: a scene's mask version as files for a GIS, a spreadsheet or a report.

The files are built once per scene, mask version and links (the slope feeds a column), with a spinner,
and then come from the cache, so a large scene is slow only the first time.
"""

from __future__ import annotations

import io

import pandas as pd
import streamlit as st

from app import services, state
from engine import api
from engine.errors import ScarpError


@st.cache_data(show_spinner="Building the export files (mask, inventory, map)…", max_entries=4)
def _files(root: str, scene_id: int, mask_id: int, links: tuple) -> dict[str, api.Download]:
    """Keyed by concrete ids: a saved mask version never changes."""
    return {
        fmt: api.export_scene_bytes(services.workspace(), scene_id, fmt, mask_version_id=mask_id)
        for fmt in api.EXPORT_FORMATS
    }


def _area(inventory: pd.DataFrame) -> str:
    areas = inventory["area_m2"].dropna()
    if len(inventory) and areas.empty:
        return "— (pixel coordinates)"
    total = float(areas.sum())
    return f"{total / 1e6:.3f} km²" if total >= 1e5 else f"{total:,.0f} m²"


def _size(data: bytes) -> str:
    n = len(data)
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB" if n >= 1e3 else f"{n} bytes"


workspace = services.workspace()
st.title("Export")
st.caption("Download a scene's landslide mapping: the mask, the landslide inventory, a summary and a map.")

scenes = {s.id: s for s in api.list_scenes(workspace)}
if not scenes:
    st.info("No scenes to export yet. Import one on the Scenes page, then map it on the Predict page.")
    st.stop()
latest = api.latest_predicted_scene(workspace)
scene_col, mask_col = st.columns(2)
scene_id = scene_col.selectbox(
    "Scene", list(scenes), index=list(scenes).index(latest) if latest in scenes else 0,
    format_func=lambda i: f"{i} · {scenes[i].name}", key=state.widget_key("export", "scene"),
)  # fmt: skip
masks = {m.id: m for m in api.review_choices(workspace, scene_id).mask_versions}  # newest first
if not masks:
    st.info(f"{scenes[scene_id].name} has no mask yet. Run a prediction on the Predict page, then export it.")
    st.stop()
newest = next(iter(masks))


def mask_label(mask_id: int) -> str:
    label = f"v{mask_id} · {masks[mask_id].source} {masks[mask_id].author}".strip()
    return f"{label} (latest)" if mask_id == newest else label


mask_id = mask_col.selectbox(
    "Mask version", list(masks), format_func=mask_label, key=state.widget_key("export", "mask", scene_id)
)
links = tuple((role, s.id) for role, s in api.scene_links(workspace, scene_id).items())
try:
    files = _files(str(workspace.root), scene_id, mask_id, links)
except ScarpError as exc:
    st.error(str(exc))
    st.stop()

files_col, preview_col = st.columns([1, 2])
inventory = pd.read_csv(io.BytesIO(files[".csv"].data))
count_col, area_col = files_col.columns(2)
count_col.metric("Landslides", len(inventory))
area_col.metric("Total area", _area(inventory))
for fmt, what in api.EXPORT_FORMATS.items():
    download = files[fmt]
    files_col.download_button(
        what[0].upper() + what[1:],
        download.data,
        file_name=download.filename,
        mime=download.mime,
        on_click="ignore",
        icon=":material/download:",
        width="stretch",
        key=state.widget_key("export", "download", fmt.lstrip(".")),
    )
    files_col.caption(f"{download.filename} · {_size(download.data)}")
preview_col.image(files[".png"].data, caption=files[".png"].filename)
