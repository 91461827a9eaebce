"""Hardening of the app against what a public Space receives: bad files, bad prompts and settings sent
through the API, over-size uploads, many users at once (isolation), disk and memory over time, and
safe loading. Every bad input goes through gradio_client against the running app (tiny model) and
must come back as our sentence, never Gradio's generic error, and the server must serve a good
request right after."""

from __future__ import annotations

import ast
import os
import struct
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from media import ffmpeg, luma_psnr, make_clip, make_image, make_song, truncated_copy
from test_app import GENERIC_ERROR, ROOT, client, served  # noqa: F401 (shared fixtures)

PACKAGE = ROOT / "videolisa"
DRAW_NOTHING = dict(opacity=0.0, contour="off")  # the output is the input, through H.264


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("hardening-media")


@pytest.fixture(scope="module")
def good(media_dir):
    """The cheapest good request: one 32x32 frame."""
    return make_clip(media_dir, "good", size=(32, 32), frames=1, fps=1, audio=False)


def _run(client, video=None, image=None, prompts="the square", sparse=4, dense=2, opacity=0.5, contour="on",
         color="#e69f00"):
    from gradio_client import handle_file

    return client.predict(handle_file(str(video)) if video else None, handle_file(str(image)) if image else None,
                          prompts, sparse, dense, False, False, color, opacity, contour, 0.0, api_name="/segment")


def _refused(client, **kwargs) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as caught:
        _run(client, **kwargs)
    message = str(caught.value)
    assert GENERIC_ERROR not in message
    return message


def _still_serves(client, good):
    details = _run(client, video=good)[-1]
    assert details["processed_frames"] == [0, 0]


# ---------------------------------------------------------------------------------------------- bad files


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares a size but holds no picture: enough for anything that reads the header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def _bad_file(kind: str, directory: Path) -> Path:
    if kind == "text renamed .mp4":
        path = directory / "notes.mp4"
        path.write_text("these are notes, not a video")
    elif kind == "truncated mp4":
        path = truncated_copy(make_clip(directory, "whole", size=(96, 64), frames=10, fps=10), directory, 0.5)
    elif kind == "zero bytes":
        path = directory / "empty.mp4"
        path.write_bytes(b"")
    elif kind == "no decodable frame":
        # A well-formed MP4 whose coded pictures are all zeros: the container opens, no frame decodes.
        data = bytearray(make_clip(directory, "to_blank", size=(96, 64), frames=3, fps=10, audio=False).read_bytes())
        start = data.find(b"mdat") - 4
        size = struct.unpack(">I", data[start:start + 4])[0]
        data[start + 8:start + size] = bytes(size - 8)
        path = directory / "blank.mp4"
        path.write_bytes(bytes(data))
    elif kind == "audio only":
        path = directory / "song.mp4"
        ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(path))
    elif kind == "song with cover art":
        path = make_song(directory, "song_with_cover")
    elif kind == "8K video":
        path = directory / "eight_k.mp4"
        ffmpeg("-f", "lavfi", "-i", "color=c=navy:size=7680x4320:rate=1", "-frames:v", "1", "-c:v", "libx264",
               "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path))
    elif kind == "50-megapixel image":
        path = directory / "poster.png"
        path.write_bytes(_png_header(10000, 5000))
    elif kind == "decompression bomb":
        path = directory / "bomb.png"
        path.write_bytes(_png_header(20000, 20000))
    elif kind == "text renamed .png":
        path = directory / "notes.png"
        path.write_text("not a picture either")
    else:
        raise ValueError(kind)
    return path


@pytest.mark.parametrize("kind, slot, message", [
    ("text renamed .mp4", "video", "is not a video that can be read"),
    ("truncated mp4", "video", "damaged or cut short"),
    ("zero bytes", "video", "is empty (0 bytes)"),
    ("no decodable frame", "video", "damaged or cut short"),
    ("audio only", "video", "it has no video track. Please upload a video"),
    ("song with cover art", "video", "is an audio file with cover art: it has no video track. Please upload a video"),
    ("8K video", "video", "is 7680x4320 (33.2 megapixels per frame), more than the limit of 8.8 megapixels"),
    ("50-megapixel image", "image", "is 10000x5000 (50.0 megapixels per frame)"),
    ("decompression bomb", "image", "is an image of more than 179 megapixels: downscale it"),
    ("decompression bomb", "video", "is an image of more than 179 megapixels: downscale it"),
    ("text renamed .png", "image", "damaged"),
])
def test_a_bad_file_is_refused_with_a_sentence_before_the_model(served, client, good, media_dir, kind, slot,
                                                                  message):
    path = _bad_file(kind, media_dir)
    calls = served["calls"].calls
    assert message in _refused(client, **{slot: path})
    assert served["calls"].calls == calls  # nothing reached the model
    _still_serves(client, good)


def test_an_image_in_the_video_slot_and_a_video_in_the_image_slot_both_work(client, media_dir):
    still = make_image(media_dir, "still", size=(48, 32))
    clip = make_clip(media_dir, "two_frames", size=(48, 32), frames=2, fps=4, audio=False)
    assert _run(client, video=still)[-1]["processed_frames"] == [0, 0]
    assert _run(client, image=clip)[-1]["processed_frames"] == [0, 1]


def test_a_very_long_clip_is_trimmed_by_the_app_limits_with_a_notice(served, client, media_dir):
    from videolisa.settings import APP_LIMITS

    # 70 s at one frame every 10 s: long, yet only six frames reach the (slow) SAM encoder.
    long = make_clip(media_dir, "seventy_seconds", size=(32, 32), frames=7, fps=0.1, audio=False)
    assert APP_LIMITS.max_duration_s == 60
    details = _run(client, video=long)[-1]
    assert details["processed_frames"] == [0, 5]
    assert "Only the first 60.0 s (frames 0-5) of the 70.0 s video were processed" in details["notices"][0]


# ---------------------------------------------------------------------------------------------- uploads


def test_an_oversize_upload_is_refused_before_it_is_sent(served, client, good, tmp_path):
    from gradio_client import handle_file

    from videolisa.settings import APP_LIMITS

    huge = tmp_path / "huge.mp4"
    with open(huge, "wb") as f:  # sparse: the size without the bytes
        f.truncate(int(APP_LIMITS.max_upload_mb * 2**20) + 1)
    calls = served["calls"].calls
    with pytest.raises(ValueError, match="exceeds the maximum file size of 209715200 bytes"):
        client.predict(handle_file(str(huge)), None, "the square", api_name="/segment")
    assert served["calls"].calls == calls
    _still_serves(client, good)


def test_a_raw_oversize_upload_gets_our_sentence_from_the_server(served, client, good, monkeypatch):
    # The server's own check, for uploads that skip the client's: lowered here so the test sends 5 kB.
    monkeypatch.setattr(served["app"].demo, "max_file_size", 4096)
    response = httpx.post(served["url"] + "gradio_api/upload", files={"files": ("big.mp4", os.urandom(5000))})
    assert response.status_code == 413
    assert response.text == "The file is larger than the 0.00390625 MB this demo accepts: trim or compress the video " \
                            "and try again."
    small = httpx.post(served["url"] + "gradio_api/upload", files={"files": ("small.mp4", b"x" * 100)})
    assert small.status_code == 200
    monkeypatch.undo()
    _still_serves(client, good)


def test_a_file_that_was_not_uploaded_cannot_be_named(served, client, good):
    # A raw API call naming a server path: Gradio refuses to move it into its cache; our code never sees it.
    calls = served["calls"].calls
    body = {"data": [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, None, "the square", 4, 2, False,
                     False, "#e69f00", 0.5, "on", 0.0]}
    event = httpx.post(served["url"] + "gradio_api/call/segment", json=body).json()["event_id"]
    stream = httpx.get(served["url"] + f"gradio_api/call/segment/{event}", timeout=60).text
    assert "event: error" in stream and "root:" not in stream
    assert httpx.get(served["url"] + "gradio_api/file=/etc/passwd").status_code == 403
    assert served["calls"].calls == calls
    _still_serves(client, good)


# ---------------------------------------------------------------------------------------------- prompts, settings


@pytest.mark.parametrize("kwargs, message", [
    (dict(prompts=""), "Write what to segment in the prompt box"),
    (dict(prompts="\x00\x01\x02"), "The prompt is empty"),
    (dict(prompts="x" * 20000), "The prompt has 20000 characters; keep it under 4000"),
    (dict(prompts="ab " * 1200), "tokens long; keep it under 512 tokens"),
    (dict(sparse=4, dense=4), "T_sparse must be at least T_dense + 1"),
    (dict(sparse=-1), "“T_sparse” must be a number from 4 to 64; got -1."),
    (dict(dense=-3), "“T_dense” must be a number from 1 to 8; got -3."),
    (dict(sparse="many"), "“T_sparse” must be a number from 4 to 64; got 'many'."),
    (dict(sparse=None), "“T_sparse” must be a number from 4 to 64; got None."),
    (dict(sparse=64, dense=8), "more than the model's context of 4096. Use fewer dense frames"),
    (dict(opacity=5), "“Opacity” must be a number from 0 to 1; got 5."),
    (dict(contour="bold"), "“Masks drawn as” must be one of 'on', 'only', 'off'; got 'bold'."),
    (dict(color="blue-ish"), "is not a colour"),
])
def test_bad_prompts_and_settings_through_the_api_get_a_sentence(served, client, good, kwargs, message):
    calls = served["calls"].calls
    assert message in _refused(client, video=good, **kwargs)
    assert served["calls"].calls - calls <= 1  # refused before the model, or by the pipeline's checks first
    _still_serves(client, good)


@pytest.mark.parametrize("prompt, seen", [
    ("<image> the square [SEG] now", "image the square SEG now"),  # no second video, no second mask token
    ("the\x00 square\x1b[31m\x07", "the  square [31m"),  # control characters are spaces
    ("le chat 🐱 猫 ñ — “quoted”", "le chat 🐱 猫 ñ — “quoted”"),  # unicode passes untouched
])
def test_structural_and_unicode_prompts_get_a_result(client, good, prompt, seen):
    out = _run(client, video=good, prompts=prompt)
    answer, shown = out[1], out[-1]["targets"][0]["prompt"]
    assert shown.split() == seen.split() and not any(ord(c) < 32 for c in shown)
    assert "&lt;image&gt;" not in answer and "[SEG]" not in answer.split("vl-text")[0]


# ---------------------------------------------------------------------------------------------- isolation


def test_two_users_at_once_each_get_their_own_video(served, media_dir):
    from gradio_client import Client, handle_file

    from videolisa.video import iter_frames

    # Same size, different pictures and lengths: a swapped or shared output cannot pass.
    clips = [make_clip(media_dir, "user_a", size=(64, 48), frames=3, fps=6, audio=False),
             make_clip(media_dir, "user_b", size=(64, 48), frames=2, fps=6, audio=False, pattern="smptebars")]
    users = [Client(served["url"], verbose=False) for _ in clips]
    jobs = [user.submit(handle_file(str(clip)), None, "the square", 4, 2, False, False, "#e69f00", 0.0, "off", 0.0,
                        api_name="/segment") for user, clip in zip(users, clips)]
    outputs = [job.result(timeout=120)[0] for job in jobs]
    inputs = [np.stack(list(iter_frames(c))) for c in clips]
    for k, video in enumerate(outputs):
        got = np.stack(list(iter_frames(video)))
        assert got.shape == inputs[k].shape
        assert luma_psnr(got[0], inputs[k][0]) > 30
        assert luma_psnr(got[0], inputs[1 - k][0]) < 20
    assert outputs[0] != outputs[1]


def _module_level_mutables(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    containers = (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp, ast.SetComp)
    factories = {"list", "dict", "set", "defaultdict", "OrderedDict", "deque", "Counter"}
    found = []
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            value = node.value
            called = isinstance(value, ast.Call) and getattr(value.func, "id", getattr(value.func, "attr", None))
            if isinstance(value, containers) or called in factories:
                found.append(f"{path.name}:{node.lineno}")
    return found


def test_no_module_level_mutable_state_in_the_app():
    modules = [ROOT / "app.py", *sorted((PACKAGE / "ui").glob("*.py"))]
    assert len(modules) > 5
    assert [hit for m in modules for hit in _module_level_mutables(m)] == []
    # The only rebound global is the process's model (the engine), never a result.
    rebound = [(m.name, name) for m in modules for node in ast.walk(ast.parse(m.read_text()))
               if isinstance(node, ast.Global) for name in node.names]
    assert set(rebound) == {("serving.py", "_engine")}


def test_returned_files_come_only_from_our_own_request_directory(served, good):
    from videolisa.ui import files, page

    out = page.segment(str(good), None, "the square", sparse_frames=4, dense_frames=2, text_answer=False)
    root = files.output_root().resolve()
    run_dir = Path(out[-1].run_dir).resolve()
    returned = [out[0], *out[5:10]]  # the result video and the five downloads
    assert run_dir.parent == root
    for path in returned:
        assert Path(path).resolve().is_relative_to(run_dir), path
    assert "allowed_paths" not in served["app"].LAUNCH_OPTIONS
    page._forget(out[-1])
    assert not run_dir.exists()


# ---------------------------------------------------------------------------------------------- cleanup


def test_repeated_requests_of_a_session_keep_one_result_on_disk(served, good):
    from gradio_client import Client, handle_file

    from videolisa.ui import files

    root = files.output_root()
    before = set(root.iterdir())
    user = Client(served["url"], verbose=False, download_files=False)
    served_paths = []
    for _ in range(3):
        out = user.predict(handle_file(str(good)), None, "the square", 4, 2, False, False, api_name="/segment")
        served_paths += [out[0]["path"], *(download["path"] for download in out[5:10])]
    # Each run replaced the session's previous result, whose directory went with it.
    assert len(set(root.iterdir()) - before) == 1
    # What the page and the client get are Gradio's copies, tracked for its cache sweep (delete_cache),
    # which ages them like ours.
    demo = served["app"].demo
    tracked = set().union(*demo.temp_file_sets)
    assert all(path in tracked for path in served_paths)
    assert demo.delete_cache[1] == files.OUTPUT_TTL_S


def test_request_directories_are_pruned_by_age_then_oldest_first_to_a_budget(tmp_path, monkeypatch):
    from videolisa.ui import files

    now = 1_000_000.0
    ages = {"expired": files.OUTPUT_TTL_S + 1, "old": 3000, "older": 4000, "recent": 10}
    for name, age in ages.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "video.mp4").write_bytes(b"0" * 1000)
        os.utime(tmp_path / name, (now - age, now - age))
    removed = files.prune(tmp_path, now=now, max_bytes=1500)
    # Over the budget, the oldest go first; a directory touched in the last minutes may be in use and stays.
    assert [p.name for p in removed] == ["expired", "older", "old"]
    assert [p.name for p in tmp_path.iterdir()] == ["recent"]
    monkeypatch.setenv("VIDEOLISA_OUTPUT_BUDGET_MB", "2")
    assert files.output_budget_bytes() == 2 * 2**20


@pytest.mark.parametrize("name, value", [("VIDEOLISA_OUTPUT_BUDGET_MB", "5GB"), ("VIDEOLISA_GPU_SECONDS_MAX", "two"),
                                         ("VIDEOLISA_MAX_SESSIONS", "0"), ("VIDEOLISA_MAX_SESSIONS", "1e3"),
                                         ("VIDEOLISA_OUTPUT_BUDGET_MB", "nan")])
def test_a_deployment_setting_that_is_not_a_number_stops_the_start_with_its_name(name, value):
    from videolisa.errors import InvalidSettings
    from videolisa.ui import page

    with pytest.raises(InvalidSettings, match=f"{name} must be .* it is '{value}'"):
        page.launch_options(ROOT / "assets", {name: value})
    assert page.launch_options(ROOT / "assets", {name: " "})  # blank is unset: the default


@pytest.mark.parametrize("name", ["VIDEOLISA_CACHE_MB", "VIDEOLISA_SAM_BATCH"])
def test_a_pipeline_setting_that_is_not_a_number_is_refused_with_its_name(tiny_model, monkeypatch, name):
    from videolisa.errors import InvalidSettings
    from videolisa.pipeline import VideoLISAPipeline

    monkeypatch.setenv(name, "-1")
    with pytest.raises(InvalidSettings, match=f"{name} must be .* at least"):
        VideoLISAPipeline(tiny_model)


def test_only_request_directories_under_our_root_are_ever_removed(tmp_path):
    from videolisa.ui import files

    outside = tmp_path / "run-elsewhere"
    outside.mkdir()
    files.remove_request_dir(str(outside))
    assert outside.exists()
    inside = files.new_request_dir()
    files.remove_request_dir(str(inside))
    assert not inside.exists()


def test_a_session_keeps_its_masks_deflated_and_its_state_expires():
    import gradio as gr

    from videolisa.masks import PackedMasks
    from videolisa.pipeline import Segmentation
    from videolisa.ui import files, page, results

    yy, xx = np.mgrid[0:360, 0:640]
    frames = np.stack([(xx - 100 - 20 * t) ** 2 + (yy - 180) ** 2 < 80 ** 2 for t in range(12)])  # [T, H, W]
    packed = PackedMasks.from_array(frames)
    seg = Segmentation(masks=packed, raw_masks=packed, logits=np.zeros((12, 360, 640), np.float32),
                       scores=np.ones(12, np.float32), prompt="p", text=None, answer_has_seg=None,
                       mask_from="teacher", fps=30.0, num_frames=12, height=360, width=640,
                       sparse_frame_indices=(0,), dense_frame_indices=(0,), frame_offset=0, settings={}, timings={})
    kept = results.kept(seg)
    assert kept.logits is None and kept.masks is packed
    assert kept.masks.nbytes * 20 < frames[0].size * len(frames) / 8  # far below one bit per pixel

    demo = page.build_demo(ROOT / "assets", ROOT / "examples")
    state = next(b for b in demo.blocks.values() if isinstance(b, gr.State))
    assert state.time_to_live == files.OUTPUT_TTL_S and state.delete_callback is page._forget
    assert page.launch_options(ROOT / "assets", {})["state_session_capacity"] == page.MAX_SESSIONS


# ---------------------------------------------------------------------------------------------- limits, loading


def test_the_page_shows_the_limits(client):
    from videolisa.settings import APP_LIMITS

    summary = next(c for c in client.config["components"] if c.get("props", {}).get("elem_id") == "vl-summary")
    text = summary["props"]["value"]
    for shown in ("uploads up to 200 MB", "the first 60 s of a video", "at most 1800 frames",
                  "up to 8.8 megapixels per frame", "up to 1080p", "prompts up to 512 tokens", "up to 4 targets"):
        assert shown in text, shown
    assert APP_LIMITS.describe() in text


def test_the_library_applies_no_limit_unless_asked(tmp_path):
    from videolisa.errors import InputTooLarge
    from videolisa.settings import NO_LIMITS, Limits
    from videolisa.source import check_file, open_source

    poster = tmp_path / "poster.png"
    poster.write_bytes(_png_header(10000, 5000))
    assert check_file(poster, NO_LIMITS) == poster
    with pytest.raises(InputTooLarge, match="more than the limit of 40.0 megapixels"):
        check_file(poster, Limits(max_pixels=40_000_000))
    frames = np.zeros((2, 64, 96, 3), np.uint8)
    assert open_source(frames, NO_LIMITS)[0].num_frames == 2
    with pytest.raises(InputTooLarge, match="96x64"):
        open_source(frames, Limits(max_pixels=96 * 63))


def test_limits_a_caller_sets_are_named_with_their_size_in_figures_that_are_not_zero(tmp_path):
    from videolisa.errors import InputTooLarge
    from videolisa.settings import Limits
    from videolisa.source import check_file, open_source

    poster = tmp_path / "poster.png"
    poster.write_bytes(_png_header(200, 150) + bytes(400_000))  # 0.4 MB
    with pytest.raises(InputTooLarge) as caught:
        check_file(poster, Limits(max_pixels=1000))
    assert str(caught.value) == ("'poster.png' is 200x150 (0.03 megapixels per frame), more than the limit of 0.001 "
                                 "megapixels: downscale it (1920x1080 is 2.1 megapixels) and try again.")
    assert Limits(max_pixels=1000).describe() == "up to 0.001 megapixels per frame"
    with pytest.raises(InputTooLarge, match=r"^The file is 0\.4 MB, more than the limit of 0\.1 MB: trim"):
        check_file(poster, Limits(max_upload_mb=0.1))
    with pytest.raises(InputTooLarge, match=r"^The file is 0\.38 MB, more than the limit of 0\.37 MB"):
        check_file(poster, Limits(max_upload_mb=0.37))  # as many figures as it takes to tell them apart
    with pytest.raises(InputTooLarge, match=r"\(0\.01 megapixels\), more than the limit of 0\.001 megapixels"):
        open_source(np.zeros((1, 64, 100, 3), np.uint8), Limits(max_pixels=1000))
    clip = make_clip(tmp_path, "clip", size=(32, 32), frames=4, fps=30, audio=False)
    _, notices = open_source(str(clip), Limits(max_frames=1))
    assert notices == ["Only the first 0.03 s (frames 0-0) of the 0.1 s video were processed: the limit is 1 frame."]


def _calls(tree: ast.AST, dotted: str):
    head, _, attr = dotted.rpartition(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == attr \
                and isinstance(node.func.value, ast.Name) and node.func.value.id == head:
            yield node


def test_weights_load_safely():
    sources = sorted(PACKAGE.rglob("*.py")) + [ROOT / "app.py"]
    torch_loads = 0
    for path in sources:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                pytest.fail(f"{path.name}:{node.value.lineno} passes trust_remote_code")
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                assert isinstance(node.value, ast.Constant) and node.value.value is False, path.name
        for call in _calls(tree, "torch.load"):
            torch_loads += 1
            flags = {k.arg: k.value for k in call.keywords}
            assert isinstance(flags.get("weights_only"), ast.Constant) and flags["weights_only"].value is True, \
                f"{path.name}:{call.lineno}"
        assert not list(_calls(tree, "pickle.load")) and not list(_calls(tree, "pickle.loads")), path.name
    assert torch_loads >= 1  # the .bin fallback of the checkpoint loader is there, and checked


def test_safetensors_are_preferred_to_pickled_weights(tmp_path):
    from videolisa.model.checkpoint import weight_files

    (tmp_path / "pytorch_model.bin").write_bytes(b"pickle")
    assert weight_files(tmp_path) == [tmp_path / "pytorch_model.bin"]  # only when nothing else is there
    (tmp_path / "model.safetensors").write_bytes(b"{}")
    assert weight_files(tmp_path) == [tmp_path / "model.safetensors"]


# ---------------------------------------------------------------------------------------------- load


def test_concurrent_users_finish_or_are_turned_away_cleanly():
    from videolisa.loadtest import load_test

    # Four users at once on an app whose queue holds one waiting run: some run, the others are told the
    # queue is full; nobody hangs, gets an unexplained error or someone else's video.
    (report,) = load_test(jobs=4, frames=1, queue_size=1, timeout_s=120)
    assert report.count("ok") + report.count("rejected") == 4, report.summary()
    assert report.count("ok") >= 1 and report.count("rejected") >= 1, report.summary()
    assert all("Queue is full" in job.message for job in report.jobs if job.status == "rejected")
    if report.rss_before_mb is not None:
        assert report.rss_after_mb - report.rss_before_mb < 400, report.summary()
