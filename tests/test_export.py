"""Exports decode back to exactly the masks that were rendered."""

from __future__ import annotations

import io
import json
import zipfile
from fractions import Fraction

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

import media
from videolisa import export, video
from videolisa.masks import PackedMasks

T, H, W = 6, 41, 53  # odd sizes on purpose


def _objects(count, overlap=False):
    objects = [PackedMasks.from_array(media.moving_disc_masks(T, H, W, radius=8))]
    if count > 1:
        objects.append(PackedMasks.from_array(np.zeros((T, H, W), bool)))  # an object never seen
    if count > 2:
        phase = 0.1 if overlap else 0.5
        objects.append(PackedMasks.from_array(media.moving_disc_masks(T, H, W, radius=6, phase=phase)))
    return objects


def _assert_same(read, written):
    assert len(read) == len(written)
    for r, w in zip(read, written):
        assert r.shape == w.shape and np.array_equal(np.asarray(r), np.asarray(w))


@pytest.mark.parametrize("count", [1, 3])
def test_npz_rle_and_png_round_trip_exactly(tmp_path, count):
    objects = _objects(count)
    _assert_same(export.read_npz(export.export_npz(objects, tmp_path / "m.npz")), objects)
    _assert_same(export.read_rle_json(export.export_rle_json(objects, tmp_path / "m.json")), objects)
    _assert_same(export.read_png_zip(export.export_png_zip(objects, tmp_path / "m.zip"), num_objects=count), objects)


def test_overlaps_survive_in_npz_and_rle_and_the_top_object_wins_in_png(tmp_path):
    objects = _objects(3, overlap=True)
    assert (np.asarray(objects[0]) & np.asarray(objects[2])).any()
    _assert_same(export.read_npz(export.export_npz(objects, tmp_path / "m.npz")), objects)
    _assert_same(export.read_rle_json(export.export_rle_json(objects, tmp_path / "m.json")), objects)
    read = export.read_png_zip(export.export_png_zip(objects, tmp_path / "m.zip"), num_objects=3)
    labels = [export.label_map([m[t] for m in objects]) for t in range(T)]
    for k in range(3):
        assert np.array_equal(np.asarray(read[k]), np.stack([lab == k + 1 for lab in labels]))


def test_png_zip_layout_grey_for_one_object_davis_indices_for_several(tmp_path):
    one = export.export_png_zip(_objects(1), tmp_path / "one.zip", first_frame=100)
    with zipfile.ZipFile(one) as archive:
        assert archive.namelist() == [f"{i:05d}.png" for i in range(100, 100 + T)]
        image = Image.open(io.BytesIO(archive.read("00102.png")))
        assert image.mode == "L" and set(np.unique(np.asarray(image))) <= {0, 255} and image.size == (W, H)
    several = export.export_png_zip(_objects(3), tmp_path / "several.zip", card={"prompt": "the dog"})
    with zipfile.ZipFile(several) as archive:
        assert json.loads(archive.read("run.json"))["prompt"] == "the dog"
        image = Image.open(io.BytesIO(archive.read("00003.png")))
        assert image.mode == "P" and set(np.unique(np.asarray(image))) <= {0, 1, 3}
        assert image.getpalette()[:12] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]  # DAVIS colours


def _rgb_png(data):
    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("spoil, reason", [
    (lambda data: data[: len(data) // 2], "is not a readable image"),  # cut short
    (lambda data: data[:33] + bytes(4) + data[37:], "is not a readable image"),  # a damaged chunk
    (lambda data: b"not a png", "is not a readable image"),
    (_rgb_png, "is not a grey or indexed PNG"),
    (lambda data: export._png_bytes([np.zeros((H + 1, W), bool)]), f"is {W}x{H + 1} pixels, not the {W}x{H}"),
])
def test_a_png_zip_with_a_bad_mask_is_refused_naming_it(tmp_path, spoil, reason):
    good = export.export_png_zip(_objects(1), tmp_path / "good.zip")
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(bad, "w") as target:
        for name in source.namelist():
            data = source.read(name)
            target.writestr(name, spoil(data) if name == "00002.png" else data)
    with pytest.raises(export.InvalidVideo, match=f"00002.png in 'bad.zip' {reason}"):
        export.read_png_zip(bad)


def test_a_file_that_is_not_a_png_zip_is_refused_naming_it(tmp_path):
    for name, data in (("notes.zip", b"not a zip"), ("cut.zip", export.export_png_zip(
            _objects(1), tmp_path / "whole.zip").read_bytes()[:-30])):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(export.InvalidVideo, match=f"'{name}' is not a readable ZIP of masks"):
            export.read_png_zip(tmp_path / name)
    flipped = bytearray((tmp_path / "whole.zip").read_bytes())
    with zipfile.ZipFile(tmp_path / "whole.zip") as archive:
        member = archive.getinfo("00001.png")
    flipped[member.header_offset + 30 + len(member.filename) + len(member.extra) + 40] ^= 0xFF
    (tmp_path / "flipped.zip").write_bytes(bytes(flipped))
    with pytest.raises(export.InvalidVideo, match="The mask 00001.png in 'flipped.zip' cannot be read .*CRC"):
        export.read_png_zip(tmp_path / "flipped.zip")


def test_npz_keys_unpack_as_documented(tmp_path):
    objects = _objects(3)
    with np.load(export.export_npz(objects, tmp_path / "m.npz", first_frame=7)) as data:
        assert data["shape"].tolist() == [3, T, H, W]
        assert data["frame_indices"].tolist() == list(range(7, 7 + T))
        unpacked = np.unpackbits(data["masks"], axis=-1, count=W).astype(bool)
    assert np.array_equal(unpacked, np.stack([np.asarray(m) for m in objects]))


def test_rle_json_is_coco_rle_with_areas(tmp_path):
    objects = _objects(3)
    document = json.loads(export.export_rle_json(objects, tmp_path / "m.json", first_frame=2).read_text())
    assert document["frame_indices"] == list(range(2, 2 + T)) and (document["height"], document["width"]) == (H, W)
    segmentation = document["objects"][0]["segmentations"][4]
    rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode()}
    assert np.array_equal(coco_mask.decode(rle).astype(bool), objects[0][4])
    assert int(coco_mask.area(rle)) == document["objects"][0]["areas"][4] == objects[0].areas()[4]


def test_mask_video_shows_the_masks(tmp_path):
    objects = _objects(3)
    path = export.export_mask_video(objects, tmp_path / "masks.mp4", fps=Fraction(24))
    summary = media.stream_summary(path)
    assert (summary["video_codec"], summary["pix_fmt"], summary["frames"]) == ("h264", "yuv420p", T)
    frames = np.stack(list(video.iter_frames(path)))[:, :H, :W]  # [T, H, W, 3]
    shown = media.luma(frames) > 20
    truth = np.asarray(objects[0]) | np.asarray(objects[2])
    assert np.mean(shown != truth) < 0.01  # lossy H.264 may blur a few edge pixels


def test_run_card_records_versions_and_converts_values(tmp_path):
    card = {"prompt": "the cat that jumps", "sparse_frames": np.arange(4), "dense_frames": [1, 2],
            "fps": Fraction(30000, 1001), "model": {"id": "ZechenBai/VideoLISA-3.8B", "revision": "abc"},
            "timings": {"decode": np.float32(0.5)}}
    read = export.read_run_card(export.write_run_card(card, tmp_path / "run.json"))
    assert read["sparse_frames"] == [0, 1, 2, 3] and read["fps"] == pytest.approx(29.97, abs=0.01)
    assert {"python", "numpy", "av", "ffmpeg", "pycocotools"} <= set(read["versions"])
    assert read["created"].endswith("+00:00")
    with pytest.raises(TypeError, match="cannot be written"):
        export.write_run_card({"bad": object()}, tmp_path / "bad.json")


def test_a_run_card_cut_short_is_not_left_in_place(tmp_path, monkeypatch):
    """A batch counts a folder with run.json as done, so a card is written whole or not at all."""
    import errno
    import pathlib

    def disk_full(self, text, *args, **kwargs):
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(pathlib.Path, "write_text", disk_full)
    with pytest.raises(OSError):
        export.write_run_card({"prompt": "x"}, tmp_path / "run.json")
    assert not (tmp_path / "run.json").exists()


def test_export_all_writes_every_kind(tmp_path):
    objects = _objects(1)
    paths = export.export_all(objects, tmp_path / "out", {"prompt": "x"}, fps=24, first_frame=3)
    assert set(paths) == {"png_zip", "npz", "rle_json", "mask_video", "run_card"}
    assert all(p.exists() and p.parent == tmp_path / "out" for p in paths.values())
    _assert_same(export.read_npz(paths["npz"]), objects)


def test_exports_refuse_masks_that_do_not_agree(tmp_path):
    with pytest.raises(ValueError, match="no objects"):
        export.export_npz([], tmp_path / "m.npz")
    with pytest.raises(ValueError, match="object 1"):
        export.export_rle_json([PackedMasks(4, 4, [np.zeros((4, 4))]), PackedMasks(4, 5, [np.zeros((4, 5))])],
                               tmp_path / "m.json")


def test_a_single_mask_video_is_white_on_black_at_an_odd_size(tmp_path):
    height, width = 37, 51
    truth = np.zeros((4, height, width), bool)
    truth[:, 5:30, 10:40] = True
    truth[2] = False  # an empty frame stays black
    path = export.export_mask_video([PackedMasks.from_array(truth)], tmp_path / "mask.mp4", fps=Fraction(25))
    summary = media.stream_summary(path)
    assert (summary["video_codec"], summary["pix_fmt"], summary["frames"]) == ("h264", "yuv420p", 4)
    frames = np.stack(list(video.iter_frames(path)))[:, :height, :width]  # RGB as a player shows it
    inside, outside = frames[truth[..., None].repeat(3, -1)], frames[~truth[..., None].repeat(3, -1)]
    assert np.median(inside) >= 250 and np.median(outside) <= 5
    assert np.mean((media.luma(frames) > 128) != truth) < 0.01


def test_the_mask_video_of_a_vfr_source_keeps_each_mask_at_its_frames_time(pipeline, tmp_path):
    from videolisa import outputs

    source = media.make_clip(tmp_path, "vfr", vfr=True, frames=10, audio=False)
    info = video.probe(source)
    assert info.is_variable_frame_rate
    seg = pipeline.segment(str(source), "the moving square", num_frames_sparse=4, num_frames_dense=1)
    paths = outputs.export_run([seg], info, tmp_path / "out")
    written = video.probe(paths["mask_video"])
    assert written.num_frames == 10
    assert written.frame_times == pytest.approx([t - info.frame_times[0] for t in info.frame_times], abs=1e-5)
    masks = video.read_frames(paths["mask_video"], range(10))
    assert all(np.array_equal(masks[i][..., 0] > 127, np.asarray(seg.masks[i])) for i in range(10))
