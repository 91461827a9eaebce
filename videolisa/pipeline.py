"""decode -> sample -> CLIP -> LLM -> [SEG] embedding -> SAM on every frame -> (post-optimization) -> Segmentation.

The steps follow the official inference (MODEL_SPEC); what differs is how the work is organised:
frames are streamed in chunks, SAM's encoder runs on batches, and what a new prompt on the same
video can reuse (visual tokens, the language model's KV cache of the prompt-independent prefix, SAM
embeddings) is kept in a bounded cache.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from .errors import InvalidPrompt, InvalidSettings, ModelUnavailable
from .masks import PackedMasks
from .model.network import VideoLISAModel, set_sam_fused
from .prompts import TEACHER_FORCED_ANSWER, build_prompt_ids, render_prompt, sanitize_user_text
from .sampling import check_frame_counts, dense_positions, sparse_indices
from .settings import (DEFAULT_SAM2, MAX_NEW_TOKENS, NO_LIMITS, NUM_FRAMES_DENSE, NUM_FRAMES_SPARSE, Limits, env_number,
                       default_sam_batch, switch, whole_number)
from .source import FrameSource, open_source

Progress = Callable[[str, float], None]  # (stage description, fraction done in [0, 1])
MASK_SOURCES = ("teacher_forced", "generated")


@dataclass(frozen=True)
class Segmentation:
    """The result of one prompt on one video. Masks cover every processed frame at the original size."""

    masks: PackedMasks  # final masks (post-optimized when that ran), bool [T, H, W]
    raw_masks: PackedMasks  # One-Token-Seg-All masks straight from VideoLISA
    logits: Optional[np.ndarray]  # float32 [T, H, W] before thresholding, when asked for
    scores: np.ndarray  # float32 [T]: SAM's predicted IoU of the raw mask on each frame
    prompt: str  # the user's text as the model saw it (after sanitising)
    text: Optional[str]  # the model's generated answer (None when generation was off)
    answer_has_seg: Optional[bool]  # whether the generated answer contains [SEG]
    mask_from: str
    fps: float
    num_frames: int
    height: int
    width: int
    sparse_frame_indices: tuple[int, ...]
    dense_frame_indices: tuple[int, ...]
    frame_offset: int  # first processed frame of the file (0 unless trimmed at the start)
    settings: dict[str, Any]
    timings: dict[str, float]
    notices: tuple[str, ...] = ()
    post_optimization: Any = None  # videolisa.postopt.PostOptimization, or None when not asked for
    model: dict[str, Any] = field(default_factory=dict)

    @property
    def is_empty(self) -> bool:
        return not bool(self.masks.areas().any())

    def visible_frames(self) -> Optional[tuple[int, int]]:
        """First and last frame where the target is present, or None."""
        present = np.flatnonzero(self.masks.areas())
        return (int(present[0]), int(present[-1])) if present.size else None

    def card(self) -> dict[str, Any]:
        """A JSON-ready summary of the run (the run card of the exports)."""
        post = self.post_optimization
        return {
            "prompt": self.prompt,
            "text": self.text,
            "answer_has_seg": self.answer_has_seg,
            "mask_from": self.mask_from,
            "settings": self.settings,
            "num_frames": self.num_frames,
            "fps": self.fps,
            "size": [self.width, self.height],
            "frame_offset": self.frame_offset,
            "sparse_frame_indices": list(self.sparse_frame_indices),
            "dense_frame_indices": list(self.dense_frame_indices),
            "post_optimization": asdict(post) if is_dataclass(post) else post,
            "model": self.model,
            "timings": self.timings,
            "notices": list(self.notices),
        }

    @classmethod
    def from_card(cls, entry: dict, masks: PackedMasks) -> "Segmentation":
        """The inverse of ``card()`` given the masks (the exports hold the final ones): no logits, no raw masks
        apart from the final ones, and zero scores, since a run card holds none of them."""
        from .postopt import PostOptimization

        post = entry.get("post_optimization")
        if post is not None:
            post = PostOptimization(**{k: tuple(v) if isinstance(v, list) else v for k, v in post.items()})
        width, height = entry["size"]
        return cls(
            masks=masks, raw_masks=masks, logits=None, scores=np.zeros(len(masks), np.float32),
            prompt=entry["prompt"], text=entry["text"], answer_has_seg=entry["answer_has_seg"],
            mask_from=entry["mask_from"], fps=float(entry["fps"]), num_frames=int(entry["num_frames"]),
            height=int(height), width=int(width), sparse_frame_indices=tuple(entry["sparse_frame_indices"]),
            dense_frame_indices=tuple(entry["dense_frame_indices"]), frame_offset=int(entry["frame_offset"]),
            settings=entry["settings"], timings=entry["timings"], notices=tuple(entry["notices"]),
            post_optimization=post, model=entry["model"],
        )


def run_notices(segmentations: Sequence[Segmentation]) -> list[str]:
    """Every sentence a run has for the user, once each, in order: each target's notices (limits applied, no mask)
    and what post-optimization did or why it did not run."""
    seen: list[str] = []
    for seg in segmentations:
        post = seg.post_optimization
        for sentence in (*seg.notices, *((post.reason,) if post is not None else ())):
            if sentence not in seen:
                seen.append(sentence)
    return seen


class _Timer:
    """Adds up wall time per stage: ``with timer("stage"): ...``."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._starts: list[tuple[str, float]] = []

    def __call__(self, stage: str) -> "_Timer":
        self._starts.append((stage, time.perf_counter()))
        return self

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        stage, start = self._starts.pop()
        self.times[stage] = self.times.get(stage, 0.0) + time.perf_counter() - start


class _ByteLRU:
    """A thread-safe LRU cache bounded in bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[Any, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key][0]

    def put(self, key, value, nbytes: int) -> None:
        if nbytes > self.max_bytes:
            return
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = (value, nbytes)
            while sum(n for _, n in self._items.values()) > self.max_bytes:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


@dataclass(frozen=True)
class _VisualPrefix:
    """What every prompt on a video shares: the visual tokens and the LLM state after them."""

    visual: torch.Tensor  # [V, hidden]
    kv: tuple[tuple[torch.Tensor, torch.Tensor], ...]  # per layer [1, heads, prefix_len, head_dim]
    prefix_len: int
    last_hidden: torch.Tensor  # [hidden], the final-norm state of the last prefix position

    @property
    def nbytes(self) -> int:
        tensors = [self.visual, self.last_hidden, *(t for kv in self.kv for t in kv)]
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class _SamEmbeddings:
    embeddings: torch.Tensor  # [N, 256, 64, 64]
    input_size: tuple[int, int]


@dataclass(frozen=True)
class _Answer:
    embedding: Optional[torch.Tensor]  # [256], None when there is no mask
    text: Optional[str] = None
    has_seg: Optional[bool] = None
    notices: tuple[str, ...] = ()


def _checked_limits(limits, default: Limits) -> Limits:
    if limits is None:
        return default
    if not isinstance(limits, Limits):
        raise InvalidSettings(f"limits must be a videolisa.settings.Limits or None; got {type(limits).__name__} "
                              f"{limits!r}.")
    return limits


class VideoLISAPipeline:
    """A loaded VideoLISA model and the caches that make repeated prompts on one video cheap."""

    def __init__(self, model: VideoLISAModel, sam2: Optional[str] = DEFAULT_SAM2, limits: Limits = NO_LIMITS,
                 sam_batch_size: Optional[int] = None, cache_mb: Optional[float] = None,
                 sam2_name: Optional[str] = None):
        self.model = model
        self.sam2 = sam2  # None: post-optimization is switched off (and says so)
        self.sam2_name = sam2_name  # what notices call SAM 2 (default: sam2), e.g. for a temporary checkpoint
        self.limits = _checked_limits(limits, NO_LIMITS)
        self.sam_batch_size = (default_sam_batch(model.device.type) if sam_batch_size is None
                               else whole_number("sam_batch_size", sam_batch_size, 1))
        if cache_mb is None:
            cache_mb = env_number("VIDEOLISA_CACHE_MB", 4096.0, whole=False)
        elif isinstance(cache_mb, bool) or not isinstance(cache_mb, (int, float)) or not cache_mb >= 0:
            raise InvalidSettings(f"cache_mb must be a number of megabytes, zero or more (zero: no cache); got "
                                  f"{cache_mb!r}.")
        self.cache = _ByteLRU(int(cache_mb * 1e6))
        self._post_optimizer = None
        self._lock = threading.Lock()  # one inference at a time on the shared model

    # ------------------------------------------------------------------ public API
    def segment(self, video, prompt: str, num_frames_sparse: int = NUM_FRAMES_SPARSE,
                num_frames_dense: int = NUM_FRAMES_DENSE, post_optimize: bool = False, return_logits: bool = False,
                generate_text: bool = False, mask_from: str = "teacher_forced",
                max_new_tokens: int = MAX_NEW_TOKENS, limits: Optional[Limits] = None,
                progress: Optional[Progress] = None, naive: bool = False) -> Segmentation:
        """Segment the target that ``prompt`` describes on every frame of ``video``.

        video: a path to a video or image file, or RGB uint8 frames [T, H, W, 3] (an image is one frame).
        The defaults follow the official inference; ``limits`` (trim, downscale) are opt-in.
        ``naive=True`` organises the work as the official code does (one full LLM pass, frame-by-frame SAM,
        no cache), for benchmarks.
        """
        return self.segment_targets(video, [prompt], num_frames_sparse=num_frames_sparse,
                                    num_frames_dense=num_frames_dense, post_optimize=post_optimize,
                                    return_logits=return_logits, generate_text=generate_text, mask_from=mask_from,
                                    max_new_tokens=max_new_tokens, limits=limits, progress=progress, naive=naive)[0]

    def segment_targets(self, video, prompts: Sequence[str], num_frames_sparse: int = NUM_FRAMES_SPARSE,
                        num_frames_dense: int = NUM_FRAMES_DENSE, post_optimize: bool = False,
                        return_logits: bool = False, generate_text: bool = False, mask_from: str = "teacher_forced",
                        max_new_tokens: int = MAX_NEW_TOKENS, limits: Optional[Limits] = None,
                        progress: Optional[Progress] = None, naive: bool = False) -> list[Segmentation]:
        """Several targets on one video: one language-model pass per prompt, one SAM pass for all of them."""
        # Checked here, where callers' values come in: later stages compare and store them as they are.
        num_frames_sparse = whole_number("num_frames_sparse", num_frames_sparse, 1)
        num_frames_dense = whole_number("num_frames_dense", num_frames_dense, 1)
        max_new_tokens = whole_number("max_new_tokens", max_new_tokens, 1)
        post_optimize, return_logits, generate_text, naive = (
            switch(name, value) for name, value in (("post_optimize", post_optimize), ("return_logits", return_logits),
                                                    ("generate_text", generate_text), ("naive", naive)))
        if progress is not None and not callable(progress):
            raise InvalidSettings(f"progress must be a function (stage, fraction) or None; got {progress!r}.")
        if mask_from not in MASK_SOURCES:
            raise InvalidSettings(f"mask_from must be one of {', '.join(MASK_SOURCES)} (got {mask_from!r}).")
        if mask_from == "generated" and not generate_text:
            raise InvalidSettings("mask_from='generated' needs generate_text=True.")
        if isinstance(prompts, str) or not prompts:
            raise InvalidPrompt("Give a list of at least one prompt.")
        limits = _checked_limits(limits, self.limits)
        report = progress or (lambda stage, fraction: None)
        with self._lock, torch.inference_mode():
            # The naive mode also uses segment-anything's own attention and norms, as the official code does.
            set_sam_fused(self.model.sam, fused=not naive)
            try:
                return self._run(video, prompts, num_frames_sparse, num_frames_dense, post_optimize, return_logits,
                                 generate_text, mask_from, max_new_tokens, limits, report, naive)
            finally:
                set_sam_fused(self.model.sam, fused=True)

    def _run(self, video, prompts, num_frames_sparse, num_frames_dense, post_optimize, return_logits, generate_text,
             mask_from, max_new_tokens, limits, report, naive) -> list[Segmentation]:
        timer = _Timer()
        check_frame_counts(num_frames_sparse, num_frames_dense)
        texts = [self._check_prompt(p, limits) for p in prompts]
        self._check_context(texts, num_frames_sparse, num_frames_dense, generate_text, max_new_tokens)
        report("Reading the video", 0.0)
        with timer("probe"):
            source, notices = open_source(video, limits)
        sparse = sparse_indices(source.num_frames, num_frames_sparse)
        dense_pos = dense_positions(num_frames_sparse, num_frames_dense)
        dense_frames = [sparse[d] for d in dense_pos]

        report("Looking at the sampled frames", 0.05)
        prefix = self._visual_prefix(source, sparse, dense_pos, naive, timer)
        answers = []
        for k, text in enumerate(texts):
            report(f"Reasoning about target {k + 1} of {len(texts)}", 0.1 + 0.1 * k / len(texts))
            with timer("language_model"):
                answers.append(self._language(prefix, text, generate_text, mask_from, max_new_tokens, naive))
        report(f"Segmenting {source.num_frames} frames", 0.2)
        raw, scores, logits = self._masks(source, [a.embedding for a in answers], return_logits, naive,
                                          report, timer)
        settings = dict(num_frames_sparse=num_frames_sparse, num_frames_dense=num_frames_dense,
                        post_optimize=post_optimize, generate_text=generate_text, mask_from=mask_from,
                        max_new_tokens=max_new_tokens, return_logits=return_logits,
                        limits={k: v for k, v in vars(limits).items() if v is not None},
                        inference_short_side=source.max_side, naive=naive)
        results = []
        for k, (text, answer) in enumerate(zip(texts, answers)):
            final, post = raw[k], None
            if post_optimize:
                report(f"Post-optimization of target {k + 1}", 0.85)
                with timer("post_optimization"):
                    final, post = self._post_optimize(source, raw[k], scores[k], dense_frames)
            results.append(Segmentation(
                masks=final, raw_masks=raw[k], logits=logits[k], scores=scores[k], prompt=text,
                text=answer.text, answer_has_seg=answer.has_seg, mask_from=mask_from, fps=source.fps,
                num_frames=source.num_frames, height=source.height, width=source.width,
                sparse_frame_indices=tuple(sparse), dense_frame_indices=tuple(dense_frames),
                frame_offset=source.start, settings=settings, timings=dict(timer.times),
                notices=tuple(notices) + answer.notices, post_optimization=post,
                model=asdict(self.model.info) if self.model.info else {},
            ))
        report("Done", 1.0)
        return results

    def clear_cache(self) -> None:
        self.cache.clear()

    def to(self, device) -> "VideoLISAPipeline":
        """Move the model (and a loaded SAM 2) to ``device``; cached tensors are dropped."""
        from dataclasses import replace

        device = torch.device(device)
        with self._lock:
            self.model.to(device)
            if self.model.info:
                self.model.info = replace(self.model.info, device=str(device))
            self.cache.clear()
            self._post_optimizer = None
        return self

    def load_post_optimizer(self):
        """Load SAM 2 now rather than at the first post-optimized run; raises ModelUnavailable if it cannot."""
        from .postopt import PostOptimizer

        if not self.sam2:
            raise ModelUnavailable("No SAM 2 checkpoint is configured for post-optimization.")
        if self._post_optimizer is None:
            self._post_optimizer = PostOptimizer.load(self.sam2, device=self.model.device, name=self.sam2_name)
        return self._post_optimizer

    # ------------------------------------------------------------------ checks
    def _check_prompt(self, prompt: str, limits: Limits) -> str:
        if not isinstance(prompt, str):
            raise InvalidPrompt("The prompt must be text.")
        if limits.max_prompt_chars and len(prompt) > limits.max_prompt_chars:
            raise InvalidPrompt(f"The prompt has {len(prompt)} characters; keep it under {limits.max_prompt_chars}.")
        text = sanitize_user_text(prompt, self.model.tokenizer.added_token_texts)
        if limits.max_prompt_tokens:
            n = len(self.model.tokenizer.encode(text, add_special_tokens=False))
            if n > limits.max_prompt_tokens:
                raise InvalidPrompt(f"The prompt is {n} tokens long; keep it under {limits.max_prompt_tokens} tokens.")
        return text

    def _check_context(self, texts, num_sparse, num_dense, generate_text, max_new_tokens) -> None:
        limit = self.model.config.max_positions
        visual = num_sparse + self.model.tokens_per_frame * num_dense
        for text in texts:
            ids = build_prompt_ids(self.model.tokenizer, render_prompt(text), self.model.seg_token_id)
            needed = ids.spliced_length(visual) + (max_new_tokens if generate_text else 0)
            if needed > limit:
                raise InvalidSettings(
                    f"{num_sparse} sparse and {num_dense} dense frames make {visual} visual tokens; with the prompt "
                    f"that is {needed} positions, more than the model's context of {limit}. Use fewer dense frames "
                    "or a shorter prompt."
                )

    # ------------------------------------------------------------------ visual tokens and the LLM prefix
    def _visual_prefix(self, source: FrameSource, sparse, dense_pos, naive: bool, timer: _Timer) -> _VisualPrefix:
        key = ("prefix", source.key, tuple(sparse), tuple(dense_pos))
        cached = None if naive else self.cache.get(key)
        if cached is not None:
            return cached
        model = self.model
        unique = sorted(set(sparse))
        with timer("decode_sparse"):
            frames = source.read(unique)
        with timer("vision"):
            pixels = model.clip_preprocess([frames[i] for i in unique])  # [U, 3, 336, 336]
            features = model.projector(model.clip_features(pixels))  # [U, P, hidden]
            # Repeated sparse frames (short videos) reuse the features of their frame.
            tokens = features[[unique.index(i) for i in sparse]]  # [T_s, P, hidden]
            visual = torch.cat([tokens.mean(dim=1), tokens[dense_pos].reshape(-1, tokens.shape[-1])])  # [V, hidden]
        template = build_prompt_ids(model.tokenizer, render_prompt(""), model.seg_token_id)
        head = template.ids[: template.image_index + 1]  # the text before the video, and the placeholder
        if naive:
            return _VisualPrefix(visual=visual, kv=(), prefix_len=len(head) - 1 + len(visual), last_hidden=visual[-1])
        from transformers import DynamicCache

        with timer("language_model"):
            embeds = model.embed_prompt(head, visual)  # [1, prefix_len, hidden]
            hidden, cache = model.language_model(embeds, past_key_values=DynamicCache())
        kv = tuple((layer.keys, layer.values) for layer in cache.layers)
        prefix = _VisualPrefix(visual=visual, kv=kv, prefix_len=embeds.shape[1], last_hidden=hidden[0, -1])
        self.cache.put(key, prefix, prefix.nbytes)
        return prefix

    def _language(self, prefix: _VisualPrefix, text: str, generate_text: bool, mask_from: str,
                  max_new_tokens: int, naive: bool) -> _Answer:
        model = self.model
        ids = build_prompt_ids(model.tokenizer, render_prompt(text, TEACHER_FORCED_ANSWER), model.seg_token_id)
        rows = ids.seg_hidden_rows(len(prefix.visual))
        if len(rows) != 1:
            raise InvalidPrompt("The prompt must produce exactly one mask token.")
        if naive:
            # The official organisation: the whole spliced sequence in one forward pass.
            hidden, _ = model.language_model(model.embed_prompt(ids.ids, prefix.visual))
            seg_hidden = hidden[0, rows[0]]
        else:
            hidden, _ = self._suffix(prefix, ids.ids[ids.image_index + 1:])
            seg_hidden = prefix.last_hidden if rows[0] == prefix.prefix_len - 1 else hidden[rows[0] - prefix.prefix_len]
        answer = _Answer(embedding=model.mask_embedding(seg_hidden[None])[0])
        if generate_text:
            answer = self._generate(prefix, text, answer, mask_from, max_new_tokens, naive)
        return answer

    def _suffix(self, prefix: _VisualPrefix, suffix_ids):
        """Final-norm hidden states [n, hidden] of the tokens after the prefix, on a copy of the prefix cache."""
        from transformers import DynamicCache

        model = self.model
        cache = DynamicCache(ddp_cache_data=[(k, v) for k, v in prefix.kv])
        embeds = model.llm.get_input_embeddings()(torch.tensor(suffix_ids, device=model.device))[None]
        hidden, cache = model.language_model(embeds, past_key_values=cache, start=prefix.prefix_len)
        return hidden[0], cache

    @torch.inference_mode()
    def _generate(self, prefix: _VisualPrefix, text: str, answer: _Answer, mask_from: str, max_new_tokens: int,
                  naive: bool) -> _Answer:
        """Greedy decoding after the prompt; a generated [SEG]'s embedding is the state that predicted it."""
        from transformers import DynamicCache

        model = self.model
        ids = build_prompt_ids(model.tokenizer, render_prompt(text, None), model.seg_token_id)
        if naive:
            hidden, cache = model.language_model(model.embed_prompt(ids.ids, prefix.visual),
                                                 past_key_values=DynamicCache())
            hidden = hidden[0]
        else:
            hidden, cache = self._suffix(prefix, ids.ids[ids.image_index + 1:])
        position = ids.spliced_length(len(prefix.visual))
        state = hidden[-1]
        generated: list[int] = []
        seg_state = None
        embed = model.llm.get_input_embeddings()
        ended = False
        for _ in range(max_new_tokens):
            token = int(model.next_token_logits(state).argmax())
            if token in model.end_token_ids:
                ended = True
                break
            if token == model.seg_token_id and seg_state is None:
                seg_state = state
            generated.append(token)
            out, cache = model.language_model(embed(torch.tensor([[token]], device=model.device)),
                                              past_key_values=cache, start=position)
            state = out[0, -1]
            position += 1
        reply = " ".join(model.tokenizer.decode(generated).split())
        cut = ()
        if not ended:
            # A character cut in the middle of its bytes decodes as U+FFFD: drop it rather than show it.
            reply = reply.rstrip("\ufffd").rstrip()
            cut = (f"The answer reached the limit of {max_new_tokens} new tokens and was cut there.",)
        has_seg = seg_state is not None
        if mask_from == "teacher_forced":
            return _Answer(embedding=answer.embedding, text=reply, has_seg=has_seg, notices=cut)
        if has_seg:
            return _Answer(embedding=model.mask_embedding(seg_state[None])[0], text=reply, has_seg=True, notices=cut)
        return _Answer(embedding=None, text=reply, has_seg=False,
                       notices=(*cut, "The generated answer contains no [SEG] token, so there is no mask."))

    # ------------------------------------------------------------------ SAM on every frame
    def _masks(self, source: FrameSource, prompts: list[Optional[torch.Tensor]], return_logits: bool, naive: bool,
               report: Progress, timer: _Timer):
        model = self.model
        n, size = source.num_frames, (source.height, source.width)
        masks = [PackedMasks(*size) for _ in prompts]
        scores = [np.zeros(n, np.float32) for _ in prompts]
        logits = [np.zeros((n, *size), np.float32) if return_logits else None for _ in prompts]
        key = ("sam", source.key)
        cached: Optional[_SamEmbeddings] = None if naive else self.cache.get(key)
        input_size = self._input_size(source)
        kept: Optional[list[torch.Tensor]] = None if (cached is not None or naive) else []
        kept_bytes = 0
        for start, stop, embeddings in self._embedding_batches(source, cached, naive, timer):
            if kept is not None:
                kept.append(embeddings)
                kept_bytes += embeddings.numel() * embeddings.element_size()
                if kept_bytes > self.cache.max_bytes:
                    kept = None  # longer than the cache can hold: keep memory flat instead
            with timer("sam_decode"):
                for k, prompt in enumerate(prompts):
                    if prompt is None:
                        for _ in range(start, stop):
                            masks[k].append(np.zeros(size, bool))
                        continue
                    low, iou = model.sam_decode(embeddings, prompt, official=naive, input_size=input_size)
                    frame_logits = model.sam_postprocess(low, input_size, size)  # [B, H, W] float32
                    for binary in (frame_logits > 0).cpu().numpy():  # threshold on the device, move bits
                        masks[k].append(binary)
                    scores[k][start:stop] = iou.float().cpu().numpy()
                    if return_logits:
                        logits[k][start:stop] = frame_logits.cpu().numpy()
            report(f"Segmenting {n} frames", 0.2 + 0.6 * stop / n)
        if kept:
            embeddings = torch.cat(kept)
            self.cache.put(key, _SamEmbeddings(embeddings, input_size), embeddings.numel() * embeddings.element_size())
        return masks, scores, logits

    def _input_size(self, source: FrameSource) -> tuple[int, int]:
        """SAM's resized size (h', w') of the frames as read for inference."""
        from .video import scaled_size

        w, h = scaled_size(source.width, source.height, source.max_side)
        return self.model.sam_input_size(h, w)

    def _embedding_batches(self, source: FrameSource, cached: Optional[_SamEmbeddings], naive: bool, timer: _Timer):
        """(start, stop, SAM embeddings [B, 256, 64, 64]) over the whole video, from the cache or computed.

        The naive mode encodes one frame at a time with segment-anything's own code, as the official loop does.
        """
        batch = 1 if naive else self.sam_batch_size
        if cached is not None:
            for start in range(0, source.num_frames, batch):
                stop = min(start + batch, source.num_frames)
                yield start, stop, cached.embeddings[start:stop]
            return
        chunks = source.chunks(batch)
        if source.path is not None:
            from .video import prefetch

            # Decoding the next chunk overlaps with SAM on this one (the decoder releases the GIL).
            chunks = prefetch(chunks, depth=2)
        with self.model.encoder_scratch():
            while True:
                with timer("decode_frames"):
                    item = next(chunks, None)
                if item is None:
                    return
                start, frames = item
                with timer("sam_encode"):
                    x, _ = self.model.sam_preprocess(frames)
                    embeddings = self.model.sam_encode(x)
                yield start, start + len(frames), embeddings

    # ------------------------------------------------------------------ post-optimization
    def _post_optimize(self, source: FrameSource, raw: PackedMasks, scores: np.ndarray, dense_frames):
        from .postopt import unavailable

        references = {f: raw[f] for f in sorted(set(dense_frames))}
        try:
            optimizer = self.load_post_optimizer()
        except (ModelUnavailable, OSError) as exc:  # reported in the result, never silently skipped
            return raw, unavailable(str(exc), tuple(references))
        with source.frame_ranges() as get_frames:
            return optimizer.refine(get_frames, source.num_frames, references, raw, scores)


def load_pipeline(model: Optional[str] = None, vision_tower: Optional[str] = None, device=None, dtype=None,
                  revision: Optional[str] = None, sam2: Optional[str] = DEFAULT_SAM2, limits: Limits = NO_LIMITS,
                  **kwargs) -> VideoLISAPipeline:
    """Load VideoLISA (hub id or local directory) and return a ready pipeline.

    device/dtype default to cuda + bfloat16 when a GPU is there, else cpu + float32.
    """
    from .settings import DEFAULT_MODEL

    loaded = VideoLISAModel.load(model or DEFAULT_MODEL, vision_tower=vision_tower, device=device, dtype=dtype,
                                 revision=revision)
    return VideoLISAPipeline(loaded, sam2=sam2, limits=limits, **kwargs)
