"""The command line: ``python -m videolisa {segment,batch,score,tiny} ...``.

Exit codes: 0 success; 1 some batch items failed; 2 bad input or usage; 3 model unavailable.
Errors are one line on stderr, and so is each notice of a run (a limit applied, what post-optimization did);
stdout holds the result only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Optional

from .errors import ModelUnavailable, VideoLISAError
from .settings import DEFAULT_MODEL, DEFAULT_SAM2, NUM_FRAMES_DENSE, NUM_FRAMES_SPARSE, TINY, Limits

EXIT_OK, EXIT_FAILURES, EXIT_INPUT, EXIT_MODEL = 0, 1, 2, 3


def _limit(kind):
    """An argparse type for a limit: a number of zero or more (zero: no limit)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value >= 0:  # NaN too
            raise argparse.ArgumentTypeError(f"must be a {'whole ' if kind is int else ''}number of zero or more "
                                             f"(0: no limit), got {text!r}")
        return value
    return parse


def _model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=DEFAULT_MODEL,
                       help="VideoLISA checkpoint: hub id or local directory, or 'tiny' for a preview on a tiny "
                            "random checkpoint whose masks and answers are meaningless (default: %(default)s)")
    group.add_argument("--vision-tower", default=None,
                       help="CLIP vision tower: hub id or directory (default: the one named in config.json)")
    group.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) of --model")
    group.add_argument("--sam2", default=DEFAULT_SAM2,
                       help="SAM 2 video checkpoint for --post-optimize: hub id or directory (default: %(default)s; "
                            "with --model tiny a tiny random one)")
    group.add_argument("--device", default=None, help="cuda, cuda:1 or cpu (default: cuda when available)")
    group.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                       help="default: bfloat16 on cuda, float32 on cpu")


def _inference_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("inference (defaults reproduce the official inference)")
    group.add_argument("--sparse", type=int, default=NUM_FRAMES_SPARSE, help="T_sparse (default: %(default)s)")
    group.add_argument("--dense", type=int, default=NUM_FRAMES_DENSE, help="T_dense (default: %(default)s)")
    group.add_argument("--post-optimize", action="store_true",
                       help="refine the masks by propagating the dense frames' masks with SAM 2 (needs --sam2)")
    group.add_argument("--text", action="store_true",
                       help="also generate the model's text answer and print it on stdout as one line, "
                            'answer: "..." (batch: answer: ID: "..."), the answer written as a JSON string')
    limits = parser.add_argument_group("limits (opt-in; none by default)")
    limits.add_argument("--max-duration", type=_limit(float), default=None, metavar="SECONDS",
                        help="process only the first SECONDS of each video")
    limits.add_argument("--max-frames", type=_limit(int), default=None, help="process at most this many frames")
    limits.add_argument("--max-side", type=_limit(int), default=None, metavar="PIXELS",
                        help="read frames with their short side at most PIXELS for inference (masks stay full size)")
    limits.add_argument("--max-pixels", type=_limit(int), default=None,
                        help="refuse videos whose frames have more pixels (width x height) than this")
    limits.add_argument("--max-upload-mb", type=_limit(float), default=None, help="refuse files larger than this")
    limits.add_argument("--max-prompt-tokens", type=_limit(int), default=None, help="refuse longer prompts")
    style = parser.add_argument_group("overlay")
    style.add_argument("--opacity", type=float, default=0.5, help="mask fill opacity 0..1 (default: %(default)s)")
    style.add_argument("--contour", choices=["off", "on", "only"], default="on")
    style.add_argument("--dim", type=float, default=0.0, help="darken the background 0..1 (default: %(default)s)")
    style.add_argument("--no-audio", action="store_true", help="write the overlay video without sound")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m videolisa",
        description="VideoLISA: segment what a prompt describes on every frame of a video.",
        epilog="Exit codes: 0 success, 1 some batch items failed, 2 bad input or usage, 3 model unavailable.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    seg = sub.add_parser("segment", help="segment one video and write the overlay, masks and run card",
                         description="Segment the target PROMPT describes in VIDEO (or an image) and write: "
                                     "overlay.mp4 (H.264 with the original sound), masks_png.zip (a PNG per "
                                     "frame), masks/ (the same PNGs), masks.npz, masks_rle.json (COCO RLE), "
                                     "masks.mp4 (the masks as a video) and run.json.")
    seg.add_argument("video", type=Path, help="video or image file")
    seg.add_argument("prompt", help='what to segment, e.g. "the animal that startles the cat"')
    seg.add_argument("--out", type=Path, default=None,
                     help="output directory (default: ./videolisa-out/<video file name>, e.g. videolisa-out/clip.mp4, "
                          "so clip.mp4 and clip.mov do not share one)")
    _model_options(seg)
    _inference_options(seg)
    seg.set_defaults(func=run_segment)

    batch = sub.add_parser("batch", help="segment every item of a JSONL manifest (resumable, shardable)",
                           description="MANIFEST is a JSONL file with one {\"video\": PATH, \"prompt\": TEXT, "
                                       "\"id\": NAME} object per line (relative video paths are taken from the "
                                       "manifest's folder). Each item's outputs land in OUT/<id>/, its masks in "
                                       "OUT/<id>/masks/{frame:05d}.png, so `score` reads a batch's output "
                                       "directly. Finished items (OUT/<id>/run.json exists; it is written last, "
                                       "so an interrupted item runs again) are skipped, failures are listed at the "
                                       "end. --shard i/n runs every n-th item starting at i, so n processes "
                                       "(one per GPU: CUDA_VISIBLE_DEVICES=k, or torchrun/accelerate "
                                       "launch with --shard $RANK/$WORLD_SIZE) split a manifest exactly.")
    batch.add_argument("manifest", type=Path)
    batch.add_argument("--out", type=Path, required=True, help="output directory")
    batch.add_argument("--shard", default="0/1", metavar="I/N", help="run shard I of N (default: %(default)s)")
    batch.add_argument("--no-overlay", action="store_true", help="skip the overlay video (masks and card only)")
    _model_options(batch)
    _inference_options(batch)
    batch.set_defaults(func=run_batch)

    from .score import add_score_parser

    add_score_parser(sub)

    tiny = sub.add_parser("tiny", help="write a tiny random checkpoint (official format) for tests and previews",
                          description="Writes a deterministic tiny random VideoLISA checkpoint with its CLIP tower "
                                      "(and, with --sam2, a tiny SAM 2 video checkpoint). Its masks mean nothing.")
    tiny.add_argument("path", type=Path)
    tiny.add_argument("--sam2", type=Path, default=None, help="also write a tiny SAM 2 checkpoint here")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=run_tiny)
    return parser


def _check_settings(args) -> None:
    """Refuse settings that cannot work before the model loads, which takes minutes."""
    from .sampling import check_frame_counts

    check_frame_counts(args.sparse, args.dense)
    if args.device:
        from .model.network import default_device_dtype

        default_device_dtype(args.device, args.dtype)


def _limits(args) -> Limits:
    return Limits(max_duration_s=args.max_duration, max_frames=args.max_frames, max_inference_side=args.max_side,
                  max_pixels=args.max_pixels, max_upload_mb=args.max_upload_mb,
                  max_prompt_tokens=args.max_prompt_tokens)


def _style(args):
    from .render import OverlayStyle

    return OverlayStyle(opacity=args.opacity, contour=args.contour, dim_background=args.dim)


def _load(args):
    from dataclasses import replace

    from .pipeline import load_pipeline

    options = dict(vision_tower=args.vision_tower, device=args.device, dtype=args.dtype, revision=args.revision)
    if args.model.strip().lower() != TINY:
        return load_pipeline(args.model, sam2=args.sam2, **options)
    print(f"warning: --model {TINY} runs a tiny random checkpoint, a preview of the command line: its masks "
          f"and answers are meaningless. Leave --model out (the released {DEFAULT_MODEL}) or pass a checkpoint "
          "for real results.", file=sys.stderr)
    # Writing and loading the preview's tiny checkpoints takes no time: the library's bars for it are only clutter.
    # A real checkpoint (a SAM 2 the user named) still loads later, with its bars.
    with _library_bars_off():
        model, sam2, sam2_name = _write_tiny(args)
        pipe = load_pipeline(model, sam2=sam2, sam2_name=sam2_name, **options)
        if sam2_name is not None:
            pipe.load_post_optimizer()  # the tiny SAM 2 loads now, not at the first run, when bars are back on
    pipe.model.info = replace(pipe.model.info, model=TINY)  # the run card says what was asked for
    return pipe


@contextlib.contextmanager
def _library_bars_off():
    """transformers' progress bars (and the hub's) off for the block, as they were after it."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def _write_tiny(args) -> tuple[str, str, Optional[str]]:
    """The tiny random checkpoints, in a folder that goes when the command ends (``write_tiny_preview``)."""
    from .model.tiny import write_tiny_preview

    root = args.resources.enter_context(tempfile.TemporaryDirectory(prefix="videolisa-tiny-",
                                                                    ignore_cleanup_errors=True))
    # As in the app, a tiny model comes with a tiny SAM 2, unless the user named one.
    return write_tiny_preview(root, TINY if args.post_optimize and args.sam2 == DEFAULT_SAM2 else args.sam2)


class _Bar:
    """A tqdm bar fed by the pipeline's progress callback."""

    def __init__(self, desc: str, enabled: bool = True):
        from tqdm import tqdm

        self.bar = tqdm(total=100, desc=desc, unit="%", disable=not enabled, leave=False,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")

    def __call__(self, stage: str, fraction: float) -> None:
        self.bar.set_postfix_str(stage, refresh=False)
        self.bar.update(max(0, round(fraction * 100) - self.bar.n))

    def close(self) -> None:
        self.bar.close()


def _segment_one(pipe, video: Path, prompt: str, out: Path, args, limits: Limits, style,
                 overlay: bool = True, label: str = "") -> dict:
    """Segment one video into ``out``; its notices go to stderr and its text answer (if generated) to stdout,
    after ``label`` when there is one."""
    from tqdm import tqdm

    from .outputs import check_out_dir, write_outputs
    from .pipeline import run_notices

    check_out_dir(video, out)  # before the model's work, not after it
    bar = _Bar(video.name, enabled=sys.stderr.isatty())
    try:
        seg = pipe.segment(str(video), prompt, num_frames_sparse=args.sparse, num_frames_dense=args.dense,
                           post_optimize=args.post_optimize, generate_text=args.text, limits=limits,
                           progress=bar)
    finally:
        bar.close()
    for sentence in run_notices([seg]):
        tqdm.write(f"notice: {label}{sentence}", file=sys.stderr)  # above a batch's bar, not through it
    paths = write_outputs(seg, video, out, style=style, keep_audio=not args.no_audio, overlay=overlay)
    if seg.text is not None:
        # A JSON string keeps an answer with line breaks or quotes on one line that a script can read back.
        tqdm.write(f"answer: {label}{json.dumps(seg.text, ensure_ascii=False)}", file=sys.stdout)
    return paths


def run_segment(args) -> int:
    # Settings, output folder and input are checked before the model loads.
    _check_settings(args)
    limits, style = _limits(args), _style(args)
    from .outputs import check_out_dir
    from .source import check_file

    out = args.out or Path("videolisa-out") / args.video.name
    check_out_dir(args.video, out)
    check_file(args.video, limits)
    pipe = _load(args)
    paths = _segment_one(pipe, args.video, args.prompt, out, args, limits, style)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return EXIT_OK


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise VideoLISAError(f"--shard must look like I/N (e.g. 0/4), got {text!r}.") from None
    if count < 1 or not 0 <= index < count:
        raise VideoLISAError(f"--shard {text}: I must be in 0..N-1 and N at least 1.")
    return index, count


def read_manifest(path: Path) -> list[dict]:
    if not path.is_file():
        raise VideoLISAError(f"No manifest at {path}.")
    items, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise VideoLISAError(f"{path}:{number} is not a JSON object: {exc}.") from None
        if not isinstance(item, dict) or not {"video", "prompt"} <= set(item):
            raise VideoLISAError(f"{path}:{number} needs the fields \"video\" and \"prompt\".")
        item_id = str(item.get("id") or f"{number:05d}")
        if "/" in item_id or item_id in (".", "..") or item_id in seen:
            raise VideoLISAError(f"{path}:{number}: the id {item_id!r} is not a unique plain name.")
        seen.add(item_id)
        video = Path(item["video"])
        items.append({"id": item_id, "video": video if video.is_absolute() else path.parent / video,
                      "prompt": str(item["prompt"])})
    return items


def shard_items(items: list, index: int, count: int) -> list:
    return items[index::count]


def run_batch(args) -> int:
    from tqdm import tqdm

    index, count = parse_shard(args.shard)
    _check_settings(args)
    limits, style = _limits(args), _style(args)
    items = shard_items(read_manifest(args.manifest), index, count)
    todo = [it for it in items if not (args.out / it["id"] / "run.json").is_file()]
    print(f"{len(items)} items in shard {index}/{count}, {len(items) - len(todo)} already done.", file=sys.stderr)
    # Items of one video next to each other, so the pipeline's per-video cache serves them.
    todo.sort(key=lambda it: str(it["video"]))
    failures: list[tuple[str, str]] = []
    pipe = _load(args) if todo else None
    for item in tqdm(todo, desc="batch", unit="item", disable=not sys.stderr.isatty()):
        try:
            _segment_one(pipe, item["video"], item["prompt"], args.out / item["id"], args, limits, style,
                         overlay=not args.no_overlay, label=f"{item['id']}: ")
        except VideoLISAError as exc:
            failures.append((item["id"], str(exc)))
        except Exception as exc:  # noqa: BLE001 (one broken item must not stop a batch of thousands)
            failures.append((item["id"], f"unexpected error ({type(exc).__name__}: {exc})"))
    if failures:
        print(f"{len(failures)} of {len(todo)} items failed:", file=sys.stderr)
        for item_id, reason in failures:
            print(f"  {item_id}: {reason}", file=sys.stderr)
        return EXIT_FAILURES
    print(f"Done: outputs in {args.out}", file=sys.stderr)
    return EXIT_OK


def run_tiny(args) -> int:
    from .model.tiny import write_tiny_checkpoint

    print(f"VideoLISA (tiny, random): {write_tiny_checkpoint(args.path, seed=args.seed)}")
    if args.sam2:
        from .model.tiny_sam2 import write_tiny_sam2

        print(f"SAM 2 (tiny, random): {write_tiny_sam2(args.sam2, seed=args.seed)}")
    return EXIT_OK


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with contextlib.ExitStack() as args.resources:  # what a command holds until it ends
            return args.func(args)
    except ModelUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_MODEL
    except VideoLISAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
