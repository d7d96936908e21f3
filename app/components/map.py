"""The review map: a folium map of a scene's overlays and landslide outlines, served with local Leaflet.

folium points at Leaflet on a CDN by default, and the map stays blank without internet; here the map
loads Leaflet from `/app/static/leaflet/` (copied there by `make setup`, served by Streamlit's static
serving; under `server.baseUrlPath` when one is set), and nothing else from outside. streamlit-folium
loads the same `default_js`/`default_css` links in its component, so the local files are used in the
app too. Styling and field choices are plain functions so they are tested without a browser.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import folium
from branca.element import MacroElement
from jinja2 import Template
from streamlit import config as st_config

from engine.api import ReviewLayers

STATIC_ROOT = Path(__file__).resolve().parents[1] / "static"
LEAFLET_JS = [("leaflet", "leaflet/leaflet.js")]  # under /app/static/ (see static_url)
LEAFLET_CSS = [("leaflet_css", "leaflet/leaflet.css")]
DRAW_JS = [("leaflet_draw_js", "leaflet-draw/leaflet.draw.js")]
DRAW_CSS = [("leaflet_draw_css", "leaflet-draw/leaflet.draw.css")]
WORKING_COLOUR = "#ff3b30"  # the unsaved mask on the Correct page

DEFAULT_OPACITY = {
    "scene": 1.0,
    "pre_event": 1.0,
    "hillshade": 0.6,
    "slope": 0.6,
    "probability": 0.7,
    "outlines": 1.0,
    "disagreement": 0.85,
}
LAYER_TITLES = {
    "scene": "Scene",
    "pre_event": "Pre-event image",
    "hillshade": "Hillshade",
    "slope": "Slope",
    "probability": "Landslide probability",
    "outlines": "Landslide outlines",
    "disagreement": "Disagreement",
}
SHOWN_AT_START = {
    "scene",
    "probability",
    "outlines",
    "disagreement",
}  # linked layers would hide the scene underneath
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


def static_url(path: str, base_url_path: str | None = None) -> str:
    """The absolute URL path of a file in app/static. Behind a proxy that serves Scarp under a path
    (`--server.baseUrlPath scarp`), Streamlit serves static files under it too, and the map's iframe
    must ask there: `/scarp/app/static/...`."""
    if base_url_path is None:
        base_url_path = str(st_config.get_option("server.baseUrlPath") or "")
    base = base_url_path.strip("/")
    return f"/{base}/app/static/{path}" if base else f"/app/static/{path}"


def _links(links: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, static_url(path)) for name, path in links]


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


@dataclass(frozen=True)
class Swipe:
    """Two overlays shown side by side, split by a slider the viewer drags; `replaces` names the
    review layers the pair stands in for (they are not drawn on their own)."""

    left: Any  # engine.display.Overlay
    left_label: str
    right: Any
    right_label: str
    replaces: frozenset[str]


def pre_post_swipe(layers: ReviewLayers) -> Swipe | None:
    if "pre_event" not in layers.layers:
        return None
    return Swipe(
        layers.layers["pre_event"], "Pre-event", layers.scene, "Post-event", frozenset({"scene", "pre_event"})
    )


def two_model_swipe(layers: ReviewLayers, other: ReviewLayers) -> Swipe | None:
    if layers.probability is None or other.probability is None:
        return None
    return Swipe(
        layers.probability, layers.model or "prediction", other.probability, other.model or "prediction",
        frozenset({"probability"}),
    )  # fmt: skip


class _SwipeControl(MacroElement):
    """A full-height divider with a handle; everything left of it shows the left pane, right of it the
    right pane. Panes are clipped in layer coordinates, re-clipped on every pan and zoom. No plugin: the
    script is inline, so it works offline."""

    _template = Template(
        """{% macro script(this, kwargs) %}
        (function (map) {
            var left = map.getPane({{ this.left_pane|tojson }});
            var right = map.getPane({{ this.right_pane|tojson }});
            var box = L.DomUtil.create("div", "scarp-swipe", map.getContainer());
            var line = L.DomUtil.create("div", "scarp-swipe-line", box);
            var input = L.DomUtil.create("input", "scarp-swipe-range", box);
            input.type = "range"; input.min = 0; input.max = 1; input.step = "any"; input.value = 0.5;
            input.setAttribute("aria-label", "Swipe between the two images");
            var leftTag = L.DomUtil.create("div", "scarp-swipe-tag", box);
            var rightTag = L.DomUtil.create("div", "scarp-swipe-tag", box);
            leftTag.textContent = "◀ " + {{ this.left_label|tojson }};
            rightTag.textContent = {{ this.right_label|tojson }} + " ▶";
            function clip() {
                var size = map.getSize();
                var nw = map.containerPointToLayerPoint([0, 0]);
                var se = map.containerPointToLayerPoint(size);
                var at = size.x * Number(input.value);
                line.style.left = at + "px";
                leftTag.style.right = (size.x - at + 24) + "px";
                rightTag.style.left = (at + 24) + "px";
                left.style.clip = "rect(" + [nw.y, nw.x + at, se.y, nw.x].join("px,") + "px)";
                right.style.clip = "rect(" + [nw.y, se.x, se.y, nw.x + at].join("px,") + "px)";
            }
            L.DomEvent.disableClickPropagation(box);
            L.DomEvent.on(input, "mousedown touchstart pointerdown", L.DomEvent.stopPropagation);
            L.DomEvent.on(input, "mouseenter", function () { map.dragging.disable(); });
            L.DomEvent.on(input, "mouseleave", function () { map.dragging.enable(); });
            L.DomEvent.on(input, "input change", clip);
            map.on("move zoom resize viewreset", clip);
            clip();
        })({{ this._parent.get_name() }});
        {% endmacro %}
        {% macro header(this, kwargs) %}
        <style>
        .scarp-swipe {position: absolute; inset: 0; z-index: 800; pointer-events: none;}
        .scarp-swipe-line {position: absolute; top: 0; bottom: 0; width: 3px; margin-left: -1px;
            background: #fff; box-shadow: 0 0 4px rgba(0,0,0,.6);}
        .scarp-swipe-range {position: absolute; top: 50%; left: 0; width: 100%; margin: 0;
            transform: translateY(-50%); background: transparent; -webkit-appearance: none;
            appearance: none; pointer-events: none; outline: none;}
        .scarp-swipe-range::-webkit-slider-runnable-track {background: transparent;}
        .scarp-swipe-range::-moz-range-track {background: transparent;}
        .scarp-swipe-range::-webkit-slider-thumb {-webkit-appearance: none; pointer-events: auto;
            width: 36px; height: 36px; border-radius: 50%; background: #fff; border: 3px solid #0b7285;
            cursor: ew-resize; box-shadow: 0 0 6px rgba(0,0,0,.5);}
        .scarp-swipe-range::-moz-range-thumb {pointer-events: auto; width: 30px; height: 30px;
            border-radius: 50%; background: #fff; border: 3px solid #0b7285; cursor: ew-resize;}
        .scarp-swipe-tag {position: absolute; top: 50%; transform: translateY(-50%); padding: 4px 10px;
            border-radius: 4px; background: rgba(0,0,0,.65); color: #fff; white-space: nowrap;
            font: 600 15px/1.3 sans-serif;}
        </style>
        {% endmacro %}"""
    )

    def __init__(self, left_pane: str, right_pane: str, left_label: str, right_label: str):
        super().__init__()
        self._name = "SwipeControl"
        self.left_pane, self.right_pane = left_pane, right_pane
        self.left_label, self.right_label = left_label, right_label


class _FitControl(MacroElement):
    """A button under the zoom buttons that brings the whole scene back into view."""

    _template = Template(
        """{% macro script(this, kwargs) %}
        (function (map) {
            var control = L.control({position: "topleft"});
            control.onAdd = function () {
                var bar = L.DomUtil.create("div", "leaflet-bar");
                var link = L.DomUtil.create("a", "scarp-fit", bar);
                link.href = "#"; link.title = "Fit to scene"; link.setAttribute("role", "button");
                link.setAttribute("aria-label", "Fit to scene");
                link.innerHTML = '<svg width="16" height="16" viewBox="0 0 16 16" ' +
                    'style="margin-top:7px" fill="none" stroke="#333" stroke-width="2">' +
                    '<path d="M1 5V1h4M11 1h4v4M15 11v4h-4M5 15H1v-4"/></svg>';
                L.DomEvent.disableClickPropagation(bar);
                L.DomEvent.on(link, "click", function (e) {
                    L.DomEvent.preventDefault(e);
                    map.fitBounds({{ this.bounds|tojson }});
                });
                return bar;
            };
            control.addTo(map);
        })({{ this._parent.get_name() }});
        {% endmacro %}"""
    )

    def __init__(self, bounds: list[list[float]]):
        super().__init__()
        self._name = "FitControl"
        self.bounds = bounds


SWIPE_PANES = ("scarp-swipe-left", "scarp-swipe-right")
PROBABILITY_PANE = "scarp-probability"
OUTLINE_PANE = "scarp-outlines"


def _add_swipe(m: folium.Map, swipe: Swipe, opacity: dict[str, float]) -> None:
    """The pair sits above the other overlays (pane z 410), under the probability (415) and the outlines
    (420)."""
    key = "probability" if swipe.replaces == {"probability"} else "scene"
    for pane, overlay, label in zip(
        SWIPE_PANES, (swipe.left, swipe.right), (swipe.left_label, swipe.right_label), strict=True
    ):
        folium.map.CustomPane(pane, z_index=410).add_to(m)
        folium.raster_layers.ImageOverlay(
            image=overlay.data_url,
            bounds=[list(overlay.bounds[0]), list(overlay.bounds[1])],
            opacity=layer_opacity(opacity, key),
            name=f"Swipe: {label}",
            interactive=False,
            pane=pane,
        ).add_to(m)
    m.add_child(_SwipeControl(*SWIPE_PANES, swipe.left_label, swipe.right_label))


def build_map(
    layers: ReviewLayers,
    opacity: dict[str, float] | None = None,
    base_maps: bool = False,
    swipe: Swipe | None = None,
    extra: Callable[[folium.Map], None] | None = None,
) -> folium.Map:
    """The folium map of one scene's review layers, fitted to the scene; with `swipe`, a pair of
    overlays split by a slider."""
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
        zoom_snap=0.25,  # fractional zoom: the scene fills the view instead of half of it
        zoom_delta=0.5,
    )
    m.default_js = _links(LEAFLET_JS)
    m.default_css = _links(LEAFLET_CSS)
    if base_maps and not pixel:
        for name, url, attribution in BASE_MAPS:
            folium.TileLayer(
                url, name=name, attr=attribution, overlay=True, show=name == "OpenStreetMap"
            ).add_to(m)
    overlays = [("scene", layers.scene), *layers.layers.items()]
    if layers.probability is not None:
        overlays.append(("probability", layers.probability))
    if swipe is not None and "probability" not in swipe.replaces:  # the ramp stays above the pair
        folium.map.CustomPane(PROBABILITY_PANE, z_index=415).add_to(m)
    for key, overlay in overlays:
        if swipe is not None and key in swipe.replaces:
            continue
        pane = {"pane": PROBABILITY_PANE} if swipe is not None and key == "probability" else {}
        folium.raster_layers.ImageOverlay(
            image=overlay.data_url,
            bounds=[list(overlay.bounds[0]), list(overlay.bounds[1])],
            opacity=layer_opacity(opacity, key),
            name=LAYER_TITLES.get(key, key),
            show=key in SHOWN_AT_START,
            interactive=False,
            zindex=1,
            **pane,
        ).add_to(m)
    if swipe is not None:
        _add_swipe(m, swipe, opacity)
    if layers.polygons is not None and layers.polygons["features"]:
        fields, aliases = popup_fields(layers.polygons)
        outline = layer_opacity(opacity, "outlines")
        pane = {}
        if swipe is not None:  # above the swipe pair, and clickable
            folium.map.CustomPane(OUTLINE_PANE, z_index=420, pointer_events=True).add_to(m)
            pane = {"pane": OUTLINE_PANE}
        folium.GeoJson(
            layers.polygons,
            name=LAYER_TITLES["outlines"],
            style_function=lambda f: {**outline_style(f), "opacity": outline},
            highlight_function=highlight_style,
            tooltip=folium.GeoJsonTooltip(fields=fields[:2], aliases=aliases[:2]),
            popup=folium.GeoJsonPopup(fields=fields, aliases=aliases),
            **pane,
        ).add_to(m)
    if layers.legend:
        m.add_child(_Legend(layers.legend))
    if extra is not None:  # before the layer control, whose script names every layer defined so far
        extra(m)
    folium.LayerControl(collapsed=False).add_to(m)
    m.add_child(_FitControl([[south, west], [north, east]]))
    m.fit_bounds([[south, west], [north, east]])
    return m


def edit_map(layers: ReviewLayers, working: dict | None) -> folium.Map:
    """The review map for correcting: the working (unsaved) mask's outlines in red instead of the saved
    ones, and Leaflet.draw's polygon and rectangle tools (served locally) to draw what to add or erase."""
    from folium.plugins import Draw

    def add_editing(m: folium.Map) -> None:
        if working is not None and working["features"]:
            folium.GeoJson(
                working,
                name="Working mask",
                style_function=lambda f: {"color": WORKING_COLOUR, "weight": 2, "fillOpacity": 0.15},
                interactive=False,
            ).add_to(m)
        draw = Draw(
            export=False,
            draw_options={
                "polyline": False, "circle": False, "circlemarker": False, "marker": False,
                "polygon": {"allowIntersection": False, "showArea": False},
                "rectangle": {"showArea": False},
            },
            edit_options={"edit": False, "remove": True},
        )  # fmt: skip
        draw.default_js = _links(DRAW_JS)
        draw.default_css = _links(DRAW_CSS)
        draw.add_to(m)

    return build_map(dataclasses.replace(layers, polygons=None), {"probability": 0.5}, extra=add_editing)
