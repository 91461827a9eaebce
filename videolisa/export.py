"""Exports of a segmentation result, and readers that load them back.

Every export is written frame by frame, so memory stays flat for long videos. Masks are given as
one ``PackedMasks`` per object, all of the same [T, H, W]; mask j belongs to frame
``first_frame + j`` of the video.

- PNG zip: ``{frame:05d}.png`` per frame; 0/255 grey for one object, an indexed PNG with the
  DAVIS palette (0 = background, k = object k) for several. Where objects overlap, the later
  object's index wins, as it is drawn on top in the overlay.
- ``.npz``: ``masks`` uint8 [K, T, H, ceil(W/8)], the masks' rows bit-packed with ``np.packbits``
  (unpack with ``np.unpackbits(d["masks"], axis=-1, count=W).astype(bool)``), ``shape`` [K, T, H, W]
  and ``frame_indices`` [T]. Overlaps are kept.
- COCO RLE JSON: per object, one COCO run-length encoding per frame (pycocotools), in the layout
  of YouTube-VIS results. Overlaps are kept.
- Mask video: H.264 MP4, white on black for one object, DAVIS colours for several.
- ``run.json``: how the result was made (prompt, settings, frame indices, model, versions, timings).
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import io
import json
import os
import platform
import re
import zipfile
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
from PIL import Image
from pycocotools import mask as coco_mask

from .errors import InvalidVideo
from .masks import PackedMasks, open_mask_image
from .video import BT709_TAGS, PathLike, VideoWriter, Yuv420Frame

_PNG_NAME = re.compile(r"^(\d{5,})\.png$")
RUN_CARD_NAME = "run.json"
_VERSIONED_PACKAGES = ("videolisa", "torch", "transformers", "segment-anything", "numpy", "av", "imageio-ffmpeg",
                       "opencv-python-headless", "pillow", "pycocotools", "gradio")


def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC colour map: uint8 [256, 3], index 0 black, 1 dark red, 2 green, ..."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        value, color = index, [0, 0, 0]
        for shift in range(7, -1, -1):
            for channel in range(3):
                color[channel] |= ((value >> channel) & 1) << shift
            value >>= 3
        palette[index] = color
    return palette


DAVIS_PALETTE = davis_palette()


def _shape(masks_per_object: Sequence[PackedMasks]) -> tuple[int, int, int, int]:
    """(K, T, H, W) after checking that every object's masks agree."""
    if not masks_per_object:
        raise ValueError("there are no objects to export")
    first = masks_per_object[0]
    shape = (len(first), first.height, first.width)
    for k, masks in enumerate(masks_per_object):
        if (len(masks), masks.height, masks.width) != shape:
            raise ValueError(f"object {k} has masks of shape {(len(masks), masks.height, masks.width)}, "
                             f"object 0 has {shape}")
    if shape[0] == 0:
        raise ValueError("the masks have no frames to export")
    if len(masks_per_object) > 255:
        raise ValueError(f"at most 255 objects fit an indexed PNG, got {len(masks_per_object)}")
    return (len(masks_per_object), *shape)


def label_map(masks: Sequence[np.ndarray]) -> np.ndarray:
    """One frame's object indices, uint8 [H, W]: 0 for background, k + 1 for object k (later wins)."""
    labels = np.zeros(np.asarray(masks[0]).shape, dtype=np.uint8)
    for k, mask in enumerate(masks):
        labels[np.asarray(mask, dtype=bool)] = k + 1
    return labels


def _frame_masks(masks_per_object: Sequence[PackedMasks]) -> Iterator[list[np.ndarray]]:
    for t in range(len(masks_per_object[0])):
        yield [masks[t] for masks in masks_per_object]


# ------------------------------------------------------------------------------------------- PNG zip


def _png_bytes(masks: list[np.ndarray]) -> bytes:
    if len(masks) == 1:
        image = Image.fromarray(masks[0].view(np.uint8) * np.uint8(255))  # greyscale "L"
    else:
        image = Image.fromarray(label_map(masks))
        image.putpalette(DAVIS_PALETTE.tobytes())  # turns it into an indexed ("P") image
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # masks compress well even at the fastest level
    return buffer.getvalue()


def export_png_zip(masks_per_object: Sequence[PackedMasks], path: PathLike, first_frame: int = 0,
                   card: Optional[dict] = None) -> Path:
    """A ZIP of ``{frame:05d}.png`` masks (see the module notes), with ``run.json`` inside when ``card`` is given."""
    _shape(masks_per_object)
    path = Path(path)
    # PNGs are compressed already: storing them saves time and nothing else.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for t, masks in enumerate(_frame_masks(masks_per_object)):
            archive.writestr(f"{first_frame + t:05d}.png", _png_bytes(masks))
        if card is not None:
            archive.writestr(RUN_CARD_NAME, _card_json(card), compress_type=zipfile.ZIP_DEFLATED)
    return path


def read_png_zip(path: PathLike, num_objects: Optional[int] = None) -> list[PackedMasks]:
    """Masks from ``export_png_zip``: one object for grey PNGs; for indexed ones ``num_objects``
    (default: the highest index seen). A file that is not such a zip, or a mask in it that is not a whole grey or
    indexed PNG the size of the others, raises InvalidVideo naming it."""
    objects: list[PackedMasks] = []
    first = None  # (name, size) of the first mask: every mask must have its size
    label = Path(path).name
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as err:
        raise InvalidVideo(f"'{label}' is not a readable ZIP of masks ({err}).") from None
    with archive:
        names = sorted((int(m.group(1)), name) for name in archive.namelist() if (m := _PNG_NAME.match(name)))
        if not names:
            raise InvalidVideo(f"'{label}' holds no masks named like 00000.png.")
        for t, (_, name) in enumerate(names):
            try:
                data = archive.read(name)
            except (OSError, zipfile.BadZipFile) as err:  # a damaged member fails its checksum
                raise InvalidVideo(f"The mask {name} in '{label}' cannot be read ({err}).") from None
            image = open_mask_image(io.BytesIO(data), f"{name} in '{label}'")
            if image.mode not in ("L", "P"):
                raise InvalidVideo(f"The mask {name} in '{label}' is not a grey or indexed PNG ({image.mode}), as "
                                   "export_png_zip writes them.")
            grey, pixels = image.mode == "L", np.asarray(image)
            height, width = size = pixels.shape  # [H, W]
            first = first or (name, size)
            if size != first[1]:
                raise InvalidVideo(f"The mask {name} in '{label}' is {width}x{height} pixels, not the "
                                   f"{first[1][1]}x{first[1][0]} of {first[0]}.")
            if grey:
                found = [pixels > 127]
            else:
                count = max(int(pixels.max()), len(objects), num_objects or 0)
                found = [pixels == k + 1 for k in range(count)]
            while len(objects) < len(found):  # an object first seen now was empty before
                objects.append(PackedMasks(height, width, [np.zeros((height, width), bool)] * t))
            for masks, mask in zip(objects, found):
                masks.append(mask)
    return objects


# ---------------------------------------------------------------------------------------------- npz


def _write_npy(archive: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    with archive.open(name, "w", force_zip64=True) as member:
        np.lib.format.write_array(member, np.ascontiguousarray(array))


def export_npz(masks_per_object: Sequence[PackedMasks], path: PathLike, first_frame: int = 0) -> Path:
    """A compressed ``.npz`` of the bit-packed masks (see the module notes for its keys)."""
    num_objects, num_frames, height, width = _shape(masks_per_object)
    packed_width = (width + 7) // 8
    path = Path(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        # The big array is streamed one frame at a time into the zip member: np.savez would need
        # it whole in memory.
        with archive.open("masks.npy", "w", force_zip64=True) as member:
            header = {"descr": "|u1", "fortran_order": False, "shape": (num_objects, num_frames, height, packed_width)}
            np.lib.format.write_array_header_1_0(member, header)
            for masks in masks_per_object:
                for t in range(num_frames):
                    member.write(np.packbits(masks[t], axis=-1).tobytes())  # [H, ceil(W/8)]
        _write_npy(archive, "shape.npy", np.array([num_objects, num_frames, height, width], dtype=np.int64))
        _write_npy(archive, "frame_indices.npy", np.arange(first_frame, first_frame + num_frames, dtype=np.int64))
    return path


def read_npz(path: PathLike) -> list[PackedMasks]:
    with np.load(path) as data:
        packed, (num_objects, num_frames, height, width) = data["masks"], data["shape"]
        return [
            PackedMasks(int(height), int(width),
                        (np.unpackbits(packed[k, t], axis=-1, count=int(width)).astype(bool) for t in range(num_frames)))
            for k in range(num_objects)
        ]


# -------------------------------------------------------------------------------------------- RLE


def export_rle_json(masks_per_object: Sequence[PackedMasks], path: PathLike, first_frame: int = 0) -> Path:
    """COCO RLE of every mask, one list per object in the layout of YouTube-VIS results."""
    num_objects, num_frames, height, width = _shape(masks_per_object)
    objects = []
    for k, masks in enumerate(masks_per_object):
        segmentations = []
        for t in range(num_frames):
            rle = coco_mask.encode(np.asfortranarray(masks[t].view(np.uint8)))  # pycocotools needs column order
            segmentations.append({"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")})
        objects.append({"object_id": k + 1, "segmentations": segmentations, "areas": masks.areas().tolist()})
    document = {
        "format": "coco-rle",
        "height": height,
        "width": width,
        "frame_indices": list(range(first_frame, first_frame + num_frames)),
        "objects": objects,
    }
    path = Path(path)
    path.write_text(json.dumps(document, separators=(",", ":")))
    return path


def read_rle_json(path: PathLike) -> list[PackedMasks]:
    document = json.loads(Path(path).read_text())
    height, width = document["height"], document["width"]
    return [
        PackedMasks(height, width, (
            coco_mask.decode({"size": seg["size"], "counts": seg["counts"].encode("ascii")}).astype(bool)
            for seg in obj["segmentations"]
        ))
        for obj in document["objects"]
    ]


# --------------------------------------------------------------------------------------- mask video


def export_mask_video(masks_per_object: Sequence[PackedMasks], path: PathLike, fps: Union[float, Fraction],
                      frame_times: Optional[Sequence[float]] = None) -> Path:
    """The masks alone as an H.264 MP4 (white on black, or DAVIS colours for several objects).

    ``frame_times`` (``video.source_timeline``) shows each mask at its frame's own time, for a
    variable-frame-rate source; without, the masks follow one another at ``fps``.
    """
    _, _, height, width = _shape(masks_per_object)
    if len(masks_per_object) == 1:
        # White on black has no colour: its luma plane goes to the encoder as is, with neutral chroma and the
        # tags of the RGB path, instead of RGB frames for FFmpeg to convert (40 % faster, the same pictures).
        neutral = np.full(((height + 1) // 2, (width + 1) // 2), 128, np.uint8)
        with VideoWriter(path, width, height, fps, yuv_tags=BT709_TAGS, frame_times=frame_times) as writer:
            for (mask,) in _frame_masks(masks_per_object):
                luma = mask.view(np.uint8) * np.uint8(219) + np.uint8(16)  # limited range: 16 black, 235 white
                writer.write_yuv420(Yuv420Frame(luma, neutral, neutral, "bt709", False, BT709_TAGS))
        return writer.result.path
    with VideoWriter(path, width, height, fps, frame_times=frame_times) as writer:
        for masks in _frame_masks(masks_per_object):
            writer.write(DAVIS_PALETTE[label_map(masks)])  # [H, W, 3]
    return writer.result.path


# ----------------------------------------------------------------------------------------- run card


def library_versions() -> dict[str, str]:
    """Versions of Python, FFmpeg and the packages that shape a result (those installed)."""
    import imageio_ffmpeg

    versions = {"python": platform.python_version(), "ffmpeg": imageio_ffmpeg.get_ffmpeg_version()}
    for package in _VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Fraction):
        return float(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, (Path, datetime.datetime)):
        return str(value)
    raise TypeError(f"{type(value).__name__} cannot be written to a run card")


def _card_json(card: dict) -> str:
    full = dict(card)
    full.setdefault("versions", library_versions())
    full.setdefault("created", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    return json.dumps(full, indent=2, default=_jsonable)


def write_run_card(card: dict, path: PathLike) -> Path:
    """Write ``card`` as JSON, adding ``versions`` and ``created`` (UTC) when absent.

    The pipeline's card holds: prompt, settings, sampled (sparse) and dense frame indices, model
    id and revision, and timings; dataclasses, numpy values, fractions and paths are converted.
    """
    path = Path(path)
    text = _card_json(card)
    # Whole or absent, never cut short: a batch counts a folder with a run card as done.
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)
    return path


def read_run_card(path: PathLike) -> dict:
    return json.loads(Path(path).read_text())


def export_names(stem: str = "masks") -> dict[str, str]:
    """The file name of each export, by kind."""
    return {"png_zip": f"{stem}_png.zip", "npz": f"{stem}.npz", "rle_json": f"{stem}_rle.json",
            "mask_video": f"{stem}.mp4", "run_card": RUN_CARD_NAME}


def export_all(masks_per_object: Sequence[PackedMasks], out_dir: PathLike, card: dict,
               fps: Union[float, Fraction], first_frame: int = 0, stem: str = "masks",
               card_file: bool = True, frame_times: Optional[Sequence[float]] = None) -> dict[str, Path]:
    """Every export into ``out_dir``; returns their paths by kind.

    ``card_file=False`` leaves ``run.json`` out (the zip still holds the card), for a caller that writes it
    once its own files are in place. ``frame_times`` goes to the mask video (``export_mask_video``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = {kind: out_dir / name for kind, name in export_names(stem).items()}
    paths = {
        "png_zip": export_png_zip(masks_per_object, path["png_zip"], first_frame, card=card),
        "npz": export_npz(masks_per_object, path["npz"], first_frame),
        "rle_json": export_rle_json(masks_per_object, path["rle_json"], first_frame),
        "mask_video": export_mask_video(masks_per_object, path["mask_video"], fps, frame_times),
    }
    if card_file:
        paths["run_card"] = write_run_card(card, path["run_card"])
    return paths
