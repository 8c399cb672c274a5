"""``accelerate(st_model, fidelity="exact")``: a SentenceTransformer that encodes faster, in place, keeping
its outputs (exact tier) or within a named bound (``near_exact``, ``int8``: embedcore.models.fidelity).

The model's own modules (weights, tokenizer, Pooling and Normalize/Dense settings) are reused, not
copied: an :class:`~embedcore.models.embedder.Embedder` is built around them and the instance's
``encode`` is replaced by a callable that resolves prompts and defaults exactly as
sentence-transformers does (its own ``_resolve_prompt``, ``truncate_dim``, ``prompts``; read at every
call, so later changes to the model still apply) and then runs the Embedder. Calls the Embedder does not
cover (non-text inputs, ``output_value=None``, multi-process pools, task-specific Transformer settings,
extra keyword arguments) go to the original ``encode`` unchanged.

Undo with ``embedcore.models.accelerate.undo(st_model)`` or ``st_model.encode.undo()``.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import numpy as np

from embedcore._spec import check_fidelity
from embedcore.models import loading, packed_bert
from embedcore.models.embedder import Embedder
from embedcore.models.fidelity import swap_linears

_ATTRIBUTE = "encode"
_ST_LOGGER = "sentence_transformers.sentence_transformer.model"


class AcceleratedEncode:
    """The ``encode`` installed on an accelerated SentenceTransformer instance.

    Same signature and results as ``SentenceTransformer.encode`` (sentence-transformers 6.x).
    """

    def __init__(self, st_model: Any, embedder: Embedder, previous: Any) -> None:
        self.st_model = st_model
        self.embedder = embedder
        self._previous = previous  # an instance-level encode that was there before, if any

    def original(self, *args: Any, **kwargs: Any) -> Any:
        """The encode that ran before accelerate()."""
        if self._previous is not None:
            return self._previous(*args, **kwargs)
        return type(self.st_model).encode(self.st_model, *args, **kwargs)

    def __call__(
        self,
        inputs: Any = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        output_value: str | None = "sentence_embedding",
        precision: str = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: Any = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        pool: Any = None,
        chunk_size: int | None = None,
        **kwargs: Any,
    ) -> Any:
        if inputs is None and "sentences" in kwargs:  # sentence-transformers' deprecated name
            inputs = kwargs.pop("sentences")
        args = dict(
            prompt_name=prompt_name,
            prompt=prompt,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            output_value=output_value,
            precision=precision,
            convert_to_numpy=convert_to_numpy,
            convert_to_tensor=convert_to_tensor,
            device=device,
            normalize_embeddings=normalize_embeddings,
            truncate_dim=truncate_dim,
            pool=pool,
            chunk_size=chunk_size,
        )
        task = kwargs.pop("task", None)
        if not self._covers(inputs, output_value, pool, device, task, kwargs):
            if task is not None:
                kwargs["task"] = task
            return self.original(inputs, **args, **kwargs)
        st = self.st_model
        if show_progress_bar is None:
            show_progress_bar = logging.getLogger(_ST_LOGGER).getEffectiveLevel() in (
                logging.INFO,
                logging.DEBUG,
            )
        embedder = self.embedder
        pooling = st[1]
        embedder.pooling_mode = loading.check_pooling_mode(pooling.pooling_mode, "pooling_mode")
        embedder.include_prompt = bool(pooling.include_prompt)
        if st.training:
            st.eval()  # sentence-transformers' encode puts the model in eval mode too
        return embedder.encode(
            inputs,
            prompt=_resolve_prompt(st, prompt, prompt_name),
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            output_value=output_value,
            precision=precision,
            convert_to_numpy=convert_to_numpy,
            convert_to_tensor=convert_to_tensor,
            device=device,
            normalize_embeddings=normalize_embeddings,
            truncate_dim=truncate_dim if truncate_dim is not None else st.truncate_dim,
        )

    def _covers(
        self, inputs: Any, output_value: Any, pool: Any, device: Any, task: Any, kwargs: dict
    ) -> bool:
        """Whether the Embedder gives sentence-transformers' result for this call."""
        if kwargs or pool is not None or isinstance(device, list) or output_value is None:
            return False
        transformer = self.st_model[0]
        if task is not None and any(
            getattr(transformer, name, None) is not None
            for name in ("query_length", "document_length", "query_expansion")
        ):
            return False
        if isinstance(inputs, str):
            return True
        if isinstance(inputs, np.ndarray):
            return inputs.ndim == 1 and inputs.dtype.kind == "U"
        return isinstance(inputs, (list, tuple)) and all(isinstance(t, str) for t in inputs)

    def undo(self) -> None:
        """Restores the SentenceTransformer's original encode (idempotent)."""
        undo(self.st_model)

    def __repr__(self) -> str:
        return f"<embedcore-accelerated encode of {type(self.st_model).__name__}>"


def _resolve_prompt(st_model: Any, prompt: str | None, prompt_name: str | None) -> str | None:
    """sentence-transformers' own prompt resolution (its errors included); its rule where a release
    lacks the method: prompt > prompt_name > default_prompt_name."""
    resolve = getattr(st_model, "_resolve_prompt", None)
    if resolve is not None:
        return resolve(prompt, prompt_name)
    if prompt is None and prompt_name is not None:
        if prompt_name not in st_model.prompts:
            raise ValueError(f"Prompt name {prompt_name!r} not found; available: {list(st_model.prompts)}")
        return st_model.prompts[prompt_name]
    if prompt is None and st_model.default_prompt_name is not None:
        return st_model.prompts.get(st_model.default_prompt_name)
    return prompt


def _embedder_for(st_model: Any, fidelity: str = "exact") -> Embedder:
    """An Embedder that shares the modules of ``st_model`` (Transformer, Pooling, Dense, Normalize).

    A tier other than exact on a model without a packed forward runs on a copy of the transformer whose
    Linear layers are swapped, so that the SentenceTransformer itself (and its original encode) keeps
    its float32 weights.
    """
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    modules = list(st_model)
    if len(modules) < 2 or not isinstance(modules[0], Transformer) or not isinstance(modules[1], Pooling):
        names = [type(m).__name__ for m in modules]
        raise ValueError(f"accelerate() needs a Transformer followed by Pooling, the model has {names}")
    transformer = modules[0]
    if transformer.backend != "torch" or transformer.transformer_task != "feature-extraction":
        raise ValueError(
            f"accelerate() runs torch feature-extraction models; this one is {transformer.backend!r} "
            f"{transformer.transformer_task!r}"
        )
    if (
        transformer.modality_config.get("text", {}).get("method") != "forward"
        or transformer.tokenizer is None
    ):
        raise ValueError("accelerate() needs a text model whose forward returns token embeddings")
    post: list[Any] = []
    for m in modules[2:]:
        if isinstance(m, Normalize) and m.module_input_name == m.module_output_name == "sentence_embedding":
            post.append(loading.Normalize())
        elif isinstance(m, Dense) and m.module_input_name == m.module_output_name == "sentence_embedding":
            residual = getattr(m, "residual", None)
            if m.use_residual and residual is None:
                import torch

                residual = torch.nn.Identity()
            post.append(
                loading.Dense.wrap(m.linear, m.activation_function, residual if m.use_residual else None)
            )
        else:
            raise ValueError(f"accelerate() does not support the module {type(m).__name__} ({m!r})")
    model = transformer.auto_model
    if fidelity != "exact":
        if next(model.parameters()).device.type != "cpu":
            raise ValueError(f"fidelity={fidelity!r} runs on the CPU only; the model is on {model.device}")
        if not packed_bert.supports(model):
            model = copy.deepcopy(model).float()
            swap_linears(model, fidelity)
    return Embedder(
        model,
        transformer.tokenizer,
        pooling_mode=modules[1].pooling_mode,
        include_prompt=modules[1].include_prompt,
        post_modules=post,
        fidelity=fidelity,
    )


def accelerate(st_model: Any, fidelity: str = "exact") -> Any:
    """Makes ``st_model.encode`` faster in place; returns ``st_model``.

    Args:
        st_model: A ``sentence_transformers.SentenceTransformer`` made of Transformer, Pooling and
            optionally Dense/Normalize modules (most text embedding models). Calling accelerate() on an
            already accelerated model with the same fidelity does nothing; another fidelity replaces
            the accelerated encode.
        fidelity: "exact" (default: the model's own outputs, max abs <= 1e-5), "near_exact" (bf16
            products, mean cosine >= 0.99995) or "int8" (mean cosine >= 0.995); CPU only for the last two.
            See docs/encode.md.

    Returns:
        ``st_model`` itself, whose ``encode`` now runs embedcore (``encode_query``/``encode_document``
        follow, as they call ``encode``). ``undo(st_model)`` or ``st_model.encode.undo()`` restores it.

    Raises:
        TypeError: st_model is not a SentenceTransformer.
        ValueError: The model has a module embedcore does not run (named in the message), or an unknown
            fidelity.
    """
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise TypeError(
            "accelerate() needs sentence-transformers installed and a SentenceTransformer"
        ) from None
    if not isinstance(st_model, SentenceTransformer):
        raise TypeError(f"st_model must be a SentenceTransformer, got {type(st_model).__name__}")
    check_fidelity(fidelity)
    current = st_model.__dict__.get(_ATTRIBUTE)
    if isinstance(current, AcceleratedEncode):
        if current.embedder.fidelity == fidelity:
            return st_model
        undo(st_model)
    embedder = _embedder_for(st_model, fidelity)
    st_model.__dict__[_ATTRIBUTE] = AcceleratedEncode(st_model, embedder, st_model.__dict__.get(_ATTRIBUTE))
    return st_model


def undo(st_model: Any) -> Any:
    """Restores the encode that ``st_model`` had before :func:`accelerate`; returns ``st_model``.

    A model that is not accelerated is returned unchanged.
    """
    current = st_model.__dict__.get(_ATTRIBUTE)
    if isinstance(current, AcceleratedEncode):
        if current.embedder._attention is not None:  # encode(device="cuda") switched the attention
            current.embedder._attention.undo()
            current.embedder._attention = None
        if current._previous is not None:
            st_model.__dict__[_ATTRIBUTE] = current._previous
        else:
            del st_model.__dict__[_ATTRIBUTE]
    return st_model


def is_accelerated(st_model: Any) -> bool:
    """Whether ``st_model.encode`` currently runs embedcore."""
    return isinstance(getattr(st_model, "__dict__", {}).get(_ATTRIBUTE), AcceleratedEncode)
