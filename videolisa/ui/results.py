"""What the page shows of a run, made on the CPU from the masks: overlay videos, keyframes, timeline, answer.

Everything here depends on the masks and the chosen look only, so changing the look re-renders from
a session's ``RunResult`` without running the model again.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from .. import outputs
from ..pipeline import run_notices
from ..render import PALETTE, OverlayStyle, parse_color, render_frame, render_video
from ..source import frames_to_process
from ..video import (VideoInfo, VideoWriter, audio_offset, iter_frames, prefetch, probe, read_frames,
                     source_timeline)
from .timeline import LIGHT, Scheme, Track, draw_timeline, format_time

RGB = tuple[int, int, int]
SEG_TOKEN = "[SEG]"
KEYFRAME_WIDTH = 640  # gallery images are shrunk to this width: they are previews
COMPARE_HALF_WIDTH = 960  # each side of the raw-vs-refined video is at most this wide


@dataclass(frozen=True)
class Look:
    """How masks are drawn on the page: the first target's colour (others follow the palette) and the style."""

    color: str = "#e69f00"
    opacity: float = 0.5
    contour: str = "on"
    dim_background: float = 0.0

    def colors(self, count: int) -> tuple[RGB, ...]:
        first = parse_color(self.color)
        rest = [c for c in PALETTE if c != first]
        cycle = [first, *rest]
        return tuple(cycle[k % len(cycle)] for k in range(max(1, count)))

    def style(self, count: int) -> OverlayStyle:
        return OverlayStyle(colors=self.colors(count), opacity=self.opacity, contour=self.contour,
                            dim_background=self.dim_background)


EXPORT_KINDS = ("png_zip", "npz", "rle_json", "mask_video", "run_card")


@dataclass(frozen=True)
class Exports:
    """The downloads of a run, by kind (see ``videolisa.export``)."""

    png_zip: Path
    npz: Path
    rle_json: Path
    mask_video: Path
    run_card: Path

    def paths(self) -> tuple[Path, ...]:
        return tuple(getattr(self, kind) for kind in EXPORT_KINDS)


def export_run(segmentations, info: VideoInfo, out_dir: Path, name: str) -> Exports:
    """Every export of a run: the targets as one indexed mask, and a run card with one entry per target."""
    paths = outputs.export_run(segmentations, info, out_dir, stem=f"{name}_masks")
    return Exports(**{kind: paths[kind] for kind in EXPORT_KINDS})


def kept(segmentation):
    """A ``Segmentation`` as a session keeps it: its masks (deflated already), no logits."""
    return replace(segmentation, logits=None)


@dataclass(frozen=True)
class RunResult:
    """A session's last run: enough to re-render it and to offer its downloads."""

    source: str  # the input file
    name: str  # the input's file stem, for download names
    run_dir: str  # this run's output directory
    info: VideoInfo
    segmentations: tuple  # one videolisa.Segmentation per target
    exports: Optional[Exports]  # None only while a new run's downloads are being written

    @property
    def first(self):
        return self.segmentations[0]

    @property
    def post_optimized(self) -> bool:
        """Whether there is a raw-vs-refined comparison to show (a restored run has no raw masks)."""
        return any(s.post_optimization is not None and s.post_optimization.applied and s.raw_masks is not s.masks
                   for s in self.segmentations)

    def times(self) -> np.ndarray:
        return processed_times(self.info, self.first)


def restore(source: str, exports: Exports, run_dir: str) -> RunResult:
    """A run rebuilt from its downloads: masks from the npz, everything else from the run card.

    Gives a cached example (whose outputs come from Gradio's cache, without a session state) a state,
    so that a new look redraws it. The downloads hold neither the raw masks of a post-optimized run nor
    SAM's per-frame scores: the restored run has no raw-vs-refined comparison and zero scores.
    """
    from ..export import read_npz, read_run_card
    from ..pipeline import Segmentation

    card = read_run_card(exports.run_card)
    masks = read_npz(exports.npz)
    if len(masks) != len(card["targets"]):
        raise ValueError(f"the run card lists {len(card['targets'])} targets but the npz holds {len(masks)}")
    segmentations = [Segmentation.from_card(entry, target) for entry, target in zip(card["targets"], masks)]
    first = segmentations[0]
    info = probe(source, max_frames=first.frame_offset + first.num_frames)  # as far as the run went
    return RunResult(source=source, name=Path(source).stem[:60] or "input", run_dir=str(run_dir),
                     info=info, segmentations=tuple(segmentations), exports=exports)


def processed_times(info: VideoInfo, segmentation) -> np.ndarray:
    """Presentation time in the file of every processed frame, seconds [T]."""
    all_times = np.asarray(info.frame_times or (0.0,), np.float64)
    return all_times[segmentation.frame_offset:segmentation.frame_offset + segmentation.num_frames]


def render_overlay(result: RunResult, look: Look, out_dir: Path) -> Path:
    """The input with every target's masks drawn on every frame, with the input's sound."""
    first = result.first
    out_path = Path(out_dir) / f"{result.name}_videolisa.mp4"
    return render_video(result.source, [s.masks for s in result.segmentations], out_path,
                        look.style(len(result.segmentations)), start=first.frame_offset,
                        stop=first.frame_offset + first.num_frames)


def _label(frame: np.ndarray, text: str) -> np.ndarray:
    """Write a caption in the top-left corner, on a dark band so it reads on any picture."""
    scale = max(0.5, frame.shape[1] / 900)
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    pad = int(8 * scale)
    cv2.rectangle(frame, (0, 0), (w + 2 * pad, h + base + 2 * pad), (20, 20, 20), thickness=-1)
    cv2.putText(frame, text, (pad, pad + h), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return frame


def render_comparison(result: RunResult, look: Look, out_dir: Path) -> Optional[Path]:
    """Raw VideoLISA masks (left) and post-optimized masks (right) side by side; None without post-optimization."""
    if not result.post_optimized:
        return None
    first, info = result.first, result.info
    style = look.style(len(result.segmentations))
    scale = min(1.0, COMPARE_HALF_WIDTH / info.width)
    half = (max(2, round(info.width * scale)), max(2, round(info.height * scale)))
    path = Path(out_dir) / f"{result.name}_raw_vs_refined.mp4"
    start, stop = first.frame_offset, first.frame_offset + first.num_frames
    with VideoWriter(path, 2 * half[0], half[1], info.frame_rate,
                     audio_source=result.source if info.has_audio else None,
                     audio_start=audio_offset(info, start), frame_times=source_timeline(info, start, stop)) as writer:
        for j, frame in enumerate(prefetch(iter_frames(result.source, start, stop))):
            sides = []
            for masks, text in (([s.raw_masks[j] for s in result.segmentations], "VideoLISA (raw)"),
                                ([s.masks[j] for s in result.segmentations], "post-optimized (SAM 2)")):
                drawn = render_frame(frame, masks, style)
                drawn = cv2.resize(drawn, half, interpolation=cv2.INTER_AREA) if scale < 1 else drawn
                sides.append(_label(np.ascontiguousarray(drawn), text))
            writer.write(np.hstack(sides))  # [h, 2w, 3]
    return path


def keyframes(result: RunResult, look: Look) -> list[tuple[np.ndarray, str]]:
    """The dense frames (seen by the model in full detail) with their masks, captioned with frame and time."""
    first = result.first
    dense = sorted(set(first.dense_frame_indices))
    frames = read_frames(result.source, [first.frame_offset + d for d in dense])
    style = look.style(len(result.segmentations))
    times = result.times()
    gallery = []
    for d in dense:
        drawn = render_frame(frames[first.frame_offset + d], [s.masks[d] for s in result.segmentations], style)
        if drawn.shape[1] > KEYFRAME_WIDTH:
            size = (KEYFRAME_WIDTH, max(1, round(drawn.shape[0] * KEYFRAME_WIDTH / drawn.shape[1])))
            drawn = cv2.resize(drawn, size, interpolation=cv2.INTER_AREA)
        caption = "image" if result.info.is_image else f"frame {first.frame_offset + d} · {format_time(times[d])}"
        gallery.append((drawn, caption))
    return gallery


def timeline(result: RunResult, look: Look, scheme: Scheme = LIGHT) -> Optional[np.ndarray]:
    """The timeline image in a page's colour scheme (None for a still image: it has no time)."""
    if result.info.is_image:
        return None
    first = result.first
    colors = look.colors(len(result.segmentations))
    pixels = first.height * first.width
    tracks = [Track(label=f"Target {k + 1}", color=colors[k], area_percent=s.masks.areas() * 100.0 / pixels,
                    visible=s.visible_frames()) for k, s in enumerate(result.segmentations)]
    return draw_timeline(tracks, result.times(), first.sparse_frame_indices, first.dense_frame_indices,
                         scheme=scheme)


def visibility_text(result: RunResult, k: int) -> str:
    """'visible 0:01.2–0:04.0 (frames 30–100), up to 12.5 % of the frame' or a clear 'not found'."""
    seg = result.segmentations[k]
    span = seg.visible_frames()
    if span is None:
        return "Not found: the mask is empty on every frame."
    peak = float(seg.masks.areas().max()) * 100.0 / (seg.height * seg.width)
    if result.info.is_image:
        return f"Found: {peak:.1f} % of the image."
    times = result.times()
    a, b = span
    frames = f"frames {seg.frame_offset + a}–{seg.frame_offset + b}"
    return f"Visible {format_time(times[a])}–{format_time(times[b])} ({frames}), up to {peak:.1f} % of the frame."


def _hex(color: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


def _answer_text(text: Optional[str], color: str) -> str:
    if text is None:
        return '<span class="vl-muted">Text answers are off (Settings).</span>'
    if not text.strip():
        return '<span class="vl-muted">(the model wrote nothing)</span>'
    chip = f'<span class="vl-seg" style="background:{color}">{SEG_TOKEN}</span>'
    return chip.join(html.escape(part) for part in text.split(SEG_TOKEN))


def answer_html(result: RunResult, look: Look) -> str:
    """The model's answers, each coloured like its mask, with when the target is visible."""
    colors = look.colors(len(result.segmentations))
    cards = []
    for k, seg in enumerate(result.segmentations):
        color = _hex(colors[k])
        cards.append(
            f'<div class="vl-target" style="--vl-color:{color}">'
            f'<div class="vl-target-head"><span class="vl-swatch"></span><span class="vl-label">Target {k + 1}</span>'
            f'<span class="vl-prompt">{html.escape(seg.prompt)}</span></div>'
            f'<div class="vl-text">{_answer_text(seg.text, color)}</div>'
            f'<div class="vl-when">{html.escape(visibility_text(result, k))}</div></div>'
        )
    items = "".join(f"<li>{html.escape(n)}</li>" for n in run_notices(result.segmentations))
    notes = f'<ul class="vl-notices">{items}</ul>' if items else ""
    return f'<div class="vl-answer">{"".join(cards)}{notes}</div>'


def details(result: RunResult) -> dict:
    """A JSON summary for the page's "run details" and for API clients."""
    first, times = result.first, result.times()
    targets = []
    for k, seg in enumerate(result.segmentations):
        span = seg.visible_frames()
        post = seg.post_optimization
        targets.append({
            "target": k + 1,
            "prompt": seg.prompt,
            "answer": seg.text,
            "visible_frames": [seg.frame_offset + span[0], seg.frame_offset + span[1]] if span else None,
            "visible_seconds": [round(float(times[span[0]]), 3), round(float(times[span[1]]), 3)] if span else None,
            "post_optimization": post.reason if post is not None else "off",
        })
    return {
        "input": result.info.describe(),
        "processed_frames": [first.frame_offset, first.frame_offset + first.num_frames - 1],
        "sparse_frames": list(first.sparse_frame_indices),
        "dense_frames": list(first.dense_frame_indices),
        "targets": targets,
        "notices": run_notices(result.segmentations),
        "seconds": {stage: round(t, 3) for stage, t in first.timings.items()},
    }


def input_summary(info: VideoInfo, limits) -> str:
    """What will be processed, said before running: the size, and the trim the duration limit will apply."""
    if info.is_image:
        return f"Image {info.width}×{info.height}: segmented as a one-frame video."
    text = info.describe()
    stop = frames_to_process(info, limits)
    if stop < info.num_frames or not info.complete:
        end = info.frame_times[stop - 1] if stop - 1 < len(info.frame_times) else info.duration
        of = f" of {info.num_frames}" if info.complete else ""
        text += (f". Over the limit of {limits.length()}: only {format_time(0)}–{format_time(end)} "
                 f"(frames 0–{stop - 1}{of}) will be processed.")
    else:
        text += f". All {info.num_frames} frames will be segmented." if info.num_frames > 1 else \
            ". Its frame will be segmented."
    if limits.max_inference_side and min(info.width, info.height) > limits.max_inference_side:
        text += f" The model reads frames at {limits.max_inference_side}p; the result keeps {info.width}×{info.height}."
    return text


def target_prompts(text: Optional[str]) -> list[str]:
    """One target per non-empty line."""
    return [line.strip() for line in (text or "").splitlines() if line.strip()]
