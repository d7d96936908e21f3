"""Train: fine-tune a model, or run one pseudo-label round, on the scenes a reviewer corrected.

The job runs in the worker; this page follows it with a live loss / validation-mIoU chart, and when it
ends shows the base and the new model's scores on the validation set the user chose.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import access, services, state
from engine import api
from engine.errors import ScarpError

MODES = {"finetune": "Fine-tune", "pseudo_label": "Pseudo-label round"}
PSEUDO_MODES = {
    "threshold": "Threshold (p ≥ t)",
    "top_percent": "Top 50 % most confident",
    "mc_dropout": "MC-dropout uncertainty",
}
VAL_FOLDER, VAL_SCENES = "A labelled folder", "Scenes of this workspace"

workspace = services.workspace()
st.title("Train")
st.caption(
    "Teach a model what you corrected: fine-tune it on your corrected scenes, or run a pseudo-label round."
)

scenes = {s.id: s for s in api.trainable_scenes(workspace)}
if not scenes:
    st.info(
        "No corrected scenes yet. Correct a mask on the Correct page (or import a scene together with its "
        "mask), then come back here to train on it."
    )
    st.stop()

bases = {c.spec: c for c in api.base_model_choices(workspace)}
base = st.selectbox(
    "Start from", list(bases), format_func=lambda s: bases[s].label, key=state.widget_key("train", "base")
)
chosen = st.multiselect(
    "Training scenes (their latest corrected masks)",
    list(scenes),
    default=list(scenes),
    format_func=lambda i: f"{i} · {scenes[i].name}",
    key=state.widget_key("train", "scenes"),
)
dataset = st.text_input(
    "Also train on a labelled folder (optional)",
    placeholder="../shared/data/bijie  (images/ + masks/ [+ splits.json])",
    key=state.widget_key("train", "dataset"),
)
cols = st.columns(3)
mode = cols[0].radio(
    "Mode", list(MODES), format_func=MODES.__getitem__, horizontal=True, key=state.widget_key("train", "mode")
)
epochs = cols[1].number_input("Epochs", 1, 500, 5, key=state.widget_key("train", "epochs"))
name = cols[2].text_input(
    "Name of the new version", placeholder="automatic", key=state.widget_key("train", "name")
)
pseudo = {}
if mode == "pseudo_label":
    pcols = st.columns(2)
    pseudo["pseudo_mode"] = pcols[0].selectbox(
        "Pseudo-label selection", list(PSEUDO_MODES), format_func=PSEUDO_MODES.__getitem__,
        key=state.widget_key("train", "pseudo-mode"),
    )  # fmt: skip
    pseudo["threshold"] = pcols[1].slider(
        "Threshold", 0.5, 0.99, 0.7, 0.01, key=state.widget_key("train", "threshold"),
        help="Threshold mode: pixels with p ≥ t become landslide, p ≤ 1 − t background; the rest is ignored.",
    )  # fmt: skip
    st.caption(
        "The base model labels every scene nobody has reviewed; its confident pixels join the training."
    )

st.subheader("Validation set")
st.caption("The same images score the model before and after training, so the two numbers compare.")
demo = api.find_demo_dir()
default_folder = str(demo / "bijie") if demo is not None and (demo / "bijie").is_dir() else ""
val_kind = st.radio(
    "Score on", [VAL_FOLDER, VAL_SCENES], horizontal=True, key=state.widget_key("train", "val")
)
validation: dict = {}
if val_kind == VAL_FOLDER:
    vcols = st.columns([3, 1])
    validation["val_folder"] = (
        vcols[0]
        .text_input("Validation folder", value=default_folder, key=state.widget_key("train", "val-folder"))
        .strip()
        or None
    )
    validation["val_split"] = vcols[1].text_input(
        "Split", value="val", key=state.widget_key("train", "val-split")
    )
else:
    everything = {s.id: s for s in api.list_scenes(workspace)}
    validation["val_scene_ids"] = st.multiselect(
        "Scenes (their latest masks are the truth)", list(everything),
        format_func=lambda i: f"{i} · {everything[i].name}", key=state.widget_key("train", "val-scenes"),
    ) or None  # fmt: skip

if st.button("Start training", type="primary", disabled=not chosen, key=state.widget_key("train", "go")):
    try:
        job = api.submit_training(
            workspace, chosen, base=base, dataset=dataset.strip() or None, mode=mode, epochs=int(epochs),
            name=name.strip() or None, **pseudo, **validation,
        )  # fmt: skip
    except ScarpError as exc:
        st.error(str(exc))
    else:
        state.set_train_job(job.id)


@st.fragment(run_every=1.0)
def follow(job_id: int) -> None:
    """The chosen job's progress and chart while it runs; its before/after scores when it is done."""
    try:
        job = api.job_status(workspace, job_id)
    except ScarpError:
        state.set_train_job(None)
        return
    report = api.job_report(job)
    st.subheader(f"Training job {job.id}")
    if len(report.history) >= 2:
        chart = pd.DataFrame(report.history).set_index("epoch")[["loss", "val_miou"]]
        st.line_chart(chart, x_label="epoch", height=220)
    elif report.history:
        first = report.history[0]
        st.caption(f"Epoch 1: loss {first['loss']:.3f}, validation mIoU {first['val_miou']:.3f}")
    if job.status in ("queued", "running"):
        st.progress(min(max(report.progress, 0.0), 1.0), text=f"{report.stage}: {report.text}")
    elif job.status == "succeeded":
        before, after = report.result["before"], report.result["after"]
        model_id = report.result["model_id"]
        st.success(f"Registered {report.result['name']} (model {model_id}).")
        default = api.default_model(workspace)
        if default is not None and default.id == model_id:
            st.caption("This version is the workspace default: predictions with `default` use it.")
        elif st.button("Set as default", key=state.widget_key("train", "set-default", model_id)):
            if unsigned := access.reviewer_problem(state.reviewer()):
                st.error(f"Choosing the default needs a reviewer name: {unsigned}")
            else:
                api.set_default_model(workspace, model_id, author=state.reviewer())
                st.rerun(scope="fragment")
        mcols = st.columns(3)
        for col, key, label in zip(
            mcols, ("miou", "iou", "f1"), ("mIoU", "landslide IoU", "F1"), strict=True
        ):
            col.metric(label, f"{100 * after[key]:.2f}", f"{100 * (after[key] - before[key]):+.2f} vs base")
    elif job.status == "failed":
        st.error(f"Training failed: {report.error or report.text}")
    else:
        st.warning("The training job was cancelled; nothing was registered.")


if state.train_job() is not None:
    follow(state.train_job())
