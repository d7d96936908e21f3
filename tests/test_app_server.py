"""The Streamlit server of a shared deployment: what it serves by URL (app/static only, under the base
URL path), its upload limit, and how it runs the Save callback under load."""

from __future__ import annotations

import ast
import os
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from app.components.map import static_url

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "app" / "static"


# --- what is served by URL ---------------------------------------------------------------------------------


def test_upload_limit_and_static_serving_are_configured_and_documented():
    server = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())["server"]
    assert server["enableStaticServing"] is True
    assert 200 <= server["maxUploadSize"] <= 4096  # MB: a big scene, not an unbounded memory hog
    assert server.get("enableXsrfProtection", True) and server.get("enableCORS", True)
    readme = (ROOT / "README.md").read_text()
    assert f"client_max_body_size {server['maxUploadSize']}m;" in readme  # the proxy matches the app


def test_the_static_folder_holds_nothing_that_leads_outside_it():
    if not STATIC.is_dir():
        pytest.skip("app/static is created by `make setup`")
    root = STATIC.resolve()
    links, outside = [], []
    for dirpath, dirnames, filenames in os.walk(STATIC):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink():
                links.append(path)
            if not path.resolve().is_relative_to(root):
                outside.append(path)
    assert not outside, outside
    assert not links, links  # make setup copies files; a link in there is a mistake waiting to happen


def _code_parts(tree: ast.AST):
    """("import", module), ("attribute", name) and ("string", text) of a module, docstrings left out."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (("import", alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            yield "import", node.module or ""
        elif isinstance(node, ast.Attribute):
            yield "attribute", node.attr
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield "string", node.value


def test_app_code_serves_no_files_by_url():
    """The app hands the browser data (PNG data URLs, downloads built in memory) and the Leaflet files
    under /app/static; it adds no route, reads no path from the URL, and links no file on disk."""
    servers = ("starlette", "tornado", "http.server", "aiohttp", "flask", "fastapi", "socketserver")
    offenders = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        if STATIC in path.parents:
            continue
        where = path.relative_to(ROOT)
        for kind, value in _code_parts(ast.parse(path.read_text())):
            if kind == "import" and value.startswith(servers):
                offenders.append(f"{where}: imports {value}")
            elif kind == "attribute" and value in ("query_params", "add_route", "add_api_route", "mount"):
                offenders.append(f"{where}: uses .{value}")
            elif kind == "string" and "file://" in value:
                offenders.append(f"{where}: a file:// URL")
            elif kind == "string" and "/app/static" in value and where != Path("app/components/map.py"):
                offenders.append(f"{where}: builds a static URL outside map.static_url")
    assert not offenders, offenders


def test_static_urls_follow_the_base_url_path():
    assert static_url("leaflet/leaflet.js", "") == "/app/static/leaflet/leaflet.js"
    assert static_url("leaflet/leaflet.js", "/scarp/") == "/scarp/app/static/leaflet/leaflet.js"
    assert static_url("x.css", "maps/scarp") == "/maps/scarp/app/static/x.css"


@pytest.mark.slow
def test_the_server_refuses_paths_outside_app_static(tmp_path, data_dir):
    if not (STATIC / "leaflet" / "leaflet.js").is_file():
        pytest.skip("app/static is created by `make setup`")
    from tests.browser.harness import running_app

    def status(url: str) -> int:
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    (tmp_path / "ws").mkdir()
    with running_app(tmp_path / "ws", data_dir) as app:
        assert status(f"{app.url}/app/static/leaflet/leaflet.js") == 200
        for escape in (
            "../Home.py", "%2e%2e/Home.py", "..%2f..%2fREADME.md", "%2e%2e%2f%2e%2e%2f.streamlit/config.toml",
            "leaflet/../../access.py", "/etc/passwd", "%2fetc%2fpasswd", "..%5cHome.py",
        ):  # fmt: skip
            assert status(f"{app.url}/app/static/{escape}") in (400, 403, 404), escape
        assert status(f"{app.url}/app/static/") in (400, 403, 404)  # no directory listing


# --- saves under load: found by tests/browser/load_bench.py --------------------------------------------


def test_a_rerun_request_waits_for_the_run_in_progress():
    """With Streamlit's default fastReruns a second run starts beside one still inside a callback, and the
    page is drawn from the state before the callback's save."""
    runner = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())["runner"]
    assert runner["fastReruns"] is False


def test_the_save_callback_records_its_result_without_session_state():
    """Streamlit may stop a callback at any st.session_state access once another rerun has been asked
    for. The Save callback reads st.session_state once, first (stopped there, nothing happened yet), and
    after writing the version records the outcome only in the plain dicts it was given."""
    tree = ast.parse((ROOT / "app" / "views" / "correct.py").read_text())
    save = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "save")
    body = save.body[1:] if isinstance(save.body[0], ast.Expr) else save.body  # past the docstring

    def session_state_uses(nodes) -> list[int]:
        return [
            n.lineno
            for node in nodes
            for n in ast.walk(node)
            if (isinstance(n, ast.Attribute) and n.attr == "session_state")
            or (  # app.state helpers read st.session_state too, all but widget_key
                isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute)
                and isinstance(n.func.value, ast.Name)
                and n.func.value.id == "state"
                and n.func.attr != "widget_key"
            )
        ]

    assert session_state_uses(body[:1]), "the note is read first"
    assert session_state_uses(body[1:]) == [], "nothing after the first line may touch st.session_state"
    owners = {
        n.func.value.id
        for n in ast.walk(save)
        if isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and isinstance(n.func.value, ast.Name)
    }
    assert "st" not in owners  # no st.toast, st.rerun, …: each is a point where Streamlit may stop it
