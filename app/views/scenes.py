"""Scenes: import (browser upload or a server path), the list with previews and facts, display settings,
auxiliary-layer links, and deletion that never drops reviewed masks without asking."""

from __future__ import annotations

import streamlit as st

from app import access, services, state
from app.components import gate
from engine import api
from engine.errors import ScarpError

CUSTOM = "custom"

workspace = services.workspace()
st.title("Scenes")


def show_import(results: list[api.ImportResult | ScarpError]) -> None:
    """One line per file: imported, already there, or why it was skipped."""
    for item in results:
        if isinstance(item, ScarpError):
            st.warning(f"Skipped {item}")
        elif item.already_present:
            st.info(f"{item.scene.name} is already in the workspace (scene {item.scene.id}).")
        else:
            masks = " with its mask" if item.mask_version is not None else ""
            st.success(f"Imported {item.scene.name}{masks} as scene {item.scene.id}.")


upload_tab, path_tab = st.tabs(["Upload", "Server path"])
with upload_tab:
    files = st.file_uploader(
        "Images (GeoTIFF, PNG, JPG, Landslide4Sense .h5)",
        accept_multiple_files=True,
        key=state.widget_key("scenes", "upload"),
    )
    if st.button("Import uploaded files", disabled=not files, key=state.widget_key("scenes", "upload-go")):
        results: list[api.ImportResult | ScarpError] = []
        for file in files or []:
            try:
                results.append(api.import_upload(workspace, file.name, file.getvalue()))
            except ScarpError as exc:
                results.append(exc)
        show_import(results)
roots = gate.server_import_roots()
with path_tab:
    if roots == ():
        st.info(
            "This shared Scarp imports uploads only. Whoever runs it can name folders to import from"
            ' in .streamlit/secrets.toml: `[scarp] server_import_roots = ["/data/imagery"]`.'
        )
    else:
        path = st.text_input(
            "A file or folder on the server",
            key=state.widget_key("scenes", "path"),
            placeholder=f"{roots[0].rstrip('/')}/post_event.tif" if roots else "/data/iburi/post_event.tif",
            help=None if roots is None else "Files inside " + ", ".join(roots),
        )
        if st.button("Import", key=state.widget_key("scenes", "path-go"), disabled=not path.strip()):
            try:
                show_import(list(api.import_path(workspace, path.strip(), roots=roots)))
            except ScarpError as exc:
                st.error(str(exc))


def facts(info: api.SceneInfo) -> str:
    """Markdown lines: size, bands, CRS, resolution and lon/lat bounds."""
    lines = [
        f"**{info.width} × {info.height} px** · {len(info.bands)} bands ({', '.join(info.bands)})"
        f" · {info.dtype}",
        f"CRS: {info.crs or 'none (pixel coordinates)'}",
    ]
    if info.resolution_m is not None:
        lines.append(f"Resolution: {info.resolution_m[0]:.2f} × {info.resolution_m[1]:.2f} m")
    if info.lonlat_bounds is not None:
        w, s, e, n = info.lonlat_bounds
        lines.append(f"Bounds (lon/lat): {w:.4f}, {s:.4f} → {e:.4f}, {n:.4f}")
    return "  \n".join(lines)


def display_settings(scene: api.Scene, info: api.SceneInfo) -> state.DisplaySettings:
    """Band composite and stretch, kept per scene for this session."""
    current = state.display(scene.id)
    options = [*api.band_presets(), CUSTOM]
    chosen = current.bands if isinstance(current.bands, str) else CUSTOM
    preset = st.selectbox(
        "Bands", options, index=options.index(chosen), key=state.widget_key("scenes", "preset", scene.id)
    )
    bands: str | tuple[int, int, int] = preset
    if preset == CUSTOM:
        picked = current.bands if isinstance(current.bands, tuple) else (0, 0, 0)[: len(info.bands)]
        indices = list(range(len(info.bands)))
        cols = st.columns(3)
        bands = tuple(  # type: ignore[assignment]
            cols[i].selectbox(
                colour,
                indices,
                index=min(picked[i] if i < len(picked) else 0, len(indices) - 1),
                format_func=lambda b: info.bands[b] if b < len(info.bands) else str(b),
                key=state.widget_key("scenes", "band", colour, scene.id),
            )
            for i, colour in enumerate(("Red", "Green", "Blue"))
        )
    low, high = st.slider(
        "Stretch (percentiles)",
        0.0,
        100.0,
        (current.low, current.high),
        step=0.5,
        key=state.widget_key("scenes", "stretch", scene.id),
    )
    if high <= low:
        high = min(100.0, low + 0.5)
    settings = state.DisplaySettings(bands, float(low), float(high))
    state.set_display(scene.id, settings)
    return settings


def links_editor(scene: api.Scene, scenes: list[api.Scene]) -> None:
    """One select per role; choosing changes the link at once (it is a pointer, not user work)."""
    current = {role: linked.id for role, linked in api.scene_links(workspace, scene.id).items()}
    names = {s.id: f"{s.id} · {s.name}" for s in scenes if s.id != scene.id}
    options: list[int | None] = [None, *names]
    cols = st.columns(len(api.LINK_ROLES))
    for col, role in zip(cols, api.LINK_ROLES, strict=True):
        now = current.get(role)
        picked = col.selectbox(
            role.replace("_", " "),
            options,
            index=options.index(now) if now in options else 0,
            format_func=lambda i: "—" if i is None else names[i],
            key=state.widget_key("scenes", "link", role, scene.id),
        )
        if picked == now:
            continue
        try:
            if picked is None:
                api.unlink_scene(workspace, scene.id, role)
            else:
                api.link_scene(workspace, scene.id, role, picked)
        except ScarpError as exc:
            st.error(str(exc))


def delete_controls(scene: api.Scene) -> None:
    """Two steps; a scene with mask versions names them and asks to delete them too, explicitly."""
    if state.confirm_delete() != scene.id:
        if st.button("Delete…", key=state.widget_key("scenes", "delete", scene.id)):
            state.set_confirm_delete(scene.id)
            st.rerun()
        return
    masks = api.mask_version_count(workspace, scene.id)
    if masks:
        st.warning(
            f"Scene {scene.id} has {masks} mask version{'s' if masks != 1 else ''} (reviewed work). "
            "Deleting the scene deletes them too."
        )
        label = f"Delete scene and its {masks} mask version{'s' if masks != 1 else ''}"
    else:
        st.warning(f"Delete scene {scene.id} ({scene.name}) and its predictions?")
        label = "Yes, delete"
    yes, no = st.columns(2)
    if yes.button(label, type="primary", key=state.widget_key("scenes", "delete-yes", scene.id)):
        if unsigned := access.reviewer_problem(state.reviewer()):
            st.error(f"Deleting a scene needs a reviewer name: {unsigned}")
            return
        try:
            api.delete_scene(workspace, scene.id, drop_masks=masks > 0, author=state.reviewer())
            state.set_confirm_delete(None)
            st.rerun()
        except ScarpError as exc:
            st.error(str(exc))
    if no.button("Keep it", key=state.widget_key("scenes", "delete-no", scene.id)):
        state.set_confirm_delete(None)
        st.rerun()


scenes = api.list_scenes(workspace)
st.subheader(f"In the workspace ({len(scenes)})")
if not scenes:
    st.info("No scenes yet: upload images or give a server path above.")
for scene in scenes:
    info = api.scene_info(scene)
    with st.container(border=True):
        left, right = st.columns([1, 3])
        with right:
            st.markdown(f"#### {scene.id} · {scene.name}")
            st.markdown(facts(info))
            with st.expander("Display"):
                settings = display_settings(scene, info)
            with st.expander("Linked layers"):
                links_editor(scene, scenes)
            delete_controls(scene)
        with left:
            try:
                image = services.thumbnail(
                    str(workspace.root), scene.id, scene.checksum, settings.bands, settings.low, settings.high
                )
                st.image(image, width="stretch")
            except ScarpError as exc:
                st.warning(str(exc))
            except ValueError as exc:  # an unknown preset from an older session
                st.warning(f"Cannot draw this preview: {exc}")
