"""Importing by server path: anywhere in the local default, only inside `[scarp] server_import_roots`
on a shared deployment (else anyone with the password could import any image the server can read)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app import access
from engine import api
from engine.errors import InputError

HOME = str(Path(__file__).resolve().parents[1] / "app" / "Home.py")
PASSWORD = "tephra"


@pytest.fixture
def folders(tmp_path, bijie_pair):
    """allowed/ with two scenes and a link to outside/'s scene; outside/ with one scene."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    images = bijie_pair[0].parent
    for name in ("ls_0001.png", "ls_0002.png"):
        shutil.copyfile(images / name, allowed / name)
    shutil.copyfile(images / "ls_0003.png", outside / "ls_0003.png")
    (allowed / "ls_0009.png").symlink_to(outside / "ls_0003.png")
    return allowed, outside


def test_inside_the_roots_is_imported_and_everything_else_refused(ws, folders):
    allowed, outside = folders
    roots = [str(allowed)]
    [inside] = api.import_path(ws, allowed / "ls_0001.png", roots=roots)
    assert inside.scene.name.startswith("ls_0001")
    for sneaky in (
        outside / "ls_0003.png",
        allowed / ".." / "outside" / "ls_0003.png",
        allowed / "ls_0009.png",  # a link out of the root
        outside,
    ):
        with pytest.raises(InputError, match="outside the folders this server imports from"):
            list(api.import_path(ws, sneaky, roots=roots))
    with pytest.raises(InputError, match="full path"):
        list(api.import_path(ws, "allowed/ls_0001.png", roots=roots))
    with pytest.raises(InputError, match="imports no files"):
        list(api.import_path(ws, allowed / "ls_0002.png", roots=()))
    with pytest.raises(InputError, match="outside"):  # a mask is read too
        list(api.import_path(ws, allowed / "ls_0002.png", mask=outside / "ls_0003.png", roots=roots))
    assert [s.name for s in ws.list_scenes()] == [inside.scene.name]


def test_a_folder_skips_its_links_out_of_the_roots(ws, folders):
    allowed, _ = folders
    results = list(api.import_path(ws, allowed, roots=[str(allowed)]))
    refused = [r for r in results if isinstance(r, InputError)]
    assert len(results) == 3 and len(refused) == 1 and "ls_0009.png" in str(refused[0])
    assert len(ws.list_scenes()) == 2


def test_without_roots_the_cli_and_the_local_app_import_anything(ws, folders):
    _, outside = folders
    [result] = api.import_path(ws, outside / "ls_0003.png")
    assert not isinstance(result, InputError)


@pytest.mark.parametrize(
    ("secrets", "roots"),
    [
        ({}, None),  # the local default: the user's own machine
        ({"scarp": {"password": PASSWORD}}, ()),  # shared and no list: uploads only
        (
            {"scarp": {"password": PASSWORD, "server_import_roots": ["/data/a", "/data/b"]}},
            ("/data/a", "/data/b"),
        ),
        ({"scarp": {"server_import_roots": ["/data/a"]}}, ("/data/a",)),
    ],
)
def test_which_folders_a_deployment_imports_from(secrets, roots):
    assert access.plan(secrets).problem is None
    assert access.server_import_roots(secrets) == roots


@pytest.mark.parametrize("value", ["/data", ["data/relative"], [""], [3]])
def test_unusable_roots_close_the_app(value):
    problem = access.plan({"scarp": {"server_import_roots": value}}).problem
    assert problem and "server_import_roots must be a list of absolute folder paths" in problem


def _scenes_page(secrets: dict) -> AppTest:
    at = AppTest.from_file(HOME, default_timeout=60)
    for section, values in secrets.items():
        at.secrets[section] = values
    at.run()
    if "password" in secrets.get("scarp", {}):
        at.text_input[0].input(PASSWORD)
        at.button[0].click().run()
    at.switch_page("views/scenes.py").run()
    assert not at.exception, at.exception
    return at


def test_a_shared_scarp_without_roots_offers_uploads_only(workspace):
    at = _scenes_page({"scarp": {"password": PASSWORD}})
    assert "imports uploads only" in " ".join(i.value for i in at.info)
    assert not [t for t in at.text_input if t.key == "w:scenes:path"]


def test_the_scenes_page_imports_inside_its_roots_and_refuses_outside(workspace, folders):
    allowed, outside = folders
    at = _scenes_page({"scarp": {"server_import_roots": [str(allowed)]}})
    path = at.text_input(key="w:scenes:path")
    assert str(allowed) in path.help
    path.input(str(outside / "ls_0003.png")).run()
    at.button(key="w:scenes:path-go").click().run()
    assert "outside the folders this server imports from" in at.error[0].value
    at.text_input(key="w:scenes:path").input(str(allowed / "ls_0001.png")).run()
    at.button(key="w:scenes:path-go").click().run()
    assert "Imported ls_0001" in " ".join(s.value for s in at.success)
    with api.open_workspace(workspace) as ws:
        assert [s.name for s in ws.list_scenes()] == [at.success[0].value.split()[1]]
