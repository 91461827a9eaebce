import numpy as np
import pytest

from videolisa.masks import PackedMasks


def test_round_trip_slicing_and_areas():
    rng = np.random.default_rng(0)
    masks = rng.random((5, 7, 13)) > 0.5  # odd sizes: bits do not fill whole bytes
    packed = PackedMasks.from_array(masks)
    assert packed.shape == (5, 7, 13) and len(packed) == 5
    np.testing.assert_array_equal(np.asarray(packed), masks)
    np.testing.assert_array_equal(packed[3], masks[3])
    np.testing.assert_array_equal(packed[1:4], masks[1:4])
    np.testing.assert_array_equal(packed.areas(), masks.sum(axis=(1, 2)))
    assert packed[0].dtype == bool
    assert packed.nbytes <= 5 * (7 * 13 // 8 + 1)  # noise does not deflate: kept as packed bits


def test_region_masks_are_kept_deflated_and_read_back_exactly():
    yy, xx = np.mgrid[0:1080, 0:1920]
    frames = [(xx - 300 - 40 * t) ** 2 + (yy - 540) ** 2 < 200 ** 2 for t in range(6)]  # [H, W] discs
    frames.append(np.random.default_rng(1).random((1080, 1920)) > 0.5)  # one frame that cannot shrink
    packed = PackedMasks(1080, 1920, frames)
    for got, want in zip(packed, frames):
        np.testing.assert_array_equal(got, want)
    assert packed.nbytes < 6 * 10_000 + 1920 * 1080 // 8 + 1  # each disc in under 10 KB, the noise as bits
    again = PackedMasks(1080, 1920, frames)
    assert again == packed
    again.append(frames[0])
    packed.append(frames[1])
    assert again != packed


def test_equality_and_shape_checks():
    a = PackedMasks.from_array(np.zeros((2, 4, 4), bool))
    b = PackedMasks.from_array(np.zeros((2, 4, 4), bool))
    assert a == b
    b.append(np.ones((4, 4), bool))
    assert a != b
    with pytest.raises(ValueError, match="does not match"):
        a.append(np.zeros((4, 5), bool))
