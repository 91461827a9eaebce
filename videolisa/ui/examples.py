"""The page's examples: media files and prompts listed in ``examples/examples.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif", ".m4v"})


@dataclass(frozen=True)
class Example:
    id: str  # what ?example=<id> in the page's address opens
    path: Path
    prompts: tuple[str, ...]

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_SUFFIXES

    @property
    def prompt_text(self) -> str:
        return "\n".join(self.prompts)

    @property
    def label(self) -> str:
        return f"{self.path.stem.replace('_', ' ').capitalize()}: {' + '.join(self.prompts)}"


def load_examples(directory: Path) -> tuple[Example, ...]:
    """The examples of ``directory/examples.json`` whose files exist."""
    directory = Path(directory)
    listing = directory / "examples.json"
    if not listing.is_file():
        return ()
    examples = []
    for entry in json.loads(listing.read_text(encoding="utf-8")):
        path = directory / entry["file"]
        if path.is_file():
            examples.append(Example(id=entry["id"], path=path, prompts=tuple(entry["prompts"])))
    return tuple(examples)


def find_example(examples: tuple[Example, ...], example_id: Optional[str]) -> Optional[Example]:
    return next((e for e in examples if e.id == example_id), None)
