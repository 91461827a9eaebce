"""A real browser on the app: upload, prompt, Run, the result plays, the answer shows, a download
works, and a new look redraws without running the model again. Needs Debian's /usr/bin/chromium."""

from __future__ import annotations

import os
import time
import zipfile
from pathlib import Path

import pytest
from media import make_clip, make_image
from test_app import launched_app

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")

# The result video has decoded a picture (and is not the one given as the argument): its source, else null.
RESULT_DECODED = """(previous) => {
    const v = document.querySelector('#vl-result video');
    const ready = v !== null && v.readyState >= 2 && v.videoWidth > 0 && v.currentSrc !== previous;
    return ready ? v.currentSrc : null;
}"""


@pytest.fixture(scope="module")
def browser_page(tiny_model, tmp_path_factory, request):
    playwright_api = pytest.importorskip("playwright.sync_api")
    app = launched_app(tiny_model, tmp_path_factory)
    request.config.add_cleanup(app["app"].demo.close)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(60_000)
        yield app, page
        browser.close()


def test_upload_prompt_run_play_download_and_restyle(browser_page, tmp_path):
    app, page = browser_page
    clip = make_clip(tmp_path, "browser_clip", size=(160, 120), frames=4, fps=8, audio=True)
    page.goto(app["url"])
    page.locator("#vl-summary").get_by_text("Limits:").wait_for()
    page.locator("input[type=file]").first.set_input_files(str(clip))
    page.locator("#vl-summary").get_by_text("All 4 frames will be segmented").wait_for()  # said before running

    # A word longer than the answer card is wide (a URL, a random model's text) wraps inside the card.
    page.get_by_label("What should be segmented?").fill("the moving square\nthe digits " + "0123456789" * 20)
    calls = app["calls"].calls
    page.locator("#vl-run").click()
    first_src = page.wait_for_function(RESULT_DECODED, arg=None).json_value()
    assert app["calls"].calls == calls + 1

    answer = page.locator("#vl-answer")
    answer.get_by_text("the digits").wait_for()
    assert answer.locator(".vl-target").count() == 2
    assert "Visible" in answer.inner_text() or "Not found" in answer.inner_text()
    overflowing = answer.locator(".vl-target").evaluate_all(
        "cards => cards.filter(c => c.scrollWidth > c.clientWidth + 1).length")
    assert overflowing == 0
    label_lines = answer.locator(".vl-label").evaluate_all("""labels => labels.map(l => {
        const range = document.createRange(); range.selectNodeContents(l); return range.getClientRects().length; })""")
    assert label_lines == [1, 1]  # "Target 2" beside its long prompt stays on one line

    with page.expect_download() as download:
        page.get_by_role("button", name="PNG zip").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    with zipfile.ZipFile(saved) as archive:
        assert sorted(n for n in archive.namelist() if n.endswith(".png")) == [f"{i:05d}.png" for i in range(4)]

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "app_result.png"), full_page=True)

    # A new opacity redraws the result from this session's masks: a new video, no model call.
    page.locator("#vl-settings").get_by_text("Settings").click()
    slider = page.locator("#vl-opacity input[type=range]")
    slider.scroll_into_view_if_needed()
    box = slider.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.95, box["y"] + box["height"] / 2)
    page.wait_for_function(RESULT_DECODED, arg=first_src)
    assert app["calls"].calls == calls + 1
    page.screenshot(path=str(ARTIFACTS / "app_restyled.png"), full_page=True)


def test_a_cached_example_redraws_with_a_new_look(browser_page, tmp_path, monkeypatch):
    import json

    from test_app import ROOT
    from videolisa.ui import page as page_module

    app, page = browser_page
    examples = tmp_path / "examples"
    examples.mkdir()
    make_clip(examples, "tiny_example", size=(160, 120), frames=4, fps=8, audio=False)
    make_image(examples, "still", size=(64, 48))
    (examples / "examples.json").write_text(json.dumps(  # a video and an image, as the app's own list has
        [{"id": "tiny", "file": "tiny_example.mp4", "prompts": ["the moving square"]},
         {"id": "still", "file": "still.png", "prompts": ["the picture"]}]))
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path / "cache"))
    demo = page_module.build_demo(ROOT / "assets", examples, cache_examples=True)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True,
                            **page_module.launch_options(ROOT / "assets"))
    try:
        calls = app["calls"].calls
        for visit in range(2):  # the first click runs and caches the example, the second is served from the cache
            page.goto(url)
            page.get_by_text("Tiny example: the moving square").click()
            first_src = page.wait_for_function(RESULT_DECODED, arg=None).json_value()
            page.locator("#vl-answer").get_by_text("the moving square").wait_for()
            assert app["calls"].calls == calls + 1

            # The state was rebuilt from the cached downloads: a new opacity redraws, still without the model.
            page.locator("#vl-settings").get_by_text("Settings").click()
            slider = page.locator("#vl-opacity input[type=range]")
            slider.scroll_into_view_if_needed()
            box = slider.bounding_box()
            page.mouse.click(box["x"] + box["width"] * (0.9 - 0.6 * visit), box["y"] + box["height"] / 2)
            page.wait_for_function(RESULT_DECODED, arg=first_src)
            assert app["calls"].calls == calls + 1
            assert page.locator("#vl-keyframes").is_visible() and page.locator("#vl-timeline").is_visible()

        # A still image: its one frame is the result itself, so no keyframes and no timeline.
        page.get_by_text("Still: the picture").click()
        page.locator("#vl-answer").get_by_text("the picture").wait_for()
        page.locator("#vl-keyframes").wait_for(state="hidden")
        assert not page.locator("#vl-timeline").is_visible()
    finally:
        demo.close()


# The WCAG contrast ratio of each element's text against the box's background, inside every box given.
CONTRASTS = """boxes => boxes.flatMap(box => {
    const lum = c => {
        const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map(v => {
            v = v / 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
        return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const back = lum(getComputedStyle(box).backgroundColor);
    return [box, ...box.querySelectorAll('*')].map(e => {
        const l = [lum(getComputedStyle(e).color), back].sort((a, b) => b - a);
        return (l[0] + 0.05) / (l[1] + 0.05);
    });
})"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_banner_and_notices_stay_readable_in_either_colour_scheme(browser_page, scheme):
    app, page = browser_page
    context = page.context.browser.new_context(viewport={"width": 1400, "height": 1000}, color_scheme=scheme)
    try:
        themed = context.new_page()
        themed.goto(app["url"])
        banner = themed.locator("#vl-banner .vl-banner")
        banner.get_by_text("Preview mode:").wait_for()
        # The notices' markup, as results.py writes it, beside the banner: the same stylesheet applies to both.
        banner.evaluate("""b => b.insertAdjacentHTML('afterend',
            '<ul class="vl-notices"><li><b>Note:</b> the answer reached the <code>max_new_tokens</code> limit</li></ul>')""")
        ratios = themed.locator("#vl-banner .vl-banner, #vl-banner .vl-notices").evaluate_all(CONTRASTS)
        assert len(ratios) >= 6 and min(ratios) >= 4.5, ratios
    finally:
        context.close()


def _click_slider(page, elem_id: str, fraction: float) -> None:
    slider = page.locator(f"#{elem_id} input[type=range]")
    slider.scroll_into_view_if_needed()
    box = slider.bounding_box()
    page.mouse.click(box["x"] + box["width"] * fraction, box["y"] + box["height"] / 2)


def test_a_shared_link_restores_the_result_its_inputs_settings_and_look(browser_page, tmp_path):
    app, page = browser_page
    browser = page.context.browser
    clip = make_clip(tmp_path, "shared_clip", size=(160, 120), frames=4, fps=8, audio=True)
    sharing = browser.new_context(viewport={"width": 1400, "height": 1000},
                                  permissions=["clipboard-read", "clipboard-write"])
    opening = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        sharer = sharing.new_page()
        sharer.set_default_timeout(60_000)
        sharer.goto(app["url"])
        sharer.locator("input[type=file]").first.set_input_files(str(clip))
        sharer.locator("#vl-summary").get_by_text("All 4 frames will be segmented").wait_for()
        sharer.get_by_label("What should be segmented?").fill("the moving square")
        sharer.locator("#vl-settings").get_by_text("Settings").click()
        sharer.locator("#vl-sparse input[type=number]").fill("5")
        sharer.locator("#vl-sparse input[type=number]").press("Enter")
        _click_slider(sharer, "vl-opacity", 0.9)  # a look control touched before the run
        opacity = sharer.locator("#vl-opacity input[type=range]").input_value()
        calls = app["calls"].calls
        sharer.locator("#vl-run").click()
        sharer.wait_for_function(RESULT_DECODED, arg=None)
        sharer.locator("#vl-answer").get_by_text("the moving square").wait_for()
        keyframes = sharer.locator("#vl-keyframes img").count()
        assert keyframes >= 1 and app["calls"].calls == calls + 1
        sharer.locator("#vl-timeline img").wait_for(state="attached")  # the last part of the result to be shown

        sharer.get_by_role("button", name="Share this result").click()
        # The button copies the link once the server has saved the page: poll the clipboard (the check cannot
        # wait for a promise, so each poll reads it for the next one).
        link = sharer.wait_for_function("""() => {
            navigator.clipboard.readText().then(text => { window.copiedLink = text; });
            return window.copiedLink?.includes('deep_link=') ? window.copiedLink : null;
        }""").json_value()

        restored = opening.new_page()
        restored.set_default_timeout(60_000)
        restored.goto(link)
        first_src = restored.wait_for_function(RESULT_DECODED, arg=None).json_value()
        restored.locator("#vl-answer").get_by_text("the moving square").wait_for()
        assert restored.get_by_label("What should be segmented?").input_value() == "the moving square"
        assert restored.locator("#vl-video video").count() == 1  # the input, ready to run again
        restored.locator("#vl-summary").get_by_text("All 4 frames will be segmented").wait_for()
        restored.wait_for_function("n => document.querySelectorAll('#vl-keyframes img').length === n", arg=keyframes)
        # The image loads lazily, once in view, and has no height before: scroll to where it stands.
        restored.wait_for_function("() => document.querySelector('#vl-timeline img') !== null")
        restored.evaluate("document.querySelector('#vl-timeline').scrollIntoView()")
        restored.wait_for_function("() => { const i = document.querySelector('#vl-timeline img');"
                                   " return i !== null && i.complete && i.naturalWidth > 0; }")
        restored.locator("#vl-settings").get_by_text("Settings").click()
        assert restored.locator("#vl-sparse input[type=number]").input_value() == "5"
        assert restored.locator("#vl-opacity input[type=range]").input_value() == opacity

        # The result came back with the page: a new look redraws it there, without the model.
        _click_slider(restored, "vl-opacity", 0.2)
        restored.wait_for_function(RESULT_DECODED, arg=first_src)
        assert app["calls"].calls == calls + 1
    finally:
        sharing.close()
        opening.close()


def _change_input(page, change: str, second: Path) -> None:
    """As a person does: clear the video and upload ``second`` (a 3-frame clip), or press Clear; then wait for the
    result area to show the new page's placeholder."""
    if change == "upload":
        page.locator("#vl-video").get_by_label("Clear").click()
        page.locator("#vl-video input[type=file]").set_input_files(str(second))
        page.locator("#vl-summary").get_by_text("All 3 frames will be segmented").wait_for()
    else:
        page.locator("#vl-clear").click()
    page.locator("#vl-answer .vl-placeholder").wait_for()


def test_a_new_input_or_clear_empties_the_result_and_a_new_look_says_why(browser_page, tmp_path):
    app, page = browser_page
    first = make_clip(tmp_path, "first_clip", size=(160, 120), frames=4, fps=8)
    second = make_clip(tmp_path, "second_clip", size=(128, 96), frames=3, fps=8)
    page.goto(app["url"])
    upload = page.locator("#vl-video input[type=file]")
    for change in ("upload", "clear"):
        upload.set_input_files(str(first))
        page.locator("#vl-summary").get_by_text("All 4 frames will be segmented").wait_for()
        page.get_by_label("What should be segmented?").fill("the moving square")
        page.locator("#vl-run").click()
        page.wait_for_function(RESULT_DECODED, arg=None)
        page.locator("#vl-answer .vl-target").wait_for()
        page.get_by_role("button", name="PNG zip").wait_for()

        _change_input(page, change, second)
        assert page.locator("#vl-result video").count() == 0
        assert page.locator("#vl-keyframes img").count() == 0
        page.get_by_role("button", name="PNG zip").wait_for(state="hidden")
        assert not page.locator("#vl-timeline").is_visible()

        page.locator("#vl-settings").get_by_text("Settings").click()
        _click_slider(page, "vl-opacity", 0.3 if change == "upload" else 0.7)
        page.get_by_text("There is no result to redraw yet").wait_for()
        page.locator("#vl-settings").get_by_text("Settings").click()
        page.reload()


RUN_BUTTON = "() => { const b = document.querySelector('#vl-run'); return [b.textContent.trim(), b.disabled]; }"


def test_run_is_busy_while_it_runs_and_comes_back_after_an_error(browser_page, tmp_path):
    app, page = browser_page
    clip = make_clip(tmp_path, "busy_clip", size=(160, 120), frames=4, fps=8)
    page.goto(app["url"])
    page.locator("#vl-summary").get_by_text("Limits:").wait_for()
    assert page.evaluate(RUN_BUTTON) == ["Run", False]

    page.locator("#vl-run").click()  # nothing uploaded: an error
    page.get_by_text("Upload a video or an image first").wait_for()
    page.wait_for_function(f"() => ({RUN_BUTTON})().join() === 'Run,false'")

    page.locator("#vl-video input[type=file]").set_input_files(str(clip))
    page.locator("#vl-summary").get_by_text("All 4 frames will be segmented").wait_for()
    page.get_by_label("What should be segmented?").fill("the moving square")
    page.locator("#vl-run").click()
    page.wait_for_function(f"() => ({RUN_BUTTON})().join() === 'Running…,true'")
    page.wait_for_function(RESULT_DECODED, arg=None)
    page.wait_for_function(f"() => ({RUN_BUTTON})().join() === 'Run,false'")


RESULT_WIDTH = "() => { const v = document.querySelector('#vl-result video'); return v && v.videoWidth; }"


@pytest.mark.parametrize("change", ["upload", "clear"])
def test_a_new_input_or_clear_during_a_run_cancels_it(browser_page, tmp_path, change):
    app, page = browser_page
    first = make_clip(tmp_path, "running_clip", size=(160, 120), frames=4, fps=8)
    second = make_clip(tmp_path, "next_clip", size=(128, 96), frames=3, fps=8)
    counter = app["calls"]
    page.goto(app["url"])
    page.locator("#vl-video input[type=file]").set_input_files(str(first))
    page.locator("#vl-summary").get_by_text("All 4 frames will be segmented").wait_for()
    page.get_by_label("What should be segmented?").fill("the moving square")
    calls, finished = counter.calls, counter.finished
    counter.gate.clear()  # the run waits inside the model until the input has changed
    try:
        page.locator("#vl-run").click()
        page.wait_for_function(f"() => ({RUN_BUTTON})().join() === 'Running…,true'")
        deadline = time.monotonic() + 60
        while counter.calls == calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert counter.calls == calls + 1
        _change_input(page, change, second)
    finally:
        counter.gate.set()
    while counter.finished == finished and time.monotonic() < deadline:
        time.sleep(0.05)
    page.wait_for_timeout(3000)  # time for the old run's encoding and its result to reach the page, if it would
    assert page.locator("#vl-answer .vl-placeholder").count() == 1
    assert page.locator("#vl-result video").count() == 0
    assert not page.get_by_role("button", name="PNG zip").is_visible()
    assert page.evaluate(RUN_BUTTON) == ["Run", False]

    if change == "clear":
        page.locator("#vl-video input[type=file]").set_input_files(str(second))
        page.locator("#vl-summary").get_by_text("All 3 frames will be segmented").wait_for()
        page.get_by_label("What should be segmented?").fill("the moving square")
    page.locator("#vl-run").click()  # the session still runs, on the new input
    page.wait_for_function(RESULT_DECODED, arg=None)
    assert page.evaluate(RESULT_WIDTH) == 128
    page.locator("#vl-answer .vl-target").wait_for()
    page.wait_for_function(f"() => ({RUN_BUTTON})().join() === 'Run,false'")
    assert counter.calls == calls + 2


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_timeline_shown_is_drawn_for_the_colour_scheme(browser_page, tmp_path, scheme):
    app, page = browser_page
    clip = make_clip(tmp_path, "scheme_clip", size=(160, 120), frames=4, fps=8)
    context = page.context.browser.new_context(viewport={"width": 1400, "height": 1000}, color_scheme=scheme)
    try:
        themed = context.new_page()
        themed.set_default_timeout(60_000)
        themed.goto(app["url"])
        themed.locator("#vl-video input[type=file]").set_input_files(str(clip))
        themed.locator("#vl-summary").get_by_text("All 4 frames will be segmented").wait_for()
        themed.get_by_label("What should be segmented?").fill("the moving square")
        themed.locator("#vl-run").click()
        shown, hidden = "#vl-timeline", "#vl-timeline-dark"
        if scheme == "dark":
            shown, hidden = hidden, shown
        themed.wait_for_function("s => { const i = document.querySelector(s + ' img');"
                                 " return i !== null && i.complete && i.naturalWidth > 0 && i.checkVisibility(); }",
                                 arg=shown)
        assert not themed.locator(hidden).is_visible()
    finally:
        context.close()


# What the comparison block draws over its video's burned-in captions (the top left of each half of the picture).
OVER_CAPTIONS = """() => {
    const v = document.querySelector('#vl-comparison video');
    if (v === null || v.readyState < 2 || v.videoWidth === 0) return null;
    const box = v.getBoundingClientRect();
    const scale = Math.min(box.width / v.videoWidth, box.height / v.videoHeight);  // object-fit: contain
    const [w, h] = [v.videoWidth * scale, v.videoHeight * scale];
    const [left, top] = [box.left + (box.width - w) / 2, box.top + (box.height - h) / 2];
    const captions = [0, 0.5].map(x => ({l: left + x * w, t: top, r: left + (x + 0.3) * w, b: top + 0.15 * h}));
    const others = [...document.querySelectorAll('#vl-comparison *')].filter(e => !e.contains(v) && !v.contains(e));
    return others.filter(e => {
        const r = e.getBoundingClientRect();
        const style = getComputedStyle(e);
        return r.width > 0 && r.height > 0 && style.visibility !== 'hidden' && style.opacity !== '0' &&
            captions.some(c => r.left < c.r && r.right > c.l && r.top < c.b && r.bottom > c.t);
    }).map(e => e.tagName + '.' + e.className);
}"""


def test_the_comparison_captions_are_not_covered(browser_page, tmp_path):
    app, page = browser_page
    clip = make_clip(tmp_path, "compare_clip", size=(160, 120), frames=4, fps=8)
    page.goto(app["url"])
    page.locator("#vl-video input[type=file]").set_input_files(str(clip))
    page.locator("#vl-summary").get_by_text("All 4 frames will be segmented").wait_for()
    page.get_by_label("What should be segmented?").fill("the moving square")
    page.locator("#vl-settings").get_by_text("Settings").click()
    page.get_by_label("Post-optimization (SAM 2)").check()
    page.locator("#vl-run").click()
    page.locator("#vl-comparison video").scroll_into_view_if_needed()
    covering = page.wait_for_function(OVER_CAPTIONS).json_value()
    assert covering == [], covering
