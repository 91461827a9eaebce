"""Where the app writes: one fresh directory per request under one root, pruned by age and by total size.

Nothing has a fixed name, so two sessions never share or overwrite a file, and the root lives under
the system temp directory, which Gradio serves from without extra configuration.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Mapping, Optional

from ..settings import env_number

ROOT_NAME = "videolisa-app"
# Our outputs live as long as Gradio keeps its copies (Blocks(delete_cache=...) uses the same age).
OUTPUT_TTL_S = 2 * 3600
# Past this total, the oldest request directories go first whatever their age (VIDEOLISA_OUTPUT_BUDGET_MB).
DEFAULT_OUTPUT_BUDGET_MB = 5000
# Directories touched this recently may still be written by a running request: the size budget spares them.
IN_USE_S = 600


def output_root() -> Path:
    root = Path(tempfile.gettempdir()) / ROOT_NAME
    root.mkdir(parents=True, exist_ok=True)
    return root


def output_budget_bytes(env: Mapping[str, str] = os.environ) -> int:
    megabytes = env_number("VIDEOLISA_OUTPUT_BUDGET_MB", DEFAULT_OUTPUT_BUDGET_MB, whole=False, env=env)
    return int(megabytes * 2**20)


def _size(directory: Path) -> int:
    total = 0
    for dirpath, _, names in os.walk(directory):
        for name in names:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                continue
    return total


def prune(root: Path, max_age_s: float = OUTPUT_TTL_S, now: Optional[float] = None,
          max_bytes: Optional[int] = None) -> list[Path]:
    """Delete the request directories under ``root`` last touched more than ``max_age_s`` ago, then, oldest
    first, those not touched in the last ``IN_USE_S`` until the rest fit in ``max_bytes``; returns them."""
    now = time.time() if now is None else now
    entries = []
    for entry in root.iterdir():
        try:
            if entry.is_dir():
                entries.append((entry.stat().st_mtime, entry))
        except FileNotFoundError:  # another request pruned it first
            continue
    entries.sort()
    removed, kept = [], []
    for mtime, entry in entries:
        if now - mtime > max_age_s:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        else:
            kept.append((mtime, entry, _size(entry) if max_bytes is not None else 0))
    if max_bytes is not None:
        total = sum(size for _, _, size in kept)
        for mtime, entry, size in kept:
            if total <= max_bytes:
                break
            if now - mtime > IN_USE_S:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
                total -= size
    return removed


def new_request_dir(prefix: str = "run-") -> Path:
    """A new empty directory for one request's outputs (old ones are pruned on the way)."""
    root = output_root()
    prune(root, max_bytes=output_budget_bytes())
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))


def new_subdir(parent: Path, prefix: str) -> Path:
    """A fresh directory inside a request's directory (each re-render gets its own paths)."""
    os.utime(parent)  # a re-render keeps the request's outputs alive
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def remove_request_dir(directory: Optional[str]) -> None:
    """Delete a request's directory once nothing refers to it; paths outside our root are never touched."""
    if not directory:
        return
    path = Path(directory).resolve()
    if path.parent == output_root().resolve():
        shutil.rmtree(path, ignore_errors=True)
