"""segment(post_optimize=True): SAM 2 seeded with the dense frames' masks, or the raw masks and the reason why not."""

import collections

import av
import numpy as np
import pytest

from media import make_clip, moving_disc_masks
from videolisa import video
from videolisa.masks import PackedMasks
from videolisa.pipeline import VideoLISAPipeline
from videolisa.sampling import dense_positions, sparse_indices
from videolisa.settings import NO_LIMITS
from videolisa.source import open_source

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


def test_post_optimizing_a_video_file_decodes_each_frame_a_bounded_number_of_times(tiny_model, tiny_sam2, tmp_path,
                                                                                  monkeypatch):
    # 300 small frames with a keyframe every second, as phones write them.
    path = make_clip(tmp_path, "long", size=(64, 48), frames=300, fps=30, audio=False, gop=30)
    with av.open(str(path)) as container:
        index_of = {frame.pts: i for i, frame in enumerate(container.decode(video=0))}
    source, _ = open_source(str(path), NO_LIMITS)
    sparse = sparse_indices(300, 8)
    dense = [sparse[d] for d in dense_positions(8, 2)]
    raw = PackedMasks.from_array(moving_disc_masks(300, 48, 64))
    pipe = VideoLISAPipeline(tiny_model, sam2=str(tiny_sam2))
    # segment()'s post-optimization stage on the file, without the SAM pass before it (minutes for 300 frames on a CPU).

    decoded = collections.Counter()  # frame index -> times decoded
    original = video._decoded_frames

    def counting(*args, **kwargs):
        for frame in original(*args, **kwargs):
            decoded[index_of[frame.pts]] += 1
            yield frame

    monkeypatch.setattr(video, "_decoded_frames", counting)
    masks, post = pipe._post_optimize(source, raw, np.full(300, 0.9), dense)
    assert post.applied, post.reason
    assert post.reference_frames == (55, 168) and len(masks) == 300
    # SAM 2 needs three passes over the video: the references in order, forward from the first one to the
    # end, backward from it to frame 0 in ranges of 32 frames, each range read after the one above it. So at
    # most 3 x 300 decoded frames, and no frame decoded more than 4 times: the three passes, and once more
    # where a range that starts before the last one read begins at the keyframe before it (a keyframe every
    # 30 frames, fewer than a range). Decoding from frame 0 for every range took 2148 frames.
    assert set(decoded) == set(range(300))
    assert sum(decoded.values()) <= 3 * 300
    assert max(decoded.values()) <= 4
