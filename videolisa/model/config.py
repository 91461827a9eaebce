"""The fields of a VideoLISA config.json that inference reads (MODEL_SPEC 5.4)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import ModelUnavailable

# Phi-3 fields passed on to transformers' Phi3Config; the rest of config.json is LLaVA/VideoLISA's.
PHI3_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "max_position_embeddings", "original_max_position_embeddings", "rope_theta",
    "rope_scaling", "sliding_window", "rms_norm_eps", "hidden_act", "bos_token_id", "eos_token_id",
    "pad_token_id", "tie_word_embeddings", "resid_pdrop", "embd_pdrop", "attention_dropout",
    "attention_bias", "initializer_range", "partial_rotary_factor",
)

# segment-anything's ViT-H, used unless config.json carries "sam_config".
SAM_VIT_H = dict(encoder_embed_dim=1280, encoder_depth=32, encoder_num_heads=16,
                 encoder_global_attn_indexes=[7, 15, 23, 31])


@dataclass(frozen=True)
class VideoLISAConfig:
    phi3: dict[str, Any]
    vision_tower: str
    vision_select_layer: int
    projector_type: str
    mm_hidden_size: int
    out_dim: int
    sam: dict[str, Any]
    torch_dtype: Optional[str] = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def hidden_size(self) -> int:
        return int(self.phi3["hidden_size"])

    @property
    def max_positions(self) -> int:
        return int(self.phi3.get("max_position_embeddings") or 4096)

    @classmethod
    def from_file(cls, path: str | Path) -> "VideoLISAConfig":
        path = Path(path)
        if not path.is_file():
            raise ModelUnavailable(f"The checkpoint has no config.json (looked for {path}).")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ModelUnavailable(f"config.json at {path} is not valid JSON: {exc}.") from exc
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "VideoLISAConfig":
        missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size") if k not in raw]
        if missing:
            raise ModelUnavailable(f"config.json lacks the language-model fields {', '.join(missing)}.")
        # At inference the official code sets mm_vision_tower := vision_tower.
        tower = raw.get("vision_tower") or raw.get("mm_vision_tower")
        if not tower:
            raise ModelUnavailable("config.json names no vision tower (fields vision_tower / mm_vision_tower).")
        if raw.get("mm_use_im_start_end"):
            raise ModelUnavailable("This checkpoint uses image start/end tokens, which VideoLISA inference does not support.")
        merge = raw.get("mm_patch_merge_type", "flat")
        if merge != "flat":
            raise ModelUnavailable(f"mm_patch_merge_type {merge!r} is not supported (VideoLISA uses 'flat').")
        # mm_vision_select_feature is not read: the official model sets it to "patch" whatever the file says.
        projector = raw.get("mm_projector_type", "linear")
        if projector != "linear" and not re.fullmatch(r"mlp(\d+)x_gelu", projector):
            raise ModelUnavailable(f"mm_projector_type {projector!r} is not supported.")
        sam = dict(SAM_VIT_H)
        sam.update(raw.get("sam_config") or {})
        phi3 = {k: raw[k] for k in PHI3_FIELDS if k in raw}
        return cls(
            phi3=phi3,
            vision_tower=str(tower),
            vision_select_layer=int(raw.get("mm_vision_select_layer", -2)),
            projector_type=projector,
            mm_hidden_size=int(raw.get("mm_hidden_size", 1024)),
            out_dim=int(raw.get("out_dim", 256)),
            sam=sam,
            torch_dtype=raw.get("torch_dtype") or raw.get("dtype"),
            raw=raw,
        )

    def projector_depth(self) -> int:
        match = re.fullmatch(r"mlp(\d+)x_gelu", self.projector_type)
        return int(match.group(1)) if match else 1
