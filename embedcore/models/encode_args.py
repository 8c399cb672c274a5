"""Argument handling of ``Embedder``: the sentences argument, prompt boundaries, embedding batches.

Pure functions on Python / numpy / torch values, no model: kept apart so that the Embedder module holds
the encode pipeline itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def check_sentences(sentences: Any) -> tuple[list[str], bool]:
    """(texts, singular): a str becomes a one-element list; every item must be a str."""
    if isinstance(sentences, str):
        return [sentences], True
    if sentences is None:
        raise TypeError("sentences must be a str or a sequence of str, got None")
    if isinstance(sentences, np.ndarray):
        sentences = sentences.tolist() if sentences.ndim else [sentences.item()]
    elif isinstance(sentences, (bytes, dict)) or not hasattr(sentences, "__iter__"):
        raise TypeError(f"sentences must be a str or a sequence of str, got {type(sentences).__name__}")
    texts = list(sentences)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"sentences[{i}] must be a str, got {type(text).__name__}")
    return texts, False


def prompt_boundary(offsets: list[tuple[int, int]], special: list[int], prompt_chars: int) -> int:
    """Number of leading tokens that belong to the prompt, from the tokenizer's character offsets.

    Leading special tokens ([CLS], BOS) count with the prompt, as in sentence-transformers; the first
    token that covers a character of the text itself, or a special token after the prompt (an empty
    text's [SEP]), starts the pooled part.
    """
    seen_prompt = False
    for position, ((_, end), is_special) in enumerate(zip(offsets, special)):
        if is_special:
            if seen_prompt:
                return position
        elif end > prompt_chars:
            return position
        else:
            seen_prompt = True
    return len(offsets)


def batch_tensor(x: Any, name: str) -> torch.Tensor:
    """(n, D) float tensor from a tensor, numpy array or list of vectors; (D,) becomes (1, D)."""
    if isinstance(x, list):
        if not x:
            raise ValueError(f"{name} is an empty list")
        x = torch.stack([torch.as_tensor(v) for v in x])
    elif isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    elif not torch.is_tensor(x):
        raise TypeError(
            f"{name} must be a numpy array, a torch tensor or a list of vectors, got {type(x).__name__}"
        )
    if x.ndim == 1:
        x = x.unsqueeze(0)
    if x.ndim != 2:
        raise ValueError(f"{name} must be (n, D) or (D,), got shape {tuple(x.shape)}")
    return x if x.is_floating_point() else x.float()
