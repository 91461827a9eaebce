"""SAM's mask decoder in a cheaper order of products gives segment-anything's masks and scores."""

import functools

import pytest
import torch
from segment_anything.modeling import MaskDecoder, TwoWayTransformer

from videolisa.model.sam_decoder import decode_single_mask


def _decoder(seed: int, activation=torch.nn.GELU) -> MaskDecoder:
    """A released-size mask decoder whose every parameter, biases and norms included, is random and non-trivial."""
    torch.manual_seed(seed)
    decoder = MaskDecoder(transformer_dim=256, transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048,
                                                                             num_heads=8), activation=activation)
    with torch.no_grad():
        for name, param in decoder.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.2)
            elif param.dim() == 1:  # layer-norm scales
                param.normal_(1, 0.3)
            elif name.startswith(("iou_token", "mask_tokens")):
                param.normal_()
        for mlp in decoder.output_hypernetworks_mlps:  # logits of the spread of the released model's (tens)
            mlp.layers[-1].weight.mul_(30)
    return decoder.eval()


# The upscaling's activations run in place for a GELU (the released one) and as called for any other.
@pytest.mark.parametrize("frames, prompt_tokens, seed, activation", [
    (1, 1, 0, torch.nn.GELU), (3, 1, 1, torch.nn.GELU), (2, 2, 2, torch.nn.GELU),
    (2, 1, 3, functools.partial(torch.nn.GELU, approximate="tanh")), (2, 1, 4, torch.nn.ReLU)])
def test_reordered_products_match_segment_anythings_decoder(frames, prompt_tokens, seed, activation):
    decoder = _decoder(seed, activation)
    embeddings = torch.randn(frames, 256, 64, 64)
    image_pe = torch.randn(1, 256, 64, 64)
    sparse = torch.randn(1, prompt_tokens, 256)
    no_mask = torch.randn(256)
    with torch.inference_mode():
        low, iou = decode_single_mask(decoder, embeddings, image_pe, sparse, no_mask)
        for f in range(frames):
            ref_low, ref_iou = decoder(image_embeddings=embeddings[f:f + 1], image_pe=image_pe,
                                       sparse_prompt_embeddings=sparse,
                                       dense_prompt_embeddings=no_mask.view(1, -1, 1, 1).expand(1, -1, 64, 64),
                                       multimask_output=False)
            assert ref_low.abs().max() > 1  # logits of a real spread, not values near zero
            torch.testing.assert_close(low[f], ref_low[0, 0], atol=1e-4, rtol=1e-5)
            torch.testing.assert_close(iou[f], ref_iou[0, 0], atol=1e-5, rtol=1e-5)


def test_the_official_switch_runs_segment_anythings_own_decoder(tiny_model):
    embeddings, prompt = torch.randn(2, 256, 64, 64), torch.randn(256)  # one decoding step on a CPU
    official_low, official_iou = tiny_model.sam_decode(embeddings, prompt, official=True)
    sam = tiny_model.sam
    with torch.inference_mode():
        ref_low, ref_iou = sam.mask_decoder(
            image_embeddings=embeddings, image_pe=sam.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=prompt.view(1, 1, -1),
            dense_prompt_embeddings=sam.prompt_encoder.no_mask_embed.weight.view(1, -1, 1, 1).expand(1, -1, 64, 64),
            multimask_output=False)
    torch.testing.assert_close(official_low, ref_low[:, 0], atol=0, rtol=0)
    torch.testing.assert_close(official_iou, ref_iou[:, 0], atol=0, rtol=0)
    fast_low, _ = tiny_model.sam_decode(embeddings, prompt)
    torch.testing.assert_close(fast_low, official_low, atol=1e-4, rtol=1e-5)


def test_channels_last_embeddings_come_back_unchanged():
    # SAM's image encoder returns channels-last embeddings, and the pipeline caches them for the next prompt.
    decoder = _decoder(3)
    embeddings = torch.randn(2, 256, 64, 64).contiguous(memory_format=torch.channels_last)
    before = embeddings.clone()
    with torch.inference_mode():
        decode_single_mask(decoder, embeddings, torch.randn(1, 256, 64, 64), torch.randn(1, 1, 256), torch.randn(256))
    assert torch.equal(embeddings, before)


@pytest.mark.parametrize("input_size, original_size", [((576, 1024), (480, 854)), ((1024, 576), (854, 480)),
                                                       ((767, 1024), (241, 321)), ((1024, 3), (1000, 2)),
                                                       ((1024, 1024), (300, 300))])
def test_low_res_logits_of_the_read_cells_give_the_official_masks(tiny_model, input_size, original_size):
    # Only the cells that post-processing reads for this input size are upscaled; the padding's are not.
    torch.manual_seed(4)
    embeddings, prompt = torch.randn(2, 256, 64, 64), torch.randn(256) * 3
    official_low, official_iou = tiny_model.sam_decode(embeddings, prompt, official=True)
    reference = tiny_model.sam.postprocess_masks(official_low[:, None], input_size, original_size)[:, 0]
    low, iou = tiny_model.sam_decode(embeddings, prompt, input_size=input_size)
    rows, cols = tiny_model.sam_low_res_extent(input_size)
    assert low.shape == (2, 4 * rows, 4 * cols)
    if input_size != (1024, 1024):
        assert rows * cols < 64 * 64
    torch.testing.assert_close(tiny_model.sam_postprocess(low, input_size, original_size), reference,
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(iou, official_iou, atol=1e-5, rtol=1e-5)


def test_cropped_post_processing_equals_segment_anythings_on_the_same_logits(tiny_model):
    low = torch.randn(3, 256, 256) * 5
    for input_size in ((576, 1024), (1024, 400), (9, 1024)):
        rows, cols = tiny_model.sam_low_res_extent(input_size)
        reference = tiny_model.sam.postprocess_masks(low[:, None], input_size, (333, 517))[:, 0]
        cropped = tiny_model.sam_postprocess(low[:, :4 * rows, :4 * cols], input_size, (333, 517))
        torch.testing.assert_close(cropped, reference, atol=0, rtol=0)
