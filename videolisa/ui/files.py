"""Where the app writes: one fresh directory per request under one root, pruned after a time to live.

Nothing has a fixed name, so two sessions never share or overwrite a file, and the root lives under
the system temp directory, which Gradio serves from without extra configuration.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

ROOT_NAME = "videolisa-app"
# Our outputs live as long as Gradio keeps its copies (Blocks(delete_cache=...) uses the same age).
OUTPUT_TTL_S = 2 * 3600


def output_root() -> Path:
    root = Path(tempfile.gettempdir()) / ROOT_NAME
    root.mkdir(parents=True, exist_ok=True)
    return root


def prune(root: Path, max_age_s: float = OUTPUT_TTL_S, now: Optional[float] = None) -> list[Path]:
    """Delete the request directories under ``root`` last touched more than ``max_age_s`` ago; returns them."""
    now = time.time() if now is None else now
    removed = []
    for entry in root.iterdir():
        try:
            if entry.is_dir() and now - entry.stat().st_mtime > max_age_s:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        except FileNotFoundError:  # another request pruned it first
            continue
    return removed


def new_request_dir(prefix: str = "run-") -> Path:
    """A new empty directory for one request's outputs (old ones are pruned on the way)."""
    root = output_root()
    prune(root)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))


def new_subdir(parent: Path, prefix: str) -> Path:
    """A fresh directory inside a request's directory (each re-render gets its own paths)."""
    os.utime(parent)  # a re-render keeps the request's outputs alive
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
