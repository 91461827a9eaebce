"""Test media made on the fly with the ffmpeg that ships in the imageio-ffmpeg wheel.

Nothing is downloaded: clips come from ffmpeg's lavfi sources (``testsrc`` for pictures whose every
frame differs, ``sine`` for sound). Other test modules import these helpers.
"""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path
from fractions import Fraction
from typing import Optional, Sequence, Union

import imageio_ffmpeg
import numpy as np
from PIL import Image

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()

# Video codec, audio codec and pixel format per container, chosen as phones and editors write them.
_CODECS = {
    "mp4": ("libx264", "aac"),
    "mov": ("libx264", "aac"),
    "mkv": ("libx264", "libopus"),
    "webm": ("libvpx-vp9", "libopus"),
    "avi": ("mpeg4", "pcm_s16le"),
    "gif": ("gif", None),
}


def ffmpeg(*args: str) -> None:
    """Run the bundled ffmpeg, failing loudly with its own message."""
    proc = subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {proc.stderr.strip()}")


def _vfr_fast_frames(frames: int) -> int:
    return max(1, frames // 2)


def vfr_times(frames: int, fps: float) -> list[float]:
    """Presentation times of ``make_clip(..., vfr=True)``: ``fps`` for the first half, fps/3 after."""
    fast = _vfr_fast_frames(frames)
    return [(i if i < fast else fast + (i - fast) * 3) / fps for i in range(frames)]


def vfr_duration(frames: int, fps: float) -> float:
    """Duration of the clip ``make_clip(..., vfr=True)`` writes: the last frame keeps testsrc's 1/fps."""
    return vfr_times(frames, fps)[-1] + 1.0 / fps


def make_clip(
    out_dir: Path,
    name: str,
    size: tuple[int, int] = (320, 240),
    frames: int = 8,
    fps: Union[float, str] = 24,
    audio: bool = True,
    container: str = "mp4",
    rotate: Optional[int] = None,
    vfr: bool = False,
    pattern: str = "testsrc",
    gop: Optional[int] = None,
) -> Path:
    """Write a test clip and return its path.

    ``size`` is the stored (width, height). ``rotate`` adds display-matrix metadata asking players
    to turn the picture by that many degrees clockwise (a phone held upright stores 90).
    ``vfr`` makes the second half of the clip run at a third of ``fps``. ``fps`` may be a ratio
    such as "30000/1001". ``gop`` puts a keyframe every that many frames (phones write one every second or
    two; ffmpeg's default is one every 250 frames).
    """
    out_dir = Path(out_dir)
    vcodec, acodec = _CODECS[container]
    path = out_dir / f"{name}.{container}"
    width, height = size
    rate = float(Fraction(fps))
    duration = vfr_duration(frames, rate) if vfr else frames / rate
    # A finite source (half a frame of slack) lets whole-stream filters such as palettegen finish.
    args = ["-f", "lavfi", "-i", f"{pattern}=size={width}x{height}:rate={fps}:duration={(frames + 0.5) / rate:.6f}"]
    has_audio = audio and acodec is not None
    if has_audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    vf = []
    if vfr:
        # testsrc counts time in 1/fps ticks, so whole-tick timestamps stay exact.
        fast = _vfr_fast_frames(frames)
        vf.append(f"setpts='if(lt(N,{fast}),N,{fast}+(N-{fast})*3)'")
    if container == "gif":
        vf.append("split[a][b];[a]palettegen[p];[b][p]paletteuse")
    if vf:
        args += ["-vf", ",".join(vf)]
    args += ["-frames:v", str(frames), "-c:v", vcodec]
    if gop is not None:
        args += ["-g", str(gop)]
    if vcodec == "libx264":
        # 4:2:0 needs even sizes; odd-sized clips come from tools that keep full chroma.
        args += ["-pix_fmt", "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p", "-preset", "ultrafast"]
    elif vcodec == "libvpx-vp9":
        args += ["-pix_fmt", "yuv420p", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "1M"]
    elif vcodec == "mpeg4":
        args += ["-q:v", "3"]
    if vfr:
        args += ["-fps_mode", "passthrough"]
    if has_audio:
        args += ["-c:a", acodec, "-t", f"{duration:.6f}"]
    if container == "gif":
        args += ["-loop", "0"]
    if rotate is None:
        ffmpeg(*args, str(path))
        return path
    tmp = out_dir / f"{name}.norot.{container}"
    ffmpeg(*args, str(tmp))
    # ffmpeg's -display_rotation counts counter-clockwise.
    ffmpeg("-display_rotation", str(-rotate), "-i", str(tmp), "-c", "copy", str(path))
    tmp.unlink()
    return path


def make_image(out_dir: Path, name: str, size: tuple[int, int] = (64, 48), fmt: str = "png",
               exif_orientation: Optional[int] = None) -> Path:
    """Write a still image with a gradient (so orientation is visible) and return its path."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    rgb = np.stack([xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1), np.full_like(xx, 80)], -1)
    image = Image.fromarray(rgb.astype(np.uint8))  # [H, W, 3]
    path = Path(out_dir) / f"{name}.{fmt}"
    kwargs = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif
    image.save(path, **kwargs)
    return path


def make_song(out_dir: Path, name: str, container: str = "mp3", duration: float = 1.0) -> Path:
    """A second of sound with cover art, as music files carry it: FFmpeg lists the picture as a video stream."""
    cover = make_image(out_dir, f"{name}_cover", size=(200, 150), fmt="jpg")
    path = Path(out_dir) / f"{name}.{container}"
    audio = {"mp3": "libmp3lame", "m4a": "aac"}[container]
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:duration={duration}", "-i", str(cover), "-map", "0:a", "-map", "1:v",
           "-c:a", audio, "-c:v", "copy", "-disposition:v:0", "attached_pic", str(path))
    return path


def truncated_copy(path: Path, out_dir: Path, fraction: float) -> Path:
    """Copy of ``path`` cut after ``fraction`` of its bytes, as an interrupted upload leaves it."""
    data = Path(path).read_bytes()
    out = Path(out_dir) / f"truncated_{Path(path).name}"
    out.write_bytes(data[: int(len(data) * fraction)])
    return out


def mp4_top_level_boxes(path: Path) -> list[str]:
    """Types of the top-level MP4/MOV boxes in file order (e.g. ['ftyp', 'moov', 'mdat'])."""
    boxes = []
    with open(path, "rb") as f:
        while header := f.read(8):
            if len(header) < 8:
                break
            size, kind = struct.unpack(">I4s", header)
            header_len = 8
            if size == 1:
                size = struct.unpack(">Q", f.read(8))[0]
                header_len = 16
            boxes.append(kind.decode("latin-1"))
            if size == 0:
                break
            f.seek(size - header_len, 1)
    return boxes


def ffmpeg_decode(path: Path, size: Sequence[int]) -> np.ndarray:
    """All frames as the ffmpeg command line shows them (autorotated), uint8 [T, H, W, 3]."""
    width, height = size
    proc = subprocess.run(
        [FFMPEG, "-loglevel", "error", "-i", str(path), "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, check=True,
    )
    return np.frombuffer(proc.stdout, np.uint8).reshape(-1, height, width, 3)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def moving_disc_masks(frames: int, height: int, width: int, radius: Optional[int] = None, phase: float = 0.0) -> np.ndarray:
    """A disc that moves across the frame, bool [T, H, W]: masks that differ on every frame."""
    radius = radius or max(2, min(height, width) // 5)
    yy, xx = np.mgrid[0:height, 0:width]
    out = np.zeros((frames, height, width), dtype=bool)
    for t in range(frames):
        cx = (width - 1) * ((t / max(1, frames - 1) + phase) % 1.0)
        cy = height / 2
        out[t] = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
    return out


def cached_clip(out_dir: Path, name: str, **kwargs) -> Path:
    """``make_clip`` once per directory: test modules sharing a directory share their clips."""
    container = kwargs.get("container", "mp4")
    path = Path(out_dir) / f"{name}.{container}"
    return path if path.exists() else make_clip(out_dir, name, **kwargs)


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of RGB frames, float64 [..., H, W]: compares pictures without 4:2:0 chroma loss."""
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def luma_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((luma(a) - luma(b)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def stream_summary(path: Path) -> dict:
    """Codec facts of a file as a player sees them, read with PyAV."""
    import av

    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        frames = sum(1 for _ in container.decode(video))
        return {
            "video_codec": video.codec_context.name,
            "pix_fmt": video.codec_context.pix_fmt,
            "width": video.codec_context.width,
            "height": video.codec_context.height,
            "frames": frames,
            "audio_codec": audio.codec_context.name if audio is not None else None,
            "audio_duration": float(audio.duration * audio.time_base) if audio is not None and audio.duration else None,
            "format": container.format.name,
        }


# The clips the video-layer tests run on: what phones, editors and the web produce.
CLIPS = {
    "mp4": {},
    "odd_size": {"size": (321, 241)},
    "portrait": {"rotate": 90},
    "vfr": {"vfr": True, "frames": 10},
    "no_audio": {"audio": False},
    "one_frame": {"frames": 1},
    "ntsc_rate": {"fps": "30000/1001"},
    "mov": {"container": "mov"},
    "webm": {"container": "webm"},
    "webm_odd": {"container": "webm", "size": (321, 241)},
    "mkv": {"container": "mkv"},
    "avi": {"container": "avi"},
    "gif": {"container": "gif"},
    "hd1080": {"size": (1920, 1080), "frames": 4, "fps": 30},
}


def clip_expectations(kind: str) -> dict:
    """What a correct probe reports for ``CLIPS[kind]``."""
    kwargs = CLIPS[kind]
    width, height = kwargs.get("size", (320, 240))
    if kwargs.get("rotate") in (90, 270):
        width, height = height, width
    frames = kwargs.get("frames", 8)
    fps = Fraction(kwargs.get("fps", 24))
    container = kwargs.get("container", "mp4")
    vfr = kwargs.get("vfr", False)
    return {
        "width": width,
        "height": height,
        "rotation": kwargs.get("rotate") or 0,
        "frames": frames,
        "fps": fps,
        "duration": vfr_duration(frames, float(fps)) if vfr else frames / float(fps),
        "vfr": vfr,
        "has_audio": kwargs.get("audio", True) and _CODECS[container][1] is not None,
        "container": container,
        "codec": {"libx264": "h264", "libvpx-vp9": "vp9", "mpeg4": "mpeg4", "gif": "gif"}[_CODECS[container][0]],
    }
