"""Mask overlays: pure per-frame drawing, and a streamed decode -> draw -> encode of a whole video.

Rendering takes masks and frames only, so changing the look never re-runs the model. Drawing works
on each object's bounding box with OpenCV, so its cost follows the objects' size, not the frame's.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import cv2
import numpy as np

from .errors import InvalidSettings, InvalidVideo, counted
from .masks import PackedMasks
from .video import (
    DEFAULT_CRF,
    DEFAULT_PRESET,
    PathLike,
    VideoWriter,
    Yuv420Frame,
    audio_offset,
    iter_yuv420,
    prefetch,
    probe,
    source_timeline,
)

RGB = tuple[int, int, int]

# Okabe & Ito's colour-blind-safe palette (black left out: it would hide the object it marks).
PALETTE: tuple[RGB, ...] = (
    (230, 159, 0),  # orange
    (86, 180, 233),  # sky blue
    (0, 158, 115),  # bluish green
    (240, 228, 66),  # yellow
    (0, 114, 178),  # blue
    (213, 94, 0),  # vermillion
    (204, 121, 167),  # reddish purple
)

CONTOUR_MODES = ("off", "on", "only")


def parse_color(color: Union[str, Sequence[int]]) -> RGB:
    """An RGB triple from '#rrggbb' (what colour pickers return) or a sequence of three 0..255 ints."""
    if isinstance(color, str):
        text = color.strip().lstrip("#")
        if len(text) == 3:
            text = "".join(c * 2 for c in text)
        try:
            if len(text) != 6:
                raise ValueError
            return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))
        except ValueError:
            raise InvalidSettings(f"'{color}' is not a colour; use the form '#ff8800'.") from None
    values = tuple(int(v) for v in color)
    if len(values) != 3 or not all(0 <= v <= 255 for v in values):
        raise InvalidSettings(f"A colour needs three values from 0 to 255, got {tuple(color)}.")
    return values


@dataclass(frozen=True)
class OverlayStyle:
    """How masks are drawn. Object k gets ``colors[k % len(colors)]``.

    opacity: strength of the fill (0 = none, 1 = solid colour).
    contour: "on" (fill + outline), "only" (outline, no fill) or "off" (fill only).
    dim_background: darkens everything outside the masks ("spotlight"); 0 = off, 1 = black.
    """

    colors: tuple[RGB, ...] = PALETTE
    opacity: float = 0.5
    contour: str = "on"
    contour_width: int = 2
    dim_background: float = 0.0

    def __post_init__(self):
        colors = (self.colors,) if isinstance(self.colors, str) else tuple(self.colors)
        if not colors:
            raise InvalidSettings("The overlay style needs at least one colour.")
        object.__setattr__(self, "colors", tuple(parse_color(c) for c in colors))
        if not 0.0 <= self.opacity <= 1.0:
            raise InvalidSettings(f"Opacity must be between 0 and 1, got {self.opacity}.")
        if not 0.0 <= self.dim_background <= 1.0:
            raise InvalidSettings(f"Background dimming must be between 0 and 1, got {self.dim_background}.")
        if self.contour not in CONTOUR_MODES:
            raise InvalidSettings(f"Contour must be one of {', '.join(CONTOUR_MODES)}; got '{self.contour}'.")
        if not 1 <= int(self.contour_width) <= 50:
            raise InvalidSettings(f"Contour width must be between 1 and 50 pixels, got {self.contour_width}.")
        object.__setattr__(self, "contour_width", int(self.contour_width))

    def color(self, index: int) -> RGB:
        return self.colors[index % len(self.colors)]


def _as_mask(mask, shape: tuple[int, int]) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"mask of shape {mask.shape} does not match the frame's {shape}")
    # uint8 0/1 without a copy for bool input: OpenCV wants 8-bit images.
    return mask.view(np.uint8) if mask.dtype == bool else (mask != 0).view(np.uint8)


def _union(masks: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    if not masks:
        return np.zeros(shape, np.uint8)
    union = masks[0].copy()
    for mask in masks[1:]:
        cv2.bitwise_or(union, mask, dst=union)
    return union


@functools.lru_cache(maxsize=16)
def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _edge_band(mask_roi: np.ndarray, width: int) -> np.ndarray:
    """The mask's pixels within ``width`` of its outside, uint8 0/1: the outline, drawn inside the
    object so it hides nothing around it. Erosion is a few SIMD passes, far cheaper than tracing
    and stroking contours."""
    inner = cv2.erode(mask_roi, _disc(width), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.subtract(mask_roi, inner)


def render_frame(frame: np.ndarray, masks: Sequence, style: OverlayStyle = OverlayStyle()) -> np.ndarray:
    """A new RGB uint8 [H, W, 3] frame with ``masks`` (one bool [H, W] per object) drawn over ``frame``.

    Objects are drawn in order, so a later object covers an earlier one where they overlap.
    """
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 frame [H, W, 3], got {frame.dtype} {frame.shape}")
    shape = frame.shape[:2]
    masks = [_as_mask(m, shape) for m in masks]
    if style.dim_background > 0:
        out = cv2.convertScaleAbs(frame, alpha=1.0 - style.dim_background)  # [H, W, 3]
        cv2.copyTo(frame, _union(masks, shape), out)
    else:
        out = frame.copy()
    for index, mask in enumerate(masks):
        x, y, w, h = cv2.boundingRect(mask)
        if w == 0:
            continue
        color = style.color(index)
        roi, mask_roi = out[y : y + h, x : x + w], mask[y : y + h, x : x + w]
        if style.contour != "only" and style.opacity > 0:
            tint = np.empty_like(roi)
            tint[:] = color
            cv2.copyTo(cv2.addWeighted(roi, 1.0 - style.opacity, tint, style.opacity, 0.0), mask_roi, roi)
        if style.contour != "off":
            np.copyto(roi, np.array(color, np.uint8), where=_edge_band(mask_roi, style.contour_width)[:, :, None].view(bool))
    return out


# Luma weights (Kr, Kb) of the colour matrices a decoded picture may use.
_LUMA_WEIGHTS = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722), "bt2020": (0.2627, 0.0593)}


def _yuv(rgb: Sequence[int], matrix: str, full_range: bool) -> tuple[float, float, float]:
    """An RGB colour in the picture's own Y'CbCr numbers."""
    kr, kb = _LUMA_WEIGHTS[matrix]
    r, g, b = (c / 255.0 for c in rgb)
    luma = kr * r + (1 - kr - kb) * g + kb * b
    pb, pr = (b - luma) / (2 * (1 - kb)), (r - luma) / (2 * (1 - kr))
    if full_range:
        return 255 * luma, 128 + 255 * pb, 128 + 255 * pr
    return 16 + 219 * luma, 128 + 224 * pb, 128 + 224 * pr


def _block_mean(block: np.ndarray) -> np.ndarray:
    """Mean of each 2x2 block of a uint8 0..255 [2R, 2C] array, as float32 0..1 [R, C]."""
    rows, cols = block.shape[0] // 2, block.shape[1] // 2
    # An exact halving with INTER_AREA is the 2x2 box mean (and far faster than a numpy reduction).
    return cv2.resize(block, (cols, rows), interpolation=cv2.INTER_AREA).astype(np.float32) * (1.0 / 255.0)


def _chroma_weight(region: np.ndarray, top: int, left: int, shape: tuple[int, int]):
    """Chroma rows, columns and the share of each chroma sample's 2x2 pixels set in ``region``
    (uint8 0/1, placed at (top, left) in a frame of ``shape``), float32."""
    height, width = region.shape
    r0, c0 = top // 2, left // 2
    r1, c1 = (top + height + 1) // 2, (left + width + 1) // 2
    if (top - 2 * r0, left - 2 * c0, height % 2, width % 2) == (0, 0, 0, 0):
        return slice(r0, r1), slice(c0, c1), _block_mean(region * np.uint8(255))
    block = np.zeros((2 * (r1 - r0), 2 * (c1 - c0)), np.uint8)
    block[top - 2 * r0 : top - 2 * r0 + height, left - 2 * c0 : left - 2 * c0 + width] = region * np.uint8(255)
    # An odd frame's last chroma row/column covers one real pixel row/column: repeat it.
    if 2 * r1 > shape[0]:
        block[-1] = block[-2]
    if 2 * c1 > shape[1]:
        block[:, -1] = block[:, -2]
    return slice(r0, r1), slice(c0, c1), _block_mean(block)


def _blend_chroma(plane: np.ndarray, target: float, weight: np.ndarray) -> None:
    """plane = plane * (1 - weight) + target * weight, in place, for a uint8 plane (or region of one)."""
    solid = np.full_like(plane, int(round(min(max(target, 0.0), 255.0))))
    np.copyto(plane, cv2.blendLinear(plane, solid, 1.0 - weight, weight))


def render_yuv420(frame: Yuv420Frame, masks: Sequence, style: OverlayStyle = OverlayStyle()) -> Yuv420Frame:
    """``render_frame`` drawn straight on 4:2:0 planes, so a video needs no RGB round trip.

    Blending towards a colour is linear, so blending Y'CbCr numbers gives the colours that blending
    RGB would; chroma samples at a mask's edge are blended by the share of their pixels inside.
    """
    u, v = frame.u.copy(), frame.v.copy()
    shape = frame.y.shape
    masks = [_as_mask(m, shape) for m in masks]
    if style.dim_background <= 0:
        y = frame.y.copy()
    else:
        d = style.dim_background
        black = _yuv((0, 0, 0), frame.matrix, frame.full_range)
        union = _union(masks, shape)
        y = cv2.addWeighted(frame.y, 1.0 - d, frame.y, 0.0, black[0] * d)
        cv2.copyTo(frame.y, union, y)
        outside = d * (1.0 - _chroma_weight(union, 0, 0, shape)[2])
        _blend_chroma(u, black[1], outside)
        _blend_chroma(v, black[2], outside)
    for index, mask in enumerate(masks):
        x, top, w, h = cv2.boundingRect(mask)
        if w == 0:
            continue
        cy, cu, cv = _yuv(style.color(index), frame.matrix, frame.full_range)
        mask_roi, roi = mask[top : top + h, x : x + w], y[top : top + h, x : x + w]
        if style.contour != "only" and style.opacity > 0:
            a = style.opacity
            cv2.copyTo(cv2.addWeighted(roi, 1.0 - a, roi, 0.0, cy * a), mask_roi, roi)
            rows, cols, weight = _chroma_weight(mask_roi, top, x, shape)
            _blend_chroma(u[rows, cols], cu, a * weight)
            _blend_chroma(v[rows, cols], cv, a * weight)
        if style.contour != "off":
            band = _edge_band(mask_roi, style.contour_width)
            np.copyto(roi, np.uint8(round(cy)), where=band.view(bool))
            rows, cols, weight = _chroma_weight(band, top, x, shape)
            _blend_chroma(u[rows, cols], cu, weight)
            _blend_chroma(v[rows, cols], cv, weight)
    return Yuv420Frame(y, u, v, matrix=frame.matrix, full_range=frame.full_range, tags=frame.tags)


def _check_masks(masks_per_object: Sequence[PackedMasks]) -> Optional[tuple[int, int, int]]:
    """Common (T, H, W) of all objects' masks, or None when there are no objects."""
    if not masks_per_object:
        return None
    first = masks_per_object[0]
    shape = (len(first), first.height, first.width)
    for k, masks in enumerate(masks_per_object):
        if (len(masks), masks.height, masks.width) != shape:
            raise ValueError(
                f"object {k} has masks of shape {(len(masks), masks.height, masks.width)}, object 0 has {shape}"
            )
    return shape


def render_video(
    source_path: PathLike,
    masks_per_object: Sequence[PackedMasks],
    out_path: PathLike,
    style: OverlayStyle = OverlayStyle(),
    fps: Optional[Union[float, Fraction]] = None,
    keep_audio: bool = True,
    start: int = 0,
    stop: Optional[int] = None,
    crf: int = DEFAULT_CRF,
    preset: str = DEFAULT_PRESET,
    progress: Optional[Callable[[int, int], None]] = None,
) -> Path:
    """Draw the masks over frames [start, stop) of the source and encode them (see ``video.VideoWriter``).

    Mask j of every object belongs to frame ``start + j``; ``stop`` defaults to the end of the masks
    (or of the video, when there are no objects). Masks must have the video's displayed size. The
    output runs at ``fps`` when given; by default each frame keeps its time in the source (counted from
    frame ``start``), at the source's constant rate or, for a variable-frame-rate source, at its own
    timestamp. It keeps the matching stretch of the source's audio when ``keep_audio``. Decoding,
    drawing and encoding are streamed: memory does not grow with the video's length.
    ``progress(done, total)`` is called after each frame (e.g. to drive a progress bar).
    """
    shape = _check_masks(masks_per_object)
    if stop is None and shape:
        stop = start + shape[0]
    info = probe(source_path, max_frames=stop)  # only as far as the frames drawn: a trimmed run of a long video
    if stop is None:
        stop = info.num_frames
    if start < 0 or stop <= start:
        raise ValueError(f"invalid frame range [{start}, {stop})")
    if stop > info.num_frames:
        raise ValueError(f"frame range [{start}, {stop}) goes past the video's {counted(info.num_frames, 'frame')}")
    if shape is not None:
        if shape[0] != stop - start:
            raise ValueError(f"{shape[0]} masks per object for the {stop - start} frames of [{start}, {stop})")
        if shape[1:] != (info.height, info.width):
            raise ValueError(f"masks of size {shape[2]}x{shape[1]} for a video of {info.width}x{info.height}")
    frames = prefetch(iter_yuv420(source_path, start, stop))
    first = next(frames)
    with VideoWriter(
        out_path, info.width, info.height, info.frame_rate if fps is None else fps,
        audio_source=source_path if keep_audio and info.has_audio else None,
        audio_start=audio_offset(info, start), crf=crf, preset=preset, yuv_tags=first.tags,
        frame_times=source_timeline(info, start, stop) if fps is None else None,
    ) as writer:
        for j, frame in enumerate(itertools.chain([first], frames)):
            writer.write_yuv420(render_yuv420(frame, [masks[j] for masks in masks_per_object], style))
            if progress is not None:
                progress(j + 1, stop - start)
        if writer.num_frames != stop - start:
            raise InvalidVideo(
                f"'{Path(source_path).name}' gave {counted(writer.num_frames, 'frame')}, not the {stop - start} "
                "expected; the file may have changed while it was being read."
            )
    return writer.result.path
