"""Login users, the user of a request, and who may control a run. The handler is the boundary, not the page."""

from __future__ import annotations

import os

import gradio as gr

from trainer.runs import RunFolder


def auth_users() -> list[tuple[str, str]]:
    """PRICETUNE_AUTH="user:password,user2:password2" turns login on."""
    pairs = [p.split(":", 1) for p in os.environ.get("PRICETUNE_AUTH", "").split(",") if ":" in p]
    return [(u.strip(), pw) for u, pw in pairs if u.strip()]


def current_user(request: gr.Request | None) -> str | None:
    return getattr(request, "username", None) if request is not None else None


def may_control(run: RunFolder, request: gr.Request | None) -> bool:
    """With login on, only the run's owner or an admin (PRICETUNE_ADMINS) may stop, resume, delete or export it;
    all may watch."""
    if not auth_users():
        return True
    user = current_user(request)
    admins = {a.strip() for a in os.environ.get("PRICETUNE_ADMINS", "").split(",") if a.strip()}
    return user is not None and (user == run.status().get("owner") or user in admins)
