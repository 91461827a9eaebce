"""Defaults and limits in one place.

The library's defaults reproduce the official inference; limits are opt-in for the library and the
command line (``Limits()`` is "no limit") and switched on by the app (``APP_LIMITS``).
"""

from __future__ import annotations

import numbers
import os
from dataclasses import dataclass, fields
from typing import Optional

import numpy as np

from .errors import InvalidSettings, amount, counted

# Released checkpoints.
DEFAULT_MODEL = "ZechenBai/VideoLISA-3.8B"
DEFAULT_VISION_TOWER = "openai/clip-vit-large-patch14-336"
DEFAULT_SAM2 = "facebook/sam2.1-hiera-large"
# The name that asks for a tiny random preview instead (the app's --tiny, the command line's --model tiny).
TINY = "tiny"

# Sparse Dense Sampling (MODEL_SPEC 1.2/1.3): the README and every evaluation script use 32/4.
NUM_FRAMES_SPARSE = 32
NUM_FRAMES_DENSE = 4

# Text generation (optional, greedy).
MAX_NEW_TOKENS = 64


def env_number(name: str, default, minimum: float = 0, whole: bool = True, env=None):
    """The number an environment variable sets, ``default`` when it is unset or blank.

    A value that is not a number of at least ``minimum`` raises InvalidSettings naming the variable: a typo in a
    deployment's settings is told at start, rather than run with a default nobody chose.
    """
    text = (os.environ if env is None else env).get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        value = None
    if value is None or not minimum <= value < float("inf"):
        kind = "a whole number" if whole else "a number"
        raise InvalidSettings(f"The environment variable {name} must be {kind} of at least {minimum:g}; it is "
                              f"{text!r}. Correct it, or unset it for the default.")
    return value


def whole_number(name: str, value, minimum: int) -> int:
    """An option that counts something, as a plain int; InvalidSettings, naming the option, for anything else
    (True is not 1 and "8" is not 8 here, though Python would compare them so)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InvalidSettings(f"{name} must be a whole number of at least {minimum}; got {value!r} "
                              f"({type(value).__name__}).")
    if value < minimum:
        raise InvalidSettings(f"{name} must be a whole number of at least {minimum}; got {value}.")
    return int(value)


def switch(name: str, value) -> bool:
    """An on/off option as a bool; InvalidSettings, naming the option, for anything else (the text "false" is true)."""
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidSettings(f"{name} must be True or False; got {value!r} ({type(value).__name__}).")
    return bool(value)


def default_sam_batch(device_type: str) -> int:
    """Frames per SAM image-encoder batch on this kind of device, unless VIDEOLISA_SAM_BATCH says otherwise."""
    # A batch bounds device memory whatever the video length: 8 on a GPU, 2 on a CPU (whose smaller batches
    # reuse the C allocator's memory instead of mapping new: 10-20% faster).
    return env_number("VIDEOLISA_SAM_BATCH", None, minimum=1) or (8 if device_type == "cuda" else 2)


@dataclass(frozen=True)
class Limits:
    """Input limits. ``None`` means unlimited; the library default enforces nothing."""

    max_upload_mb: Optional[float] = None
    max_duration_s: Optional[float] = None
    max_frames: Optional[int] = None
    max_pixels: Optional[int] = None  # width x height; larger videos and images are refused before decoding
    max_inference_side: Optional[int] = None  # frames are downscaled so their short side is at most this
    max_prompt_tokens: Optional[int] = None
    max_prompt_chars: Optional[int] = None

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            # Zero is "no limit", as None is: both are falsy wherever a limit is applied.
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0):
                raise InvalidSettings(f"The limit {field.name} must be a number of zero or more (zero or None: no "
                                      f"limit); got {value!r}.")

    def length(self) -> str:
        """The duration and frame limits for a sentence, e.g. '60 s or 1800 frames' (empty when neither is set)."""
        parts = [f"{self.max_duration_s:g} s" if self.max_duration_s else "",
                 counted(self.max_frames, "frame") if self.max_frames else ""]
        return " or ".join(part for part in parts if part)

    def describe(self) -> str:
        parts = []
        if self.max_upload_mb:
            parts.append(f"uploads up to {self.max_upload_mb:g} MB")
        if self.max_duration_s:
            parts.append(f"the first {self.max_duration_s:g} s of a video")
        if self.max_frames:
            parts.append(f"at most {counted(self.max_frames, 'frame')}")
        if self.max_pixels:
            parts.append(f"up to {amount(self.max_pixels / 1e6)} megapixels per frame")
        if self.max_inference_side:
            parts.append(f"frames read at up to {self.max_inference_side}p for inference (output at full size)")
        if self.max_prompt_tokens:
            parts.append(f"prompts up to {self.max_prompt_tokens} tokens")
        return ", ".join(parts) if parts else "no limits"


NO_LIMITS = Limits()

# What the public app applies by default. 1800 frames is 60 s at 30 fps: high-frame-rate clips are
# trimmed sooner. 4096x2160 (DCI 4K) also admits UHD; 8K would take minutes to decode and re-encode.
APP_LIMITS = Limits(
    max_upload_mb=200,
    max_duration_s=60,
    max_frames=1800,
    max_pixels=4096 * 2160,
    max_inference_side=1080,
    max_prompt_tokens=512,
    max_prompt_chars=4000,
)
