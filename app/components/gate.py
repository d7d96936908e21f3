"""The access gate Home.py runs before anything else: sign-in (Streamlit's OIDC), then the shared password,
as `.streamlit/secrets.toml` asks (app/access.py decides which). Without either, it lets everyone in.

While a gate is up the navigation is registered hidden, so a deep link (/review) keeps its page for after
the gate, and nothing of the app is drawn. The typed password lives only in a cleared-on-submit form
field for the one run that checks it; the session keeps a boolean.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import streamlit as st

from app import access, state

FAILED_DELAY_S = 1.0  # a wrong password costs a second: guessing through the form is slow


def _secrets() -> dict[str, Any]:
    """The parsed secrets, {} without a secrets file. A file that exists but cannot be read raises: the
    gate must not fall open because of a typo in secrets.toml."""
    try:
        return st.secrets.to_dict()
    except FileNotFoundError:  # StreamlitSecretNotFoundError: none found, or one found and unreadable
        files = [Path(p).expanduser() for p in st.get_option("secrets.files")]
        if any(p.exists() for p in files):
            raise RuntimeError("a secrets file exists but could not be read") from None
        return {}


def server_import_roots() -> tuple[str, ...] | None:
    """The folders the Scenes page may import from by path; None: anywhere (app/access.py decides)."""
    return access.server_import_roots(_secrets())


def _blocked(pages: list) -> None:
    """Register the pages without showing them, so the URL's page survives the gate; then stop."""
    st.navigation(pages, position="hidden")
    st.stop()


def _refuse(pages: list, message: str, logout: bool = False) -> None:
    st.title("Scarp")
    st.error(message)
    if logout:  # signed in, but not let in: offer another account
        st.button("Log out", on_click=st.logout, key=state.widget_key("gate", "logout"))
    _blocked(pages)


def _login_screen(pages: list, providers: tuple[str | None, ...]) -> None:
    st.title("Scarp")
    st.write("Sign in to map landslides with your team. Your saves will carry your name.")
    for provider in providers:
        label = "Sign in" if provider is None else f"Sign in with {provider.title()}"
        st.button(
            label,
            type="primary",
            on_click=st.login,
            args=(provider,),
            key=state.widget_key("gate", "login", provider),
        )
    _blocked(pages)


def _password_screen(pages: list, expected: str) -> None:
    st.title("Scarp")
    with st.form(state.widget_key("gate", "password"), clear_on_submit=True, enter_to_submit=True):
        given = st.text_input("Password", type="password", placeholder="the team's password")
        submitted = st.form_submit_button("Open Scarp", type="primary")
    if submitted:
        if access.check_password(given, expected):
            state.grant_access()
            st.rerun()
        time.sleep(FAILED_DELAY_S)
        st.error("Wrong password. Ask whoever runs this Scarp for it.")
    _blocked(pages)


def require_access(pages: list) -> str | None:
    """Stop the run at whichever gate is still closed. Returns the signed-in identity's reviewer name
    (None when the deployment has no sign-in)."""
    try:
        secrets = _secrets()
    except RuntimeError as exc:
        _refuse(pages, f"Scarp is closed: {exc} (.streamlit/secrets.toml). Fix it, then reload.")
    plan = access.plan(secrets)
    if plan.problem:
        _refuse(pages, f"Scarp is closed until its access settings are fixed: {plan.problem}.")
    identity = None
    if plan.oidc:
        if not st.user.get("is_logged_in"):
            _login_screen(pages, plan.oidc_providers)
        claims = {k: st.user.get(k) for k in ("name", "preferred_username", "email", "email_verified")}
        if not access.identity_allowed(claims, secrets):
            who = claims.get("email") or "This account"
            _refuse(pages, f"{who} is not among this Scarp's reviewers.", logout=True)
        identity = access.identity_name(claims)
        if not identity:
            _refuse(pages, "Your sign-in carries no name or email to sign saves with.", logout=True)
    if plan.password and not state.access_granted():
        _password_screen(pages, access.configured_password(secrets))
    return identity


def sidebar_controls(identity: str | None) -> None:
    """Log out (signed in) or Lock (password): for a shared machine. Draws nothing in the local default."""
    if identity:
        st.button("Log out", on_click=st.logout, key=state.widget_key("gate", "logout"))
    elif state.access_granted():
        st.button(
            "Lock",
            on_click=state.revoke_access,
            key=state.widget_key("gate", "lock"),
            help="Ask for the password again",
        )
