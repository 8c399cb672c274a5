"""Embedding quantization with the exact semantics of sentence-transformers' ``quantize_embeddings``.

* ``int8`` / ``uint8``: per-dimension ranges ``(2, dim)`` (row 0 the minimum, row 1 the maximum) cut
  each dimension into 255 equal buckets: ``step = (max - min) / 255`` in float32 (a zero step becomes
  1), ``code = clip(floor((x - min) / step), 0, 255)``; ``int8`` stores ``code - 128``. The ranges come
  from ``ranges``, else from ``calibration_embeddings``, else from the embeddings themselves (at least
  two of them).
* ``binary`` / ``ubinary``: the sign bits ``x > 0`` packed 8 to a byte, most significant bit first,
  the last byte zero-padded (``numpy.packbits``); ``ubinary`` keeps the raw bytes, ``binary`` stores
  ``byte - 128`` as int8.
* ``float32`` / ``float16`` / ``bfloat16``: casts (the last two are embedcore additions).

numpy in, numpy out; tensor in, tensor out on the same device. CUDA tensors run the Triton kernel of
``embedcore.kernels.pooling``; everything else runs the PyTorch reference below.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from embedcore import _backend
from embedcore._arrays import check_array, is_tensor
from embedcore._spec import (
    BINARY_PRECISIONS,
    FLOAT_NAMES,
    OUTPUT_DTYPE_NAMES,
    SCALAR_PRECISIONS,
    Precision,
    check_precision,
    output_dim,
)

Backend = Literal["auto", "reference", "triton"]
BACKENDS = ("auto", "reference", "triton")

def check_backend(backend: Any) -> str:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"Invalid backend {backend!r}; valid: {BACKENDS}")
    return backend


def output_dtype(precision: str) -> Any:
    import torch

    return getattr(torch, OUTPUT_DTYPE_NAMES[precision])


def _as_tensor(x: Any, name: str) -> Any:
    """A torch view of a numpy array or tensor (no copy), checked to hold floats."""
    import torch

    check_array(x, name)
    t = x.detach() if is_tensor(x) else torch.from_numpy(np.ascontiguousarray(x))
    if str(t.dtype).removeprefix("torch.") not in FLOAT_NAMES:
        raise TypeError(f"{name} must hold floats (float16/bfloat16/float32/float64), got {t.dtype}")
    return t


def _check_finite(t: Any, name: str) -> None:
    import torch

    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinity")


def check_ranges(ranges: Any, dim: int, device: Any, name: str = "ranges") -> Any:
    """``ranges`` as a float32 (2, dim) tensor on ``device``; finite, row 0 <= row 1."""
    import torch

    check_array(ranges, name)
    t = ranges.detach() if is_tensor(ranges) else torch.from_numpy(np.asarray(ranges))
    if not (t.is_floating_point()):
        raise TypeError(f"{name} must hold floats, got {t.dtype}")
    if t.ndim != 2 or t.shape[0] != 2 or t.shape[1] != dim:
        raise ValueError(f"{name} must have shape (2, {dim}) (min row, max row), got {tuple(t.shape)}")
    # sentence-transformers casts the ranges to float32 before deriving the buckets.
    t = t.to(device=device, dtype=torch.float32)
    _check_finite(t, name)
    if bool((t[0] > t[1]).any()):
        raise ValueError(f"{name}[0] (minimum) exceeds {name}[1] (maximum) in some dimension")
    return t


def bucket_params(ranges: Any) -> tuple[Any, Any]:
    """``(starts, steps)``, float32 (dim,), computed exactly as sentence-transformers does."""
    import torch

    starts = ranges[0].contiguous()
    steps = (ranges[1] - starts) / 255
    steps = torch.where(steps == 0, torch.ones_like(steps), steps)
    return starts, steps.contiguous()


def bucket_params_numpy(ranges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`bucket_params` in numpy for float32 (2, dim) ``ranges``: the same float32 operations
    (one IEEE subtraction and division per dimension), so the same bits, without torch's per-call cost.
    """
    starts = np.ascontiguousarray(ranges[0])
    steps = (ranges[1] - starts) / np.float32(255)
    steps[steps == 0] = 1
    return starts, steps


def _check_ranges_numpy(ranges: Any, dim: int) -> np.ndarray:
    """:func:`check_ranges` for float numpy ``ranges`` on the CPU: float32 (2, dim), same errors."""
    if ranges.ndim != 2 or ranges.shape[0] != 2 or ranges.shape[1] != dim:
        raise ValueError(f"ranges must have shape (2, {dim}) (min row, max row), got {tuple(ranges.shape)}")
    r = ranges.astype(np.float32)
    if not np.isfinite(r).all():
        raise ValueError("ranges contains NaN or infinity")
    if (r[0] > r[1]).any():
        raise ValueError("ranges[0] (minimum) exceeds ranges[1] (maximum) in some dimension")
    return r


_NUMPY_FLOAT_CHARS = ("e", "f", "d")  # float16, float32, float64
# The last numpy ranges checked and their (starts, steps): a search loop quantises query after query
# with the same ranges. Keyed by dtype, shape and bytes; one slot replaced in one store.
_BUCKETS_CACHE: list[Any] = [(None, None)]


def _quantize_numpy_fast(x: np.ndarray, precision: str, ranges: Any) -> np.ndarray | None:
    """The codes of a float numpy ``x`` (1-D or 2-D, non-empty) without the torch round trip, or None
    when the general path must run (a list, other dtypes, ranges to derive, ...). Small calls (one
    query) are dominated by that round trip; the arithmetic is :func:`_quantize_numpy`'s, so the
    codes are bit-identical."""
    if x.dtype.char not in _NUMPY_FLOAT_CHARS or x.ndim not in (1, 2) or x.size == 0:
        return None
    if precision in BINARY_PRECISIONS:
        return _quantize_numpy(x, precision, None, None, "embeddings")
    if (precision in SCALAR_PRECISIONS and isinstance(ranges, np.ndarray)
            and ranges.dtype.char in _NUMPY_FLOAT_CHARS):
        key = (ranges.dtype.str, ranges.shape, ranges.tobytes())
        cached_key, buckets = _BUCKETS_CACHE[0]
        if cached_key != key:
            buckets = bucket_params_numpy(_check_ranges_numpy(ranges, int(x.shape[-1])))
            _BUCKETS_CACHE[0] = (key, buckets)
        elif ranges.shape[1] != x.shape[-1]:  # cached ranges were checked for another dim
            _check_ranges_numpy(ranges, int(x.shape[-1]))
        starts, steps = buckets
        if x.dtype.char == "e":  # the general path computes float16 input in float32
            x = x.astype(np.float32)
        return _quantize_numpy(x, precision, starts, steps, "embeddings")
    return None


def _packbits_torch(bits: Any) -> Any:
    """``numpy.packbits(bits, axis=-1)`` for a bool tensor on any device: MSB first, zero padded."""
    import torch
    import torch.nn.functional as F

    dim = bits.shape[-1]
    b = bits.to(torch.uint8)
    if dim % 8:
        b = F.pad(b, (0, 8 - dim % 8))
    b = b.reshape(*b.shape[:-1], -1, 8)
    weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=bits.device)
    return (b * weights).sum(-1, dtype=torch.uint8)


def _nan_error(name: str, precision: str) -> ValueError:
    return ValueError(f"{name} contains NaN: its {precision} code would be undefined")


def _quantize_numpy(x: np.ndarray, precision: str, starts: Any, steps: Any, name: str) -> np.ndarray:
    """sentence-transformers' numpy expressions, in place after the first (fewer passes, same bits)."""
    if precision in SCALAR_PRECISIONS:
        q = np.subtract(x, np.asarray(starts))  # float32 (float64 for float64 x), as sentence-transformers
        np.divide(q, np.asarray(steps), out=q)
        np.floor(q, out=q)
        np.clip(q, 0, 255, out=q)
        # NaN survives clip and would cast to an arbitrary code; values in [0, 255] cannot overflow the sum.
        if np.isnan(q.sum()):
            raise _nan_error(name, precision)
        if precision == "int8":
            q -= 128
            return q.astype(np.int8)
        return q.astype(np.uint8)
    packed = np.packbits(x > 0, axis=-1)
    return packed if precision == "ubinary" else (packed - 128).astype(np.int8)


def _quantize_torch(x: Any, precision: str, starts: Any, steps: Any, name: str) -> Any:
    """The same arithmetic in torch ops, for tensors on any device."""
    import torch

    if precision in SCALAR_PRECISIONS:
        if bool(torch.isnan(x).any()):
            raise _nan_error(name, precision)
        q = torch.floor((x - starts) / steps).clamp_(0, 255)
        return q.to(torch.uint8) if precision == "uint8" else (q - 128).to(torch.int8)
    packed = _packbits_torch(x > 0)
    return packed if precision == "ubinary" else (packed.to(torch.int16) - 128).to(torch.int8)


def quantize_reference(x: Any, precision: str, starts: Any = None, steps: Any = None,
                       name: str = "embeddings") -> Any:
    """Reference: ``x`` (..., dim) float tensor -> codes of ``precision``, a tensor on x's device.

    ``starts``/``steps`` (float32 (dim,) tensors from :func:`bucket_params`) are needed for int8/uint8.
    The arithmetic is sentence-transformers' own: float32 for float16/bfloat16/float32 input, float64
    for float64 input. CPU tensors run numpy (zero-copy, single-threaded like sentence-transformers),
    others torch ops. NaN raises ValueError (naming ``name``) for int8/uint8; binary maps it to a 0
    bit and the float precisions keep it, as sentence-transformers does.
    """
    import torch

    if precision in ("float32", "float16", "bfloat16"):
        return x.to(output_dtype(precision))
    if x.dtype == torch.bfloat16:
        x = x.float()
    if x.device.type == "cpu":
        cpu = (starts.cpu(), steps.cpu()) if precision in SCALAR_PRECISIONS else (None, None)
        return torch.from_numpy(_quantize_numpy(x.numpy(), precision, *cpu, name))
    return _quantize_torch(x, precision, starts, steps, name)


def quantization_ranges(calibration_embeddings: Any) -> Any:
    """Per-dimension minimum and maximum of calibration embeddings.

    Args:
        calibration_embeddings: (n, dim) float numpy array or tensor, n >= 1, finite.

    Returns:
        (2, dim) float32: row 0 the minimum, row 1 the maximum; numpy in, numpy out.
    """
    return _ranges(calibration_embeddings, "calibration_embeddings")


def _ranges(x: Any, name: str) -> Any:
    import torch

    t = _as_tensor(x, name)
    if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(f"{name} must be (n, dim) with n >= 1 and dim >= 1, got shape {tuple(t.shape)}")
    if t.device.type == "cpu":
        # numpy's single-threaded reductions, as sentence-transformers calibrates.
        a = t.numpy() if t.dtype != torch.bfloat16 else t.float().numpy()
        out = torch.from_numpy(np.vstack((a.min(0), a.max(0))).astype(np.float32))
    else:
        out = torch.stack(torch.aminmax(t, dim=0)).to(torch.float32)
    # min and max propagate NaN and keep infinities: checking the (2, dim) result checks every value.
    _check_finite(out, name)
    return out if is_tensor(x) else out.numpy()


def use_kernel(t: Any, backend: str) -> bool:
    """Whether tensor ``t`` goes to a Triton kernel: CUDA tensors under "auto" (the interpreter is
    never the default CPU path), any tensor under "triton" (CPU ones through TRITON_INTERPRET=1)."""
    if backend == "reference":
        return False
    if backend == "triton":
        if not (t.is_cuda or _backend.triton_mode() == "interpreted"):
            raise ValueError("backend='triton' needs a CUDA tensor (or TRITON_INTERPRET=1 for tests)")
        if not _backend.triton_available():
            raise RuntimeError("backend='triton' needs triton installed")
        return True
    return bool(t.is_cuda) and _backend.use_triton(t)


def _quantize_one(
    emb: Any, precision: str, ranges: Any, calibration_embeddings: Any, backend: str
) -> Any:
    import torch

    t = _as_tensor(emb, "embeddings")
    if t.ndim not in (1, 2):
        raise ValueError(f"embeddings must be (n, dim) or (dim,), got shape {tuple(t.shape)}")
    dim = int(t.shape[-1])
    if precision == "bfloat16" and not is_tensor(emb):
        raise TypeError("precision 'bfloat16' needs a torch tensor input: numpy has no bfloat16")
    if t.ndim == 2 and t.shape[0] == 0:
        out = torch.zeros((0, output_dim(dim, precision)), dtype=output_dtype(precision))
        return out.to(t.device) if is_tensor(emb) else out.numpy()

    starts = steps = None
    if precision in SCALAR_PRECISIONS:
        if ranges is None:
            if calibration_embeddings is None:
                if t.ndim == 1 or t.shape[0] == 1:
                    raise ValueError(
                        f"Cannot compute {precision} quantization ranges from a single embedding; pass "
                        "ranges or calibration_embeddings from a representative set of embeddings"
                    )
                ranges = _ranges(t, "embeddings")
            else:
                cal = _as_tensor(calibration_embeddings, "calibration_embeddings")
                if cal.ndim != 2 or cal.shape[1] != dim:
                    raise ValueError(
                        f"calibration_embeddings must be (n, {dim}) to match embeddings, "
                        f"got shape {tuple(cal.shape)}"
                    )
                ranges = quantization_ranges(cal)
        starts, steps = bucket_params(check_ranges(ranges, dim, t.device))

    if use_kernel(t, backend) and precision != "float32" and t.dtype != torch.float64:
        from embedcore.kernels.pooling import quantize_fwd

        if precision in SCALAR_PRECISIONS and bool(torch.isnan(t).any()):
            raise _nan_error("embeddings", precision)
        out = quantize_fwd(t.reshape(-1, dim), precision, starts, steps).reshape(
            *t.shape[:-1], output_dim(dim, precision)
        )
    else:
        out = quantize_reference(t, precision, starts, steps)
    if is_tensor(emb):
        return out
    return out.numpy()


def quantize(
    embeddings: Any,
    precision: Precision,
    ranges: Any = None,
    calibration_embeddings: Any = None,
    *,
    backend: Backend = "auto",
) -> Any:
    """Quantizes embeddings exactly like sentence-transformers' ``quantize_embeddings``.

    Args:
        embeddings: (n, dim) or (dim,) float16/bfloat16/float32/float64 numpy array or tensor;
            or a list of them: a list of (dim,) vectors is stacked, a list of (n_i, dim) matrices
            (multi-vector documents) is quantized matrix by matrix with ranges shared by all.
        precision: float32, float16, bfloat16, int8, uint8, binary or ubinary.
        ranges: (2, dim) float minimum and maximum per dimension (int8/uint8 only; ignored otherwise,
            as in sentence-transformers).
        calibration_embeddings: (m, dim) floats to derive the ranges from when ``ranges`` is None;
            without either, the ranges come from ``embeddings`` (at least 2 rows needed).
        backend: "auto" (CUDA tensors -> Triton kernel, else the reference), "reference" or "triton".

    Returns:
        (n, dim) (or (dim,)) codes in float32/float16/bfloat16/int8/uint8, or (n, ceil(dim/8)) int8
        (binary) / uint8 (ubinary) bytes. numpy in, numpy out; tensor in, tensor out on the same device.

    Raises:
        TypeError: embeddings are not floats (already-quantized codes included).
        ValueError: unknown precision; NaN in embeddings for int8/uint8 (its code would be undefined;
            binary maps NaN to a 0 bit and float precisions keep it, as sentence-transformers does);
            ranges of the wrong shape or not finite; int8/uint8 ranges that would have to come from a
            single embedding.
    """
    precision = check_precision(precision)
    backend = check_backend(backend)
    if (isinstance(embeddings, np.ndarray) or is_tensor(embeddings)) and embeddings.ndim not in (1, 2):
        raise ValueError(f"embeddings must be (n, dim) or (dim,), got shape {tuple(embeddings.shape)}")
    if isinstance(embeddings, np.ndarray) and backend != "triton":
        codes = _quantize_numpy_fast(embeddings, precision, ranges)
        if codes is not None:
            return codes
    if isinstance(embeddings, (list, tuple)):
        if not embeddings:
            return []
        for i, e in enumerate(embeddings):
            check_array(e, f"embeddings[{i}]")
            if e.ndim not in (1, 2) or e.ndim != embeddings[0].ndim or (
                e.ndim == 1 and e.shape != embeddings[0].shape
            ) or e.shape[-1] != embeddings[0].shape[-1]:
                raise ValueError(
                    f"embeddings[{i}] has shape {tuple(e.shape)}, embeddings[0] "
                    f"{tuple(embeddings[0].shape)}: a list needs (dim,) vectors or (n_i, dim) matrices"
                )
        if embeddings[0].ndim == 2:
            if precision in SCALAR_PRECISIONS and ranges is None:
                import torch

                cal = calibration_embeddings
                if cal is None:
                    cal = torch.cat([_as_tensor(e, "embeddings") for e in embeddings])
                if len(cal):
                    ranges = quantization_ranges(cal)
            return [_quantize_one(e, precision, ranges, calibration_embeddings, backend) for e in embeddings]
        if is_tensor(embeddings[0]):
            import torch

            embeddings = torch.stack([e.detach() for e in embeddings])
        else:
            embeddings = np.stack(embeddings)
    return _quantize_one(embeddings, precision, ranges, calibration_embeddings, backend)


def dequantize(codes: Any, ranges: Any) -> Any:
    """The value each int8/uint8 code stands for: the lower edge of its bucket.

    ``value = (code [+ 128 for int8]) * step + min`` with sentence-transformers' float32 ``step``,
    computed in float64 (as sentence-transformers' rescoring does) and returned as float32. Pass the
    ``ranges`` the codes were made with.

    Args:
        codes: (..., dim) int8 or uint8 numpy array or tensor from :func:`quantize`.
        ranges: (2, dim) float minimum and maximum per dimension.

    Returns:
        (..., dim) float32, numpy in, numpy out; tensor in, tensor out on the same device.
    """
    import torch

    check_array(codes, "codes")
    t = codes.detach() if is_tensor(codes) else torch.from_numpy(np.ascontiguousarray(codes))
    if t.dtype not in (torch.int8, torch.uint8):
        raise TypeError(f"codes must be int8 or uint8 (scalar-quantized), got {t.dtype}")
    if t.ndim < 1:
        raise ValueError("codes must have at least one dimension (..., dim)")
    starts, steps = bucket_params(check_ranges(ranges, int(t.shape[-1]), t.device))
    values = t.to(torch.float64)
    if t.dtype == torch.int8:
        values = values + 128
    out = (values * steps.double() + starts.double()).to(torch.float32)
    return out if is_tensor(codes) else out.numpy()
