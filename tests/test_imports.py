"""The import rules of docs/ARCHITECTURE.md, checked in fresh interpreters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def loaded_after(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return {name.split(".")[0] for name in out.stdout.split()}


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("engine", {"streamlit", "torch"}),
        ("engine.api", {"streamlit", "torch"}),
        ("engine.cli", {"streamlit", "torch"}),
        ("engine.store", {"streamlit", "torch", "numpy", "rasterio"}),
        ("engine.tiling", {"torch", "rasterio", "streamlit"}),
        ("engine.metrics", {"torch", "rasterio", "streamlit"}),
    ],
)
def test_module_does_not_load(module, forbidden):
    assert not (loaded_after(module) & forbidden)


def test_engine_never_imports_streamlit_anywhere():
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "engine").rglob("*.py")
        if any(
            line.lstrip().startswith(("import streamlit", "from streamlit"))
            for line in path.read_text().splitlines()
        )
    ]
    assert offenders == []


def test_torchvision_compat_lets_timm_and_smp_build_models():
    code = (
        "from engine.compat import ensure_torchvision; ensure_torchvision();"
        "import torch, timm, segmentation_models_pytorch as smp;"
        "m = timm.create_model('pvt_v2_b0', pretrained=False, features_only=True);"
        "print(m(torch.zeros(1, 3, 64, 64))[-1].shape[1]);"
        "print(smp.Unet('resnet34', encoder_weights=None)(torch.zeros(1, 3, 64, 64)).shape[-1])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["256", "64"]
