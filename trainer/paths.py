"""Where runs and the model cache live: /data on a Hugging Face Space with persistent storage, else ./runs and ./.cache."""

from __future__ import annotations

import os
from pathlib import Path


def _data_root() -> Path | None:
    # A Space with persistent storage mounts it at /data; anything else written there is lost on restart.
    root = Path(os.environ.get("PRICETUNE_DATA_ROOT", "/data"))
    return root if root.is_dir() and os.access(root, os.W_OK) else None


def runs_dir() -> Path:
    if "PRICETUNE_RUNS" in os.environ:
        return Path(os.environ["PRICETUNE_RUNS"])
    root = _data_root()
    return root / "pricetune-runs" if root else Path("runs")


def cache_dir() -> Path:
    if "PRICETUNE_CACHE" in os.environ:
        return Path(os.environ["PRICETUNE_CACHE"])
    root = _data_root()
    return root / "pricetune-cache" if root else Path(".cache") / "pricetune"
