"""The network steps on the tiny official-format checkpoint: preprocessing, features, splicing, SAM."""

import numpy as np
import pytest
import torch
from PIL import Image

from videolisa.model.network import ClipPreprocessing
from videolisa.prompts import IMAGE_TOKEN_INDEX, build_prompt_ids, render_prompt

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
SAM_MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
SAM_STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)


def test_sliding_window_gets_one_more_key_than_the_config_says(tiny_model, tiny_checkpoint):
    import json

    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert tiny_model.llm.config.sliding_window == config["sliding_window"] + 1
    assert tiny_model.llm.config._attn_implementation == "sdpa"


def test_clip_preprocessing_resizes_short_side_and_crops_the_centre():
    frame = np.random.default_rng(1).integers(0, 255, (480, 854, 3), dtype=np.uint8)
    pixels = ClipPreprocessing()([frame])
    assert pixels.shape == (1, 3, 336, 336)
    resized = np.asarray(Image.fromarray(frame).resize((597, 336), Image.BICUBIC))
    expected = (resized[:, 130:466].astype(np.float32) / 255 - CLIP_MEAN) / CLIP_STD
    np.testing.assert_allclose(pixels[0].permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_clip_preprocessing_of_a_portrait_frame():
    frame = np.zeros((500, 300, 3), np.uint8)
    frame[:, :, 1] = (np.arange(500) % 256).astype(np.uint8)[:, None]
    pixels = ClipPreprocessing()([frame])
    resized = np.asarray(Image.fromarray(frame).resize((336, 560), Image.BICUBIC))
    expected = (resized[112:448].astype(np.float32) / 255 - CLIP_MEAN) / CLIP_STD
    np.testing.assert_allclose(pixels[0].permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_truncated_tower_gives_the_second_to_last_layer_without_cls(tiny_model, tiny_checkpoint):
    from transformers import CLIPVisionModel

    full = CLIPVisionModel.from_pretrained(tiny_checkpoint / "clip-vit-tiny-patch14-336").eval()
    pixels = torch.randn(2, 3, 336, 336)
    with torch.no_grad():
        reference = full(pixel_values=pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
    ours = tiny_model.clip_features(pixels)
    assert ours.shape == (2, 576, tiny_model.config.mm_hidden_size)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)


def test_visual_tokens_are_pooled_sparse_then_dense_patches(tiny_model):
    pixels = torch.randn(4, 3, 336, 336)
    visual = tiny_model.visual_tokens(pixels, [1])
    hidden = tiny_model.config.hidden_size
    assert visual.shape == (4 + 576, hidden)
    projected = tiny_model.projector(tiny_model.clip_features(pixels))
    torch.testing.assert_close(visual[:4], projected.mean(dim=1))
    torch.testing.assert_close(visual[4:], projected[1])


def test_prompt_splice_and_seg_row(tiny_model):
    ids = build_prompt_ids(tiny_model.tokenizer, render_prompt("the cat"), tiny_model.seg_token_id)
    assert ids.ids.count(IMAGE_TOKEN_INDEX) == 1
    visual = torch.zeros(4 + 576, tiny_model.config.hidden_size)
    embeds = tiny_model.embed_prompt(ids.ids, visual)
    assert embeds.shape[1] == len(ids.ids) - 1 + 580 == ids.spliced_length(580)
    (seg,) = ids.seg_indices
    (row,) = ids.seg_hidden_rows(580)
    # The spliced position of [SEG] is its id index shifted by V - 1; the row used is the one before it.
    assert row == seg + 580 - 1 - 1
    token_embedding = tiny_model.llm.get_input_embeddings().weight[tiny_model.seg_token_id]
    torch.testing.assert_close(embeds[0, row + 1], token_embedding)


def test_rendered_prompt_matches_the_phi3_template():
    assert render_prompt("the dog") == (
        "<|system|>\nYou are a helpful AI assistant.<|end|>\n<|user|>\n<image>\nthe dog<|end|>\n"
        "<|assistant|>\nSure, [SEG].<|end|>"
    )
    assert render_prompt("the dog", None).endswith("<|end|>\n<|assistant|>\n")


def test_sam_preprocess_resizes_longest_side_and_pads_bottom_right(tiny_model):
    frames = np.full((2, 241, 321, 3), 200, np.uint8)
    x, size = tiny_model.sam_preprocess(frames)
    assert size == (769, 1024)
    assert x.shape == (2, 3, 1024, 1024)
    assert torch.all(x[:, :, 769:] == 0)  # padding after normalisation
    torch.testing.assert_close(x[0, :, 100, :5], ((200 - SAM_MEAN[:, 0]) / SAM_STD[:, 0]).expand(3, 5))


def test_bfloat16_frames_are_normalised_with_float32_statistics_then_cast(tiny_checkpoint):
    from videolisa.model.network import VideoLISAModel

    model = VideoLISAModel.load(str(tiny_checkpoint), dtype=torch.bfloat16)
    assert model.sam.pixel_mean.dtype == model.sam.pixel_std.dtype == torch.float32
    frames = np.random.default_rng(2).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    x, size = model.sam_preprocess(frames)
    assert x.dtype == torch.bfloat16 and size == (1024, 1024)
    resized = torch.from_numpy(np.array(Image.fromarray(frames[0]).resize((1024, 1024), Image.BILINEAR)))
    expected = ((resized.permute(2, 0, 1).float() - SAM_MEAN) / SAM_STD).to(torch.bfloat16)
    assert torch.equal(x[0], expected)  # as the official code: float32 arithmetic and constants, one cast


def test_a_float16_encoder_runs_its_neck_in_float32_then_casts_back(tiny_checkpoint, tiny_model):
    import copy

    from videolisa.model.network import VideoLISAModel

    model = VideoLISAModel.load(str(tiny_checkpoint), dtype=torch.float16)
    neck = model.sam.image_encoder.neck
    assert sorted(model.sam.state_dict()) == sorted(tiny_model.sam.state_dict())
    wide = copy.deepcopy(neck).float()
    wide.__dict__.pop("forward", None)  # segment-anything's own Sequential, in float32
    seen = {}
    neck.register_forward_hook(lambda module, args, out: seen.update(x=args[0]))
    x, _ = model.sam_preprocess(np.random.default_rng(3).integers(0, 256, (1, 48, 64, 3), dtype=np.uint8))
    embeddings = model.sam_encode(x)
    assert embeddings.dtype == seen["x"].dtype == torch.float16
    with torch.inference_mode():
        expected = wide(seen["x"].float()).to(torch.float16)
    # Float32 sums in another order round to another float16 now and then; a float16 neck differs at half the values.
    assert (embeddings != expected).float().mean() < 0.01
    torch.testing.assert_close(embeddings, expected, atol=4e-3, rtol=0)


def test_dense_pe_equals_segment_anything_in_float32(tiny_model):
    torch.testing.assert_close(tiny_model.dense_pe(), tiny_model.sam.prompt_encoder.get_dense_pe())


def test_masks_come_back_at_odd_original_size(tiny_model):
    frames = np.random.default_rng(0).integers(0, 255, (2, 241, 321, 3), dtype=np.uint8)
    x, size = tiny_model.sam_preprocess(frames)
    emb = tiny_model.sam_encode(x)
    low, iou = tiny_model.sam_decode(emb, torch.randn(256))
    logits = tiny_model.sam_postprocess(low, size, (241, 321))
    assert low.shape == (2, 256, 256) and iou.shape == (2,)
    assert logits.shape == (2, 241, 321) and logits.dtype == torch.float32


def test_batched_decoding_equals_segment_anything_frame_by_frame(tiny_model):
    emb = torch.randn(5, 256, 64, 64)  # not a multiple of the CPU's decoding step
    prompt = torch.randn(256)
    low, iou = tiny_model.sam_decode(emb, prompt)
    sam = tiny_model.sam
    sparse, dense = sam.prompt_encoder(points=None, boxes=None, masks=None)
    sparse = torch.cat([sparse, prompt.reshape(1, 1, -1)], dim=1)  # the official way: [SEG] as a text embedding
    with torch.inference_mode():
        ref = [sam.mask_decoder(image_embeddings=emb[i:i + 1], image_pe=sam.prompt_encoder.get_dense_pe(),
                                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                multimask_output=False) for i in range(5)]
    assert low.shape == (5, 256, 256) and iou.shape == (5,)
    torch.testing.assert_close(low, torch.cat([r[0][:, 0] for r in ref]), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(iou, torch.cat([r[1][:, 0] for r in ref]), atol=1e-5, rtol=1e-5)


def test_clip_preprocessing_follows_the_towers_preprocessor_config(tiny_model, tmp_path):
    import json

    from videolisa.model.network import ClipPreprocessing

    assert tiny_model.clip_preprocess == ClipPreprocessing()
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"shortest_edge": 300}, "crop_size": {"height": 280, "width": 280}, "resample": 2,
         "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}))
    custom = ClipPreprocessing.from_directory(tmp_path, 336)
    assert (custom.shortest_edge, custom.crop_size, custom.resample) == (300, (280, 280), 2)
    frame = np.full((400, 600, 3), 255, np.uint8)
    out = custom([frame])
    assert out.shape == (1, 3, 280, 280)
    np.testing.assert_allclose(out.numpy(), 1.0, atol=1e-6)


@pytest.mark.parametrize("bias_budget", [None, 1.0])
def test_fused_sam_encoder_equals_segment_anythings_own(tiny_model, monkeypatch, bias_budget):
    from videolisa.model import network
    from videolisa.model.network import set_sam_fused

    if bias_budget is not None:  # one frame at a time through the global blocks
        monkeypatch.setattr(network, "_SAM_BIAS_BYTES", bias_budget)
    x = torch.randn(2, 3, 1024, 1024)
    fused = tiny_model.sam_encode(x)  # on a CPU the second frame's bias overwrites the first's buffer
    assert not hasattr(network._SCRATCH, "buffers")  # the buffer went with the call
    set_sam_fused(tiny_model.sam, fused=False)
    try:
        reference = tiny_model.sam_encode(x)
    finally:
        set_sam_fused(tiny_model.sam, fused=True)
    torch.testing.assert_close(fused, reference, atol=1e-4, rtol=1e-4)



@pytest.mark.parametrize("channels_last", [True, False])
def test_fused_channel_norm_equals_segment_anythings_layer_norm_2d(channels_last):
    import types

    from segment_anything.modeling.common import LayerNorm2d

    from videolisa.model.network import _channel_norm

    norm = LayerNorm2d(64)
    with torch.no_grad():
        norm.weight.normal_(1, 0.3)
        norm.bias.normal_(0, 0.3)
    x = torch.randn(2, 64, 16, 24) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = norm(x)
    fused = types.MethodType(_channel_norm, norm)(x)
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=1e-5)
    assert fused.is_contiguous(memory_format=torch.channels_last) == channels_last  # the layout the next layer sees
    half = types.MethodType(_channel_norm, norm.to(torch.bfloat16))(x.to(torch.bfloat16))  # as on a GPU
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), expected, atol=0.05, rtol=0.02)
