"""Shared fixtures: one tiny official-format checkpoint and one loaded pipeline per test session."""

from __future__ import annotations

import os

# Nothing in the tests may reach a hub or phone home; set before any library import reads them.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("GRADIO_CACHE_EXAMPLES", "false")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    from videolisa.model.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("videolisa-tiny"))


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from videolisa.model.network import VideoLISAModel

    return VideoLISAModel.load(str(tiny_checkpoint))


@pytest.fixture(scope="session")
def pipeline(tiny_model):
    from videolisa.pipeline import VideoLISAPipeline

    return VideoLISAPipeline(tiny_model, sam_batch_size=4)


@pytest.fixture(scope="session")
def small_frames():
    """Six 61x83 frames of a square moving over a gradient: odd size, different every frame."""
    frames = np.zeros((6, 61, 83, 3), np.uint8)
    frames[..., 0] = np.linspace(0, 255, 83, dtype=np.uint8)[None, None]
    frames[..., 2] = np.linspace(255, 0, 61, dtype=np.uint8)[None, :, None]
    for t in range(6):
        frames[t, 10 + 3 * t:30 + 3 * t, 20 + 5 * t:40 + 5 * t] = (240, 200, 40)
    return frames
