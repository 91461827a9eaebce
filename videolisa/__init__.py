"""VideoLISA inference as a library: ``load_pipeline(...).segment(video, prompt)``."""

from .errors import (CheckpointMismatch, InputTooLarge, InvalidPrompt, InvalidSettings, InvalidVideo,
                     ModelUnavailable, VideoLISAError)
from .masks import PackedMasks
from .pipeline import Segmentation, VideoLISAPipeline, load_pipeline
from .settings import APP_LIMITS, NO_LIMITS, Limits

__all__ = [
    "load_pipeline", "VideoLISAPipeline", "Segmentation", "PackedMasks", "Limits", "NO_LIMITS", "APP_LIMITS",
    "VideoLISAError", "InvalidVideo", "InputTooLarge", "InvalidSettings", "InvalidPrompt", "ModelUnavailable",
    "CheckpointMismatch",
]
