"""LLM2Vec-style instruction inputs: the model reads ``instruction + text``, pooling covers the text only.

LLM2Vec, GritLM and e5-mistral prepend a task instruction ("Given a web search query, retrieve
relevant passages: ") to queries. The model attends to the whole string, but the embedding is pooled
over the text tokens only. LLM2Vec finds the boundary by tokenizing the instruction on its own and
counting its tokens; that count is wrong whenever the tokenizer merges or splits differently at the
junction (a BPE merge across the boundary, a leading-space token). Here the boundary comes from the
tokenizer's own character offsets of the joined string: a token is pooled iff its character span
overlaps the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def _split(item: Any, index: int) -> tuple[str, str]:
    if isinstance(item, str):
        return "", item
    if isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(s, str) for s in item):
        return item[0], item[1]
    raise TypeError(
        f"inputs[{index}] must be a str or an (instruction, text) pair of str, got {type(item).__name__}"
    )


def tokenize_with_instructions(
    tokenizer: Any,
    inputs: Sequence[str | tuple[str, str]],
    *,
    separator: str = "",
    max_length: int | None = None,
    padding_side: str | None = None,
    add_special_tokens: bool = True,
) -> dict[str, torch.Tensor]:
    """Tokenizes ``[instruction, text]`` pairs into model inputs plus the mask of the tokens to pool.

    Args:
        tokenizer: a transformers *fast* tokenizer (it must return offset mappings).
        inputs: each item is a text (no instruction) or an ``(instruction, text)`` pair; the model reads
            ``instruction + separator + text``.
        separator: put between instruction and text (e.g. ``"\\n"``).
        max_length: truncate each joined string to this many tokens (the end is cut, so the text is
            shortened before the instruction).
        padding_side: "left" or "right"; default the tokenizer's own.
        add_special_tokens: as for the tokenizer (BOS/EOS/CLS/SEP). Special tokens are never pooled.

    Returns:
        dict with ``input_ids`` (B, T) int64, ``attention_mask`` (B, T) int64 (1 = real token) and
        ``pool_mask`` (B, T) bool: the real, non-special tokens whose character span overlaps the text.

    Raises:
        TypeError: a slow tokenizer or a malformed input item.
        ValueError: empty inputs, a bad ``padding_side``, or a row whose text was truncated away.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            "tokenizer must be a fast (Rust) tokenizer: the text boundary comes from its offset mappings"
        )
    if isinstance(inputs, str) or not isinstance(inputs, Sequence):
        raise TypeError(
            f"inputs must be a list of texts or (instruction, text) pairs, got {type(inputs).__name__}"
        )
    if len(inputs) == 0:
        raise ValueError("inputs is empty")
    if padding_side not in (None, "left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                   or max_length < 1):
        raise ValueError(f"max_length must be a positive int or None, got {max_length!r}")
    if not isinstance(separator, str):
        raise TypeError(f"separator must be a str, got {type(separator).__name__}")

    pairs = [_split(item, i) for i, item in enumerate(inputs)]
    joined = [instruction + separator + text if instruction else text for instruction, text in pairs]
    text_start = [len(instruction + separator) if instruction else 0 for instruction, _ in pairs]
    kwargs: dict[str, Any] = {}
    if padding_side is not None:
        kwargs["padding_side"] = padding_side
    enc = tokenizer(
        joined,
        padding=True,
        truncation=max_length is not None,
        max_length=max_length,
        add_special_tokens=add_special_tokens,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_tensors="pt",
        **kwargs,
    )
    offsets = enc["offset_mapping"]  # (B, T, 2) character spans in the joined string
    start = torch.tensor(text_start, dtype=offsets.dtype)[:, None]
    ends = offsets[..., 1]
    real = enc["attention_mask"].bool() & ~enc["special_tokens_mask"].bool()
    # A span overlaps the text iff it ends after the text starts; empty spans are no characters.
    pool_mask = real & (ends > start) & (ends > offsets[..., 0])
    for b, (_, text) in enumerate(pairs):
        if text and not bool(pool_mask[b].any()):
            raise ValueError(
                f"inputs[{b}]: no token of the text is left (max_length={max_length} is filled by the "
                "instruction)"
            )
    return {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "pool_mask": pool_mask,
    }
