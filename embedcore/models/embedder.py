"""``Embedder``: sentence-transformers' ``encode`` with the same numbers, through the same call, faster.

Order of operations (sentence-transformers' own; README "One order of operations")::

    tokenize -> transformer -> pool -> (Dense) -> (Normalize module) -> truncate_dim
             -> (normalize_embeddings) -> quantize (precision)

Pooling, the Normalize module, truncation and ``normalize_embeddings`` run fused in ``ec.pool``;
quantization runs once over all embeddings in ``ec.quantize`` (int8/uint8 ranges come from the whole
input, as in sentence-transformers).

Where the time goes and what is done about it: the transformer forward is nearly all of it. Texts are
tokenized once, sorted by their exact token count (sentence-transformers sorts by character count, a
proxy that leaves ~10-30% of every batch as padding on real text), batched, padded only to the longest
text of each batch, run under ``torch.inference_mode`` and put back in input order by index. On CUDA
the attention runs embedcore's padding-free varlen kernel. On the CPU, BERT encoders run
:mod:`embedcore.models.packed_bert` (Linear layers over the packed real tokens, fused Q/K/V) at the
fidelity tier chosen at load time: ``"exact"``, ``"near_exact"`` (bf16 products) or ``"int8"``
(:mod:`embedcore.models.fidelity`, docs/encode.md).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from embedcore._spec import check_fidelity
from embedcore.models import loading
from embedcore.models.encode_args import batch_tensor, check_sentences, prompt_boundary
from embedcore.models.engine import check_engine, make_forward
from embedcore.models.fidelity import swap_linears

logger = logging.getLogger(__name__)

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
OUTPUT_VALUES = ("sentence_embedding", "token_embeddings", None)
QUANTIZE_WEIGHTS = (None, "int8")  # deprecated alias of fidelity="int8"
_SIMILARITIES = ("cosine", "dot", "euclidean", "manhattan")
_FLOAT_PRECISION = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}


class PromptNameError(KeyError, ValueError):
    """Unknown ``prompt_name``: a KeyError, and a ValueError as sentence-transformers raises."""

    def __str__(self) -> str:  # KeyError would print the repr of its message
        return str(self.args[0])


class Embedder:
    """A text embedding model with sentence-transformers' ``encode`` semantics.

    Build it with :meth:`from_pretrained`; the constructor takes already-loaded parts.

    Args:
        model: A Hugging Face base model (``AutoModel``) returning ``last_hidden_state``.
        tokenizer: Its fast tokenizer; ``tokenizer.model_max_length`` is the max sequence length.
        pooling_mode: A mode of ``embedcore.models.loading.POOLING_MODES`` or a tuple of them.
        include_prompt: False leaves prompt tokens out of the pooling.
        post_modules: ``loading.Dense`` / ``loading.Normalize`` modules that follow the pooling.
        prompts: Prompt name -> text.
        default_prompt_name: The prompt used when encode() gets neither ``prompt`` nor ``prompt_name``.
        truncate_dim: Default truncation of the sentence embeddings (None keeps all dimensions).
        similarity_fn_name: "cosine" (default), "dot", "euclidean" or "manhattan".
        fidelity: "exact" (default), "near_exact" or "int8" (:mod:`embedcore.models.fidelity`). The tier
            runs through the packed CPU forward of BERT encoders; other models get it from
            :func:`~embedcore.models.fidelity.swap_linears`, which :meth:`from_pretrained` applies.
        engine: "auto" (default), "torch" or "openvino": what runs the CPU forward of BERT encoders
            (:mod:`embedcore.models.engine`).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        pooling_mode: Any = "mean",
        include_prompt: bool = True,
        post_modules: Sequence[torch.nn.Module] = (),
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
        truncate_dim: int | None = None,
        similarity_fn_name: str | None = None,
        fidelity: str = "exact",
        engine: str = "auto",
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(tokenizer):
            raise TypeError(f"tokenizer must be a Hugging Face tokenizer, got {type(tokenizer).__name__}")
        for m in post_modules:
            if not isinstance(m, (loading.Dense, loading.Normalize)):
                raise TypeError(f"post_modules must hold loading.Dense/Normalize, got {type(m).__name__}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.pooling_mode = loading.check_pooling_mode(pooling_mode, "pooling_mode")
        self.include_prompt = bool(include_prompt)
        self.post_modules = list(post_modules)
        self.prompts = dict(prompts or {})
        if default_prompt_name is not None and default_prompt_name not in self.prompts:
            raise ValueError(
                f"default_prompt_name {default_prompt_name!r} is not among the prompts {sorted(self.prompts)}"
            )
        self.default_prompt_name = default_prompt_name
        self.truncate_dim = None if truncate_dim is None else self._check_truncate_dim(truncate_dim)
        self.similarity_fn_name = similarity_fn_name
        self._bidirectional: Any = None  # ec.bidirectional handle
        self._attention: Any = None  # handle of the embedcore attention implementation (CUDA)
        self.fidelity = check_fidelity(fidelity)
        self.engine = check_engine(engine)
        self._packed = make_forward(self.model, self.fidelity, self.engine)
        forward_params = self._forward_parameters()
        self._use_token_type_ids = "token_type_ids" in forward_params and "token_type_ids" in getattr(
            tokenizer, "model_input_names", ()
        )

    def __getstate__(self) -> dict[str, Any]:
        # The engine's forward holds compiled/converted state (OpenVINO models, packed weights) that does
        # not pickle; a worker process rebuilds it from the model.
        state = self.__dict__.copy()
        state["_packed"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._packed = make_forward(self.model, self.fidelity, self.engine)

    # ------------------------------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: Any,
        device: Any = None,
        dtype: Any = None,
        pooling: Any = None,
        bidirectional: bool | None = None,
        max_seq_length: int | None = None,
        prompts: dict[str, str] | None = None,
        default_prompt_name: str | None = None,
        trust_remote_code: bool = False,
        *,
        truncate_dim: int | None = None,
        similarity_fn_name: str | None = None,
        fidelity: Literal["exact", "near_exact", "int8"] = "exact",
        quantize_weights: Literal["int8"] | None = None,
        engine: Literal["auto", "torch", "openvino"] = "auto",
    ) -> Embedder:
        """Loads a sentence-transformers folder or a plain Hugging Face checkpoint, offline.

        Args:
            name_or_path: A local folder, or a repo id already in the Hugging Face cache (never
                downloaded: a name that is neither raises ValueError at once).
            device: "cpu", "cuda", "cuda:1", a torch.device; None: CUDA if available, else CPU.
            dtype: torch.float32/float16/bfloat16 (or "auto") for the backbone; None: transformers'.
            pooling: Overrides the saved pooling mode; a plain checkpoint defaults to sentence-transformers'
                choice (``lasttoken`` for a causal LM that stays causal, else ``mean``).
            bidirectional: True makes a decoder LLM attend bidirectionally (``ec.bidirectional``; its
                default pooling becomes ``mean``); None or False keep the model as saved.
            max_seq_length: Tokens per text; longer texts are truncated. None: the saved value.
            prompts: Prompt name -> text, winning over saved prompts of the same name.
            default_prompt_name: Winning over the saved default prompt name.
            trust_remote_code: Passed to transformers.
            truncate_dim: Default truncation of every encode() (Matryoshka); None: the saved value.
            similarity_fn_name: "cosine", "dot", "euclidean" or "manhattan"; None: the saved one.
            fidelity: The speed/fidelity tier (CPU; docs/encode.md): "exact" (max abs <= 1e-5 to
                sentence-transformers' float32 output), "near_exact" (bf16 products; mean cosine >=
                0.99995) or "int8" (int8 products; mean cosine >= 0.995).
            quantize_weights: Deprecated alias: "int8" means ``fidelity="int8"``.
            engine: "auto" (OpenVINO where installed and it runs the tier, else torch), "torch" or
                "openvino" (the ``openvino`` extra): what runs the CPU forward of BERT encoders.

        Returns:
            An Embedder in eval mode on ``device``.
        """
        if bidirectional is not None and not isinstance(bidirectional, bool):
            raise TypeError(f"bidirectional must be a bool or None, got {type(bidirectional).__name__}")
        if quantize_weights not in QUANTIZE_WEIGHTS:
            raise ValueError(f"quantize_weights must be one of {QUANTIZE_WEIGHTS}, got {quantize_weights!r}")
        check_fidelity(fidelity)
        check_engine(engine)
        if quantize_weights == "int8":
            warnings.warn(
                'quantize_weights="int8" is deprecated; use fidelity="int8"', DeprecationWarning, stacklevel=2
            )
            if fidelity not in ("exact", "int8"):
                raise ValueError(f'quantize_weights="int8" contradicts fidelity={fidelity!r}')
            fidelity = "int8"
        loaded = loading.load(
            name_or_path,
            dtype=dtype,
            pooling=pooling,
            bidirectional=bool(bidirectional),
            max_seq_length=max_seq_length,
            prompts=prompts,
            default_prompt_name=default_prompt_name,
            trust_remote_code=trust_remote_code,
        )
        if similarity_fn_name is not None and similarity_fn_name not in _SIMILARITIES:
            raise ValueError(f"similarity_fn_name must be one of {_SIMILARITIES}, got {similarity_fn_name!r}")
        embedder = cls(
            loaded.model,
            loaded.tokenizer,
            pooling_mode=loaded.pooling_mode,
            include_prompt=loaded.include_prompt,
            post_modules=loaded.post_modules,
            prompts=loaded.prompts,
            default_prompt_name=loaded.default_prompt_name,
            truncate_dim=truncate_dim if truncate_dim is not None else loaded.truncate_dim,
            similarity_fn_name=similarity_fn_name or loaded.similarity_fn_name,
            fidelity=fidelity,
            engine=engine,
        )
        if bidirectional:
            from embedcore.models.patching import bidirectional as make_bidirectional

            embedder._bidirectional = make_bidirectional(embedder.model, attn_implementation=None)
        target = torch.device(device) if device is not None else _default_device()
        if fidelity != "exact":
            if target.type != "cpu":
                raise ValueError(f"fidelity={fidelity!r} runs on the CPU only, got device {target}")
            if embedder._packed is None:  # no packed forward for this architecture: swap its Linears
                embedder.model.float()
                swap_linears(embedder.model, fidelity)
        embedder.to(target)
        return embedder

    # ------------------------------------------------------------------------------------------ properties

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters (CPU for a model without parameters)."""
        for p in self.model.parameters():
            return p.device
        return torch.device("cpu")

    def to(self, device: Any) -> Embedder:
        """Moves the model (and the Dense modules) to ``device``; returns self. On CUDA, attention runs
        embedcore's padding-free varlen kernel."""
        device = torch.device(device)
        if device.type != "cpu" and self.fidelity != "exact":
            raise ValueError(f"fidelity={self.fidelity!r} runs on the CPU only, got device {device}")
        self.model.to(device)
        for m in self.post_modules:
            m.to(device)
        if device.type == "cuda" and self._attention is None:
            from embedcore.models.patching import use_embedcore_attention

            self._attention = use_embedcore_attention(self.model)
        return self

    @property
    def max_seq_length(self) -> int:
        """Tokens per text (the tokenizer's ``model_max_length``); longer texts are truncated."""
        return int(self.tokenizer.model_max_length)

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"max_seq_length must be a positive int, got {value!r}")
        self.tokenizer.model_max_length = value

    def get_sentence_embedding_dimension(self) -> int:
        """The width of encode()'s sentence embeddings before truncation."""
        width = len(self._modes()) * int(self.model.config.hidden_size)
        for m in self.post_modules:
            if isinstance(m, loading.Dense):
                width = m.linear.out_features
        return width

    def _modes(self) -> tuple[str, ...]:
        return (self.pooling_mode,) if isinstance(self.pooling_mode, str) else tuple(self.pooling_mode)

    def _forward_parameters(self) -> set[str]:
        import inspect

        return set(inspect.signature(self.model.forward).parameters)

    def _check_truncate_dim(self, truncate_dim: Any) -> int:
        if isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int):
            raise TypeError(f"truncate_dim must be an int or None, got {type(truncate_dim).__name__}")
        dim = self.get_sentence_embedding_dimension()
        if not 1 <= truncate_dim <= dim:
            raise ValueError(
                f"truncate_dim must be in [1, {dim}] (the embedding dimension), got {truncate_dim}"
            )
        return truncate_dim

    # ------------------------------------------------------------------------------------------ encode

    def resolve_prompt(self, prompt: str | None, prompt_name: str | None) -> str | None:
        """The prompt text that encode() prepends: ``prompt`` > ``prompt_name`` > default prompt name.

        Raises:
            TypeError: prompt is not a str.
            KeyError: prompt_name is not a known prompt (the known ones are listed).
        """
        if prompt is not None:
            if not isinstance(prompt, str):
                raise TypeError(f"prompt must be a str or None, got {type(prompt).__name__}")
            if prompt_name is not None:
                logger.warning("encode() got both prompt and prompt_name; prompt_name is ignored")
            return prompt
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                raise PromptNameError(
                    f"prompt_name {prompt_name!r} is not a known prompt; available: {sorted(self.prompts)}"
                )
            return self.prompts[prompt_name]
        if self.default_prompt_name is not None:
            return self.prompts.get(self.default_prompt_name)
        return None

    def encode(
        self,
        sentences: str | Sequence[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        output_value: Literal["sentence_embedding", "token_embeddings"] | None = "sentence_embedding",
        precision: Literal["float32", "int8", "uint8", "binary", "ubinary"] = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: Any = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        pool: dict[str, Any] | None = None,
        chunk_size: int | None = None,
    ) -> Any:
        """Embeds texts exactly as ``SentenceTransformer.encode`` does, faster.

        Args:
            sentences: A str (returns one embedding) or a list/tuple/array of str.
            prompt_name: A key of ``self.prompts``; its text is prepended to every sentence.
            prompt: A prompt text; wins over ``prompt_name``, which wins over ``default_prompt_name``.
            batch_size: Texts per forward pass (texts of similar token count are batched together).
            show_progress_bar: tqdm bar over batches; None shows it at logging level INFO/DEBUG.
            output_value: "sentence_embedding"; "token_embeddings" (a list of (n_tokens_i, H) tensors,
                no padding); None (a list of per-text dicts of features, no padding).
            precision: "float32", or "int8"/"uint8"/"binary"/"ubinary" codes from ``ec.quantize``
                (int8/uint8 ranges from the min/max of all returned embeddings).
            convert_to_numpy: Return an (N, D) numpy array (default).
            convert_to_tensor: Return an (N, D) torch tensor (wins over convert_to_numpy); with neither, a
                list of (D,) tensors.
            device: Moves the model to this device first; a list of devices encodes in one worker process
                per device (as ``pool``).
            normalize_embeddings: L2-normalize the returned vectors (after truncation).
            truncate_dim: Keep the first ``truncate_dim`` dimensions; None: ``self.truncate_dim``.
            pool: A pool from :meth:`start_multi_process_pool`.
            chunk_size: Texts per chunk sent to a pool worker; None picks one.

        Returns:
            float32 (N, D) numpy array by default (the model's dtype for fp16 models; float32 for bf16);
            (N, ceil(D/8)) int8/uint8 bytes for binary/ubinary; (D,) for a single str input. An empty
            list gives an (0, D) array (or tensor, or []).

        Raises:
            TypeError: sentences is not a str or a sequence of str (the offending index is named), or an
                argument has the wrong type.
            KeyError: Unknown prompt_name.
            ValueError: batch_size < 1, unknown precision/output_value, truncate_dim out of range.
        """
        texts, singular = check_sentences(sentences)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size}")
        if output_value not in OUTPUT_VALUES:
            raise ValueError(f"output_value must be one of {OUTPUT_VALUES}, got {output_value!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if output_value is None and precision != "float32":
            raise ValueError("precision applies to embeddings; output_value=None returns float features")
        for name, flag in (
            ("convert_to_numpy", convert_to_numpy),
            ("convert_to_tensor", convert_to_tensor),
            ("normalize_embeddings", normalize_embeddings),
        ):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() in (logging.INFO, logging.DEBUG)
        if convert_to_tensor:
            convert_to_numpy = False
        if output_value != "sentence_embedding":
            convert_to_numpy = convert_to_tensor = False
        prompt_text = self.resolve_prompt(prompt, prompt_name)
        if truncate_dim is None:
            truncate_dim = self.truncate_dim
        if truncate_dim is not None:
            truncate_dim = self._check_truncate_dim(truncate_dim)

        options = dict(
            prompt=prompt_text,
            batch_size=batch_size,
            output_value=output_value,
            normalize_embeddings=bool(normalize_embeddings),
            truncate_dim=truncate_dim,
        )
        multi_process = pool is not None or (isinstance(device, (list, tuple)) and len(device) > 0)
        if multi_process and texts:
            result = self._encode_multi_process(texts, pool, device, chunk_size, show_progress_bar, options)
        else:
            if device is not None and not isinstance(device, (list, tuple)):
                self.to(device)
            result = self._embed(
                texts, show_progress_bar=show_progress_bar, to_cpu=convert_to_numpy, **options
            )
        return self._finish(
            result,
            len(texts),
            singular,
            output_value,
            precision,
            convert_to_numpy,
            convert_to_tensor,
            truncate_dim,
        )

    def encode_query(
        self,
        sentences: str | Sequence[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """encode() with the "query" prompt when neither prompt nor prompt_name is given (its text may be
        empty, which then also overrides the default prompt), as sentence-transformers does."""
        if prompt_name is None and prompt is None and "query" in self.prompts:
            prompt_name = "query"
        return self.encode(sentences, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def encode_document(
        self,
        sentences: str | Sequence[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """encode() with the first of the "document", "passage", "corpus" prompts that exists when neither
        prompt nor prompt_name is given, as sentence-transformers does."""
        if prompt_name is None and prompt is None:
            prompt_name = next((n for n in ("document", "passage", "corpus") if n in self.prompts), None)
        return self.encode(sentences, prompt_name=prompt_name, prompt=prompt, **kwargs)

    def similarity(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """(n1, n2) float tensor of ``similarity_fn_name`` (default cosine) between all pairs.

        Args:
            embeddings1: (n1, D) or (D,) numpy array, tensor, or list of vectors.
            embeddings2: (n2, D) or (D,), same D.
        """
        a = batch_tensor(embeddings1, "embeddings1")
        b = batch_tensor(embeddings2, "embeddings2").to(a.device)
        if a.shape[1] != b.shape[1]:
            raise ValueError(f"embeddings1 has dim {a.shape[1]}, embeddings2 has dim {b.shape[1]}")
        name = self.similarity_fn_name or "cosine"
        if name == "cosine":
            a = torch.nn.functional.normalize(a, p=2, dim=1)
            b = torch.nn.functional.normalize(b, p=2, dim=1)
        if name in ("cosine", "dot"):
            return a @ b.T
        if name not in _SIMILARITIES:
            raise ValueError(f"similarity_fn_name must be one of {_SIMILARITIES}, got {name!r}")
        return -torch.cdist(a, b, p=2.0 if name == "euclidean" else 1.0)

    def start_multi_process_pool(self, target_devices: list[Any] | None = None) -> dict[str, Any]:
        """Starts one worker process per device; the model is sent to each worker once.

        Args:
            target_devices: e.g. ["cuda:0", "cuda:1"] or ["cpu", "cpu"]; None: every CUDA device, or 4
                CPU workers without CUDA.

        Returns:
            The pool, for ``encode(..., pool=pool)``; stop it with :meth:`stop_multi_process_pool`.
        """
        from embedcore.models import pool_workers

        if target_devices is None:
            n = torch.cuda.device_count() if torch.cuda.is_available() else 0
            target_devices = [f"cuda:{i}" for i in range(n)] if n else ["cpu"] * 4
        return pool_workers.start(self, target_devices)

    @staticmethod
    def stop_multi_process_pool(pool: dict[str, Any]) -> None:
        """Terminates the workers of a pool from :meth:`start_multi_process_pool`."""
        from embedcore.models import pool_workers

        pool_workers.stop(pool_workers.check_pool(pool))

    # ------------------------------------------------------------------------------------------ internals

    def _encode_multi_process(
        self,
        texts: list[str],
        pool: Any,
        device: Any,
        chunk_size: Any,
        show_progress_bar: bool,
        options: dict[str, Any],
    ) -> Any:
        from embedcore.models import pool_workers

        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        created = pool is None
        if created:
            pool = pool_workers.start(self, list(device))
        try:
            chunks = pool_workers.run(pool, texts, chunk_size, options, show_progress_bar)
        finally:
            if created:
                pool_workers.stop(pool)
        if options["output_value"] == "sentence_embedding":
            return torch.cat(chunks)
        return [item for chunk in chunks for item in chunk]

    def _tokenize(
        self, texts: list[str], prompt: str | None, count_prompt: bool
    ) -> tuple[list[list[int]], Any, list[int] | None]:
        """Token ids per text (prompt prepended, truncated, special tokens added, no padding), the token
        type ids (or None), and, when ``count_prompt`` and there is a prompt, per text the number of
        leading tokens that belong to the prompt (else None)."""
        exclude_prompt = bool(prompt) and count_prompt
        if prompt:
            texts = [prompt + t for t in texts]
        fast = bool(getattr(self.tokenizer, "is_fast", False))
        enc = self.tokenizer(
            texts,
            padding=False,
            truncation=True,
            max_length=self.max_seq_length,
            return_attention_mask=False,
            return_token_type_ids=self._use_token_type_ids,
            return_offsets_mapping=exclude_prompt and fast,
            return_special_tokens_mask=exclude_prompt and fast,
        )
        ids = enc["input_ids"]
        types = enc["token_type_ids"] if self._use_token_type_ids else None
        prompt_tokens = None
        if exclude_prompt:
            if fast:
                n = len(prompt)
                prompt_tokens = [
                    prompt_boundary(offsets, special, n)
                    for offsets, special in zip(enc["offset_mapping"], enc["special_tokens_mask"])
                ]
            else:  # sentence-transformers' own rule: the prompt tokenized alone, less a trailing special
                alone = self.tokenizer(prompt, truncation=True, max_length=self.max_seq_length)["input_ids"]
                count = len(alone) - (1 if alone and alone[-1] in self.tokenizer.all_special_ids else 0)
                prompt_tokens = [count] * len(ids)
        return ids, types, prompt_tokens

    @torch.inference_mode()
    def _embed(
        self,
        texts: list[str],
        *,
        prompt: str | None,
        batch_size: int,
        output_value: str | None,
        normalize_embeddings: bool,
        truncate_dim: int | None,
        show_progress_bar: bool,
        to_cpu: bool,
    ) -> Any:
        """The forward pass over length-sorted batches, results in input order.

        Returns:
            sentence_embedding: (N, D) float tensor (on the model's device unless ``to_cpu``);
            token_embeddings: list of (n_tokens_i, H) tensors; None: list of feature dicts.
        """
        from tqdm.auto import tqdm

        from embedcore.ops.pooling import pool

        device = self.device
        n = len(texts)
        dim = truncate_dim or self.get_sentence_embedding_dimension()
        if n == 0:
            if output_value == "sentence_embedding":
                return torch.empty((0, dim), device="cpu" if to_cpu else device)
            return []
        # Prompt tokens are counted where the pooling leaves them out, or for the features' prompt_length.
        count_prompt = not self.include_prompt or output_value is None
        ids, types, prompt_tokens = self._tokenize(texts, prompt, count_prompt)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        if int(lengths.min()) == 0:
            raise ValueError(f"sentences[{int(lengths.argmin())}] tokenizes to no token at all")
        order = np.argsort(-lengths, kind="stable")  # longest first: a too-large batch fails at once
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        fuse_post = all(isinstance(m, loading.Normalize) for m in self.post_modules)
        sentence_out = None
        per_text: list[Any] = [None] * n
        starts = range(0, n, batch_size)
        for start in tqdm(starts, desc="Batches", disable=not show_progress_bar):
            idx = order[start : start + batch_size]
            batch_lengths = lengths[idx]
            width = int(batch_lengths[0])
            positions = np.arange(width)
            mask_np = positions < batch_lengths[:, None]
            input_ids = np.full((len(idx), width), pad_id, dtype=np.int64)
            input_ids[mask_np] = np.concatenate([ids[i] for i in idx])
            features = {
                "input_ids": torch.from_numpy(input_ids).to(device),
                "attention_mask": torch.from_numpy(mask_np.astype(np.int64)).to(device),
            }
            if types is not None:
                type_ids = np.zeros((len(idx), width), dtype=np.int64)
                type_ids[mask_np] = np.concatenate([types[i] for i in idx])
                features["token_type_ids"] = torch.from_numpy(type_ids).to(device)
            hidden = self._forward(features)
            mask = torch.from_numpy(mask_np).to(device)  # bool: pool() skips its 0/1 check
            if output_value == "token_embeddings":
                for row, i in enumerate(idx):
                    token_emb = hidden[row, : batch_lengths[row]]
                    per_text[i] = token_emb.cpu() if to_cpu else token_emb
                continue
            pool_mask = None
            if prompt_tokens is not None and not self.include_prompt:
                skip = torch.as_tensor([prompt_tokens[i] for i in idx], device=device)
                pool_mask = torch.arange(width, device=device) >= skip[:, None]
            float_precision = _FLOAT_PRECISION.get(hidden.dtype, "float32")
            normalize_after = normalize_embeddings and output_value == "sentence_embedding"
            if fuse_post:
                emb = pool(
                    hidden,
                    mask,
                    self.pooling_mode,
                    pool_mask=pool_mask,
                    normalize=bool(self.post_modules),
                    truncate_dim=truncate_dim,
                    normalize_after_truncate=normalize_after,
                    precision=float_precision,
                )
            else:
                emb = pool(hidden, mask, self.pooling_mode, pool_mask=pool_mask, precision=float_precision)
                for m in self.post_modules:
                    emb = m(emb.to(m.linear.weight.dtype) if isinstance(m, loading.Dense) else emb)
                if truncate_dim is not None:
                    emb = emb[:, :truncate_dim]
                if normalize_after:
                    emb = torch.nn.functional.normalize(emb, p=2, dim=-1)
            if output_value == "sentence_embedding":
                if sentence_out is None:
                    sentence_out = torch.empty(
                        (n, emb.shape[1]), dtype=emb.dtype, device="cpu" if to_cpu else device
                    )
                sentence_out[torch.from_numpy(idx).to(sentence_out.device)] = emb.to(sentence_out.device)
                continue
            for row, i in enumerate(idx):
                length = int(batch_lengths[row])
                item = {name: value[row, :length] for name, value in features.items()}
                item["token_embeddings"] = hidden[row, :length]
                item["sentence_embedding"] = emb[row]
                if prompt:
                    item["prompt_length"] = prompt_tokens[i]
                per_text[i] = {k: v.cpu() if to_cpu and torch.is_tensor(v) else v for k, v in item.items()}
        return sentence_out if output_value == "sentence_embedding" else per_text

    def _forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, L, H) last hidden states: the packed CPU forward where it runs, else the model's own."""
        packed = self._packed
        if (
            packed is not None
            and not self.model.training
            and features["input_ids"].device.type == "cpu"
            and self.model.embeddings.word_embeddings.weight.dtype == torch.float32
        ):
            return packed(**features)
        return self.model(**features).last_hidden_state

    def _finish(
        self,
        result: Any,
        n: int,
        singular: bool,
        output_value: str | None,
        precision: str,
        convert_to_numpy: bool,
        convert_to_tensor: bool,
        truncate_dim: int | None,
    ) -> Any:
        """Quantization and the return type, as sentence-transformers' encode() ends."""
        from embedcore.ops.quantize import quantize

        if output_value == "sentence_embedding":
            if precision != "float32":
                if n == 0:
                    width = truncate_dim or self.get_sentence_embedding_dimension()
                    if precision.endswith("binary"):
                        width = (width + 7) // 8
                    dtype = np.int8 if precision in ("int8", "binary") else np.uint8
                    codes = np.zeros((0, width), dtype=dtype)
                else:
                    codes = quantize(result, precision)
                    codes = codes.cpu().numpy() if torch.is_tensor(codes) else codes
                if convert_to_tensor:
                    result = torch.from_numpy(codes)
                elif convert_to_numpy:
                    result = codes
                else:
                    result = list(torch.from_numpy(codes))
            elif convert_to_tensor:
                pass
            elif convert_to_numpy:
                result = result.float() if result.dtype == torch.bfloat16 else result
                result = result.cpu().numpy()
            else:
                result = list(result)
        elif output_value == "token_embeddings" and precision != "float32" and result:
            result = [c.cpu().numpy() if torch.is_tensor(c) else c for c in quantize(result, precision)]
        return result[0] if singular else result


def _default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
