"""The files of a result, shared by the command line and batch runs: overlay video, mask exports, run card."""

from __future__ import annotations

import re
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

from .errors import InvalidOutput
from .export import RUN_CARD_NAME, export_all, export_names, write_run_card
from .render import OverlayStyle, render_video
from .video import probe, source_timeline

OVERLAY_NAME = "overlay.mp4"
PNG_DIR_NAME = "masks"
_MASK_PNG = re.compile(r"\d{5,}\.png")  # the names write_outputs gives the PNGs in masks/


def run_card(segmentations: Sequence, info) -> dict:
    """The run card of one run: its input, and one entry per target."""
    return {"input": info.describe(), "targets": [s.card() for s in segmentations]}


def export_run(segmentations: Sequence, info, out_dir: Path, stem: str = "masks",
               card_file: bool = True) -> dict[str, Path]:
    """Every export of one run: the targets as one indexed mask, and a run card with one entry per target.

    The mask video keeps the frames' own times of a variable-frame-rate source, as the overlay does.
    """
    first = segmentations[0]
    timeline = source_timeline(info, first.frame_offset, first.frame_offset + first.num_frames)
    return export_all([s.masks for s in segmentations], out_dir, run_card(segmentations, info), fps=info.frame_rate,
                      first_frame=first.frame_offset, stem=stem, card_file=card_file, frame_times=timeline)


def check_out_dir(video, out_dir: Path, stem: str = "masks") -> None:
    """Refuse an output folder that is a file or holds a file where the mask PNGs' folder goes, or whose outputs
    would overwrite the input video."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidOutput(f"{out_dir} is a file, not a folder: choose a folder for the outputs.")
    png_dir = out_dir / PNG_DIR_NAME
    if (png_dir.exists() or png_dir.is_symlink()) and not png_dir.is_dir():
        raise InvalidOutput(f"{png_dir} is a file, not a folder, and the mask PNGs go in a folder there: move the "
                            "file or choose another output folder.")
    source = Path(video).resolve()
    folder = out_dir.resolve()
    written = {folder / name for name in (OVERLAY_NAME, *export_names(stem).values())}
    if source in written or folder / PNG_DIR_NAME in source.parents:
        raise InvalidOutput(
            f"The outputs in {out_dir} would overwrite the input '{source.name}': choose another output folder "
            "or move the video out of it."
        )


def _clear_earlier_run(out_dir: Path) -> None:
    """Remove the files an earlier run wrote into ``out_dir`` (a longer video leaves frames past this one's end,
    a run without overlay an overlay of other masks), and nothing else of the folder."""
    # The run card first: while it is there, it vouches for every other file.
    owned = [out_dir / name for name in dict.fromkeys((RUN_CARD_NAME, OVERLAY_NAME, *export_names().values()))]
    png_dir = out_dir / PNG_DIR_NAME
    if png_dir.is_dir():
        owned += [path for path in png_dir.iterdir() if _MASK_PNG.fullmatch(path.name) and not path.is_dir()]
    try:
        for path in owned:
            path.unlink(missing_ok=True)
    except OSError as exc:
        raise InvalidOutput(f"The earlier outputs in {out_dir} cannot be replaced ({exc.strerror}): choose "
                            "another output folder.") from None


def write_outputs(segmentations: Sequence, video: Path, out_dir: Path, style: Optional[OverlayStyle] = None,
                  keep_audio: bool = True, overlay: bool = True) -> dict[str, Path]:
    """Write one run (one or several targets of one video) into ``out_dir``; returns the paths by kind.

    ``masks/{frame:05d}.png`` holds the same PNGs as the zip, so ``python -m videolisa score`` reads a
    batch's output directly. Frame numbers are those of the file (a trimmed run starts at its offset).
    What an earlier run wrote there is removed first (other files stay), its ``run.json`` before the rest, and
    ``run.json`` is written last, so a folder with one holds a complete run.
    """
    if not isinstance(segmentations, (list, tuple)):
        segmentations = [segmentations]
    first = segmentations[0]
    out_dir = Path(out_dir)
    check_out_dir(video, out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidOutput(f"The output folder {out_dir} cannot be created ({exc.strerror}): choose another.") from None
    _clear_earlier_run(out_dir)
    info = probe(video, max_frames=first.frame_offset + first.num_frames)  # the frames of the result, no more
    paths: dict[str, Path] = {}
    # The exports are written while the overlay is drawn and encoded: both are mostly C code and ffmpeg
    # processes, which overlap on a machine's cores.
    with ThreadPoolExecutor(1) as pool:
        exporting = pool.submit(export_run, segmentations, info, out_dir, card_file=False)
        if overlay:
            paths["overlay"] = render_video(video, [s.masks for s in segmentations], out_dir / OVERLAY_NAME,
                                            style or OverlayStyle(), keep_audio=keep_audio,
                                            start=first.frame_offset, stop=first.frame_offset + first.num_frames)
        exports = exporting.result()
    png_dir = out_dir / PNG_DIR_NAME
    png_dir.mkdir(exist_ok=True)
    with zipfile.ZipFile(exports["png_zip"]) as archive:
        archive.extractall(png_dir, members=[n for n in archive.namelist() if n != RUN_CARD_NAME])
    paths.update(exports)
    paths["png_dir"] = png_dir
    paths["run_card"] = write_run_card(run_card(segmentations, info), out_dir / RUN_CARD_NAME)
    return paths
