"""The app: the /segment API through gradio_client against the app launched in-process on the tiny
checkpoint, the session-local re-render, limits said and applied, URL parameters, and the ZeroGPU glue."""

from __future__ import annotations

import ast
import importlib.util
import json
import pickle
import socket
import sys
import threading
import types
from pathlib import Path

import av
import numpy as np
import pytest
from media import make_clip, make_image, mp4_top_level_boxes

ROOT = Path(__file__).resolve().parents[1]
GENERIC_ERROR = "The upstream Gradio app has raised an exception"
FAST = dict(sparse_frames=4, dense_frames=2)  # the tiny model's settings for quick runs
_APP: dict = {}


class CountingPipeline:
    """Counts the model runs of the app's pipeline (every run goes through segment_targets) and the ones
    finished; while ``gate`` is cleared a run waits inside the model (up to a minute) until it is set again."""

    def __init__(self, pipeline):
        self.calls = self.finished = 0
        self.gate = threading.Event()
        self.gate.set()
        self._run = pipeline.segment_targets
        pipeline.segment_targets = self

    def __call__(self, *args, **kwargs):
        self.calls += 1
        try:
            self.gate.wait(60)
            return self._run(*args, **kwargs)
        finally:
            self.finished += 1


def launched_app(tiny_model, tmp_path_factory) -> dict:
    """app.py serving the session's tiny model, launched once per test process on a free port.

    Shared with the browser test (a module-level memo: the two test modules have separate fixtures).
    """
    if _APP:
        return _APP
    from videolisa.model.tiny_sam2 import write_tiny_sam2
    from videolisa.pipeline import VideoLISAPipeline
    from videolisa.settings import APP_LIMITS
    from videolisa.ui import serving

    sam2 = write_tiny_sam2(tmp_path_factory.mktemp("tiny-sam2"))
    pipeline = VideoLISAPipeline(tiny_model, sam2=str(sam2), limits=APP_LIMITS, sam_batch_size=4)
    counter = CountingPipeline(pipeline)
    serving.install(pipeline, tiny=True, label="tiny")
    spec = importlib.util.spec_from_file_location("app", ROOT / "app.py")
    app = importlib.util.module_from_spec(spec)
    sys.modules["app"] = app
    spec.loader.exec_module(app)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = app.demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                                **app.LAUNCH_OPTIONS)
    _APP.update(url=url, app=app, calls=counter, clips=tmp_path_factory.mktemp("app-clips"))
    return _APP


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory, request):
    app = launched_app(tiny_model, tmp_path_factory)
    request.config.add_cleanup(app["app"].demo.close)
    return app


@pytest.fixture(scope="module")
def client(served):
    from gradio_client import Client

    return Client(served["url"], verbose=False)


@pytest.fixture(scope="module")
def clip(served):
    return make_clip(served["clips"], "two_targets", size=(96, 64), frames=3, fps=10, audio=True)


def _segment(client, video=None, image=None, prompts="the square", **settings):
    from gradio_client import handle_file

    args = dict(FAST, post_optimization=False, text_answer=True, color="#e69f00", opacity=0.5, contour="on",
                dim_background=0.0)
    args.update(settings)
    return client.predict(handle_file(str(video)) if video else None, handle_file(str(image)) if image else None,
                          prompts, args["sparse_frames"], args["dense_frames"], args["post_optimization"],
                          args["text_answer"], args["color"], args["opacity"], args["contour"],
                          args["dim_background"], api_name="/segment")


def _stream(path):
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video=0))
        return dict(codec=video.codec_context.name, pix_fmt=video.codec_context.pix_fmt, frames=frames,
                    width=video.codec_context.width, height=video.codec_context.height,
                    audio=len(container.streams.audio))


# ---------------------------------------------------------------------------------------------- the API


def test_segment_returns_a_playable_video_the_answers_and_every_export(served, client, clip):
    calls = served["calls"].calls
    out = _segment(client, video=clip, prompts="the moving square\nthe <b>numbers</b>")
    video, answer, comparison, gallery, timeline, png_zip, npz, rle, mask_video, card, details = out
    assert served["calls"].calls == calls + 1  # two targets, one model run

    stream = _stream(video)
    assert stream == dict(codec="h264", pix_fmt="yuv420p", frames=3, width=96, height=64, audio=1)
    assert mp4_top_level_boxes(video).index("moov") < mp4_top_level_boxes(video).index("mdat")  # starts at once

    # Both answers, coloured like their masks, with the user's text escaped.
    assert answer.count('class="vl-target"') == 2
    assert "--vl-color:#e69f00" in answer and "the moving square" in answer
    assert "&lt;b&gt;numbers&lt;/b&gt;" in answer and "<b>numbers" not in answer
    assert [t["prompt"] for t in details["targets"]] == ["the moving square", "the <b>numbers</b>"]
    assert all(isinstance(t["answer"], str) for t in details["targets"])  # text generation is on by default
    assert details["processed_frames"] == [0, 2]

    assert comparison is None  # no post-optimization asked for
    assert 1 <= len(gallery) <= 2 and gallery[0]["caption"].startswith("frame ")
    assert Path(timeline).is_file()

    from videolisa.export import read_npz, read_png_zip, read_rle_json

    assert [Path(p).suffix for p in (png_zip, npz, rle, mask_video, card)] == [".zip", ".npz", ".json", ".mp4", ".json"]
    from_png, from_npz, from_rle = read_png_zip(png_zip, num_objects=2), read_npz(npz), read_rle_json(rle)
    assert [m.shape for m in from_npz] == [(3, 64, 96)] * 2
    assert from_rle == from_npz
    # One indexed mask per frame: target 2 is drawn last, so all of its pixels carry its index.
    np.testing.assert_array_equal(np.asarray(from_png[1]), np.asarray(from_npz[1]))
    assert _stream(mask_video)["frames"] == 3
    run_card = json.loads(Path(card).read_text())
    assert [t["prompt"] for t in run_card["targets"]] == ["the moving square", "the <b>numbers</b>"]
    assert run_card["targets"][0]["settings"]["num_frames_sparse"] == 4


def test_an_image_is_a_one_frame_video(served, client):
    image = make_image(served["clips"], "still", size=(64, 48))
    video, answer, _, gallery, timeline, *_, details = _segment(client, image=image, prompts="the gradient")
    assert _stream(video)["frames"] == 1
    assert timeline is None and [g["caption"] for g in gallery] == ["image"]
    assert "of the image" in answer or "Not found" in answer


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "Upload a video or an image first"),
    (dict(video="not_a_video"), "is not a video that can be read"),
    (dict(video="clip", prompts="  \n "), "Write what to segment"),
    (dict(video="clip", prompts="a\nb\nc\nd\ne"), "up to 4"),
    (dict(video="clip", prompts="x" * 4001), "characters; keep it under 4000"),
    (dict(video="clip", sparse_frames=4, dense_frames=4), "T_sparse must be at least T_dense + 1"),
])
def test_bad_inputs_come_back_as_app_errors_with_a_human_message(served, client, clip, kwargs, message):
    from gradio_client.exceptions import AppError

    calls = served["calls"].calls
    if kwargs.get("video") == "clip":
        kwargs["video"] = clip
    elif kwargs.get("video") == "not_a_video":
        kwargs["video"] = served["clips"] / "notes.mp4"
        kwargs["video"].write_text("these are notes, not a video")
    with pytest.raises(AppError) as caught:
        _segment(client, **kwargs)
    assert message in str(caught.value) and GENERIC_ERROR not in str(caught.value)
    assert served["calls"].calls - calls <= 1  # refused before the model, or by the pipeline's own checks


def test_the_readme_call_works_with_keywords_and_defaults(client, clip):
    from gradio_client import handle_file

    out = client.predict(video=handle_file(str(clip)), image=None, prompts="the square", sparse_frames=4,
                         dense_frames=2, api_name="/segment")
    summary = out[-1]
    assert len(out) == 11 and summary["targets"][0]["prompt"] == "the square"
    assert isinstance(summary["targets"][0]["answer"], str)  # text answers default to on


def test_only_segment_is_a_documented_endpoint(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert list(endpoints) == ["/segment"]
    names = [p["parameter_name"] for p in endpoints["/segment"]["parameters"]]
    assert names[:3] == ["video", "image", "prompts"]


# ---------------------------------------------------------------------------- sessions, look, limits


def _run_direct(served, clip, **overrides):
    from videolisa.ui import page

    settings = dict(FAST, post_optimization=False, text_answer=False)
    settings.update(overrides)
    return page.segment(clip, None, "the square", **settings)


def test_changing_the_look_redraws_from_the_session_state_without_the_model(served, clip):
    from videolisa.ui import page

    first = _run_direct(served, clip)
    state = first[-1]
    calls = served["calls"].calls
    plain = page.restyle(state, "#ff0000", 0.0, "off", 0.0)  # nothing drawn: the input's own pictures
    solid = page.restyle(state, "#ff0000", 1.0, "off", 0.0)  # masks painted solid red
    assert served["calls"].calls == calls
    assert plain[0] != first[0] and plain[0] != solid[0]  # every render has its own file
    mask = np.asarray(state.segmentations[0].masks)  # [T, H, W]
    assert mask.any() and not mask.all()

    def frames(path):
        with av.open(str(path)) as container:
            return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(int)

    source, drawn, painted = frames(clip), frames(plain[0]), frames(solid[0])
    assert np.abs(drawn - source).mean() < 4  # only the H.264 round trip
    red = np.abs(painted - np.array([255, 0, 0])).sum(-1)  # [T, H, W]
    assert np.median(red[mask]) < 60 and np.median(red[~mask]) > 150


def test_a_run_restored_from_its_downloads_shows_and_redraws_like_the_original(served, clip):
    from videolisa.ui import files, page, results

    for post in (False, True):
        out = page.segment(str(clip), None, "the square\nthe circle", post_optimization=post, **FAST)
        original = out[-1]
        restored = results.restore(original.source, original.exports, str(files.new_request_dir()))
        for got, want in zip(restored.segmentations, original.segmentations, strict=True):
            assert got.masks == want.masks and got.text == want.text and got.notices == want.notices
        look = results.Look(color="#56b4e9")
        assert results.answer_html(restored, look) == results.answer_html(original, look)
        assert results.details(restored) == results.details(original)
        assert not restored.post_optimized  # the downloads hold no raw masks: no comparison to redraw
        assert restored.segmentations[0].post_optimization == original.segmentations[0].post_optimization
        calls = served["calls"].calls
        redrawn = page.restyle(restored, "#56b4e9", 0.7, "on", 0.0)
        assert served["calls"].calls == calls and _stream(redrawn[0])["frames"] == 3
        assert redrawn[1] == results.answer_html(original, look)


def test_a_new_input_empties_the_result_and_a_look_without_result_says_why(served, clip, monkeypatch):
    import gradio as gr

    from videolisa.ui import page

    said = []
    monkeypatch.setattr(gr, "Info", lambda message, **kwargs: said.append(("info", message)))
    monkeypatch.setattr(gr, "Warning", lambda message, **kwargs: said.append(("warning", message)))
    # Nothing was run yet: the look applies to the next run.
    assert page.restyle(None, "#ff0000", 0.5, "on", 0.0, page.ANSWER_PLACEHOLDER) == (gr.skip(),) * 6
    assert said == [("info", "There is no result to redraw yet: press Run, and it will be drawn in this look.")]
    # A result is on the page but no longer in the session (expired, or the session was evicted).
    shown = _run_direct(served, clip)[1]
    assert page.restyle(None, "#ff0000", 0.5, "on", 0.0, shown) == (gr.skip(),) * 6
    assert said[-1][0] == "warning" and "no longer holds this result" in said[-1][1] and "press Run" in said[-1][1]

    # A new upload, a cleared input or the Clear button empties the whole result area, as a new page has it.
    demo = page.build_demo(ROOT / "assets", ROOT / "examples", cache_examples=False)
    segment = next(fn for fn in demo.fns.values() if fn.name == "segment")
    clearing = [fn for fn in demo.fns.values() if fn.name == "_cleared_result"]
    for fn in clearing:  # all a run shows (but the state) and the dark scheme's timeline
        assert fn.outputs[:-1] == segment.outputs[:-1] and fn.outputs[-1].elem_id == "vl-timeline-dark"
    triggers = {(type(demo.blocks[block_id]).__name__, event) for fn in clearing for block_id, event in fn.targets}
    assert triggers == {("Video", "input"), ("Image", "input"), ("ClearButton", "click")}
    overlay, answer, comparison, keyframes, timeline, *downloads, details, dark = page._cleared_result()
    assert overlay is None and answer == page.ANSWER_PLACEHOLDER and keyframes == [] and details is None
    hidden = {"__type__": "update", "value": None, "visible": False}
    assert all(u == hidden for u in (comparison, timeline, *downloads, dark))
    assert len(downloads) == 5


def test_a_cached_example_gets_a_state_that_a_new_input_replaces(served, clip, tmp_path):
    import gradio as gr

    from videolisa.ui import page

    out = page.segment(str(clip), None, "the square", **FAST)
    downloads = out[5:10]
    restored, comparison, timeline, dark = page._restore_cached(str(clip), None, *downloads, None)
    assert restored.source == str(clip) and restored.segmentations[0].masks == out[-1].segmentations[0].masks
    assert comparison is None and timeline.shape == dark.shape == out[4].shape  # drawn again, in the default look
    assert page.restyle(restored, "#56b4e9", 0.7, "on", 0.0)[0].endswith(".mp4")
    # The input's change event may come after the restore: the state of this very input stays.
    assert page._on_video(str(clip), None, restored)[3] == gr.skip()
    other = make_clip(tmp_path, "other", size=(96, 64), frames=3, fps=10)
    assert page._on_video(str(other), None, restored)[3] is None
    assert not Path(restored.run_dir).exists()  # a replaced state's files go
    # Downloads that are missing or unreadable leave the state as it was.
    assert page._restore_cached(str(clip), None, *downloads[:4], None, None) == (gr.skip(), None, None, None)
    broken = tmp_path / "card.json"
    broken.write_text("{}")
    assert page._restore_cached(str(clip), None, *downloads[:4], str(broken), None) == (gr.skip(), None, None, None)

    # What Gradio caches of an example always has a value: its cache cannot read an empty file output back.
    for video, image in ((str(clip), None), (None, str(make_image(tmp_path, "still")))):
        cached = page._run_example(video, image, "the square")
        assert len(cached) == 9 and all(value is not None for value in cached)

    # The page wires it after the cached outputs load.
    demo = page.build_demo(ROOT / "assets", ROOT / "examples", cache_examples=True)
    assert any(getattr(fn.fn, "__name__", "") == "_restore_cached" for fn in demo.fns.values())


def test_post_optimization_shows_raw_versus_refined(served, clip):
    out = _run_direct(served, clip, post_optimization=True)
    state, comparison = out[-1], out[2]
    post = state.segmentations[0].post_optimization
    assert post.applied and post.reference_frames  # the tiny SAM 2 ran from the dense keyframes
    info = _stream(comparison)
    assert info["frames"] == 3 and info["width"] == 2 * 96 and info["audio"] == 1
    assert post.reason in out[1]  # what post-optimization did is said next to the answer


def test_the_comparison_of_a_vfr_range_keeps_each_frame_at_its_source_time(tmp_path):
    from videolisa import video
    from videolisa.masks import PackedMasks
    from videolisa.ui import results

    source = make_clip(tmp_path, "vfr", size=(96, 64), frames=10, vfr=True)  # 1/24 s apart, then 3/24 s
    info = video.probe(source)
    masks = PackedMasks.from_array(np.zeros((5, 64, 96), bool))
    target = types.SimpleNamespace(frame_offset=4, num_frames=5, masks=masks, raw_masks=PackedMasks.from_array(
        np.ones((5, 64, 96), bool)), post_optimization=types.SimpleNamespace(applied=True))
    run = results.RunResult(source=str(source), name="vfr", run_dir=str(tmp_path), info=info, segmentations=(target,),
                            exports=None)
    out = video.probe(results.render_comparison(run, results.Look(), tmp_path))
    expected = [t - info.frame_times[4] for t in info.frame_times[4:10]]  # frames 4-8 and where frame 8 ends
    assert out.num_frames == 5 and out.frame_times == pytest.approx(expected[:-1], abs=1e-5)
    assert out.duration == pytest.approx(expected[-1], abs=1e-5)


def test_a_long_video_is_trimmed_with_a_notice(served, monkeypatch, tmp_path):
    from videolisa.settings import Limits
    from videolisa.source import frames_to_process
    from videolisa.ui import page, serving

    limits = Limits(max_duration_s=0.25, max_inference_side=1080)
    monkeypatch.setattr(page, "APP_LIMITS", limits)
    monkeypatch.setattr(serving, "APP_LIMITS", limits)
    long = make_clip(tmp_path, "long", size=(96, 64), frames=6, fps=12)
    summary = page._describe(str(long), None)
    assert "only 0:00.0–0:00.2 (frames 0–2) will be processed" in summary  # said before running
    assert "more than 3 frames" in summary  # the upload was decoded only as far as the limit
    out = page.segment(str(long), None, "the square", text_answer=False, **FAST)
    assert _stream(out[0])["frames"] == 3
    assert "Only the first 0.2 s (frames 0-2) of the 0.5 s video were processed" in out[1]
    assert out[-2]["processed_frames"] == [0, 2]
    assert frames_to_process(out[-1].info, limits) == 3


def test_on_zero_gpu_a_run_over_the_gpu_cap_is_shortened_with_a_notice(served, monkeypatch, tmp_path):
    from videolisa.ui import page, serving

    long = make_clip(tmp_path, "long", size=(96, 64), frames=6, fps=12)
    monkeypatch.setenv("VIDEOLISA_GPU_SECONDS_MAX", "20")
    monkeypatch.setattr(serving, "GPU_PER_FRAME_S", 0.4)  # 20 s declared leaves room for four frames
    out = page.segment(str(long), None, "the square", text_answer=False, **FAST)
    assert _stream(out[0])["frames"] == 6  # off ZeroGPU nothing aborts a long run: all frames

    monkeypatch.setattr(serving, "on_zero_gpu", lambda: True)
    out = page.segment(str(long), None, "the square", text_answer=False, **FAST)
    assert _stream(out[0])["frames"] == 4
    assert "One request may use the GPU for 20 s at most" in out[1]
    assert "first 0.3 s (4 frames)" in out[1] and "Trim the video" in out[1]
    assert out[-2]["processed_frames"] == [0, 3]


def test_share_links_leave_a_gradio_without_the_internals_they_patch_alone(monkeypatch, caplog):
    from gradio.state_holder import SessionState

    from videolisa.ui import sharing

    original = getattr(SessionState.__setitem__, sharing._ORIGINAL, SessionState.__setitem__)
    monkeypatch.setattr(SessionState, "__setitem__", original)
    monkeypatch.delattr(SessionState, "_update_config")
    sharing.install()  # the page still starts; links restore what Gradio saves itself
    assert SessionState.__setitem__ is original
    assert "share links restore only what Gradio saves itself" in caplog.text


def test_a_share_link_holds_the_values_shown_through_updates():
    """Gradio writes a share link from the session's copy of the page: updates must not move or drop values."""
    import urllib.request

    import gradio as gr
    from gradio_client import Client

    from videolisa.ui import sharing

    sharing.install()
    with gr.Blocks() as demo:
        prompt = gr.Textbox(elem_id="prompt")
        answer = gr.Textbox(visible=False, elem_id="answer")
        gr.Button().click(lambda: gr.skip(), None, prompt, api_name="skip")  # replaces the session's textbox
        gr.Button().click(lambda text: text.upper(), prompt, answer, api_name="answer").then(
            lambda: gr.update(visible=True), None, answer, api_name="reveal")  # a visibility update after the value
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(url, verbose=False)
        client.predict(api_name="/skip")
        client.predict("the cat", api_name="/answer")
        client.predict(api_name="/reveal")
        with urllib.request.urlopen(f"{url}gradio_api/deep_link?session_hash={client.session_hash}") as reply:
            link = json.loads(reply.read())
        saved = json.loads((Path(demo.server_app.uploaded_file_dir) / "deep_links" / link / "state.json").read_text())
        by_elem = {c["props"].get("elem_id"): c for c in saved}
        assert {c["id"] for c in saved} <= set(demo.blocks)  # every saved component is one of the page's
        assert by_elem["prompt"]["id"] == prompt._id and by_elem["prompt"]["props"]["value"] == "the cat"
        assert by_elem["answer"]["props"]["value"] == "THE CAT" and by_elem["answer"]["props"]["visible"] is True
    finally:
        demo.close()


def test_run_is_disabled_while_it_runs_and_enabled_again_after_success_or_failure():
    from videolisa.ui import page

    demo = page.build_demo(ROOT / "assets", ROOT / "examples", cache_examples=False)
    fns = list(demo.fns.values())
    run = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "vl-run")
    busy, idle = (page._button_js(page.BUSY_LABEL, interactive=False),
                  page._button_js(page.RUN_LABEL, interactive=True))

    def after(fn, *, failure):
        return [f for f in fns if f.trigger_after == fn._id and f.trigger_only_on_failure == failure]

    runs = [fn for fn in fns if fn.name == "segment"]
    assert len(runs) == 2  # the Run button and Shift+Enter in the prompt
    for fn in runs:
        (before,) = [f for f in fns if f._id == fn.trigger_after]
        assert before.js == busy and before.outputs == [run] and before.fn is None
        # An error: the page follows the failed event with its failure events only.
        assert [(f.js, f.outputs) for f in after(fn, failure=True)] == [(idle, [run])]
        step = fn  # the result shown, the chain ends with the button back
        while following := after(step, failure=False):
            (step,) = following
        assert (step.js, step.outputs) == (idle, [run])


def _contrast(colors, background) -> np.ndarray:
    """WCAG contrast ratios of RGB colours [..., 3] against one background colour."""
    def luminance(c):
        c = np.asarray(c, np.float64) / 255
        return np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4) @ [0.2126, 0.7152, 0.0722]

    a, b = luminance(colors), luminance(background)
    return (np.maximum(a, b) + 0.05) / (np.minimum(a, b) + 0.05)


@pytest.mark.parametrize("scheme_name, background", [("LIGHT", (255, 255, 255)), ("DARK", (30, 41, 59))])
def test_the_timeline_reads_on_its_colour_schemes_background(scheme_name, background):
    from videolisa.ui import timeline

    track = timeline.Track("Target 1", (230, 159, 0), np.array([0.0, 10.0, 20.0, 5.0]), (1, 3))
    rgba = timeline.draw_timeline([track], [0.0, 0.1, 0.2, 0.3], [0, 1, 2, 3], [1, 2],
                                  scheme=getattr(timeline, scheme_name)).astype(np.float64)
    assert rgba.shape[-1] == 4 and rgba[0, 0, 3] == 0  # transparent: the page's own background shows through
    alpha = rgba[..., 3:] / 255
    shown = rgba[..., :3] * alpha + np.asarray(background, np.float64) * (1 - alpha)  # as the page composites it
    # Left of the plot there is only text: the y axis in the muted colour, the target's name below it in ink.
    axis, names = shown[30:190, :80], shown[-30:, :80]
    assert _contrast(axis, background).max() >= 4.5 and _contrast(names, background).max() >= 4.5


def test_url_parameters_open_an_example_with_its_prompt(served):
    from videolisa.ui import page
    from videolisa.ui.examples import load_examples

    examples = load_examples(ROOT / "examples")
    assert {"bunny", "cat"} <= {e.id for e in examples}
    request = types.SimpleNamespace(query_params={"example": "bunny"})
    video, image, prompt = page._open_from_url(examples, request)
    assert video.endswith("big_buck_bunny.mp4") and image is None and "woken up" in prompt
    request = types.SimpleNamespace(query_params={"example": "cat", "prompt": "the whiskers"})
    video, image, prompt = page._open_from_url(examples, request)
    assert video is None and image.endswith("chelsea_the_cat.jpg") and prompt == "the whiskers"


def test_an_unknown_example_in_the_url_is_named_in_a_titled_warning(monkeypatch):
    import gradio as gr

    from videolisa.ui import page
    from videolisa.ui.examples import load_examples

    said = []
    monkeypatch.setattr(gr, "Warning", lambda message, **kwargs: said.append((kwargs.get("title"), message)))
    request = types.SimpleNamespace(query_params={"example": "dragon"})
    assert page._open_from_url(load_examples(ROOT / "examples"), request) == (gr.skip(),) * 3
    [(title, message)] = said
    assert title == "No such example" and "'dragon'" in message and "bunny" in message


def test_example_media_are_small_and_attributed():
    from videolisa.ui.examples import load_examples
    from videolisa.video import probe

    examples = load_examples(ROOT / "examples")
    attribution = (ROOT / "examples" / "README.md").read_text()
    for example in examples:
        assert example.path.stat().st_size < 2_000_000
        assert example.path.name in attribution
    bunny = probe(ROOT / "examples" / "big_buck_bunny.mp4")
    assert bunny.has_audio and bunny.duration < 60


def test_request_directories_are_fresh_and_pruned_after_their_time(tmp_path):
    from videolisa.ui import files

    a, b = files.new_request_dir(), files.new_request_dir()
    assert a != b and a.parent == b.parent == files.output_root()
    old, new = tmp_path / "run-old", tmp_path / "run-new"
    old.mkdir(), new.mkdir()
    (old / "x.mp4").write_bytes(b"0")
    now = old.stat().st_mtime + files.OUTPUT_TTL_S + 1
    import os

    os.utime(new, (now, now))
    assert files.prune(tmp_path, now=now) == [old]
    assert not old.exists() and new.exists()


# ---------------------------------------------------------------------------------- model and ZeroGPU


def test_gpu_seconds_follow_frames_resolution_and_targets_and_respect_the_cap(monkeypatch):
    from videolisa.ui.serving import GPU_MIN_S, GpuJob, gpu_seconds

    def job(frames=100, size=(640, 360), prompts=("a",), post=False):
        return GpuJob("v.mp4", prompts, 32, 4, post, True, frames, *size)

    monkeypatch.delenv("VIDEOLISA_GPU_SECONDS_MAX", raising=False)
    assert GPU_MIN_S <= gpu_seconds(job(frames=1)) <= 40  # an image asks for little: better queue priority
    assert gpu_seconds(job(frames=400)) > gpu_seconds(job(frames=200))
    assert gpu_seconds(job(frames=300, size=(1920, 1080))) > gpu_seconds(job(frames=300))
    assert gpu_seconds(job(prompts=("a", "b"), post=True)) > gpu_seconds(job(post=True))
    # 4K is read at 1080p for inference, so it costs what 1080p costs.
    assert gpu_seconds(job(frames=200, size=(3840, 2160))) == gpu_seconds(job(frames=200, size=(1920, 1080)))
    assert gpu_seconds(job(frames=1500, size=(1920, 1080))) == 120
    monkeypatch.setenv("VIDEOLISA_GPU_SECONDS_MAX", "60")
    assert gpu_seconds(job(frames=1500, size=(1920, 1080))) == 60


def test_a_job_over_the_gpu_cap_is_shortened_to_what_fits(monkeypatch):
    from videolisa.ui.serving import GpuJob, fit_to_gpu_cap, gpu_seconds, on_zero_gpu

    monkeypatch.delenv("VIDEOLISA_GPU_SECONDS_MAX", raising=False)
    minute = GpuJob("v.mp4", ("a", "b"), 32, 4, True, True, 1800, 1920, 1080)  # 60 s at 30 fps, 2 targets, refined
    fitted, sentence = fit_to_gpu_cap(minute, fps=30.0)
    assert 0 < fitted.num_frames < 1800 and fitted.prompts == minute.prompts and fitted.post_optimize
    longer = GpuJob("v.mp4", ("a", "b"), 32, 4, True, True, fitted.num_frames + 1, 1920, 1080)
    with monkeypatch.context() as uncapped:
        uncapped.setenv("VIDEOLISA_GPU_SECONDS_MAX", "100000")  # what each would declare without the cap
        assert gpu_seconds(fitted) <= 120 < gpu_seconds(longer)  # the most frames that fit, margin included
    assert f"first {fitted.num_frames / 30:.1f} s ({fitted.num_frames} frames)" in sentence
    assert "120 s" in sentence and "post-optimization off" in sentence and "fewer targets" in sentence

    # Without post-optimization one target fits half a minute of 480p: nothing changes.
    short = GpuJob("v.mp4", ("a",), 32, 4, False, False, 900, 854, 480)
    assert fit_to_gpu_cap(short, fps=30.0) == (short, None)
    # A lower cap shortens that too, and the advice fits what was asked.
    monkeypatch.setenv("VIDEOLISA_GPU_SECONDS_MAX", "60")
    shorter, sentence = fit_to_gpu_cap(short, fps=30.0)
    assert shorter.num_frames < 900 and "60 s" in sentence and "fewer targets" not in sentence
    assert "Trim the video" in sentence

    assert on_zero_gpu({"SPACES_ZERO_GPU": "true"}) and not on_zero_gpu({})


def test_gpu_arguments_and_results_pickle(served, clip):
    import gradio as gr

    from videolisa.ui import serving

    job = serving.GpuJob(str(clip), ("a", "b"), 4, 2, False, False, 3, 96, 64)
    progress = gr.Progress()
    assert pickle.loads(pickle.dumps((job, progress)))[0] == job
    results = serving.run_on_gpu(job, None)
    back = pickle.loads(pickle.dumps(results))
    assert [r.prompt for r in back] == ["a", "b"]
    assert back[0].masks == results[0].masks and back[1].dense_frame_indices == results[1].dense_frame_indices
    np.testing.assert_array_equal(back[0].scores, results[0].scores)


def test_library_errors_leave_the_gpu_function_as_gradio_errors(served, clip):
    import gradio as gr

    from videolisa.ui import serving

    # A ZeroGPU worker passes gr.Error on as it is (pickled); anything else becomes "ZeroGPU worker error".
    job = serving.GpuJob(str(clip), ("x" * 4001,), 4, 2, False, False, 3, 96, 64)
    with pytest.raises(gr.Error) as caught:
        serving.run_on_gpu(job)
    assert "keep it under 4000" in str(pickle.loads(pickle.dumps(caught.value)))


def test_the_gpu_function_is_decorated_with_a_sized_duration(monkeypatch):
    import spaces

    from videolisa.ui import serving

    # Off Spaces the real decorator is a no-op: the function runs in this process.
    assert serving.gpu is spaces.GPU
    assert spaces.GPU(duration=serving.gpu_seconds)(serving.gpu_seconds) is serving.gpu_seconds

    seen = {}
    fake = types.ModuleType("spaces")

    def GPU(duration):
        seen["duration"] = duration
        return lambda fn: seen.setdefault("fn", fn)

    fake.GPU = GPU
    monkeypatch.setitem(sys.modules, "spaces", fake)
    spec = importlib.util.spec_from_file_location("videolisa.ui._serving_on_spaces", serving.__file__)
    copy = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, copy)  # dataclasses look their module up while it executes
    spec.loader.exec_module(copy)
    assert seen["duration"] is copy.gpu_seconds and seen["fn"].__name__ == "run_on_gpu"

    # app.py imports spaces before anything that could touch CUDA.
    tree = ast.parse((ROOT / "app.py").read_text())
    imports = sorted((node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))),
                     key=lambda node: node.lineno)
    assert isinstance(imports[0], ast.Import) and imports[0].names[0].name == "spaces"


def test_without_weights_the_page_opens_and_run_explains(monkeypatch, tmp_path):
    import gradio as gr

    from videolisa.errors import ModelUnavailable
    from videolisa.ui import page, serving

    engine = serving.load_from_environment({"VIDEOLISA_MODEL": str(tmp_path / "missing")})
    assert not engine.status.ready and "missing" in engine.status.problem
    with pytest.raises(ModelUnavailable):
        engine.require()
    monkeypatch.setattr(serving, "_engine", engine)
    demo = page.build_demo(ROOT / "assets", ROOT / "examples")
    banners = [b.value for b in demo.blocks.values() if isinstance(b, gr.HTML) and "vl-banner" in str(b.value)]
    assert banners and "The model is not loaded" in banners[0] and "missing" in banners[0]
    clip = make_clip(tmp_path, "c", size=(32, 32), frames=1, fps=1, audio=False)
    with pytest.raises(gr.Error, match="missing"):
        page.segment(str(clip), None, "the square")


def test_tiny_mode_writes_a_random_checkpoint_and_says_so():
    from videolisa.ui import page, serving

    engine = serving.load_from_environment({"VIDEOLISA_MODEL": "tiny"})
    assert engine.status.ready and engine.status.tiny
    assert Path(engine.pipeline.sam2).is_dir()  # post-optimization works in the preview too
    assert engine.pipeline.load_post_optimizer().name == "tiny random preview"  # what its notices say, not the folder
    assert "meaningless" in page._banner_html(engine.status)


def test_a_new_input_or_clear_cancels_the_run_in_progress(served):
    from videolisa.ui import page

    demo = served["app"].demo
    runs = {i for i, fn in demo.fns.items() if fn.fn is page.segment}
    ids = {block.elem_id: block._id for block in demo.blocks.values() if getattr(block, "elem_id", None)}
    image = next(b._id for b in demo.blocks.values() if getattr(b, "label", None) == "Image"
                 and b.__class__.__name__ != "Tab")
    assert len(runs) == 2  # Run and Shift+Enter
    for target in ((ids["vl-video"], "input"), (image, "input"), (ids["vl-clear"], "click")):
        cancelled = {i for fn in demo.fns.values() if target in fn.targets for i in fn.cancels}
        assert runs <= cancelled, target
