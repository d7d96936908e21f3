"""The facade the app and the CLI call: workspaces, scenes, jobs and the review map.

The app never reaches past this package into the engine's internals. Each concern lives in its own
module; this file only names what the facade offers.
"""

from engine.api._core import (
    ImportResult,
    default_workspace_path,
    evaluate_masks,
    import_path,
    import_scene,
    open_workspace,
)
from engine.api._jobs import (
    cancel_job,
    ensure_worker,
    job_report,
    job_status,
    list_jobs,
    retry_job,
    submit_prediction,
    worker_status,
)
from engine.api._review import (
    ReviewChoices,
    ReviewLayers,
    latest_predicted_scene,
    link_scene,
    review_choices,
    review_layers,
    scene_links,
    unlink_scene,
)
from engine.api._scenes import (
    DEMO_LINKS,
    DEMO_SCENE,
    DemoStart,
    ModelChoice,
    SceneInfo,
    band_presets,
    delete_scene,
    find_demo_dir,
    import_upload,
    list_scenes,
    mask_version_count,
    model_choices,
    prediction_defaults,
    scene_info,
    scene_thumbnail,
    try_demo,
    workspace_summary,
)
from engine.io.raster import describe
from engine.store.links import LINK_ROLES

__all__ = [
    "DEMO_LINKS",
    "DEMO_SCENE",
    "LINK_ROLES",
    "DemoStart",
    "ImportResult",
    "ModelChoice",
    "ReviewChoices",
    "ReviewLayers",
    "SceneInfo",
    "band_presets",
    "cancel_job",
    "default_workspace_path",
    "delete_scene",
    "describe",
    "ensure_worker",
    "evaluate_masks",
    "find_demo_dir",
    "import_path",
    "import_scene",
    "import_upload",
    "job_report",
    "job_status",
    "latest_predicted_scene",
    "link_scene",
    "list_jobs",
    "list_scenes",
    "mask_version_count",
    "model_choices",
    "open_workspace",
    "prediction_defaults",
    "retry_job",
    "review_choices",
    "review_layers",
    "scene_info",
    "scene_links",
    "scene_thumbnail",
    "submit_prediction",
    "try_demo",
    "unlink_scene",
    "worker_status",
    "workspace_summary",
]
