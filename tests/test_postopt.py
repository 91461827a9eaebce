"""Post-optimization with SAM 2, on a tiny random SAM 2 video checkpoint written by the project."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import Sam2VideoModel, Sam2VideoProcessor

from videolisa.errors import InvalidSettings, InvalidVideo, ModelUnavailable
from videolisa.masks import PackedMasks
from videolisa.model.tiny_sam2 import write_tiny_sam2
from videolisa.postopt import (
    AbsentRule,
    PostOptimization,
    PostOptimizer,
    merge_frame,
    unavailable,
)

H, W = 64, 80


def moving_square(num_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """A red 16 px square moving over a grey background: frames uint8 [T, H, W, 3], masks bool [T, H, W]."""
    frames = np.full((num_frames, H, W, 3), 40, dtype=np.uint8)
    masks = np.zeros((num_frames, H, W), dtype=bool)
    for t in range(num_frames):
        y, x = 8 + (t * 3) % 36, 4 + (t * 5) % 56
        frames[t, y : y + 16, x : x + 16] = (220, 60, 30)
        masks[t, y : y + 16, x : x + 16] = True
    return frames, masks


class FrameSource:
    """``get_frames`` for the optimizer, remembering which ranges it was asked for."""

    def __init__(self, frames: np.ndarray):
        self.frames = frames
        self.calls: list[tuple[int, int]] = []

    def __call__(self, start: int, stop: int) -> np.ndarray:
        self.calls.append((start, stop))
        return self.frames[start:stop]


class SessionSpy:
    """Records every SAM 2 call: frame, direction, and how much the session holds at that moment."""

    def __init__(self, model):
        self.calls: list[dict] = []
        self._handle = model.register_forward_pre_hook(self._record, with_kwargs=True)

    def _record(self, module, args, kwargs):
        session = kwargs["inference_session"]
        outputs = session.output_dict_per_obj.get(0, {"non_cond_frame_outputs": {}, "cond_frame_outputs": {}})
        self.calls.append(
            {
                "frame": kwargs["frame_idx"],
                "reverse": kwargs.get("reverse", False),
                "stored_frames": len(session.processed_frames or {}),
                "tracked_outputs": len(outputs["non_cond_frame_outputs"]),
                "high_res_kept": sum(
                    "high_res_masks" in out
                    for kind in ("cond_frame_outputs", "non_cond_frame_outputs")
                    for out in outputs[kind].values()
                ),
            }
        )

    def remove(self):
        self._handle.remove()


@pytest.fixture(scope="module")
def tiny_sam2(tmp_path_factory):
    return write_tiny_sam2(tmp_path_factory.mktemp("tiny-sam2"), seed=0)


@pytest.fixture(scope="module")
def optimizer(tiny_sam2):
    return PostOptimizer.load(str(tiny_sam2), chunk_frames=8)


def refine(optimizer, frames, references, raw=None, confidence=None, **kwargs):
    num_frames = len(frames)
    raw = np.zeros((num_frames, H, W), bool) if raw is None else raw
    confidence = np.zeros(num_frames) if confidence is None else confidence
    source = FrameSource(frames)
    masks, record = optimizer.refine(source, num_frames, references, PackedMasks.from_array(raw), confidence, **kwargs)
    return masks, record, source


def test_tiny_checkpoint_loads_as_sam2_video(tiny_sam2, optimizer):
    assert {"config.json", "model.safetensors", "processor_config.json"} <= {p.name for p in tiny_sam2.iterdir()}
    assert optimizer.device.type == "cpu" and optimizer.dtype == torch.float32
    assert optimizer.model.config.model_type == "sam2_video"
    assert sum(p.numel() for p in optimizer.model.parameters()) < 2_000_000


def test_every_frame_gets_a_mask_and_references_are_kept_exactly(optimizer):
    frames, truth = moving_square(24)
    refs = {3: truth[3], 12: truth[12], 20: truth[20]}
    progress = []
    masks, record, source = refine(optimizer, frames, refs, progress=lambda done, total: progress.append((done, total)))

    assert masks.shape == (24, H, W)
    for f, mask in refs.items():
        assert np.array_equal(masks[f], mask)
    assert record.applied and record.model == optimizer.name
    assert record.reference_frames == (3, 12, 20)
    assert "3 reference frames (frames 3, 12, 20) to all 24 frames" in record.reason
    assert progress[-1] == (24, 24) and len(progress) == 24 - len(refs)
    # Frames are asked for one reference at a time, then in chunks that never hold a reference.
    assert source.calls[:3] == [(3, 4), (12, 13), (20, 21)]
    asked = [t for a, b in source.calls[3:] for t in range(a, b)]
    assert sorted(asked) == [t for t in range(24) if t not in refs]
    assert max(b - a for a, b in source.calls) <= optimizer.chunk_frames


def test_reference_in_the_middle_propagates_forward_and_backward(optimizer):
    frames, truth = moving_square(16)
    spy = SessionSpy(optimizer.model)
    try:
        masks, record, _ = refine(optimizer, frames, {8: truth[8]})
    finally:
        spy.remove()

    directions = {call["frame"]: call["reverse"] for call in spy.calls}
    assert sorted(directions) == list(range(16))
    assert all(directions[t] for t in range(8)) and not any(directions[t] for t in range(9, 16))
    # The raw masks are empty, so every non-empty mask before and after frame 8 came from SAM 2.
    areas = masks.areas()
    assert areas[:8].all() and areas[9:].all()
    assert record.applied and "1 reference frame (frame 8) to all 16 frames" in record.reason


def test_same_masks_as_one_sam2_session_over_the_whole_video(tiny_sam2, optimizer):
    """Chunked frames and dropped state must not change what SAM 2 computes."""
    frames, truth = moving_square(40)
    refs = {5: truth[5], 17: truth[17], 30: np.zeros((H, W), bool)}
    masks, record, _ = refine(optimizer, frames, refs)

    model = Sam2VideoModel.from_pretrained(tiny_sam2)
    processor = Sam2VideoProcessor.from_pretrained(tiny_sam2)
    session = processor.init_video_session(video=frames, inference_device="cpu", dtype=torch.float32)
    for f, mask in refs.items():
        processor.add_inputs_to_inference_session(session, frame_idx=f, obj_ids=1, input_masks=mask)
        model(inference_session=session, frame_idx=f)
    reference = {}
    for reverse in (False, True):
        for out in model.propagate_in_video_iterator(session, start_frame_idx=5, reverse=reverse):
            reference[out.frame_idx] = processor.post_process_masks([out.pred_masks], original_sizes=[[H, W]])[0][0, 0]
    for t in range(40):
        if t not in refs:
            assert np.array_equal(masks[t], reference[t].numpy()), f"frame {t} differs"
    # SAM 2 hands the reference masks back resampled; ours are pasted back as given.
    assert not np.array_equal(reference[5].numpy(), truth[5]) and np.array_equal(masks[5], truth[5])
    assert "1 of them empty" in record.reason


def test_memory_stays_bounded_on_a_long_clip(optimizer):
    frames, truth = moving_square(72)
    spy = SessionSpy(optimizer.model)
    try:
        masks, _, source = refine(optimizer, frames, {4: truth[4], 40: truth[40]})
    finally:
        spy.remove()

    assert len(masks) == 72
    assert max(b - a for a, b in source.calls) <= optimizer.chunk_frames
    assert max(call["stored_frames"] for call in spy.calls) <= optimizer.chunk_frames
    assert max(call["high_res_kept"] for call in spy.calls) <= 1  # only the previous call's, not yet dropped
    held = max(call["tracked_outputs"] for call in spy.calls)
    assert held <= 2 * optimizer._history < 72 - 2


def test_absent_frames_keep_confident_raw_masks(tiny_sam2):
    frames, truth = moving_square(12)
    absent_everywhere = PostOptimizer.load(str(tiny_sam2))
    with torch.no_grad():  # the object-score head now always says "absent"
        absent_everywhere.model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(-100.0)
    raw = truth.copy()
    raw[7] = False  # VideoLISA found nothing on frame 7
    confidence = np.full(12, 0.95)
    confidence[[2, 9]] = 0.5  # not confident there
    confidence[7] = 0.0
    masks, record, _ = refine(absent_everywhere, frames, {0: truth[0], 6: truth[6]}, raw=raw, confidence=confidence)

    tracked = [t for t in range(12) if t not in (0, 6)]
    assert record.applied and record.absent_frames == tuple(tracked)
    assert record.kept_raw_frames == (1, 3, 4, 5, 8, 10, 11)
    for t in record.kept_raw_frames:
        assert np.array_equal(masks[t], raw[t])
    assert masks.areas()[[2, 7, 9]].tolist() == [0, 0, 0]
    assert "lost the object on 10 frames; 7 of those kept" in record.reason


def test_merge_rule_on_hand_made_frames():
    tracked = np.zeros((4, 5), bool)
    tracked[1:3, 1:3] = True
    raw = np.zeros((4, 5), bool)
    raw[0:2, 2:5] = True
    empty = np.zeros((4, 5), bool)
    rule = AbsentRule(min_confidence=0.88, min_area_fraction=0.25)  # 5 px of 20

    present = merge_frame(tracked, 3.0, raw, 0.99, rule)
    assert np.array_equal(present.mask, tracked) and not present.absent and not present.kept_raw
    present_over_empty_raw = merge_frame(tracked, 0.1, empty, 0.0, rule)
    assert np.array_equal(present_over_empty_raw.mask, tracked)

    kept = merge_frame(empty, -5.0, raw, 0.88, rule)  # the threshold itself is confident
    assert np.array_equal(kept.mask, raw) and kept.absent and kept.kept_raw
    unsure = merge_frame(empty, -5.0, raw, 0.87, rule)
    assert not unsure.mask.any() and unsure.absent and not unsure.kept_raw
    speck = raw & False
    speck[0, 0:4] = True  # 4 px < 25 % of the frame
    assert not merge_frame(empty, -5.0, speck, 0.99, rule).kept_raw
    # A positive score with an empty mask is "absent" too.
    empty_but_positive = merge_frame(empty, 2.0, raw, 0.95, rule)
    assert empty_but_positive.absent and empty_but_positive.kept_raw
    # A negative score wins over whatever mask came with it.
    assert merge_frame(tracked, -0.5, raw, 0.1, rule).absent

    default = AbsentRule()
    assert default.keeps_raw(raw_area=300, raw_confidence=0.9, frame_area=1920 * 1080)
    assert not default.keeps_raw(raw_area=150, raw_confidence=0.99, frame_area=1920 * 1080)
    assert not default.keeps_raw(raw_area=0, raw_confidence=1.0, frame_area=64)


def test_only_empty_references_return_the_raw_masks(optimizer):
    frames, truth = moving_square(6)
    raw = PackedMasks.from_array(truth)
    empty = np.zeros((H, W), bool)
    masks, record = optimizer.refine(FrameSource(frames), 6, {1: empty, 4: empty}, raw, np.full(6, 0.9))
    assert masks is raw
    assert not record.applied and record.reference_frames == (1, 4)
    assert "empty" in record.reason and "raw masks are kept" in record.reason

    masks, record = optimizer.refine(FrameSource(frames), 6, {}, raw, np.full(6, 0.9))
    assert masks is raw and not record.applied and "no reference frames" in record.reason


def test_running_out_of_device_memory_returns_the_raw_masks(optimizer):
    frames, truth = moving_square(10)
    raw = PackedMasks.from_array(truth)

    def out_of_memory(module, args, kwargs):
        if kwargs["frame_idx"] == 7:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = optimizer.model.register_forward_pre_hook(out_of_memory, with_kwargs=True)
    try:
        masks, record = optimizer.refine(FrameSource(frames), 10, {2: truth[2]}, raw, np.full(10, 0.9))
    finally:
        handle.remove()
    assert masks is raw and not record.applied
    assert "ran out of device memory (CUDA out of memory. Tried to allocate 2.00 GiB)" in record.reason


def test_unavailable_hub_checkpoint_is_explained(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelUnavailable) as caught:
        PostOptimizer.load("facebook/sam2.1-hiera-tiny")
    message = str(caught.value)
    assert "facebook/sam2.1-hiera-tiny" in message and "hf download" in message

    # What the pipeline does with it: the raw masks plus this record.
    record = unavailable(message, references=[12, 3])
    assert isinstance(record, PostOptimization)
    assert not record.applied and record.model is None and record.reference_frames == (3, 12)
    assert (
        record.reason.startswith("Post-optimization was unavailable:") and "facebook/sam2.1-hiera-tiny" in record.reason
    )


def test_unavailable_local_checkpoints_are_explained(tmp_path):
    with pytest.raises(ModelUnavailable, match="does not exist"):
        PostOptimizer.load(str(tmp_path / "missing"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelUnavailable, match="could not be loaded"):
        PostOptimizer.load(str(broken))


def test_a_one_frame_video_is_counted_in_the_singular(optimizer):
    frames, truth = moving_square(1)
    _, record, _ = refine(optimizer, frames, {0: truth[0]})
    assert record.applied and "1 reference frame (frame 0) to 1 frame in" in record.reason
    with pytest.raises(InvalidSettings, match="The video has 1 frame but 2 raw masks"):
        optimizer.refine(FrameSource(frames), 1, {0: truth[0]}, PackedMasks.from_array(truth.repeat(2, 0)), np.ones(1))


def test_bad_inputs_are_refused_with_a_reason(optimizer):
    frames, truth = moving_square(6)
    raw = PackedMasks.from_array(truth)
    with pytest.raises(InvalidSettings, match="outside the video"):
        optimizer.refine(FrameSource(frames), 6, {6: truth[0]}, raw, np.ones(6))
    with pytest.raises(InvalidSettings, match="not the video's"):
        optimizer.refine(FrameSource(frames), 6, {2: truth[0, :10]}, raw, np.ones(6))
    with pytest.raises(InvalidSettings, match="one score per frame"):
        optimizer.refine(FrameSource(frames), 6, {2: truth[2]}, raw, np.ones(5))
    with pytest.raises(InvalidVideo, match="expected"):
        optimizer.refine(lambda a, b: frames[a:b, :32], 6, {2: truth[2]}, raw, np.ones(6))
