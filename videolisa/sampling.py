"""Sparse / dense frame selection of VideoLISA (MODEL_SPEC 1.2, 1.3). Pure functions."""

from __future__ import annotations

import numpy as np

from .errors import InvalidSettings

VISUAL_TOKENS_PER_FRAME = 576  # CLIP ViT-L/14 at 336 px: a 24 x 24 patch grid


def _bin_midpoints(edges: np.ndarray) -> list[int]:
    # Bin i covers [edges[i], edges[i+1] - 1]; its midpoint is taken with floor division.
    return [int((a + b - 1) // 2) for a, b in zip(edges[:-1], edges[1:])]


def uniform_sample(total: int, k: int) -> list[int]:
    """Midpoints of k equal bins over range(total), as the official ``uniform_sample``."""
    edges = np.linspace(0, total, k + 1).astype(int)
    return _bin_midpoints(edges)


def check_frame_counts(num_sparse: int, num_dense: int) -> None:
    if num_sparse < 1 or num_dense < 1:
        raise InvalidSettings(
            f"The number of sampled frames must be at least 1 (got T_sparse={num_sparse}, T_dense={num_dense})."
        )
    if num_sparse < num_dense + 1:
        raise InvalidSettings(
            f"T_sparse must be at least T_dense + 1 (got T_sparse={num_sparse}, T_dense={num_dense}): "
            "the dense frames are chosen among the sparse ones."
        )


def sparse_indices(num_frames: int, num_sparse: int) -> list[int]:
    """Frame numbers of the T_sparse frames the language model sees (sorted, with repeats for short videos)."""
    if num_frames < 1:
        raise InvalidSettings("The video has no frames, so there is nothing to sample.")
    if num_sparse < 1:
        raise InvalidSettings(f"T_sparse must be at least 1 (got {num_sparse}).")
    if num_frames > num_sparse:
        return sorted(uniform_sample(num_frames, num_sparse))
    repeated = list(range(num_frames)) * (num_sparse // num_frames)
    return sorted(repeated + uniform_sample(num_frames, num_sparse % num_frames))


def dense_positions(num_sparse: int, num_dense: int) -> list[int]:
    """Positions *within the sparse list* of the T_dense frames that keep all their visual tokens."""
    check_frame_counts(num_sparse, num_dense)
    edges = np.linspace(0, num_sparse - 1, num_dense + 1).astype(int)
    return _bin_midpoints(edges)


def num_visual_tokens(num_sparse: int, num_dense: int) -> int:
    """One pooled token per sparse frame plus every patch token of each dense frame."""
    return num_sparse + VISUAL_TOKENS_PER_FRAME * num_dense
