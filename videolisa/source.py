"""Where the pipeline's frames come from: a video file or frames in memory, with the opt-in limits applied.

One definition of "frame i" for every stage: the i-th decoded frame, in display order, counted
from the start of the processed range.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import av
import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputTooLarge, InvalidVideo, amount, counted, over_limit
from .settings import Limits
from . import video as videoio
from .video import downscale

# Image formats whose header size we trust (the ones the reader takes, GIF included); for anything
# else Pillow may guess a format from weak magic bytes, so the container's header is asked instead.
_HEADER_IMAGE_FORMATS = {"PNG", "JPEG", "MPO", "WEBP", "BMP", "TIFF", "GIF"}


@dataclass
class FrameSource:
    """Frames [0, num_frames) of a video, read as often as a stage needs them (nothing held in memory)."""

    num_frames: int
    height: int
    width: int
    fps: float
    max_side: Optional[int]
    key: str  # content hash + range + read size: what a cached result of this source depends on
    path: Optional[Path] = None
    start: int = 0  # first frame of the processed range in the file
    info: Any = None  # videolisa.video.VideoInfo for files
    _frames: Optional[np.ndarray] = None

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """(index of the first frame, frames [B, h, w, 3]) at the inference size."""
        if self._frames is not None:
            for i in range(0, self.num_frames, size):
                yield i, np.stack([downscale(f, self.max_side) for f in self._frames[i:i + size]])
            return
        index = 0
        for chunk in videoio.iter_chunks(self.path, size, start=self.start, stop=self.start + self.num_frames,
                                         max_side=self.max_side):
            yield index, chunk
            index += len(chunk)

    def read(self, indices: Sequence[int]) -> dict[int, np.ndarray]:
        """The given frames at the inference size, in one pass."""
        wanted = sorted(set(int(i) for i in indices))
        if self._frames is not None:
            return {i: downscale(self._frames[i], self.max_side) for i in wanted}
        got = videoio.read_frames(self.path, [self.start + i for i in wanted], max_side=self.max_side)
        return {i - self.start: frame for i, frame in got.items()}

    @contextlib.contextmanager
    def frame_ranges(self) -> Iterator[Callable[[int, int], np.ndarray]]:
        """``get(start, stop)``: frames [start, stop) at full size, [n, H, W, 3], for a stage that asks for many
        ranges. For a file one decoder stays open until the block ends: each range decodes on from the previous
        one, or from the keyframe before it (``video.VideoReader``), rather than from frame 0 again."""
        if self._frames is not None:
            yield lambda start, stop: np.asarray(self._frames[start:stop])
            return
        with videoio.VideoReader(self.path) as reader:
            yield lambda start, stop: reader.read(self.start + start, self.start + stop)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:32]


def _frames_digest(frames: np.ndarray) -> str:
    """A content hash of frames in memory, their shape included (black frames in landscape and in portrait have
    the same bytes). Frames are hashed side by side, one at a time (hashlib releases the GIL; a view that is not
    contiguous is copied a frame at a time, not whole)."""
    from concurrent.futures import ThreadPoolExecutor

    digest = hashlib.sha256(repr(frames.shape).encode())
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for frame_digest in pool.map(lambda frame: hashlib.sha256(np.ascontiguousarray(frame).data).digest(), frames):
            digest.update(frame_digest)
    return digest.hexdigest()[:32]


def _header_size(path: Path) -> Optional[tuple[int, int]]:
    """(width, height) as the file's header states it, without decoding a picture; None when it cannot tell."""
    try:
        with Image.open(path) as image:
            if image.format in _HEADER_IMAGE_FORMATS:
                return image.size
    except Image.DecompressionBombError:
        from .video import image_too_large

        raise image_too_large(path) from None
    except (UnidentifiedImageError, OSError):
        pass
    try:
        with av.open(str(path), mode="r", metadata_errors="ignore") as container:
            stream = videoio.video_stream(container)
            if stream is not None:
                codec = stream.codec_context
                if codec.width and codec.height:
                    return codec.width, codec.height
    except (av.error.FFmpegError, UnicodeDecodeError):
        pass  # not a readable video: the decoder says so in its own words
    return None


def check_file(video, limits: Limits) -> Path:
    """Refuse a file over the upload-size or picture-size limit from its size and header alone, before decoding."""
    path = Path(video)
    if not path.is_file():
        raise InvalidVideo(f"No video file at {path}: check the path.")
    size_mb = path.stat().st_size / 2**20  # MB as Gradio counts them, so its upload limit and ours agree
    if limits.max_upload_mb and size_mb > limits.max_upload_mb:
        size, limit = over_limit(size_mb, limits.max_upload_mb, decimals=0)
        raise InputTooLarge(
            f"The file is {size} MB, more than the limit of {limit} MB: trim or compress the video and try again."
        )
    if limits.max_pixels:
        size = _header_size(path)
        if size is not None and size[0] * size[1] > limits.max_pixels:
            width, height = size
            pixels, limit = over_limit(width * height / 1e6, limits.max_pixels / 1e6)
            raise InputTooLarge(
                f"'{path.name}' is {width}x{height} ({pixels} megapixels per frame), more than the limit of {limit} "
                "megapixels: downscale it (1920x1080 is 2.1 megapixels) and try again."
            )
    return path


def probe_within(path, limits: Limits):
    """``video.probe`` that decodes only as far as ``limits`` will process: a long upload is not decoded to
    its end to be trimmed (``complete`` is False on the result when the video goes on)."""
    # Zero means no limit, as in frames_to_process.
    return videoio.probe(path, max_frames=limits.max_frames or None, max_seconds=limits.max_duration_s or None)


def frames_to_process(info, limits: Limits) -> int:
    """How many leading frames of a probed video (``video.VideoInfo``) the duration and frame limits keep."""
    stop = info.num_frames
    if limits.max_duration_s and info.duration > limits.max_duration_s:
        stop = max(1, videoio.frames_within(info, limits.max_duration_s))
    if limits.max_frames and stop > limits.max_frames:
        stop = limits.max_frames
    return stop


def _length(info) -> str:
    """'12.3 s ' for a fully probed video; for one probed only as far as the limits, what its header says."""
    if info.complete:
        return f"{info.duration:.1f} s "
    return f"{info.claimed_duration:.1f} s " if info.claimed_duration else ""


def open_source(video, limits: Limits) -> tuple[FrameSource, list[str]]:
    """A FrameSource for a path or an array of RGB uint8 frames [T, H, W, 3], and notices about applied limits."""
    notices: list[str] = []
    if isinstance(video, (str, os.PathLike)):
        if not os.fspath(video).strip():
            raise InvalidVideo("No video was given: pass the path of a video or image file.")
        path = check_file(video, limits)
        info = probe_within(path, limits)
        stop = frames_to_process(info, limits)
        if stop < info.num_frames or not info.complete:
            shown = stop / info.fps if info.fps else 0
            notices.append(
                f"Only the first {amount(shown)} s (frames 0-{stop - 1}) of the {_length(info)}video were "
                f"processed: the limit is {limits.length()}."
            )
        height, width, fps = info.height, info.width, info.fps
        key_parts = [_file_digest(path)]
        source = FrameSource(num_frames=stop, height=height, width=width, fps=fps, max_side=limits.max_inference_side,
                             key="", path=path, info=info)
    else:
        frames = _as_frames(video)
        if limits.max_frames and len(frames) > limits.max_frames:
            notices.append(f"Only the first {counted(limits.max_frames, 'frame')} of {len(frames)} "
                           f"{'was' if limits.max_frames == 1 else 'were'} processed.")
            frames = frames[: limits.max_frames]
        height, width = frames.shape[1:3]
        if limits.max_pixels and height * width > limits.max_pixels:
            pixels, limit = over_limit(width * height / 1e6, limits.max_pixels / 1e6)
            raise InputTooLarge(
                f"The frames are {width}x{height} ({pixels} megapixels), more than the limit of {limit} megapixels: "
                "downscale them and try again."
            )
        key_parts = [_frames_digest(frames)]
        source = FrameSource(num_frames=len(frames), height=height, width=width, fps=0.0,
                             max_side=limits.max_inference_side, key="", _frames=frames)
    if source.max_side and min(height, width) > source.max_side:
        notices.append(
            f"Frames were read at {source.max_side}p for the model; the masks are returned at the full "
            f"{width}x{height}."
        )
    source.key = ":".join(key_parts + [str(source.num_frames), str(source.max_side)])
    return source, notices


def _as_frames(video) -> np.ndarray:
    if not isinstance(video, (np.ndarray, list, tuple)) and not hasattr(video, "__array__"):  # e.g. a torch tensor
        raise InvalidVideo(
            f"Expected the path of a video or image file, or its frames as an RGB uint8 array [T, H, W, 3]; "
            f"got {type(video).__name__}."
        )
    try:
        frames = np.asarray(video) if not isinstance(video, np.ndarray) else video
    except ValueError as exc:  # ragged sequences
        raise InvalidVideo("All frames must have the same size.") from exc
    if frames.ndim == 3 and frames.shape[-1] == 3:
        frames = frames[None]  # a single image
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InvalidVideo(
            f"Frames must be RGB images shaped [T, H, W, 3]; got an array of shape {tuple(frames.shape)}."
        )
    if len(frames) == 0:
        raise InvalidVideo("The video has no frames.")
    if 0 in frames.shape[1:3]:
        raise InvalidVideo(f"The frames are {frames.shape[2]}x{frames.shape[1]} pixels: they have no picture.")
    if frames.dtype != np.uint8:
        raise InvalidVideo(f"Frames must be uint8 RGB (0-255); got {frames.dtype}.")
    return frames
