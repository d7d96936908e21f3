"""Make torchvision importable next to the CPU torch wheel.

The PyPI torchvision wheel ships a compiled `_C` extension built against the CUDA torch build. Next
to the CPU wheel that extension fails to load, and `import torchvision` then dies in its fake-op
registrations ("operator torchvision::nms does not exist"), because only `_C` declares those op
schemas. Declaring the two schemas ourselves lets torchvision import; segmentation never calls the
detection ops. Where `_C` loads (a matching CUDA install) nothing is touched. timm and
segmentation-models-pytorch import torchvision, so engine code calls `ensure_torchvision()` before
importing them.
"""

from __future__ import annotations

import sys

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library = None  # holds the op definitions for the life of the process


def ensure_torchvision() -> None:
    """Import torchvision, declaring the missing op schemas first if its extension cannot load."""
    global _library
    if "torchvision" in sys.modules:
        return
    try:
        import torchvision

        return
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    for name in [m for m in sys.modules if m.startswith("torchvision.")]:
        del sys.modules[name]
    import torch

    _library = torch.library.Library("torchvision", "FRAGMENT")
    for op, schema in _SCHEMAS.items():
        if not hasattr(torch.ops.torchvision, op):
            _library.define(schema)
    import torchvision  # noqa: F401
