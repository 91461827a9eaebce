"""Conversation template, tokenization with the video placeholder, and the [SEG] position (MODEL_SPEC 2, 1.8, 3.1)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidPrompt
from .tokenizer import SEG_TOKEN, SlowLlamaTokenizer

IMAGE_PLACEHOLDER = "<image>"
IMAGE_TOKEN_INDEX = -200
TEACHER_FORCED_ANSWER = "Sure, [SEG]."

# phi3_instruct (MPT separator style).
SYSTEM = "<|system|>\nYou are a helpful AI assistant."
USER_ROLE = "\n<|user|>\n"
ASSISTANT_ROLE = "\n<|assistant|>\n"
SEP = "<|end|>"

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def render_prompt(user_text: str, answer: str | None = TEACHER_FORCED_ANSWER) -> str:
    """The conversation string; ``answer=None`` ends with the assistant role, ready for generation."""
    text = SYSTEM + SEP + USER_ROLE + IMAGE_PLACEHOLDER + "\n" + user_text + SEP + ASSISTANT_ROLE
    if answer is not None:
        text += answer + SEP
    return text


def sanitize_user_text(text: str, reserved: list[str] | tuple[str, ...] = ()) -> str:
    """Neutralise what would change the prompt's structure: control characters and reserved token strings.

    A literal ``<image>`` would add a second video placeholder and a literal ``[SEG]`` a second mask
    token; chat-role tokens would forge turns. Their brackets are dropped, so the words stay readable
    to the model (``<image>`` becomes ``image``). Dropping brackets can complete a token around the one
    dropped (``<<image>>``, ``<|<|end|>|>``), so it is repeated until no reserved token is left.
    """
    if not isinstance(text, str):
        raise InvalidPrompt("The prompt must be text.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: half an emoji, or a byte that was not UTF-8 on a command line
        raise InvalidPrompt(
            "The prompt contains a character that is not valid text (half of an emoji, or text in an encoding "
            "other than UTF-8): retype it and try again."
        ) from None
    # The text is otherwise passed on as typed (spaces included), as the official chat does.
    text = _CONTROL_CHARS.sub(" ", text)
    tokens = sorted({IMAGE_PLACEHOLDER, SEG_TOKEN, *reserved}, key=len, reverse=True)  # longest first, as they split
    pattern = re.compile("|".join(re.escape(token) for token in tokens))
    # Every pass that changes the text shortens it, so this ends.
    while (stripped := pattern.sub(lambda found: found.group().strip("<>[]|"), text)) != text:
        text = stripped
    if not text.strip():
        raise InvalidPrompt("The prompt is empty: describe the target to segment, e.g. \"the dog that jumps\".")
    return text


def tokenize_with_placeholder(tokenizer: SlowLlamaTokenizer, prompt: str) -> list[int]:
    """Token ids with IMAGE_TOKEN_INDEX where ``<image>`` stands (LLaVA's ``tokenizer_image_token``).

    Each chunk is tokenized with special tokens; the BOS of every chunk but the first is dropped.
    """
    chunks = [tokenizer.encode(chunk) for chunk in prompt.split(IMAGE_PLACEHOLDER)]
    bos = tokenizer.bos_token_id
    offset = 1 if chunks and chunks[0] and chunks[0][0] == bos else 0
    ids: list[int] = chunks[0][:1] if offset else []
    for i, chunk in enumerate(chunks):
        if i > 0:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk[offset:])
    return ids


@dataclass(frozen=True)
class PromptIds:
    """A tokenized prompt and the positions the model needs."""

    ids: tuple[int, ...]  # with one IMAGE_TOKEN_INDEX
    image_index: int  # position of the placeholder in ids
    seg_indices: tuple[int, ...]  # positions of [SEG] in ids

    def spliced_length(self, num_visual: int) -> int:
        return len(self.ids) - 1 + num_visual

    def seg_hidden_rows(self, num_visual: int) -> list[int]:
        """Rows of the spliced sequence whose hidden state makes each mask embedding.

        The row *before* each [SEG] (the one that predicts it), as in LISA's one-token offset.
        """
        return [i - 1 + num_visual - 1 for i in self.seg_indices]


def build_prompt_ids(tokenizer: SlowLlamaTokenizer, prompt: str, seg_token_id: int) -> PromptIds:
    ids = tokenize_with_placeholder(tokenizer, prompt)
    placeholders = [i for i, t in enumerate(ids) if t == IMAGE_TOKEN_INDEX]
    if len(placeholders) != 1:
        raise InvalidPrompt("The prompt must contain the video exactly once.")
    seg = tuple(i for i, t in enumerate(ids) if t == seg_token_id)
    if any(i < placeholders[0] for i in seg):
        raise InvalidPrompt("The mask token must come after the video in the prompt.")
    return PromptIds(ids=tuple(ids), image_index=placeholders[0], seg_indices=seg)
