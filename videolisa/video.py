"""Video files in and out: probe, streamed decoding, and browser-safe H.264 encoding with the original audio.

Reading uses PyAV (FFmpeg's libraries in-process). Unlike OpenCV or a piped ffmpeg it gives us, per
decoded frame, its presentation timestamp, the display-matrix rotation and the colour tags, and it
tells a damaged stream apart from the end of the file, so probe and decode can share one definition
of "frame i": the i-th frame the decoder outputs, in display order, counted the way the official
code counts (read until the decoder stops; the container's frame count is never trusted).

Writing pipes raw frames (RGB, or the decoded 4:2:0 planes that overlays are drawn on, which spares
two colour conversions per frame) into the ffmpeg binary that ships in the imageio-ffmpeg wheel
(never a system ffmpeg): libx264, yuv420p, even dimensions by padding, ``+faststart``, one output
frame per frame written, at a constant rate that keeps the source's duration. The encoder runs in
its own process, in parallel with our decoding and drawing. Frames of a variable-frame-rate source
are then given back their own timestamps (see ``source_timeline``), so that they stay in sync with the
sound.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import queue
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import av
import cv2
import imageio_ffmpeg
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputTooLarge, InvalidVideo, VideoLISAError, amount, counted

PathLike = Union[str, os.PathLike]

# Still-image formats (as Pillow names them) accepted as one-frame videos. GIF is read as a video.
_STILL_FORMATS = {"PNG", "JPEG", "MPO", "WEBP", "BMP", "TIFF"}
# EXIF orientation -> (degrees clockwise, mirrored first), as ImageOps.exif_transpose shows the picture.
_EXIF_ORIENTATIONS = {1: (0, False), 2: (0, True), 3: (180, False), 4: (180, True), 5: (270, True), 6: (90, False),
                      7: (90, True), 8: (270, False)}
_STILL_FPS = Fraction(1)  # a still image shows for one second when written as a video

# Friendly container names for FFmpeg's demuxer lists ("mov,mp4,m4a,..." -> "mp4" for a .mp4 file).
_CONTAINER_ALIASES = {"matroska,webm": ("mkv", "webm"), "mov,mp4,m4a,3gp,3g2,mj2": ("mp4", "mov", "m4v", "3gp")}

# x264: CRF 18 keeps thin outlines and text crisp; "veryfast" keeps encoding near real time on 2 cores.
DEFAULT_CRF = 18
DEFAULT_PRESET = "veryfast"
_PREFETCH_FRAMES = 4


@dataclass(frozen=True)
class VideoInfo:
    """What ``probe`` learns about a video. Sizes are as displayed (after rotation)."""

    path: str
    container: str
    codec: str
    width: int
    height: int
    rotation: int  # degrees clockwise applied to the stored pictures to show them upright
    num_frames: int  # frames the decoder outputs, in order
    fps: float  # float(frame_rate)
    frame_rate: Fraction  # exact constant rate that plays num_frames in `duration` (for VFR: num_frames / duration)
    is_variable_frame_rate: bool
    duration: float  # seconds from the first frame's start to the last frame's end
    has_audio: bool
    audio_codec: Optional[str]
    is_image: bool
    frame_times: tuple[float, ...]  # presentation time of each frame, seconds after frame 0
    start_time: float  # seconds from the file's start to frame 0 (where the audio of frame 0 begins)
    pixel_format: str  # of the decoded pictures, e.g. "yuv420p" ("rgb24" for still images)
    # False when probing stopped early (``probe(max_frames=..., max_seconds=...)``): the frame counts, times
    # and duration then describe the leading frames only, and the video goes on after them.
    complete: bool = True
    claimed_duration: Optional[float] = None  # the video track's duration as its header states it, if it does
    mirrored: bool = False  # the stored pictures are shown flipped left to right, before the rotation

    @property
    def size(self) -> tuple[int, int]:
        return (self.width, self.height)

    def describe(self) -> str:
        """One line for people, e.g. '1080x1920, 300 frames, 29.97 fps (10.01 s), h264, with audio'."""
        if self.is_image:
            return f"{self.width}x{self.height} still image ({self.codec})"
        rate = f"{self.fps:.3f}".rstrip("0").rstrip(".")
        rate += " fps average, variable" if self.is_variable_frame_rate else " fps"
        audio = f"with {self.audio_codec} audio" if self.has_audio else "no audio"
        if not self.complete:
            claimed = self.claimed_duration
            header = ""
            if claimed:
                length = f"{claimed:.1f} s" if claimed < 60 else f"{claimed / 60:.1f} min"
                header = f" ({length} by its header)"
            return (f"{self.width}x{self.height}, more than {counted(self.num_frames, 'frame')} and "
                    f"{self.duration:.2f} s{header}, {rate}, {self.codec}, {audio}")
        frames = counted(self.num_frames, "frame")
        return f"{self.width}x{self.height}, {frames}, {rate} ({self.duration:.2f} s), {self.codec}, {audio}"


@dataclass(frozen=True)
class WrittenVideo:
    """What the encoder wrote."""

    path: Path
    width: int  # encoded size: the frames' size rounded up to even numbers (padded, never cropped)
    height: int
    num_frames: int
    frame_rate: Fraction  # the constant rate, or for frames written at their own times, the average one
    duration: float  # num_frames / frame_rate, or where the last frame written ends at its own times
    has_audio: bool

    @property
    def fps(self) -> float:
        return float(self.frame_rate)


def ffmpeg_exe() -> str:
    """The ffmpeg binary of the imageio-ffmpeg wheel: present wherever the package is, unlike a system one."""
    return imageio_ffmpeg.get_ffmpeg_exe()


# ---------------------------------------------------------------------------------------------- reading


def _name(path: PathLike) -> str:
    return Path(path).name


def _check_file(path: PathLike) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InvalidVideo(f"'{_name(path)}' does not exist or is not a file.")
    if path.stat().st_size == 0:
        raise InvalidVideo(f"'{_name(path)}' is empty (0 bytes); the upload may have failed, please try again.")
    return path


def image_too_large(path: Path) -> InputTooLarge:
    """The error for an image that Pillow refuses to open as a decompression bomb."""
    return InputTooLarge(
        f"'{path.name}' is an image of more than {amount(2 * Image.MAX_IMAGE_PIXELS / 1e6, 0)} megapixels: "
        "downscale it and try again."
    )


def _open_still(path: Path) -> Optional[Image.Image]:
    """The image if ``path`` is a still image Pillow can read, else None (it may still be a video)."""
    try:
        image = Image.open(path)
    except Image.DecompressionBombError:
        raise image_too_large(path) from None
    except (UnidentifiedImageError, OSError):
        return None
    frames = getattr(image, "n_frames", 1)
    if image.format == "WEBP" and frames > 1:
        image.close()
        # FFmpeg decodes only the first picture of an animated WebP, and every stage reads videos through FFmpeg.
        raise InvalidVideo(
            f"'{_name(path)}' is an animated WebP, which cannot be read as a video: convert it to MP4 or GIF and try "
            "again."
        )
    if image.format not in _STILL_FORMATS or frames > 1:
        image.close()
        return None
    return image


def _rgb8(image: Image.Image) -> np.ndarray:
    """An RGB uint8 array of any still. Pillow's own conversion clips 16-bit and float grey pictures (to white
    or black), so those are scaled to 0-255 first: 16-bit by their range, float by 0-1 when they lie in it."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16") or (image.mode == "I" and values.max(initial=0) > 255):
            values = values / 257.0
        elif image.mode == "F" and values.min(initial=0) >= 0 and values.max(initial=0) <= 1:
            values = values * 255.0
        grey = np.clip(np.rint(values), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def _damaged_image(path: Path, exc: Exception) -> InvalidVideo:
    return InvalidVideo(f"'{_name(path)}' is a damaged image or was cut short ({exc}); please export or upload it "
                        "again.")


def _exif_orientation(image: Image.Image, path: Path) -> int:
    """The EXIF orientation tag, 1 (as stored) when there is none or it cannot be read."""
    try:
        return image.getexif().get(0x0112, 1)
    except OSError as exc:  # a PNG keeps its EXIF after the pixels, so reading it decodes a cut-short picture
        raise _damaged_image(path, exc) from exc
    except (SyntaxError, ValueError):  # EXIF that is not TIFF data: the picture is shown as stored, as browsers do
        return 1


def _read_still(path: Path) -> np.ndarray:
    image = _open_still(path)
    if image is None:
        raise InvalidVideo(f"'{_name(path)}' is not an image that can be read.")
    with image:
        try:
            upright = ImageOps.exif_transpose(image) if _exif_orientation(image, path) != 1 else image
            return _rgb8(upright)  # [H, W, 3]
        except OSError as exc:
            raise _damaged_image(path, exc) from exc


def video_stream(container: "av.container.InputContainer") -> Optional["av.video.stream.VideoStream"]:
    """The video track: the first video stream that is not cover art (the one picture MP3, M4A and many other
    files attach, which FFmpeg lists as a video stream)."""
    return next((stream for stream in container.streams.video
                 if not stream.disposition & av.stream.Disposition.attached_pic), None)


def _open_container(path: Path) -> tuple["av.container.InputContainer", "av.video.stream.VideoStream"]:
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise InvalidVideo(
            f"'{_name(path)}' is not a video that can be read (it may be damaged or cut short, or not a video "
            "at all). Please upload an MP4, MOV, WebM, MKV, AVI or GIF file."
        ) from exc
    stream = video_stream(container)
    if stream is None:
        kind = "an audio file" if container.streams.audio else "a file without pictures"
        if container.streams.video:  # cover art only
            kind = "an audio file with cover art" if container.streams.audio else "a file with only cover art"
        container.close()
        raise InvalidVideo(f"'{_name(path)}' is {kind}: it has no video track. Please upload a video.")
    return container, stream


def _decoded_frames(path: Path, seek: Optional[tuple[int, int]] = None) -> Iterator["av.VideoFrame"]:
    """Every frame the decoder outputs, in display order. Damage stops decoding with InvalidVideo.

    ``seek``: (timestamp, index) of a keyframe to start from instead of frame 0. The demuxer starts at the
    keyframe at or before that timestamp, so the caller checks where decoding landed; nothing is yielded
    when the container cannot seek.
    """
    container, stream = _open_container(path)
    count = 0 if seek is None else seek[1]
    try:
        stream.thread_type = "AUTO"  # frame + slice threads: decoding keeps pace with the encoder
        if seek is not None:
            try:
                container.seek(seek[0], stream=stream)
            except av.error.FFmpegError:
                return
        for frame in container.decode(stream):
            count += 1
            yield frame
    except av.error.FFmpegError as exc:
        raise InvalidVideo(
            f"'{_name(path)}' could not be decoded after frame {count} ({exc.strerror or exc}): the file looks "
            "damaged or cut short. Please export or upload it again."
        ) from exc
    finally:
        container.close()
    if count == 0 and seek is None:
        raise InvalidVideo(f"'{_name(path)}' contains no picture that can be decoded; the file looks damaged or cut short.")


def _container_name(container: "av.container.InputContainer", path: Path) -> str:
    name = container.format.name
    suffix = path.suffix.lower().lstrip(".")
    aliases = _CONTAINER_ALIASES.get(name)
    if aliases:
        return suffix if suffix in aliases else aliases[0]
    return name.split(",")[0]


def _claimed_duration(container: "av.container.InputContainer", stream: "av.video.stream.VideoStream") -> Optional[float]:
    """The video track's duration as the header states it, when the header states it for that track alone."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    tag = stream.metadata.get("DURATION")  # Matroska keeps per-track durations as tags
    if tag:
        try:
            hours, minutes, seconds = tag.split(":")
            return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
        except ValueError:
            return None
    if container.duration is not None and len(container.streams) == 1:
        return container.duration / av.time_base
    return None


def _nominal_rate(stream: "av.video.stream.VideoStream") -> Optional[Fraction]:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < rate < 1000:
            return Fraction(rate)
    return None


def _timeline(pts: list[Optional[int]], last_duration: Optional[int], time_base: Fraction, nominal: Optional[Fraction]):
    """Frame times (ticks, from frame 0), total duration (ticks) and whether the rate varies."""
    n = len(pts)
    nominal_ticks = (1 / (nominal * time_base)) if nominal else None
    usable = all(p is not None for p in pts) and all(b > a for a, b in zip(pts, pts[1:]))
    if not usable:
        # Missing or non-increasing timestamps (raw streams, broken muxers): assume the nominal rate.
        step = nominal_ticks or Fraction(1, 25) / time_base
        return [i * step for i in range(n)], n * step, False
    rel = [Fraction(p - pts[0]) for p in pts]
    gaps = np.diff(np.asarray(pts, dtype=np.int64))
    median_gap = float(np.median(gaps)) if n > 1 else None
    if last_duration and last_duration > 0:
        last = Fraction(last_duration)
    elif median_gap:
        last = Fraction(median_gap)
    else:
        last = nominal_ticks or Fraction(1, 25) / time_base
    variable = False
    if n > 2:
        # Timestamps are rounded to whole ticks: with fine ticks a 1-tick wobble is rounding, not VFR.
        tolerance = (1.0 if median_gap >= 4 else 0.0) + 0.01 * median_gap
        variable = bool(np.any(np.abs(gaps - median_gap) > tolerance))
    return rel, rel[-1] + last, variable


def _exact_rate(num_frames: int, duration: Fraction, nominal: Optional[Fraction]) -> Fraction:
    measured = Fraction(num_frames) / duration
    if nominal and abs(nominal - measured) <= measured * Fraction(2, 1000):
        return nominal  # keeps exact rates such as 30000/1001
    return measured.limit_denominator(1001)


def _ends_with_gif_trailer(path: Path) -> bool:
    # Every complete GIF ends with the trailer byte 0x3B; an interrupted upload does not.
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\x3b"


def _probe_still(path: Path, image: Image.Image) -> VideoInfo:
    with image:
        rotation, mirrored = _EXIF_ORIENTATIONS.get(_exif_orientation(image, path), (0, False))
        width, height = image.size
        fmt = image.format.lower()
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(
        path=str(path), container=fmt, codec=fmt, width=width, height=height, rotation=rotation, mirrored=mirrored,
        num_frames=1, fps=float(_STILL_FPS), frame_rate=_STILL_FPS, is_variable_frame_rate=False,
        duration=float(1 / _STILL_FPS), has_audio=False, audio_codec=None, is_image=True,
        frame_times=(0.0,), start_time=0.0, pixel_format="rgb24",
    )


@dataclass(frozen=True)
class _Scan:
    """What one pass of the decoder learnt about a video: enough to describe it up to any limit it reached."""

    header: dict  # the VideoInfo fields that do not depend on how far the video was decoded
    time_base: Fraction
    nominal: Optional[Fraction]
    pts: tuple[Optional[int], ...]  # of every decoded frame, including the one that stopped an early pass
    durations: tuple[Optional[int], ...]  # the same frames' durations, in ticks
    complete: bool  # the decoder reached the end of the video

    def kept(self, max_frames: Optional[int], max_seconds: Optional[float]) -> int:
        """How many leading decoded frames lie within the limits."""
        end = len(self.pts) if max_frames is None else min(len(self.pts), max_frames)
        if max_seconds is not None:
            for i in range(1, end):
                if _past_limits(i, self.pts[i], self.pts[0], self.time_base, None, max_seconds):
                    return i
        return end

    def reaches(self, max_frames: Optional[int], max_seconds: Optional[float]) -> bool:
        """Whether this pass decoded far enough to describe the video within these limits."""
        return self.complete or self.kept(max_frames, max_seconds) < len(self.pts)

    def covers(self, other: "_Scan") -> bool:
        """Whether this pass reached every frame ``other`` did."""
        return self.complete or (not other.complete and len(self.pts) >= len(other.pts))


def _past_limits(index: int, pts: Optional[int], first_pts: Optional[int], time_base: Fraction,
                 max_frames: Optional[int], max_seconds: Optional[float]) -> bool:
    """Whether frame ``index`` (1 or more) lies beyond the frames a caller will process."""
    if max_frames is not None and index >= max_frames:
        return True
    if max_seconds is None or pts is None or first_pts is None:
        return False
    # The same float as the frame's entry in VideoInfo.frame_times, so that frames_within agrees.
    return float((pts - first_pts) * time_base) >= max_seconds


def _scan_video(path: Path, max_frames: Optional[int], max_seconds: Optional[float]) -> _Scan:
    container, stream = _open_container(path)
    try:
        time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000)
        nominal = _nominal_rate(stream)
        claimed = _claimed_duration(container, stream)
        codec = stream.codec_context.codec.canonical_name
        audio = container.streams.audio[0] if container.streams.audio else None
        audio_codec = audio.codec_context.codec.canonical_name if audio is not None else None
        container_name = _container_name(container, path)
        container_start = container.start_time / av.time_base if container.start_time is not None else 0.0
    finally:
        container.close()

    if container_name == "gif" and not _ends_with_gif_trailer(path):
        raise InvalidVideo(
            f"'{_name(path)}' is cut short: the GIF stops before its end marker. Please export or upload it again."
        )
    pts: list[Optional[int]] = []
    durations: list[Optional[int]] = []
    complete = True
    with contextlib.closing(_decoded_frames(path)) as frames:
        for frame in frames:
            if not pts:
                orientation, pixel_format = _Orientation.of(frame), frame.format.name
                width, height = orientation.shown_size(frame.width, frame.height)
            pts.append(frame.pts)
            durations.append(frame.duration)
            if len(pts) > 1 and _past_limits(len(pts) - 1, frame.pts, pts[0], time_base, max_frames, max_seconds):
                # Kept only to tell that the video goes on, and where the last frame within the limits ends.
                complete = False
                break
    start = float(pts[0] * time_base) - container_start if pts[0] is not None else 0.0
    header = dict(
        path=str(path), container=container_name, codec=codec, width=width, height=height,
        rotation=orientation.clockwise_degrees, mirrored=orientation.mirrored, has_audio=audio is not None, audio_codec=audio_codec, is_image=False, start_time=max(0.0, start),
        pixel_format=pixel_format, claimed_duration=claimed,
    )
    return _Scan(header=header, time_base=time_base, nominal=nominal, pts=tuple(pts), durations=tuple(durations),
                 complete=complete)


def _describe_scan(scan: _Scan, max_frames: Optional[int], max_seconds: Optional[float]) -> VideoInfo:
    """The VideoInfo of the frames within the limits, from a pass that reached them (``scan.reaches``)."""
    num_frames = scan.kept(max_frames, max_seconds)
    complete = scan.complete and num_frames == len(scan.pts)
    pts = list(scan.pts[:num_frames])
    last_duration = scan.durations[num_frames - 1]
    if not complete:
        following = scan.pts[num_frames]
        if following is not None and pts[-1] is not None and following > pts[-1]:
            last_duration = following - pts[-1]  # the last frame lasts until the next one starts
    time_base = scan.time_base
    rel, span, variable = _timeline(pts, last_duration, time_base, scan.nominal)
    duration = span * time_base
    claimed = scan.header["claimed_duration"]
    # Damage that shortens the video can only be told from a pass that reached its end.
    if complete and claimed and float(duration) + 2 * float(duration) / num_frames < 0.9 * claimed:
        raise InvalidVideo(
            f"'{_name(scan.header['path'])}' seems cut short: its header promises {claimed:.1f} s of video but "
            f"only {float(duration):.1f} s ({counted(num_frames, 'frame')}) can be decoded. Please export or upload "
            "it again."
        )
    frame_rate = _exact_rate(num_frames, duration, scan.nominal)
    duration = num_frames / frame_rate  # removes timestamp rounding (e.g. Matroska's milliseconds)
    return VideoInfo(
        **scan.header, num_frames=num_frames, fps=float(frame_rate), frame_rate=frame_rate,
        is_variable_frame_rate=variable, duration=float(duration),
        frame_times=tuple(float(t * time_base) for t in rel), complete=complete,
    )


class _ProbeCache:
    """Probes by file version (path, size, modification time), for the ``maxsize`` files used last.

    Each file keeps its longest decoding pass, which answers every request it reached: a complete
    probe serves a later capped one, and a capped probe one capped lower, without decoding again.
    """

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._files: dict[tuple, tuple[Union[_Scan, VideoInfo], dict]] = {}  # in order of use, oldest first
        self._lock = threading.Lock()

    def __call__(self, path: str, size: int, mtime_ns: int, max_frames: Optional[int],
                 max_seconds: Optional[float]) -> VideoInfo:
        key, limits = (path, size, mtime_ns), (max_frames, max_seconds)
        with self._lock:
            entry = self._files.pop(key, None)
            if entry is not None:
                self._files[key] = entry
                if isinstance(entry[0], VideoInfo):
                    return entry[0]  # a still image: the same at any limits
                if limits in entry[1]:
                    return entry[1][limits]
        scan = entry[0] if entry is not None else None
        if scan is None or not scan.reaches(max_frames, max_seconds):
            file = Path(path)
            still = _open_still(file)
            if still is not None:
                return self._keep(key, _probe_still(file, still))
            scan = self._keep(key, _scan_video(file, max_frames, max_seconds))
        info = _describe_scan(scan, max_frames, max_seconds)
        with self._lock:
            if key in self._files:
                self._files[key][1][limits] = info
        return info

    def _keep(self, key: tuple, found: Union[_Scan, VideoInfo]):
        """Remember what a decoding pass found and return the longest pass of the file (an earlier one may be)."""
        with self._lock:
            earlier, infos = self._files.pop(key, (None, {}))
            if isinstance(earlier, _Scan) and earlier.covers(found):
                found = earlier
            self._files[key] = (found, infos)
            while len(self._files) > self.maxsize:
                del self._files[next(iter(self._files))]
        return found

    def cache_clear(self) -> None:
        with self._lock:
            self._files.clear()


_probe_cached = _ProbeCache(maxsize=32)


def probe(path: PathLike, max_frames: Optional[int] = None, max_seconds: Optional[float] = None) -> VideoInfo:
    """Describe a video (or still image) by decoding it; raises InvalidVideo if it cannot be read.

    By default the whole video is decoded: exact frame count and times, and damage found anywhere.
    ``max_frames`` / ``max_seconds`` stop decoding after the frames a caller will process (those that
    start before ``max_seconds``, at most ``max_frames``) and one more, which tells whether the video
    goes on: a long upload is not decoded to its end only to be trimmed. When it does go on, the result
    says ``complete=False`` and its ``num_frames``, ``frame_times``, ``duration`` and ``frame_rate``
    describe those leading frames only; ``claimed_duration`` is what the header says of the whole, and
    damage past them goes unseen. Results are cached per file version (path, size, modification time),
    so probing again before decoding or rendering costs nothing, at the same or at lower limits.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    file = _check_file(path).resolve()
    stat = file.stat()
    return _probe_cached(str(file), stat.st_size, stat.st_mtime_ns, None if max_frames is None else int(max_frames),
                         None if max_seconds is None else float(max_seconds))


def frames_within(info: VideoInfo, max_duration_s: Optional[float]) -> int:
    """How many leading frames start before ``max_duration_s`` (all of them when it is None)."""
    if max_duration_s is None:
        return info.num_frames
    return bisect.bisect_left(info.frame_times, max_duration_s)


def scaled_size(width: int, height: int, max_side: Optional[int]) -> tuple[int, int]:
    """Display size after shrinking so the short side is at most ``max_side`` (aspect kept)."""
    short = min(width, height)
    if max_side is None or short <= max_side:
        return width, height
    scale = max_side / short
    return (max_side, max(1, round(height * scale))) if width == short else (max(1, round(width * scale)), max_side)


@dataclass(frozen=True)
class _Orientation:
    """How to show a decoded picture as its display matrix says: mirrored left to right, then turned."""

    quarter_turns: int = 0  # counterclockwise, as np.rot90 counts
    mirrored: bool = False

    @classmethod
    def of(cls, frame: "av.VideoFrame") -> "_Orientation":
        # The matrix maps a stored pixel (x, y) to (a x + c y, b x + d y) on screen (16.16 fixed point). A negative
        # determinant is a mirror; once the mirror is taken out, the rest is a rotation, to the nearest quarter turn.
        try:
            side = frame.side_data.get("DISPLAYMATRIX")
        except ValueError:  # side data of a kind PyAV does not know makes the whole container unreadable
            return cls(int(round(frame.rotation / 90.0)) % 4)
        if side is None:
            return cls()
        a, b, _, c, d = np.frombuffer(bytes(side), "<i4")[:5] / 65536.0
        mirrored = bool(a * d - b * c < 0)
        if mirrored:
            a, b = -a, -b
        return cls(int(round(math.atan2(-b, a) / (math.pi / 2))) % 4, mirrored)

    @property
    def clockwise_degrees(self) -> int:
        return (-90 * self.quarter_turns) % 360

    def shown_size(self, width: int, height: int) -> tuple[int, int]:
        return (height, width) if self.quarter_turns % 2 else (width, height)

    def show(self, picture: np.ndarray) -> np.ndarray:
        """A stored picture [H, W, ...] as it is shown."""
        if self.mirrored:
            picture = picture[:, ::-1]
        if self.quarter_turns:
            picture = np.rot90(picture, self.quarter_turns)
        return np.ascontiguousarray(picture)


def _to_rgb(frame: "av.VideoFrame", width: int, height: int, orientation: _Orientation) -> np.ndarray:
    """The frame as upright RGB uint8 [height, width, 3]."""
    stored_w, stored_h = orientation.shown_size(width, height)
    scaling = (stored_w, stored_h) != (frame.width, frame.height)
    rgb = frame.to_ndarray(
        width=stored_w,
        height=stored_h,
        format="rgb24",
        interpolation="AREA" if scaling else None,
        # Honour full-range ("JPEG") video; PyAV would otherwise read it as limited range.
        src_color_range=frame.color_range or None,
    )  # [stored_h, stored_w, 3]
    return orientation.show(rgb)  # [height, width, 3]


def _iter_video_frames(path: Path, start: int, stop: Optional[int], max_side: Optional[int], wanted=None):
    """(index, RGB frame) for frames in [start, stop) (and in ``wanted``, if given), in order."""
    size = None
    for index, frame in enumerate(_decoded_frames(path)):
        if stop is not None and index >= stop:
            return
        if size is None:
            # The first frame fixes orientation and size for the whole video, so frames that change
            # resolution mid-stream (some WebRTC recordings) still come out alike.
            orientation = _Orientation.of(frame)
            size = scaled_size(*orientation.shown_size(frame.width, frame.height), max_side)
        if index < start or (wanted is not None and index not in wanted):
            continue
        yield index, _to_rgb(frame, size[0], size[1], orientation)


def downscale(rgb: np.ndarray, max_side: Optional[int]) -> np.ndarray:
    """Shrink an RGB frame so its short side is at most ``max_side`` (area filter); smaller frames pass through."""
    height, width = rgb.shape[:2]
    new_w, new_h = scaled_size(width, height, max_side)
    if (new_w, new_h) == (width, height):
        return rgb
    return cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)


def _check_range(start: int, stop: Optional[int]) -> None:
    if start < 0 or (stop is not None and stop < start):
        raise ValueError(f"invalid frame range [{start}, {stop})")


def _open_range(path: PathLike, start: int, stop: Optional[int]) -> tuple[Path, bool]:
    """Check a frame range and a file; returns the file and whether it is a still image (a one-frame video)."""
    _check_range(start, stop)
    file = _check_file(path)
    still = _open_still(file)
    if still is not None:
        still.close()
    return file, still is not None


def _still_in_range(start: int, stop: Optional[int]) -> bool:
    return start == 0 and (stop is None or stop > 0)


def iter_frames(path: PathLike, start: int = 0, stop: Optional[int] = None, max_side: Optional[int] = None) -> Iterator[np.ndarray]:
    """Upright RGB uint8 [H, W, 3] frames with index in [start, stop), streamed in display order.

    ``max_side``: frames whose short side exceeds it are shrunk (area filter, aspect kept) so the
    short side equals it. Memory does not grow with the video's length.
    """
    file, is_still = _open_range(path, start, stop)
    if is_still:
        if _still_in_range(start, stop):
            yield downscale(_read_still(file), max_side)
        return
    for _, rgb in _iter_video_frames(file, start, stop, max_side):
        yield rgb


def iter_chunks(path: PathLike, chunk_size: int, start: int = 0, stop: Optional[int] = None,
                max_side: Optional[int] = None) -> Iterator[np.ndarray]:
    """Frames of [start, stop) in chunks of ``chunk_size`` (the last may be shorter), uint8 [B, H, W, 3]."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    chunk: list[np.ndarray] = []
    for frame in iter_frames(path, start, stop, max_side):
        chunk.append(frame)
        if len(chunk) == chunk_size:
            yield np.stack(chunk)  # [B, H, W, 3]
            chunk = []
    if chunk:
        yield np.stack(chunk)


def read_frames(path: PathLike, indices: Iterable[int], max_side: Optional[int] = None) -> dict[int, np.ndarray]:
    """The frames with the given indices, read in one sequential pass (only those are converted to RGB)."""
    wanted = sorted(set(int(i) for i in indices))
    if not wanted:
        return {}
    if wanted[0] < 0:
        raise ValueError(f"frame indices must not be negative, got {wanted[0]}")
    file = _check_file(path)
    still = _open_still(file)
    if still is not None:
        still.close()
        frames = {0: downscale(_read_still(file), max_side)} if wanted[0] == 0 else {}
    else:
        frames = dict(_iter_video_frames(file, wanted[0], wanted[-1] + 1, max_side, wanted=set(wanted)))
    missing = [i for i in wanted if i not in frames]
    if missing:
        raise _no_such_frame(file, missing[0])
    return frames


def _no_such_frame(file: Path, index: int) -> InvalidVideo:
    return InvalidVideo(
        f"'{_name(file)}' has fewer frames than asked for: frame {index} does not exist "
        f"(the video has {counted(probe(file).num_frames, 'frame')}, numbered from 0)."
    )


class VideoReader:
    """Ranges of frames of one video, asked for in any order, each as ``iter_frames`` gives it.

    The decoder stays open between ranges: a range that starts at or after the end of the previous one
    decodes on from there, and one that starts earlier resumes at the last keyframe before it, so that a
    video read backwards in short ranges is not decoded from frame 0 again for each of them. A keyframe is
    only resumed from once decoding has passed it, and only while the timestamps tell the frames apart
    (they are there and increase); decoding must land on a keyframe seen before and meet the timestamps
    seen before after it, else it starts again from frame 0, for this range and the ones after it. Use as
    a context manager (or call ``close``).
    """

    def __init__(self, path: PathLike):
        self._file, self._is_still = _open_range(path, 0, None)
        self._frames: Optional[Iterator["av.VideoFrame"]] = None  # the open decoder's output
        self._landed: Optional["av.VideoFrame"] = None  # the first frame after a seek, taken to check where it is
        self._next = 0  # index of the next frame the decoder outputs
        self._pts: list[Optional[int]] = []  # of frames 0, 1, ... as decoding from frame 0 outputs them
        self._keyframes: dict[Optional[int], int] = {}  # timestamp -> index of the keyframes among them
        self._seekable = True  # the timestamps seen so far are there and increase
        self._picture = None  # (orientation, size) fixed by frame 0, as iter_frames fixes them

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._frames is not None:
            self._frames.close()
        self._frames, self._landed = None, None

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) (``start < stop``), upright RGB uint8 [stop - start, H, W, 3]."""
        if start < 0 or stop <= start:
            raise ValueError(f"invalid frame range [{start}, {stop})")
        if self._is_still:
            if stop > 1:
                raise _no_such_frame(self._file, 1)
            return _read_still(self._file)[None]
        try:
            return self._read(start, stop)
        except BaseException:
            self.close()
            raise

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self._frames is None or start < self._next:
            self._resume(start)
        rgb = []
        while self._next < stop:
            if self._landed is not None:
                frame, self._landed = self._landed, None
            else:
                frame = next(self._frames, None)
            if frame is None:
                raise _no_such_frame(self._file, self._next)
            if not self._learn(self._next, frame):
                # Decoding on from the keyframe did not meet the frames a pass from frame 0 did.
                self._seekable = False
                self.close()
                return self._read(start, stop)
            if self._next >= start:
                orientation, (width, height) = self._picture
                rgb.append(_to_rgb(frame, width, height, orientation))
            self._next += 1
        return np.stack(rgb)  # [n, H, W, 3]

    def _learn(self, index: int, frame: "av.VideoFrame") -> bool:
        """Note what a frame's timestamp says; False if it is not the frame decoding from frame 0 outputs there."""
        if index < len(self._pts):
            return frame.pts == self._pts[index]
        if index == 0:
            orientation = _Orientation.of(frame)
            self._picture = orientation, orientation.shown_size(frame.width, frame.height)
        elif frame.pts is None or self._pts[-1] is None or frame.pts <= self._pts[-1]:
            self._seekable = False
        if index == 0 or frame.key_frame:  # frame 0: where a seek before the second keyframe lands
            self._keyframes[frame.pts] = index
        self._pts.append(frame.pts)
        return True

    def _resume(self, start: int) -> None:
        """Open the decoder at the last known keyframe at or before ``start``, or at frame 0."""
        self.close()
        keyframe = max((i for i in self._keyframes.values() if i <= start), default=0) if self._seekable else 0
        if keyframe:
            frames = _decoded_frames(self._file, seek=(self._pts[keyframe], keyframe))
            try:
                landed = next(frames, None)
            except InvalidVideo:  # the frames a pass from frame 0 met there were fine: the seek is to blame
                landed = None
            # The demuxer may start at an earlier keyframe than asked; any keyframe seen before will do.
            index = self._keyframes.get(landed.pts) if landed is not None else None
            if index is not None and index <= start:
                self._frames, self._landed, self._next = frames, landed, index
                return
            frames.close()
            self._seekable = False
        self._frames, self._next = _decoded_frames(self._file), 0


# Colour tags as FFmpeg's command line names them, by the enum values PyAV reports.
_MATRIX_TAGS = {1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 9: "bt2020nc", 10: "bt2020c"}
_PRIMARIES_TAGS = {1: "bt709", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 9: "bt2020"}
_TRANSFER_TAGS = {1: "bt709", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m", 8: "linear",
                  13: "iec61966-2-1", 14: "bt2020-10", 15: "bt2020-12", 16: "smpte2084", 18: "arib-std-b67"}
YUV420_FORMATS = ("yuv420p", "yuvj420p")


@dataclass(frozen=True)
class Yuv420Frame:
    """An upright 8-bit 4:2:0 picture as decoded: y [H, W], u and v [ceil(H/2), ceil(W/2)], uint8."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    matrix: str  # "bt601", "bt709" or "bt2020": how the numbers map to RGB
    full_range: bool  # 0..255 ("JPEG") rather than 16..235
    tags: tuple[str, ...]  # ffmpeg output options that label an encoded stream the same way


def _layout(frame: "av.VideoFrame") -> tuple[str, bool, tuple[str, ...]]:
    full = frame.format.name == "yuvj420p" or frame.color_range == 2
    # Untagged video is read with BT.601 (as FFmpeg and OpenCV do), so overlay colours use it too.
    matrix = {1: "bt709", 9: "bt2020", 10: "bt2020"}.get(frame.colorspace, "bt601")
    tags = ["-color_range", "pc" if full else "tv"]
    for option, table, value in (("-colorspace", _MATRIX_TAGS, frame.colorspace),
                                 ("-color_primaries", _PRIMARIES_TAGS, frame.color_primaries),
                                 ("-color_trc", _TRANSFER_TAGS, frame.color_trc)):
        if value in table:
            tags += [option, table[value]]
    return matrix, full, tuple(tags)


def _plane(frame: "av.VideoFrame", index: int, orientation: _Orientation) -> np.ndarray:
    plane = frame.planes[index]
    rows = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)  # padded rows
    return orientation.show(rows[:, : plane.width])


def iter_yuv420(path: PathLike, start: int = 0, stop: Optional[int] = None) -> Iterator[Yuv420Frame]:
    """Frames [start, stop) of a 4:2:0 video as upright planes, without any colour conversion.

    This is what ``render_video`` draws on: it spares two colour conversions per frame. Videos of
    other pixel formats (see ``VideoInfo.pixel_format``) are converted to 4:2:0.
    """
    file, is_still = _open_range(path, start, stop)
    if is_still:
        if _still_in_range(start, stop):
            frame = av.VideoFrame.from_ndarray(_read_still(file), format="rgb24").reformat(format="yuv420p",
                                                                                         interpolation="BICUBIC")
            matrix, full, tags = _layout(frame)
            yield Yuv420Frame(*(_plane(frame, i, _Orientation()) for i in range(3)), matrix=matrix, full_range=full,
                              tags=tags)
        return
    first = None
    for index, frame in enumerate(_decoded_frames(file)):
        if stop is not None and index >= stop:
            return
        if first is None:
            orientation = _Orientation.of(frame)
            first = (frame.width, frame.height, frame.format.name if frame.format.name in YUV420_FORMATS else "yuv420p")
            matrix, full, tags = _layout(frame)
        if index < start:
            continue
        if (frame.width, frame.height, frame.format.name) != first:
            # Bicubic, FFmpeg's own default: PyAV's bilinear blurs the chroma of 4:2:2 and 4:4:4 sources.
            frame = frame.reformat(width=first[0], height=first[1], format=first[2], interpolation="BICUBIC")
        yield Yuv420Frame(*(_plane(frame, i, orientation) for i in range(3)), matrix=matrix, full_range=full, tags=tags)


def prefetch(iterable: Iterable, depth: int = _PREFETCH_FRAMES) -> Iterator:
    """Run ``iterable`` in a background thread, ``depth`` items ahead (FFmpeg releases the GIL while decoding).

    Errors raised by the producer are re-raised in the consumer.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stopped = threading.Event()

    def produce():
        try:
            for item in iterable:
                while not stopped.is_set():
                    try:
                        items.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stopped.is_set():
                    return
            items.put((done, None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            items.put((done, exc))

    thread = threading.Thread(target=produce, name="videolisa-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = items.get()
            if item is done:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stopped.set()
        while thread.is_alive():
            try:
                items.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.1)


# ---------------------------------------------------------------------------------------------- writing


def _rate_arg(rate: Fraction) -> str:
    return f"{rate.numerator}/{rate.denominator}"


def _as_rate(fps: Union[float, Fraction, int]) -> Fraction:
    rate = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return rate


# Ticks per second of frames written at their own times: MPEG's clock, finer than the time bases sources use.
_TIMESCALE = 90000

# How the writer tags what it encodes from RGB: BT.709, limited range.
BT709_TAGS = ("-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv")


class VideoWriter:
    """Streams frames into a browser-playable MP4 (H.264, yuv420p, even size, +faststart).

    Use as a context manager and ``write`` each RGB uint8 [height, width, 3] frame; the result is
    in ``.result`` after the block (or returned by ``close()``). RGB is encoded with BT.709 and
    tagged so. With ``yuv_tags`` (the ``tags`` of a ``Yuv420Frame``) the writer instead takes 4:2:0
    planes through ``write_yuv420`` and keeps their colours untouched. Odd sizes are padded with
    black on the right/bottom. With ``audio_source``, its first audio track is re-encoded to AAC and
    muxed in, from ``audio_start`` seconds on, cut to ``audio_duration`` (default: the video's
    duration); a source without audio gives a file without an audio track.

    With ``frame_times`` (seconds from the first frame, one entry per frame to be written and one
    more for where the last one ends; ``source_timeline`` gives them for a variable-frame-rate
    source), frame i shows from ``frame_times[i]`` rather than from ``i / fps``.
    """

    def __init__(self, out_path: PathLike, width: int, height: int, fps: Union[float, Fraction],
                 audio_source: Optional[PathLike] = None, audio_start: float = 0.0,
                 audio_duration: Optional[float] = None, crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET,
                 yuv_tags: Optional[Sequence[str]] = None, frame_times: Optional[Sequence[float]] = None):
        if width < 1 or height < 1:
            raise ValueError(f"invalid frame size {width}x{height}")
        self._ticks = None if frame_times is None else _ticks(frame_times)
        self.out_path = Path(out_path)
        self.width, self.height = int(width), int(height)
        self.frame_rate = _as_rate(fps)
        self.audio_source = Path(audio_source) if audio_source is not None else None
        if self.audio_source is not None and not _has_audio(self.audio_source):
            self.audio_source = None
        self.audio_start = max(0.0, float(audio_start))
        self.audio_duration = audio_duration
        self.yuv = yuv_tags is not None
        self.num_frames = 0
        self.result: Optional[WrittenVideo] = None
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self._video_path = (
            self.out_path.with_name(f".{self.out_path.stem}.video.mp4")
            if self.audio_source or self._ticks is not None else self.out_path
        )
        self._timed_path = (
            self.out_path.with_name(f".{self.out_path.stem}.timed.mp4") if self.audio_source else self.out_path
        )
        self._stderr = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            self._video_command(crf, preset, tuple(yuv_tags or ())), stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=self._stderr,
        )

    def _video_command(self, crf: int, preset: str, yuv_tags: tuple[str, ...]) -> list[str]:
        if self.yuv:
            # Planes arrive padded to even sizes (FFmpeg's pad filter would drop an odd last column of
            # 4:2:0 input). The same tags on input and output, so FFmpeg sees nothing to convert.
            source = [*yuv_tags, "-pix_fmt", "yuv420p"]
            video = list(yuv_tags)
        else:
            pad = "pad=ceil(iw/2)*2:ceil(ih/2)*2"  # 4:2:0 needs even sizes: pad, never crop
            source = ["-pix_fmt", "rgb24"]
            video = ["-vf", f"{pad},scale=out_color_matrix=bt709:out_range=tv,format=yuv420p", *BT709_TAGS]
        if self._ticks is not None:
            # Without B-frames packets come in display order with dts == pts, so retiming them stays simple.
            video += ["-bf", "0"]
        return [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "rawvideo", *source, "-s", f"{self.width + self.width % 2 if self.yuv else self.width}x"
            f"{self.height + self.height % 2 if self.yuv else self.height}",
            "-framerate", _rate_arg(self.frame_rate), "-i", "pipe:0", *video,
            "-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", "yuv420p",
            "-fps_mode", "passthrough", "-movflags", "+faststart", "-an", str(self._video_path),
        ]

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _send(self, *arrays: np.ndarray) -> None:
        if self._ticks is not None and self.num_frames == len(self._ticks) - 1:
            raise ValueError(f"frame_times has room for {counted(self.num_frames, 'frame')}, and one more was written")
        try:
            for array in arrays:
                self._proc.stdin.write(memoryview(np.ascontiguousarray(array)).cast("B"))
        except (BrokenPipeError, OSError) as exc:
            message = self._error_text()
            self.abort()
            raise VideoLISAError(f"The video encoder stopped unexpectedly: {message}") from exc
        self.num_frames += 1

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 [height, width, 3] frame."""
        if self.yuv:
            raise ValueError("this writer takes 4:2:0 planes: use write_yuv420")
        frame = np.asarray(frame)
        if frame.shape != (self.height, self.width, 3) or frame.dtype != np.uint8:
            raise ValueError(
                f"expected a uint8 frame of shape {(self.height, self.width, 3)}, got {frame.dtype} {frame.shape}"
            )
        self._send(frame)

    def write_yuv420(self, frame: Yuv420Frame) -> None:
        """Append one 4:2:0 frame (planes as ``iter_yuv420`` gives them)."""
        if not self.yuv:
            raise ValueError("this writer takes RGB frames: use write")
        chroma = ((self.height + 1) // 2, (self.width + 1) // 2)
        if frame.y.shape != (self.height, self.width) or frame.u.shape != chroma or frame.v.shape != chroma:
            raise ValueError(f"planes of shapes {frame.y.shape}, {frame.u.shape}, {frame.v.shape} do not fit "
                             f"a {self.width}x{self.height} 4:2:0 frame")
        y = frame.y
        if self.width % 2 or self.height % 2:
            y = np.full((self.height + self.height % 2, self.width + self.width % 2), 0 if frame.full_range else 16, np.uint8)
            y[: self.height, : self.width] = frame.y
        self._send(y, frame.u, frame.v)

    def _error_text(self) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace").strip()
        return text[-2000:] or "no message from ffmpeg"

    def abort(self) -> None:
        """Stop the encoder and remove partial output."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        if self._proc.stdin and not self._proc.stdin.closed:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        self._stderr.close()
        for path in {self._video_path, self._timed_path, self.out_path}:
            path.unlink(missing_ok=True)

    def close(self) -> WrittenVideo:
        if self.result is not None:
            return self.result
        if self.num_frames == 0:
            self.abort()
            raise ValueError("no frames were written, so there is no video to encode")
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        if self._proc.wait() != 0:
            message = self._error_text()
            self.abort()
            raise VideoLISAError(f"Encoding the video failed: {message}")
        duration = float(self.num_frames / self.frame_rate)
        video_path = self._video_path
        if self._ticks is not None:
            duration = self._ticks[self.num_frames] / _TIMESCALE
            try:
                self._retime()
            finally:
                self._video_path.unlink(missing_ok=True)
            video_path = self._timed_path
        has_audio = False
        if self.audio_source is not None:
            has_audio = True
            try:
                self._mux_audio(video_path, duration if self.audio_duration is None else float(self.audio_duration))
            finally:
                video_path.unlink(missing_ok=True)
        self._stderr.close()
        self.result = WrittenVideo(
            path=self.out_path, width=self.width + self.width % 2, height=self.height + self.height % 2,
            num_frames=self.num_frames, frame_rate=self.frame_rate, duration=duration, has_audio=has_audio,
        )
        return self.result

    def _retime(self) -> None:
        """Copy the encoded video, giving each frame its time from ``frame_times`` (packets are in display
        order: no B-frames)."""
        time_base = Fraction(1, _TIMESCALE)
        try:
            with av.open(str(self._video_path)) as source, \
                    av.open(str(self._timed_path), "w", format="mp4", options={"movflags": "+faststart"}) as target:
                encoded = source.streams.video[0]
                timed = target.add_stream_from_template(encoded)
                timed.time_base = time_base
                packets = (packet for packet in source.demux(encoded) if packet.size)  # the last one only flushes
                for index, packet in enumerate(packets):
                    packet.stream = timed
                    packet.time_base = time_base
                    packet.pts = packet.dts = self._ticks[index]
                    packet.duration = self._ticks[index + 1] - self._ticks[index]
                    target.mux(packet)
        except av.error.FFmpegError as exc:
            self._timed_path.unlink(missing_ok=True)
            raise VideoLISAError(f"Giving the encoded frames their timestamps failed: {exc}") from exc

    def _mux_audio(self, video_path: Path, duration: float) -> None:
        command = [
            ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-i", str(video_path),
            "-ss", f"{self.audio_start:.6f}", "-t", f"{max(duration, 0.001):.6f}", "-i", str(self.audio_source),
            "-map", "0:v:0", "-map", "1:a:0", "-c:v", "copy", "-c:a", "aac", "-b:a", "160k",
            "-movflags", "+faststart", str(self.out_path),
        ]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            self.out_path.unlink(missing_ok=True)
            raise InvalidVideo(
                f"The audio of '{_name(self.audio_source)}' could not be re-encoded ({proc.stderr.strip()[-500:]}). "
                "Render without its audio or export the video again."
            )


def _ticks(frame_times: Sequence[float]) -> list[int]:
    """``frame_times`` as whole ticks of 1/_TIMESCALE s from the first, strictly increasing."""
    times = [float(t) for t in frame_times]
    if len(times) < 2 or not all(math.isfinite(t) for t in times) or any(b <= a for a, b in zip(times, times[1:])):
        raise ValueError("frame_times must be increasing finite seconds, one per frame and one for the end, "
                         f"got {frame_times!r}")
    ticks = [0]
    for t in times[1:]:
        # Times closer than a tick (far finer than any source's clock) still keep their order.
        ticks.append(max(round((t - times[0]) * _TIMESCALE), ticks[-1] + 1))
    return ticks


def _has_audio(path: Path) -> bool:
    if _open_still(path) is not None:
        return False
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            return bool(container.streams.audio)
    except av.error.FFmpegError as exc:
        raise InvalidVideo(f"The audio source '{_name(path)}' cannot be read.") from exc


def write_video(frames: Iterable[np.ndarray], out_path: PathLike, fps: Union[float, Fraction],
                audio_source: Optional[PathLike] = None, audio_start: float = 0.0,
                audio_duration: Optional[float] = None, crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET) -> WrittenVideo:
    """Encode RGB uint8 [H, W, 3] frames (any iterable, consumed once) into an MP4; see VideoWriter."""
    iterator = iter(frames)
    try:
        first = np.asarray(next(iterator))
    except StopIteration:
        raise ValueError("no frames were given, so there is no video to encode") from None
    if first.ndim != 3 or first.shape[2] != 3:
        raise ValueError(f"expected frames of shape [H, W, 3], got {first.shape}")
    with VideoWriter(out_path, first.shape[1], first.shape[0], fps, audio_source=audio_source,
                     audio_start=audio_start, audio_duration=audio_duration, crf=crf, preset=preset) as writer:
        writer.write(first)
        for frame in iterator:
            writer.write(frame)
    return writer.result


def source_timeline(info: VideoInfo, start: int = 0, stop: Optional[int] = None) -> Optional[tuple[float, ...]]:
    """When frames [start, stop) of a variable-frame-rate video show, seconds from frame ``start``, and where
    the last of them ends: the ``frame_times`` that keep a VideoWriter's frames in sync with the sound.

    None for a constant-rate video, whose frames a writer places at its constant rate.
    """
    if not info.is_variable_frame_rate:
        return None
    times = info.frame_times
    stop = len(times) if stop is None else stop
    if stop < len(times):
        end = times[stop]
    elif info.duration > times[stop - 1]:
        end = info.duration
    else:  # the duration comes from a rounded average rate: the last frame lasts as long as the one before
        end = 2 * times[stop - 1] - times[stop - 2]
    return tuple(t - times[start] for t in times[start:stop]) + (end - times[start],)


def audio_offset(info: VideoInfo, start: int) -> float:
    """Where, in the source's audio, frame ``start`` is heard (seconds from the file's start)."""
    if info.num_frames == 0 or start <= 0:
        return info.start_time
    return info.start_time + info.frame_times[min(start, info.num_frames - 1)]
