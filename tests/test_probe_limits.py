"""Probing only as far as the limits: a long upload is not decoded to its end to be trimmed."""

import numpy as np
import pytest

from media import make_clip, truncated_copy
from videolisa import video
from videolisa.settings import Limits
from videolisa.source import frames_to_process, open_source, probe_within


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("probe"), "long", size=(96, 64), frames=60, fps=30, audio=True)


@pytest.fixture
def decoded(monkeypatch):
    """Counts the frames the probe decodes."""
    seen = {"frames": 0}
    original = video._decoded_frames

    def counting(path):
        for frame in original(path):
            seen["frames"] += 1
            yield frame

    monkeypatch.setattr(video, "_decoded_frames", counting)
    video._probe_cached.cache_clear()
    yield seen
    video._probe_cached.cache_clear()


def test_a_capped_probe_decodes_one_frame_past_the_cap_and_describes_the_prefix(long_clip, decoded):
    head = video.probe(long_clip, max_frames=10)
    assert decoded["frames"] == 11  # the eleventh only tells that the video goes on
    full = video.probe(long_clip)
    assert decoded["frames"] == 11 + 60 and full.complete
    assert not head.complete and head.num_frames == 10
    assert head.frame_times == full.frame_times[:10]
    assert head.frame_rate == full.frame_rate and head.duration == pytest.approx(10 / 30)
    assert head.claimed_duration == pytest.approx(2.0, abs=0.05)  # what the header says of the whole
    assert (head.width, head.height, head.has_audio) == (full.width, full.height, full.has_audio)
    assert "more than 10 frames" in head.describe() and "(2.0 s by its header)" in head.describe()


def test_a_longer_probe_of_the_same_file_serves_lower_caps_without_decoding_again(long_clip, decoded):
    head = video.probe(long_clip, max_frames=20)
    lower = video.probe(long_clip, max_frames=8)
    assert decoded["frames"] == 21 and lower.num_frames == 8 and not lower.complete
    assert lower.frame_times == head.frame_times[:8] and lower.frame_rate == head.frame_rate
    video.probe(long_clip, max_frames=30)  # past what the first pass reached: decoded again
    assert decoded["frames"] == 21 + 31
    full = video.probe(long_clip)
    decoded["frames"] = 0
    served = [video.probe(long_clip, max_frames=12), video.probe(long_clip, max_seconds=0.5),
              video.probe(long_clip, max_frames=60), video.probe(long_clip, max_frames=600)]
    assert decoded["frames"] == 0
    video._probe_cached.cache_clear()
    fresh = [video.probe(long_clip, max_frames=12), video.probe(long_clip, max_seconds=0.5),
             video.probe(long_clip, max_frames=60), video.probe(long_clip, max_frames=600)]
    assert served == fresh  # what a complete probe serves is what a capped probe of its own finds
    assert served[2] == served[3] == full


def test_a_probe_capped_in_seconds_keeps_the_frames_that_start_before_the_limit(long_clip, decoded):
    head = video.probe(long_clip, max_seconds=0.5)
    assert not head.complete and head.num_frames == 15  # frames at 0, 1/30, ..., 14/30 s
    assert decoded["frames"] == 16
    assert head.frame_times[-1] < 0.5


def test_a_video_that_ends_at_the_cap_is_complete(long_clip, decoded):
    info = video.probe(long_clip, max_frames=60)
    assert info.complete and info.num_frames == 60 and decoded["frames"] == 60
    assert video.probe(long_clip, max_frames=100).complete


def test_damage_past_the_cap_is_not_read_but_a_complete_probe_still_finds_it(tmp_path):
    long = make_clip(tmp_path, "long_mkv", size=(160, 120), frames=48, container="mkv")
    damaged = truncated_copy(long, tmp_path, 0.5)
    with pytest.raises(video.InvalidVideo, match="cut short"):
        video.probe(damaged)
    head = video.probe(damaged, max_frames=5)
    assert head.num_frames == 5 and not head.complete


def test_the_pipeline_with_limits_processes_exactly_the_allowed_frames(pipeline, long_clip, monkeypatch, tmp_path):
    from media import stream_summary
    from videolisa.outputs import write_outputs

    passes = []  # frames decoded by each probing pass
    scan = video._scan_video

    def counted(*args):
        found = scan(*args)
        passes.append(len(found.pts))
        return found

    monkeypatch.setattr(video, "_scan_video", counted)
    video._probe_cached.cache_clear()
    limits = Limits(max_frames=12)
    source, notices = open_source(str(long_clip), limits)
    assert source.num_frames == 12 and passes == [13]
    assert notices == ["Only the first 0.4 s (frames 0-11) of the 2.0 s video were processed: the limit is 12 frames."]
    seg = pipeline.segment(str(long_clip), "the bars", num_frames_sparse=4, num_frames_dense=2, limits=limits)
    assert seg.num_frames == 12 and np.asarray(seg.masks).shape == (12, 64, 96)
    paths = write_outputs(seg, long_clip, tmp_path)
    overlay = stream_summary(paths["overlay"])
    assert overlay["frames"] == 12 and overlay["audio_duration"] == pytest.approx(0.4, abs=0.05)  # the processed part
    assert passes == [13]  # rendering and exporting the trimmed run probed nothing further


def test_limits_and_summaries_of_one_frame_are_singular(tmp_path):
    from videolisa.ui import results

    limits = Limits(max_frames=1)
    assert "at most 1 frame" in limits.describe() and "1 frames" not in limits.describe()
    _, notices = open_source(np.zeros((3, 8, 8, 3), np.uint8), limits)
    assert notices == ["Only the first 1 frame of 3 was processed."]
    one = make_clip(tmp_path, "one", size=(32, 32), frames=1, fps=1, audio=False)
    summary = results.input_summary(probe_within(one, limits), limits)
    assert summary.endswith("1 frame, 1 fps (1.00 s), h264, no audio. Its frame will be segmented."), summary
    two = make_clip(tmp_path, "two", size=(32, 32), frames=2, fps=1, audio=False)
    assert "Over the limit of 1 frame: only" in results.input_summary(probe_within(two, limits), limits)


def test_the_page_says_what_a_long_upload_will_have_processed(long_clip, monkeypatch):
    from videolisa.ui import page, results

    limits = Limits(max_duration_s=1.0, max_frames=1800)
    info = probe_within(long_clip, limits)
    assert not info.complete and frames_to_process(info, limits) == 30
    summary = results.input_summary(info, limits)
    assert "more than 30 frames" in summary
    assert "Over the limit of 1 s or 1800 frames: only 0:00.0–0:01.0 (frames 0–29) will be processed." in summary
    monkeypatch.setattr(page, "APP_LIMITS", limits)
    assert "(frames 0–29) will be processed" in page._describe(str(long_clip), None)
