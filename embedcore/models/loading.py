"""Reading embedding models from disk: sentence-transformers folders and plain Hugging Face checkpoints.

A sentence-transformers folder holds ``modules.json`` (the module chain), the Transformer's files and
``sentence_bert_config.json`` (max_seq_length, do_lower_case), one folder per further module
(``1_Pooling/config.json``, ``2_Dense/{config.json, model.safetensors}``, ``Normalize`` needs none)
and ``config_sentence_transformers.json`` (prompts, default_prompt_name, similarity_fn_name,
truncate_dim). A plain checkpoint holds ``config.json`` and weights; it gets the pooling that
sentence-transformers would give it: ``lasttoken`` for a causal LM that stays causal, else ``mean``.

Nothing here downloads: a local folder, or a repository already in the Hugging Face cache, or a
one-line ``ValueError``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
# Legacy Pooling config booleans, in sentence-transformers' concatenation order.
_LEGACY_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# sentence-transformers wrote the Transformer's settings under several names over the years.
_TRANSFORMER_CONFIG_FILES = (
    "sentence_bert_config.json",
    "sentence_roberta_config.json",
    "sentence_distilbert_config.json",
    "sentence_camembert_config.json",
    "sentence_albert_config.json",
    "sentence_xlm-roberta_config.json",
    "sentence_xlnet_config.json",
)
SUPPORTED_MODULES = ("Transformer", "Pooling", "Dense", "Normalize")
SIMILARITY_FN_NAMES = ("cosine", "dot", "euclidean", "manhattan")

PoolingMode = str | tuple[str, ...]


class Dense(nn.Module):
    """sentence-transformers' ``Dense`` module: ``y = activation(x @ W.T + b)`` on the sentence embedding.

    Args:
        in_features: Input width.
        out_features: Output width.
        bias: Whether the linear layer has a bias.
        activation: A ``torch.nn`` module applied after the linear layer.
        residual: Adds ``x`` (projected without bias when the widths differ) to the output.
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool, activation: nn.Module, residual: bool = False
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation_function = activation
        self.use_residual = residual
        if residual and in_features != out_features:
            self.residual = nn.Linear(in_features, out_features, bias=False)

    @classmethod
    def wrap(cls, linear: nn.Linear, activation: nn.Module, residual: nn.Module | None = None) -> Dense:
        """A Dense that shares the given modules (and so their weights), e.g. those of a loaded
        sentence-transformers ``Dense``; ``residual`` is an identity marker (``nn.Identity``) or the
        bias-free projection."""
        dense = cls.__new__(cls)
        nn.Module.__init__(dense)
        dense.linear = linear
        dense.activation_function = activation
        dense.use_residual = residual is not None
        if isinstance(residual, nn.Linear):
            dense.residual = residual
        return dense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, in_features) -> (batch, out_features), same dtype."""
        out = self.activation_function(self.linear(x))
        if self.use_residual:
            out = out + (self.residual(x) if hasattr(self, "residual") else x)
        return out


class Normalize(nn.Module):
    """Marks sentence-transformers' ``Normalize`` module (L2 normalisation of the sentence embedding).

    The Embedder fuses it into ``ec.pool(normalize=True)`` when it directly follows the pooling, so the
    module itself only runs after a ``Dense`` layer.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, dim) -> (batch, dim) with unit L2 rows (sentence-transformers' F.normalize)."""
        return torch.nn.functional.normalize(x, p=2, dim=-1)


@dataclass
class LoadedModel:
    """Everything the Embedder needs, read from one model folder.

    Attributes:
        path: The resolved local folder.
        model: The Hugging Face base model (``AutoModel``), in eval mode.
        tokenizer: Its fast tokenizer, ``model_max_length`` set to the max sequence length.
        pooling_mode: One of POOLING_MODES or a tuple of them (concatenated in order).
        include_prompt: False excludes prompt tokens from pooling.
        post_modules: Dense / Normalize modules that follow the pooling, in order.
        prompts: Prompt name -> prompt text.
        default_prompt_name: Prompt used when encode() gets neither prompt nor prompt_name.
        similarity_fn_name: Saved similarity function name, or None.
        truncate_dim: Saved default truncation, or None.
        causal: True when the backbone is a causal LM that attends causally.
    """

    path: str
    model: Any
    tokenizer: Any
    pooling_mode: PoolingMode
    include_prompt: bool = True
    post_modules: list[nn.Module] = field(default_factory=list)
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str | None = None
    truncate_dim: int | None = None
    causal: bool = False


def resolve_path(name_or_path: Any) -> str:
    """A local model folder for ``name_or_path``: the folder itself, or a cached Hub snapshot.

    Raises:
        TypeError: name_or_path is not a str or os.PathLike.
        ValueError: Not a local folder and not in the Hugging Face cache (nothing is downloaded).
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a str or os.PathLike, got {type(name_or_path).__name__}")
    path = os.path.expanduser(os.fspath(name_or_path))
    if os.path.isdir(path):
        return os.path.abspath(path)
    if os.path.exists(path):
        raise ValueError(f"name_or_path {path!r} is a file; expected a model folder")
    if path.count("/") <= 1 and not path.startswith((".", "/")) and path:
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download(path, local_files_only=True)
        except Exception:  # not cached, or an invalid repo id: both mean "not available offline"
            pass
    raise ValueError(
        f"name_or_path {path!r} is not a local folder and not in the Hugging Face cache; embedcore never "
        "downloads models: pass the path of a downloaded model folder"
    )


def _read_json(path: str, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {path} is not valid JSON: {exc}") from None


def _require(folder: str, name: str, hint: str) -> str:
    file = os.path.join(folder, name)
    if not os.path.isfile(file):
        raise ValueError(f"{folder} is not a model folder: {name} not found ({hint})")
    return file


def pooling_from_config(config: dict[str, Any]) -> tuple[PoolingMode, bool]:
    """(pooling_mode, include_prompt) from a Pooling ``config.json``, legacy booleans or compact form.

    Legacy booleans become the tuple of active modes in sentence-transformers' order (``mean`` when
    none is set); an explicit ``pooling_mode`` wins over them.
    """
    mode = config.get("pooling_mode")
    if mode is None:
        active = tuple(m for key, m in _LEGACY_POOLING_KEYS.items() if config.get(key, False))
        mode = active or ("mean",)
    return check_pooling_mode(mode, "pooling_mode"), bool(config.get("include_prompt", True))


def check_pooling_mode(mode: Any, name: str = "pooling") -> PoolingMode:
    """A pooling mode string or a tuple of them, validated; a 1-tuple becomes its string."""
    modes = (mode,) if isinstance(mode, str) else mode
    if not isinstance(modes, (tuple, list)) or not modes:
        raise TypeError(f"{name} must be a pooling mode or a tuple of them, got {mode!r}")
    for m in modes:
        if m not in POOLING_MODES:
            raise ValueError(f"Invalid {name} {m!r}; valid: {POOLING_MODES}")
    return modes[0] if len(modes) == 1 else tuple(modes)


def _load_dense(folder: str, trust_remote_code: bool) -> Dense:
    config = _read_json(_require(folder, "config.json", "a Dense module folder"), "Dense config")
    activation_ref = config.get("activation_function") or "torch.nn.modules.activation.Tanh"
    if not activation_ref.startswith("torch.") and not trust_remote_code:
        raise ValueError(
            f"Dense activation {activation_ref!r} in {folder} is not a torch.nn class; "
            "pass trust_remote_code=True to import it"
        )
    module_name, _, class_name = activation_ref.rpartition(".")
    activation_class = getattr(importlib.import_module(module_name), class_name)
    if not (inspect.isclass(activation_class) and issubclass(activation_class, nn.Module)):
        raise ValueError(f"Dense activation {activation_ref!r} in {folder} is not a torch.nn.Module class")
    dense = Dense(
        int(config["in_features"]),
        int(config["out_features"]),
        bool(config.get("bias", True)),
        activation_class(),
        bool(config.get("use_residual", False)),
    )
    if os.path.isfile(os.path.join(folder, "model.safetensors")):
        from safetensors.torch import load_file

        state = load_file(os.path.join(folder, "model.safetensors"))
    elif os.path.isfile(os.path.join(folder, "pytorch_model.bin")):
        state = torch.load(os.path.join(folder, "pytorch_model.bin"), map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"{folder} is not a Dense module folder: model.safetensors not found")
    dense.load_state_dict(state)
    return dense.eval()


def _module_kind(entry: dict[str, Any], index: int) -> str:
    ref = entry.get("type")
    if not isinstance(ref, str) or "path" not in entry:
        raise ValueError(f"modules.json entry {index} needs a 'type' and a 'path', got {entry!r}")
    kind = ref.rpartition(".")[2]
    if not ref.startswith("sentence_transformers.") or kind not in SUPPORTED_MODULES:
        raise ValueError(
            f"modules.json entry {index} has module type {ref!r}; embedcore reads the sentence-transformers "
            f"modules {SUPPORTED_MODULES}"
        )
    return kind


def _lowercase(tokenizer: Any) -> None:
    """Prepends a Lowercase normalizer, as sentence-transformers does for ``do_lower_case``."""
    from tokenizers.normalizers import Lowercase, Sequence

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError("do_lower_case needs a fast tokenizer")
    normalizer = backend.normalizer
    if normalizer is not None and "Lowercase" in repr(normalizer):
        return
    parts = [Lowercase()]
    if isinstance(normalizer, Sequence):
        parts += list(normalizer)
    elif normalizer is not None:
        parts.append(normalizer)
    backend.normalizer = Sequence(parts)


def _default_pooling(config: Any, bidirectional: bool) -> tuple[PoolingMode, bool]:
    """sentence-transformers' default for a plain checkpoint: lasttoken for a causal LM, else mean."""
    architectures = getattr(config, "architectures", None) or []
    causal_lm = bool(architectures) and architectures[0].endswith("ForCausalLM")
    causal = causal_lm and getattr(config, "is_causal", True) is not False and not bidirectional
    return ("lasttoken" if causal else "mean"), causal


def load(
    name_or_path: Any,
    *,
    dtype: Any = None,
    pooling: Any = None,
    bidirectional: bool = False,
    max_seq_length: int | None = None,
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Reads a sentence-transformers folder or a plain Hugging Face checkpoint, offline.

    Args:
        name_or_path: A local folder, or a repo id already in the Hugging Face cache.
        dtype: torch dtype (or "auto") for the backbone weights; None keeps transformers' default.
        pooling: Overrides the folder's pooling mode (a mode or a tuple of modes).
        bidirectional: The caller makes a causal LM bidirectional; only changes the default pooling.
        max_seq_length: Overrides the saved max sequence length (tokens; longer texts are truncated).
        prompts: Prompt name -> text; wins over saved prompts of the same name.
        default_prompt_name: Wins over the saved default prompt name.
        trust_remote_code: Passed to transformers; also allows non-torch Dense activations.

    Returns:
        A LoadedModel with the backbone in eval mode on the CPU.

    Raises:
        ValueError: Not a model folder (the missing file is named), an unsupported module type,
            an unknown pooling mode, or a default prompt name that is not among the prompts.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = resolve_path(name_or_path)
    if max_seq_length is not None and (
        isinstance(max_seq_length, bool) or not isinstance(max_seq_length, int) or max_seq_length < 1
    ):
        raise ValueError(f"max_seq_length must be a positive int or None, got {max_seq_length!r}")
    if prompts is not None and (
        not isinstance(prompts, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in prompts.items())
    ):
        raise TypeError(f"prompts must be a dict of str -> str, got {prompts!r}")

    modules_file = os.path.join(path, "modules.json")
    transformer_dir = path
    pooling_mode: PoolingMode | None = None
    include_prompt = True
    post_modules: list[nn.Module] = []
    st_config: dict[str, Any] = {}
    if os.path.isfile(modules_file):
        entries = _read_json(modules_file, "modules.json")
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"modules.json in {path} must be a non-empty list of modules")
        kinds = [_module_kind(entry, i) for i, entry in enumerate(entries)]
        if kinds[0] != "Transformer" or kinds.count("Transformer") != 1 or "Pooling" not in kinds:
            raise ValueError(
                f"modules.json in {path} has modules {kinds}; embedcore needs one Transformer first, "
                "then Pooling"
            )
        if kinds.index("Pooling") != 1:
            raise ValueError(
                f"modules.json in {path} has modules {kinds}; Pooling must follow the Transformer"
            )
        for kind, entry in zip(kinds, entries):
            folder = os.path.join(path, entry["path"])
            if kind == "Transformer":
                transformer_dir = folder
            elif kind == "Pooling":
                pool_config = _read_json(
                    _require(folder, "config.json", "the Pooling module's folder"), "Pooling config"
                )
                pooling_mode, include_prompt = pooling_from_config(pool_config)
            elif kind == "Dense":
                post_modules.append(_load_dense(folder, trust_remote_code))
            else:  # Normalize has no files; old folders omit its directory altogether
                post_modules.append(Normalize())
        for name in _TRANSFORMER_CONFIG_FILES:
            if os.path.isfile(os.path.join(transformer_dir, name)):
                st_config = _read_json(os.path.join(transformer_dir, name), name)
                break
        meta_file = os.path.join(path, "config_sentence_transformers.json")
        meta = _read_json(meta_file, "config_sentence_transformers.json") if os.path.isfile(meta_file) else {}
    else:
        _require(
            path, "config.json", "a sentence-transformers folder has modules.json, a checkpoint config.json"
        )
        meta = {}
    _require(transformer_dir, "config.json", "the Transformer module's Hugging Face config")

    task = st_config.get("transformer_task", "feature-extraction")
    if task != "feature-extraction":
        raise ValueError(f"{path}: transformer_task {task!r} is not an embedding model (feature-extraction)")
    model_kwargs = dict(st_config.get("model_kwargs") or st_config.get("model_args") or {})
    tokenizer_kwargs = dict(st_config.get("processor_kwargs") or st_config.get("tokenizer_args") or {})
    for kwargs in (model_kwargs, tokenizer_kwargs):
        kwargs.pop("trust_remote_code", None)  # a saved config may not grant itself remote code
    if "torch_dtype" in model_kwargs:
        model_kwargs["dtype"] = model_kwargs.pop("torch_dtype")
    if dtype is not None:
        model_kwargs["dtype"] = dtype

    config = AutoConfig.from_pretrained(
        transformer_dir, local_files_only=True, trust_remote_code=trust_remote_code
    )
    if hasattr(config, "use_cache"):
        config.use_cache = False  # embedding needs no KV cache
    model = AutoModel.from_pretrained(
        transformer_dir,
        config=config,
        local_files_only=True,
        trust_remote_code=trust_remote_code,
        **model_kwargs,
    ).eval()

    seq_len = max_seq_length if max_seq_length is not None else st_config.get("max_seq_length")
    if seq_len is not None:
        tokenizer_kwargs["model_max_length"] = int(seq_len)
    tokenizer = AutoTokenizer.from_pretrained(
        transformer_dir, local_files_only=True, trust_remote_code=trust_remote_code, **tokenizer_kwargs
    )
    if st_config.get("do_lower_case"):
        _lowercase(tokenizer)
    max_positions = getattr(config, "max_position_embeddings", -1)
    if seq_len is None and isinstance(max_positions, int) and max_positions > 0:
        tokenizer.model_max_length = min(tokenizer.model_max_length, max_positions)

    default_mode, causal = _default_pooling(config, bidirectional)
    if pooling is not None:
        pooling_mode = check_pooling_mode(pooling)
    elif pooling_mode is None:
        pooling_mode = default_mode

    # Prompts as sentence-transformers merges them: "query"/"document" placeholders, the caller's, then
    # the saved ones for names the caller did not set.
    merged: dict[str, str] = {"query": "", "document": ""}
    merged.update(prompts or {})
    for name, text in (meta.get("prompts") or {}).items():
        if name not in (prompts or {}):
            merged[name] = text or ""
    default_name = default_prompt_name if default_prompt_name is not None else meta.get("default_prompt_name")
    if default_name is not None and default_name not in merged:
        raise ValueError(f"default_prompt_name {default_name!r} is not among the prompts {sorted(merged)}")
    similarity = meta.get("similarity_fn_name")
    return LoadedModel(
        path=path,
        model=model,
        tokenizer=tokenizer,
        pooling_mode=pooling_mode,
        include_prompt=include_prompt,
        post_modules=post_modules,
        prompts=merged,
        default_prompt_name=default_name,
        similarity_fn_name=similarity if similarity in SIMILARITY_FN_NAMES else None,
        truncate_dim=meta.get("truncate_dim"),
        causal=causal,
    )
