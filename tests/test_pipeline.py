"""segment() end to end on the tiny checkpoint: shapes, determinism, caching, generation, errors."""

import numpy as np
import pytest

from videolisa.errors import InvalidPrompt, InvalidSettings, InvalidVideo
from videolisa.masks import PackedMasks

SETTINGS = dict(num_frames_sparse=4, num_frames_dense=1)


@pytest.fixture(scope="module")
def first(pipeline, small_frames):
    pipeline.clear_cache()
    return pipeline.segment(small_frames, "the yellow square", return_logits=True, **SETTINGS)


def test_every_frame_gets_a_mask_at_the_original_size(first, small_frames):
    assert isinstance(first.masks, PackedMasks)
    masks = np.asarray(first.masks)
    assert masks.shape == (6, 61, 83) and masks.dtype == bool
    assert first.logits.shape == (6, 61, 83) and first.logits.dtype == np.float32
    np.testing.assert_array_equal(masks, first.logits > 0)
    assert first.scores.shape == (6,)
    assert first.sparse_frame_indices == (0, 1, 3, 4)
    assert first.dense_frame_indices == (1,)
    assert first.num_frames == 6 and (first.height, first.width) == (61, 83)
    assert first.raw_masks is first.masks and first.post_optimization is None
    assert first.text is None
    assert {"vision", "language_model", "sam_encode", "sam_decode"} <= set(first.timings)


def test_second_prompt_reuses_video_work_and_matches_an_uncached_run(pipeline, small_frames, first):
    second = pipeline.segment(small_frames, "the background", return_logits=True, **SETTINGS)
    assert "sam_encode" not in second.timings and "vision" not in second.timings
    fresh = pipeline.segment(small_frames, "the background", return_logits=True, naive=True, **SETTINGS)
    np.testing.assert_allclose(second.logits, fresh.logits, atol=1e-4)
    decided = np.abs(fresh.logits) > 1e-3
    np.testing.assert_array_equal(np.asarray(second.masks)[decided], np.asarray(fresh.masks)[decided])


def test_same_input_gives_the_same_masks(pipeline, small_frames, first):
    pipeline.clear_cache()
    again = pipeline.segment(small_frames, "the yellow square", return_logits=True, **SETTINGS)
    np.testing.assert_array_equal(again.logits, first.logits)
    assert again.masks == first.masks


def test_batched_sam_equals_frame_by_frame(pipeline, small_frames, first):
    naive = pipeline.segment(small_frames, "the yellow square", return_logits=True, naive=True, **SETTINGS)
    np.testing.assert_allclose(naive.logits, first.logits, atol=1e-4)


def test_an_image_is_a_one_frame_video(pipeline, small_frames):
    seg = pipeline.segment(small_frames[0], "the square", **SETTINGS)
    assert np.asarray(seg.masks).shape == (1, 61, 83)
    assert seg.sparse_frame_indices == (0, 0, 0, 0)
    assert seg.dense_frame_indices == (0,)


def test_several_targets_share_one_sam_pass(pipeline, small_frames):
    pipeline.clear_cache()
    a, b = pipeline.segment_targets(small_frames, ["the square", "the sky"], return_logits=True, **SETTINGS)
    assert a.prompt == "the square" and b.prompt == "the sky"
    assert not np.array_equal(a.logits, b.logits)
    alone = pipeline.segment(small_frames, "the sky", return_logits=True, **SETTINGS)
    np.testing.assert_allclose(alone.logits, b.logits, atol=1e-5)


def test_text_generation_and_mask_from_the_generated_answer(pipeline, small_frames):
    seg = pipeline.segment(small_frames, "the square", generate_text=True, max_new_tokens=6, **SETTINGS)
    assert isinstance(seg.text, str) and isinstance(seg.answer_has_seg, bool)
    generated = pipeline.segment(small_frames, "the square", generate_text=True, mask_from="generated",
                                 max_new_tokens=6, **SETTINGS)
    assert generated.mask_from == "generated" and len(generated.masks) == 6
    if not generated.answer_has_seg:
        assert generated.is_empty
        assert any("no [SEG]" in n for n in generated.notices)


def test_literal_special_tokens_in_the_prompt_are_neutralised(pipeline, small_frames):
    seg = pipeline.segment(small_frames, "the <image> [SEG] <|end|> square", **SETTINGS)
    assert seg.prompt == "the image SEG end square"


@pytest.mark.parametrize("settings, message", [
    (dict(num_frames_sparse=4, num_frames_dense=4), "at least T_dense"),
    (dict(num_frames_sparse=-1, num_frames_dense=1), "at least 1"),
    (dict(num_frames_sparse=32, num_frames_dense=8), "context"),
])
def test_settings_the_model_cannot_take_are_rejected(pipeline, small_frames, settings, message):
    with pytest.raises(InvalidSettings, match=message):
        pipeline.segment(small_frames, "the square", **settings)


@pytest.mark.parametrize("settings, message", [
    (dict(num_frames_sparse="8"), "num_frames_sparse must be a whole number of at least 1; got '8' (str)."),
    (dict(num_frames_sparse=4.0), "num_frames_sparse must be a whole number of at least 1; got 4.0 (float)."),
    (dict(num_frames_dense=True), "num_frames_dense must be a whole number of at least 1; got True (bool)."),
    (dict(max_new_tokens=0), "max_new_tokens must be a whole number of at least 1; got 0."),
    (dict(max_new_tokens=-5, generate_text=True), "max_new_tokens must be a whole number of at least 1; got -5."),
    (dict(generate_text="no"), "generate_text must be True or False; got 'no' (str)."),
    (dict(post_optimize=1), "post_optimize must be True or False; got 1 (int)."),
    (dict(limits={"max_frames": 3}), "limits must be a videolisa.settings.Limits or None; got dict"),
    (dict(progress="bar"), "progress must be a function (stage, fraction) or None; got 'bar'."),
])
def test_options_of_the_wrong_type_or_range_are_refused_by_name(pipeline, small_frames, settings, message):
    with pytest.raises(InvalidSettings) as caught:
        pipeline.segment(small_frames, "the square", **{**SETTINGS, **settings})
    assert str(caught.value).startswith(message)


def test_numpy_counts_and_switches_are_taken_as_plain_values(pipeline, small_frames):
    import json

    seg = pipeline.segment(small_frames, "the square", num_frames_sparse=np.int64(4), num_frames_dense=np.int32(1),
                           return_logits=np.bool_(False))
    assert seg.settings["num_frames_sparse"] == 4 and type(seg.settings["num_frames_sparse"]) is int
    json.dumps(seg.card())  # the run card stays JSON


@pytest.mark.parametrize("options, message", [
    (dict(sam_batch_size=0), "sam_batch_size must be a whole number of at least 1; got 0."),
    (dict(sam_batch_size="8"), "sam_batch_size must be a whole number of at least 1; got '8' (str)."),
    (dict(cache_mb=-1), "cache_mb must be a number of megabytes, zero or more (zero: no cache); got -1."),
    (dict(limits="app"), "limits must be a videolisa.settings.Limits or None; got str 'app'."),
])
def test_pipeline_options_of_the_wrong_type_or_range_are_refused_by_name(tiny_model, options, message):
    from videolisa.pipeline import VideoLISAPipeline

    with pytest.raises(InvalidSettings) as caught:
        VideoLISAPipeline(tiny_model, **options)
    assert str(caught.value) == message


@pytest.mark.parametrize("prompt", ["", "   ", "\x00\x01"])
def test_empty_prompts_are_rejected(pipeline, small_frames, prompt):
    with pytest.raises(InvalidPrompt, match="empty"):
        pipeline.segment(small_frames, prompt, **SETTINGS)


@pytest.mark.parametrize("prompt", ["the \ud800 square", "caf\udce9"])  # half an emoji; Latin-1 bytes on a command line
def test_prompts_that_are_not_valid_text_are_rejected_in_words(pipeline, small_frames, prompt):
    with pytest.raises(InvalidPrompt, match="not valid text"):
        pipeline.segment(small_frames, prompt, **SETTINGS)


@pytest.mark.parametrize("frames, message", [
    (np.zeros((0, 8, 8, 3), np.uint8), "no frames"),
    (np.zeros((2, 8, 8), np.uint8), "RGB"),
    (np.zeros((2, 8, 8, 3), np.float32), "uint8"),
    (np.zeros((2, 0, 8, 3), np.uint8), "8x0 pixels: they have no picture"),
    (np.zeros((2, 8, 0, 3), np.uint8), "0x8 pixels: they have no picture"),
    (b"/videos/cat.mp4", "Expected the path .* got bytes"),
    (None, "Expected the path .* got NoneType"),
    (7, "Expected the path .* got int"),
    ("", "No video was given"),
    ("  ", "No video was given"),
])
def test_bad_frame_arrays_are_rejected(pipeline, frames, message):
    with pytest.raises(InvalidVideo, match=message):
        pipeline.segment(frames, "x", **SETTINGS)


def test_frames_in_a_tensor_or_a_list_are_the_same_video(pipeline, small_frames):
    import torch

    expected = pipeline.segment(small_frames, "the square", **SETTINGS).masks
    for frames in (torch.from_numpy(small_frames.copy()), list(small_frames)):
        assert np.array_equal(np.asarray(pipeline.segment(frames, "the square", **SETTINGS).masks), np.asarray(expected))


def test_sam_batch_defaults_to_the_device_unless_set(tiny_model, monkeypatch):
    from videolisa import settings
    from videolisa.pipeline import VideoLISAPipeline

    monkeypatch.delenv("VIDEOLISA_SAM_BATCH", raising=False)
    assert (settings.default_sam_batch("cuda"), settings.default_sam_batch("cpu")) == (8, 2)
    assert VideoLISAPipeline(tiny_model).sam_batch_size == 2  # the tiny model is on the CPU
    assert VideoLISAPipeline(tiny_model, sam_batch_size=5).sam_batch_size == 5
    monkeypatch.setenv("VIDEOLISA_SAM_BATCH", "3")
    assert VideoLISAPipeline(tiny_model).sam_batch_size == 3


def test_same_bytes_in_another_shape_are_another_video(pipeline):
    # Black frames in landscape and in portrait have the same bytes; reusing one's SAM work for the other is wrong.
    landscape = pipeline.segment(np.zeros((3, 40, 60, 3), np.uint8), "the object", **SETTINGS)
    portrait = pipeline.segment(np.zeros((3, 60, 40, 3), np.uint8), "the object", **SETTINGS)
    assert np.asarray(landscape.masks).shape == (3, 40, 60)
    assert np.asarray(portrait.masks).shape == (3, 60, 40)
    assert "sam_encode" in portrait.timings  # encoded anew, not served from the landscape video's cache


def test_frames_that_are_not_contiguous_are_keyed_by_their_content(pipeline, small_frames):
    from videolisa.source import open_source

    bgr = small_frames[..., ::-1]  # a view with negative strides, as OpenCV users hand over
    view, _ = open_source(bgr, pipeline.limits)
    copy, _ = open_source(np.ascontiguousarray(bgr), pipeline.limits)
    other, _ = open_source(small_frames, pipeline.limits)
    assert view.key == copy.key != other.key


def test_the_benchmark_runs_and_the_second_prompt_skips_the_video_work(tmp_path):
    import json

    from videolisa import bench
    from videolisa.settings import default_sam_batch

    out = tmp_path / "bench.json"
    assert bench.main(["--size", "tiny", "--frames", "3", "--height", "48", "--sparse", "2", "--dense", "1",
                       "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = {row["run"]: row for row in result["rows"]}
    assert {"sam_encode", "vision"} <= set(rows["first prompt"]["stages"])
    assert not {"sam_encode", "vision"} & set(rows["second prompt (same video)"]["stages"])
    assert {"sam_encode", "vision"} <= set(rows["naive (official organisation)"]["stages"])  # nothing cached
    assert all(row["minor_faults"] >= 0 and row["seconds"] > 0 for row in result["rows"])
    assert result["sam_batch"] == default_sam_batch("cpu") and result["peak_rss_mb"] > 0


class _Everything:
    def __contains__(self, token):
        return True


def test_an_answer_cut_by_the_token_limit_says_so(pipeline, small_frames, monkeypatch):
    monkeypatch.setattr(pipeline.model, "end_token_ids", frozenset())  # the answer never ends by itself
    # The last generated token stops inside a character's bytes.
    monkeypatch.setattr(pipeline.model.tokenizer, "decode", lambda ids: "it is the cup \ufffd")
    seg = pipeline.segment(small_frames, "the square", generate_text=True, max_new_tokens=3, **SETTINGS)
    assert seg.text == "it is the cup"
    assert any("limit of 3 new tokens" in n for n in seg.notices)

    monkeypatch.setattr(pipeline.model, "end_token_ids", _Everything())  # the first token ends the answer
    ended = pipeline.segment(small_frames, "the square", generate_text=True, max_new_tokens=3, **SETTINGS)
    assert not any("new tokens" in n for n in ended.notices)
