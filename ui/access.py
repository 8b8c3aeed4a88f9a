"""Login users, the user of a request, and who may control a run. The handler is the boundary, not the page."""

from __future__ import annotations

import os

import gradio as gr

from trainer.models import model_roots
from trainer.runs import RunFolder


class AuthError(ValueError):
    """PRICETUNE_AUTH that would let someone in without a password, or that names nobody."""

def auth_users() -> list[tuple[str, str]]:
    """PRICETUNE_AUTH="user:password,user2:password2" turns login on; an entry without a password is refused."""
    users = []
    for entry in (e.strip() for e in os.environ.get("PRICETUNE_AUTH", "").split(",")):
        if not entry:
            continue
        user, _, password = entry.partition(":")
        if not user.strip() or not password:
            raise AuthError(f"PRICETUNE_AUTH: {user.strip() or entry!r} needs a non-empty password "
                            "(user:password, comma-separated)")
        users.append((user.strip(), password))
    return users


def model_folders() -> list | None:
    """Where this app accepts local model folders: anywhere on a person's own machine (no login), only under the
    configured roots on a shared one (login on); Gradio's upload folder is never among them by default."""

    return model_roots() if auth_users() else None


def current_user(request: gr.Request | None) -> str | None:
    return getattr(request, "username", None) if request is not None else None


def may_control(run: RunFolder, request: gr.Request | None) -> bool:
    """With login on, only the run's owner or an admin (PRICETUNE_ADMINS) may stop, resume, delete or export it;
    all may watch."""
    if not auth_users():
        return True
    user = current_user(request)
    return user is not None and (user == run.status().get("owner") or user in admins())


def admins() -> set[str]:
    return {a.strip() for a in os.environ.get("PRICETUNE_ADMINS", "").split(",") if a.strip()}


def may_run_hub_code(request: gr.Request | None) -> bool:
    """Hub kernels download and run code on the server: with login on, only an admin may turn them on."""
    return not auth_users() or current_user(request) in admins()
