"""OpenVINO as the execution engine of the transformer forward, under embedcore's batching and pooling.

embedcore keeps everything around the forward (one tokenizer call, batches of texts sorted by token
count and padded only to their longest text, input order restored, fused pooling / normalization /
truncation, quantization of the outputs); OpenVINO runs the encoder itself, converted once from the
loaded PyTorch model (no export folder, nothing downloaded). On this class of CPU its fp32 and bf16
(AMX / AVX512_BF16) kernels are faster than PyTorch's for small encoders, and its per-call overhead
for one short text is a fraction of the PyTorch module dispatch.

=========== ==============================================
tier        OpenVINO precision hint
=========== ==============================================
exact       ``INFERENCE_PRECISION_HINT=f32``
near_exact  ``bf16`` where the CPU has AVX512_BF16 or AMX
int8        ``bf16`` as well (see :data:`TIER_HINTS`)
=========== ==============================================

OpenVINO is the optional ``openvino`` extra (``pip install "embedcore[openvino]"``).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import torch

from embedcore.models.packed_bert import weights_key

# int8 runs bf16 here: OpenVINO's CPU plugin has no int8-activation path for a model without calibration
# data, and int8 weights alone (decompressed to bf16 per call) measured slower than plain bf16 on this
# CPU (0.85x for 64 summaries, 7.4 vs 6.4 ms for one query). bf16 holds the int8 bound with margin.
TIER_HINTS = {"exact": "f32", "near_exact": "bf16", "int8": "bf16"}
INSTALL_HINT = 'OpenVINO is not installed; pip install "embedcore[openvino]" (or use engine="torch")'


def available() -> bool:
    """Whether the ``openvino`` package can be imported (checked without importing it)."""
    return importlib.util.find_spec("openvino") is not None


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 natively here (AVX512_BF16 or AMX)."""
    import openvino as ov

    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "BF16" in caps


class OpenVINOForward:
    """``model(**features).last_hidden_state`` run by OpenVINO at a tier's precision.

    Args:
        model: A Hugging Face encoder (float32, CPU) whose forward takes ``input_ids``, ``attention_mask``
            and optionally ``token_type_ids`` and returns ``last_hidden_state``.
        fidelity: A tier of :data:`TIER_HINTS`.

    Raises:
        ImportError: OpenVINO is not installed (the message says how to install it).
        ValueError: A tier OpenVINO does not run here (near_exact / int8 without bf16 hardware).
    """

    def __init__(self, model: Any, fidelity: str) -> None:
        if not available():
            raise ImportError(INSTALL_HINT)
        if fidelity not in TIER_HINTS:
            raise ValueError(f"the OpenVINO engine runs the tiers {tuple(TIER_HINTS)}, got {fidelity!r}")
        if TIER_HINTS[fidelity] == "bf16" and not cpu_has_bf16():
            raise ValueError(f"{fidelity} on OpenVINO needs a CPU with AVX512_BF16 or AMX")
        self.model = model
        self.fidelity = fidelity
        self._params = list(model.parameters())  # taken once, as in PackedForward
        self._converted: Any = None
        self._names: tuple[str, ...] = ()
        self._compiled: dict[int, Any] = {}  # thread count -> compiled model
        self._key: tuple = ()

    def _model_for(self, names: tuple[str, ...]) -> Any:
        # A model changed in place after conversion (fine-tuning, load_state_dict) is converted again.
        key = weights_key(self._params)
        if self._converted is None or names != self._names or key != self._key:
            self._converted = self._convert(names)
            self._names, self._key = names, key
            self._compiled.clear()
        threads = torch.get_num_threads()
        compiled = self._compiled.get(threads)
        if compiled is None:
            import openvino as ov

            config = {
                "INFERENCE_PRECISION_HINT": TIER_HINTS[self.fidelity],
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": threads,
            }
            compiled = ov.Core().compile_model(self._converted, "CPU", config)
            self._compiled[threads] = compiled
        return compiled

    def _convert(self, names: tuple[str, ...]) -> Any:
        import openvino as ov

        example = {name: torch.ones((2, 8), dtype=torch.long) for name in names}
        if "token_type_ids" in example:
            example["token_type_ids"].zero_()
        # A padded row: a tracer that sees an all-ones mask may drop the masking from the graph.
        example["attention_mask"][1, 4:] = 0
        inputs = [(name, [-1, -1], ov.Type.i64) for name in names]
        with torch.no_grad():  # output 0 of a Hugging Face encoder is last_hidden_state
            return ov.convert_model(self.model, example_input=example, input=inputs)

    def __call__(self, **features: torch.Tensor) -> torch.Tensor:
        """Padded features in (each (B, L) int64 CPU tensors), (B, L, hidden) float32 tensor out."""
        names = tuple(sorted(features))
        compiled = self._model_for(names)
        arrays = {name: features[name].numpy().astype(np.int64, copy=False) for name in names}
        out = compiled(arrays)[0]
        return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32))
