"""Scoring DAVIS-style folders of PNG masks, and the ``score`` command line."""

import argparse
import csv
import json

import numpy as np
import pytest
from PIL import Image

from videolisa.errors import InvalidVideo
from videolisa.score import add_score_parser, format_table, read_labels, run_score, score_folders

SHAPE = (100, 100)  # boundary tolerance: 2 px


def square(top, left, size=10, value=1, shape=SHAPE):
    labels = np.zeros(shape, dtype=np.uint8)
    labels[top : top + size, left : left + size] = value
    return labels


def save(path, labels, mode="L"):
    """Write a mask as grayscale ('L'), palette ('P') or RGB PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels, dtype=np.uint8)
    if mode == "P":
        image = Image.fromarray(labels, mode="P")
        image.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [128] * (252 * 3))
    elif mode == "RGB":
        image = Image.fromarray(np.repeat(labels[..., None], 3, axis=2), mode="RGB")
    else:
        image = Image.fromarray(labels, mode="L")
    image.save(path)


def write_sequence(root, name, frames, mode="L", sub=""):
    for stem, labels in frames.items():
        save(root / name / sub / f"{stem}.png", labels, mode)


def test_read_labels_handles_binary_indexed_and_colour_pngs(tmp_path):
    mask = square(20, 20, value=255)
    save(tmp_path / "l.png", mask)
    save(tmp_path / "rgb.png", mask, "RGB")
    save(tmp_path / "p.png", square(20, 20, value=2), "P")
    Image.fromarray(mask > 0).save(tmp_path / "1bit.png")

    gray, colour = read_labels(tmp_path / "l.png")
    assert not colour and np.array_equal(gray, mask)
    rgb, colour = read_labels(tmp_path / "rgb.png")
    assert colour and np.array_equal(rgb != 0, mask != 0) and rgb.max() == 0xFFFFFF
    palette, colour = read_labels(tmp_path / "p.png")
    assert not colour and set(np.unique(palette)) == {0, 2}  # palette index, not the colour
    bits, _ = read_labels(tmp_path / "1bit.png")
    assert np.array_equal(bits != 0, mask != 0)

    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InvalidVideo, match="broken.png"):
        read_labels(tmp_path / "broken.png")


def test_identical_folders_score_one(tmp_path):
    frames = {f"{i:05d}": square(10 + i, 20) for i in range(3)}
    write_sequence(tmp_path / "gt", "cat", {k: v * 255 for k, v in frames.items()})
    write_sequence(tmp_path / "pred", "cat", frames)  # 0/1 against 0/255: both binary
    result = score_folders(tmp_path / "pred", tmp_path / "gt")
    assert result["sequences"]["cat"]["J"] == 1.0
    assert result["sequences"]["cat"]["F"] == 1.0
    assert result["mean"] == {"J": 1.0, "F": 1.0, "J&F": 1.0}
    assert result["missing_sequences"] == [] and result["unmatched_sequences"] == []


def test_every_frame_counts_and_missing_frames_are_empty(tmp_path):
    gt = {"00000": square(20, 20), "00001": square(20, 20), "00002": square(20, 20), "00003": square(20, 20)}
    pred = {
        "00000": square(20, 20),  # J 1, F 1 (first frame is not dropped)
        "00001": square(20, 23),  # J 7/13, F 0.6
        "00003": square(20, 20),  # J 1, F 1 (last frame is not dropped)
        "00009": square(50, 50),  # no ground truth: ignored
    }
    write_sequence(tmp_path / "gt", "dog", gt)
    write_sequence(tmp_path / "pred", "dog", pred)  # 00002 is missing -> empty prediction: 0, 0
    seq = score_folders(tmp_path / "pred", tmp_path / "gt")["sequences"]["dog"]
    assert seq["J"] == pytest.approx((1 + 7 / 13 + 0 + 1) / 4)
    assert seq["F"] == pytest.approx((1 + 0.6 + 0 + 1) / 4)
    assert seq["J&F"] == pytest.approx((seq["J"] + seq["F"]) / 2)
    assert seq["frame_names"] == ["00000", "00001", "00002", "00003"]
    assert seq["missing_frames"] == ["00002"]
    assert seq["objects"]["1"]["J_frames"] == pytest.approx([1, 7 / 13, 0, 1])


def test_batch_layout_and_unpadded_names_are_read(tmp_path):
    write_sequence(tmp_path / "gt", "clip", {"0": square(20, 20, value=255), "1": square(30, 30, value=255)})
    write_sequence(tmp_path / "pred", "clip", {"00000": square(20, 20), "00001": square(30, 30)}, sub="masks")
    seq = score_folders(tmp_path / "pred", tmp_path / "gt")["sequences"]["clip"]
    assert seq["J"] == 1.0 and seq["missing_frames"] == []


def test_rgb_binary_prediction_against_grayscale_truth(tmp_path):
    write_sequence(tmp_path / "gt", "a", {"00000": square(20, 20)})
    write_sequence(tmp_path / "pred", "a", {"00000": square(20, 22, value=255)}, mode="RGB")
    seq = score_folders(tmp_path / "pred", tmp_path / "gt")["sequences"]["a"]
    assert seq["J"] == pytest.approx(80 / 120) and seq["F"] == 1.0


def test_indexed_objects_are_scored_separately_and_averaged(tmp_path):
    gt = square(10, 10, value=1) + square(60, 60, value=2)
    pred = square(10, 10, value=1) + square(60, 63, value=2)
    write_sequence(tmp_path / "gt", "two", {"00000": gt, "00001": square(10, 10, value=1)}, mode="P")
    write_sequence(tmp_path / "pred", "two", {"00000": pred, "00001": square(10, 10, value=1)}, mode="P")
    seq = score_folders(tmp_path / "pred", tmp_path / "gt")["sequences"]["two"]
    assert set(seq["objects"]) == {"1", "2"}
    assert seq["objects"]["1"]["J"] == 1.0
    # Object 2 is absent from frame 00001 in both: that frame scores 1 for it.
    assert seq["objects"]["2"]["J_frames"] == pytest.approx([7 / 13, 1.0])
    assert seq["objects"]["2"]["F_frames"] == pytest.approx([0.6, 1.0])
    assert seq["J"] == pytest.approx((1 + (7 / 13 + 1) / 2) / 2)
    assert seq["F"] == pytest.approx((1 + 0.8) / 2)


def test_binary_prediction_against_several_objects_is_refused(tmp_path):
    write_sequence(tmp_path / "gt", "two", {"00000": square(10, 10, value=1) + square(60, 60, value=2)}, mode="P")
    write_sequence(tmp_path / "pred", "two", {"00000": square(10, 10, value=255)})
    with pytest.raises(InvalidVideo, match="not object ids"):
        score_folders(tmp_path / "pred", tmp_path / "gt")


def test_mean_is_over_sequences_and_missing_sequences_are_reported(tmp_path):
    write_sequence(tmp_path / "gt", "one_frame", {"00000": square(20, 20)})
    write_sequence(tmp_path / "gt", "three_frames", {f"{i:05d}": square(20, 20) for i in range(3)})
    write_sequence(tmp_path / "gt", "absent", {"00000": square(20, 20)})
    write_sequence(tmp_path / "pred", "one_frame", {"00000": square(20, 20)})
    write_sequence(tmp_path / "pred", "three_frames", {f"{i:05d}": square(60, 60) for i in range(3)})
    write_sequence(tmp_path / "pred", "extra", {"00000": square(20, 20)})
    result = score_folders(tmp_path / "pred", tmp_path / "gt")
    assert result["mean"]["J"] == pytest.approx(0.5)  # (1 + 0) / 2, not (1 + 0 + 0 + 0) / 4
    assert sorted(result["sequences"]) == ["one_frame", "three_frames"]
    assert result["missing_sequences"] == ["absent"]
    assert result["unmatched_sequences"] == ["extra"]
    table = format_table(result)
    assert "absent" in table and "extra" in table and "mean (2 sequences)" in table
    with pytest.raises(InvalidVideo, match="absent"):
        score_folders(tmp_path / "pred", tmp_path / "gt", strict=True)


def test_notes_under_the_table_count_in_words_that_agree(tmp_path):
    write_sequence(tmp_path / "gt", "one", {f"{i:05d}": square(20, 20) for i in range(3)})
    write_sequence(tmp_path / "gt", "two", {f"{i:05d}": square(20, 20) for i in range(3)})
    write_sequence(tmp_path / "gt", "lone", {"00000": square(20, 20)})
    write_sequence(tmp_path / "gt", "absent", {"00000": square(20, 20)})
    write_sequence(tmp_path / "pred", "one", {"00000": square(20, 20), "00001": square(20, 20)})
    write_sequence(tmp_path / "pred", "two", {"00000": square(20, 20)})
    write_sequence(tmp_path / "pred", "lone", {"00007": square(20, 20)})  # no frame of the ground truth
    table = format_table(score_folders(tmp_path / "pred", tmp_path / "gt"))
    assert "one: no prediction for 1 of 3 frames (" in table and "two: no prediction for 2 of 3 frames (" in table
    assert "lone: no prediction for 1 of 1 frame (" in table
    assert "No prediction for 1 ground-truth sequence," in table and "mean (3 sequences)" in table
    with pytest.raises(InvalidVideo, match=r"No predicted masks for 1 ground-truth sequence: absent"):
        score_folders(tmp_path / "pred", tmp_path / "gt", strict=True)


def test_single_sequence_folders(tmp_path):
    write_sequence(tmp_path, "gt", {"00000": square(20, 20)})
    write_sequence(tmp_path, "pred", {"00000": square(20, 20)}, sub="masks")
    result = score_folders(tmp_path / "pred", tmp_path / "gt")
    assert result["sequences"]["gt"]["J"] == 1.0


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: None, "does not exist"),
        (lambda p: (p / "gt" / "empty").mkdir(parents=True), "No ground-truth masks"),
        (lambda p: write_sequence(p / "gt", "a", {"00000": square(20, 20)}), r"\(1 sequence\) has predicted"),
        (
            lambda p: (
                write_sequence(p / "gt", "a", {"00000": square(20, 20)}),
                write_sequence(p / "pred", "a", {"00000": square(20, 20, shape=(50, 80))}),
            ),
            "50 pixels",
        ),
    ],
)
def test_unusable_folders_raise_clear_errors(tmp_path, setup, message):
    (tmp_path / "pred").mkdir()
    setup(tmp_path)
    with pytest.raises(InvalidVideo, match=message):
        score_folders(tmp_path / "pred", tmp_path / ("gt" if (tmp_path / "gt").exists() else "nowhere"))


def _parser():
    parser = argparse.ArgumentParser(prog="videolisa")
    add_score_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_command_line_prints_and_writes_json_and_csv(tmp_path, capsys):
    write_sequence(tmp_path / "gt", "dog", {"00000": square(20, 20), "00001": square(20, 20)})
    write_sequence(tmp_path / "pred", "dog", {"00000": square(20, 20), "00001": square(20, 23)})
    out_json, out_csv = tmp_path / "out" / "scores.json", tmp_path / "out" / "scores.csv"
    args = _parser().parse_args(
        ["score", str(tmp_path / "pred"), str(tmp_path / "gt"), "--json", str(out_json), "--csv", str(out_csv)]
    )
    assert args.func is run_score
    assert run_score(args) == 0

    j, f = (1 + 7 / 13) / 2, (1 + 0.6) / 2
    data = json.loads(out_json.read_text())
    for entry in (data["sequences"]["dog"], data["mean"]):
        assert entry["J"] == pytest.approx(j) and entry["F"] == pytest.approx(f)
        assert entry["J&F"] == pytest.approx((j + f) / 2)
    rows = list(csv.DictReader(out_csv.open()))
    assert [row["sequence"] for row in rows] == ["dog", "mean"]
    assert float(rows[0]["J"]) == pytest.approx(j, abs=1e-6) and float(rows[1]["F"]) == pytest.approx(f, abs=1e-6)
    printed = capsys.readouterr().out
    assert "dog" in printed and f"{j:.3f}" in printed and f"{f:.3f}" in printed


def _truncated(data):
    return data[: len(data) // 2]


def _damaged(data):
    return data[:33] + bytes(4) + data[37:]  # the first chunk after the header claims to be empty


@pytest.mark.parametrize("spoil", [_truncated, _damaged, lambda data: b"GIF89a"])
@pytest.mark.parametrize("role", ["gt", "pred"])
def test_a_mask_that_is_not_a_whole_png_is_named_in_one_line(tmp_path, capsys, spoil, role):
    for folder in ("gt", "pred"):
        write_sequence(tmp_path / folder, "dog", {"00000": square(20, 20), "00001": square(30, 30)})
    bad = tmp_path / role / "dog" / "00001.png"
    bad.write_bytes(spoil(bad.read_bytes()))
    args = _parser().parse_args(["score", str(tmp_path / "pred"), str(tmp_path / "gt")])
    assert run_score(args) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"error: The mask {bad} is not a readable image (")


def test_command_line_reports_bad_input_on_one_line(tmp_path, capsys):
    args = _parser().parse_args(["score", str(tmp_path / "missing"), str(tmp_path)])
    assert run_score(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
