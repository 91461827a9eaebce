"""The Gradio page: layout and events. Model work goes through ``serving``, drawing through ``results``.

A session's last result lives in its own ``gr.State`` (masks and paths, nothing global), every
request writes into a fresh directory that goes when the session's result is replaced, forgotten or
expires, and library errors reach people as ``gr.Error`` sentences.
"""

from __future__ import annotations

import html
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Optional

import gradio as gr

from ..errors import InvalidPrompt, InvalidVideo, VideoLISAError
from ..pipeline import run_notices
from ..settings import APP_LIMITS, NUM_FRAMES_DENSE, NUM_FRAMES_SPARSE, env_number
from ..source import check_file, frames_to_process, probe_within
from . import files, results, serving, sharing, uploads
from .examples import Example, find_example, load_examples
from .inputs import choice, image_input, setting
from .results import Look, RunResult
from .timeline import DARK

log = logging.getLogger(__name__)

MAX_TARGETS = 4
MAX_QUEUE = 20
# Gradio keeps a copy of the page's config per session (about 1 MB): this many sessions, least recent out.
MAX_SESSIONS = 1000
THEME = gr.themes.Soft(primary_hue="indigo", secondary_hue="purple", neutral_hue="slate")

PAPER_URL = "https://arxiv.org/abs/2409.19603"
CODE_URL = "https://github.com/showlab/VideoLISA"
MODEL_URL = "https://huggingface.co/ZechenBai/VideoLISA-3.8B"

HOW_IT_WORKS = (
    "How it works: the language model reads 32 frames spread over the video (4 of them in full detail, by default), "
    "reasons about your instruction, and answers with one [SEG] token; that single token prompts SAM to "
    "segment the target on every frame."
)
ANSWER_PLACEHOLDER = '<div class="vl-placeholder">The model\'s answer appears here, coloured like its mask.</div>'
RUN_LABEL, BUSY_LABEL = "Run", "Running…"
EXPORT_LABELS = ("PNG zip", "NumPy npz", "COCO RLE", "Mask video", "Run card")  # in results.EXPORT_KINDS order
CONTOUR_CHOICES = (("fill + outline", "on"), ("outline only", "only"), ("fill only", "off"))  # render's modes
DEFAULT_LOOK = Look()


def launch_options(assets: Path, env: Mapping[str, str] = os.environ) -> dict:
    """What ``demo.launch`` needs besides the address (Gradio 6 takes theme and CSS at launch).

    Uploads over the size limit are refused before they are stored (the page and gradio_client check
    first; the server answers a raw upload with our sentence), and the sessions kept in memory are
    bounded (VIDEOLISA_MAX_SESSIONS): an evicted session's look controls no longer redraw its result. A setting
    of the environment that is not a number raises InvalidSettings.
    """
    # Settings read per request are read once here too, so a typo in them stops the start, not the first run.
    files.output_budget_bytes(env)
    serving.gpu_cap_seconds(env)
    return dict(theme=THEME, css_paths=[Path(assets) / "style.css"], max_file_size=f"{APP_LIMITS.max_upload_mb:g}mb",
                footer_links=["api", "gradio", "settings"], run_history=False,
                app_kwargs=dict(middleware=uploads.middleware()),
                state_session_capacity=env_number("VIDEOLISA_MAX_SESSIONS", MAX_SESSIONS, minimum=1, env=env))


# ---------------------------------------------------------------------------------------------- helpers


def _source(video: Optional[str], image: Optional[str]) -> str:
    if video:
        return video
    if image:
        return image
    raise InvalidVideo("Upload a video or an image first (or pick one of the examples).")


def _targets(prompts: Optional[str]) -> list[str]:
    targets = results.target_prompts(prompts)
    if not targets:
        raise InvalidPrompt("Write what to segment in the prompt box, e.g. 'the animal that just woke up'.")
    if len(targets) > MAX_TARGETS:
        raise InvalidPrompt(f"There are {len(targets)} targets (one per line); this demo takes up to {MAX_TARGETS}.")
    return targets


def _look(color, opacity, contour, dim_background) -> Look:
    look = Look(color=color or DEFAULT_LOOK.color, opacity=float(opacity), contour=contour,
                dim_background=float(dim_background))
    look.style(1)  # validates: a bad value is an InvalidSettings with a sentence
    return look


def _limits_line() -> str:
    return f"**Limits:** {APP_LIMITS.describe()}, up to {MAX_TARGETS} targets per run."


def _banner_html(status: serving.ModelStatus) -> str:
    if not status.ready:
        return (f'<div class="vl-banner vl-error"><b>The model is not loaded.</b> {html.escape(status.problem or "")} '
                "The page works, but Run will say this until the weights can be loaded.</div>")
    if status.tiny:
        return ('<div class="vl-banner vl-warn"><b>Preview mode:</b> this page runs a tiny <i>random</i> '
                "checkpoint, so its masks and answers are meaningless. Set <code>VIDEOLISA_MODEL</code> to the "
                "released checkpoint for real results.</div>")
    return ""


def _header_html(assets: Path) -> str:
    logo = (Path(assets) / "logo.svg").read_text(encoding="utf-8")
    logo_uri = "data:image/svg+xml;utf8," + logo.replace('"', "'").replace("#", "%23").replace("\n", " ")
    links = " ".join(f'<a href="{url}" target="_blank" rel="noopener">{text}</a>' for text, url in
                     (("Paper (NeurIPS 2024)", PAPER_URL), ("Official code", CODE_URL), ("Model", MODEL_URL)))
    return (
        f'<div class="vl-header"><img src="{logo_uri}" alt=""><div>'
        "<h1>VideoLISA: reasoning video segmentation</h1>"
        '<p class="vl-subtitle">One Token to Seg Them All: Language Instructed Reasoning Segmentation in Videos '
        "(Bai et al., NeurIPS 2024)</p>"
        f'<div class="vl-links">{links}</div></div></div>'
        f'<p class="vl-how">{html.escape(HOW_IT_WORKS)}</p>'
    )


def _describe(video: Optional[str], image: Optional[str]) -> str:
    """The limits, and what will be processed of the current input (said before running)."""
    lines = [_limits_line()]
    path = video or image
    if path:
        try:
            info = probe_within(check_file(path, APP_LIMITS), APP_LIMITS)  # sizes first; decoded up to the limits
            lines.append(f"**Your {'video' if video else 'image'}:** " + results.input_summary(info, APP_LIMITS))
        except VideoLISAError as exc:
            lines.append(f"**This file cannot be used:** {exc}")
    return "\n\n".join(lines)


def _render(result: RunResult, look: Look, out_dir: Path, progress) -> tuple:
    """The visible outputs of a result: overlay, answer, comparison, keyframes, timeline."""
    progress(0.9, desc="Encoding the result video")
    overlay = results.render_overlay(result, look, out_dir)
    comparison = None
    if result.post_optimized:
        progress(0.93, desc="Encoding the raw vs refined comparison")
        comparison = results.render_comparison(result, look, out_dir)
    progress(0.97, desc="Drawing the keyframes and the timeline")
    timeline = results.timeline(result, look)
    return (str(overlay), results.answer_html(result, look), str(comparison) if comparison else None,
            results.keyframes(result, look), timeline)


def _button_js(label: str, *, interactive: bool) -> str:
    """A browser-side event function that relabels a button and enables or disables it."""
    return f"() => ({{__type__: 'update', value: {json.dumps(label)}, interactive: {json.dumps(interactive)}}})"


def _reveal(comparison, timeline, *downloads):
    """Show the outputs that have a value (comparison, timeline, downloads) and hide the others (page only).

    The keyframes and the dark scheme's timeline go with the timeline: a still image has neither (its
    one frame is the result itself). Returns updates for comparison, timeline, dark timeline, keyframes
    and the downloads.
    """
    return tuple(gr.update(visible=value is not None)
                 for value in (comparison, timeline, timeline, timeline, *downloads))


def _dark_timeline(result: Optional[RunResult], color: str):
    """The timeline in the dark scheme's colours, which the page shows instead in a dark theme (None without one)."""
    if result is None:
        return None
    return results.timeline(result, replace(DEFAULT_LOOK, color=color or DEFAULT_LOOK.color), DARK)


# ---------------------------------------------------------------------------------------------- events


def segment(video: Optional[str], image: Optional[str], prompts: str, sparse_frames: int = NUM_FRAMES_SPARSE,
            dense_frames: int = NUM_FRAMES_DENSE, post_optimization: bool = False, text_answer: bool = True,
            color: str = DEFAULT_LOOK.color, opacity: float = DEFAULT_LOOK.opacity,
            contour: str = DEFAULT_LOOK.contour, dim_background: float = DEFAULT_LOOK.dim_background,
            previous: Optional[RunResult] = None, progress=gr.Progress()):
    """Segment the targets described in `prompts` (one per line, up to 4) on every frame of `video`, or on `image`.

    Returns the video with the masks drawn (original sound kept), the model's answers (HTML), the raw vs
    post-optimized comparison video (when post-optimization ran), the dense keyframes, the timeline image,
    the downloads (indexed PNG zip, npz, COCO RLE JSON, mask video, run card) and a JSON summary.
    """
    try:
        source = _source(video, image)
        targets = _targets(prompts)
        look = _look(color, opacity, contour, dim_background)
        progress(0.0, desc="Decoding the upload")
        info = probe_within(check_file(source, APP_LIMITS), APP_LIMITS)  # sizes first; decoded up to the limits
        job = serving.GpuJob(video_path=source, prompts=tuple(targets), num_frames_sparse=int(sparse_frames),
                             num_frames_dense=int(dense_frames), post_optimize=bool(post_optimization),
                             generate_text=bool(text_answer), num_frames=frames_to_process(info, APP_LIMITS),
                             width=info.width, height=info.height)
        shortened = None
        if serving.on_zero_gpu():
            job, shortened = serving.fit_to_gpu_cap(job, info.fps)
        segmentations = serving.run_on_gpu(job, progress)
        if shortened:
            segmentations = [replace(s, notices=(*s.notices, shortened)) for s in segmentations]
        run_dir = files.new_request_dir()
        name = Path(source).stem[:60] or "input"
        result = RunResult(source=source, name=name, run_dir=str(run_dir), info=info,
                           segmentations=tuple(results.kept(s) for s in segmentations), exports=None)
        # The downloads are written while the result video is drawn and encoded: both are mostly C code and
        # ffmpeg processes, which overlap on the machine's cores (progress is reported from this thread only).
        with ThreadPoolExecutor(1) as pool:
            exporting = pool.submit(results.export_run, segmentations, info, run_dir, name)
            visible = _render(result, look, files.new_subdir(run_dir, "look-"), progress)
            progress(0.98, desc="Writing the downloads")
            result = replace(result, exports=exporting.result())
    except VideoLISAError as exc:
        raise gr.Error(str(exc), title="VideoLISA could not run") from exc
    _forget(previous)  # the session's earlier result is replaced: its files go
    for sentence in run_notices(result.segmentations):
        gr.Info(sentence)
    return (*visible, *(str(p) for p in result.exports.paths()), results.details(result), result)


def restyle(result: Optional[RunResult], color, opacity, contour, dim_background, shown: Optional[str] = None,
            progress=gr.Progress()):
    """Re-render this session's last result with a new look: no model call. Returns the visible outputs and
    the dark scheme's timeline.

    Without a result in the session the page says why nothing is redrawn: ``shown`` is the answer on
    the page, which tells a page with no result yet from one whose result the server no longer holds.
    """
    if result is None:
        if shown and shown != ANSWER_PLACEHOLDER:
            gr.Warning(f"The server no longer holds this result (results are kept for {files.OUTPUT_TTL_S // 3600} "
                       "hours), so it cannot be redrawn: press Run to make it again in this look.",
                       title="Nothing to redraw")
        else:
            gr.Info("There is no result to redraw yet: press Run, and it will be drawn in this look.",
                    title="Nothing to redraw")
        return (gr.skip(),) * 6
    try:
        look = _look(color, opacity, contour, dim_background)
        if not (Path(result.source).is_file() and Path(result.run_dir).is_dir()):
            raise InvalidVideo("This result has expired (its input was cleaned up): press Run again.")
        return (*_render(result, look, files.new_subdir(Path(result.run_dir), "look-"), progress),
                results.timeline(result, look, DARK))
    except VideoLISAError as exc:
        raise gr.Error(str(exc), title="Could not redraw the result") from exc


# ---------------------------------------------------------------------------------------------- page


def build_demo(assets: Path, examples_dir: Path, cache_examples: Optional[bool] = None) -> gr.Blocks:
    """The whole page. ``cache_examples`` defaults to lazy caching when the real model is loaded."""
    status = serving.engine().status
    examples = load_examples(examples_dir)
    sharing.install()
    if cache_examples is None:
        cache_examples = status.ready and not status.tiny

    # Gradio's cache (uploads and its copies of our outputs) is swept every 10 minutes for files past our TTL.
    with gr.Blocks(title="VideoLISA: reasoning video segmentation", delete_cache=(600, files.OUTPUT_TTL_S)) as demo:
        gr.HTML(_header_html(assets))
        gr.HTML(_banner_html(status), visible=not status.ready or status.tiny, elem_id="vl-banner")
        state = gr.State(None, time_to_live=files.OUTPUT_TTL_S, delete_callback=_forget)

        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                with gr.Tabs(selected="video") as tabs:
                    with gr.Tab("Video", id="video"):
                        video = gr.Video(label="Video", sources=["upload", "webcam"], height=360,
                                         elem_id="vl-video")
                    with gr.Tab("Image", id="image"):
                        image = image_input(label="Image", sources=["upload", "clipboard"], height=360)
                summary = gr.Markdown(_describe(None, None), elem_classes="vl-limits", elem_id="vl-summary")
            with gr.Column(scale=2):
                prompts = gr.Textbox(
                    label="What should be segmented?", lines=3, max_lines=MAX_TARGETS + 2,
                    placeholder="e.g. Which character has just woken up? Please segment it.",
                    info=f"One target per line (up to {MAX_TARGETS}), each in its own colour. Shift+Enter runs.",
                )
                with gr.Row():
                    run = gr.Button(RUN_LABEL, variant="primary", scale=2, elem_id="vl-run")
                    clear = gr.ClearButton([video, image, prompts], value="Clear", scale=1, elem_id="vl-clear")
                with gr.Accordion("Settings", open=False, elem_id="vl-settings"):
                    with gr.Row():
                        sparse_frames = setting(4, 64, value=NUM_FRAMES_SPARSE, step=1, label="T_sparse",
                                                  info="Frames the model samples over the video.",
                                                  elem_id="vl-sparse")
                        dense_frames = setting(1, 8, value=NUM_FRAMES_DENSE, step=1, label="T_dense",
                                                 info="Of those, frames seen in full detail.")
                    with gr.Row():
                        post_optimization = gr.Checkbox(
                            False, label="Post-optimization (SAM 2)",
                            info="Re-track from the dense keyframes; shows raw vs refined side by side.")
                        text_answer = gr.Checkbox(True, label="Text answer", info="Let the model answer in words.")
                    gr.Markdown("**Look** (redraws the last result without running the model again)")
                    with gr.Row():
                        color = gr.ColorPicker(DEFAULT_LOOK.color, label="Colour of target 1")
                        contour = choice(list(CONTOUR_CHOICES), value=DEFAULT_LOOK.contour, label="Masks drawn as")
                    with gr.Row():
                        opacity = setting(0, 1, value=DEFAULT_LOOK.opacity, step=0.05, label="Opacity",
                                            elem_id="vl-opacity")
                        dim_background = setting(0, 1, value=DEFAULT_LOOK.dim_background, step=0.05,
                                                   label="Dim the background")
                gr.DeepLinkButton(value="Share this result", size="md")
                gr.Markdown("A shared link reopens this page with the result, its input, prompt, settings and look, "
                            "while this server keeps its files; `?example=<id>` links to an example last for good.",
                            elem_classes="vl-limits")
        examples_area = gr.Column()

        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                overlay = gr.Video(label="Result: masks on every frame", interactive=False, height=420,
                                   buttons=["download"], elem_id="vl-result")
            with gr.Column(scale=2):
                gr.Markdown("#### Answer")
                answer = gr.HTML(ANSWER_PLACEHOLDER, elem_id="vl-answer")
                with gr.Row(elem_classes="vl-downloads"):
                    downloads = [
                        gr.DownloadButton(label, visible=False, size="sm", variant="secondary", min_width=90)
                        for label in EXPORT_LABELS
                    ]
        # No label badge: it would cover the raw side's caption, and the captions say what each side is.
        comparison = gr.Video(label="Raw VideoLISA masks (left) vs post-optimized (right)", interactive=False,
                              visible=False, show_label=False, elem_id="vl-comparison")
        keyframes = gr.Gallery(label="Dense keyframes: the frames the model saw in full detail", columns=4,
                               object_fit="contain", allow_preview=True, elem_id="vl-keyframes")
        timeline = gr.Image(label="Timeline", type="filepath", interactive=False, visible=False, show_label=False,
                            buttons=["download"], elem_id="vl-timeline")
        # The same timeline in the dark scheme's colours: the stylesheet shows the one that suits the theme.
        timeline_dark = gr.Image(label="Timeline", type="filepath", interactive=False, visible=False,
                                 show_label=False, buttons=["download"], elem_id="vl-timeline-dark")
        with gr.Accordion("Run details", open=False):
            run_details = gr.JSON(label="Summary")

        visible_outputs = [overlay, answer, comparison, keyframes, timeline]
        all_outputs = [*visible_outputs, *downloads, run_details]
        inputs = [video, image, prompts, sparse_frames, dense_frames, post_optimization, text_answer, color,
                  opacity, contour, dim_background]
        look_inputs = [state, color, opacity, contour, dim_background, answer]

        revealed = [comparison, timeline, *downloads]
        revealing = [comparison, timeline, timeline_dark, keyframes, *downloads]
        if examples:
            with examples_area:
                gr.Markdown("### Examples\nClick one to load it, then Run. Add `?example=<id>` to this page's address "
                            "to link to one: " + ", ".join(f"`{e.id}`" for e in examples) + ".")
                # Cached outputs leave out the two that can be empty (comparison, timeline): Gradio's cache cannot
                # read an empty file output back. The restored state draws them.
                listed = gr.Examples(
                    examples=[_example_row(e) for e in examples], inputs=[video, image, prompts],
                    outputs=[overlay, answer, keyframes, *downloads, run_details], fn=_run_example,
                    example_labels=[e.label for e in examples], cache_examples=cache_examples,
                    cache_mode="lazy" if cache_examples else None,
                )
            if cache_examples:
                listed.load_input_event.then(
                    _restore_cached, [video, image, *downloads, state], [state, comparison, timeline, timeline_dark],
                    api_visibility="private").then(_reveal, revealed, revealing, api_visibility="private")
        gr.HTML('<div class="vl-footer">Example media: <i>Big Buck Bunny</i> © Blender Foundation (CC BY 3.0); '
                "photos from scikit-image (CC0). Outputs are kept for two hours, then deleted.</div>")

        # Run is disabled and says so from the click until the result (or the error) is shown. Both changes are
        # made in the browser: a link shared meanwhile keeps the button as it was. (The page follows an event
        # that failed with its .failure() events only, not with .then().)
        gpu_event = dict(concurrency_limit=1, concurrency_id="gpu")
        page_only = dict(queue=False, api_visibility="private")
        busy, idle = _button_js(BUSY_LABEL, interactive=False), _button_js(RUN_LABEL, interactive=True)
        runs = []
        for trigger, api in ((run.click, dict(api_name="segment")), (prompts.submit, dict(api_visibility="private"))):
            running = trigger(None, None, run, js=busy, **page_only).then(
                segment, [*inputs, state], [*all_outputs, state], **api, **gpu_event)
            runs.append(running)
            running.then(_dark_timeline, [state, color], timeline_dark, api_visibility="private").then(
                _reveal, revealed, revealing, api_visibility="private").then(None, None, run, js=idle, **page_only)
            running.failure(None, None, run, js=idle, **page_only)

        render_event = dict(concurrency_limit=2, concurrency_id="render", api_visibility="private",
                            trigger_mode="always_last")
        for control, trigger in ((opacity, "release"), (dim_background, "release"), (color, "change"),
                                 (contour, "change")):
            getattr(control, trigger)(restyle, look_inputs, [*visible_outputs, timeline_dark], **render_event)

        # A new input makes the last result stale: forget it, show the new input's tab and what will be processed.
        # The result on the page goes when people change the input (not when an example sets it: that brings
        # its own result), and so does a run still going: it is cancelled, so that its result never lands
        # next to the new input, and Run is ready again (a cancelled run does not reach its own .then()).
        for event in (video.input, image.input, clear.click):
            event(_cleared_result, None, [*all_outputs, timeline_dark], api_visibility="private", queue=False,
                  cancels=runs).then(None, None, run, js=idle, **page_only)
        video.change(_on_video, [video, image, state], [image, tabs, summary, state], api_visibility="private",
                     concurrency_limit=2, concurrency_id="probe")
        image.change(_on_image, [video, image, state], [video, tabs, summary, state], api_visibility="private",
                     concurrency_limit=2, concurrency_id="probe")

        def open_from_url(request: gr.Request):
            return _open_from_url(examples, request)

        # A shared link brings back the page's values, not the session's result: rebuild it from the
        # input and the downloads, so that a new look redraws it there too.
        demo.load(open_from_url, None, [video, image, prompts], api_visibility="private").then(
            _restore_shared, [video, image, *downloads], state, api_visibility="private")
    return demo


def _forget(result: Optional[RunResult]) -> None:
    """A session's result ends with the session, or when replaced: its files go too (the page holds Gradio's copies)."""
    if result is not None:
        files.remove_request_dir(result.run_dir)


def _example_row(example: Example) -> list:
    path = str(example.path)
    return [path if example.is_video else None, None if example.is_video else path, example.prompt_text]


def _run_example(video, image, prompts):
    """Examples run with the default settings and look; Gradio caches these outputs, and ``_restore_cached``
    rebuilds the state (and the timeline) from the cached downloads."""
    overlay, answer, _comparison, gallery, _timeline, *downloads_and_details, _state = segment(video, image, prompts)
    return (overlay, answer, gallery, *downloads_and_details)


def _restored(source: Optional[str], downloads) -> Optional[RunResult]:
    """A result rebuilt from its input and downloads, or None where they are missing or cannot be read."""
    if not source or not all(downloads):
        return None
    run_dir = files.new_request_dir()
    try:
        return results.restore(source, results.Exports(*map(Path, downloads)), str(run_dir))
    except (VideoLISAError, OSError, ValueError, KeyError, TypeError):
        log.exception("A result could not be restored from its downloads")
        files.remove_request_dir(str(run_dir))
        return None


def _restore_cached(video, image, *downloads_and_state):
    """A cached example's outputs come from Gradio's cache without a session state: rebuild the state from
    its downloads, so that a new look redraws it, and draw its timeline. Returns (state, comparison,
    timeline, dark timeline); where the downloads cannot be read the look simply waits for Run."""
    *downloads, previous = downloads_and_state
    result = _restored(video or image, downloads)
    if result is None:
        return gr.skip(), None, None, None
    _forget(previous)
    # Examples are drawn in the default look.
    return result, None, results.timeline(result, DEFAULT_LOOK), results.timeline(result, DEFAULT_LOOK, DARK)


def _restore_shared(video, image, *downloads):
    """The state of a page opened from a shared link, whose values came back without it (else unchanged)."""
    result = _restored(video or image, downloads)
    return gr.skip() if result is None else result


def _cleared_result():
    """The result area as a new page shows it: for the outputs (overlay, answer, comparison, keyframes,
    timeline, downloads, run details, dark timeline)."""
    hidden = gr.update(value=None, visible=False)
    return (None, ANSWER_PLACEHOLDER, hidden, [], hidden, *(hidden for _ in EXPORT_LABELS), None, hidden)


def _on_new_input(previous: Optional[RunResult], source: Optional[str]):
    """The state once the input changed: kept if it is the result of this very input (a cached example
    restores it while its input loads), else forgotten with its files."""
    if previous is not None and source and previous.source == source:
        return gr.skip()
    _forget(previous)
    return None


def _on_video(video, image, previous):
    state = _on_new_input(previous, video)
    if video:
        return None, gr.Tabs(selected="video"), _describe(video, None), state
    return gr.skip(), gr.skip(), _describe(None, image), state


def _on_image(video, image, previous):
    state = _on_new_input(previous, image)
    if image:
        return None, gr.Tabs(selected="image"), _describe(None, image), state
    return gr.skip(), gr.skip(), _describe(video, None), state


def _open_from_url(examples: tuple[Example, ...], request: gr.Request):
    """?example=<id> opens an example with its prompt (&prompt=... replaces the prompt)."""
    params = request.query_params if request is not None else {}
    wanted, prompt = params.get("example"), params.get("prompt")
    if not wanted:
        return gr.skip(), gr.skip(), prompt if prompt else gr.skip()
    example = find_example(examples, wanted)
    if example is None:
        gr.Warning(f"There is no example called '{wanted}'. Try one of: {', '.join(e.id for e in examples)}.",
                   title="No such example")
        return gr.skip(), gr.skip(), gr.skip()
    video, image, text = _example_row(example)
    return video, image, prompt or text
