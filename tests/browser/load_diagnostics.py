"""What a load-benchmark session reports when a step fails: the messages its page sent to the server
around a click (decoded Streamlit BackMsgs: reruns, triggers, changed widgets; websocket openings and
closings), and what the map frames held. They tell a click the browser never sent from one the server
did not act on.
"""

from __future__ import annotations

import time

from tests.browser import harness

PlaywrightError = getattr(harness, "PlaywrightError", Exception)  # absent without Playwright


def watch_websocket(page) -> None:
    """Keep (time, size) of every message the page sends to the server, to tell a click the browser
    never sent from one the server did not act on."""
    page.sent = []
    page.sockets = []  # (time, "open" | "close") of the page's websockets

    def on_socket(socket) -> None:
        page.sockets.append((time.monotonic(), "open"))
        socket.on("framesent", lambda payload: page.sent.append((time.monotonic(), payload)))
        socket.on("close", lambda _: page.sockets.append((time.monotonic(), "close")))

    page.on("websocket", on_socket)


def _decode(payload):
    try:
        from streamlit.proto.BackMsg_pb2 import BackMsg

        return BackMsg.FromString(payload if isinstance(payload, bytes) else payload.encode("latin-1"))
    except Exception:  # not ours to decode
        return None


def _widget_name(widget_id: str) -> str:
    return widget_id.split("-", 2)[-1][:40]  # "$$ID-<hash>-<key>" → the key


def sent_since(page, since: float) -> list[str]:
    """The page's messages to the server from 2 s before `since`: each rerun with its scope, the triggers
    it carries and the widgets whose values changed since the message before (a click, a map reporting
    its drawings, …); then the page's websocket openings and closings."""
    sent, previous = [], {}
    for t, payload in getattr(page, "sent", []):
        message = _decode(payload)
        if message is None or message.WhichOneof("type") != "rerun_script":
            continue
        state = message.rerun_script
        values = {w.id: w.SerializeToString() for w in state.widget_states.widgets}
        if t >= since - 2 and len(sent) < 12:
            fired = {
                w.id
                for w in state.widget_states.widgets
                if w.WhichOneof("value") == "trigger_value" and w.trigger_value
            }
            triggers = [_widget_name(i) for i in fired]
            changed = [_widget_name(i) for i, v in values.items() if previous.get(i) != v and i not in fired]
            scope = f"fragment{' auto' if state.is_auto_rerun else ''}" if state.fragment_id else "app"
            sent.append(f"+{t - since:.2f}s {scope} triggers={triggers} changed={changed[:4]}")
        if not state.fragment_id:
            previous = values
    sockets = [f"{what} {t - since:+.2f}s" for t, what in getattr(page, "sockets", []) if t >= since - 30]
    return sent + (["websocket: " + ", ".join(sockets)] if sockets else [])


def map_frames(page) -> list[str]:
    """What the map frames hold, for an error message: Leaflet or not, images loaded and seen before."""
    seen = []
    for frame in page.frames:
        if "st_folium" not in frame.url:
            continue
        try:
            facts = frame.evaluate(
                "() => ({leaflet: !!document.querySelector('.leaflet-container'),"
                " images: [...document.querySelectorAll('img.leaflet-image-layer')]"
                ".map(i => (i.complete && i.naturalWidth > 0 ? 'loaded' : 'loading')"
                " + (i.dataset.scarpSeen ? ' seen' : ' new'))})"
            )
        except PlaywrightError as exc:
            facts = str(exc).splitlines()[0][:60]
        seen.append(str(facts))
    return seen
