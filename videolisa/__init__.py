"""VideoLISA inference as a library: ``load_pipeline(...).segment(video, prompt)``."""

from importlib import import_module

from .errors import (CheckpointMismatch, InputTooLarge, InvalidPrompt, InvalidSettings, InvalidVideo,
                     ModelUnavailable, VideoLISAError)
from .masks import PackedMasks
from .settings import APP_LIMITS, NO_LIMITS, Limits

__all__ = [
    "load_pipeline", "VideoLISAPipeline", "Segmentation", "PackedMasks", "Limits", "NO_LIMITS", "APP_LIMITS",
    "VideoLISAError", "InvalidVideo", "InputTooLarge", "InvalidSettings", "InvalidPrompt", "ModelUnavailable",
    "CheckpointMismatch",
]

# The pipeline (torch and the model code) is imported on first use, so that `python -m videolisa` answers
# --help and refuses a mistyped setting in a moment instead of after importing torch.
_FROM_PIPELINE = ("load_pipeline", "VideoLISAPipeline", "Segmentation")


def __getattr__(name: str):
    if name in _FROM_PIPELINE:
        value = getattr(import_module(".pipeline", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
