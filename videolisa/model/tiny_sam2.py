"""A tiny random SAM 2 video checkpoint in the released ``transformers`` format, for tests.

The released SAM 2.1 checkpoints (``facebook/sam2.1-hiera-*``) are a ``Sam2VideoModel`` plus a
``Sam2VideoProcessor`` saved with ``save_pretrained``. This writer produces the same files with a
network small enough (about 1M parameters, 128 px input) that propagating over a dozen small frames
takes well under a second on a CPU, so the real loading and tracking code runs in every test.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    Sam2HieraDetConfig,
    Sam2ImageProcessor,
    Sam2VideoConfig,
    Sam2VideoMaskDecoderConfig,
    Sam2VideoModel,
    Sam2VideoProcessor,
    Sam2VideoPromptEncoderConfig,
    Sam2VideoVideoProcessor,
    Sam2VisionConfig,
)

# Input side of the tiny model; must be a multiple of 32 (the Hiera backbone downsamples by 32).
TINY_IMAGE_SIZE = 128
# What notices and run cards call a tiny SAM 2 that lives in a temporary folder.
TINY_SAM2_NAME = "tiny random preview"
# Width of the FPN, prompt, mask-decoder and memory features. SAM 2 needs a multiple of 64 above 64:
# the object pointer is split into chunks of the 64-channel memory width.
TINY_HIDDEN = 128


def tiny_sam2_config(image_size: int = TINY_IMAGE_SIZE, hidden: int = TINY_HIDDEN) -> Sam2VideoConfig:
    """The configuration of the tiny model: every size SAM 2 ties to the input side is derived here."""
    if image_size % 32:
        raise ValueError(f"image_size must be a multiple of 32, got {image_size}")
    feat = image_size // 16  # side of the lowest-resolution feature map, where memory attention runs
    # Sub-configs are passed as objects: given plain dicts, the transformers 5.17 constructor builds the mask
    # decoder from a prompt-encoder config.
    backbone = Sam2HieraDetConfig(
        hidden_size=16,
        num_attention_heads=1,
        image_size=[image_size, image_size],
        # A global-attention block may not open a pooled stage (its window would be 0), hence 1,2,2,1 and block 4.
        blocks_per_stage=[1, 2, 2, 1],
        embed_dim_per_stage=[16, 32, 64, 128],
        num_attention_heads_per_stage=[1, 1, 2, 2],
        window_size_per_stage=[8, 4, 4, 2],
        global_attention_blocks=[4],
        window_positional_embedding_background_size=[4, 4],
        mlp_ratio=2.0,
    )
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        fpn_hidden_size=hidden,
        backbone_channel_list=[128, 64, 32, 16],
        backbone_feature_sizes=[[image_size // 4] * 2, [image_size // 8] * 2, [feat, feat]],
    )
    return Sam2VideoConfig(
        vision_config=vision,
        image_size=image_size,
        prompt_encoder_config=Sam2VideoPromptEncoderConfig(
            hidden_size=hidden, image_size=image_size, patch_size=16, mask_input_channels=8
        ),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(
            hidden_size=hidden,
            mlp_dim=128,
            num_hidden_layers=1,
            num_attention_heads=2,
            iou_head_hidden_dim=32,
            iou_head_depth=2,
        ),
        memory_attention_hidden_size=hidden,
        memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=128,
        memory_attention_rope_feat_sizes=[feat, feat],
        memory_encoder_hidden_size=hidden,
        memory_encoder_output_channels=64,  # fixed by SAM 2's memory attention (its key/value width is 64)
        mask_downsampler_embed_dim=hidden,
        memory_fuser_embed_dim=hidden,
        memory_fuser_intermediate_dim=128,
        memory_fuser_num_layers=1,
    )


def tiny_sam2_processor(image_size: int = TINY_IMAGE_SIZE) -> Sam2VideoProcessor:
    """The processor of the tiny model: frames resized to ``image_size``, low-res masks at a quarter of it."""
    side = {"height": image_size, "width": image_size}
    return Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size=side, mask_size={"height": image_size // 4, "width": image_size // 4}),
        video_processor=Sam2VideoVideoProcessor(size=side),
        target_size=image_size,
    )


def write_tiny_sam2(path: str | Path, seed: int = 0) -> Path:
    """Write a random tiny SAM 2 video model and its processor to ``path``; returns the directory.

    The same seed gives the same weights, so tests can compare two runs.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = Sam2VideoModel(tiny_sam2_config()).eval()
    model.save_pretrained(path)
    tiny_sam2_processor().save_pretrained(path)
    return path
