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
    assert packed.nbytes <= 5 * (7 * 13 // 8 + 1)


def test_equality_and_shape_checks():
    a = PackedMasks.from_array(np.zeros((2, 4, 4), bool))
    b = PackedMasks.from_array(np.zeros((2, 4, 4), bool))
    assert a == b
    b.append(np.ones((4, 4), bool))
    assert a != b
    with pytest.raises(ValueError, match="does not match"):
        a.append(np.zeros((4, 5), bool))
