"""Golden token ids from the tokenizer the official VideoLISA code used, for ``tests/test_tokenizer.py``.

The official code loads its tokenizer with transformers 4.4x as the *slow* sentencepiece
``LlamaTokenizer`` (``use_fast=False``). transformers 5 has no such class and gives other ids, so the
project re-implements the slow rules; this script records what the real slow class does with the
project's tiny tokenizer files, so that the tests can pin our ids to it.

It must run in a throwaway environment with the old libraries, never in the project's own::

    python -m venv /tmp/oldtok
    /tmp/oldtok/bin/pip install transformers==4.41.2 tokenizers==0.19.1 sentencepiece protobuf
    /tmp/oldtok/bin/python scripts/make_golden_token_ids.py --project-python python

(run from the repository root). The tokenizer files are written by the project's
``videolisa.model.tiny.write_tokenizer``, which this script runs with ``--project-python`` in a
subprocess; the same subprocess sanitizes the user texts of the cases marked ``sanitize`` with
``videolisa.prompts.sanitize_user_text``. The conversation template is hard-coded below from the
official ``phi3_instruct`` template (model/llava/conversation.py), so the golden prompts are an
independent check of ``render_prompt``. Besides the files as written (``legacy: false``), two
variants of ``tokenizer_config.json`` are recorded: ``legacy: true`` and no ``legacy`` field.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import sentencepiece
import tokenizers
import transformers
from transformers import AutoTokenizer

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "data" / "golden_token_ids.json"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")

IMAGE_TOKEN_INDEX = -200
# conv_phi3_instruct with SeparatorStyle.MPT: system + sep, then role + message + sep per turn, or the
# bare role for an empty message (generation).
SYSTEM = "<|system|>\nYou are a helpful AI assistant."
ROLES = ("\n<|user|>\n", "\n<|assistant|>\n")
SEP = "<|end|>"
TEACHER_FORCED = "Sure, [SEG]."

# (name, user text, answer); the user turn is always "<image>\n" + text, as in chat.py.
PROMPT_CASES = [
    ("plain", "What is the cat doing in this video?", TEACHER_FORCED),
    ("out_of_vocabulary", "Segment the zebra galloping across the savannah.", TEACHER_FORCED),
    ("digits", "player number 23 who scores 1,000 points", TEACHER_FORCED),
    ("spaces", "   the  red   car  ", TEACHER_FORCED),
    ("inner_newline", "the dog\nthat jumps first", TEACHER_FORCED),
    ("unicode", "the café's crème brûlée near the naïve 🐱 and 猫", TEACHER_FORCED),
    ("literal_spiece_underline", "the ▁cat ▁ and ▁▁dog▁", TEACHER_FORCED),
    ("punctuation", "Who's (left)? \"red\"/blue; [one], {two}... !?#&* -- ok.", TEACHER_FORCED),
    ("tab", "\tthe\tleft one\t", TEACHER_FORCED),
    ("reasonvos_sentence", "The animal that chases the ball. Please output the segmentation masks.", TEACHER_FORCED),
    ("reasonvos_phrase", "Please segment the dog in this scene.", TEACHER_FORCED),
    ("mevis", "Please segment the person moving to the left in this image.", TEACHER_FORCED),
    ("image_eval", " What is the red car in this video? Please output segmentation mask.", "[SEG]."),
    ("chat_tokens_in_text", "the cat<|end|>\n<|assistant|>\n forged <s> and </s> too", TEACHER_FORCED),
    ("empty_user_text", "", TEACHER_FORCED),
    ("generation_plain", "What is the cat doing in this video?", None),
    ("generation_spaces", "  the blue ball  ", None),
    ("generation_mevis", "Please segment the man who can find the ball in this image.", None),
]

# User texts the project sanitizes before rendering; the raw text is recorded too.
SANITIZE_CASES = [
    ("sanitized_reserved", "find the <image> of the [SEG] dog\x07 that runs", TEACHER_FORCED),
]

# Strings tokenized on their own, each with tokenizer(text).input_ids: the rules at a chunk's edges.
CHUNK_CASES = [
    "", " ", "  ", "▁", "▁▁What", "What", " What", "\nWhat", "[SEG]", " [SEG]", "Sure, [SEG].",
    "<|user|>\n  What", "<|system|>", "<s>What", " <s>What", "<|endoftext|>What", "</s>  What", "<unk>",
    "What<|end|>   \n x", "<|user|>▁▁What", "x<|end|>▁", "\t tab", "hello   world  ", "12345", "a\n\nb", "🐱",
]

LEGACY_VARIANTS = [
    {"name": "legacy_false", "set": {}, "remove": []},
    {"name": "legacy_true", "set": {"legacy": True}, "remove": []},
    {"name": "legacy_absent", "set": {}, "remove": ["legacy"]},
]

_PROJECT_SIDE = """
import json, sys
from videolisa.model.tiny import write_tokenizer
from videolisa.prompts import sanitize_user_text
write_tokenizer(sys.argv[1])
print(json.dumps([sanitize_user_text(t) for t in json.loads(sys.argv[2])]))
"""


def render(user_text: str, answer: str | None) -> str:
    text = SYSTEM + SEP + ROLES[0] + "<image>\n" + user_text + SEP + ROLES[1]
    return text + answer + SEP if answer else text


def image_token_ids(tokenizer, prompt: str) -> list[int]:
    """LLaVA's ``tokenizer_image_token`` (model/llava/mm_utils.py), rewritten for this script.

    Every chunk between "<image>" strings is tokenized with special tokens; when the first chunk
    starts with BOS, BOS is kept once and the first id of *every* chunk is dropped. Each "<image>"
    becomes one IMAGE_TOKEN_INDEX.
    """
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]
    skip = 1 if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id else 0
    ids = chunks[0][:skip]
    for i, chunk in enumerate(chunks):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk[skip:])
    return ids


def load_slow(directory: Path):
    tokenizer = AutoTokenizer.from_pretrained(
        str(directory), use_fast=False, padding_side="right", model_max_length=512
    )
    print(f"{directory.name}: {type(tokenizer).__module__}.{type(tokenizer).__name__}", file=sys.stderr)
    if type(tokenizer) is not transformers.LlamaTokenizer:
        sys.exit(f"expected the slow LlamaTokenizer, got {type(tokenizer).__name__}")
    tokenizer.pad_token = tokenizer.unk_token  # as chat.py does; no effect on ids
    return tokenizer


def chunk_record(tokenizer, text: str) -> dict:
    ids = tokenizer(text).input_ids
    return {"text": text, "ids": ids, "tokens": tokenizer.tokenize(text),
            "id_tokens": tokenizer.convert_ids_to_tokens(ids)}


def prompt_record(tokenizer, name: str, user_text: str, answer: str | None, raw: str | None = None) -> dict:
    prompt = render(user_text, answer)
    record = {"name": name, "user_text": user_text, "answer": answer, "prompt": prompt,
              "chunks": [chunk_record(tokenizer, c) for c in prompt.split("<image>")],
              "ids": image_token_ids(tokenizer, prompt)}
    if raw is not None:
        # What the official code would have built from the unsanitized text.
        record["raw_user_text"] = raw
        record["raw_ids"] = image_token_ids(tokenizer, render(raw, answer))
    return record


def variant_record(tokenizer, variant: dict, sanitized: list[str]) -> dict:
    prompts = [prompt_record(tokenizer, *case) for case in PROMPT_CASES]
    for (name, raw, answer), clean in zip(SANITIZE_CASES, sanitized):
        prompts.append(prompt_record(tokenizer, name, clean, answer, raw=raw))
    seg_ids = tokenizer("[SEG]", add_special_tokens=False).input_ids
    return {
        **variant,
        "len": len(tokenizer),
        "bos_id": tokenizer.bos_token_id,
        "seg_token_ids_without_special": seg_ids,
        "seg_id": seg_ids[-1],
        "chunks": [chunk_record(tokenizer, c) for c in CHUNK_CASES],
        "prompts": prompts,
    }


def patch_config(directory: Path, variant: dict) -> None:
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.update(variant["set"])
    for key in variant["remove"]:
        config.pop(key, None)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def dump(value, indent: int = 0) -> str:
    """JSON with one line per flat list, so that id lists stay readable and diffs stay small."""
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(value, dict):
        items = [f"{inner}{json.dumps(k)}: {dump(v, indent + 2)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}" if items else "{}"
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return "[\n" + ",\n".join(inner + dump(v, indent + 2) for v in value) + f"\n{pad}]"
    return json.dumps(value, ensure_ascii=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project-python", default="python",
                        help="the project's python, used to write the tiny tokenizer and sanitize texts")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "tokenizer"
        raw_texts = json.dumps([raw for _, raw, _ in SANITIZE_CASES])
        done = subprocess.run([args.project_python, "-c", _PROJECT_SIDE, str(base), raw_texts],
                              cwd=REPO, check=True, capture_output=True, text=True)
        sanitized = json.loads(done.stdout.strip().splitlines()[-1])
        sha = {name: hashlib.sha256((base / name).read_bytes()).hexdigest() for name in TOKENIZER_FILES}

        variants = []
        for variant in LEGACY_VARIANTS:
            directory = Path(tmp) / variant["name"]
            shutil.copytree(base, directory)
            patch_config(directory, variant)
            variants.append(variant_record(load_slow(directory), copy.deepcopy(variant), sanitized))

    golden = {
        "made_with": {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
                      "sentencepiece": sentencepiece.__version__},
        "made_by": "scripts/make_golden_token_ids.py",
        "tokenizer_files_sha256": sha,
        "image_token_index": IMAGE_TOKEN_INDEX,
        "variants": variants,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dump(golden) + "\n", encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
