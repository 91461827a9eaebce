"""Overlays: the look of one frame, and whole videos rendered from any input the app accepts."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import media
from videolisa import render, video
from videolisa.errors import InvalidSettings
from videolisa.masks import PackedMasks


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "media"
    root.mkdir(exist_ok=True)
    return lambda kind: media.cached_clip(root, kind, **media.CLIPS[kind])


def _frame(height=60, width=80):
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def _box(height=60, width=80, top=10, left=20, size=30):
    mask = np.zeros((height, width), bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_style_checks_its_settings_and_reads_hex_colours():
    assert render.OverlayStyle(colors=["#ff8800", (1, 2, 3), "#0af"]).colors == ((255, 136, 0), (1, 2, 3), (0, 170, 255))
    assert render.OverlayStyle(colors="#123456").color(5) == (0x12, 0x34, 0x56)
    for bad in ({"opacity": 1.5}, {"dim_background": -0.1}, {"contour": "thick"}, {"contour_width": 0},
                {"colors": ["orange"]}, {"colors": [(300, 0, 0)]}, {"colors": []}):
        with pytest.raises(InvalidSettings):
            render.OverlayStyle(**bad)


def test_palette_is_okabe_ito_without_black():
    assert len(set(render.PALETTE)) == len(render.PALETTE) == 7
    assert (0, 0, 0) not in render.PALETTE and (230, 159, 0) in render.PALETTE and (0, 114, 178) in render.PALETTE


def test_fill_blends_inside_and_leaves_the_rest_alone():
    frame, mask = _frame(), _box()
    style = render.OverlayStyle(opacity=0.25, contour="off")
    out = render.render_frame(frame, [mask], style)
    expected = frame * 0.75 + np.array(style.color(0)) * 0.25
    assert np.abs(out[mask].astype(float) - expected[mask]).max() <= 1
    assert np.array_equal(out[~mask], frame[~mask])
    assert not np.shares_memory(out, frame)


def test_contour_only_draws_the_outline_and_keeps_the_inside():
    frame, mask = _frame(), _box()
    out = render.render_frame(frame, [mask], render.OverlayStyle(contour="only", contour_width=2))
    changed = np.any(out != frame, axis=2)
    assert changed[10, 25] and changed[39, 25]  # top and bottom edges of the box
    assert not changed[20:30, 30:40].any()  # the interior
    assert not changed[:5].any() and not changed[50:].any()  # far outside


def test_spotlight_dims_everything_but_the_objects():
    frame, mask = _frame(), _box()
    out = render.render_frame(frame, [mask], render.OverlayStyle(opacity=0.0, contour="off", dim_background=0.75))
    assert np.array_equal(out[mask], frame[mask])
    assert np.abs(out[~mask].astype(float) - frame[~mask] * 0.25).max() <= 1
    nothing = render.render_frame(frame, [], render.OverlayStyle(dim_background=1.0))
    assert not nothing.any()  # no object found: everything is background


def test_objects_get_their_own_colours_and_later_ones_are_on_top():
    frame = np.zeros((60, 80, 3), np.uint8)
    first, second = _box(left=5), _box(left=25)
    style = render.OverlayStyle(opacity=1.0, contour="off")
    out = render.render_frame(frame, [first, second], style)
    assert tuple(out[20, 10]) == style.color(0)
    assert tuple(out[20, 45]) == style.color(1)
    assert tuple(out[20, 30]) == style.color(1)  # overlap
    assert np.array_equal(render.render_frame(frame, [], style), frame)


def test_render_frame_rejects_masks_of_another_size():
    with pytest.raises(ValueError, match="does not match"):
        render.render_frame(_frame(), [np.zeros((60, 81), bool)])


def _masks_for(info, objects=2):
    discs = [media.moving_disc_masks(info.num_frames, info.height, info.width)]
    if objects > 1:
        discs.append(media.moving_disc_masks(info.num_frames, info.height, info.width, radius=max(3, info.height // 8), phase=0.5))
    return [PackedMasks.from_array(d) for d in discs]


STYLES = {
    "default": render.OverlayStyle(),
    "spotlight_outline": render.OverlayStyle(contour="only", contour_width=3, dim_background=0.6),
}


@pytest.mark.parametrize("kind", list(media.CLIPS))
def test_render_video_output_is_browser_safe_and_matches_the_rendered_frames(clips, tmp_path, kind):
    source = clips(kind)
    info = video.probe(source)
    masks = _masks_for(info)
    style = STYLES["spotlight_outline" if kind in ("portrait", "vfr", "gif") else "default"]
    out_path = render.render_video(source, masks, tmp_path / "overlay.mp4", style)

    summary = media.stream_summary(out_path)
    assert summary["video_codec"] == "h264" and summary["pix_fmt"] == "yuv420p"
    assert summary["width"] % 2 == 0 and summary["height"] % 2 == 0
    assert (summary["width"] - info.width, summary["height"] - info.height) in {(0, 0), (1, 1)}
    assert summary["audio_codec"] == ("aac" if info.has_audio else None)
    assert summary["frames"] == info.num_frames
    boxes = media.mp4_top_level_boxes(out_path)
    assert boxes.index("moov") < boxes.index("mdat")
    out = video.probe(out_path)
    assert out.duration == pytest.approx(info.duration, abs=1 / info.fps)
    assert out.frame_rate == info.frame_rate and out.is_variable_frame_rate == info.is_variable_frame_rate
    # Each frame shows when it does in the source, so the picture keeps time with the sound; at a constant
    # rate as the source's (its timestamps' rounding aside), a VFR source's at their own times.
    steady = [i / info.frame_rate for i in range(info.num_frames)]
    assert out.frame_times == pytest.approx(info.frame_times if info.is_variable_frame_rate else steady, abs=1e-4)

    # The video shows what render_frame draws, frame for frame (luma: 4:2:0 halves the colour).
    k = info.num_frames // 2
    source_frames = video.read_frames(source, {k, max(k - 1, 0)})
    expected = render.render_frame(source_frames[k], [m[k] for m in masks], style)
    shown = video.read_frames(out_path, [k])[k][: info.height, : info.width]
    assert media.luma_psnr(shown, expected) > 34
    if k > 0:
        previous = render.render_frame(source_frames[k - 1], [m[k - 1] for m in masks], style)
        assert media.luma_psnr(shown, expected) > media.luma_psnr(shown, previous) + 10


def test_render_video_of_a_still_image(tmp_path):
    source = media.make_image(tmp_path, "photo", size=(64, 48), fmt="jpg", exif_orientation=6)
    info = video.probe(source)
    masks = _masks_for(info, objects=1)
    out_path = render.render_video(source, masks, tmp_path / "photo.mp4")
    summary = media.stream_summary(out_path)
    assert (summary["frames"], summary["width"], summary["height"], summary["audio_codec"]) == (1, 48, 64, None)
    expected = render.render_frame(next(video.iter_frames(source)), [masks[0][0]])
    assert media.luma_psnr(next(video.iter_frames(out_path)), expected) > 34


def test_render_video_of_a_range_keeps_the_matching_audio(clips, tmp_path):
    source = media.cached_clip(Path(clips("mp4")).parent, "two_seconds", frames=48, size=(160, 120))
    info = video.probe(source)
    full = _masks_for(info, objects=1)[0]
    part = PackedMasks(info.height, info.width, (full[i] for i in range(12, 36)))
    calls = []
    out_path = render.render_video(source, [part], tmp_path / "part.mp4", start=12, stop=36,
                                   progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 24) for i in range(1, 25)]
    summary = media.stream_summary(out_path)
    assert summary["frames"] == 24
    assert summary["audio_duration"] == pytest.approx(1.0, abs=1 / 24)
    first = next(video.iter_frames(out_path))
    expected = render.render_frame(video.read_frames(source, [12])[12], [full[12]])
    assert media.luma_psnr(first, expected) > 34
    silent = render.render_video(source, [part], tmp_path / "silent.mp4", keep_audio=False, start=12)
    assert media.stream_summary(silent)["audio_codec"] is None


def test_a_vfr_range_keeps_each_frame_at_its_time_against_the_sound(clips, tmp_path):
    source = clips("vfr")  # frames at 0, 1, 2, 3, 4, 5, 8, 11, 14, 17 / 24 s
    info = video.probe(source)
    masks = _masks_for(info, objects=1)[0]
    part = PackedMasks(info.height, info.width, (masks[i] for i in range(4, 9)))
    out_path = render.render_video(source, [part], tmp_path / "part.mp4", start=4, stop=9)
    out = video.probe(out_path)
    expected = [t - info.frame_times[4] for t in info.frame_times[4:10]]  # [4, 9) and where frame 8 ends
    assert out.num_frames == 5 and out.frame_times == pytest.approx(expected[:-1], abs=1e-5)
    assert media.stream_summary(out_path)["audio_duration"] == pytest.approx(expected[-1], abs=0.005)
    assert out.duration == pytest.approx(expected[-1], abs=1e-5)


def test_render_video_without_objects_shows_the_video(clips, tmp_path):
    source = clips("mp4")
    out_path = render.render_video(source, [], tmp_path / "plain.mp4", render.OverlayStyle(dim_background=0.5))
    assert media.stream_summary(out_path)["frames"] == 8


def test_render_video_checks_the_masks_against_the_video(clips, tmp_path):
    source = clips("mp4")
    info = video.probe(source)
    with pytest.raises(ValueError, match="masks of size"):
        render.render_video(source, [PackedMasks(info.height, info.width + 2, np.zeros((8, 240, 322), bool))], tmp_path / "a.mp4")
    with pytest.raises(ValueError, match="past the video"):
        render.render_video(source, [PackedMasks.from_array(np.zeros((9, 240, 320), bool))], tmp_path / "b.mp4")
    with pytest.raises(ValueError, match="object 1"):
        render.render_video(source, [PackedMasks.from_array(np.zeros((8, 240, 320), bool)),
                                     PackedMasks.from_array(np.zeros((7, 240, 320), bool))], tmp_path / "c.mp4")
    assert not any(tmp_path.iterdir())


def test_render_video_memory_does_not_grow_with_length(clips, tmp_path):
    source = media.cached_clip(Path(clips("mp4")).parent, "long_render", frames=96, size=(320, 240), audio=False)
    info = video.probe(source)
    masks = _masks_for(info, objects=1)
    tracemalloc.start()
    render.render_video(source, masks, tmp_path / "long.mp4")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 * 320 * 240 * 3  # a handful of frames in flight, not 96
