"""The model behind the page: loaded once per process from the environment, and the one GPU function.

On a ZeroGPU Space the GPU function runs in a forked worker that borrows a GPU for a declared time:
its arguments and results cross the process boundary pickled, so both are plain data (a ``GpuJob``
in, ``Segmentation`` results out), and the declared time is sized from the job by ``gpu_seconds``.
Off Spaces ``spaces.GPU`` returns the function unchanged, so the same code runs on a local GPU or CPU.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Optional

from ..errors import ModelUnavailable, VideoLISAError, counted
from ..settings import APP_LIMITS, DEFAULT_MODEL, DEFAULT_SAM2, TINY, env_number

try:
    import spaces

    gpu = spaces.GPU
except ImportError:  # the library without the Space extras: same behaviour as spaces off Spaces

    def gpu(duration):
        return lambda fn: fn


log = logging.getLogger(__name__)

# Values of VIDEOLISA_SAM2 that switch post-optimization off.
SAM2_OFF = ("", "0", "off", "none", "false")

# GPU time model (seconds). Measured with the released architecture (random weights, bfloat16) on one
# H100 for 150 frames of 720p: SAM's image encoder 41 ms per frame (its input is 1024 px whatever the
# video's size), SAM's mask decoder 3 ms per frame and target, the language model 1.5 s per target and
# text generation 5.3 s more; decoding costs about 3.3 ms per megapixel per frame on a 2-core CPU;
# SAM 2.1 large tracks at 57 ms per frame (BENCHMARKS.md). Moving the weights to a ZeroGPU worker
# is not measured: GPU_FIXED_S covers it with the probe.
GPU_FIXED_S = 10.0
GPU_PER_TARGET_S = 2.0
GPU_TEXT_PER_TARGET_S = 6.0
GPU_PER_FRAME_S = 0.045
GPU_PER_FRAME_PER_MEGAPIXEL_S = 0.005
GPU_PER_FRAME_PER_TARGET_S = 0.003
GPU_POSTOPT_PER_FRAME_S = 0.06
GPU_SAFETY = 1.5
GPU_MIN_S = 20
DEFAULT_GPU_CAP_S = 120


@dataclass(frozen=True)
class ModelStatus:
    """What the page says about its model: ready or not, and whether its masks mean anything."""

    ready: bool
    tiny: bool
    label: str  # what was asked for: a hub id, a directory, or "tiny"
    problem: Optional[str] = None  # why it is not ready, a sentence for people


@dataclass(frozen=True)
class GpuJob:
    """One run, as the GPU worker needs it: already validated, small, picklable."""

    video_path: str
    prompts: tuple[str, ...]
    num_frames_sparse: int
    num_frames_dense: int
    post_optimize: bool
    generate_text: bool
    num_frames: int  # frames that will be processed (after the duration limit)
    width: int  # displayed size of the input
    height: int


class Engine:
    """The loaded pipeline of this process, or the reason there is none."""

    def __init__(self, pipeline, status: ModelStatus):
        self.pipeline = pipeline
        self.status = status

    def require(self):
        if self.pipeline is None:
            raise ModelUnavailable(self.status.problem or "The model is not loaded.")
        return self.pipeline


_engine: Optional[Engine] = None
_engine_lock = threading.Lock()


def install(pipeline, *, tiny: bool, label: str) -> Engine:
    """Serve an already loaded pipeline (tests and embedding); replaces any other."""
    global _engine
    with _engine_lock:
        _engine = Engine(pipeline, ModelStatus(ready=True, tiny=tiny, label=label))
        return _engine


def engine() -> Engine:
    """The process's engine, loaded from the environment on first use."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = load_from_environment(os.environ)
        return _engine


def _torch_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_from_environment(env: Mapping[str, str]) -> Engine:
    """Load the model named by VIDEOLISA_MODEL / VIDEOLISA_VISION_TOWER / VIDEOLISA_SAM2.

    A model that cannot be loaded gives an engine without a pipeline whose status says why, so the
    page still opens and explains it.
    """
    from ..pipeline import load_pipeline

    model = env.get("VIDEOLISA_MODEL", "").strip() or DEFAULT_MODEL
    tiny = model.lower() == TINY
    sam2 = env.get("VIDEOLISA_SAM2", TINY if tiny else DEFAULT_SAM2).strip()
    sam2 = None if sam2.lower() in SAM2_OFF else sam2
    sam2_name = None
    try:
        if tiny:
            from ..model.tiny import write_tiny_preview

            # A fresh directory that lives as long as the process.
            model, sam2, sam2_name = write_tiny_preview(tempfile.mkdtemp(prefix="videolisa-tiny-"), sam2)
        device = _torch_device()
        # ZeroGPU wants the weights loaded on the CPU and moved with .to("cuda") at import time.
        pipeline = load_pipeline(model, vision_tower=env.get("VIDEOLISA_VISION_TOWER") or None, device="cpu",
                                 dtype="bfloat16" if device.type == "cuda" else None, sam2=sam2, limits=APP_LIMITS,
                                 sam2_name=sam2_name)
        if device.type == "cuda":
            pipeline.to(device)
            _preload_post_optimizer(pipeline)
    except (VideoLISAError, OSError, RuntimeError, ValueError) as exc:
        log.exception("VideoLISA could not be loaded")
        problem = str(exc) if isinstance(exc, VideoLISAError) else f"The model could not be loaded: {exc}"
        return Engine(None, ModelStatus(ready=False, tiny=tiny, label=TINY if tiny else model, problem=problem))
    return Engine(pipeline, ModelStatus(ready=True, tiny=tiny, label=TINY if tiny else model))


def _preload_post_optimizer(pipeline) -> None:
    """Load SAM 2 at import time on a GPU machine, so ZeroGPU workers inherit it instead of loading it per call.

    A SAM 2 that cannot be loaded is left to the pipeline, which reports it in each result.
    """
    if not pipeline.sam2:
        return
    try:
        pipeline.load_post_optimizer()
    except ModelUnavailable:
        log.exception("SAM 2 could not be preloaded; post-optimization will report why")


def gpu_cap_seconds(env: Mapping[str, str] = os.environ) -> int:
    """The longest GPU time one run may ask for (VIDEOLISA_GPU_SECONDS_MAX, default 120 s)."""
    return max(GPU_MIN_S, int(env_number("VIDEOLISA_GPU_SECONDS_MAX", DEFAULT_GPU_CAP_S, whole=False, env=env)))


def gpu_seconds(job: GpuJob, progress: Any = None) -> int:
    """GPU seconds to ask ZeroGPU for: estimated from frames x resolution x targets, capped by the setting.

    Takes the GPU function's arguments, as ``spaces.GPU(duration=...)`` calls it. Shorter requests get
    better queue priority, and a request above a visitor's remaining quota fails up front.
    """
    return min(gpu_cap_seconds(), _declared(*_gpu_cost(job), job.num_frames))


def _declared(fixed: float, per_frame: float, num_frames: int) -> int:
    """GPU seconds to declare for this many frames: the estimate with its safety margin."""
    return int(max(GPU_MIN_S, round((fixed + per_frame * num_frames) * GPU_SAFETY)))


def _gpu_cost(job: GpuJob) -> tuple[float, float]:
    """Estimated GPU seconds of a job: (whatever its length, per processed frame)."""
    side = APP_LIMITS.max_inference_side
    width, height = job.width, job.height
    if side and min(width, height) > side:
        scale = side / min(width, height)
        width, height = width * scale, height * scale
    megapixels = width * height / 1e6
    targets = max(1, len(job.prompts))
    per_target = GPU_PER_TARGET_S + (GPU_TEXT_PER_TARGET_S if job.generate_text else 0.0)
    per_frame = GPU_PER_FRAME_S + GPU_PER_FRAME_PER_MEGAPIXEL_S * megapixels + GPU_PER_FRAME_PER_TARGET_S * targets
    if job.post_optimize:
        per_frame += GPU_POSTOPT_PER_FRAME_S * targets
    return GPU_FIXED_S + per_target * targets, per_frame


def on_zero_gpu(env: Mapping[str, str] = os.environ) -> bool:
    """Whether this process serves a ZeroGPU Space, where a run that outlasts its declared time is aborted."""
    return env.get("SPACES_ZERO_GPU", "").strip().lower() in ("1", "true")


def fit_to_gpu_cap(job: GpuJob, fps: float) -> tuple[GpuJob, Optional[str]]:
    """The job shortened to the leading frames whose estimated GPU time fits one request's cap, and why.

    ZeroGPU aborts a run that outlasts its declared time, and the declared time cannot exceed the cap:
    processing fewer frames, and saying so, beats an aborted run. Returns the job unchanged (and no
    sentence) when it fits.
    """
    fixed, per_frame = _gpu_cost(job)
    cap = gpu_cap_seconds()
    if _declared(fixed, per_frame, job.num_frames) <= cap:
        return job, None
    fitting = max(1, int((cap / GPU_SAFETY - fixed) // per_frame))
    while _declared(fixed, per_frame, fitting + 1) <= cap:  # the rounding of the declared seconds may allow more
        fitting += 1
    span = f"{fitting / fps:.1f} s ({counted(fitting, 'frame')})" if fps > 0 else counted(fitting, "frame")
    targets = len(job.prompts)
    work = (("post-optimization on " if job.post_optimize else "") + f"{targets} target" + ("s" if targets > 1 else ""))
    easier = [advice for advice, applies in (("switch post-optimization off", job.post_optimize),
                                            ("ask for fewer targets", targets > 1),
                                            ("switch the text answer off", job.generate_text)) if applies]
    sentence = (f"One request may use the GPU for {cap} s at most: with {work}, that covers the first {span} of "
                f"your video, so only those were processed.")
    if easier:
        sentence += f" To process more of it, {' or '.join(easier)}, or trim the video."
    else:
        sentence += " Trim the video to choose which part is processed."
    return replace(job, num_frames=fitting), sentence


def _reporter(progress) -> Callable[[str, float], None]:
    """The pipeline's progress(stage, fraction) as Gradio progress, inside the model's share of the bar."""
    if progress is None:
        return lambda stage, fraction: None
    return lambda stage, fraction: progress(0.05 + 0.8 * fraction, desc=stage)


@gpu(duration=gpu_seconds)
def run_on_gpu(job: GpuJob, progress: Any = None) -> list:
    """Run the model on one job; returns one ``Segmentation`` per prompt (numpy on the CPU, picklable).

    Errors leave as ``gr.Error``: a ZeroGPU worker passes those on as they are, while any other
    exception would reach people only as "ZeroGPU worker error".
    """
    import gradio as gr
    import torch

    try:
        pipeline = engine().require()
        # The job's frame count is what was decided for it: the app's limits, or fewer to fit the GPU cap.
        limits = replace(APP_LIMITS, max_frames=min(job.num_frames, APP_LIMITS.max_frames or job.num_frames))
        return pipeline.segment_targets(
            job.video_path, list(job.prompts), num_frames_sparse=job.num_frames_sparse,
            num_frames_dense=job.num_frames_dense, post_optimize=job.post_optimize,
            generate_text=job.generate_text, limits=limits, progress=_reporter(progress),
        )
    except VideoLISAError as exc:
        raise gr.Error(str(exc), title="VideoLISA could not run") from exc
    except torch.OutOfMemoryError as exc:
        raise gr.Error("The GPU ran out of memory on this video: try a shorter or smaller video, fewer targets "
                       "or no post-optimization.", title="Out of GPU memory") from exc
