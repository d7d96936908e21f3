"""Shared deployment: which gate secrets.toml asks for (app/access.py), the password gate and OIDC sign-in
in the app (AppTest), and saves that always carry a reviewer name. What the server serves by URL is in
test_app_server.py."""

from __future__ import annotations

import hmac
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app import access
from app.components import gate
from engine import api

ROOT = Path(__file__).resolve().parents[1]
HOME = str(ROOT / "app" / "Home.py")
PASSWORD = "corrèct horse battery"
AUTH = {
    "redirect_uri": "https://scarp.example.org/oauth2callback",
    "cookie_secret": "a-long-random-string",
    "client_id": "scarp",
    "client_secret": "xyz",
    "server_metadata_url": "https://idp.example.org/.well-known/openid-configuration",
}


# --- which gate: app/access.py, no streamlit -------------------------------------------------------------


def test_no_secrets_is_the_local_default_with_no_gate():
    plan = access.plan({})
    assert (plan.password, plan.oidc, plan.shared, plan.problem) == (False, False, False, None)
    assert access.plan({"other_app": {"token": "x"}}) == plan


def test_a_password_in_the_scarp_section_asks_for_it_and_the_plan_holds_no_secret():
    plan = access.plan({"scarp": {"password": PASSWORD}})
    assert plan.password and plan.shared and not plan.oidc and plan.problem is None
    assert PASSWORD not in repr(plan)
    assert access.configured_password({"scarp": {"password": PASSWORD}}) == PASSWORD


def test_an_auth_section_asks_for_sign_in_with_each_provider(monkeypatch):
    monkeypatch.setattr(access, "authlib_installed", lambda: True)
    assert access.plan({"auth": AUTH}).oidc_providers == (None,)
    named = {
        "redirect_uri": AUTH["redirect_uri"],
        "cookie_secret": AUTH["cookie_secret"],
        "client_kwargs": {"prompt": "login"},  # a setting, not a provider
        "google": {k: AUTH[k] for k in access.AUTH_PROVIDER_KEYS},
        "microsoft": {k: AUTH[k] for k in access.AUTH_PROVIDER_KEYS},
    }
    plan = access.plan({"auth": named, "scarp": {"password": PASSWORD}})
    assert plan.oidc_providers == ("google", "microsoft") and plan.password and plan.problem is None


@pytest.mark.parametrize(
    ("secrets", "says"),
    [
        ({"scarp": {"password": ""}}, "non-empty"),
        ({"scarp": {"password": 1234}}, "non-empty"),
        ({"scarp": "hunter2"}, "must be a table"),
        ({"auth": {}}, "OpenID Connect"),
        ({"auth": {k: v for k, v in AUTH.items() if k != "cookie_secret"}}, "[auth] cookie_secret"),
        ({"auth": {k: v for k, v in AUTH.items() if k != "client_secret"}}, "[auth] client_secret"),
        ({"auth": {"redirect_uri": "x", "cookie_secret": "y"}}, "no identity provider"),
        ({"auth": {"redirect_uri": "x", "cookie_secret": "y", "my_idp": dict(AUTH)}}, "underscores"),
    ],
)
def test_unusable_settings_close_the_app_instead_of_opening_it(monkeypatch, secrets, says):
    monkeypatch.setattr(access, "authlib_installed", lambda: True)
    plan = access.plan(secrets)
    assert plan.problem is not None and says in plan.problem


def test_allow_lists_narrow_who_may_sign_in(monkeypatch):
    monkeypatch.setattr(access, "authlib_installed", lambda: True)
    secrets = {"auth": AUTH, "scarp": {"allowed_emails": ["Ben@Other.org"], "allowed_domains": ["@uni.edu"]}}
    assert access.plan(secrets).problem is None
    assert access.identity_allowed({"email": "ana@UNI.edu"}, secrets)
    assert access.identity_allowed({"email": "ben@other.org", "email_verified": True}, secrets)
    assert not access.identity_allowed({"email": "eve@other.org"}, secrets)
    assert not access.identity_allowed({"email": "eve@uni.edu.evil.com"}, secrets)
    assert not access.identity_allowed({"email": "ana@uni.edu", "email_verified": False}, secrets)
    assert not access.identity_allowed({"name": "Ana"}, secrets)
    assert access.identity_allowed({"name": "Ana"}, {"auth": AUTH})  # no list: the provider decides
    assert "needs sign-in" in access.plan({"scarp": {"allowed_domains": ["uni.edu"]}}).problem
    assert "list of non-empty" in access.plan({"auth": AUTH, "scarp": {"allowed_emails": "a@b"}}).problem


def test_sign_in_without_authlib_is_a_problem_not_a_crash(monkeypatch):
    monkeypatch.setattr(access, "authlib_installed", lambda: False)
    assert "Authlib" in access.plan({"auth": AUTH}).problem


def test_password_check_is_exact_and_constant_time(monkeypatch):
    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append((len(a), len(b))) or real(a, b))
    assert access.check_password(PASSWORD, PASSWORD)
    for wrong in ("", "corrèct", PASSWORD + " ", PASSWORD.upper(), "correct horse battery"):
        assert not access.check_password(wrong, PASSWORD)
    assert calls and all(a == b == 32 for a, b in calls)  # digests: equal lengths whatever was typed
    assert not access.check_password("", "")  # an empty configured password opens nothing


def test_reviewer_names_are_tidied_and_checked():
    assert access.reviewer_name("  Ana   María\tPérez ") == "Ana María Pérez"
    assert access.reviewer_problem("Ana") is None and access.reviewer_problem("  Ana  ") is None
    for missing in ("", "   ", None):
        assert "Reviewer" in access.reviewer_problem(missing)
    assert "at most" in access.reviewer_problem("x" * (access.MAX_NAME + 1))
    assert "control" in access.reviewer_problem("Ana\x00")


def test_the_reviewer_name_of_a_signed_in_user():
    assert access.identity_name({"name": "Ana Pérez", "email": "ana@uni.edu"}) == "Ana Pérez <ana@uni.edu>"
    assert access.identity_name({"email": "ana@uni.edu"}) == "ana@uni.edu"
    assert access.identity_name({"preferred_username": "apérez"}) == "apérez"
    assert access.identity_name({"is_logged_in": True}) == ""


# --- the gates in the app (AppTest) ---------------------------------------------------------------------


def _app(**secrets) -> AppTest:
    at = AppTest.from_file(HOME, default_timeout=60)
    for section, values in secrets.items():
        at.secrets[section] = values
    return at


def _gated(at: AppTest) -> bool:
    """The gate is up: Scarp's title and no sidebar content (no workspace, no reviewer, no pages)."""
    return (
        [t.value for t in at.title] == ["Scarp"]
        and not at.sidebar.text_input
        and not at.sidebar.code
        and not at.metric
    )


def test_without_settings_the_app_opens_as_before(workspace):
    at = _app().run()
    assert not at.exception and not _gated(at)
    assert at.sidebar.text_input[0].label == "Reviewer" and not at.sidebar.button  # no Lock, no Log out


def test_the_password_gate_blocks_every_page_until_the_right_password(workspace, predicted):
    at = _app(scarp={"password": PASSWORD})
    at.run()
    assert not at.exception and _gated(at) and at.text_input[0].label == "Password"
    at.switch_page("views/correct.py").run()  # a deep link waits behind the gate too
    assert _gated(at) and not at.selectbox and "edit_sessions" not in at.session_state
    at.text_input[0].input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Correct" and at.session_state["access_granted"] is True
    # the password is not kept: session state holds the boolean verdict, no copy of what was typed
    assert all(value != PASSWORD for value in at.session_state.to_dict().values())


def test_a_wrong_password_shows_an_error_and_opens_nothing(workspace, monkeypatch):
    monkeypatch.setattr(gate, "FAILED_DELAY_S", 0.0)
    at = _app(scarp={"password": PASSWORD}).run()
    at.text_input[0].input("correct horse")
    at.button[0].click().run()
    assert not at.exception and _gated(at)
    assert at.error[0].value.startswith("Wrong password")
    assert at.session_state["access_granted"] is False


def test_unusable_access_settings_close_the_app(workspace):
    at = _app(scarp={"password": ""}).run()
    assert not at.exception and _gated(at) and not at.text_input
    assert "closed" in at.error[0].value and "non-empty" in at.error[0].value


@pytest.fixture
def secrets_file(tmp_path):
    """Point Streamlit's secrets at a file of the test's own (instead of .streamlit/secrets.toml)."""
    from streamlit import config
    from streamlit.runtime.secrets import secrets_singleton

    path = tmp_path / "secrets.toml"
    saved = config.get_option("secrets.files")
    config.set_option("secrets.files", [str(path)])
    secrets_singleton._reset()
    yield path
    config.set_option("secrets.files", saved)
    secrets_singleton._reset()


def test_a_password_in_a_real_secrets_file_gates_the_app(workspace, secrets_file):
    secrets_file.write_text(f'[scarp]\npassword = "{PASSWORD}"\n')
    at = AppTest.from_file(HOME, default_timeout=60).run()
    assert not at.exception and _gated(at) and at.text_input[0].label == "Password"


def test_a_secrets_file_that_does_not_parse_closes_the_app(workspace, secrets_file):
    secrets_file.write_text('[scarp\npassword = "unterminated\n')  # a typo must not open the app
    at = AppTest.from_file(HOME, default_timeout=60).run()
    assert not at.exception and _gated(at) and not at.text_input
    assert "could not be read" in at.error[0].value


def test_sign_in_gate_then_saves_carry_the_signed_in_name(workspace, predicted, monkeypatch):
    monkeypatch.setattr(access, "authlib_installed", lambda: True)
    at = _app(auth=AUTH)
    at.user = {"is_logged_in": False}
    at.run()
    assert not at.exception and _gated(at) and at.button[0].label == "Sign in"

    at = _app(auth=AUTH)
    at.user = {"is_logged_in": True, "name": "Ana Pérez", "email": "ana@uni.edu"}
    at.run()
    reviewer = at.sidebar.text_input[0]
    assert reviewer.value == "Ana Pérez <ana@uni.edu>" and reviewer.disabled
    assert [b.label for b in at.sidebar.button] == ["Log out"]
    at.switch_page("views/correct.py").run()
    scene_id, d = predicted
    at.session_state["edit_sessions"][scene_id].edit(np.ones((d.height, d.width), bool), "add")
    at.run()
    at.text_input(key="w:correct:note").input("whole tile").run()
    at.button(key="w:correct:save").click().run()
    assert not at.exception and at.success[0].value.endswith("by Ana Pérez <ana@uni.edu>.")
    assert at.text_input(key="w:correct:note").value == ""  # the note went with the version
    with api.open_workspace(workspace) as ws:
        latest = ws.latest_mask_version(scene_id)
        assert (latest.author, latest.note) == ("Ana Pérez <ana@uni.edu>", "whole tile")


def test_a_signed_in_account_off_the_list_is_refused(workspace, monkeypatch):
    monkeypatch.setattr(access, "authlib_installed", lambda: True)
    at = _app(auth=AUTH, scarp={"allowed_domains": ["uni.edu"]})
    at.user = {"is_logged_in": True, "name": "Eve", "email": "eve@elsewhere.com"}
    at.run()
    assert not at.exception and _gated(at) and "not among" in at.error[0].value
    assert [b.label for b in at.button] == ["Log out"]


def _correct_page(reviewer: str) -> AppTest:
    at = AppTest.from_file(HOME, default_timeout=60)
    at.session_state["reviewer_widget"] = reviewer  # what the sidebar's Reviewer field holds
    at.run()
    at.switch_page("views/correct.py").run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("blank", ["", "   "], ids=["empty", "spaces"])
def test_no_save_without_a_reviewer_name_and_the_edit_is_kept(workspace, predicted, blank):
    scene_id, d = predicted
    at = _correct_page(blank)
    assert any("Saving needs a reviewer name" in c.value for c in at.caption)
    at.session_state["edit_sessions"][scene_id].edit(np.ones((d.height, d.width), bool), "add")
    at.run()
    at.text_input(key="w:correct:note").input("whole tile").run()
    at.button(key="w:correct:save").click().run()
    assert not at.exception, at.exception
    message = at.error[0].value
    assert message.startswith("Not saved") and "Reviewer" in message and "edits are kept" in message
    with api.open_workspace(workspace) as ws:
        assert [v.id for v in ws.list_mask_versions(scene_id)] == [1]
    session = at.session_state["edit_sessions"][scene_id]
    assert session.dirty and session.mask.all() and "unsaved" in at.caption[0].value
    assert at.text_input(key="w:correct:note").value == "whole tile"


def test_a_revert_needs_a_reviewer_name_too(workspace, predicted):
    scene_id, d = predicted
    with api.open_workspace(workspace) as ws:
        api.save_edited_mask(ws, scene_id, np.zeros((d.height, d.width), np.uint8), 1, "ben")
    at = _correct_page("")
    at.selectbox(key="w:correct:revert-to").set_value(1).run()
    at.button(key="w:correct:revert").click().run()
    assert not at.exception and any(e.value.startswith("Not reverted") for e in at.error)
    with api.open_workspace(workspace) as ws:
        assert [v.id for v in ws.list_mask_versions(scene_id)] == [1, 2]


def test_queue_statuses_need_a_reviewer_name_too(workspace, predicted):
    scene_id, _ = predicted
    at = _correct_page("")
    at.selectbox(key="w:correct:queue-tile").set_value(256).run()
    at.button(key="w:correct:queue-build").click().run()
    at.button(key="w:correct:status:accepted").click().run()
    assert not at.exception and any(e.value.startswith("Not marked accepted") for e in at.error)
    with api.open_workspace(workspace) as ws:
        assert api.review_progress(ws, [scene_id])["accepted"] == 0
