"""The command line: segment, batch (resume, failures, shards), score on a batch's output, exit codes."""

import json
import re

import pytest

from media import make_clip, make_image, truncated_copy
from videolisa import cli, outputs
from videolisa.export import read_png_zip
from videolisa.video import probe

FAST = ["--sparse", "4", "--dense", "1"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("cli-media"), "clip", size=(64, 48), frames=3, fps=12)


@pytest.fixture
def shared_pipeline(monkeypatch, pipeline):
    """Reuse the session's tiny pipeline instead of loading one per command."""
    monkeypatch.setattr(cli, "_load", lambda args: pipeline)
    return pipeline


def test_segment_end_to_end_with_the_real_loader(clip, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    code = cli.main(["segment", str(clip), "the moving bars", "--model", str(tiny_checkpoint), "--out", str(out),
                     *FAST])
    assert code == cli.EXIT_OK
    printed = capsys.readouterr().out
    for name in ("overlay", "png_zip", "npz", "rle_json", "mask_video", "run_card", "png_dir"):
        assert f"{name}: " in printed
    overlay = probe(out / "overlay.mp4")
    assert overlay.codec == "h264" and overlay.num_frames == 3 and overlay.has_audio
    masks = read_png_zip(out / "masks_png.zip")
    assert len(masks) == 1 and masks[0].shape == (3, 48, 64)
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    card = json.loads((out / "run.json").read_text())
    assert card["targets"][0]["prompt"] == "the moving bars"
    assert card["targets"][0]["settings"]["num_frames_sparse"] == 4


def test_model_tiny_is_a_labelled_preview(clip, tmp_path, monkeypatch, capsys):
    import tempfile
    from pathlib import Path

    made, real = [], tempfile.TemporaryDirectory

    def recorded(*args, **kwargs):
        folder = real(*args, **kwargs)
        made.append(Path(folder.name))
        return folder
    monkeypatch.setattr(tempfile, "TemporaryDirectory", recorded)
    out = tmp_path / "out"
    assert cli.main(["segment", str(clip), "the bars", "--model", "tiny", "--post-optimize", "--out", str(out),
                     *FAST]) == cli.EXIT_OK
    err = capsys.readouterr().err
    assert "warning: --model tiny runs a tiny random checkpoint" in err and "meaningless" in err
    target = json.loads((out / "run.json").read_text())["targets"][0]
    assert target["model"]["model"] == "tiny"
    assert target["post_optimization"]["applied"]  # on a tiny SAM 2, not the released one from the hub
    # ... named as one, not by the folder it lived in for the command
    assert target["post_optimization"]["model"] == "tiny random preview"
    assert "notice: SAM 2 (tiny random preview) propagated the masks" in err
    assert not any(str(folder) in err for folder in made)
    assert made and not any(folder.exists() for folder in made)  # the preview's checkpoints went with the command
    assert "Writing model shards" not in err and "Loading weights" not in err  # the library's bars stay quiet


def test_a_real_sam2_keeps_its_loading_bar_even_in_a_tiny_preview(clip, tiny_checkpoint, tmp_path, capsys):
    from transformers.utils import logging as hf_logging

    from videolisa.model.tiny_sam2 import write_tiny_sam2

    sam2 = write_tiny_sam2(tmp_path / "sam2")  # a checkpoint the user names, as a real one would be
    capsys.readouterr()
    for model in ("tiny", str(tiny_checkpoint)):
        assert cli.main(["segment", str(clip), "the bars", "--model", model, "--post-optimize", "--sam2", str(sam2),
                         "--out", str(tmp_path / "out"), *FAST]) == cli.EXIT_OK
        err = capsys.readouterr().err
        assert "Loading weights" in err and f"notice: SAM 2 ({sam2}) propagated" in err
        assert hf_logging.is_progress_bar_enabled()


def test_batch_resumes_lists_failures_and_feeds_score(clip, tmp_path, shared_pipeline, capsys):
    manifest = tmp_path / "items.jsonl"
    items = [{"video": str(clip), "prompt": "the bars", "id": "a"},
             {"video": "missing.mp4", "prompt": "anything", "id": "broken"},
             {"video": str(clip), "prompt": "the background", "id": "b"}]
    manifest.write_text("\n".join(json.dumps(i) for i in items) + "\n")
    out = tmp_path / "batch"
    code = cli.main(["batch", str(manifest), "--out", str(out), "--no-overlay", *FAST])
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILURES
    assert "1 of 3 items failed" in err and "broken:" in err and "No video file" in err
    assert (out / "a" / "masks" / "00002.png").is_file() and (out / "b" / "run.json").is_file()

    calls = []
    original = shared_pipeline.segment
    shared_pipeline.segment = lambda *a, **k: calls.append(a) or original(*a, **k)
    try:
        assert cli.main(["batch", str(manifest), "--out", str(out), "--no-overlay", *FAST]) == cli.EXIT_FAILURES
    finally:
        del shared_pipeline.segment
    assert "2 already done" in capsys.readouterr().err
    assert len(calls) == 1  # only the broken item is tried again

    # The batch layout is what `score` reads: a prediction scored against itself is perfect.
    report = tmp_path / "score.json"
    gt = tmp_path / "gt"
    (gt / "a").mkdir(parents=True)
    for png in (out / "a" / "masks").iterdir():
        (gt / "a" / png.name).write_bytes(png.read_bytes())
    assert cli.main(["score", str(out), str(gt), "--json", str(report)]) == 0
    scores = json.loads(report.read_text())
    assert scores["sequences"]["a"]["J&F"] == pytest.approx(1.0)


def _manifest(tmp_path, items):
    manifest = tmp_path / "items.jsonl"
    manifest.write_text("".join(json.dumps(item) + "\n" for item in items))
    return manifest


def _interrupt(monkeypatch, step):
    """Stop a run with Ctrl-C at a step after the mask exports were started."""
    def stop(*args, **kwargs):
        raise KeyboardInterrupt
    if step == "overlay":
        monkeypatch.setattr(outputs, "render_video", stop)
    else:
        monkeypatch.setattr(outputs.zipfile.ZipFile, "extractall", stop)


@pytest.mark.parametrize("step", ["overlay", "masks folder"])
def test_an_interrupted_item_is_redone_when_the_batch_resumes(clip, tmp_path, shared_pipeline, monkeypatch, capsys,
                                                              step):
    manifest = _manifest(tmp_path, [{"video": str(clip), "prompt": "the bars", "id": "a"}])
    out = tmp_path / "batch"
    with monkeypatch.context() as patched:
        _interrupt(patched, step)
        assert cli.main(["batch", str(manifest), "--out", str(out), *FAST]) == 130
    assert not (out / "a" / "run.json").exists()
    capsys.readouterr()

    assert cli.main(["batch", str(manifest), "--out", str(out), *FAST]) == cli.EXIT_OK
    assert "0 already done" in capsys.readouterr().err
    assert probe(out / "a" / "overlay.mp4").num_frames == 3
    assert sorted(p.name for p in (out / "a" / "masks").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert json.loads((out / "a" / "run.json").read_text())["targets"][0]["prompt"] == "the bars"


def test_an_interrupted_rerun_takes_the_earlier_run_card_away(clip, tmp_path, shared_pipeline, monkeypatch):
    out = tmp_path / "out"
    assert cli.main(["segment", str(clip), "the bars", "--out", str(out), *FAST]) == cli.EXIT_OK
    _interrupt(monkeypatch, "overlay")
    assert cli.main(["segment", str(clip), "the background", "--out", str(out), *FAST]) == 130
    assert not (out / "run.json").exists()


def test_a_reused_output_folder_keeps_no_frames_of_an_earlier_longer_video(clip, tmp_path, shared_pipeline):
    longer = make_clip(tmp_path, "longer", size=(64, 48), frames=5, fps=12)
    out = tmp_path / "out"
    assert cli.main(["segment", str(longer), "the bars", "--out", str(out), *FAST]) == cli.EXIT_OK
    (out / "notes.txt").write_text("mine")
    (out / "masks" / "README.txt").write_text("mine too")

    assert cli.main(["segment", str(clip), "the bars", "--out", str(out), *FAST]) == cli.EXIT_OK
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["00000.png", "00001.png", "00002.png", "README.txt"]
    assert (out / "notes.txt").read_text() == "mine" and (out / "masks" / "README.txt").read_text() == "mine too"


def test_a_run_without_overlay_takes_an_earlier_overlay_away(clip, tmp_path, pipeline):
    seg = pipeline.segment(str(clip), "the bars", num_frames_sparse=4, num_frames_dense=1)
    outputs.write_outputs(seg, clip, tmp_path)
    paths = outputs.write_outputs(seg, clip, tmp_path, overlay=False)
    assert "overlay" not in paths and not (tmp_path / outputs.OVERLAY_NAME).exists()


def test_notices_go_to_stderr_and_the_result_to_stdout(clip, tmp_path, shared_pipeline, capsys):
    out = tmp_path / "out"
    assert cli.main(["segment", str(clip), "the bars", "--out", str(out), "--max-frames", "2", *FAST]) == cli.EXIT_OK
    captured = capsys.readouterr()
    notices = [line for line in captured.err.splitlines() if line.startswith("notice: ")]
    assert notices == [f"notice: {n}" for n in json.loads((out / "run.json").read_text())["targets"][0]["notices"]]
    assert any("Only the first" in n for n in notices)
    assert "Only the first" not in captured.out and "run_card: " in captured.out

    manifest = _manifest(tmp_path, [{"video": str(clip), "prompt": "the bars", "id": "short"}])
    assert cli.main(["batch", str(manifest), "--out", str(tmp_path / "batch"), "--max-frames", "2", *FAST]) == 0
    assert "notice: short: Only the first" in capsys.readouterr().err


def test_the_text_answer_is_one_json_line_on_stdout(clip, tmp_path, shared_pipeline, capsys):
    out = tmp_path / "out"
    assert cli.main(["segment", str(clip), "the bars", "--out", str(out), "--text", *FAST]) == cli.EXIT_OK
    first, *paths = capsys.readouterr().out.splitlines()
    card = json.loads((out / "run.json").read_text())["targets"][0]
    assert card["text"] and first.startswith("answer: ") and json.loads(first[len("answer: "):]) == card["text"]
    assert len(paths) == 7 and all(re.fullmatch(r"[a-z_]+: .+", line) for line in paths)

    assert cli.main(["segment", str(clip), "the bars", "--out", str(out), *FAST]) == cli.EXIT_OK
    assert "answer: " not in capsys.readouterr().out  # no answer was generated

    from pathlib import Path

    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8").split())
    for command in ("segment", "batch"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        assert 'answer: "..." (batch: answer: ID: "...")' in " ".join(capsys.readouterr().out.split())
    assert '`answer: "..."` line holding the answer as a JSON string' in readme and '`answer: ID: "..."`' in readme


def test_answers_of_every_shape_stay_on_their_line_in_segment_and_batch(clip, tmp_path, shared_pipeline,
                                                                        monkeypatch, capsys):
    from dataclasses import replace

    replies = {"the bars": 'Sure: "the bars"\nare [SEG].', "the sky": "Le ciel\tbleu \\ [SEG]"}
    original = shared_pipeline.segment
    monkeypatch.setattr(shared_pipeline, "segment", lambda video, prompt, **k: replace(
        original(video, prompt, **k), text=replies[prompt]))
    assert cli.main(["segment", str(clip), "the bars", "--out", str(tmp_path / "one"), "--text", *FAST]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "answer: " + json.dumps(replies["the bars"])

    manifest = _manifest(tmp_path, [{"video": str(clip), "prompt": prompt, "id": name}
                                    for name, prompt in (("a", "the bars"), ("b", "the sky"))])
    assert cli.main(["batch", str(manifest), "--out", str(tmp_path / "batch"), "--text", *FAST]) == cli.EXIT_OK
    assert sorted(capsys.readouterr().out.splitlines()) == [
        f"answer: {name}: {json.dumps(replies[prompt])}" for name, prompt in (("a", "the bars"), ("b", "the sky"))]


def test_what_post_optimization_did_is_a_notice(clip, tmp_path, shared_pipeline, monkeypatch, capsys):
    from dataclasses import replace

    from videolisa.postopt import unavailable

    original = shared_pipeline.segment
    monkeypatch.setattr(shared_pipeline, "segment", lambda *a, **k: replace(
        original(*a, **k), post_optimization=unavailable("SAM 2 could not be loaded.")))
    assert cli.main(["segment", str(clip), "the bars", "--out", str(tmp_path / "o"), "--post-optimize", *FAST]) == 0
    assert "notice: Post-optimization was unavailable: SAM 2 could not be loaded.\n" in capsys.readouterr().err


def test_help_and_readme_name_the_files_segment_writes(capsys):
    from pathlib import Path

    from videolisa.export import export_names

    with pytest.raises(SystemExit):
        cli.main(["segment", "--help"])
    helped = " ".join(capsys.readouterr().out.split())
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    for name in (outputs.OVERLAY_NAME, f"{outputs.PNG_DIR_NAME}/", *export_names().values()):
        assert name in helped and f"`{name}" in readme, name
    written = helped.split("and write:")[1].split("positional arguments")[0]
    assert set(re.findall(r"\w+\.[a-z]\w*", written)) == {outputs.OVERLAY_NAME, *export_names().values()}


def test_default_output_folders_of_videos_with_one_stem_are_distinct(tmp_path, shared_pipeline, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for container, frames in (("mp4", 3), ("mov", 5)):
        video = make_clip(tmp_path, "take", size=(64, 48), frames=frames, fps=12, container=container)
        assert cli.main(["segment", str(video), "the bars", *FAST]) == cli.EXIT_OK
    for container, frames in (("mp4", 3), ("mov", 5)):
        out = tmp_path / "videolisa-out" / f"take.{container}"
        assert len(list((out / "masks").iterdir())) == frames and (out / "run.json").is_file()


def test_shards_cover_every_item_exactly_once():
    items = list(range(10))
    shards = [cli.shard_items(items, i, 3) for i in range(3)]
    assert sorted(x for shard in shards for x in shard) == items
    assert [len(s) for s in shards] == [4, 3, 3]


@pytest.mark.parametrize("text", ["3/3", "a/b", "1", "-1/2", "0/0"])
def test_bad_shards_are_refused(text):
    with pytest.raises(cli.VideoLISAError, match="shard"):
        cli.parse_shard(text)


def test_manifest_errors_name_the_line(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"video": "a.mp4", "prompt": "x", "id": "same"}\n{"video": "b.mp4"}\n')
    with pytest.raises(cli.VideoLISAError, match=r"m\.jsonl:2 needs"):
        cli.read_manifest(manifest)
    manifest.write_text('{"video": "a.mp4", "prompt": "x", "id": "same"}\n{"video": "b.mp4", "prompt": "y", "id": "same"}\n')
    with pytest.raises(cli.VideoLISAError, match="not a unique"):
        cli.read_manifest(manifest)


def test_exit_codes_for_a_missing_model_and_a_bad_video(clip, tmp_path, capsys):
    assert cli.main(["segment", str(clip), "x", "--model", str(tmp_path / "nowhere")]) == cli.EXIT_MODEL
    assert capsys.readouterr().err.startswith("error: ")


def test_a_bad_video_is_one_line_and_exit_code_2(tmp_path, shared_pipeline, capsys):
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    assert cli.main(["segment", str(bad), "x", "--out", str(tmp_path / "o"), *FAST]) == cli.EXIT_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_a_cut_short_image_is_one_line_and_exit_code_2(tmp_path, shared_pipeline, capsys, fmt):
    whole = make_image(tmp_path, "photo", size=(200, 150), fmt=fmt)
    cut = truncated_copy(whole, tmp_path, 0.5)
    assert cli.main(["segment", str(cut), "x", "--out", str(tmp_path / "o"), *FAST]) == cli.EXIT_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: '{cut.name}' is a damaged image or was cut short") and "\n" not in err


def test_opt_in_limits_reach_the_library(clip, tmp_path, shared_pipeline, capsys):
    code = cli.main(["segment", str(clip), "x", "--out", str(tmp_path / "o"), "--max-pixels", "1000", *FAST])
    assert code == cli.EXIT_INPUT
    assert "megapixels" in capsys.readouterr().err
    args = cli.build_parser().parse_args(["segment", "v.mp4", "p", "--max-duration", "2", "--max-side", "720",
                                          "--max-prompt-tokens", "9", "--max-upload-mb", "5"])
    limits = cli._limits(args)
    assert (limits.max_duration_s, limits.max_inference_side, limits.max_prompt_tokens, limits.max_upload_mb) == \
        (2, 720, 9, 5)


@pytest.fixture
def no_model(monkeypatch):
    """A command that must stop before loading the model."""
    def refuse(args):
        raise AssertionError("the model was loaded for a command that should have been refused first")
    monkeypatch.setattr(cli, "_load", refuse)


@pytest.mark.parametrize("name", ["overlay.mp4", "masks.mp4", "run.json", "masks/00000.png"])
def test_outputs_never_overwrite_the_input(clip, tmp_path, no_model, capsys, name):
    out = tmp_path / "out"
    source = out / name
    source.parent.mkdir(parents=True)
    source.write_bytes(clip.read_bytes())
    assert cli.main(["segment", str(source), "x", "--out", str(out), *FAST]) == cli.EXIT_INPUT
    assert "would overwrite the input" in capsys.readouterr().err
    assert source.read_bytes() == clip.read_bytes()


def test_the_library_refuses_the_same_overwrite(clip, tmp_path, pipeline):
    from videolisa.errors import InvalidOutput
    from videolisa.outputs import write_outputs

    seg = pipeline.segment(str(clip), "the bars", num_frames_sparse=4, num_frames_dense=1)
    copy = tmp_path / "overlay.mp4"
    copy.write_bytes(clip.read_bytes())
    with pytest.raises(InvalidOutput, match="would overwrite"):
        write_outputs(seg, copy, tmp_path)
    assert copy.read_bytes() == clip.read_bytes()


def test_an_output_folder_that_is_a_file_is_refused_in_words(clip, tmp_path, no_model, capsys):
    taken = tmp_path / "results"
    taken.write_text("notes")
    assert cli.main(["segment", str(clip), "x", "--out", str(taken), *FAST]) == cli.EXIT_INPUT
    err = capsys.readouterr().err.strip()
    assert "is a file, not a folder" in err and "\n" not in err and taken.read_text() == "notes"


def test_a_file_named_masks_in_the_output_folder_is_refused_in_words(clip, tmp_path, pipeline, monkeypatch,
                                                                     capsys):
    from videolisa.errors import InvalidOutput
    from videolisa.outputs import write_outputs

    out = tmp_path / "out"
    out.mkdir()
    (out / "masks").write_text("notes")
    seg = pipeline.segment(str(clip), "the bars", num_frames_sparse=4, num_frames_dense=1)
    with pytest.raises(InvalidOutput, match="masks is a file, not a folder"):
        write_outputs(seg, clip, out)
    assert (out / "masks").read_text() == "notes" and not (out / "run.json").exists()

    monkeypatch.setattr(cli, "_load", lambda args: pytest.fail("the model loaded for a refused output folder"))
    assert cli.main(["segment", str(clip), "x", "--out", str(out), *FAST]) == cli.EXIT_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {out / 'masks'} is a file, not a folder") and "\n" not in err


@pytest.mark.parametrize("option, value", [("--max-frames", "-3"), ("--max-side", "-1"), ("--max-pixels", "-1"),
                                           ("--max-upload-mb", "-1"), ("--max-duration", "nan"),
                                           ("--max-frames", "2.5")])
def test_limits_that_mean_nothing_are_refused_by_the_parser(option, value, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["segment", "v.mp4", "p", option, value])
    assert stopped.value.code == cli.EXIT_INPUT
    assert f"argument {option}: must be a" in capsys.readouterr().err


@pytest.mark.parametrize("value", [-3, float("nan"), "10", True])
def test_the_library_refuses_limits_that_mean_nothing(value):
    from videolisa.errors import InvalidSettings
    from videolisa.settings import Limits

    with pytest.raises(InvalidSettings, match="max_frames must be a number of zero or more"):
        Limits(max_frames=value)
    assert Limits(max_frames=0).max_frames == 0  # zero is "no limit", as None is


@pytest.mark.parametrize("options, words", [
    (["--sparse", "0"], "must be at least 1"),
    (["--sparse", "4", "--dense", "4"], "T_sparse must be at least T_dense + 1"),
    (["--device", "cdua"], "'cdua' is not a device"),
    (["--device", "cuda:99"], "The device cuda:99 was asked for, but PyTorch sees"),
])
@pytest.mark.parametrize("command", ["segment", "batch"])
def test_settings_are_refused_before_the_model_loads(clip, tmp_path, no_model, capsys, command, options, words):
    manifest = _manifest(tmp_path, [{"video": str(clip), "prompt": "x"}])
    given = [str(clip), "x"] if command == "segment" else [str(manifest)]
    assert cli.main([command, *given, "--out", str(tmp_path / "o"), *options]) == cli.EXIT_INPUT
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["segment", "clip.mp4", "x", "--sparse", "0"],
                                  ["batch", "items.jsonl", "--out", "o", "--dense", "0"],
                                  ["--help"]])
def test_a_refused_setting_or_help_does_not_wait_for_torch(argv):
    """A typo is answered in a moment: the command line reaches it without importing torch (seconds by itself)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    probe_code = ("import sys\nfrom videolisa.cli import main\ntry:\n    code = main(sys.argv[1:])\n"
                  "except SystemExit as stop:\n    code = stop.code\nprint('torch' in sys.modules)\nsys.exit(code)")
    root = Path(__file__).parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", probe_code, *argv], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == (0 if argv == ["--help"] else cli.EXIT_INPUT), done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_a_missing_video_is_refused_before_the_model_loads(tmp_path, no_model, capsys):
    assert cli.main(["segment", str(tmp_path / "clpi.mp4"), "x", "--out", str(tmp_path / "o")]) == cli.EXIT_INPUT
    assert "No video file at" in capsys.readouterr().err


def test_a_bad_overlay_style_is_refused_before_the_model_loads(clip, tmp_path, no_model, capsys):
    assert cli.main(["segment", str(clip), "x", "--out", str(tmp_path / "o"), "--opacity", "5"]) == cli.EXIT_INPUT
    assert "Opacity must be between 0 and 1" in capsys.readouterr().err


def test_an_unexpected_error_fails_its_item_not_the_batch(clip, tmp_path, shared_pipeline, capsys, monkeypatch):
    other = tmp_path / "other.mp4"
    other.write_bytes(clip.read_bytes())
    manifest = tmp_path / "items.jsonl"
    manifest.write_text("\n".join(json.dumps(i) for i in [
        {"video": str(clip), "prompt": "the bars", "id": "fine"},
        {"video": str(other), "prompt": "the bars", "id": "crashes"}]) + "\n")
    original = shared_pipeline.segment

    def segment(video, *args, **kwargs):
        if video == str(other):
            raise RuntimeError("device lost")
        return original(video, *args, **kwargs)
    monkeypatch.setattr(shared_pipeline, "segment", segment)
    out = tmp_path / "batch"
    assert cli.main(["batch", str(manifest), "--out", str(out), "--no-overlay", *FAST]) == cli.EXIT_FAILURES
    err = capsys.readouterr().err
    assert "1 of 2 items failed" in err and "crashes: unexpected error (RuntimeError: device lost)" in err
    assert (out / "fine" / "run.json").is_file()
