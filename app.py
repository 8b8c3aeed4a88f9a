"""PriceTune: build the UI (ui/), read the login, share and host settings, launch."""

from __future__ import annotations

import os

from ui.access import AuthError, auth_users
from ui.layout import build_app

demo = build_app()


def main() -> None:
    try:
        users = auth_users()
    except AuthError as exc:  # before anything listens: an empty password would let anyone in
        raise SystemExit(f"Refusing to start: {exc}") from None
    share = os.environ.get("PRICETUNE_SHARE", "") in ("1", "true", "yes")
    if share and not users:
        raise SystemExit("Refusing a public share link without login: set PRICETUNE_AUTH=user:password first, "
                         "or anyone with the link could use your GPU.")
    # On a Space the platform's port and host apply; locally only this machine can reach the app by default.
    host = os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    demo.queue(default_concurrency_limit=4).launch(
        server_name=host, server_port=int(os.environ.get("PORT", 7860)), share=share, auth=users or None,
        max_file_size=os.environ.get("PRICETUNE_MAX_FILE_SIZE", "200mb"), allowed_paths=[])


if __name__ == "__main__":
    main()
