"""Throughput and memory of the video layer, next to a bare ffmpeg transcode of the same clip.

    python -m videolisa.bench_video --frames 300 --height 480
    python -m videolisa.bench_video --frames 300 --height 1080
    python -m videolisa.bench_video --rss --height 480          # peak RSS, 300 vs 3000 frames

The clip is made here (ffmpeg's testsrc2 picture and a sine tone, H.264 + AAC at 30 fps). "Ours" is
``render_video``: decode -> draw two moving objects -> H.264 + the original audio, with the probe
already cached (the app probes every upload once, before the model runs); the probe's own cost is
listed apart. "Bare" is ffmpeg alone re-encoding the same clip with the same x264 settings and AAC:
the practical limit of any decode + encode. Runs alternate between the two so that load from other
processes hits both alike; the table gives medians.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from . import render, video
from .masks import PackedMasks


def make_clip(path: Path, frames: int, height: int, fps: int = 30) -> Path:
    width = 2 * round(height * 16 / 9 / 2)
    subprocess.run(
        [video.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-frames:v", str(frames), "-t", f"{frames / fps:.6f}",
         "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path)],
        check=True,
    )
    return path


class DiscMasks:
    """A moving disc per frame, drawn on demand: masks that cost no memory, to isolate the video layer's own."""

    def __init__(self, frames: int, height: int, width: int, phase: float = 0.0, radius_share: float = 0.2):
        self.frames, self.height, self.width, self.phase = frames, height, width, phase
        self.radius = max(2, int(min(height, width) * radius_share))

    def __len__(self) -> int:
        return self.frames

    def __getitem__(self, index: int) -> np.ndarray:
        mask = np.zeros((self.height, self.width), np.uint8)
        cx = int((self.width - 1) * ((index / max(1, self.frames - 1) + self.phase) % 1.0))
        cv2.circle(mask, (cx, self.height // 2), self.radius, 1, thickness=-1)
        return mask.view(bool)  # [H, W]


def objects_for(info: video.VideoInfo, packed: bool) -> list:
    lazy = [DiscMasks(info.num_frames, info.height, info.width),
            DiscMasks(info.num_frames, info.height, info.width, phase=0.5, radius_share=0.12)]
    if not packed:
        return lazy
    return [PackedMasks(info.height, info.width, (m[i] for i in range(len(m)))) for m in lazy]


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _timed(run) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), _cpu_seconds()
    run()
    return time.perf_counter() - wall, _cpu_seconds() - cpu


def bare_transcode(clip: Path, out: Path) -> None:
    subprocess.run(
        [video.ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(clip),
         "-c:v", "libx264", "-preset", video.DEFAULT_PRESET, "-crf", str(video.DEFAULT_CRF), "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "160k", "-movflags", "+faststart", str(out)],
        check=True,
    )


def throughput(frames: int, height: int, repeats: int, work: Path) -> None:
    clip = make_clip(work / f"clip_{height}p_{frames}.mp4", frames, height)
    info = video.probe(clip)
    packed, lazy = objects_for(info, packed=True), objects_for(info, packed=False)
    style = render.OverlayStyle()
    rows: dict[str, list[tuple[float, float]]] = {"bare": [], "ours": [], "ours_lazy": [], "probe": [], "decode": []}
    for _ in range(repeats):
        rows["bare"].append(_timed(lambda: bare_transcode(clip, work / "bare.mp4")))
        rows["ours"].append(_timed(lambda: render.render_video(clip, packed, work / "ours.mp4", style)))
        rows["ours_lazy"].append(_timed(lambda: render.render_video(clip, lazy, work / "ours.mp4", style)))
        video._probe_cached.cache_clear()
        rows["probe"].append(_timed(lambda: video.probe(clip)))
        rows["decode"].append(_timed(lambda: sum(1 for _ in video.iter_frames(clip))))
    median = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in rows.items()}
    ratio = statistics.median(o[0] / b[0] for o, b in zip(rows["ours"], rows["bare"]))
    with_probe = statistics.median((o[0] + p[0]) / b[0] for o, p, b in zip(rows["ours"], rows["probe"], rows["bare"]))
    print(f"clip: {info.describe()}; {os.cpu_count()} CPUs; x264 preset {video.DEFAULT_PRESET}, crf {video.DEFAULT_CRF}; "
          f"median of {repeats} alternating runs")
    print("| step | wall s | frames/s | CPU s |")
    print("| --- | --- | --- | --- |")
    names = {"bare": "bare ffmpeg transcode (decode + x264 + AAC)",
             "ours": "render_video (decode + draw 2 objects + x264 + AAC), masks as PackedMasks",
             "ours_lazy": "render_video, masks drawn on demand (no unpacking)",
             "probe": "probe (decode once, uncached)",
             "decode": "iter_frames to RGB (decode only)"}
    for key, label in names.items():
        wall, cpu = median[key]
        print(f"| {label} | {wall:.2f} | {frames / wall:.0f} | {cpu:.2f} |")
    print(f"render_video / bare: {ratio:.2f}x (with the probe: {with_probe:.2f}x)")


def rss_child(clip: Path, packed: bool, out: Path) -> None:
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # after imports
    info = video.probe(clip)
    objects = objects_for(info, packed)
    render.render_video(clip, objects, out, render.OverlayStyle())
    print(f"{baseline:.0f} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


def peak_rss(height: int, work: Path, lengths=(300, 3000)) -> None:
    # The encoder is a separate ffmpeg process: its memory (x264's look-ahead) does not depend on length.
    print(f"peak RSS of the Python process running probe + render_video at {height}p, in MB")
    print("| frames | masks drawn on demand | masks held as PackedMasks (2 objects) |")
    print("| --- | --- | --- |")
    results, baselines = {}, []
    for frames in lengths:
        clip = make_clip(work / f"rss_{height}p_{frames}.mp4", frames, height)
        cells = []
        for packed in (False, True):
            proc = subprocess.run(
                [sys.executable, "-m", "videolisa.bench_video", "--rss-child", str(clip),
                 "--packed" if packed else "--lazy", "--work", str(work)],
                check=True, capture_output=True, text=True,
            )
            baseline, peak = (float(v) for v in proc.stdout.split())
            results[(frames, packed)] = peak
            baselines.append(baseline)
            cells.append(f"{peak:.0f}")
        print(f"| {frames} | {cells[0]} | {cells[1]} |")
    first, last = lengths
    print(f"after imports alone: {statistics.median(baselines):.0f} MB")
    for packed, label in ((False, "drawn on demand"), (True, "held as PackedMasks")):
        print(f"growth {first} -> {last} frames, masks {label}: {results[(last, packed)] - results[(first, packed)]:.0f} MB")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rss", action="store_true", help="measure peak RSS for 300 and 3000 frames instead")
    parser.add_argument("--rss-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--packed", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--lazy", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help="folder for the clips (default: a temporary one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        if args.rss_child:
            rss_child(args.rss_child, args.packed, work / f"rss_out_{os.getpid()}.mp4")
        elif args.rss:
            peak_rss(args.height, work)
        else:
            throughput(args.frames, args.height, args.repeats, work)


if __name__ == "__main__":
    main()
