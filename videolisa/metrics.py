"""Region similarity J and contour accuracy F, with the definitions of the DAVIS 2017 evaluation.

J is the IoU of predicted and ground-truth masks (1 when both are empty). F is the F-measure of
boundary precision and recall: boundaries are one-pixel maps, and a boundary pixel counts as matched
when the other mask's boundary passes within ``ceil(0.008 * image diagonal)`` pixels of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import cv2
import numpy as np

# Fraction of the image diagonal within which boundary pixels match (DAVIS 2017 ``bound_th``).
BOUNDARY_TOLERANCE = 0.008


def boundary_radius(height: int, width: int, tolerance: float = BOUNDARY_TOLERANCE) -> int:
    """Matching radius in pixels for an image of this size: ceil(tolerance x diagonal)."""
    # Same float operations as the reference (tolerance times the norm of the shape), so the
    # ceiling lands on the same integer.
    return int(math.ceil(tolerance * math.sqrt(height * height + width * width)))


@lru_cache(maxsize=16)
def disk(radius: int) -> np.ndarray:
    """Disk structuring element: offsets (dy, dx) with dy^2 + dx^2 <= radius^2, uint8 [2r+1, 2r+1].

    The same element as scikit-image's ``disk(radius)``, which the DAVIS evaluation uses.
    """
    offsets = np.arange(-radius, radius + 1)
    element = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius * radius).astype(np.uint8)
    element.setflags(write=False)  # cached and shared between callers
    return element


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary of a binary mask (the ``seg2bmap`` definition), bool [H, W].

    A pixel is on the boundary when it differs from its right, lower or lower-right neighbour; the
    image is taken to repeat its last row and column, so the image border itself is no boundary.
    """
    mask = np.asarray(mask, dtype=bool)
    edge = np.zeros(mask.shape, dtype=bool)  # [H, W]
    edge[:, :-1] = mask[:, :-1] != mask[:, 1:]
    edge[:-1, :] |= mask[:-1, :] != mask[1:, :]
    edge[:-1, :-1] |= mask[:-1, :-1] != mask[1:, 1:]
    return edge


def jaccard(pred: np.ndarray, gt: np.ndarray) -> float:
    """Region similarity J = |P and G| / |P or G| of two binary masks; 1.0 when both are empty."""
    pred, gt = _pair(pred, gt)
    union = np.count_nonzero(pred | gt)
    if union == 0:
        return 1.0
    return np.count_nonzero(pred & gt) / union


def boundary_f_measure(pred: np.ndarray, gt: np.ndarray, tolerance: float = BOUNDARY_TOLERANCE) -> float:
    """Contour accuracy F of two binary masks.

    Precision is the share of predicted boundary pixels within the matching radius of the
    ground-truth boundary, recall the converse. When only the ground truth has a boundary,
    precision is 1 and recall 0; when only the prediction has one, the reverse; F is 1 when neither
    has one (two empty or two full masks) and 0 when precision + recall is 0.
    """
    pred, gt = _pair(pred, gt)
    return _frame_scores(pred, gt, boundary_radius(*gt.shape, tolerance))[1]


@dataclass(frozen=True)
class ObjectScores:
    """J and F of one object on every frame of a sequence; the sequence values are their means."""

    j: tuple[float, ...]
    f: tuple[float, ...]

    @property
    def J(self) -> float:
        return float(np.mean(self.j))

    @property
    def F(self) -> float:
        return float(np.mean(self.f))

    @property
    def JF(self) -> float:
        return (self.J + self.F) / 2


def score_masks(
    pred: Sequence[np.ndarray], gt: Sequence[np.ndarray], tolerance: float = BOUNDARY_TOLERANCE
) -> ObjectScores:
    """J and F per frame of one object: ``pred`` and ``gt`` are T binary masks of equal size each.

    Arrays [T, H, W] and ``PackedMasks`` both work; masks are taken one frame at a time so that long
    videos are never expanded in memory.
    """
    if len(pred) != len(gt):
        raise ValueError(f"got {len(pred)} predicted masks for {len(gt)} ground-truth masks")
    if len(gt) == 0:
        raise ValueError("cannot score an empty sequence of masks")
    j, f = [], []
    radius = None
    for pred_frame, gt_frame in zip(pred, gt):
        pred_frame, gt_frame = _pair(pred_frame, gt_frame)
        if radius is None:
            radius = boundary_radius(*gt_frame.shape, tolerance)
        frame_j, frame_f = _frame_scores(pred_frame, gt_frame, radius)
        j.append(frame_j)
        f.append(frame_f)
    return ObjectScores(tuple(j), tuple(f))


def frame_scores(pred: np.ndarray, gt: np.ndarray, radius: int) -> tuple[float, float]:
    """(J, F) of one frame, with the boundary matching radius given in pixels."""
    pred, gt = _pair(pred, gt)
    return _frame_scores(pred, gt, radius)


def _pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    if pred.ndim != 2 or pred.shape != gt.shape:
        raise ValueError(f"expected two masks of the same size [H, W], got {pred.shape} and {gt.shape}")
    return pred, gt


def _frame_scores(pred: np.ndarray, gt: np.ndarray, radius: int) -> tuple[float, float]:
    window = _support(pred, gt)
    if window is None:  # both masks empty
        return 1.0, 1.0
    pred, gt = pred[window], gt[window]

    union = np.count_nonzero(pred | gt)
    j = np.count_nonzero(pred & gt) / union if union else 1.0

    pred_edge = boundary_map(pred)
    gt_edge = boundary_map(gt)
    n_pred = np.count_nonzero(pred_edge)
    n_gt = np.count_nonzero(gt_edge)
    if n_pred == 0 and n_gt == 0:
        return j, 1.0
    if n_pred == 0 or n_gt == 0:
        # One side has no boundary: precision/recall are (1, 0) or (0, 1), so F is 0.
        return j, 0.0

    # Every boundary pixel lies inside the window, so dilating there is exact; outside the image
    # cv2.dilate adds nothing (its default border is the minimum value).
    element = disk(radius)
    near_gt = cv2.dilate(gt_edge.view(np.uint8), element).view(bool)
    near_pred = cv2.dilate(pred_edge.view(np.uint8), element).view(bool)
    precision = np.count_nonzero(pred_edge & near_gt) / n_pred
    recall = np.count_nonzero(gt_edge & near_pred) / n_gt
    if precision + recall == 0:
        return j, 0.0
    return j, 2 * precision * recall / (precision + recall)


def _support(pred: np.ndarray, gt: np.ndarray) -> tuple[slice, slice] | None:
    """The smallest window that holds every boundary pixel of both masks, or None if both are empty.

    Boundary pixels lie on the foreground or one pixel above/left of it. One extra background row
    and column below/right keep the neighbour comparisons at the window's edge the same as in the
    full image; where the window reaches the image edge, ``boundary_map``'s repetition of the last
    row/column is what the full image does too.
    """
    rows = np.flatnonzero(pred.any(axis=1) | gt.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(pred.any(axis=0) | gt.any(axis=0))
    return (
        slice(max(rows[0] - 1, 0), rows[-1] + 2),
        slice(max(cols[0] - 1, 0), cols[-1] + 2),
    )
