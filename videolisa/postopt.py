"""Post-optimization: re-propagate the dense frames' masks to the whole video with SAM 2.

VideoLISA's language model sees T_dense frames in full detail, so their masks are the most reliable
ones. The paper's optional post-optimization hands them as permanent references to a video object
tracker (XMem++ there) and lets it infer every other frame. We use SAM 2.1 through ``transformers``:
each reference mask conditions SAM 2 on its frame (conditioning frames stay in SAM 2's memory for the
whole video, like XMem++'s permanent memory), then SAM 2 tracks forward from the first reference to
the last frame and backward from it to frame 0, the same order as SAM 2's own offline propagation.

Memory stays bounded whatever the length of the video: frames are asked for in short ranges between
consecutive references and dropped once tracked, the video and the tracking state live on the CPU
when the model runs on a GPU, and each frame's state is dropped as soon as SAM 2 can no longer read it
(SAM 2 looks back a fixed number of frames, see ``PostOptimizer._history``). The result is identical
to holding the whole video in one SAM 2 session.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from transformers import Sam2VideoModel, Sam2VideoProcessor
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

from .errors import InvalidSettings, InvalidVideo, ModelUnavailable, counted
from .masks import PackedMasks

# Frames decoded and preprocessed at once; bounds the memory of the frames in flight.
DEFAULT_CHUNK_FRAMES = 32
# The cut-off SAM's own automatic mask generator uses to keep a mask by its predicted IoU.
MIN_RAW_CONFIDENCE = 0.88
# Below this share of the frame, a raw mask is a few stray pixels rather than an object.
MIN_RAW_AREA_FRACTION = 1e-4

_OBJECT_ID = 1  # SAM 2 tracks objects by client id; we track one

GetFrames = Callable[[int, int], np.ndarray]
Progress = Callable[[int, int], None] | None


@dataclass(frozen=True)
class PostOptimization:
    """What post-optimization did to a result, or why it did nothing."""

    applied: bool
    reason: str  # a sentence for people: what was done, or why not
    model: str | None
    reference_frames: tuple[int, ...]
    absent_frames: tuple[int, ...]  # frames where the tracker said the object is absent
    kept_raw_frames: tuple[int, ...]  # absent frames where the absent rule kept VideoLISA's own mask
    seconds: float


def unavailable(reason: str, references=()) -> PostOptimization:
    """The record of a run where post-optimization could not run at all (e.g. SAM 2 did not load)."""
    return PostOptimization(
        applied=False,
        reason=f"Post-optimization was unavailable: {reason}",
        model=None,
        reference_frames=tuple(sorted(int(f) for f in references)),
        absent_frames=(),
        kept_raw_frames=(),
        seconds=0.0,
    )


@dataclass(frozen=True)
class AbsentRule:
    """When SAM 2 loses the object, keep VideoLISA's own mask if VideoLISA was confident about it.

    The signal is SAM's predicted IoU for VideoLISA's mask on that frame (``raw_confidence``), the
    score SAM's mask decoder trains to estimate its own mask quality. A raw mask is kept when that
    score is at least ``min_confidence`` and the mask covers at least ``min_area_fraction`` of the frame.
    """

    min_confidence: float = MIN_RAW_CONFIDENCE
    min_area_fraction: float = MIN_RAW_AREA_FRACTION

    def keeps_raw(self, raw_area: int, raw_confidence: float, frame_area: int) -> bool:
        return (
            raw_area > 0
            and raw_area >= self.min_area_fraction * frame_area
            and float(raw_confidence) >= self.min_confidence
        )


@dataclass(frozen=True)
class FrameMerge:
    """The final mask of one tracked frame and how it was chosen."""

    mask: np.ndarray  # bool [H, W]
    absent: bool  # the tracker said the object is not in the frame
    kept_raw: bool  # ... and VideoLISA's own mask was kept instead


def merge_frame(
    tracked: np.ndarray,
    object_score: float,
    raw: np.ndarray,
    raw_confidence: float,
    rule: AbsentRule = AbsentRule(),
) -> FrameMerge:
    """Choose the final mask of a frame that SAM 2 tracked (reference frames never come here).

    SAM 2 says "absent" when its object score logit is not positive, which also empties its mask; an
    empty tracked mask is treated the same way. Present: the tracker's mask wins, even where VideoLISA
    found nothing (filling such gaps is the point of post-optimization). Absent: VideoLISA's own mask is
    kept when ``rule`` finds it confident, otherwise the frame is empty.
    """
    if object_score > 0 and tracked.any():
        return FrameMerge(mask=tracked, absent=False, kept_raw=False)
    if rule.keeps_raw(int(np.count_nonzero(raw)), raw_confidence, raw.size):
        return FrameMerge(mask=raw.astype(bool, copy=False), absent=True, kept_raw=True)
    return FrameMerge(mask=np.zeros(tracked.shape, dtype=bool), absent=True, kept_raw=False)


class _SparseSession(Sam2VideoInferenceSession):
    """A SAM 2 session that holds only the frames being tracked, under their frame numbers in the video.

    SAM 2 scales the time encoding of its object pointers by the length of the video, which the stock
    session reads from the number of frames it stores; this one reports the real length.
    """

    def __init__(self, total_frames: int, **kwargs):
        super().__init__(**kwargs)
        self._total_frames = total_frames

    @property
    def num_frames(self) -> int:
        return self._total_frames


def _is_local_path(name: str) -> bool:
    # Hub ids look like "owner/name"; anything else that names a path is meant as a directory.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).exists()


def _resolve_checkpoint(model: str, revision: str | None) -> Path:
    if _is_local_path(model):
        path = Path(model).expanduser()
        if not path.is_dir():
            raise ModelUnavailable(
                f"SAM 2 checkpoint directory '{model}' does not exist. Pass a directory holding a "
                "Sam2VideoModel saved with save_pretrained (config.json, model.safetensors, processor_config.json)."
            )
        return path
    from huggingface_hub import snapshot_download

    # Only the transformers files: the hub repos also hold the original .pt weights, as large again.
    return Path(snapshot_download(repo_id=model, revision=revision, allow_patterns=["*.json", "*.safetensors"]))


def _dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        # bfloat16 is SAM 2's own inference precision on GPUs; on a CPU it is several times slower.
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise InvalidSettings(f"'{dtype}' is not a torch dtype; use e.g. 'float32' or 'bfloat16'.")
        return resolved
    return dtype


class PostOptimizer:
    """SAM 2 video tracking seeded with VideoLISA's dense-frame masks. Load once, call ``refine`` per video."""

    def __init__(
        self,
        model: Sam2VideoModel,
        processor: Sam2VideoProcessor,
        name: str,
        *,
        absent_rule: AbsentRule = AbsentRule(),
        chunk_frames: int = DEFAULT_CHUNK_FRAMES,
        offload: bool | None = None,
    ):
        if chunk_frames < 1:
            raise InvalidSettings(f"chunk_frames must be at least 1, got {chunk_frames}.")
        self.model = model
        self.processor = processor
        self.name = name
        self.absent_rule = absent_rule
        self.chunk_frames = chunk_frames
        self.device = model.device
        self.dtype = model.dtype
        # Keep the video and the tracking state in host memory when the model runs on an accelerator.
        self.offload = self.device.type != "cpu" if offload is None else offload
        config = model.config
        # How many tracked frames back SAM 2 reads: its spatial memories and its object pointers.
        self._history = max(config.num_maskmem - 1, config.max_object_pointers_in_encoder - 1, 1)

    @classmethod
    def load(
        cls,
        model: str,
        device=None,
        dtype=None,
        revision=None,
        *,
        absent_rule: AbsentRule = AbsentRule(),
        chunk_frames: int = DEFAULT_CHUNK_FRAMES,
        offload: bool | None = None,
        name: str | None = None,
    ) -> PostOptimizer:
        """Load a SAM 2 video checkpoint: a hub id (e.g. ``facebook/sam2.1-hiera-large``) or a local directory.

        ``name`` is what the records call it (default: ``model``), e.g. for a checkpoint in a temporary folder.

        Hub ids go through ``huggingface_hub``, so its cache and ``HF_HUB_OFFLINE`` apply. Defaults: CUDA
        when available, in bfloat16 with the video and tracking state kept in host memory (``offload``);
        otherwise the CPU in float32. Raises ``ModelUnavailable`` with a sentence naming the checkpoint
        and how to provide it.
        """
        device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = _dtype(dtype, device)
        try:
            path = _resolve_checkpoint(model, revision)
            network = Sam2VideoModel.from_pretrained(path, dtype=dtype).to(device).eval()
            processor = Sam2VideoProcessor.from_pretrained(path)
        except ModelUnavailable:
            raise
        except (OSError, ValueError, KeyError, ImportError) as err:
            raise ModelUnavailable(
                f"SAM 2 checkpoint '{model}' could not be loaded ({_first_line(err)}). Download it once where the "
                f"Hugging Face hub is reachable (`hf download {model}`) and run with that cache, or pass a "
                "local directory holding the checkpoint saved with save_pretrained."
            ) from err
        return cls(network, processor, name=name or model, absent_rule=absent_rule, chunk_frames=chunk_frames,
                   offload=offload)

    def refine(
        self,
        get_frames: GetFrames,
        num_frames: int,
        references: Mapping[int, np.ndarray],
        raw_masks: PackedMasks,
        raw_confidence: np.ndarray,
        progress: Progress = None,
    ) -> tuple[PackedMasks, PostOptimization]:
        """Propagate the reference masks to every frame and merge the result with VideoLISA's own masks.

        ``get_frames(start, stop)`` returns uint8 RGB frames ``[stop - start, H, W, 3]``; it is called
        once per reference frame and then for ranges of at most ``chunk_frames`` frames, never for the
        whole video. ``references`` maps frame index to its bool ``[H, W]`` mask (empty masks are fine:
        SAM 2 remembers them as "not in this frame"). ``raw_masks`` are VideoLISA's masks ``[T, H, W]``
        and ``raw_confidence`` float ``[T]`` SAM's predicted IoU for each of them (0 where empty).

        Final masks: reference frames keep their reference mask exactly. Every other frame takes SAM 2's
        mask; where SAM 2 says the object is absent (object score logit <= 0, or an empty mask), the
        absent rule keeps VideoLISA's own mask when its predicted IoU is at least 0.88 (SAM's own
        ``pred_iou_thresh`` for keeping masks) and it covers at least 0.01 % of the frame; otherwise the
        frame is empty. See ``AbsentRule`` and ``merge_frame``.

        ``progress(done, total)`` is called as frames are finished. Returns the final masks and a
        ``PostOptimization`` record; when there is nothing to track (no reference, or only empty
        reference masks) the raw masks come back unchanged with the reason.
        """
        started = time.perf_counter()
        refs = self._check_inputs(num_frames, references, raw_masks, raw_confidence)
        ref_frames = tuple(refs)

        def skipped(reason: str) -> tuple[PackedMasks, PostOptimization]:
            record = PostOptimization(False, reason, self.name, ref_frames, (), (), time.perf_counter() - started)
            return raw_masks, record

        if not refs:
            return skipped("Post-optimization was skipped: no reference frames were given; the raw masks are kept.")
        if not any(mask.any() for mask in refs.values()):
            return skipped(
                f"Post-optimization was skipped: the masks of all {len(refs)} reference frames "
                f"({_frames_text(ref_frames)}) are empty, so there is no object to track; the raw masks are kept."
            )

        confidence = np.asarray(raw_confidence, dtype=np.float64)
        finished: dict[int, PackedMasks] = {}  # frame -> its final mask, deflated until the frames are in order
        absent, kept_raw = [], []
        done = len(refs)
        try:
            for frame_idx, tracked, score in self._track(
                get_frames, num_frames, refs, raw_masks.height, raw_masks.width
            ):
                merged = merge_frame(tracked, score, raw_masks[frame_idx], confidence[frame_idx], self.absent_rule)
                finished[frame_idx] = PackedMasks(raw_masks.height, raw_masks.width, [merged.mask])
                if merged.absent:
                    absent.append(frame_idx)
                if merged.kept_raw:
                    kept_raw.append(frame_idx)
                done += 1
                if progress is not None:
                    progress(done, num_frames)
        except torch.OutOfMemoryError as err:
            torch.cuda.empty_cache()
            return skipped(
                f"Post-optimization failed: SAM 2 ran out of device memory ({_first_line(err)}); "
                "the raw masks are kept. Try a smaller SAM 2 checkpoint or a shorter video."
            )

        masks = PackedMasks(raw_masks.height, raw_masks.width)
        for t in range(num_frames):
            masks.append(refs[t] if t in refs else finished.pop(t)[0])
        seconds = time.perf_counter() - started
        empty_refs = sum(1 for mask in refs.values() if not mask.any())
        lost = (
            f"The tracker lost the object on {counted(len(absent), 'frame')}; {len(kept_raw)} of those kept "
            f"VideoLISA's own mask (predicted IoU at least {self.absent_rule.min_confidence:g})."
            if absent
            else "The tracker found the object on every frame."
        )
        record = PostOptimization(
            applied=True,
            reason=(
                f"SAM 2 ({self.name}) propagated the masks of {counted(len(refs), 'reference frame')} "
                f"({_frames_text(ref_frames)}{f', {empty_refs} of them empty' if empty_refs else ''}) "
                f"to {'all ' if num_frames > 1 else ''}{counted(num_frames, 'frame')} in {seconds:.1f} s. {lost}"
            ),
            model=self.name,
            reference_frames=ref_frames,
            absent_frames=tuple(sorted(absent)),
            kept_raw_frames=tuple(sorted(kept_raw)),
            seconds=seconds,
        )
        return masks, record

    def _check_inputs(
        self,
        num_frames: int,
        references: Mapping[int, np.ndarray],
        raw_masks: PackedMasks,
        raw_confidence: np.ndarray,
    ) -> dict[int, np.ndarray]:
        if len(raw_masks) != num_frames:
            raise InvalidSettings(
                f"The video has {counted(num_frames, 'frame')} but {len(raw_masks)} raw masks were given.")
        if np.shape(raw_confidence) != (num_frames,):
            raise InvalidSettings(
                f"raw_confidence must hold one score per frame ({num_frames}), got shape {np.shape(raw_confidence)}."
            )
        refs = {}
        for frame_idx in sorted(references):
            mask = np.asarray(references[frame_idx]).astype(bool, copy=False)
            if not 0 <= frame_idx < num_frames:
                raise InvalidSettings(f"Reference frame {frame_idx} is outside the video (frames 0..{num_frames - 1}).")
            if mask.shape != (raw_masks.height, raw_masks.width):
                raise InvalidSettings(
                    f"The mask of reference frame {frame_idx} is {mask.shape}, "
                    f"not the video's {(raw_masks.height, raw_masks.width)}."
                )
            refs[int(frame_idx)] = mask
        return refs

    def _track(
        self, get_frames: GetFrames, num_frames: int, refs: dict[int, np.ndarray], height: int, width: int
    ) -> Iterator[tuple[int, np.ndarray, float]]:
        """Yield (frame, SAM 2 mask bool [H, W], object score logit) for every frame that is not a reference."""
        store = torch.device("cpu") if self.offload else self.device
        session = _SparseSession(
            num_frames,
            video_height=height,
            video_width=width,
            inference_device=self.device,
            inference_state_device=store,
            video_storage_device=store,
            dtype=self.dtype,
        )
        with torch.inference_mode():
            # One reference at a time: adding inputs overwrites the session's list of objects with new
            # inputs, so a mask added before the previous one was run would be silently ignored.
            for frame_idx, mask in refs.items():
                self._add_frames(session, get_frames, frame_idx, frame_idx + 1, height, width)
                self.processor.add_inputs_to_inference_session(
                    inference_session=session, frame_idx=frame_idx, obj_ids=_OBJECT_ID, input_masks=mask
                )
                self.model(inference_session=session, frame_idx=frame_idx)
                obj_idx = session.obj_id_to_idx(_OBJECT_ID)
                # The conditioning output is cached; its input mask, pixels and full-size logits are not read again.
                session.remove_mask_inputs(obj_idx, frame_idx)
                session.processed_frames.pop(frame_idx)
                session.output_dict_per_obj[obj_idx]["cond_frame_outputs"][frame_idx].pop("high_res_masks", None)
            first = min(refs)
            for start, stop in _chunks(first + 1, num_frames, refs, self.chunk_frames):
                self._add_frames(session, get_frames, start, stop, height, width)
                for frame_idx in range(start, stop):
                    yield self._step(session, frame_idx, reverse=False, first=first)
            for start, stop in reversed(_chunks(0, first, refs, self.chunk_frames)):
                self._add_frames(session, get_frames, start, stop, height, width)
                for frame_idx in range(stop - 1, start - 1, -1):
                    yield self._step(session, frame_idx, reverse=True, first=first)

    def _step(
        self, session: _SparseSession, frame_idx: int, reverse: bool, first: int
    ) -> tuple[int, np.ndarray, float]:
        out = self.model(inference_session=session, frame_idx=frame_idx, reverse=reverse)
        session.processed_frames.pop(frame_idx)
        self._forget(session, frame_idx, reverse, first)
        mask = self.processor.post_process_masks(
            [out.pred_masks], original_sizes=[[session.video_height, session.video_width]], binarize=True
        )[0][0, 0]  # bool [H, W]
        return frame_idx, mask.cpu().numpy(), float(out.object_score_logits.reshape(-1)[0])

    def _forget(self, session: _SparseSession, frame_idx: int, reverse: bool, first: int) -> None:
        """Drop tracking state SAM 2 will not read again, so memory does not grow with the video.

        A tracked frame reads the previous ``_history`` tracked frames in its direction. The backward
        pass starts at the first reference and reads the forward-tracked frames just after it, so those
        are kept until then. Full-resolution mask logits are only used inside the call that made them.
        """
        tracked = session.output_dict_per_obj[session.obj_id_to_idx(_OBJECT_ID)]["non_cond_frame_outputs"]
        for t in list(tracked):
            if reverse:
                needed = t < frame_idx + self._history
            else:
                needed = t > frame_idx - self._history or t < first + self._history
            if needed:
                tracked[t].pop("high_res_masks", None)
            else:
                del tracked[t]

    def _add_frames(
        self, session: _SparseSession, get_frames: GetFrames, start: int, stop: int, height: int, width: int
    ) -> None:
        frames = np.asarray(get_frames(start, stop))  # uint8 [n, H, W, 3]
        if frames.shape != (stop - start, height, width, 3):
            raise InvalidVideo(
                f"Frames {start}..{stop - 1} came back with shape {frames.shape}; expected "
                f"{(stop - start, height, width, 3)} (RGB frames the size of the masks)."
            )
        pixels = self.processor.video_processor(
            videos=frames, device=self.device, return_tensors="pt"
        ).pixel_values_videos[0]  # [n, 3, S, S]
        for offset, frame in enumerate(pixels):
            session.add_new_frame(frame, frame_idx=start + offset)


def _chunks(start: int, stop: int, refs: Mapping[int, np.ndarray], size: int) -> list[tuple[int, int]]:
    """Ranges covering [start, stop) minus the reference frames, cut at references and every ``size`` frames."""
    ranges = []
    bounds = sorted({start, stop, *(f for f in refs if start <= f < stop), *(f + 1 for f in refs if start <= f < stop)})
    for lo, hi in pairwise(bounds):
        if lo in refs:
            continue
        ranges.extend((a, min(a + size, hi)) for a in range(lo, hi, size))
    return ranges


def _frames_text(frames: tuple[int, ...]) -> str:
    return "frame " + str(frames[0]) if len(frames) == 1 else "frames " + ", ".join(map(str, frames))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
