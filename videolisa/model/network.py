"""The VideoLISA network: CLIP vision tower + projector + Phi-3 + [SEG] head + SAM (MODEL_SPEC 1, 3, 4).

Built from maintained libraries: transformers' ``Phi3ForCausalLM`` and ``CLIPVisionModel`` and the
unmodified ``segment_anything`` package. Nothing here touches files other than checkpoints.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import types
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.attention
from PIL import Image
from torch import nn

from ..errors import CheckpointMismatch, InvalidSettings, ModelUnavailable
from ..prompts import IMAGE_TOKEN_INDEX
from ..tokenizer import SEG_TOKEN, TOKENIZER_FILES, SlowLlamaTokenizer
from .checkpoint import WeightReader, check_keys, resolve_directory
from .config import VideoLISAConfig
from .sam_decoder import decode_single_mask

log = logging.getLogger(__name__)

LLM_PREFIXES = ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")
PROJECTOR_PREFIX = "model.mm_projector."
SEG_HEAD_PREFIX = "model.text_hidden_fcs."
SAM_PREFIX = "model.visual_model."
# The official merge drops the vision tower on purpose; a re-saved copy of it is ignored (CLIP loads on its own).
IGNORED_PREFIXES = ("model.vision_tower.",)

CHECKPOINT_PATTERNS = ["config.json", "generation_config.json", *TOKENIZER_FILES,
                       "*.safetensors", "model.safetensors.index.json"]
CHECKPOINT_FALLBACK = ["config.json", *TOKENIZER_FILES, "pytorch_model*.bin", "pytorch_model.bin.index.json"]
CLIP_PATTERNS = ["config.json", "preprocessor_config.json", "*.safetensors", "model.safetensors.index.json"]
CLIP_FALLBACK = ["config.json", "preprocessor_config.json", "pytorch_model.bin"]

# CLIPImageProcessor of openai/clip-vit-large-patch14-336 (MODEL_SPEC 1.4).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# segment-anything's pixel statistics, on the 0-255 scale (non-persistent buffers of Sam).
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ClipPreprocessing:
    """CLIPImageProcessor as the official run applied it (MODEL_SPEC 1.4), with the tower's own settings.

    Shortest edge to ``shortest_edge`` with PIL (bicubic for CLIP), centre crop (no padding), scale,
    normalise. The crop hides the left and right edges of wide frames from the language model, as in
    training.
    """

    shortest_edge: int = 336
    crop_size: tuple[int, int] = (336, 336)
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    resample: int = Image.BICUBIC
    rescale_factor: float = 1 / 255
    do_resize: bool = True
    do_center_crop: bool = True
    do_normalize: bool = True

    @classmethod
    def from_directory(cls, directory: Optional[Path], image_size: int) -> "ClipPreprocessing":
        """Read preprocessor_config.json when the tower has one; otherwise the standard CLIP values."""
        default = cls(shortest_edge=image_size, crop_size=(image_size, image_size))
        path = directory / "preprocessor_config.json" if directory else None
        if path is None or not path.is_file():
            return default
        raw = json.loads(path.read_text())
        size = raw.get("size", image_size)
        size = size.get("shortest_edge", size.get("height", image_size)) if isinstance(size, dict) else size
        crop = raw.get("crop_size", size)
        crop = (crop["height"], crop["width"]) if isinstance(crop, dict) else (crop, crop)
        return cls(shortest_edge=int(size), crop_size=(int(crop[0]), int(crop[1])),
                   mean=tuple(raw.get("image_mean", default.mean)), std=tuple(raw.get("image_std", default.std)),
                   resample=int(raw.get("resample", default.resample)),
                   rescale_factor=float(raw.get("rescale_factor", default.rescale_factor)),
                   do_resize=bool(raw.get("do_resize", True)), do_center_crop=bool(raw.get("do_center_crop", True)),
                   do_normalize=bool(raw.get("do_normalize", True)))

    def __call__(self, frames) -> torch.Tensor:
        """[T, H, W, 3] uint8 RGB -> [T, 3, crop_h, crop_w] float32."""
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        out = []
        for frame in frames:
            image = np.ascontiguousarray(frame)
            if self.do_resize:
                h, w = image.shape[:2]
                short, long = (h, w) if h <= w else (w, h)
                new_long = int(self.shortest_edge * long / short)
                new_h, new_w = (self.shortest_edge, new_long) if h <= w else (new_long, self.shortest_edge)
                image = np.asarray(Image.fromarray(image).resize((new_w, new_h), resample=self.resample,
                                                                 reducing_gap=None))
            if self.do_center_crop:
                ch, cw = self.crop_size
                top, left = (image.shape[0] - ch) // 2, (image.shape[1] - cw) // 2
                image = image[top:top + ch, left:left + cw]
            pixels = (image.astype(np.float64) * self.rescale_factor).astype(np.float32)
            if self.do_normalize:
                pixels = (pixels - mean) / std
            out.append(pixels.transpose(2, 0, 1))
        return torch.from_numpy(np.stack(out))


def default_device_dtype(device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """cuda + bfloat16 when a GPU is there, else cpu + float32 (bf16 matmuls are slow on CPUs).

    A device or dtype that is not one, or a GPU that is not there, is refused in words before any weight is read.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = _usable_device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise InvalidSettings("The dtype must be float32, bfloat16 or float16.")
    return device, dtype


def _usable_device(device) -> torch.device:
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidSettings(f"{device!r} is not a device: use cuda, cuda:N (a GPU's number) or cpu.") from None
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count == 0:
            raise InvalidSettings(f"The device {device} was asked for, but PyTorch sees no CUDA GPU on this machine: "
                                  "use cpu, or check the GPU's driver and CUDA_VISIBLE_DEVICES.")
        if device.index is not None and device.index >= count:
            raise InvalidSettings(f"The device {device} was asked for, but PyTorch sees {count} CUDA "
                                  f"GPU{'s' if count > 1 else ''} (cuda:0 to cuda:{count - 1}): pick one of those.")
    return device


@contextmanager
def _quiet_transformers():
    """transformers logs a table of every checkpoint key it does not use; ours are checked by us instead."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def phi3_config(config: VideoLISAConfig):
    from transformers import Phi3Config

    fields = dict(config.phi3)
    window = fields.get("sliding_window")
    if window:
        # transformers 4.4x (the official run) let a query see W + 1 keys; 5.x sees W (MODEL_SPEC 1.9).
        fields["sliding_window"] = int(window) + 1
    fields["use_cache"] = False
    cfg = Phi3Config(**fields)
    cfg._attn_implementation = "sdpa"
    return cfg


def build_projector(config: VideoLISAConfig) -> nn.Sequential:
    """LLaVA's ``mlp{N}x_gelu`` (or ``linear``) projector."""
    layers: list[nn.Module] = [nn.Linear(config.mm_hidden_size, config.hidden_size)]
    for _ in range(config.projector_depth() - 1):
        layers += [nn.GELU(), nn.Linear(config.hidden_size, config.hidden_size)]
    return nn.Sequential(*layers) if len(layers) > 1 else layers[0]


def build_seg_head(config: VideoLISAConfig) -> nn.ModuleList:
    """``text_hidden_fcs``: hidden -> hidden -> out_dim, applied to the [SEG] hidden state."""
    h = config.hidden_size
    return nn.ModuleList([nn.Sequential(nn.Linear(h, h), nn.ReLU(inplace=True), nn.Linear(h, config.out_dim),
                                        nn.Dropout(0.0))])


def build_sam(config: VideoLISAConfig):
    from segment_anything.build_sam import _build_sam

    s = config.sam
    return _build_sam(
        encoder_embed_dim=int(s["encoder_embed_dim"]),
        encoder_depth=int(s["encoder_depth"]),
        encoder_num_heads=int(s["encoder_num_heads"]),
        encoder_global_attn_indexes=list(s["encoder_global_attn_indexes"]),
    )


def _prefixed_shapes(module: nn.Module, prefix: str) -> dict[str, tuple[int, ...]]:
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}


@dataclass(frozen=True)
class ModelInfo:
    """Where the weights came from, for the run card."""

    model: str
    directory: str
    vision_tower: str
    vision_directory: str
    revision: Optional[str]
    commit: Optional[str]
    device: str
    dtype: str


class VideoLISAModel(nn.Module):
    """The network and its tokenizer. Methods are the inference steps; the pipeline orders them."""

    def __init__(self, config: VideoLISAConfig, tokenizer: SlowLlamaTokenizer, llm, vision, projector, seg_head, sam,
                 info: Optional[ModelInfo] = None, clip_preprocess: Optional[ClipPreprocessing] = None):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.llm = llm
        self.vision = vision
        self.projector = projector
        self.seg_head = seg_head
        self.sam = sam
        self.info = info
        seg_id = tokenizer.added_token_id(SEG_TOKEN)
        if seg_id is None:
            raise CheckpointMismatch(f"The tokenizer has no {SEG_TOKEN} token, so it cannot belong to VideoLISA.")
        vocab = llm.get_input_embeddings().weight.shape[0]
        if seg_id >= vocab or len(tokenizer) > vocab:
            raise CheckpointMismatch(
                f"The tokenizer ({len(tokenizer)} tokens, {SEG_TOKEN} = {seg_id}) does not fit the embedding table "
                f"model.embed_tokens.weight ({vocab} rows): the tokenizer and weights come from different checkpoints."
            )
        self.seg_token_id = seg_id
        self.end_token_ids = {i for i in (tokenizer.added_token_id("<|end|>"), tokenizer.eos_token_id) if i is not None}
        vcfg = vision.config
        self.clip_preprocess = clip_preprocess or ClipPreprocessing.from_directory(None, int(vcfg.image_size))
        self.tokens_per_frame = (int(vcfg.image_size) // int(vcfg.patch_size)) ** 2
        self._pe_cache: dict[tuple, torch.Tensor] = {}

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, model: str, vision_tower: Optional[str] = None, device=None, dtype=None,
             revision: Optional[str] = None) -> "VideoLISAModel":
        from transformers import Phi3ForCausalLM

        device, dtype = default_device_dtype(device, dtype)
        directory = resolve_directory(model, patterns=CHECKPOINT_PATTERNS, fallback_patterns=CHECKPOINT_FALLBACK,
                                      revision=revision, what="VideoLISA checkpoint")
        config = VideoLISAConfig.from_file(directory / "config.json")
        tokenizer = SlowLlamaTokenizer(directory)
        reader = WeightReader(directory)

        llm_cfg = phi3_config(config)
        with torch.device("meta"):
            skeleton_llm = Phi3ForCausalLM(llm_cfg)
            projector, seg_head, sam = build_projector(config), build_seg_head(config), build_sam(config)
        expected = {k: tuple(v.shape) for k, v in skeleton_llm.state_dict().items()}
        if llm_cfg.tie_word_embeddings:
            expected.pop("lm_head.weight", None)
        expected.update(_prefixed_shapes(projector, PROJECTOR_PREFIX))
        expected.update(_prefixed_shapes(seg_head, SEG_HEAD_PREFIX))
        expected.update(_prefixed_shapes(sam, SAM_PREFIX))
        check_keys(expected, reader.shapes, where=str(directory), ignore_unexpected=IGNORED_PREFIXES)
        del skeleton_llm

        with _quiet_transformers():
            llm = Phi3ForCausalLM.from_pretrained(directory, config=llm_cfg, dtype=dtype)
        llm = llm.to(device)
        llm.eval()
        projector = _materialize(projector, reader, PROJECTOR_PREFIX, device, dtype)
        seg_head = _materialize(seg_head, reader, SEG_HEAD_PREFIX, device, dtype)
        sam = _materialize(sam, reader, SAM_PREFIX, device, dtype)
        _prepare_sam(sam)

        tower_name = vision_tower or config.vision_tower
        vision_dir = resolve_directory(tower_name, patterns=CLIP_PATTERNS, fallback_patterns=CLIP_FALLBACK,
                                       revision=None, what="vision tower", base=directory)
        vision = load_vision_tower(vision_dir, config, device, dtype)
        info = ModelInfo(model=str(model), directory=str(directory), vision_tower=str(tower_name),
                         vision_directory=str(vision_dir), revision=revision, commit=_snapshot_commit(directory),
                         device=str(device), dtype=str(dtype).replace("torch.", ""))
        preprocess = ClipPreprocessing.from_directory(vision_dir, int(vision.config.image_size))
        return cls(config, tokenizer, llm, vision, projector, seg_head, sam, info, preprocess).eval()

    @classmethod
    def random(cls, raw_config: dict, tokenizer_dir: Path, vision_config: dict, device=None, dtype=None,
               seed: int = 0) -> "VideoLISAModel":
        """Random weights at the sizes of ``raw_config``, built directly on the device (for benchmarks)."""
        from transformers import CLIPVisionConfig, CLIPVisionModel, Phi3ForCausalLM

        device, dtype = default_device_dtype(device, dtype)
        config = VideoLISAConfig.from_dict(raw_config)
        torch.manual_seed(seed)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                llm = Phi3ForCausalLM(phi3_config(config))
                vision = CLIPVisionModel(CLIPVisionConfig(**vision_config))
                projector, seg_head, sam = build_projector(config), build_seg_head(config), build_sam(config)
        finally:
            torch.set_default_dtype(previous)
        _prepare_sam(sam)
        _truncate_tower(vision, config.vision_select_layer)
        llm.config._attn_implementation = "sdpa"
        vision.config._attn_implementation = "sdpa"
        parts = [m.to(device=device, dtype=dtype).eval() for m in (llm, vision, projector, seg_head, sam)]
        info = ModelInfo(model="random", directory="", vision_tower="random", vision_directory="", revision=None,
                         commit=None, device=str(device), dtype=str(dtype).replace("torch.", ""))
        return cls(config, SlowLlamaTokenizer(tokenizer_dir), *parts, info=info).eval()

    @property
    def device(self) -> torch.device:
        return next(self.projector.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.projector.parameters()).dtype

    # ------------------------------------------------------------------ vision -> visual tokens
    @torch.inference_mode()
    def clip_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Patch features of the selected CLIP layer (no CLS, no post-layernorm): [T, P, C_clip]."""
        out = self.vision(pixel_values=pixel_values.to(self.device, self.dtype))
        return out.last_hidden_state[:, 1:]  # the truncated tower's last layer is the selected one

    @torch.inference_mode()
    def visual_tokens(self, pixel_values: torch.Tensor, dense_positions: list[int]) -> torch.Tensor:
        """Sparse Dense Sampling: one pooled token per sparse frame, then every token of the dense ones.

        pixel_values: [T_s, 3, 336, 336] in the sparse order (repeats allowed). Returns [T_s + P*T_d, hidden].
        """
        tokens = self.projector(self.clip_features(pixel_values))  # [T_s, P, hidden]
        sparse = tokens.mean(dim=1)  # [T_s, hidden]
        dense = tokens[list(dense_positions)].reshape(-1, tokens.shape[-1])  # [T_d*P, hidden]
        return torch.cat([sparse, dense], dim=0)

    # ------------------------------------------------------------------ language model
    def embed_prompt(self, ids: list[int] | tuple[int, ...], visual: torch.Tensor) -> torch.Tensor:
        """Text embeddings with the visual sequence spliced in at the placeholder: [1, L, hidden]."""
        p = list(ids).index(IMAGE_TOKEN_INDEX)
        embed = self.llm.get_input_embeddings()
        before = torch.tensor(ids[:p], dtype=torch.long, device=self.device)
        after = torch.tensor(ids[p + 1:], dtype=torch.long, device=self.device)
        return torch.cat([embed(before), visual.to(self.dtype), embed(after)], dim=0)[None]

    @torch.inference_mode()
    def language_model(self, inputs_embeds: torch.Tensor, past_key_values=None, start: int = 0):
        """Final-norm hidden states [1, n, hidden] of positions start..start+n-1, and the KV cache."""
        n = inputs_embeds.shape[1]
        positions = torch.arange(start, start + n, device=self.device)[None]
        # cuDNN's attention builds a plan per (query, key) length: a new prompt length, and every generated
        # token, would pay for a new plan. The other kernels take any length as it comes.
        with torch.nn.attention.sdpa_kernel(_LLM_ATTENTION_BACKENDS):
            out = self.llm.model(inputs_embeds=inputs_embeds, position_ids=positions,
                                 past_key_values=past_key_values, use_cache=past_key_values is not None)
        return out.last_hidden_state, out.past_key_values

    def next_token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.llm.lm_head(hidden)

    @torch.inference_mode()
    def mask_embedding(self, hidden_rows: torch.Tensor) -> torch.Tensor:
        """text_hidden_fcs on the hidden state before each [SEG]: [n, hidden] -> [n, 256]."""
        return self.seg_head[0](hidden_rows.to(self.dtype))

    # ------------------------------------------------------------------ SAM
    def sam_input_size(self, height: int, width: int) -> tuple[int, int]:
        """Size after ResizeLongestSide(1024): (h', w')."""
        from segment_anything.utils.transforms import ResizeLongestSide

        return ResizeLongestSide.get_preprocess_shape(height, width, self.sam.image_encoder.img_size)

    def sam_preprocess(self, frames: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """[B, H, W, 3] uint8 RGB -> normalised, zero-padded [B, 3, 1024, 1024] on the device, and (h', w')."""
        from segment_anything.utils.transforms import ResizeLongestSide

        resize = ResizeLongestSide(self.sam.image_encoder.img_size)
        resized = np.stack([resize.apply_image(np.ascontiguousarray(f)) for f in frames])  # [B, h', w', 3] (PIL bilinear)
        x = torch.from_numpy(resized).to(self.device).permute(0, 3, 1, 2).float()
        x = self.sam.preprocess(x)  # normalise in float32, then pad bottom/right
        return x.to(self.dtype), tuple(resized.shape[1:3])

    @torch.inference_mode()
    def sam_encode(self, x: torch.Tensor) -> torch.Tensor:
        """SAM image embeddings: [B, 3, 1024, 1024] -> [B, 256, 64, 64]."""
        with self.encoder_scratch():
            return self.sam.image_encoder(x)

    @contextmanager
    def encoder_scratch(self):
        """While open, SAM's global attention on a CPU builds every frame's bias into one buffer (per thread).

        A frame's bias is large (134 MB for the tiny encoder, 1 GB for ViT-H in float32): a fresh one per
        frame is memory the C allocator maps and the kernel faults in anew, which on a CPU took more than
        half of the encoder's time. Open it around all the batches of a video; the buffer goes when it
        closes. A GPU's caching allocator already reuses that memory.
        """
        if self.device.type == "cuda" or getattr(_SCRATCH, "buffers", None) is not None:
            yield
            return
        _SCRATCH.buffers = {}
        try:
            yield
        finally:
            del _SCRATCH.buffers

    def dense_pe(self) -> torch.Tensor:
        """SAM's dense positional encoding [1, 256, 64, 64], computed once per device and dtype.

        Computed in the model dtype as the official (patched) prompt encoder does; in float32 it equals
        ``prompt_encoder.get_dense_pe()``.
        """
        key = (self.device, self.dtype)
        if key not in self._pe_cache:
            pe_layer = self.sam.prompt_encoder.pe_layer
            gaussian = pe_layer.positional_encoding_gaussian_matrix.to(self.dtype)  # [2, 128]
            h, w = self.sam.prompt_encoder.image_embedding_size
            grid = torch.ones((h, w), device=self.device, dtype=self.dtype)
            y = (grid.cumsum(dim=0) - 0.5) / h
            x = (grid.cumsum(dim=1) - 0.5) / w
            coords = (2 * torch.stack([x, y], dim=-1) - 1) @ gaussian
            coords = 2 * math.pi * coords
            pe = torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)  # [h, w, 256]
            self._pe_cache[key] = pe.permute(2, 0, 1)[None]
        return self._pe_cache[key]

    @torch.inference_mode()
    def sam_decode(self, embeddings: torch.Tensor, prompt: torch.Tensor, official: bool = False,
                   input_size: Optional[tuple[int, int]] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One mask per frame for one prompt: embeddings [B,256,64,64], prompt [256] -> low-res [B,256,256], iou [B].

        On a CPU the decoder's products are taken in a cheaper order (``sam_decoder``), unless ``official``
        asks for segment-anything's own ``MaskDecoder.forward``; there, given the frames' ``input_size``
        (h', w'), only the top-left part of the low-res logits that ``sam_postprocess`` reads for that size
        is computed (the padding's rows or columns are not).
        """
        decoder = self.sam.mask_decoder
        sparse = prompt.reshape(1, 1, -1).to(self.dtype)  # [1, 1, 256]
        no_mask = self.sam.prompt_encoder.no_mask_embed.weight[0]  # [256]
        dense = no_mask.reshape(1, -1, 1, 1).expand(1, -1, *self.sam.prompt_encoder.image_embedding_size)  # a view
        cpu = self.device.type == "cpu"
        # On a CPU the decoder's activations (4 MB per frame and layer) stay in cache two frames at a time:
        # 1.5x faster than eight. On a GPU the whole batch goes at once.
        step = _CPU_DECODE_FRAMES if cpu else max(1, len(embeddings))
        extent = self.sam_low_res_extent(input_size) if input_size else None
        lows, ious = [], []
        for i in range(0, len(embeddings), step):
            batch = embeddings[i:i + step].to(self.dtype)
            if cpu and not official:
                low, iou = decode_single_mask(decoder, batch, self.dense_pe(), sparse, no_mask, extent=extent)
            else:
                # One prompt for a batch of frames: it broadcasts over the frames (no copy per frame).
                low, iou = decoder(image_embeddings=batch, image_pe=self.dense_pe(), sparse_prompt_embeddings=sparse,
                                   dense_prompt_embeddings=dense, multimask_output=False)
                low, iou = low[:, 0], iou[:, 0]
            lows.append(low)  # [b, 256, 256]
            ious.append(iou)  # [b]
        return (lows[0], ious[0]) if len(lows) == 1 else (torch.cat(lows), torch.cat(ious))

    def _sam_low_res_scale(self) -> int:
        """How many of SAM's input pixels one low-res logit spans: 1024 / 256 = 4."""
        return self.sam.image_encoder.img_size // (4 * self.sam.prompt_encoder.image_embedding_size[0])

    def sam_low_res_extent(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """The cells (rows, cols) of the embedding grid whose low-res logits post-processing reads for input_size.

        Upsampled 4x to 1024 (bilinear, half-pixel centres) and cropped to (h', w'), the low-res logits are read
        up to row floor((h' - 0.5) / 4 - 0.5) + 1, and likewise for columns; each cell gives 4 of them.
        """
        scale = self._sam_low_res_scale()
        return tuple(min(g, math.ceil((math.floor((n - 0.5) / scale - 0.5) + 2) / 4))
                     for g, n in zip(self.sam.prompt_encoder.image_embedding_size, input_size))

    @torch.inference_mode()
    def sam_postprocess(self, low: torch.Tensor, input_size: tuple[int, int],
                        original_size: tuple[int, int]) -> torch.Tensor:
        """Low-res logits [B,256,256] -> logits [B,H,W] at the original size, in float32.

        segment-anything's ``postprocess_masks`` (upsample 4x to 1024, crop to ``input_size``, resize), written so
        that ``low`` may also be the top-left part that ``sam_decode`` computes for ``input_size``: upsampled at
        the same 4x scale, every sampling position is the same.
        """
        scale = self._sam_low_res_scale()
        masks = nn.functional.interpolate(low[:, None].float(), (scale * low.shape[-2], scale * low.shape[-1]),
                                          mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return nn.functional.interpolate(masks, original_size, mode="bilinear", align_corners=False)[:, 0]


_LLM_ATTENTION_BACKENDS = [torch.nn.attention.SDPBackend.FLASH_ATTENTION,
                           torch.nn.attention.SDPBackend.EFFICIENT_ATTENTION, torch.nn.attention.SDPBackend.MATH]
_CPU_DECODE_FRAMES = 2
_SAM_BIAS_BYTES = 1.1e9  # at most this much relative-position bias at once (two ViT-H frames in bf16)
_SCRATCH = threading.local()  # the open bias buffers of VideoLISAModel.encoder_scratch, per thread


def _bias_buffer(shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """An uninitialised tensor for a bias: the scratch's, when one is open in this thread."""
    buffers = getattr(_SCRATCH, "buffers", None)
    if buffers is None:
        return like.new_empty(shape)
    key = (shape, like.dtype, like.device)
    if key not in buffers:
        buffers[key] = like.new_empty(shape)
    return buffers[key]


def _sam_attention_sdpa(self, x: torch.Tensor) -> torch.Tensor:
    """SAM's ViT attention through scaled_dot_product_attention, with the decomposed relative-position bias.

    The same arithmetic as ``segment_anything``'s ``Attention.forward`` (the bias is built from the
    unscaled queries, the softmax sees q.k * scale + bias) without materialising the softmax in Python.
    """
    from segment_anything.modeling.image_encoder import get_rel_pos

    b, h, w, _ = x.shape
    # Views, not copies: [B, heads, HW, C] with C contiguous is what the attention kernels read.
    q, k, v = self.qkv(x).view(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    if not self.use_rel_pos:
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))
    rel_pos_h, rel_pos_w = get_rel_pos(h, h, self.rel_pos_h), get_rel_pos(w, w, self.rel_pos_w)
    # The bias of a global block is [heads, HW, HW] per frame (0.5 GB in bf16 for ViT-H): build it for a
    # few frames at a time so that large batches stay within memory. A CPU goes one frame at a time, each
    # into the same buffer (``VideoLISAModel.encoder_scratch``), which stays mapped.
    budget = _SAM_BIAS_BYTES if q.device.type == "cuda" else 0
    step = max(1, int(budget // (self.num_heads * (h * w) ** 2 * q.element_size())))
    outs = []
    for i in range(0, b, step):
        qi, ki, vi = q[i:i + step], k[i:i + step], v[i:i + step]
        r_q = qi.unflatten(2, (h, w))  # [b, heads, H, W, C]
        rel_h = torch.einsum("bnhwc,hkc->bnhwk", r_q, rel_pos_h)  # [b, heads, H, W, H]
        rel_w = torch.einsum("bnhwc,wkc->bnhwk", r_q, rel_pos_w)  # [b, heads, H, W, W]
        bias = _bias_buffer((len(qi), self.num_heads, h, w, h, w), q)
        torch.add(rel_h.unsqueeze(-1), rel_w.unsqueeze(-2), out=bias)
        bias = bias.view(len(qi), self.num_heads, h * w, h * w)
        outs.append(torch.nn.functional.scaled_dot_product_attention(qi, ki, vi, attn_mask=bias, scale=self.scale))
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))


def _channel_norm(self, x: torch.Tensor) -> torch.Tensor:
    """segment-anything's ``LayerNorm2d`` as one layer norm over the last axis of channels-last features.

    Its own forward reduces over axis 1, which strides through channels-last memory (the layout of the mask
    decoder's upscaling features): 25 times slower there on a CPU, for the same normalisation. Channels-first
    features (the encoder neck's) keep segment-anything's code.
    """
    if not x.is_contiguous(memory_format=torch.channels_last):
        return type(self).forward(self, x)
    normed = nn.functional.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
    return normed.permute(0, 3, 1, 2)


def set_sam_fused(sam, fused: bool) -> None:
    """SAM with SDPA attention and fused channel norms (``fused=True``), or segment-anything's own code."""
    from segment_anything.modeling.common import LayerNorm2d

    patched = [(block.attn, _sam_attention_sdpa) for block in sam.image_encoder.blocks]
    patched += [(module, _channel_norm) for module in sam.modules() if isinstance(module, LayerNorm2d)]
    # Touch the modules only when the choice changes (rebinding on every call would churn their state).
    for module, forward in patched:
        current = module.__dict__.get("forward")
        if fused and current is None:
            module.forward = types.MethodType(forward, module)
        elif not fused and current is not None:
            del module.forward


def _prepare_sam(sam) -> None:
    """What the official SAM does beyond segment-anything's, for inference at the model's dtype.

    The pixel mean and std stay float32 buffers: the official code normalises with float32 constants and
    casts the frames afterwards (cast to bfloat16 with the rest of the model, they would shift a channel by
    up to 0.22 grey levels and scale it by 0.2 %). In a float16 model the encoder's neck runs in float32
    and its output is cast back, as the official encoder does against overflow. Attention and channel norms
    are the fused ones (``set_sam_fused``).
    """
    device = sam.device
    for name, values in (("pixel_mean", SAM_PIXEL_MEAN), ("pixel_std", SAM_PIXEL_STD)):
        sam.register_buffer(name, torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1, 1),
                            persistent=False)
    neck = sam.image_encoder.neck
    if next(neck.parameters()).dtype == torch.float16:
        # The neck's own weights in float32 (same keys, and a later .to(device) moves them with the rest).
        neck.float()
        neck.forward = types.MethodType(_float32_forward, neck)
    set_sam_fused(sam, fused=True)


def _float32_forward(self: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """A float32 Sequential on a lower-precision input, returned in the input's dtype."""
    return nn.Sequential.forward(self, x.float()).to(x.dtype)


def _materialize(module: nn.Module, reader: WeightReader, prefix: str, device, dtype) -> nn.Module:
    """Give a meta-built module real storage and the checkpoint's weights (cast to the compute dtype)."""
    keys = [prefix + k for k in module.state_dict()]
    state = {k: v.to(dtype) for k, v in reader.read(keys, strip_prefix=prefix).items()}
    module = module.to_empty(device=device)
    module.load_state_dict(state, strict=True)
    return module.to(device=device, dtype=dtype).eval()


def load_vision_tower(directory: Path, config: VideoLISAConfig, device, dtype):
    """CLIPVisionModel from a full CLIPModel checkpoint or a vision-only one, cut after the selected layer."""
    from transformers import CLIPVisionModel

    try:
        with _quiet_transformers():
            vision, info = CLIPVisionModel.from_pretrained(directory, dtype=dtype, attn_implementation="sdpa",
                                                          output_loading_info=True)
    except (OSError, ValueError) as exc:
        raise ModelUnavailable(f"The vision tower at {directory} could not be loaded: {exc}") from exc
    missing = sorted(info.get("missing_keys") or [])
    mismatched = sorted(str(k) for k in info.get("mismatched_keys") or [])
    if missing or mismatched:
        raise CheckpointMismatch(
            f"The vision tower at {directory} does not match its config: missing {missing[:8]}, "
            f"wrong shape {mismatched[:8]}."
        )
    if vision.config.hidden_size != config.mm_hidden_size:
        raise CheckpointMismatch(
            f"The vision tower at {directory} has width {vision.config.hidden_size}, but the projector expects "
            f"mm_hidden_size={config.mm_hidden_size}: pass the vision tower this checkpoint was trained with."
        )
    _truncate_tower(vision, config.vision_select_layer)
    return vision.to(device).eval()


def _truncate_tower(vision, select: int) -> None:
    """Drop the layers after the selected one: they never influence the features we use."""
    layers = _encoder_layers(vision)
    total = len(layers)
    keep = total + 1 + select if select < 0 else select  # hidden_states[k] is the output of k layers
    if not 1 <= keep <= total:
        raise ModelUnavailable(f"mm_vision_select_layer={select} is out of range for a {total}-layer vision tower.")
    del layers[keep:]


def _encoder_layers(vision) -> nn.ModuleList:
    # transformers 5.0 keeps a .vision_model submodule; later 5.x releases flatten it.
    body = getattr(vision, "vision_model", vision)
    return body.encoder.layers


def _snapshot_commit(directory: Path) -> Optional[str]:
    # Hub cache layout: .../snapshots/<commit>/
    return directory.name if directory.parent.name == "snapshots" else None
