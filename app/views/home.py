"""Home: what the workspace holds, and a one-click demo on a real scene (Iburi, Hokkaido, 2018)."""

from __future__ import annotations

import streamlit as st

from app import services, state
from engine import api
from engine.errors import ScarpError

REVIEW_PAGE = "views/review.py"

workspace = services.workspace()
st.title("Scarp")
st.caption("Landslide mapping studio: segment imagery, review on a map, correct masks, retrain.")

summary = api.workspace_summary(workspace)
cols = st.columns(4)
cols[0].metric("Scenes", summary["scenes"])
cols[1].metric("Mask versions", summary["mask_versions"])
cols[2].metric("Models", summary["models"])
cols[3].metric("Jobs running", summary["jobs_running"])
if summary["scenes"] == 0:
    st.info("No scenes yet. Import one on the Scenes page, or try the demo below.")

st.subheader("Try it on a real scene")
demo_dir = api.find_demo_dir()
if demo_dir is None:
    st.caption(
        "The demo needs the shared data folder: ../shared/data beside the repository, or $SCARP_DEMO_DIR."
    )
else:
    st.caption(
        "Imports the Sentinel-2 scene after the 2018 Hokkaido Eastern Iburi earthquake with its pre-event "
        "image, DSM, slope and hillshade, and maps landslides with the default model."
    )
    if st.button("Try it on a real scene", type="primary", key=state.widget_key("home", "demo")):
        try:
            with st.spinner("Importing the Iburi scenes…"):
                started = api.try_demo(workspace, demo_dir)
            state.set_demo_job(started.job_id)
        except ScarpError as exc:
            st.error(str(exc))
        else:
            st.rerun()  # the counts above were read before the import


def watched_demo_job():
    """The demo's job while Home watches it; None when there is none (or it has gone from the workspace)."""
    job_id = state.demo_job()
    if job_id is None:
        return None
    try:
        return api.job_status(workspace, job_id)
    except ScarpError:
        state.set_demo_job(None)
        return None


@st.fragment(run_every=1.0)
def demo_progress() -> None:
    """Follows the demo's job; on success it hands over to a full run of the page, on failure it says why."""
    job = watched_demo_job()
    if job is None:  # already handled: a tick can still come after the page has moved on
        return
    report = api.job_report(job)
    if job.status == "succeeded":
        st.success("The landslide map is ready.")
        st.rerun()
    elif job.status == "failed":
        st.error(f"The demo prediction failed: {report.error or report.text}")
        if st.button("Close", key=state.widget_key("home", "demo-close")):
            state.set_demo_job(None)
            st.rerun()
    elif job.status == "cancelled":
        st.warning("The demo prediction was cancelled.")
        state.set_demo_job(None)
    else:
        st.progress(min(max(report.progress, 0.0), 1.0), text=f"{report.stage}: {report.text}")


# The page switch on success runs here, in a full run of the page: a switch from inside the timed
# fragment races the fragment's next tick, which can leave the Review page blank.
demo = watched_demo_job()
if demo is not None and demo.status == "succeeded":
    state.set_demo_job(None)
    state.set_review_scene(int(demo.params["scene_id"]))
    st.switch_page(REVIEW_PAGE)
if demo is not None:
    demo_progress()
