"""The checkpoint's tokenizer, reproducing the ids of the slow ``LlamaTokenizer`` the official code used.

VideoLISA tokenizes with ``use_fast=False`` (transformers 4.4x, sentencepiece). transformers 5 only has
the tokenizers-based class, whose ids differ in one place (a lone "▁" after BOS before a special
token, MODEL_SPEC 2.3), so we follow the slow rules on top of ``sentencepiece`` directly:

1. split the text on the added tokens (longest match first); a token with ``rstrip``/``lstrip`` eats
   the white space on that side of it;
2. with ``legacy=False`` the text gets a leading "▁" and the chunks that start with "▁" are encoded
   after an ``<unk>`` prefix that is dropped again (so sentencepiece adds no dummy prefix of its own);
   a leading "▁" is removed only when the next token is one of the *named* special tokens;
3. BOS (and EOS) are added as ``add_bos_token``/``add_eos_token`` say.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2

from .errors import ModelUnavailable

SPIECE_UNDERLINE = "▁"
SEG_TOKEN = "[SEG]"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


@dataclass(frozen=True)
class AddedToken:
    content: str
    id: int
    lstrip: bool = False
    rstrip: bool = False
    single_word: bool = False
    special: bool = False


def _token_text(value) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    return value.get("content")


class SlowLlamaTokenizer:
    """Tokenizer files saved by ``LlamaTokenizer.save_pretrained`` (tokenizer.model + json side files)."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        model_file = directory / "tokenizer.model"
        if not model_file.is_file():
            raise ModelUnavailable(
                f"The checkpoint at {directory} has no tokenizer.model; VideoLISA checkpoints ship the "
                "sentencepiece tokenizer file next to config.json."
            )
        config = _read_json(directory / "tokenizer_config.json")
        special_map = _read_json(directory / "special_tokens_map.json")
        added_json = _read_json(directory / "added_tokens.json")

        # The slow class defaults to legacy=True when the field is missing (with a warning).
        legacy = config.get("legacy")
        self.legacy = True if legacy is None else bool(legacy)
        self.add_bos_token = bool(config.get("add_bos_token", True))
        self.add_eos_token = bool(config.get("add_eos_token", False))
        self.add_prefix_space = config.get("add_prefix_space")
        if self.add_prefix_space is None:
            self.add_prefix_space = True

        def named(key: str, default: Optional[str]) -> Optional[str]:
            return _token_text(special_map.get(key, config.get(key, default)))

        self.unk_token = named("unk_token", "<unk>")
        self.bos_token = named("bos_token", "<s>")
        self.eos_token = named("eos_token", "</s>")
        self.pad_token = named("pad_token", None)
        additional = special_map.get("additional_special_tokens", config.get("additional_special_tokens", []))
        self.all_special_tokens = {
            t for t in [self.unk_token, self.bos_token, self.eos_token, self.pad_token, *map(_token_text, additional)] if t
        }

        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(model_file.read_bytes())
        if not self.legacy:
            # The slow class loads the model without the dummy prefix and adds "▁" itself.
            proto.normalizer_spec.add_dummy_prefix = False
        self.sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())

        self.added: dict[str, AddedToken] = {}
        for key, entry in config.get("added_tokens_decoder", {}).items():
            self.added[entry["content"]] = AddedToken(
                content=entry["content"],
                id=int(key),
                lstrip=bool(entry.get("lstrip", False)),
                rstrip=bool(entry.get("rstrip", False)),
                single_word=bool(entry.get("single_word", False)),
                special=bool(entry.get("special", False)),
            )
        for content, idx in added_json.items():
            if content not in self.added:
                self.added[content] = AddedToken(content=content, id=int(idx))
        self._id_to_added = {t.id: t for t in self.added.values()}
        # Longest first, so a token that is the prefix of another never wins a tie.
        pattern = "|".join(re.escape(t) for t in sorted(self.added, key=len, reverse=True))
        self._split_re = re.compile(f"({pattern})") if pattern else None
        self.unk_token_length = len(self.sp.encode(self.unk_token or "", out_type=str))

    # ------------------------------------------------------------------ sizes and ids
    def __len__(self) -> int:
        return max(self.sp.get_piece_size(), max(self._id_to_added, default=-1) + 1)

    @property
    def bos_token_id(self) -> Optional[int]:
        return self.token_to_id(self.bos_token) if self.bos_token else None

    @property
    def eos_token_id(self) -> Optional[int]:
        return self.token_to_id(self.eos_token) if self.eos_token else None

    def token_to_id(self, token: str) -> int:
        if token in self.added:
            return self.added[token].id
        return self.sp.piece_to_id(token)

    def added_token_id(self, token: str) -> Optional[int]:
        """Id of an added token by its text, or None when the tokenizer does not have it."""
        entry = self.added.get(token)
        return entry.id if entry else None

    @property
    def added_token_texts(self) -> list[str]:
        return list(self.added)

    # ------------------------------------------------------------------ encoding
    def tokenize(self, text: str) -> list[str]:
        if not self.legacy and text:
            text = text.replace(SPIECE_UNDERLINE, " ")
            if self.add_prefix_space:
                text = SPIECE_UNDERLINE + text
        pieces = self._split_added(text)
        tokens: list[str] = []
        for piece, is_added in pieces:
            if not piece:
                continue
            tokens.extend([piece] if is_added else self._encode_plain(piece))
        if not self.legacy and len(tokens) > 1 and tokens[0] == SPIECE_UNDERLINE and tokens[1] in self.all_special_tokens:
            tokens = tokens[1:]
        return tokens

    def _split_added(self, text: str) -> list[tuple[str, bool]]:
        if self._split_re is None:
            return [(text, False)]
        parts = [(p, i % 2 == 1) for i, p in enumerate(self._split_re.split(text))]
        for i, (part, is_added) in enumerate(parts):
            if not is_added:
                continue
            token = self.added[part]
            if token.rstrip and i + 1 < len(parts):
                parts[i + 1] = (parts[i + 1][0].lstrip(), False)
            if token.lstrip and i > 0:
                parts[i - 1] = (parts[i - 1][0].rstrip(), False)
        return parts

    def _encode_plain(self, text: str) -> list[str]:
        if self.legacy or not text.startswith((SPIECE_UNDERLINE, " ")):
            return self.sp.encode(text, out_type=str)
        # Encode behind "<unk>" so that sentencepiece treats the leading "▁" as text, then drop the prefix.
        tokens = self.sp.encode(self.unk_token + text, out_type=str)
        return tokens[self.unk_token_length :] if len(tokens) >= self.unk_token_length else tokens

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = [self.token_to_id(t) for t in self.tokenize(text)]
        if add_special_tokens:
            if self.add_bos_token and self.bos_token_id is not None:
                ids = [self.bos_token_id] + ids
            if self.add_eos_token and self.eos_token_id is not None:
                ids = ids + [self.eos_token_id]
        return ids

    # ------------------------------------------------------------------ decoding
    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        out: list[str] = []
        run: list[int] = []
        special_ids = {self.token_to_id(t) for t in self.all_special_tokens}

        def flush() -> None:
            if run:
                out.append(self.sp.decode(run))
                run.clear()

        size = self.sp.get_piece_size()
        for i in ids:
            added = self._id_to_added.get(i)
            if added is None and i not in special_ids:
                if 0 <= i < size:  # rows of a padded embedding table have no text
                    run.append(int(i))
                continue
            flush()
            if skip_special_tokens and (i in special_ids or (added is not None and added.special)):
                continue
            out.append(added.content if added else self.sp.id_to_piece(int(i)))
        flush()
        return "".join(out)


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)
