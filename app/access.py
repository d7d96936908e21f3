"""Who may open the app, and under which name their saves are recorded.

A deployment says what it wants in `.streamlit/secrets.toml`:

- nothing (or no file): the local single-user default, open to whoever reaches the port;
- `[scarp] password = "..."`: one shared password, asked before anything else is shown;
- `[auth]` (Streamlit's OpenID Connect settings): sign-in with an identity provider, and the reviewer
  name is taken from the signed-in identity instead of being typed; `[scarp] allowed_emails` and
  `allowed_domains` narrow who may sign in.

When both are set, both apply (sign-in first, then the password). `[scarp] server_import_roots` lists the
folders whose files the Scenes page may import by path; a shared deployment without it imports
uploads only, since a path would let any user read any image the server can. A section that is present but
unusable closes the app with a message rather than leaving it open. Plain Python, no streamlit, so the
decisions are tested without a server; `app/components/gate.py` draws the forms.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SECTION = "scarp"  # [scarp] in secrets.toml; under a section, Streamlit does not export it to os.environ
PASSWORD_KEY = "password"
ALLOW_KEYS = ("allowed_emails", "allowed_domains")  # [scarp] lists that narrow who may sign in
IMPORT_ROOTS_KEY = "server_import_roots"  # [scarp] folders the Scenes page may import from by path
AUTH_SECTION = "auth"  # Streamlit's own section for st.login
AUTH_SHARED_KEYS = ("redirect_uri", "cookie_secret")
AUTH_PROVIDER_KEYS = ("client_id", "client_secret", "server_metadata_url")
AUTH_TABLES = ("client_kwargs",)  # tables in [auth] that are settings, not named providers
MAX_NAME = 120  # a reviewer name ends up in every export's attribute table


@dataclass(frozen=True)
class AccessPlan:
    """The gates a deployment asks for. `problem` set means the configuration is unusable: refuse all."""

    password: bool = False
    oidc_providers: tuple[str | None, ...] = ()  # None: the unnamed provider (keys directly in [auth])
    problem: str | None = None

    @property
    def oidc(self) -> bool:
        return bool(self.oidc_providers)

    @property
    def shared(self) -> bool:
        """Any gate at all: the app is meant for more than one person."""
        return self.password or self.oidc


def authlib_installed() -> bool:
    """st.login needs Authlib (in requirements.txt; a hand-made environment may lack it)."""
    return importlib.util.find_spec("authlib") is not None


def _providers(auth: Mapping[str, Any]) -> tuple[tuple[str | None, ...], list[str]]:
    """The providers [auth] configures, and what is missing from them."""
    providers: list[str | None] = []
    missing: list[str] = []
    if any(key in auth for key in AUTH_PROVIDER_KEYS):
        providers.append(None)
        missing += [f"[auth] {key}" for key in AUTH_PROVIDER_KEYS if not auth.get(key)]
    for name, value in auth.items():
        if isinstance(value, Mapping) and name not in AUTH_TABLES:
            providers.append(str(name))
            missing += [f"[auth.{name}] {key}" for key in AUTH_PROVIDER_KEYS if not value.get(key)]
    return tuple(providers), missing


def plan(secrets: Mapping[str, Any]) -> AccessPlan:
    """Which gates `secrets` (the parsed secrets.toml) asks for. The plan holds no secret's value."""
    problems: list[str] = []
    section = secrets.get(SECTION, {})
    if not isinstance(section, Mapping):
        problems.append(f"[{SECTION}] must be a table")
        section = {}
    password = PASSWORD_KEY in section
    if password and not (isinstance(section[PASSWORD_KEY], str) and section[PASSWORD_KEY]):
        problems.append(f"[{SECTION}] {PASSWORD_KEY} must be a non-empty string")

    for key in ALLOW_KEYS:
        value = section.get(key, [])
        if not _strings(value):
            problems.append(f"[{SECTION}] {key} must be a list of non-empty strings")
        elif value and AUTH_SECTION not in secrets:
            problems.append(f"[{SECTION}] {key} needs sign-in ([auth]) to know who is who")
    roots = section.get(IMPORT_ROOTS_KEY, [])
    if not (_strings(roots) and all(r.startswith("/") for r in roots)):
        problems.append(f"[{SECTION}] {IMPORT_ROOTS_KEY} must be a list of absolute folder paths")

    providers: tuple[str | None, ...] = ()
    auth = secrets.get(AUTH_SECTION)
    if auth is not None:
        if not isinstance(auth, Mapping) or not auth:
            problems.append(f"[{AUTH_SECTION}] must be a table of OpenID Connect settings")
        else:
            providers, missing = _providers(auth)
            missing = [f"[auth] {key}" for key in AUTH_SHARED_KEYS if not auth.get(key)] + missing
            named = [p for p in providers if p is not None and "_" in p]
            if not providers:
                problems.append("[auth] names no identity provider (client_id, client_secret, …)")
            elif missing:
                problems.append("missing " + ", ".join(missing))
            elif named:
                problems.append(f"provider names may not hold underscores (Streamlit refuses them): {named}")
            elif not authlib_installed():
                problems.append("signing in needs Authlib: pip install 'Authlib>=1.3.2'")
    return AccessPlan(
        password=password,
        oidc_providers=providers,
        problem="; ".join(problems) or None,
    )


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)


def server_import_roots(secrets: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The folders the Scenes page may import from by path: those listed in [scarp]
    server_import_roots; none on a shared deployment that lists none; None (anywhere) in the local
    default, where the user runs the server on their own machine."""
    section = secrets.get(SECTION, {})
    section = section if isinstance(section, Mapping) else {}
    if IMPORT_ROOTS_KEY in section:
        return tuple(section[IMPORT_ROOTS_KEY])
    return () if plan(secrets).shared else None


def check_password(given: str, expected: str) -> bool:
    """Constant-time comparison of the two passwords' SHA-256 digests (equal lengths, so the time taken
    tells nothing about the configured password's length either)."""
    if not expected:
        return False  # an empty configured password never opens the app
    digest = [hashlib.sha256(text.encode("utf-8")).digest() for text in (given, expected)]
    return hmac.compare_digest(digest[0], digest[1])


def configured_password(secrets: Mapping[str, Any]) -> str:
    section = secrets.get(SECTION, {})
    value = section.get(PASSWORD_KEY, "") if isinstance(section, Mapping) else ""
    return value if isinstance(value, str) else ""


def identity_allowed(user: Mapping[str, Any], secrets: Mapping[str, Any]) -> bool:
    """Whether a signed-in user may in: anyone the provider signs in, unless [scarp] lists emails or
    domains; then only a (not unverified) email among them. A provider such as Google signs in any of
    its accounts, so a team on one of them narrows it here."""
    section = secrets.get(SECTION, {})
    section = section if isinstance(section, Mapping) else {}
    emails = {str(e).strip().lower() for e in section.get("allowed_emails", [])}
    domains = {str(d).strip().lower().lstrip("@") for d in section.get("allowed_domains", [])}
    if not emails and not domains:
        return True
    email = str(user.get("email") or "").strip().lower()
    if not email or user.get("email_verified") is False:
        return False
    return email in emails or email.rpartition("@")[2] in domains


def reviewer_name(raw: str | None) -> str:
    """A typed name tidied for the record: outer spaces stripped, inner runs of whitespace made one space."""
    return " ".join((raw or "").split())


def reviewer_problem(name: str | None) -> str | None:
    """Why `name` cannot sign a save (None when it can). Saves are always attributed, shared or not."""
    name = reviewer_name(name)
    if not name:
        return "type your name under Reviewer in the sidebar first: every saved version carries it."
    if len(name) > MAX_NAME:
        return f"the reviewer name is {len(name)} characters long; at most {MAX_NAME} are kept."
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        return "the reviewer name holds control characters; type it again."
    return None


def identity_name(user: Mapping[str, Any]) -> str:
    """The reviewer name for a signed-in user: "Name <email>" (the email keeps two Anas apart), or
    whichever of the two the provider sent; "" when it sent neither."""
    name = reviewer_name(str(user.get("name") or user.get("preferred_username") or ""))
    email = reviewer_name(str(user.get("email") or ""))
    if name and email and email != name:
        return f"{name} <{email}>"[:MAX_NAME]
    return (name or email)[:MAX_NAME]
