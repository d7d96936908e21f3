"""The review map: a folium map of a scene's overlays and landslide outlines, served with local Leaflet.

folium points at Leaflet on a CDN by default, and the map stays blank without internet; here the map
loads Leaflet from `/app/static/leaflet/` (copied there by `make setup`, served by Streamlit's static
serving), and nothing else from outside. streamlit-folium loads the same `default_js`/`default_css`
links in its component, so the local files are used in the app too. Styling and field choices are
plain functions so they are tested without a browser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import folium
from branca.element import MacroElement
from jinja2 import Template

from engine.api import ReviewLayers

STATIC_ROOT = Path(__file__).resolve().parents[1] / "static"
LEAFLET_JS = [("leaflet", "/app/static/leaflet/leaflet.js")]
LEAFLET_CSS = [("leaflet_css", "/app/static/leaflet/leaflet.css")]

DEFAULT_OPACITY = {
    "scene": 1.0,
    "pre_event": 1.0,
    "hillshade": 0.6,
    "slope": 0.6,
    "probability": 0.7,
    "outlines": 1.0,
}
LAYER_TITLES = {
    "scene": "Scene",
    "pre_event": "Pre-event image",
    "hillshade": "Hillshade",
    "slope": "Slope",
    "probability": "Landslide probability",
    "outlines": "Landslide outlines",
}
SHOWN_AT_START = {"scene", "probability", "outlines"}  # linked layers would hide the scene underneath
OUTLINE_COLOUR = "#00e5ff"  # cyan reads against both vegetation and the red probability ramp
POPUP_FIELDS = (
    ("id", "Landslide"),
    ("area_m2", "Area (m²)"),
    ("pixels", "Pixels"),
    ("mean_probability", "Mean probability"),
    ("max_probability", "Max probability"),
    ("mean_slope", "Mean slope (°)"),
)
BASE_MAPS = (
    ("OpenStreetMap", "https://tile.openstreetmap.org/{z}/{x}/{y}.png", "© OpenStreetMap contributors"),
    (
        "Esri World Imagery",
        "https://server.arcgisonline.com/ArcGIS/rest/services/World_Imagery/MapServer/tile/{z}/{y}/{x}",
        "Tiles © Esri, Maxar, Earthstar Geographics",
    ),
)


def static_assets_present(root: Path = STATIC_ROOT) -> bool:
    """False until `make setup` has copied Leaflet: the page warns instead of showing a blank map."""
    return (root / "leaflet" / "leaflet.js").is_file() and (root / "leaflet" / "leaflet.css").is_file()


def outline_style(feature: dict[str, Any]) -> dict[str, Any]:
    return {"color": OUTLINE_COLOUR, "weight": 2, "fill": True, "fillOpacity": 0.0}


def highlight_style(feature: dict[str, Any]) -> dict[str, Any]:
    return {"color": "#ffffff", "weight": 3, "fillOpacity": 0.15}


def popup_fields(polygons: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Fields (and labels) worth showing: those some feature has a value for, so pixel scenes skip area."""
    present = {
        k for f in polygons.get("features", []) for k, v in f.get("properties", {}).items() if v is not None
    }
    chosen = [(k, label) for k, label in POPUP_FIELDS if k in present]
    return [k for k, _ in chosen], [label for _, label in chosen]


def layer_opacity(opacity: dict[str, float], key: str) -> float:
    return float(min(1.0, max(0.0, opacity.get(key, DEFAULT_OPACITY.get(key, 1.0)))))


class _Legend(MacroElement):
    """A Leaflet control holding fixed HTML; part of the map script, so st_folium renders it too."""

    _template = Template(
        """{% macro script(this, kwargs) %}
        var {{ this.get_name() }} = L.control({position: "bottomright"});
        {{ this.get_name() }}.onAdd = function (map) {
            var div = L.DomUtil.create("div", "scarp-legend-control");
            div.innerHTML = {{ this.html|tojson }};
            return div;
        };
        {{ this.get_name() }}.addTo({{ this._parent.get_name() }});
        {% endmacro %}"""
    )

    def __init__(self, html: str):
        super().__init__()
        self._name = "Legend"
        self.html = html


def build_map(
    layers: ReviewLayers, opacity: dict[str, float] | None = None, base_maps: bool = False
) -> folium.Map:
    """The folium map of one scene's review layers, fitted to the scene."""
    opacity = opacity or {}
    pixel = layers.crs == "pixel"
    (south, west), (north, east) = layers.bounds
    m = folium.Map(
        location=[(south + north) / 2, (west + east) / 2],
        zoom_start=0 if pixel else 12,
        tiles=None,
        crs="Simple" if pixel else "EPSG3857",
        min_zoom=-6 if pixel else 0,
        control_scale=not pixel,
        prefer_canvas=False,
    )
    m.default_js = list(LEAFLET_JS)
    m.default_css = list(LEAFLET_CSS)
    if base_maps and not pixel:
        for name, url, attribution in BASE_MAPS:
            folium.TileLayer(
                url, name=name, attr=attribution, overlay=True, show=name == "OpenStreetMap"
            ).add_to(m)
    overlays = [("scene", layers.scene), *layers.layers.items()]
    if layers.probability is not None:
        overlays.append(("probability", layers.probability))
    for key, overlay in overlays:
        folium.raster_layers.ImageOverlay(
            image=overlay.data_url,
            bounds=[list(overlay.bounds[0]), list(overlay.bounds[1])],
            opacity=layer_opacity(opacity, key),
            name=LAYER_TITLES.get(key, key),
            show=key in SHOWN_AT_START,
            interactive=False,
            zindex=1,
        ).add_to(m)
    if layers.polygons is not None and layers.polygons["features"]:
        fields, aliases = popup_fields(layers.polygons)
        outline = layer_opacity(opacity, "outlines")
        folium.GeoJson(
            layers.polygons,
            name=LAYER_TITLES["outlines"],
            style_function=lambda f: {**outline_style(f), "opacity": outline},
            highlight_function=highlight_style,
            tooltip=folium.GeoJsonTooltip(fields=fields[:2], aliases=aliases[:2]),
            popup=folium.GeoJsonPopup(fields=fields, aliases=aliases),
        ).add_to(m)
    if layers.legend:
        m.add_child(_Legend(layers.legend))
    folium.LayerControl(collapsed=False).add_to(m)
    m.fit_bounds([[south, west], [north, east]])
    return m
