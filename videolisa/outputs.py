"""The files of a result, shared by the command line and batch runs: overlay video, mask exports, run card."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Optional, Sequence

from .export import RUN_CARD_NAME, export_all
from .render import OverlayStyle, render_video
from .video import probe


def write_outputs(segmentations: Sequence, video: Path, out_dir: Path, style: Optional[OverlayStyle] = None,
                  keep_audio: bool = True, overlay: bool = True) -> dict[str, Path]:
    """Write one run (one or several targets of one video) into ``out_dir``; returns the paths by kind.

    ``masks/{frame:05d}.png`` holds the same PNGs as the zip, so ``python -m videolisa score`` reads a
    batch's output directly. Frame numbers are those of the file (a trimmed run starts at its offset).
    """
    if not isinstance(segmentations, (list, tuple)):
        segmentations = [segmentations]
    first = segmentations[0]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = probe(video)
    masks = [s.masks for s in segmentations]
    card = {"input": info.describe(), "targets": [s.card() for s in segmentations]}
    paths: dict[str, Path] = {}
    if overlay:
        paths["overlay"] = render_video(video, masks, out_dir / "overlay.mp4", style or OverlayStyle(),
                                        keep_audio=keep_audio, start=first.frame_offset,
                                        stop=first.frame_offset + first.num_frames)
    exports = export_all(masks, out_dir, card, fps=info.frame_rate, first_frame=first.frame_offset)
    png_dir = out_dir / "masks"
    png_dir.mkdir(exist_ok=True)
    with zipfile.ZipFile(exports["png_zip"]) as archive:
        archive.extractall(png_dir, members=[n for n in archive.namelist() if n != RUN_CARD_NAME])
    paths.update(exports)
    paths["png_dir"] = png_dir
    return paths
