"""J and F on hand-made masks whose values are worked out by hand, plus a brute-force cross-check."""

import math

import numpy as np
import pytest

from videolisa.masks import PackedMasks
from videolisa.metrics import (
    ObjectScores,
    boundary_f_measure,
    boundary_map,
    boundary_radius,
    disk,
    frame_scores,
    jaccard,
    score_masks,
)


def square(top, left, size=10, shape=(100, 100)):
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_radius_follows_the_image_diagonal():
    assert boundary_radius(100, 100) == 2  # 0.008 * 141.4 = 1.13
    assert boundary_radius(480, 854) == 8  # 0.008 * 979.6 = 7.84
    assert boundary_radius(1080, 1920) == 18  # 0.008 * 2202.9 = 17.6
    assert boundary_radius(100, 100, tolerance=0.05) == 8


def test_disk_is_the_set_of_offsets_within_the_radius():
    assert disk(1).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert disk(2).tolist() == [
        [0, 0, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
        [0, 1, 1, 1, 0],
        [0, 0, 1, 0, 0],
    ]
    assert disk(8).shape == (17, 17) and disk(8).sum() == 197  # lattice points with x^2 + y^2 <= 64


def test_boundary_of_a_square_is_the_ring_half_a_pixel_up_and_left():
    edge = boundary_map(square(20, 30))
    ring = np.zeros_like(edge)
    ring[19:30, 29:40] = True
    ring[20:29, 30:39] = False  # outline of rows 19..29 x cols 29..39
    assert np.array_equal(edge, ring)
    assert edge.sum() == 40


def test_image_border_is_no_boundary():
    left = np.zeros((6, 10), dtype=bool)
    left[:, :5] = True
    expected = np.zeros_like(left)
    expected[:, 4] = True
    # Both halves share one boundary column; nothing is drawn along the image border.
    assert np.array_equal(boundary_map(left), expected)
    assert np.array_equal(boundary_map(~left), expected)
    assert not boundary_map(np.ones((6, 10), dtype=bool)).any()


def test_identical_masks_score_one():
    mask = square(20, 30)
    assert jaccard(mask, mask) == 1.0
    assert boundary_f_measure(mask, mask) == 1.0


def test_disjoint_masks_score_zero():
    a, b = square(10, 10), square(60, 60)
    assert jaccard(a, b) == 0.0
    assert boundary_f_measure(a, b) == 0.0


def test_touching_disjoint_masks_share_boundary_credit():
    # No overlap, but the boundaries lie within the 2-pixel tolerance of each other on one side.
    a, b = square(20, 20), square(20, 30)
    assert jaccard(a, b) == 0.0
    assert 0.0 < boundary_f_measure(a, b) < 1.0


def test_square_shifted_within_the_tolerance():
    a, b = square(20, 20), square(20, 22)
    assert jaccard(a, b) == pytest.approx(80 / 120)  # 8 x 10 overlap, 12 x 10 union
    assert boundary_f_measure(a, b) == 1.0  # every boundary pixel is within 2 px of the other ring


def test_square_shifted_beyond_the_tolerance():
    a, b = square(20, 20), square(20, 23)
    assert jaccard(a, b) == pytest.approx(70 / 130)
    # Of each 40-pixel ring, 24 pixels lie within 2 px of the other ring: 10 on the top row, 10 on
    # the bottom row and 4 near the ends of the far side; P = R = 0.6.
    assert boundary_f_measure(a, b) == pytest.approx(0.6)
    assert boundary_f_measure(b, a) == pytest.approx(0.6)


def test_extra_blob_halves_precision():
    gt = square(20, 20)
    pred = gt | square(60, 60)
    assert jaccard(pred, gt) == pytest.approx(0.5)
    # precision 40/80, recall 1 -> F = 2 * 0.5 / 1.5
    assert boundary_f_measure(pred, gt) == pytest.approx(2 / 3)
    assert boundary_f_measure(gt, pred) == pytest.approx(2 / 3)


def test_empty_masks():
    empty = np.zeros((100, 100), dtype=bool)
    mask = square(20, 20)
    assert jaccard(empty, empty) == 1.0
    assert boundary_f_measure(empty, empty) == 1.0
    # Only the ground truth has a boundary: precision 1, recall 0.
    assert jaccard(empty, mask) == 0.0
    assert boundary_f_measure(empty, mask) == 0.0
    # Only the prediction has one: precision 0, recall 1.
    assert jaccard(mask, empty) == 0.0
    assert boundary_f_measure(mask, empty) == 0.0


def test_full_frame_masks_have_no_boundary():
    full = np.ones((50, 80), dtype=bool)
    assert frame_scores(full, full, radius=2) == (1.0, 1.0)
    partial = full.copy()
    partial[10:20, 10:20] = False
    j, f = frame_scores(partial, full, radius=2)
    assert j == pytest.approx(1 - 100 / 4000)
    assert f == 0.0  # the prediction has a boundary, the ground truth none


def test_masks_of_different_sizes_are_refused():
    with pytest.raises(ValueError, match="same size"):
        jaccard(np.zeros((4, 5), bool), np.zeros((5, 4), bool))


def test_score_masks_keeps_per_frame_values_and_means():
    gt = np.stack([square(20, 20), square(20, 20), np.zeros((100, 100), bool)])  # [3, 100, 100]
    pred = np.stack([square(20, 20), square(20, 23), square(5, 5)])
    scores = score_masks(PackedMasks.from_array(pred), PackedMasks.from_array(gt))
    assert isinstance(scores, ObjectScores)
    assert scores.j == pytest.approx((1.0, 70 / 130, 0.0))
    assert scores.f == pytest.approx((1.0, 0.6, 0.0))
    assert scores.J == pytest.approx((1 + 70 / 130) / 3)
    assert scores.F == pytest.approx(1.6 / 3)
    assert scores.JF == pytest.approx((scores.J + scores.F) / 2)
    assert score_masks(pred, gt) == scores  # plain arrays give the same
    with pytest.raises(ValueError):
        score_masks(pred[:2], gt)


def _brute_force(pred, gt):
    """The definitions written out directly: edge-padded neighbour tests, explicit distances."""

    def edge(mask):
        padded = np.pad(mask, ((0, 1), (0, 1)), mode="edge")
        here = padded[:-1, :-1]
        return (here != padded[:-1, 1:]) | (here != padded[1:, :-1]) | (here != padded[1:, 1:])

    union = (pred | gt).sum()
    j = 1.0 if union == 0 else (pred & gt).sum() / union
    pe, ge = np.argwhere(edge(pred)), np.argwhere(edge(gt))
    if len(pe) == 0 and len(ge) == 0:
        return j, 1.0
    if len(pe) == 0 or len(ge) == 0:
        return j, 0.0
    radius = math.ceil(0.008 * math.hypot(*pred.shape))
    dist2 = ((pe[:, None, :] - ge[None, :, :]) ** 2).sum(-1)  # [n_pred, n_gt]
    precision = (dist2.min(1) <= radius**2).mean()
    recall = (dist2.min(0) <= radius**2).mean()
    f = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return j, f


def test_agrees_with_the_definitions_on_random_masks():
    rng = np.random.default_rng(7)
    for trial in range(150):
        h, w = rng.integers(1, 160, size=2)
        masks = []
        for _ in range(2):
            mask = np.zeros((h, w), dtype=bool)
            for _ in range(rng.integers(0, 4)):
                y, x = rng.integers(0, h), rng.integers(0, w)
                mask[y : y + rng.integers(1, h + 1), x : x + rng.integers(1, w + 1)] ^= True
            masks.append(mask if trial % 3 else mask | (rng.random((h, w)) < 0.02))
        pred, gt = masks
        expected = _brute_force(pred, gt)
        got = frame_scores(pred, gt, boundary_radius(h, w))
        assert got == pytest.approx(expected), (trial, h, w)
