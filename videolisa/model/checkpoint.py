"""Finding checkpoint files (local directory or hub id) and reading their tensors.

Weights are read from ``*.safetensors`` (single or sharded with an index) or, failing that, from
``pytorch_model*.bin`` through ``torch.load(weights_only=True)``: never arbitrary pickles.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterable, Optional, Sequence

import torch
from safetensors import safe_open

from ..errors import CheckpointMismatch, ModelUnavailable

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_directory(
    name: str | os.PathLike,
    *,
    patterns: Sequence[str],
    fallback_patterns: Sequence[str] = (),
    revision: Optional[str] = None,
    what: str = "checkpoint",
    base: Optional[Path] = None,
) -> Path:
    """A local directory for ``name``: an existing directory (relative ones also against ``base``) or a hub id.

    Hub ids go through ``huggingface_hub.snapshot_download``, which honours ``HF_HUB_OFFLINE``,
    ``HF_HOME``/``HF_HUB_CACHE`` and ``revision``. ``fallback_patterns`` are fetched only when the
    first patterns brought no weights (e.g. ``pytorch_model.bin`` for repositories without safetensors).
    """
    text = os.fspath(name)
    candidates = [Path(text).expanduser()]
    if base is not None and not Path(text).is_absolute():
        candidates.insert(0, base / text)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    if not _HUB_ID.match(text):
        raise ModelUnavailable(
            f"The {what} {text!r} is neither a directory nor a Hugging Face repository id (owner/name)."
        )
    directory = _download(text, patterns, revision, what)
    if fallback_patterns and not weight_files(directory, required=False):
        directory = _download(text, fallback_patterns, revision, what)
    return directory


def _download(repo: str, patterns: Sequence[str], revision: Optional[str], what: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, revision=revision, allow_patterns=list(patterns)))
    except Exception as exc:  # the hub client raises many types (offline, not cached, HTTP, auth)
        raise ModelUnavailable(
            f"The {what} {repo!r} could not be downloaded or found in the local Hugging Face cache "
            f"({type(exc).__name__}). Download it where the hub is reachable "
            f"(`huggingface-cli download {repo}`) into the cache (HF_HOME), or pass a local directory instead."
        ) from exc


def weight_files(directory: Path, required: bool = True) -> list[Path]:
    """The weight files of a checkpoint directory, preferring safetensors."""
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"),
                               ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        index = directory / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            missing = [s for s in shards if not (directory / s).is_file()]
            if missing:
                raise ModelUnavailable(f"The checkpoint at {directory} lacks the weight files {', '.join(missing)}.")
            return [directory / s for s in shards]
        if (directory / single).is_file():
            return [directory / single]
    loose = sorted(directory.glob("*.safetensors"))
    if loose or not required:
        return loose
    raise ModelUnavailable(
        f"No weights found in {directory}: expected model.safetensors (or shards with an index) or pytorch_model.bin."
    )


class WeightReader:
    """Key names, shapes and tensors of a checkpoint's weight files, read lazily."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.files = weight_files(directory)
        self._where: dict[str, Path] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._bins: dict[Path, dict[str, torch.Tensor]] = {}
        for file in self.files:
            if file.suffix == ".safetensors":
                with safe_open(str(file), framework="pt") as f:
                    for key in f.keys():
                        self._where[key] = file
                        self._shapes[key] = tuple(f.get_slice(key).get_shape())
            else:
                for key, tensor in self._load_bin(file).items():
                    self._where[key] = file
                    self._shapes[key] = tuple(tensor.shape)

    def _load_bin(self, file: Path) -> dict[str, torch.Tensor]:
        if file not in self._bins:
            try:
                self._bins[file] = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except Exception as exc:
                raise ModelUnavailable(f"{file.name} could not be read as a weights-only PyTorch file: {exc}") from exc
        return self._bins[file]

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self._shapes)

    def read(self, keys: Iterable[str], strip_prefix: str = "") -> dict[str, torch.Tensor]:
        """Tensors for ``keys`` (on the CPU, as stored), named without ``strip_prefix``."""
        out: dict[str, torch.Tensor] = {}
        by_file: dict[Path, list[str]] = {}
        for key in keys:
            by_file.setdefault(self._where[key], []).append(key)
        for file, file_keys in by_file.items():
            if file.suffix == ".safetensors":
                with safe_open(str(file), framework="pt") as f:
                    for key in file_keys:
                        out[key[len(strip_prefix):]] = f.get_tensor(key)
            else:
                tensors = self._load_bin(file)
                for key in file_keys:
                    out[key[len(strip_prefix):]] = tensors[key]
        return out


def check_keys(
    expected: dict[str, tuple[int, ...]],
    found: dict[str, tuple[int, ...]],
    where: str,
    ignore_unexpected: Iterable[str] = (),
) -> None:
    """Raise CheckpointMismatch naming every missing, unexpected or mis-shaped key."""
    ignore = tuple(ignore_unexpected)
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(k for k in set(found) - set(expected) if not k.startswith(ignore))
    shaped = sorted(
        f"{k} (checkpoint {list(found[k])}, model {list(expected[k])})"
        for k in set(expected) & set(found)
        if tuple(found[k]) != tuple(expected[k])
    )
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("with the wrong shape", shaped)):
        if keys:
            shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
            problems.append(f"{len(keys)} {label}: {shown}")
    if problems:
        raise CheckpointMismatch(
            f"The weights in {where} do not match the model ({'; '.join(problems)}). "
            "Check that the directory holds a VideoLISA checkpoint and that config.json belongs to it."
        )
