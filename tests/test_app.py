"""The app's pages through streamlit's AppTest: they render without an exception on a real workspace."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine import api

HOME = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    monkeypatch.setenv("SCARP_WORKSPACE", str(tmp_path / "ws"))
    from app import services

    services.workspace.clear()
    yield tmp_path / "ws"
    services.workspace.clear()


def test_home_on_an_empty_workspace(workspace):
    at = AppTest.from_file(HOME, default_timeout=60).run()
    assert not at.exception
    assert at.title[0].value == "Scarp"
    assert [m.value for m in at.metric] == ["0", "0", "0", "0"]
    assert "No scenes yet" in at.info[0].value


def test_home_counts_imported_scenes(workspace, bijie_pair):
    with api.open_workspace(workspace) as ws:
        api.import_scene(ws, bijie_pair[0], mask=bijie_pair[1])
    at = AppTest.from_file(HOME, default_timeout=60).run()
    assert not at.exception
    assert [m.value for m in at.metric][:2] == ["1", "1"]
