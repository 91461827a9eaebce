"""segment(post_optimize=True): SAM 2 seeded with the dense frames' masks, or the raw masks and the reason why not."""

import numpy as np
import pytest

from videolisa.pipeline import VideoLISAPipeline

SETTINGS = dict(num_frames_sparse=4, num_frames_dense=2, post_optimize=True)


@pytest.fixture(scope="module")
def tiny_sam2(tmp_path_factory):
    from videolisa.model.tiny_sam2 import write_tiny_sam2

    return write_tiny_sam2(tmp_path_factory.mktemp("sam2-tiny"))


def test_post_optimization_keeps_both_mask_sets_and_the_references(tiny_model, tiny_sam2, small_frames):
    pipe = VideoLISAPipeline(tiny_model, sam2=str(tiny_sam2), sam_batch_size=6)
    seg = pipe.segment(small_frames, "the yellow square", **SETTINGS)
    post = seg.post_optimization
    assert post.applied, post.reason
    assert post.reference_frames == seg.dense_frame_indices == (0, 1)
    assert len(seg.masks) == len(seg.raw_masks) == 6
    assert np.asarray(seg.masks).shape == (6, 61, 83)
    for f in seg.dense_frame_indices:
        np.testing.assert_array_equal(seg.masks[f], seg.raw_masks[f])
    assert "post_optimization" in seg.timings
    assert seg.card()["post_optimization"]["applied"] is True


def test_an_unavailable_sam2_returns_the_raw_masks_and_says_why(tiny_model, small_frames, tmp_path):
    pipe = VideoLISAPipeline(tiny_model, sam2=str(tmp_path / "no-sam2-here"))
    seg = pipe.segment(small_frames, "the yellow square", **SETTINGS)
    assert not seg.post_optimization.applied
    assert "unavailable" in seg.post_optimization.reason and "no-sam2-here" in seg.post_optimization.reason
    assert seg.masks == seg.raw_masks


def test_post_optimization_switched_off_says_so(tiny_model, small_frames):
    seg = VideoLISAPipeline(tiny_model, sam2=None).segment(small_frames, "the yellow square", **SETTINGS)
    assert not seg.post_optimization.applied
    assert "No SAM 2 checkpoint is configured" in seg.post_optimization.reason
    assert seg.masks == seg.raw_masks
