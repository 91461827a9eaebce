"""Scoring of DAVIS-style folders of PNG masks: J, F and J&F per sequence and on average.

Layout: ``PRED_DIR/<sequence>/<frame>.png`` and ``GT_DIR/<sequence>/<frame>.png``; a prediction
may also sit in ``PRED_DIR/<sequence>/masks/`` (what the batch command writes). Frames are matched
by file name. Every ground-truth frame counts, as in referring video object segmentation.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Iterable, Union

import numpy as np

from .errors import InvalidVideo, VideoLISAError, counted
from .masks import open_mask_image
from .metrics import BOUNDARY_TOLERANCE, ObjectScores, boundary_radius, frame_scores

PathLike = Union[str, Path]
FrameKey = Union[int, str]

SCORE_HELP = "J, F and J&F of predicted PNG masks against DAVIS-style ground truth"

SCORE_DESCRIPTION = """\
Score predicted masks against ground truth with the definitions of the DAVIS 2017 evaluation:
  J    region similarity, |P and G| / |P or G| (1 when both masks are empty);
  F    contour accuracy, the F-measure of boundary precision and recall, boundary pixels
       matching within ceil(0.008 x image diagonal) pixels;
  J&F  their mean.

Folders: GT_DIR holds one sub-folder of PNG masks per sequence, PRED_DIR the same names, with the
masks directly inside or in a masks/ sub-folder (the layout the batch command writes). Frames are
matched by file name; a ground-truth frame without a predicted one counts as an empty prediction,
and predicted frames without ground truth are ignored.

Masks may be binary (0/255 or 0/1, grayscale or RGB: any non-zero pixel is the object) or indexed
(palette PNGs, value = object id). When the ground truth of a sequence has several object ids,
each one is scored separately against the predicted pixels with the same id, and the sequence's
score is the mean over its objects.

Every frame counts (the semi-supervised benchmark's dropping of the first and last frames does not
apply); a sequence's score is the mean over its frames, and the overall mean is the mean over
sequences (not over objects, as the DAVIS semi-supervised tables do).
"""


def score_folders(
    pred_dir: PathLike,
    gt_dir: PathLike,
    *,
    strict: bool = False,
    tolerance: float = BOUNDARY_TOLERANCE,
) -> dict:
    """Score every ground-truth sequence that has a prediction.

    Returns ``{"sequences": {name: {"J", "F", "J&F", "objects", "frame_names", "missing_frames"}},
    "mean": {"J", "F", "J&F"}, "missing_sequences": [...], "unmatched_sequences": [...]}``.
    ``objects`` maps each object id to its J, F, J&F and per-frame values (``J_frames``,
    ``F_frames``, in the order of ``frame_names``). Ground-truth sequences without a prediction are
    listed in ``missing_sequences`` and left out of the mean, unless ``strict`` makes that an error.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for role, folder in (("prediction", pred_dir), ("ground-truth", gt_dir)):
        if not folder.is_dir():
            raise InvalidVideo(f"The {role} folder {folder} does not exist or is not a folder.")

    gt_sequences, pred_sequences = _pair_sequences(pred_dir, gt_dir)
    missing = sorted(name for name in gt_sequences if name not in pred_sequences)
    if strict and missing:
        raise InvalidVideo(
            f"No predicted masks for {counted(len(missing), 'ground-truth sequence')}: {', '.join(missing)} "
            f"(expected {pred_dir}/<sequence>/*.png or {pred_dir}/<sequence>/masks/*.png)."
        )
    scored = sorted(name for name in gt_sequences if name in pred_sequences)
    if not scored:
        raise InvalidVideo(
            f"No ground-truth sequence of {gt_dir} ({counted(len(gt_sequences), 'sequence')}) has predicted masks "
            f"in {pred_dir}: expected sub-folders with the same names holding PNG masks (directly or in masks/)."
        )

    sequences = {name: _score_sequence(name, pred_sequences[name], gt_sequences[name], tolerance) for name in scored}
    j = float(np.mean([seq["J"] for seq in sequences.values()]))
    f = float(np.mean([seq["F"] for seq in sequences.values()]))
    return {
        "sequences": sequences,
        "mean": {"J": j, "F": f, "J&F": (j + f) / 2},
        "missing_sequences": missing,
        "unmatched_sequences": sorted(name for name in pred_sequences if name not in gt_sequences),
    }


def format_table(result: dict) -> str:
    """The scores as a plain-text table, with notes on missing sequences and frames below it."""
    rows = [("sequence", "objects", "frames", "J", "F", "J&F")]
    for name, seq in result["sequences"].items():
        rows.append((name, str(len(seq["objects"])), str(len(seq["frame_names"])), *_values(seq)))
    count = len(result["sequences"])
    rows.append((f"mean ({counted(count, 'sequence')})", "", "", *_values(result["mean"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join([row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])])
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))

    if result.get("missing_sequences"):
        missing = result["missing_sequences"]
        lines.append(
            f"No prediction for {counted(len(missing), 'ground-truth sequence')}, left out of the mean: "
            f"{', '.join(missing)}"
        )
    for name, seq in result["sequences"].items():
        if seq["missing_frames"]:
            lines.append(
                f"{name}: no prediction for {len(seq['missing_frames'])} of "
                f"{counted(len(seq['frame_names']), 'frame')} (a missing prediction counts as an empty mask)"
            )
    if result.get("unmatched_sequences"):
        lines.append(f"Ignored prediction folders without ground truth: {', '.join(result['unmatched_sequences'])}")
    return "\n".join(lines)


def format_csv(result: dict) -> str:
    """The table as CSV: one row per sequence and a last row ``mean``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["sequence", "objects", "frames", "J", "F", "J&F"])
    for name, seq in result["sequences"].items():
        writer.writerow([name, len(seq["objects"]), len(seq["frame_names"]), *_values(seq, 6)])
    writer.writerow(["mean", "", "", *_values(result["mean"], 6)])
    return out.getvalue()


def add_score_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``score`` sub-command; its handler is ``run_score`` (also set as ``func``)."""
    parser = subparsers.add_parser(
        "score",
        help=SCORE_HELP,
        description=SCORE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pred_dir", metavar="PRED_DIR", type=Path, help="folder of predicted masks")
    parser.add_argument("gt_dir", metavar="GT_DIR", type=Path, help="folder of ground-truth masks")
    parser.add_argument(
        "--json", metavar="FILE", type=Path, help="also write the scores as JSON (with per-frame values)"
    )
    parser.add_argument("--csv", metavar="FILE", type=Path, help="also write the table as CSV")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="fail when a ground-truth sequence has no prediction, instead of scoring the others",
    )
    parser.set_defaults(func=run_score)
    return parser


def run_score(args: argparse.Namespace) -> int:
    """Run ``score``: print the table; 0 on success, 2 for unusable input, 1 if an output cannot be written."""
    try:
        result = score_folders(args.pred_dir, args.gt_dir, strict=args.strict)
    except VideoLISAError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(result))
    outputs = [(args.json, json.dumps(result, indent=2) + "\n"), (args.csv, format_csv(result))]
    for path, text in outputs:
        if path is None:
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as err:
            print(f"error: could not write {path}: {err.strerror or err}", file=sys.stderr)
            return 1
    return 0


# Modes whose pixel values are labels as they are (alpha, where present, is dropped).
_VALUE_MODES = ("1", "L", "LA", "P", "PA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


def read_labels(path: PathLike) -> tuple[np.ndarray, bool]:
    """A PNG mask as an integer label map [H, W], and whether its labels are packed RGB colours.

    Palette and grayscale images give their values (palette index = object id); colour images give
    one label per colour (0xRRGGBB), so that black is background and each colour an object.
    """
    image = open_mask_image(path, str(path))
    if image.mode not in _VALUE_MODES:
        rgb = np.asarray(image.convert("RGB"), dtype=np.uint32)  # [H, W, 3]
        return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2], True
    values = np.asarray(image)  # [H, W], or [H, W, 2] with alpha
    if values.ndim == 3:
        values = values[..., 0]
    if values.dtype == bool or values.dtype.kind == "f":
        values = (values != 0).astype(np.uint8)
    return values, False


def _pair_sequences(pred_dir: Path, gt_dir: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """Frame files of each sequence: ({name: {frame key: path}} of GT, the same of predictions)."""
    gt_frames = _frame_files(gt_dir, allow_masks_dir=False)
    if gt_frames:
        # GT_DIR is itself one sequence; PRED_DIR is then that sequence's prediction.
        pred_frames = _frame_files(pred_dir)
        return {gt_dir.name: gt_frames}, ({gt_dir.name: pred_frames} if pred_frames else {})

    gt_sequences = _sequence_folders(gt_dir, allow_masks_dir=False)
    if not gt_sequences:
        raise InvalidVideo(
            f"No ground-truth masks found in {gt_dir}: expected one sub-folder of PNG masks per sequence "
            f"({gt_dir}/<sequence>/<frame>.png)."
        )
    return gt_sequences, _sequence_folders(pred_dir)


def _sequence_folders(root: Path, allow_masks_dir: bool = True) -> dict[str, dict]:
    sequences = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        frames = _frame_files(folder, allow_masks_dir)
        if frames:
            sequences[folder.name] = frames
    return sequences


def _frame_files(folder: Path, allow_masks_dir: bool = True) -> dict[FrameKey, Path]:
    """{frame key: path} of the PNG files in ``folder`` (or in ``folder/masks`` if it has none)."""
    pngs = _pngs(folder)
    if not pngs and allow_masks_dir and (folder / "masks").is_dir():
        pngs = _pngs(folder / "masks")
    frames: dict[FrameKey, Path] = {}
    for path in pngs:
        key = _frame_key(path.stem)
        if key in frames:
            raise InvalidVideo(f"Two masks in {path.parent} are the same frame: {frames[key].name} and {path.name}.")
        frames[key] = path
    return frames


def _pngs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file())


def _frame_key(stem: str) -> FrameKey:
    # Numeric names match whatever their zero padding ("7.png" is frame "00007.png").
    return int(stem) if stem.isdigit() else stem


def _frame_order(key: FrameKey) -> tuple:
    return (0, key, "") if isinstance(key, int) else (1, 0, key)


def _label_ids(labels: np.ndarray) -> set[int]:
    """Non-zero values present in a label map."""
    if labels.dtype.itemsize <= 2 and labels.dtype.kind == "u":
        present = np.flatnonzero(np.bincount(labels.ravel()))  # counting beats sorting for small ints
    else:
        present = np.unique(labels)
    return {int(v) for v in present if v != 0}


def _score_sequence(name: str, pred_frames: dict, gt_frames: dict, tolerance: float) -> dict:
    keys = sorted(gt_frames, key=_frame_order)
    # A first pass finds the sequence's objects, so that each one is scored on every frame without
    # holding the whole sequence in memory.
    gt_ids: set[int] = set()
    colour = False
    for key in keys:
        labels, colour = read_labels(gt_frames[key])
        gt_ids |= _label_ids(labels)
    multi = len(gt_ids) > 1
    objects = sorted(gt_ids) if multi else [next(iter(gt_ids), None)]

    per_object: dict = {obj: ([], []) for obj in objects}
    for key in keys:
        gt_labels, _ = read_labels(gt_frames[key])
        radius = boundary_radius(*gt_labels.shape, tolerance)
        pred_labels = _read_prediction(pred_frames.get(key), gt_frames[key], gt_labels.shape)
        if multi:
            extra = _label_ids(pred_labels) - gt_ids
            if extra:
                raise InvalidVideo(
                    f"The prediction {pred_frames[key]} has mask values {_id_list(extra, colour)} that are not "
                    f"object ids of the ground truth of '{name}' ({_id_list(gt_ids, colour)}): with several "
                    "objects, predictions must be indexed PNGs that use the ground truth's ids."
                )
        for obj in objects:
            pred = pred_labels == obj if multi else pred_labels != 0
            gt = gt_labels == obj if multi else gt_labels != 0
            j, f = frame_scores(pred, gt, radius)
            per_object[obj][0].append(j)
            per_object[obj][1].append(f)

    scores = {obj: ObjectScores(tuple(js), tuple(fs)) for obj, (js, fs) in per_object.items()}
    j = float(np.mean([s.J for s in scores.values()]))
    f = float(np.mean([s.F for s in scores.values()]))
    return {
        "J": j,
        "F": f,
        "J&F": (j + f) / 2,
        "objects": {
            _id_name(obj, colour): {"J": s.J, "F": s.F, "J&F": s.JF, "J_frames": list(s.j), "F_frames": list(s.f)}
            for obj, s in scores.items()
        },
        "frame_names": [gt_frames[key].stem for key in keys],
        "missing_frames": [gt_frames[key].stem for key in keys if key not in pred_frames],
    }


def _read_prediction(path: Path | None, gt_path: Path, shape: tuple[int, int]) -> np.ndarray:
    if path is None:
        return np.zeros(shape, dtype=np.uint8)  # a frame without prediction is an empty mask
    labels, _ = read_labels(path)
    if labels.shape != shape:
        raise InvalidVideo(
            f"The prediction {path} is {labels.shape[1]}x{labels.shape[0]} pixels but its ground truth "
            f"{gt_path} is {shape[1]}x{shape[0]}: masks must have the ground truth's size."
        )
    return labels


def _id_name(obj: int | None, colour: bool) -> str:
    if obj is None:
        return "foreground"  # the ground truth is empty on every frame
    return f"#{obj:06x}" if colour else str(obj)


def _id_list(ids: Iterable[int], colour: bool) -> str:
    return ", ".join(_id_name(i, colour) for i in sorted(ids))


def _values(scores: dict, digits: int = 3) -> tuple[str, str, str]:
    return tuple(f"{scores[k]:.{digits}f}" for k in ("J", "F", "J&F"))
