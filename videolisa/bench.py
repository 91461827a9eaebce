"""Speed and memory of segment(), side by side with the official organisation of the work ("naive").

    python -m videolisa.bench --size tiny --frames 32 --height 480          # CPU, tiny random checkpoint
    python -m videolisa.bench --size full --frames 300 --height 480         # GPU, real sizes, random weights

The clip is generated (ffmpeg testsrc + sine). ``full`` builds the real architecture (Phi-3-mini,
CLIP ViT-L/14-336, SAM ViT-H) with random weights directly on the device: the timings of the
released model without downloading it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

FULL_CONFIG = dict(
    vocab_size=32012, hidden_size=3072, intermediate_size=8192, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=32, max_position_embeddings=4096, original_max_position_embeddings=4096, rope_theta=10000.0,
    rope_scaling=None, sliding_window=2047, rms_norm_eps=1e-5, hidden_act="silu", tie_word_embeddings=False,
    bos_token_id=1, eos_token_id=32000, pad_token_id=32000, vision_tower="openai/clip-vit-large-patch14-336",
    mm_vision_select_layer=-2, mm_projector_type="mlp2x_gelu", mm_hidden_size=1024, out_dim=256,
)
FULL_CLIP = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                 image_size=336, patch_size=14, hidden_act="quick_gelu", layer_norm_eps=1e-5)


def make_clip(path: Path, frames: int, width: int, height: int, fps: int = 30) -> Path:
    import imageio_ffmpeg

    seconds = frames / fps
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc=size={width}x{height}:rate={fps}",
                    "-f", "lavfi", "-i", "sine=frequency=440", "-t", f"{seconds:.4f}", "-frames:v", str(frames),
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)], check=True)
    return path


def make_frames(frames: int, width: int, height: int):
    """A moving gradient with a bouncing square, as RGB uint8 [T, H, W, 3] (no video file, no decoder)."""
    import numpy as np

    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    out = np.empty((frames, height, width, 3), np.uint8)
    side = max(4, height // 5)
    for t in range(frames):
        out[t, ..., 0] = (x + 3 * t) % 256
        out[t, ..., 1] = y
        out[t, ..., 2] = 255 - (x + y) / 2
        top, left = (7 * t) % (height - side), (11 * t) % (width - side)
        out[t, top:top + side, left:left + side] = 250
    return out


def load(size: str, workdir: Path, device, dtype):
    from .model.network import VideoLISAModel
    from .model.tiny import write_tiny_checkpoint, write_tokenizer

    if size == "tiny":
        return VideoLISAModel.load(str(write_tiny_checkpoint(workdir / "tiny")), device=device, dtype=dtype)
    tokenizer_dir = workdir / "tokenizer"
    write_tokenizer(tokenizer_dir)
    return VideoLISAModel.random(FULL_CONFIG, tokenizer_dir, FULL_CLIP, device=device, dtype=dtype)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(args) -> dict:
    from .pipeline import VideoLISAPipeline

    workdir = Path(tempfile.mkdtemp(prefix="videolisa-bench-"))
    width = args.width or round(args.height * 16 / 9 / 2) * 2
    if args.source == "file":
        clip = str(make_clip(workdir / "clip.mp4", args.frames, width, args.height))
    else:
        clip = make_frames(args.frames, width, args.height)
    t = time.perf_counter()
    model = load(args.size, workdir, args.device, args.dtype)
    load_s = time.perf_counter() - t
    cuda = model.device.type == "cuda"
    pipe = VideoLISAPipeline(model, sam_batch_size=args.batch)
    settings = dict(num_frames_sparse=args.sparse, num_frames_dense=args.dense)

    def timed(label, **kwargs):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        seg = pipe.segment(clip, kwargs.pop("prompt", "the moving colour bars"), **settings, **kwargs)
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        # Minor page faults: memory mapped anew and touched, a large hidden cost on a CPU.
        row = {"run": label, "seconds": round(seconds, 3), "frames_per_s": round(seg.num_frames / seconds, 2),
               "stages": {k: round(v, 3) for k, v in seg.timings.items()},
               "minor_faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults}
        if cuda:
            row["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 1e9, 2)
        print(json.dumps(row), flush=True)
        return row, seg

    # One-time costs of a process's first calls (kernel selection, allocator growth) belong to no prompt.
    if args.warmup:
        pipe.segment(make_frames(8, 64, 48), "warm up", **settings)
        pipe.clear_cache()
    rows = []
    first, seg = timed("first prompt")
    rows.append(first)
    if args.only_first:
        return {"size": args.size, "frames": args.frames, "height": args.height, "rows": rows,
                "peak_rss_mb": round(peak_rss_mb(), 1), "cache_mb": pipe.cache.max_bytes / 1e6}
    second, _ = timed("second prompt (same video)", prompt="the white circle")
    rows.append(second)
    text, _ = timed("second prompt + text generation", prompt="the black square", generate_text=True)
    rows.append(text)
    render_s = None
    if args.source == "file":
        from .render import render_video

        start = time.perf_counter()
        render_video(clip, [seg.masks], workdir / "overlay.mp4")
        render_s = round(time.perf_counter() - start, 3)
        print(json.dumps({"run": "render + encode overlay", "seconds": render_s}), flush=True)
    if args.naive:
        pipe.clear_cache()
        naive, _ = timed("naive (official organisation)", naive=True)
        rows.append(naive)
    result = {
        "size": args.size, "device": str(model.device), "device_name": torch.cuda.get_device_name() if cuda else
        "cpu", "dtype": str(model.dtype), "source": args.source, "frames": args.frames, "height": args.height, "sparse": args.sparse,
        "dense": args.dense, "sam_batch": pipe.sam_batch_size, "load_s": round(load_s, 2), "rows": rows,
        "render_encode_s": render_s, "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    if args.naive:
        result["speedup_vs_naive"] = round(rows[-1]["seconds"] / first["seconds"], 2)
    result["second_prompt_speedup"] = round(first["seconds"] / second["seconds"], 2)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m videolisa.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=None, help="default: 16:9 of the height")
    parser.add_argument("--sparse", type=int, default=32)
    parser.add_argument("--dense", type=int, default=4)
    parser.add_argument("--batch", type=int, help="frames per SAM encoder batch (default: 8 on a GPU, 2 on a CPU)")
    parser.add_argument("--source", choices=["file", "memory"], default="file",
                        help="decode a generated H.264 clip, or hand the pipeline frames in memory")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--no-naive", dest="naive", action="store_false", help="skip the naive run")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help="time the process's very first call too (by default a small clip runs first, untimed)")
    parser.add_argument("--only-first", action="store_true", help="time the first prompt only (memory runs)")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args(argv)
    result = run(args)
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
