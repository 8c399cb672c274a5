"""The systems embedcore's benchmarks measure it against, per fidelity tier.

A CPU user who wants faster embeddings than ``SentenceTransformer.encode`` switches sentence-transformers
to its ONNX Runtime or OpenVINO backend. This module builds those peers offline, as
sentence-transformers runs them: the model's own tokenizer, batching, pooling and normalisation
(``SentenceTransformer.encode`` itself), with the transformer swapped for an inference engine.

| peer | tier | engine |
|---|---|---|
| ``st-torch`` | exact | PyTorch fp32 (plain ``SentenceTransformer``) |
| ``st-onnx`` | exact | ONNX Runtime, plain fp32 export (``backend="onnx"``) |
| ``st-openvino-f32`` | exact | OpenVINO, ``INFERENCE_PRECISION_HINT=f32`` |
| ``st-openvino`` | near_exact | OpenVINO defaults (bf16 inside on AVX512_BF16/AMX CPUs) |
| ``st-onnx-qint8`` | int8 | ONNX Runtime dynamic int8 (``export_dynamic_quantized_onnx_model``, vnni) |
| ``st-openvino-qint8`` | int8 | OpenVINO static int8 (NNCF), calibrated on the caller's texts |

sentence-transformers' own ``backend=`` argument needs optimum / optimum-intel, which do not install
beside the transformers release embedcore is tested on; the engines are driven directly here, with
the settings those exporters use (opset 17 export; int8: signed weights, no reduced range,
per-channel; OpenVINO: latency hint). Exports are made once into
``<cache>/st-backends/<model digest>/``, each in its own folder written atomically with a SHA-256
manifest checked on load; the installed model package is only read.

:func:`load_embedder` loads embedcore's side of a comparison at a named tier.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedcore._spec import check_fidelity

PEERS = {
    "exact": ("st-torch", "st-onnx", "st-openvino-f32"),
    "near_exact": ("st-openvino",),
    "int8": ("st-onnx-qint8", "st-openvino-qint8"),
}
TIER_OF = {peer: tier for tier, peers in PEERS.items() for peer in peers}
_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_MANIFEST = "manifest.json"
_FORMAT = "embedcore.st-export/1"


class PeerUnavailableError(RuntimeError):
    """A peer's engine is not installed (or its export failed); the message says what to install."""




def load_embedder(path: str | os.PathLike[str], fidelity: str) -> Any:
    """embedcore's Embedder of tier ``fidelity`` ("exact", "near_exact" or "int8") on the CPU."""
    from embedcore.models.embedder import Embedder

    return Embedder.from_pretrained(str(path), device="cpu", fidelity=check_fidelity(fidelity))


def cosine_stats(ours: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Mean and min row cosine and max abs difference of ``ours`` against ``reference``.

    Args:
        ours, reference: (n, dim) float arrays, same shape.
    """
    a = np.asarray(ours, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ours has shape {a.shape}, reference has shape {b.shape}; need equal (n, dim)")
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    return {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
            "max_abs_diff": float(np.abs(a - b).max())}


# -- export cache -------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(folder: Path) -> bool:
    """True when ``folder`` holds a complete export: its manifest's files with their SHA-256."""
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
        return manifest.get("format") == _FORMAT and all(
            _sha256(folder / name) == digest for name, digest in manifest["files"].items()
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def cached_export(root: Path, name: str, make: Callable[[Path], None]) -> Path:
    """The export folder ``root/name``: reused when its manifest verifies, else made by ``make(tmp)``
    in a temporary sibling folder and moved into place (a half-written export is never seen).

    An unverifiable folder is moved aside to ``name.broken-<pid>`` rather than deleted.
    """
    folder = root / name
    if _verified(folder):
        return folder
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        make(tmp)
        files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / _MANIFEST).write_text(json.dumps({"format": _FORMAT, "files": files}, indent=1))
        if folder.exists():
            folder.rename(root / f"{name}.broken-{os.getpid()}")
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def model_digest(path: Path) -> str:
    """A short digest of a model folder's files (names and sizes; contents of the small ones)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        size = file.stat().st_size
        digest.update(_sha256(file).encode() if size < 1 << 20 else str(size).encode())
    return digest.hexdigest()[:16]


def texts_digest(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for t in texts:
        digest.update(t.encode("utf-8") + b"\0")
    return digest.hexdigest()[:16]


# -- engines behind SentenceTransformer.encode -----------------------------------------------------


def _hf_model(st: Any) -> Any:
    """The Hugging Face model inside a SentenceTransformer's first (Transformer) module."""
    return st[0].model if hasattr(st[0], "model") else st[0].auto_model


def _forward_module(model: Any) -> Any:
    """``model`` as a module of (input_ids, attention_mask, token_type_ids) -> last hidden state:
    the positional signature the ONNX and OpenVINO converters trace."""
    import torch

    class Forward(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

    return Forward(model).eval()


def _engine_module(run: Callable[[dict[str, np.ndarray]], np.ndarray], config: Any) -> Any:
    """A torch Module standing in for the Hugging Face model inside sentence-transformers' Transformer
    module: ``forward(**features)`` -> ``{"last_hidden_state": (batch, seq, hidden) float32 tensor}``."""
    import torch

    class Engine(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = config

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None, **_: Any) -> Any:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            feed = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy(),
                    "token_type_ids": token_type_ids.numpy()}
            return {"last_hidden_state": torch.from_numpy(np.ascontiguousarray(run(feed)))}

    return Engine()


def _swap_engine(st: Any, run: Callable[[dict[str, np.ndarray]], np.ndarray]) -> Any:
    """Replaces the transformer inside ``st`` (a SentenceTransformer) by ``run``; returns ``st``."""
    module = st[0]
    attr = "model" if hasattr(module, "model") else "auto_model"
    engine = _engine_module(run, getattr(module, attr).config)
    setattr(module, attr, engine)
    if getattr(module, "model_forward_params", None) is not None:
        module.model_forward_params = set(_INPUTS)
    return st


def _tokenize(st: Any, texts: list[str]) -> dict[str, Any]:
    """The transformer's inputs for ``texts`` as sentence-transformers makes them (``preprocess``
    since 5.x, ``tokenize`` before)."""
    features = st.preprocess(texts) if hasattr(st, "preprocess") else st.tokenize(texts)
    return {k: v for k, v in features.items() if k in _INPUTS}


def _example(st: Any) -> dict[str, Any]:
    return _tokenize(st, ["an example text", "a second, longer example text"])


def _export_onnx(st: Any, out: Path) -> None:
    import torch

    features = _example(st)
    names = [k for k in _INPUTS if k in features]
    axes = {n: {0: "batch", 1: "sequence"} for n in [*names, "last_hidden_state"]}
    with torch.no_grad():
        torch.onnx.export(_forward_module(_hf_model(st)),
                          tuple(features[n] for n in names), str(out / "model.onnx"), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17,
                          dynamo=False)


def _quantize_onnx(src: Path, out: Path) -> None:
    """sentence-transformers' ``export_dynamic_quantized_onnx_model(model, "avx512_vnni", ...)``:
    dynamic quantization of the MatMuls (optimum's fully connected operators), symmetric int8
    weights per channel, asymmetric uint8 activations, no reduced range."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src / "model.onnx"), str(out / "model_qint8_avx512_vnni.onnx"),
                     op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8, per_channel=True,
                     reduce_range=False,
                     extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})


def _export_openvino(st: Any, out: Path) -> None:
    import openvino as ov

    model = ov.convert_model(_forward_module(_hf_model(st)), example_input=_example(st))
    ov.save_model(model, str(out / "openvino_model.xml"), compress_to_fp16=False)


def _quantize_openvino(st: Any, src: Path, texts: Sequence[str], out: Path) -> None:
    """Static int8 (NNCF post-training quantization, transformer preset), calibrated on ``texts``
    (at most 300, one per sample, as optimum-intel's default ``num_samples``)."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(src / "openvino_model.xml"))
    samples = [{k: v.numpy() for k, v in _tokenize(st, [t]).items()} for t in texts[:300]]
    quantized = nncf.quantize(model, nncf.Dataset(samples), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(samples))
    ov.save_model(quantized, str(out / "openvino_model.xml"), compress_to_fp16=False)


def _need(module: str, extra: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise PeerUnavailableError(f"{module} is not installed (pip install {extra}, or embedcore[bench])")


def load_peer(peer: str, model_path: str | os.PathLike[str], threads: int, cache: str | os.PathLike[str],
              calibration_texts: Sequence[str] | None = None) -> Any:
    """A SentenceTransformer that runs ``peer`` (see the module table) on ``threads`` CPU threads.

    Args:
        peer: a name of ``TIER_OF``.
        model_path: the sentence-transformers folder (only read).
        threads: engine threads (ONNX Runtime intra-op, OpenVINO ``INFERENCE_NUM_THREADS``); PyTorch's
            count is the caller's (``torch.set_num_threads``).
        cache: the embedcore cache folder; exports live in ``cache/st-backends/<model digest>/``.
        calibration_texts: the texts ``st-openvino-qint8`` is calibrated on (required for it).

    Raises:
        ValueError: unknown peer, bad threads, or st-openvino-qint8 without calibration texts.
        PeerUnavailableError: the engine is not installed.
    """
    from sentence_transformers import SentenceTransformer

    if peer not in TIER_OF:
        raise ValueError(f"Invalid peer {peer!r}; valid: {tuple(TIER_OF)}")
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    if peer == "st-openvino-qint8" and not calibration_texts:
        raise ValueError("calibration_texts are required for st-openvino-qint8")
    model_path = Path(model_path)
    st = SentenceTransformer(str(model_path), device="cpu")
    if peer == "st-torch":
        return st
    root = Path(cache) / "st-backends" / model_digest(model_path)
    if peer.startswith("st-onnx"):
        _need("onnxruntime", "onnxruntime onnx")
        import onnxruntime as ort

        folder = cached_export(root, "onnx", lambda out: _export_onnx(st, out))
        file = folder / "model.onnx"
        if peer == "st-onnx-qint8":
            file = cached_export(root, "onnx-qint8-avx512_vnni",
                                 lambda out: _quantize_onnx(folder, out)) / "model_qint8_avx512_vnni.onnx"
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        wanted = {i.name for i in session.get_inputs()}
        return _swap_engine(
            st, lambda feed: session.run(None, {k: v for k, v in feed.items() if k in wanted})[0])
    _need("openvino", "openvino")
    import openvino as ov

    folder = cached_export(root, "openvino", lambda out: _export_openvino(st, out))
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    if peer == "st-openvino-f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    if peer == "st-openvino-qint8":
        _need("nncf", "nncf")
        texts = list(calibration_texts or ())
        folder = cached_export(root, f"openvino-qint8-static-{texts_digest(texts[:300])}",
                               lambda out: _quantize_openvino(st, folder, texts, out))
    compiled = ov.Core().compile_model(str(folder / "openvino_model.xml"), "CPU", config)
    request = compiled.create_infer_request()
    wanted = {i.get_any_name() for i in compiled.inputs}

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        # The output buffer belongs to the request and is overwritten by the next call: copy it.
        return np.array(request.infer({k: v for k, v in feed.items() if k in wanted})[0])

    return _swap_engine(st, run)
