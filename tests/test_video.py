"""Probe, decode and encode on clips made by ffmpeg's test sources (see media.py)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import media
from videolisa import video
from videolisa.errors import InvalidVideo


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / "media"


@pytest.fixture(scope="session")
def clips(clip_dir):
    clip_dir.mkdir(exist_ok=True)
    return lambda kind: media.cached_clip(clip_dir, kind, **media.CLIPS[kind])


@pytest.mark.parametrize("kind", list(media.CLIPS))
def test_probe_reports_what_the_clip_is(clips, kind):
    expected = media.clip_expectations(kind)
    info = video.probe(clips(kind))
    period = 1 / float(expected["fps"])
    assert (info.width, info.height) == (expected["width"], expected["height"])
    assert info.rotation == expected["rotation"]
    assert info.num_frames == expected["frames"] == len(info.frame_times)
    assert info.is_variable_frame_rate == expected["vfr"]
    assert info.has_audio == expected["has_audio"]
    assert info.container == expected["container"]
    assert info.codec == expected["codec"]
    assert not info.is_image
    assert info.duration == pytest.approx(expected["duration"], abs=period)
    # The rate is constant and keeps the duration (for VFR too): num_frames / fps == duration.
    assert info.num_frames / info.frame_rate == pytest.approx(info.duration, rel=1e-3)
    assert info.frame_times[0] == 0 and all(b > a for a, b in zip(info.frame_times, info.frame_times[1:]))
    assert sum(1 for _ in video.iter_frames(info.path)) == info.num_frames  # one meaning of "frame i"
    if not expected["vfr"] and expected["container"] != "gif":  # GIF stores delays in 1/100 s
        assert info.frame_rate == expected["fps"]


def test_vfr_frame_times_are_the_real_timestamps(clips):
    info = video.probe(clips("vfr"))
    assert info.frame_times == pytest.approx(media.vfr_times(10, 24), abs=1e-3)
    assert info.fps == pytest.approx(10 / media.vfr_duration(10, 24), rel=1e-3)


@pytest.mark.parametrize("kind", ["mp4", "portrait", "odd_size", "webm", "gif", "avi", "vfr"])
def test_frames_are_rgb_upright_and_in_order_like_ffmpeg_shows_them(clips, kind):
    path = clips(kind)
    info = video.probe(path)
    ours = np.stack(list(video.iter_frames(path)))  # [T, H, W, 3]
    reference = media.ffmpeg_decode(path, info.size)  # the ffmpeg command line rotates by itself
    assert ours.dtype == np.uint8 and ours.shape == (info.num_frames, info.height, info.width, 3)
    assert reference.shape == ours.shape
    assert min(media.psnr(a, b) for a, b in zip(ours, reference)) > 45


def test_frame_ranges_chunks_and_read_frames_agree(clips):
    path = clips("mp4")
    frames = list(video.iter_frames(path))
    assert len(frames) == 8
    assert all(np.array_equal(a, b) for a, b in zip(video.iter_frames(path, start=3, stop=6), frames[3:6]))
    chunks = list(video.iter_chunks(path, 3))
    assert [c.shape[0] for c in chunks] == [3, 3, 2]
    assert np.array_equal(np.concatenate(chunks), np.stack(frames))
    picked = video.read_frames(path, [7, 0, 3, 3])
    assert sorted(picked) == [0, 3, 7]
    assert all(np.array_equal(picked[i], frames[i]) for i in picked)
    with pytest.raises(InvalidVideo, match="frame 8 does not exist"):
        video.read_frames(path, [8])


# Clips with a keyframe every 4 frames, where a reader can resume; the others have only frame 0 as a keyframe.
KEYFRAME_CLIPS = {
    "keyframes": {"frames": 40, "size": (96, 64), "gop": 4},
    "keyframes_portrait_odd": {"frames": 40, "size": (97, 61), "rotate": 90, "gop": 4},
    "keyframes_vfr": {"frames": 40, "size": (96, 64), "vfr": True, "gop": 4},
    "keyframes_webm": {"frames": 40, "size": (96, 64), "container": "webm", "gop": 4},
    "keyframes_avi": {"frames": 40, "size": (96, 64), "container": "avi", "gop": 4},
}


def _backward_ranges(num_frames: int, size: int) -> list[tuple[int, int]]:
    return [(max(0, stop - size), stop) for stop in range(num_frames, 0, -size)]


@pytest.fixture
def decodes(monkeypatch):
    """What the decoder is asked for: ``calls`` the seek of each pass (None: from frame 0), ``frames`` the
    timestamps of every frame it outputs."""
    seen = {"calls": [], "frames": []}
    original = video._decoded_frames

    def counting(path, seek=None):
        seen["calls"].append(seek)
        for frame in original(path, seek=seek):
            seen["frames"].append(frame.pts)
            yield frame

    monkeypatch.setattr(video, "_decoded_frames", counting)
    return seen


@pytest.mark.parametrize("kind", ["mp4", "portrait", "odd_size", "vfr", "ntsc_rate", "webm_odd", "mkv", "avi", "gif",
                                  "one_frame", *KEYFRAME_CLIPS])
def test_a_reader_gives_ranges_in_any_order_as_iter_frames_does(clips, clip_dir, kind):
    path = clips(kind) if kind in media.CLIPS else media.cached_clip(clip_dir, kind, **KEYFRAME_CLIPS[kind])
    frames = np.stack(list(video.iter_frames(path)))  # [T, H, W, 3]
    count = len(frames)
    later = [(0, count), (count // 2, count), (1, 2), (1, 2), (0, 1), (count - 1, count)]
    ranges = _backward_ranges(count, 5) + [(start, stop) for start, stop in later if stop <= count]
    with video.VideoReader(path) as reader:
        for start, stop in ranges:
            got = reader.read(start, stop)
            assert got.dtype == np.uint8 and np.array_equal(got, frames[start:stop]), (start, stop)


@pytest.mark.parametrize("kind", list(KEYFRAME_CLIPS))
def test_reading_backwards_resumes_at_the_keyframe_before_each_range(clip_dir, kind, decodes):
    path = media.cached_clip(clip_dir, kind, **KEYFRAME_CLIPS[kind])
    frames = np.stack(list(video.iter_frames(path)))
    decodes["calls"].clear(), decodes["frames"].clear()
    with video.VideoReader(path) as reader:
        got = [reader.read(start, stop) for start, stop in _backward_ranges(40, 5)]
    assert np.array_equal(np.concatenate(got[::-1]), frames)
    # The first range decodes frames 0-39; each later one resumes at the keyframe before it (every 4 frames,
    # fewer than a range), so a frame is decoded for that pass, for its range, and at most once more on the
    # way into the range after it. From frame 0 each time, frame 0 would be decoded 8 times.
    assert decodes["calls"][0] is None and all(seek is not None for seek in decodes["calls"][1:-1])
    assert max(decodes["frames"].count(pts) for pts in set(decodes["frames"])) <= 3


def _land_elsewhere(original, path, seek):
    frames = original(path)
    next(frames)  # on frame 1, which is no keyframe
    yield from frames


def _cannot_seek(original, path, seek):
    yield from ()


def _skip_a_frame(original, path, seek):
    frames = original(path, seek=seek)
    yield next(frames)
    next(frames)
    yield from frames


def test_a_seek_that_lands_on_an_earlier_keyframe_resumes_from_there(clip_dir, monkeypatch):
    path = media.cached_clip(clip_dir, "keyframes", **KEYFRAME_CLIPS["keyframes"])
    frames = np.stack(list(video.iter_frames(path)))
    original, calls = video._decoded_frames, []

    def early(path, seek=None):
        calls.append(seek)
        # Just before the keyframe asked for: the demuxer starts at the one before it, as sparse indexes do.
        return original(path, seek=None if seek is None else (seek[0] - 1, seek[1]))

    monkeypatch.setattr(video, "_decoded_frames", early)
    with video.VideoReader(path) as reader:
        for start, stop in _backward_ranges(40, 5):
            assert np.array_equal(reader.read(start, stop), frames[start:stop]), (start, stop)
    assert calls[0] is None and all(seek is not None for seek in calls[1:-1])


def _fail_after_the_seek(original, path, seek):
    raise InvalidVideo(f"'{path.name}' could not be decoded after frame {seek[1]}.")
    yield


@pytest.mark.parametrize("fault", [_land_elsewhere, _cannot_seek, _skip_a_frame, _fail_after_the_seek])
def test_a_reader_that_cannot_resume_at_a_keyframe_decodes_from_frame_0(clip_dir, monkeypatch, fault):
    path = media.cached_clip(clip_dir, "keyframes", **KEYFRAME_CLIPS["keyframes"])
    frames = np.stack(list(video.iter_frames(path)))
    original, calls = video._decoded_frames, []

    def faulty(path, seek=None):
        calls.append(seek)
        return original(path) if seek is None else fault(original, path, seek)

    monkeypatch.setattr(video, "_decoded_frames", faulty)
    with video.VideoReader(path) as reader:
        for start, stop in _backward_ranges(40, 5):
            assert np.array_equal(reader.read(start, stop), frames[start:stop]), (start, stop)
    # Eight ranges: the first from frame 0, the second tries its keyframe once and then frame 0, and after
    # that went wrong, every range from frame 0.
    assert calls[0] is None and calls[1] is not None and calls[2:] == [None] * 7


def test_a_stream_without_timestamps_is_read_from_frame_0_each_time(tmp_path, decodes):
    path = tmp_path / "raw.h264"  # a bare H.264 stream: its frames carry no timestamps
    media.ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x64:rate=24", "-frames:v", "24", "-c:v", "libx264",
                 "-preset", "ultrafast", "-g", "4", str(path))
    frames = np.stack(list(video.iter_frames(path)))
    with video.VideoReader(path) as reader:
        for start, stop in _backward_ranges(24, 5) + [(0, 24), (21, 23)]:
            assert np.array_equal(reader.read(start, stop), frames[start:stop]), (start, stop)
    assert len(frames) == 24 and set(decodes["calls"]) == {None}


def test_a_reader_refuses_frames_past_the_end_and_reads_on_afterwards(clips, tmp_path):
    path = clips("mp4")
    frames = np.stack(list(video.iter_frames(path)))
    with video.VideoReader(path) as reader:
        with pytest.raises(InvalidVideo, match="frame 8 does not exist"):
            reader.read(6, 9)
        assert np.array_equal(reader.read(2, 4), frames[2:4])
        with pytest.raises(ValueError):
            reader.read(3, 3)
    image = media.make_image(tmp_path, "still")
    with video.VideoReader(image) as reader:
        assert np.array_equal(reader.read(0, 1), np.stack(list(video.iter_frames(image))))
        with pytest.raises(InvalidVideo, match="frame 1 does not exist"):
            reader.read(0, 2)


def test_max_side_shrinks_the_short_side_and_keeps_the_aspect(clips):
    path = clips("hd1080")
    small = next(video.iter_frames(path, max_side=360))
    assert small.shape == (360, 640, 3)
    full = next(video.iter_frames(path))
    # An area filter keeps the picture: compare with a plain block average of the full frame.
    assert media.psnr(small, full.reshape(360, 3, 640, 3, 3).mean(axis=(1, 3)).round().astype(np.uint8)) > 30
    portrait = next(video.iter_frames(clips("portrait"), max_side=120))
    assert portrait.shape == (160, 120, 3)
    assert next(video.iter_frames(clips("mp4"), max_side=1080)).shape == (240, 320, 3)


def test_frames_within_counts_frames_that_start_before_the_limit(clips):
    info = video.probe(clips("vfr"))  # frames at 0, 1, 2, 3, 4, 5, 8, 11, 14, 17 / 24 s
    assert video.frames_within(info, 5.5 / 24) == 6
    assert video.frames_within(info, 8 / 24) == 6
    assert video.frames_within(info, 8.01 / 24) == 7
    assert video.frames_within(info, None) == 10
    assert video.frames_within(info, 100) == 10


@pytest.mark.parametrize("kind", list(media.CLIPS))
def test_a_capped_probe_describes_the_leading_frames_as_the_complete_probe_does(clips, kind):
    path = clips(kind)
    full = video.probe(path)
    times = full.frame_times
    t = [times[min(k, len(times) - 1)] for k in range(5)]  # short clips: the caps fall on their last frame
    caps = [(1, None), (3, None), (None, t[4]), (None, (t[2] + t[3]) / 2), (5, t[2]), (None, times[-1] + 0.001),
            (full.num_frames, None), (full.num_frames + 1, None)]
    for max_frames, max_seconds in caps:
        video._probe_cached.cache_clear()  # a pass of its own, not one served from the complete probe
        head = video.probe(path, max_frames=max_frames, max_seconds=max_seconds)
        n = min(max_frames or full.num_frames, max(1, video.frames_within(full, max_seconds)))  # frame 0 always
        assert head.num_frames == n and head.frame_times == times[:n]
        if n == full.num_frames:
            assert head == full  # nothing past the limits: the complete probe itself
            continue
        assert not head.complete and head.claimed_duration == full.claimed_duration
        assert (head.size, head.rotation, head.start_time, head.has_audio) == (full.size, full.rotation,
                                                                              full.start_time, full.has_audio)
        assert head.duration == pytest.approx(times[n], abs=2e-3)  # up to where the next frame starts
        if n > 2 and not full.is_variable_frame_rate and full.container != "gif":
            assert head.frame_rate == full.frame_rate


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp", "bmp"])
def test_still_images_are_one_frame_videos(tmp_path, fmt):
    path = media.make_image(tmp_path, "still", size=(64, 48), fmt=fmt)
    info = video.probe(path)
    assert info.is_image and info.num_frames == 1 and (info.width, info.height) == (64, 48)
    frames = list(video.iter_frames(path))
    assert len(frames) == 1 and frames[0].shape == (48, 64, 3)


def test_a_photo_with_exif_rotation_is_read_upright(tmp_path):
    path = media.make_image(tmp_path, "phone", size=(64, 48), fmt="jpg", exif_orientation=6)
    info = video.probe(path)
    assert (info.width, info.height, info.rotation) == (48, 64, 90)
    frame = next(video.iter_frames(path))
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert frame.shape == (64, 48, 3) and np.array_equal(frame, upright)


@pytest.mark.parametrize("rotation, flips", [(0, ["-display_hflip"]), (0, ["-display_vflip"]),
                                             (90, ["-display_hflip"]), (270, ["-display_vflip"]),
                                             (180, ["-display_hflip"]), (90, ["-display_hflip", "-display_vflip"])])
def test_a_mirrored_display_matrix_is_shown_as_ffmpeg_shows_it(tmp_path, rotation, flips):
    stored = tmp_path / "stored.mp4"
    media.ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=4", "-frames:v", "2", "-pix_fmt", "yuv444p",
                 "-c:v", "libx264", "-qp", "0", str(stored))  # lossless: any difference is a wrong orientation
    path = tmp_path / "phone.mp4"
    media.ffmpeg("-display_rotation", str(rotation), *flips, "-i", str(stored), "-c", "copy", str(path))
    info = video.probe(path)
    shown = media.ffmpeg_decode(path, info.size)
    assert info.mirrored == (len(flips) == 1)
    assert np.array_equal(np.stack(list(video.iter_frames(path))), shown)
    # The overlay draws on 4:2:0 planes turned the same way: their luma is the picture's.
    luma = next(video.iter_yuv420(path)).y.astype(float)
    assert luma.shape == shown.shape[1:3] and np.corrcoef(luma.ravel(), media.luma(shown[0]).ravel())[0, 1] > 0.99


def test_a_multipage_tiff_is_read(tmp_path):
    # FFmpeg reads it, with frame side data of a kind PyAV has no name for.
    path = tmp_path / "scan.tif"
    pages = [Image.new("RGB", (32, 24), (60 * i, 90, 30)) for i in range(3)]
    pages[0].save(path, save_all=True, append_images=pages[1:])
    info = video.probe(path)
    frames = list(video.iter_frames(path))
    assert (info.width, info.height, info.rotation, info.mirrored) == (32, 24, 0, False)
    assert len(frames) == info.num_frames >= 1 and np.abs(frames[0].astype(int) - (0, 90, 30)).max() <= 2


def test_the_planes_of_a_422_video_are_converted_to_420_as_ffmpeg_converts_them(tmp_path):
    path = tmp_path / "camera.mp4"
    media.ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x64:rate=4", "-frames:v", "1", "-pix_fmt", "yuv422p",
                 "-c:v", "libx264", "-qp", "0", str(path))
    raw = subprocess.run([video.ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "yuv420p",
                          "-"], capture_output=True, check=True).stdout
    planes = np.frombuffer(raw, np.uint8)
    y, u, v = planes[:96 * 64].reshape(64, 96), planes[96 * 64:96 * 80].reshape(32, 48), planes[96 * 80:].reshape(32, 48)
    frame = next(video.iter_yuv420(path))
    assert np.array_equal(frame.y, y)
    for ours, theirs in ((frame.u, u), (frame.v, v)):  # a bilinear conversion is 41 dB from FFmpeg's
        assert media.psnr(ours, theirs) > 50


@pytest.mark.parametrize("mode, values, expected", [
    ("I;16", np.array([[0, 32896, 65535]], dtype=np.uint16), [0, 128, 255]),  # 16-bit grey PNG
    ("F", np.array([[0.0, 0.5, 1.0]], dtype=np.float32), [0, 128, 255]),  # float grey TIFF in 0-1
    ("F", np.array([[0.0, 100.0, 300.0]], dtype=np.float32), [0, 100, 255]),  # float grey TIFF in 0-255
])
def test_deep_and_float_grey_stills_keep_their_picture(tmp_path, mode, values, expected):
    path = tmp_path / ("grey.png" if mode == "I;16" else "grey.tif")
    Image.fromarray(values, mode=mode).save(path)
    frame = next(video.iter_frames(path))
    assert frame.dtype == np.uint8 and frame.shape == (1, 3, 3)
    assert frame[0, :, 0].tolist() == expected and (frame == frame[..., :1]).all()


def test_a_picture_with_unreadable_exif_is_read_as_stored(tmp_path):
    path = tmp_path / "odd_exif.png"
    Image.new("RGB", (20, 10), (200, 30, 30)).save(path, exif=b"Exif\x00\x00not tiff data")
    info = video.probe(path)
    assert (info.width, info.height, info.rotation) == (20, 10, 0)
    frame = next(video.iter_frames(path))
    assert frame.shape == (10, 20, 3) and (frame == (200, 30, 30)).all()


def test_an_animated_webp_is_named_as_such_not_called_damaged(tmp_path):
    path = tmp_path / "loop.webp"
    pictures = [Image.new("RGB", (32, 24), (40 * i, 0, 0)) for i in range(3)]
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=100)
    with pytest.raises(InvalidVideo, match="animated WebP.*convert it to MP4 or GIF") as caught:
        video.probe(path)
    assert "this demo" not in str(caught.value)  # the library cannot read it either


@pytest.mark.parametrize("container", ["mp3", "m4a"])
def test_a_song_with_cover_art_is_an_audio_file_not_a_short_video(tmp_path, container):
    from videolisa.settings import Limits
    from videolisa.source import open_source

    song = media.make_song(tmp_path, "song", container=container)
    for read in (video.probe, lambda path: list(video.iter_frames(path)),
                 lambda path: open_source(path, Limits(max_pixels=1000))):  # the cover art is over this limit
        with pytest.raises(InvalidVideo) as caught:
            read(song)
        assert str(caught.value) == (f"'{song.name}' is an audio file with cover art: it has no video track. "
                                     "Please upload a video.")


def test_one_frame_is_counted_in_the_singular(clips):
    from dataclasses import replace

    one = clips("one_frame")
    with pytest.raises(InvalidVideo, match=r"\(the video has 1 frame, numbered from 0\)"):
        video.read_frames(one, [3])
    assert "more than 1 frame and" in video.probe(clips("mp4"), max_frames=1).describe()
    scan = video._scan_video(Path(one), None, None)
    promised = replace(scan, header={**scan.header, "claimed_duration": 5.0})  # a header that promises more
    with pytest.raises(InvalidVideo, match=r"only 0\.0 s \(1 frame\) can be decoded"):
        video._describe_scan(promised, None, None)


def _corrupt_files(clips, tmp_path):
    faststart = tmp_path / "faststart.mp4"
    media.ffmpeg("-i", str(clips("mp4")), "-c", "copy", "-movflags", "+faststart", str(faststart))
    long_mkv = media.make_clip(tmp_path, "long", frames=48, container="mkv", size=(160, 120))
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    noise = tmp_path / "noise.mkv"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.mov"
    empty.write_bytes(b"")
    sound = tmp_path / "sound.m4a"
    media.ffmpeg("-f", "lavfi", "-i", "sine=duration=0.5", "-c:a", "aac", str(sound))
    return {
        "truncated mp4 (index at the end)": media.truncated_copy(clips("mp4"), tmp_path, 0.5),
        "truncated mp4 (index first)": media.truncated_copy(faststart, tmp_path, 0.6),
        "truncated mkv": media.truncated_copy(long_mkv, tmp_path, 0.5),
        "truncated gif": media.truncated_copy(clips("gif"), tmp_path, 0.5),
        "truncated png": media.truncated_copy(media.make_image(tmp_path, "photo", size=(200, 150)), tmp_path, 0.5),
        "truncated jpeg": media.truncated_copy(media.make_image(tmp_path, "photo", size=(200, 150), fmt="jpg"),
                                               tmp_path, 0.5),
        "text file": text,
        "random bytes": noise,
        "empty file": empty,
        "audio only": sound,
        "missing file": tmp_path / "nowhere.mp4",
    }


def test_damaged_and_non_video_files_raise_invalid_video_with_a_readable_sentence(clips, tmp_path):
    for label, path in _corrupt_files(clips, tmp_path).items():
        with pytest.raises(InvalidVideo) as caught:
            video.probe(path)
            list(video.iter_frames(path))
        message = str(caught.value)
        assert Path(path).name in message, label
        assert message.endswith(".") and "Errno" not in message and "avcodec" not in message, (label, message)
        if label == "audio only":
            assert "audio file" in message and "no video track" in message
        if label.startswith("truncated"):
            assert "cut short" in message, message


def test_iter_frames_streams_without_holding_frames(clips, clip_dir):
    path = media.cached_clip(clip_dir, "long_stream", frames=96, size=(320, 240), audio=False)
    frame_bytes = 320 * 240 * 3
    tracemalloc.start()
    count = sum(1 for _ in video.iter_frames(path))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 96
    assert peak < 10 * frame_bytes  # 96 frames held would be 96 x


@pytest.mark.parametrize("kind", ["mp4", "odd_size", "ntsc_rate", "no_audio"])
def test_write_video_makes_browser_safe_h264_with_one_frame_per_frame(clips, tmp_path, kind):
    source = clips(kind)
    info = video.probe(source)
    frames = list(video.iter_frames(source))
    written = video.write_video(frames, tmp_path / "out.mp4", info.frame_rate, audio_source=source)
    summary = media.stream_summary(written.path)
    assert summary["video_codec"] == "h264" and summary["pix_fmt"] == "yuv420p"
    assert summary["width"] % 2 == 0 and summary["height"] % 2 == 0
    assert (summary["width"], summary["height"]) == (written.width, written.height)
    assert (written.width - info.width, written.height - info.height) in {(0, 0), (1, 1)}  # padded, not cropped
    assert summary["frames"] == written.num_frames == info.num_frames
    assert media.mp4_top_level_boxes(written.path).index("moov") < media.mp4_top_level_boxes(written.path).index("mdat")
    assert summary["audio_codec"] == ("aac" if info.has_audio else None)
    out = video.probe(written.path)
    assert out.frame_rate == info.frame_rate
    assert out.duration == pytest.approx(info.duration, abs=1 / info.fps)
    decoded = list(video.iter_frames(written.path))
    # The odd-sized clip has full-resolution (4:4:4) colour that 4:2:0 halves, so its sharp
    # saturated bars lose a little more.
    floor = 30 if kind == "odd_size" else 38
    assert all(media.luma_psnr(d[: info.height, : info.width], f) > floor for d, f in zip(decoded, frames))


def test_written_audio_is_the_stretch_of_the_frames_written(clip_dir, tmp_path):
    source = media.cached_clip(clip_dir, "two_seconds", frames=48, size=(160, 120))
    info = video.probe(source)
    frames = list(video.iter_frames(source, start=12, stop=36))
    written = video.write_video(frames, tmp_path / "part.mp4", info.frame_rate, audio_source=source,
                                audio_start=video.audio_offset(info, 12))
    summary = media.stream_summary(written.path)
    assert summary["frames"] == 24
    assert summary["audio_duration"] == pytest.approx(1.0, abs=1 / 24)
    assert video.probe(written.path).duration == pytest.approx(1.0, abs=1 / 24)


# Frames written at their own times are placed on a 90 kHz clock: within a tick of the source's times.
TICK = 1 / 90000


def test_a_vfr_range_is_written_at_its_source_times_with_audio_to_match(clips, tmp_path):
    source = clips("vfr")  # frames at 0, 1, 2, 3, 4, 5, 8, 11, 14, 17 / 24 s
    info = video.probe(source)
    start, stop = 3, 9  # across the change of rate
    timeline = video.source_timeline(info, start, stop)
    assert timeline == pytest.approx([t - info.frame_times[start] for t in info.frame_times[start:stop + 1]])
    frames = list(video.iter_frames(source, start, stop))
    with video.VideoWriter(tmp_path / "part.mp4", info.width, info.height, info.frame_rate, audio_source=source,
                           audio_start=video.audio_offset(info, start), frame_times=timeline) as writer:
        for frame in frames:
            writer.write(frame)
    written = writer.result
    assert written.duration == pytest.approx(timeline[-1], abs=TICK)
    out = video.probe(written.path)
    assert out.num_frames == stop - start
    assert out.frame_times == pytest.approx(timeline[:-1], abs=TICK)
    assert out.duration == pytest.approx(timeline[-1], abs=TICK)
    summary = media.stream_summary(written.path)
    assert summary["video_codec"] == "h264" and summary["pix_fmt"] == "yuv420p"
    assert summary["audio_duration"] == pytest.approx(timeline[-1], abs=0.005)
    boxes = media.mp4_top_level_boxes(written.path)
    assert boxes.index("moov") < boxes.index("mdat")
    import av

    with av.open(str(written.path)) as container:
        dts = [packet.dts for packet in container.demux(container.streams.video[0]) if packet.size]
    assert all(b > a for a, b in zip(dts, dts[1:]))  # browsers need decoding times that only go up
    decoded = list(video.iter_frames(written.path))
    assert all(media.luma_psnr(d, f) > 38 for d, f in zip(decoded, frames))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["part.mp4"]


def test_a_constant_rate_video_has_no_timeline_and_a_vfr_one_ends_with_its_last_frame(clips):
    assert video.source_timeline(video.probe(clips("mp4")), 2, 6) is None
    info = video.probe(clips("vfr"))
    timeline = video.source_timeline(info)
    assert timeline[:-1] == pytest.approx(media.vfr_times(10, 24))
    assert timeline[-1] == pytest.approx(media.vfr_duration(10, 24))
    # A duration rounded to an average rate may end before the last frame starts: it then lasts as long as
    # the one before it.
    rounded = dataclasses.replace(info, duration=info.frame_times[-1])
    assert video.source_timeline(rounded, 8)[-1] == pytest.approx(2 * (17 - 14) / 24)


def test_writer_rejects_wrong_frames_and_cleans_up(tmp_path):
    out = tmp_path / "bad.mp4"
    with pytest.raises(ValueError, match="expected a uint8 frame"):
        with video.VideoWriter(out, 64, 48, 24) as writer:
            writer.write(np.zeros((48, 64, 3), np.uint8))
            writer.write(np.zeros((48, 65, 3), np.uint8))
    assert not out.exists()
    with pytest.raises(ValueError, match="no frames"):
        video.write_video([], out, 24)
    with pytest.raises(ValueError, match="room for 2 frames"):
        with video.VideoWriter(out, 64, 48, 24, frame_times=[0, 0.1, 0.3]) as writer:
            for _ in range(3):
                writer.write(np.zeros((48, 64, 3), np.uint8))
    assert not any(tmp_path.iterdir())
    for bad in ([0.0], [0.0, 0.2, 0.1], [0.0, float("nan")]):
        with pytest.raises(ValueError, match="frame_times must be increasing"):
            video.VideoWriter(out, 64, 48, 24, frame_times=bad)


def test_nothing_calls_a_system_ffmpeg_or_ffprobe(clips, tmp_path):
    """Probe, render and export with decoy ffmpeg/ffprobe first on PATH that fail loudly if run."""
    decoys = tmp_path / "bin"
    decoys.mkdir()
    marker = tmp_path / "system-ffmpeg-was-called"
    for name in ("ffmpeg", "ffprobe"):
        decoy = decoys / name
        decoy.write_text(f"#!/bin/sh\ntouch '{marker}'\nexit 1\n")
        decoy.chmod(0o755)
    script = textwrap.dedent(f"""
        import numpy as np
        from videolisa import export, render, video
        from videolisa.masks import PackedMasks
        info = video.probe({str(clips("portrait"))!r})
        masks = PackedMasks.from_array(np.ones((info.num_frames, info.height, info.width), bool))
        render.render_video(info.path, [masks], {str(tmp_path / "overlay.mp4")!r})
        export.export_all([masks], {str(tmp_path / "exports")!r}, {{"prompt": "x"}}, fps=info.frame_rate)
        print(video.probe({str(tmp_path / "overlay.mp4")!r}).describe())
    """)
    env = {key: value for key, value in os.environ.items() if key not in ("FFMPEG_BINARY", "IMAGEIO_FFMPEG_EXE")}
    env["PATH"] = str(decoys)  # the decoys run /bin/sh by absolute path; nothing else is on PATH
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    assert "240x320, 8 frames" in result.stdout and "aac audio" in result.stdout


def test_a_decompression_bomb_image_is_refused_in_our_words(tmp_path, monkeypatch):
    from PIL import Image

    from videolisa.errors import InputTooLarge
    from videolisa.video import probe

    path = tmp_path / "bomb.png"
    Image.new("L", (400, 400)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 400x400 is then more than twice the limit
    with pytest.raises(InputTooLarge, match="megapixels: downscale it"):
        probe(path)
