"""The job panel: live progress of queued and running jobs, and failed ones in words with Retry.

Everything is read from the workspace database on each tick, so two tabs (or two people) see the same
states; the fragment reruns alone, so polling never reruns the page under it.
"""

from __future__ import annotations

import streamlit as st

from app import state
from engine import api
from engine.errors import ScarpError

POLL_S = 2.0
FAILED_SHOWN = 3


def describe(report: api.JobReport) -> str:
    """One line for a person: what, stage, how far, how long still."""
    parts = [f"Job {report.id} · {report.kind} · {report.stage}"]
    if report.status == "running":
        parts.append(f"{report.progress:.0%}")
    if report.eta_s is not None:
        parts.append(f"about {_duration(report.eta_s)} left")
    line = " · ".join(parts)
    return f"{line} — {report.text}" if report.text else line


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def _cancel(workspace: api.Workspace, job_id: int) -> None:
    try:
        api.cancel_job(workspace, job_id)
    except ScarpError as exc:
        st.toast(str(exc))


def _retry(workspace: api.Workspace, job_id: int) -> None:
    try:
        api.retry_job(workspace, job_id)
        state.dismiss_job(job_id)
    except ScarpError as exc:
        st.toast(str(exc))


@st.fragment(run_every=POLL_S)
def job_panel(workspace: api.Workspace) -> None:
    """Shown under every page; draws nothing when there is nothing to say."""
    jobs = api.list_jobs(workspace)
    active = [job for job in jobs if not job.done]
    dismissed = state.dismissed_jobs()
    failed = [job for job in jobs if job.status == "failed" and job.id not in dismissed][-FAILED_SHOWN:]
    if not active and not failed:
        return
    st.divider()
    st.subheader("Jobs")
    for job in active:
        report = api.job_report(job)
        cols = st.columns([5, 1])
        with cols[0]:
            st.progress(min(max(report.progress, 0.0), 1.0), text=describe(report))
        cols[1].button(
            "Cancel",
            key=state.widget_key("cancel-job", job.id),
            on_click=_cancel,
            args=(workspace, job.id),
        )
    for job in failed:
        report = api.job_report(job)
        cols = st.columns([5, 1, 1])
        cols[0].error(f"Job {job.id} ({job.kind}) failed: {report.error or report.text}")
        cols[1].button(
            "Retry", key=state.widget_key("retry-job", job.id), on_click=_retry, args=(workspace, job.id)
        )
        cols[2].button(
            "Dismiss", key=state.widget_key("dismiss-job", job.id), on_click=state.dismiss_job, args=(job.id,)
        )
