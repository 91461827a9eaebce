"""Load test of the app: N users submit a run at the same moment through ``gradio_client``.

    python -m videolisa.loadtest --jobs 16             # starts `python app.py --tiny` on a free port
    python -m videolisa.loadtest --url http://127.0.0.1:7860/ --pid 1234 --jobs 16

Every user (one ``Client`` each, so one session each) sends its own small clip of a colour no other
user has, with the masks drawn invisibly (opacity 0, no outline), so the video that comes back must
be that user's own clip. A job ends as "ok" (its own video came back), "rejected" (the queue was
full: ``max_size``), "error" (an error message), "wrong" (someone else's video, or a broken one) or
"hung" (no answer within the timeout). The server's resident memory is sampled throughout (Linux).
"""

from __future__ import annotations

import argparse
import colorsys
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

APP = Path(__file__).resolve().parents[1] / "app.py"
STATUSES = ("ok", "rejected", "error", "wrong", "hung")


@dataclass(frozen=True)
class JobResult:
    index: int
    status: str  # one of STATUSES
    seconds: float  # from submission to the answer (or to the timeout)
    message: str = ""


@dataclass(frozen=True)
class LoadReport:
    jobs: tuple[JobResult, ...]
    wall_s: float
    rss_before_mb: Optional[float]  # the server's resident memory when the jobs were fired
    rss_peak_mb: Optional[float]
    rss_after_mb: Optional[float]  # once every job had ended
    queue_size: Optional[int] = None  # the server's max_size, when this script started it

    def count(self, status: str) -> int:
        return sum(job.status == status for job in self.jobs)

    def latencies(self, status: str = "ok") -> list[float]:
        return sorted(job.seconds for job in self.jobs if job.status == status)

    def summary(self) -> str:
        counts = ", ".join(f"{self.count(s)} {s}" for s in STATUSES)
        lines = [f"{len(self.jobs)} jobs in {self.wall_s:.1f} s: {counts}"]
        done = self.latencies()
        if done:
            lines.append(f"latency of ok jobs: min {done[0]:.2f} s, median {np.median(done):.2f} s, "
                         f"max {done[-1]:.2f} s")
        if self.rss_before_mb is not None:
            lines.append(f"server RSS: {self.rss_before_mb:.0f} MB before, {self.rss_peak_mb:.0f} MB peak, "
                         f"{self.rss_after_mb:.0f} MB after")
        lines += [f"  job {j.index:2d}: {j.status:8s} {j.seconds:6.2f} s  {j.message}" for j in self.jobs]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- clips


def _colour(index: int, count: int) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(index / max(1, count), 0.8, 0.9)
    return (np.array([r, g, b]) * 255).astype(np.uint8)


def make_clips(out_dir: Path, count: int, frames: int = 1, size: tuple[int, int] = (64, 48)) -> list[Path]:
    """One clip per user: a background of the user's own colour with a grey square moving over it."""
    from .video import write_video

    width, height = size
    side = max(2, min(width, height) // 3)
    clips = []
    for k in range(count):
        pictures = []
        for t in range(frames):
            frame = np.empty((height, width, 3), np.uint8)  # [H, W, 3]
            frame[:] = _colour(k, count)
            x = (t * 4) % max(1, width - side)
            frame[height // 3:height // 3 + side, x:x + side] = 128
            pictures.append(frame)
        path = Path(out_dir) / f"user{k:02d}.mp4"
        write_video(pictures, path, fps=8)
        clips.append(path)
    return clips


def _first_frame(path) -> np.ndarray:
    from .video import iter_frames

    return next(iter_frames(path)).astype(np.float64)  # [H, W, 3]


def _check_own(video: str, index: int, clips: Sequence[Path], frames: int) -> Optional[str]:
    """None when ``video`` is clip ``index`` (as drawn invisibly), else what is wrong with it."""
    from .video import probe

    info = probe(video)
    if info.num_frames != frames:
        return f"{info.num_frames} frames came back for {frames}"
    got = _first_frame(video)
    distances = [float(np.abs(got - _first_frame(c)).mean()) if got.shape == _first_frame(c).shape else np.inf
                 for c in clips]
    nearest = int(np.argmin(distances))
    return None if nearest == index else f"came back as user {nearest}'s video"


# ---------------------------------------------------------------------------------------------- server


def rss_mb(pid: Optional[int]) -> Optional[float]:
    """Resident memory of process ``pid`` in MB (Linux /proc); None where it cannot be read."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class _RssSampler:
    def __init__(self, pid: Optional[int], every_s: float = 0.1):
        self.pid, self.every_s, self.peak = pid, every_s, rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.every_s):
            value = rss_mb(self.pid)
            if value is not None and (self.peak is None or value > self.peak):
                self.peak = value

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(queue_size: int, log_path: Path, timeout_s: float = 180) -> tuple[subprocess.Popen, str]:
    """``python app.py --tiny`` on a free local port; returns the process and its URL once it answers."""
    import httpx

    if not APP.is_file():
        raise SystemExit(f"app.py is not next to the package ({APP}); start the app yourself and pass --url.")
    port = _free_port()
    env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
               VIDEOLISA_QUEUE_SIZE=str(queue_size), GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    log = open(log_path, "wb")
    process = subprocess.Popen([sys.executable, str(APP), "--tiny"], cwd=APP.parent, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    log.close()  # the child holds its own copy
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with status {process.returncode}; see {log_path}")
        try:
            if httpx.get(url + "config", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_app(process)
    raise RuntimeError(f"the app did not answer within {timeout_s:.0f} s; see {log_path}")


def stop_app(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# ---------------------------------------------------------------------------------------------- load


def _one_job(url: str, index: int, clips: Sequence[Path], frames: int, start: threading.Barrier,
             timeout_s: float) -> JobResult:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from gradio_client.utils import QueueError

    client = Client(url, verbose=False)  # a user of their own: a session of their own
    start.wait(timeout=timeout_s)
    began = time.monotonic()
    job = client.submit(handle_file(str(clips[index])), None, "the square", 4, 2, False, False, "#e69f00", 0.0,
                        "off", 0.0, api_name="/segment")
    try:
        video = job.result(timeout=timeout_s)[0]
    except (FutureTimeout, TimeoutError):
        job.cancel()
        return JobResult(index, "hung", time.monotonic() - began, f"no answer within {timeout_s:.0f} s")
    except QueueError as exc:
        return JobResult(index, "rejected", time.monotonic() - began, str(exc))
    except AppError as exc:
        return JobResult(index, "error", time.monotonic() - began, str(exc))
    except Exception as exc:  # noqa: BLE001 - whatever else the client raised is this job's outcome
        return JobResult(index, "error", time.monotonic() - began, f"{type(exc).__name__}: {exc}")
    seconds = time.monotonic() - began
    problem = _check_own(video, index, clips, frames)
    return JobResult(index, "wrong" if problem else "ok", seconds, problem or "")


def run_load(url: str, clips: Sequence[Path], frames: int, timeout_s: float = 300, pid: Optional[int] = None,
             queue_size: Optional[int] = None) -> LoadReport:
    """Fire one job per clip at the same moment; wait for all of them (or their timeout)."""
    start = threading.Barrier(len(clips))
    with ThreadPoolExecutor(max_workers=len(clips)) as pool:
        futures = [pool.submit(_one_job, url, k, clips, frames, start, timeout_s) for k in range(len(clips))]
        before = rss_mb(pid)
        began = time.monotonic()
        with _RssSampler(pid) as sampler:
            jobs = tuple(f.result() for f in futures)
        wall = time.monotonic() - began
    return LoadReport(jobs=jobs, wall_s=wall, rss_before_mb=before, rss_peak_mb=sampler.peak,
                      rss_after_mb=rss_mb(pid), queue_size=queue_size)


def load_test(jobs: int = 16, frames: int = 1, size: tuple[int, int] = (64, 48), queue_size: int = 20,
              url: Optional[str] = None, pid: Optional[int] = None, timeout_s: float = 300,
              rounds: int = 1) -> tuple[LoadReport, ...]:
    """The whole test: clips, the app (started here unless ``url`` is given), ``rounds`` waves of jobs one
    after the other (the memory after each shows whether it settles), one report per wave."""
    with tempfile.TemporaryDirectory(prefix="videolisa-load-") as tmp:
        clips = make_clips(Path(tmp), jobs, frames, size)
        process = None
        if url is None:
            process, url = start_app(queue_size, Path(tmp) / "app.log")
            pid = process.pid
        try:
            return tuple(run_load(url, clips, frames, timeout_s, pid, queue_size if process else None)
                         for _ in range(rounds))
        finally:
            if process is not None:
                stop_app(process)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=16, help="users submitting at the same moment (default 16)")
    parser.add_argument("--frames", type=int, default=1, help="frames per clip (default 1)")
    parser.add_argument("--size", default="64x48", help="clip size WIDTHxHEIGHT (default 64x48)")
    parser.add_argument("--queue-size", type=int, default=20,
                        help="max_size of the queue of the app started here (default 20, as the app)")
    parser.add_argument("--url", help="an app already running (tiny model advised); default: start one")
    parser.add_argument("--pid", type=int, help="with --url: the server's process id, to sample its memory")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a job may take before it counts as hung")
    parser.add_argument("--rounds", type=int, default=1, help="waves of jobs, one after the other (default 1)")
    parser.add_argument("--json", type=Path, help="also write the reports as JSON here")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    reports = load_test(args.jobs, args.frames, (width, height), args.queue_size, args.url, args.pid, args.timeout,
                        args.rounds)
    for k, report in enumerate(reports):
        print(f"round {k + 1} of {len(reports)}: {report.summary()}")
    if args.json:
        args.json.write_text(json.dumps([asdict(report) for report in reports], indent=2))
    clean = all(r.count("ok") + r.count("rejected") == len(r.jobs) for r in reports)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
