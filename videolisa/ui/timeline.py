"""The timeline under the player: mask area per frame, the frames the model sampled, and when each target shows.

A pure function from numbers to an RGBA image, drawn with Pillow at twice the size and shrunk, so
lines and text are anti-aliased without a plotting library. The background is transparent and the
text, grid and marks come in a light and a dark scheme, each readable on its page's background
(no one grey reads well on both white and a dark slate); the targets keep their own colours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]

_SCALE = 2  # drawn at twice the size, then shrunk: anti-aliasing for free


@dataclass(frozen=True)
class Scheme:
    """The timeline's own colours for one page background: text (ink, muted), grid lines and frame marks."""

    ink: RGB
    muted: RGB
    grid: RGB
    sparse: RGB
    dense: RGB


# Tailwind's slate, the page theme's neutrals: text at least 4.5:1 on white and on slate-800 (dark blocks).
LIGHT = Scheme(ink=(51, 65, 85), muted=(100, 116, 139), grid=(226, 232, 240), sparse=(148, 163, 184),
               dense=(15, 23, 42))
DARK = Scheme(ink=(226, 232, 240), muted=(148, 163, 184), grid=(51, 65, 85), sparse=(100, 116, 139),
              dense=(241, 245, 249))


@dataclass(frozen=True)
class Track:
    """One target on the timeline."""

    label: str
    color: RGB
    area_percent: np.ndarray  # float [T]: mask area as % of the frame
    visible: Optional[tuple[int, int]]  # first and last frame with a mask, or None


def format_time(seconds: float) -> str:
    """'1:05.3' for people: minutes, seconds and tenths."""
    tenths = int(round(max(0.0, seconds) * 10))
    minutes, rest = divmod(tenths, 600)
    return f"{minutes}:{rest // 10:02d}.{rest % 10}"


def _nice_step(span: float, target_ticks: int) -> float:
    raw = span / max(1, target_ticks)
    power = 10 ** np.floor(np.log10(raw)) if raw > 0 else 1.0
    for mult in (1, 2, 5, 10):
        if raw <= mult * power:
            return float(mult * power)
    return float(10 * power)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size * _SCALE)


def draw_timeline(tracks: Sequence[Track], times: Sequence[float], sparse_frames: Sequence[int],
                  dense_frames: Sequence[int], width: int = 1200, scheme: Scheme = LIGHT) -> np.ndarray:
    """RGBA uint8 [H, width, 4], transparent behind: area curves, sampled (sparse) and dense frame marks, and a
    visibility bar per target, in ``scheme``'s colours.

    times: presentation time of every processed frame, seconds [T].
    """
    times = np.asarray(times, dtype=np.float64)
    num_frames = len(times)
    if num_frames == 0:
        raise ValueError("the timeline needs at least one frame")
    s = _SCALE
    left, right, top = 84 * s, 130 * s, 34 * s
    plot_h, marks_h, bar_h, bottom = 150 * s, 40 * s, 24 * s, 10 * s
    height = top + plot_h + marks_h + bar_h * len(tracks) + bottom
    W = width * s
    image = Image.new("RGBA", (W, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    small, normal = _font(11), _font(13)

    t0, t1 = float(times[0]), float(times[-1])
    span = t1 - t0 if t1 > t0 else 1.0
    x0, x1 = left, W - right

    def x_of(t: float) -> float:
        return x0 + (float(t) - t0) / span * (x1 - x0)

    # Plot frame and y grid (area in % of the frame).
    peak = max([float(np.max(t.area_percent)) for t in tracks if len(t.area_percent)] + [1.0])
    y_step = _nice_step(peak, 4)
    y_max = y_step * np.ceil(peak / y_step)
    plot_bottom = top + plot_h

    def y_of(value: float) -> float:
        return plot_bottom - value / y_max * plot_h

    for k in range(int(round(y_max / y_step)) + 1):
        value = k * y_step
        y = y_of(value)
        draw.line([(x0, y), (x1, y)], fill=scheme.grid, width=s)
        draw.text((x0 - 8 * s, y), f"{value:g}%", fill=scheme.muted, font=small, anchor="rm")
    title = "Mask area (% of the frame)"
    draw.text((x0, 10 * s), title, fill=scheme.ink, font=normal, anchor="lt")

    # Time ticks, at least a tenth of a second apart (the labels' resolution).
    t_step = max(0.1, _nice_step(span, 8))
    tick = np.ceil(t0 / t_step) * t_step
    while tick <= t1 + 1e-9:
        x = x_of(tick)
        draw.line([(x, plot_bottom), (x, plot_bottom + 4 * s)], fill=scheme.muted, width=s)
        # Below the tick, clear of "0%".
        draw.text((x, plot_bottom + 9 * s), format_time(tick), fill=scheme.muted, font=small, anchor="mt")
        tick += t_step

    # Curves: one point per frame.
    for track in tracks:
        values = np.asarray(track.area_percent, dtype=np.float64)
        if num_frames == 1:
            y = y_of(values[0])
            draw.line([(x0, y), (x1, y)], fill=track.color, width=3 * s)
            continue
        points = [(x_of(t), y_of(v)) for t, v in zip(times, values)]
        draw.line(points, fill=track.color, width=3 * s, joint="curve")

    # Sampled frames: thin ticks for sparse ones, diamonds for the dense ones the model saw in full.
    marks_top = plot_bottom + 22 * s
    mid = marks_top + 9 * s
    for f in sorted(set(int(i) for i in sparse_frames)):
        x = x_of(times[min(f, num_frames - 1)])
        draw.line([(x, mid - 5 * s), (x, mid + 5 * s)], fill=scheme.sparse, width=s)
    for f in sorted(set(int(i) for i in dense_frames)):
        x = x_of(times[min(f, num_frames - 1)])
        r = 5 * s
        draw.polygon([(x, mid - r), (x + r, mid), (x, mid + r), (x - r, mid)], fill=scheme.dense)
    draw.text((x0 - 8 * s, mid), "frames", fill=scheme.muted, font=small, anchor="rm")
    _legend(draw, x0 + draw.textlength(title, font=normal) + 28 * s, 10 * s, small, scheme)

    # One bar per target, from its first to its last visible frame, labelled with the times.
    y = marks_top + marks_h - 8 * s
    for track in tracks:
        cy = y + bar_h / 2
        draw.text((x0 - 8 * s, cy), track.label, fill=scheme.ink, font=small, anchor="rm")
        draw.line([(x0, cy), (x1, cy)], fill=scheme.grid, width=2 * s)
        if track.visible is None:
            draw.text((x1 + 10 * s, cy), "not found", fill=scheme.muted, font=small, anchor="lm")
        else:
            a, b = track.visible
            xa, xb = x_of(times[a]), max(x_of(times[b]), x_of(times[a]) + 3 * s)
            draw.rounded_rectangle([xa, cy - 5 * s, xb, cy + 5 * s], radius=5 * s, fill=track.color)
            text = f"{format_time(times[a])} - {format_time(times[b])}"
            draw.text((x1 + 10 * s, cy), text, fill=scheme.ink, font=small, anchor="lm")
        y += bar_h
    out = image.resize((width, height // s), Image.LANCZOS)
    return np.asarray(out)  # [H, width, 4]


def _legend(draw: ImageDraw.ImageDraw, left: float, top: float, font, scheme: Scheme) -> None:
    """'| sampled frames (sparse)   <> seen in full detail (dense)', drawn as marks (the font has no such glyphs)."""
    s = _SCALE
    mid = top + 7 * s
    x = left
    draw.line([(x, mid - 5 * s), (x, mid + 5 * s)], fill=scheme.sparse, width=s)
    x += 8 * s
    draw.text((x, mid), "sampled frames (sparse)", fill=scheme.muted, font=font, anchor="lm")
    x += draw.textlength("sampled frames (sparse)", font=font) + 24 * s
    r = 5 * s
    draw.polygon([(x, mid - r), (x + r, mid), (x, mid + r), (x - r, mid)], fill=scheme.dense)
    x += 10 * s
    draw.text((x, mid), "seen in full detail (dense)", fill=scheme.muted, font=font, anchor="lm")
