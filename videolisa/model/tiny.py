"""Tiny random VideoLISA checkpoints in the official released format.

For tests and for an offline preview of the app: the masks of a random model mean nothing. The
files have the layout of ``ZechenBai/VideoLISA-3.8B`` (config.json with the official fields,
model.safetensors with the official key names, a sentencepiece tokenizer saved the slow way) plus a
vision tower in the layout of ``openai/clip-vit-large-patch14-336`` (a full CLIPModel checkpoint and
its preprocessor config), at 336 px and patch 14 so that every frame gives 576 visual tokens as in the
real model. Only the widths and depths are small. The SAM image encoder is shrunk through the
``sam_config`` field that the loader honours; the prompt encoder and mask decoder keep SAM's sizes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import save_file
from sentencepiece import sentencepiece_model_pb2

from ..settings import TINY
from ..tokenizer import SEG_TOKEN, SPIECE_UNDERLINE

CLIP_DIRNAME = "clip-vit-tiny-patch14-336"

# Phi-3's chat tokens, in the order (and so with the id offsets) of Phi-3-mini's tokenizer.
PHI3_ADDED_TOKENS = [
    ("<|endoftext|>", False),
    ("<|assistant|>", True),
    ("<|placeholder1|>", True),
    ("<|placeholder2|>", True),
    ("<|placeholder3|>", True),
    ("<|placeholder4|>", True),
    ("<|system|>", True),
    ("<|end|>", True),
    ("<|placeholder5|>", True),
    ("<|placeholder6|>", True),
    ("<|user|>", True),
]  # (content, rstrip)

# Words that get whole-word pieces, so that prompts tokenize into a realistic mix of words and characters.
_WORDS = (
    "You are a helpful AI assistant What is the in this video image Please segment output mask masks "
    "Sure it scene of and to that who which cat dog person man woman player ball car red blue left "
    "right one two animal object moving first last can you find where"
).split()

TINY_SIZES = dict(
    llm_hidden=64,
    llm_layers=2,
    llm_heads=4,
    llm_intermediate=128,
    sliding_window=256,
    clip_hidden=32,
    clip_layers=3,
    clip_heads=2,
    clip_intermediate=64,
    sam_embed_dim=32,
    sam_depth=2,
    sam_heads=2,
    sam_global_attn=[1],
)


def build_sentencepiece_model() -> bytes:
    """A small Llama-style BPE sentencepiece model (byte fallback, dummy prefix), built without training."""
    proto = sentencepiece_model_pb2.ModelProto()
    Piece = sentencepiece_model_pb2.ModelProto.SentencePiece
    pieces: list[tuple[str, int]] = [("<unk>", Piece.UNKNOWN), ("<s>", Piece.CONTROL), ("</s>", Piece.CONTROL)]
    pieces += [(f"<0x{b:02X}>", Piece.BYTE) for b in range(256)]
    normal: list[str] = []

    def add(piece: str) -> None:
        if piece not in normal:
            normal.append(piece)

    # Every prefix of every word (with and without the word-start mark) so that BPE merges can reach them.
    for word in _WORDS:
        for form in (SPIECE_UNDERLINE + word, word):
            for end in range(2, len(form) + 1):
                add(form[:end])
    add(SPIECE_UNDERLINE)
    for code in range(33, 127):
        add(chr(code))
    proto.pieces.extend(Piece(piece=p, score=0.0, type=t) for p, t in pieces)
    # BPE merges by score: earlier pieces win.
    proto.pieces.extend(Piece(piece=p, score=-float(i), type=Piece.NORMAL) for i, p in enumerate(normal))

    trainer = proto.trainer_spec
    trainer.model_type = sentencepiece_model_pb2.TrainerSpec.BPE
    trainer.vocab_size = len(proto.pieces)
    trainer.byte_fallback = True
    trainer.split_digits = True
    trainer.allow_whitespace_only_pieces = True
    trainer.unk_id, trainer.bos_id, trainer.eos_id, trainer.pad_id = 0, 1, 2, -1
    normalizer = proto.normalizer_spec
    normalizer.name = "identity"
    normalizer.add_dummy_prefix = True
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return proto.SerializeToString()


def write_tokenizer(directory: str | Path) -> int:
    """Write tokenizer files as ``LlamaTokenizer.save_pretrained`` does (no tokenizer.json). Returns len(tokenizer)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = build_sentencepiece_model()
    (directory / "tokenizer.model").write_bytes(model)
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model)
    base = len(proto.pieces)

    def entry(content: str, rstrip: bool, special: bool, normalized: bool = False) -> dict:
        return {"content": content, "lstrip": False, "normalized": normalized, "rstrip": rstrip,
                "single_word": False, "special": special}

    decoder = {"0": entry("<unk>", False, True), "1": entry("<s>", False, True), "2": entry("</s>", True, False)}
    added = {}
    for offset, (content, rstrip) in enumerate(PHI3_ADDED_TOKENS):
        decoder[str(base + offset)] = entry(content, rstrip, True)
        added[content] = base + offset
    seg_id = base + len(PHI3_ADDED_TOKENS)
    # tokenizer.add_tokens("[SEG]") in the official code: a normal (not special) added token.
    decoder[str(seg_id)] = entry(SEG_TOKEN, False, False, normalized=True)
    added[SEG_TOKEN] = seg_id

    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": decoder,
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>",
        "legacy": False,
        "model_max_length": 512,
        "pad_token": "<unk>",
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    token = lambda c, rstrip=False: {"content": c, "lstrip": False, "normalized": False, "rstrip": rstrip,  # noqa: E731
                                     "single_word": False}
    special_map = {"bos_token": token("<s>"), "eos_token": token("<|endoftext|>"), "pad_token": token("<unk>"),
                   "unk_token": token("<unk>")}
    _write_json(directory / "tokenizer_config.json", config)
    _write_json(directory / "special_tokens_map.json", special_map)
    _write_json(directory / "added_tokens.json", dict(sorted(added.items(), key=lambda kv: kv[1])))
    return seg_id + 1


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def tiny_config_dict(vocab_size: int, sizes: dict = TINY_SIZES) -> dict:
    """config.json with the fields of the released checkpoint (MODEL_SPEC 5.4), at tiny sizes."""
    return {
        "_name_or_path": "videolisa-tiny-random",
        "architectures": ["VideoLISAForCausalLM"],
        "model_type": "llava_phi",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "embd_pdrop": 0.0,
        "eos_token_id": 32000 if vocab_size > 32000 else vocab_size - 12,
        "freeze_mm_mlp_adapter": False,
        "hidden_act": "silu",
        "hidden_size": sizes["llm_hidden"],
        "image_aspect_ratio": "square",
        "initializer_range": 0.02,
        "intermediate_size": sizes["llm_intermediate"],
        "max_position_embeddings": 4096,
        "mm_hidden_size": sizes["clip_hidden"],
        "mm_patch_merge_type": "flat",
        "mm_projector_lr": None,
        "mm_projector_type": "mlp2x_gelu",
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": CLIP_DIRNAME,
        "num_attention_heads": sizes["llm_heads"],
        "num_hidden_layers": sizes["llm_layers"],
        "num_key_value_heads": sizes["llm_heads"],
        "original_max_position_embeddings": 4096,
        "out_dim": 256,
        "pad_token_id": vocab_size - 12,
        "resid_pdrop": 0.0,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "sam_config": {
            "encoder_embed_dim": sizes["sam_embed_dim"],
            "encoder_depth": sizes["sam_depth"],
            "encoder_num_heads": sizes["sam_heads"],
            "encoder_global_attn_indexes": list(sizes["sam_global_attn"]),
        },
        "sliding_window": sizes["sliding_window"],
        "tie_word_embeddings": False,
        "tokenizer_model_max_length": 2048,
        "tokenizer_padding_side": "right",
        "torch_dtype": "bfloat16",
        "train_mask_decoder": True,
        "transformers_version": "4.41.0.dev0",
        "tune_mm_mlp_adapter": False,
        "use_cache": False,
        "use_mm_proj": True,
        "vision_tower": CLIP_DIRNAME,
        "vocab_size": vocab_size,
    }


def write_clip(directory: str | Path, sizes: dict = TINY_SIZES, seed: int = 0) -> Path:
    """A tiny CLIPModel checkpoint laid out as openai/clip-vit-large-patch14-336 (text tower included)."""
    from transformers import CLIPConfig, CLIPModel

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=1000, max_position_embeddings=77, bos_token_id=998, eos_token_id=999),
        vision_config=dict(hidden_size=sizes["clip_hidden"], intermediate_size=sizes["clip_intermediate"],
                           num_hidden_layers=sizes["clip_layers"], num_attention_heads=sizes["clip_heads"],
                           image_size=336, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5),
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config)
    state = _openai_clip_keys(model.state_dict())
    save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    config_dict = config.to_dict()
    config_dict["architectures"] = ["CLIPModel"]
    _write_json(directory / "config.json", config_dict)
    _write_json(directory / "preprocessor_config.json", {
        "crop_size": 336, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3, "size": 336,
    })
    return directory


def _openai_clip_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # The openai checkpoints name the vision weights "vision_model.*"; keep that whatever this transformers calls them.
    out = {}
    for key, value in state.items():
        if not key.startswith(("vision_model.", "text_model.", "visual_projection", "text_projection", "logit_scale")):
            key = "vision_model." + key
        out[key] = value
    return out


def write_tiny_preview(root: str | Path, sam2: Optional[str]) -> tuple[str, Optional[str], Optional[str]]:
    """The checkpoints of a tiny random preview under ``root``: (VideoLISA directory, SAM 2, the name notices
    give SAM 2). ``sam2`` is passed on, except ``TINY``, which writes a tiny SAM 2 too, named ``TINY_SAM2_NAME``
    rather than by its folder; the name is None otherwise."""
    root = Path(root)
    model = str(write_tiny_checkpoint(root / "videolisa"))
    if sam2 != TINY:
        return model, sam2, None
    from .tiny_sam2 import TINY_SAM2_NAME, write_tiny_sam2

    return model, str(write_tiny_sam2(root / "sam2")), TINY_SAM2_NAME


def write_tiny_checkpoint(directory: str | Path, seed: int = 0, sizes: dict = TINY_SIZES,
                          dtype: torch.dtype = torch.bfloat16) -> Path:
    """Write a deterministic random VideoLISA checkpoint (and its CLIP tower) into ``directory``."""
    from transformers import Phi3ForCausalLM

    from .config import VideoLISAConfig
    from .network import SAM_PREFIX, SEG_HEAD_PREFIX, PROJECTOR_PREFIX, build_projector, build_sam, build_seg_head, \
        phi3_config

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vocab_size = write_tokenizer(directory)
    raw = tiny_config_dict(vocab_size, sizes)
    config = VideoLISAConfig.from_dict(raw)
    torch.manual_seed(seed)
    state: dict[str, torch.Tensor] = dict(Phi3ForCausalLM(phi3_config(config)).state_dict())
    for prefix, module in ((PROJECTOR_PREFIX, build_projector(config)), (SEG_HEAD_PREFIX, build_seg_head(config)),
                           (SAM_PREFIX, build_sam(config))):
        state.update({prefix + k: v for k, v in module.state_dict().items()})
    save_file({k: v.to(dtype).contiguous() for k, v in state.items()}, str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    _write_json(directory / "config.json", raw)
    write_clip(directory / CLIP_DIRNAME, sizes, seed)
    return directory
