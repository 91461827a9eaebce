"""Our tokenizer and prompt ids against golden ids from the official-era slow tokenizer.

``tests/data/golden_token_ids.json`` was made by ``scripts/make_golden_token_ids.py`` with
transformers 4.41 (``LlamaTokenizer``, ``use_fast=False``) on the tiny tokenizer files that
``videolisa.model.tiny.write_tokenizer`` writes, in three variants of ``tokenizer_config.json``
(``legacy`` false, true, absent). The official model only ever saw those ids.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from videolisa.errors import InvalidPrompt
from videolisa.model.tiny import write_tokenizer
from videolisa.prompts import (
    IMAGE_PLACEHOLDER,
    IMAGE_TOKEN_INDEX,
    build_prompt_ids,
    render_prompt,
    sanitize_user_text,
    tokenize_with_placeholder,
)
from videolisa.tokenizer import SEG_TOKEN, SPIECE_UNDERLINE, TOKENIZER_FILES, SlowLlamaTokenizer

GOLDEN = json.loads((Path(__file__).parent / "data" / "golden_token_ids.json").read_text(encoding="utf-8"))
VARIANTS = {v["name"]: v for v in GOLDEN["variants"]}
REGENERATE = "regenerate the golden ids with scripts/make_golden_token_ids.py (see its docstring)"


def _cases(kind: str) -> list:
    return [pytest.param(name, i, id=f"{name}-{case.get('name') or ascii(case['text'])}")
            for name, v in VARIANTS.items() for i, case in enumerate(v[kind])]


@pytest.fixture(scope="module")
def tokenizer_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tokenizers")
    write_tokenizer(root / "base")
    dirs = {}
    for name, variant in VARIANTS.items():
        directory = root / name
        shutil.copytree(root / "base", directory)
        path = directory / "tokenizer_config.json"
        config = json.loads(path.read_text(encoding="utf-8"))
        config.update(variant["set"])
        for key in variant["remove"]:
            config.pop(key, None)
        path.write_text(json.dumps(config), encoding="utf-8")
        dirs[name] = directory
    dirs["base"] = root / "base"
    return dirs


@pytest.fixture(scope="module")
def tokenizers(tokenizer_dirs) -> dict[str, SlowLlamaTokenizer]:
    return {name: SlowLlamaTokenizer(tokenizer_dirs[name]) for name in VARIANTS}


def _spliced(ids: tuple[int, ...], num_visual: int) -> list:
    """The sequence the LLM sees, with None for each visual token (the placeholder expanded)."""
    out: list = []
    for token in ids:
        out.extend([None] * num_visual if token == IMAGE_TOKEN_INDEX else [token])
    return out


def test_golden_ids_were_made_from_these_tokenizer_files(tokenizer_dirs):
    assert GOLDEN["made_with"]["transformers"].startswith("4.41."), REGENERATE
    for name in TOKENIZER_FILES:
        digest = hashlib.sha256((tokenizer_dirs["base"] / name).read_bytes()).hexdigest()
        assert digest == GOLDEN["tokenizer_files_sha256"][name], f"{name} changed: {REGENERATE}"
    assert set(VARIANTS) == {"legacy_false", "legacy_true", "legacy_absent"}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_length_and_seg_id(tokenizers, variant):
    tok, golden = tokenizers[variant], VARIANTS[variant]
    assert len(tok) == golden["len"]
    assert tok.bos_token_id == golden["bos_id"]
    seg_ids = tok.encode(SEG_TOKEN, add_special_tokens=False)
    assert seg_ids == golden["seg_token_ids_without_special"]
    # The official lookup takes the *last* id: with legacy=False the first one is a lone "▁".
    assert seg_ids[-1] == golden["seg_id"] == tok.token_to_id(SEG_TOKEN) == tok.added_token_id(SEG_TOKEN)
    assert golden["seg_id"] == len(tok) - 1


def test_seg_lookup_needs_the_last_id_without_legacy(tokenizers):
    tok = tokenizers["legacy_false"]
    assert tok.encode(SEG_TOKEN, add_special_tokens=False) == [tok.token_to_id(SPIECE_UNDERLINE), tok.token_to_id(SEG_TOKEN)]


@pytest.mark.parametrize(("variant", "index"), _cases("chunks"))
def test_chunk_ids_match_golden(tokenizers, variant, index):
    case = VARIANTS[variant]["chunks"][index]
    tok = tokenizers[variant]
    assert tok.tokenize(case["text"]) == case["tokens"]
    assert tok.encode(case["text"]) == case["ids"]


@pytest.mark.parametrize(("variant", "index"), _cases("prompts"))
def test_prompt_ids_match_golden(tokenizers, variant, index):
    case = VARIANTS[variant]["prompts"][index]
    tok = tokenizers[variant]
    prompt = render_prompt(case["user_text"], case["answer"])
    assert prompt == case["prompt"]
    for chunk, golden_chunk in zip(prompt.split("<image>"), case["chunks"], strict=True):
        assert tok.encode(chunk) == golden_chunk["ids"], repr(chunk)
    ids = build_prompt_ids(tok, prompt, VARIANTS[variant]["seg_id"]).ids
    assert list(ids) == case["ids"]


def _golden_prompt(variant: str, name: str) -> dict:
    return next(p for p in VARIANTS[variant]["prompts"] if p["name"] == name)


def test_lone_spiece_underline_after_bos_without_legacy(tokenizers):
    # legacy=False prefixes the text with "▁" and only drops it before a *named* special token;
    # <|system|> is an added token but not one of those, so the "▁" stays.
    tok = tokenizers["legacy_false"]
    pid = build_prompt_ids(tok, render_prompt("the cat"), VARIANTS["legacy_false"]["seg_id"])
    assert list(pid.ids[:3]) == [tok.bos_token_id, tok.token_to_id(SPIECE_UNDERLINE), tok.token_to_id("<|system|>")]
    # legacy=True puts no "▁" before a special token at the start.
    legacy = tokenizers["legacy_true"]
    pid = build_prompt_ids(legacy, render_prompt("the cat"), VARIANTS["legacy_true"]["seg_id"])
    assert list(pid.ids[:2]) == [legacy.bos_token_id, legacy.token_to_id("<|system|>")]


def test_role_tokens_swallow_the_newline_after_them(tokenizers):
    tok = tokenizers["legacy_false"]
    prompt = render_prompt("What is the cat doing in this video?")
    ids = list(build_prompt_ids(tok, prompt, VARIANTS["legacy_false"]["seg_id"]).ids)
    assert ids == _golden_prompt("legacy_false", "plain")["ids"]

    def after(token: str) -> list[int]:
        return [ids[i + 1] for i, t in enumerate(ids[:-1]) if t == tok.token_to_id(token)]

    assert after("<|system|>") == [tok.token_to_id("You")]  # no "▁You": the "\n" went and no prefix came back
    assert after("<|user|>") == [IMAGE_TOKEN_INDEX]
    assert after("<|assistant|>") == [tok.token_to_id("Sure")]
    assert after("<|end|>") == [tok.token_to_id("<|user|>"), tok.token_to_id("<|assistant|>")]
    # Six "\n" in the text, one token: <|end|> eats the "\n" before each role, the roles the one after
    # them; only the one after <image> (a plain split point, not a token) survives, as "▁" + byte 0x0A.
    newline = tok.token_to_id("<0x0A>")
    assert prompt.count("\n") == 6 and ids.count(newline) == 1
    image = ids.index(IMAGE_TOKEN_INDEX)
    assert ids[image + 1 : image + 3] == [tok.token_to_id(SPIECE_UNDERLINE), newline]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_image_placeholder_becomes_one_index_after_the_user_role(tokenizers, variant):
    tok = tokenizers[variant]
    for case in VARIANTS[variant]["prompts"]:
        pid = build_prompt_ids(tok, case["prompt"], VARIANTS[variant]["seg_id"])
        assert pid.ids.count(IMAGE_TOKEN_INDEX) == 1
        assert pid.ids[pid.image_index] == IMAGE_TOKEN_INDEX
        assert pid.ids[pid.image_index - 1] == tok.token_to_id("<|user|>")
        assert len(pid.seg_indices) == (0 if case["answer"] is None else 1), case["name"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_sanitized_user_text_keeps_one_placeholder_and_one_seg(tokenizers, variant):
    tok, seg_id = tokenizers[variant], VARIANTS[variant]["seg_id"]
    case = _golden_prompt(variant, "sanitized_reserved")
    raw_prompt = render_prompt(case["raw_user_text"], case["answer"])
    # Unsanitized, the official code would splice the video twice and find two [SEG].
    raw_ids = tokenize_with_placeholder(tok, raw_prompt)
    assert raw_ids == case["raw_ids"]
    assert raw_ids.count(IMAGE_TOKEN_INDEX) == 2 and raw_ids.count(seg_id) == 2
    with pytest.raises(InvalidPrompt):
        build_prompt_ids(tok, raw_prompt, seg_id)

    clean = sanitize_user_text(case["raw_user_text"])
    assert clean == case["user_text"]
    pid = build_prompt_ids(tok, render_prompt(clean, case["answer"]), seg_id)
    assert list(pid.ids) == case["ids"]
    assert pid.ids.count(IMAGE_TOKEN_INDEX) == 1 and len(pid.seg_indices) == 1


def _nestings(token: str) -> list[str]:
    """The token built around itself: inside its own brackets ("<<image>>", "<|<|<|end|>|>|>") and split at
    every character ("<|en" + "<|end|>" + "d|>"), so that dropping the inner token's brackets rebuilds it."""
    core = token.strip("<>[]|")
    head, tail = token[: token.index(core)], token[token.index(core) + len(core):]
    cases = [head * depth + core + tail * depth for depth in (2, 3)]
    return cases + [token[:k] + token + token[k:] for k in range(1, len(token))]


def test_nested_reserved_tokens_cannot_rebuild_themselves_and_ordinary_text_stays(tokenizers):
    tok = tokenizers["legacy_false"]
    reserved = [IMAGE_PLACEHOLDER, *tok.added_token_texts]
    assert {"<|end|>", "<|user|>", "<|assistant|>", "<|system|>", SEG_TOKEN, "<s>"} <= set(reserved)
    seg_id, added_ids = tok.token_to_id(SEG_TOKEN), {tok.token_to_id(t) for t in tok.added_token_texts}
    for token in reserved:
        for nested in _nestings(token):
            clean = sanitize_user_text(f"the dog {nested} on the left", tok.added_token_texts)
            assert not any(t in clean for t in reserved), (nested, clean)
            assert clean.startswith("the dog ") and clean.endswith(" on the left"), (nested, clean)
            assert not added_ids & set(tok.encode(clean, add_special_tokens=False)), (nested, clean)
            ids = build_prompt_ids(tok, render_prompt(clean), seg_id)  # one video, one mask token: no refusal
            assert ids.ids.count(IMAGE_TOKEN_INDEX) == 1 and len(ids.seg_indices) == 1
    assert sanitize_user_text("<|<|end|>|> [[SEG]] <<image>>", tok.added_token_texts) == "end SEG image"
    for ordinary in ("a <b>bold</b> dog", "the [left] one | not <3", "x || y", "<|  |>", "[[ ]]", "< image >"):
        assert sanitize_user_text(ordinary, tok.added_token_texts) == ordinary


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("num_visual", [1, 7, 2336])
def test_seg_hidden_row_is_the_token_before_seg_in_the_spliced_sequence(tokenizers, variant, num_visual):
    tok, seg_id = tokenizers[variant], VARIANTS[variant]["seg_id"]
    # The row that predicts [SEG]: the lone "▁" of "Sure, [SEG]." (MODEL_SPEC 2.3), but the role token
    # itself for the image evaluation's bare "[SEG]." answer.
    before_seg = {"plain": SPIECE_UNDERLINE, "chat_tokens_in_text": SPIECE_UNDERLINE, "image_eval": "<|assistant|>"}
    for name, before in before_seg.items():
        pid = build_prompt_ids(tok, _golden_prompt(variant, name)["prompt"], seg_id)
        spliced = _spliced(pid.ids, num_visual)
        assert len(spliced) == pid.spliced_length(num_visual)
        rows = pid.seg_hidden_rows(num_visual)
        assert rows == [spliced.index(seg_id) - 1]
        assert spliced[rows[0]] == tok.token_to_id(before), name
