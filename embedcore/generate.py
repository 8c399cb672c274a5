"""Optional local LLM help for ``tune`` and ``inspect``: a causal LM on disk writes text.

:class:`Generator` loads any transformers causal LM checkpoint folder (``AutoModelForCausalLM``,
never from a hub: ``local_files_only``) and runs greedy, batched ``generate`` on the GPU when one is
present. Two uses, each with a documented prompt template that callers may replace:

* :data:`QUERY_TEMPLATE` (``{text}``: one document) writes a search query for a sampled document,
  for ``tune`` when the user has no queries (doc2query-style).
* :data:`CLUSTER_TEMPLATE` (``{texts}``: the texts nearest a cluster centroid, one per line) names a
  cluster for ``inspect``.

The quality of what comes back is the model's: embedcore only runs it. Small checkpoints write poor
queries, and poor queries make a tuning run measure the wrong thing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

QUERY_TEMPLATE = (
    "Write one short web search query that the following passage answers.\n\nPassage: {text}\n\nQuery:"
)
CLUSTER_TEMPLATE = (
    "The following texts belong to one group:\n{texts}\n\nA short name (two to five words) for this group:"
)
# Characters of each document (or cluster text) put into a prompt: keeps prompts inside small contexts.
MAX_TEXT_CHARS = 600


def _causal_architectures() -> set[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    names: set[str] = set()
    for value in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        names.update((value,) if isinstance(value, str) else value)
    return names


def check_template(template: Any, field: str) -> str:
    """Returns ``template`` if it is a string holding exactly the placeholder ``{field}``.

    Raises:
        TypeError: not a string.
        ValueError: the placeholder is missing, or another placeholder is present.
    """
    if not isinstance(template, str):
        raise TypeError(f"template must be a string, got {type(template).__name__}")
    import string

    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    if fields != {field}:
        raise ValueError(
            f"template must contain the placeholder {{{field}}} and no other, found {sorted(fields)}"
        )
    return template


class Generator:
    """A causal language model from a local folder that completes prompts.

    Args:
        model: a transformers causal LM (eval mode, on its device).
        tokenizer: its tokenizer (left padding is set here: decoder-only models generate after
            the prompt's last token).
    """

    def __init__(self, model: Any, tokenizer: Any) -> None:
        tokenizer.padding_side = "left"
        tokenizer.truncation_side = "left"  # keep the end of a prompt: it says what to write
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError("the generator's tokenizer has neither a pad nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token
        self.model, self.tokenizer = model, tokenizer

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], device: Any = None) -> Generator:
        """Loads a causal LM checkpoint folder (config, weights, tokenizer) from disk.

        Args:
            path: the folder.
            device: torch device; default ``cuda`` when available, else ``cpu``.

        Raises:
            ValueError: ``path`` is not a folder, holds no transformers config, or its model is not
                a causal LM (for example an encoder such as BERT saved as ``BertModel``).
        """
        folder = Path(path)
        if not folder.is_dir():
            raise ValueError(f"generator {path}: no such folder (expected a causal LM checkpoint on disk)")
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        try:
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"generator {path} is not a transformers checkpoint ({first})") from None
        causal = _causal_architectures()
        archs = getattr(config, "architectures", None) or []
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

        if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or (archs and not set(archs) & causal):
            what = ", ".join(archs) or config.model_type
            raise ValueError(f"generator {path} is not a causal LM checkpoint (it holds {what})")
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"generator {path} cannot be loaded ({first})") from None
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return cls(model.to(device).eval(), tokenizer)

    def _max_prompt_tokens(self, max_new_tokens: int) -> int:
        limit = getattr(self.model.config, "max_position_embeddings", None) or 2048
        return max(8, int(limit) - max_new_tokens)

    def complete(self, prompts: list[str], max_new_tokens: int = 24, batch_size: int = 8) -> list[str]:
        """Greedy completions of ``prompts``, batched: the first line of each, stripped.

        Args:
            prompts: the prompts.
            max_new_tokens: tokens generated per prompt (>= 1).
            batch_size: prompts per ``generate`` call (>= 1).

        Returns:
            One string per prompt (possibly empty), in order.
        """
        import torch

        for name, value in (("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        out: list[str] = []
        device = next(self.model.parameters()).device
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            enc = self.tokenizer(
                batch,
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self._max_prompt_tokens(max_new_tokens),
            ).to(device)
            with torch.inference_mode():
                tokens = self.model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            new = tokens[:, enc["input_ids"].shape[1] :]
            for text in self.tokenizer.batch_decode(new, skip_special_tokens=True):
                lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
                out.append(lines[0] if lines else "")
        return out

    def write_queries(self, documents: list[str], template: str = QUERY_TEMPLATE, **kwargs: Any) -> list[str]:
        """One search query per document, from ``template`` (placeholder ``{text}``)."""
        template = check_template(template, "text")
        return self.complete([template.format(text=d[:MAX_TEXT_CHARS]) for d in documents], **kwargs)

    def name_groups(
        self, groups: list[list[str]], template: str = CLUSTER_TEMPLATE, **kwargs: Any
    ) -> list[str]:
        """One name per group of texts, from ``template`` (placeholder ``{texts}``)."""
        template = check_template(template, "texts")
        prompts = [
            template.format(texts="\n".join(f"- {' '.join(t.split())[:MAX_TEXT_CHARS]}" for t in g))
            for g in groups
        ]
        return self.complete(prompts, **kwargs)


def load_generator(generator: Any) -> Generator:
    """``generator`` as a :class:`Generator`: returned as it is, or loaded from a folder path."""
    if isinstance(generator, Generator):
        return generator
    if isinstance(generator, (str, os.PathLike)):
        return Generator.from_pretrained(generator)
    raise TypeError(f"generator must be a folder path or a Generator, got {type(generator).__name__}")
