"""ec.quantize / quantization_ranges / dequantize against sentence-transformers' quantize_embeddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers.util.quantization import (
    _dequantize_embeddings,
    _get_quantization_ranges,
    quantize_embeddings,
)

import embedcore as ec
from embedcore._spec import PRECISIONS
from embedcore.ops.quantize import (
    _packbits_torch,
    _quantize_numpy,
    _quantize_torch,
    bucket_params,
    check_ranges,
    dequantize,
)

ST_PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def _data(rng: np.random.Generator, n: int, dim: int, dtype=np.float32) -> np.ndarray:
    # Mixed scales per dimension, some exact zeros (sign bit 0) and repeated values (ties at edges).
    x = rng.standard_normal((n, dim)) * rng.uniform(0.1, 3.0, dim)
    x[rng.random((n, dim)) < 0.05] = 0.0
    x[:, ::7] = np.round(x[:, ::7], 1)
    return x.astype(dtype)


@pytest.mark.parametrize("precision", ST_PRECISIONS)
@pytest.mark.parametrize("dim", [1, 7, 13, 384, 1000])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_numpy_matches_sentence_transformers(rng, precision, dim, dtype):
    x = _data(rng, 37, dim, dtype)
    expected = quantize_embeddings(x, precision)
    got = ec.quantize(x, precision)
    assert isinstance(got, np.ndarray)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("precision", ST_PRECISIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_tensor_matches_sentence_transformers(rng, precision, dtype):
    x = torch.from_numpy(_data(rng, 29, 45)).to(dtype)
    expected = quantize_embeddings(x, precision)
    got = ec.quantize(x, precision)
    assert isinstance(got, torch.Tensor) and got.device == x.device
    np.testing.assert_array_equal(got.numpy(), expected)


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_ranges_and_calibration_match(rng, precision):
    x = _data(rng, 21, 50)
    cal = _data(rng, 300, 50)
    ranges = ec.quantization_ranges(cal)
    np.testing.assert_array_equal(ranges, _get_quantization_ranges(cal, precision, cal).astype(np.float32))
    for kwargs in ({"ranges": ranges}, {"calibration_embeddings": cal}):
        expected = quantize_embeddings(x, precision, **kwargs)
        np.testing.assert_array_equal(ec.quantize(x, precision, **kwargs), expected)
    # A single embedding quantizes fine with given ranges, and also as a 1-D vector.
    np.testing.assert_array_equal(ec.quantize(x[0], precision, ranges=ranges),
                                  quantize_embeddings(x[0], precision, ranges=ranges))


def test_values_outside_ranges_clip_and_constant_dims(rng):
    ranges = np.array([[-1.0, 0.0, 2.0], [1.0, 0.0, 2.0]], dtype=np.float32)  # two zero-width dims
    x = np.array([[-5.0, 0.0, 2.0], [5.0, 1.5, 3.5], [0.999, -0.5, 1.0]], dtype=np.float32)
    for precision in ("int8", "uint8"):
        np.testing.assert_array_equal(ec.quantize(x, precision, ranges=ranges),
                                      quantize_embeddings(x, precision, ranges=ranges))
    codes = ec.quantize(x, "uint8", ranges=ranges)
    assert codes[0, 0] == 0 and codes[1, 0] == 255


def test_float16_bfloat16_outputs(rng):
    x = torch.from_numpy(_data(rng, 5, 9))
    assert ec.quantize(x, "float16").dtype == torch.float16
    assert torch.equal(ec.quantize(x, "bfloat16"), x.to(torch.bfloat16))
    assert ec.quantize(x.numpy(), "float16").dtype == np.float16
    with pytest.raises(TypeError, match="bfloat16"):
        ec.quantize(x.numpy(), "bfloat16")


def test_lists_like_sentence_transformers(rng):
    vectors = [_data(rng, 1, 16)[0] for _ in range(6)]
    np.testing.assert_array_equal(ec.quantize(vectors, "int8"), quantize_embeddings(vectors, "int8"))
    docs = [_data(rng, n, 16) for n in (3, 1, 0, 5)]
    for precision in ST_PRECISIONS:
        got, expected = ec.quantize(docs, precision), quantize_embeddings(docs, precision)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.dtype == e.dtype
            np.testing.assert_array_equal(g, e)
    assert ec.quantize([], "int8") == []


@pytest.mark.parametrize("precision", PRECISIONS)
def test_empty_rows(precision):
    x = torch.zeros((0, 13))
    out = ec.quantize(x, precision)
    width = 2 if precision in ("binary", "ubinary") else 13
    assert out.shape == (0, width)


def test_packbits_torch_matches_numpy(rng):
    for dim in (1, 8, 9, 63, 64, 100):
        bits = rng.random((4, dim)) > 0.5
        got = _packbits_torch(torch.from_numpy(bits)).numpy()
        np.testing.assert_array_equal(got, np.packbits(bits, axis=-1))


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_path_matches_numpy_path(rng, precision, dtype):
    # CUDA tensors under backend="reference" take the torch expressions: same codes as numpy's.
    x = torch.from_numpy(_data(rng, 25, 77)).to(dtype)
    starts, steps = bucket_params(check_ranges(ec.quantization_ranges(x[:10]), 77, x.device))
    expected = _quantize_numpy(x.numpy(), precision, starts, steps, "x")
    np.testing.assert_array_equal(_quantize_torch(x, precision, starts, steps, "x").numpy(), expected)


@pytest.mark.parametrize("precision", ["int8", "uint8"])
def test_dequantize_matches_sentence_transformers(rng, precision):
    x = _data(rng, 40, 33)
    ranges = ec.quantization_ranges(x)
    codes = ec.quantize(x, precision, ranges=ranges)
    values = dequantize(codes, ranges)
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, _dequantize_embeddings(codes, precision, ranges).astype(np.float32))
    # Each value is its bucket's lower edge: it quantizes back to the same code, or the one below when
    # the edge itself rounds down (float32 rounding of start + code * step).
    again = ec.quantize(values, precision, ranges=ranges).astype(np.int16)
    assert np.all((again == codes) | (again == codes.astype(np.int16) - 1))
    t = dequantize(torch.from_numpy(codes), torch.from_numpy(ranges))
    assert isinstance(t, torch.Tensor) and torch.equal(t, torch.from_numpy(values))


def test_bad_input(rng):
    x = _data(rng, 4, 6)
    with pytest.raises(ValueError, match=r"Invalid precision 'int4'.*valid"):
        ec.quantize(x, "int4")
    with pytest.raises(TypeError, match="embeddings must hold floats"):
        ec.quantize(x.astype(np.int8), "int8")
    with pytest.raises(TypeError, match="embeddings must be a numpy array or a torch tensor"):
        ec.quantize("abc", "int8")
    with pytest.raises(ValueError, match="single embedding"):
        ec.quantize(x[:1], "int8")
    with pytest.raises(ValueError, match="single embedding"):
        ec.quantize(x[0], "uint8")
    with pytest.raises(ValueError, match=r"ranges must have shape \(2, 6\)"):
        ec.quantize(x, "int8", ranges=np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match="minimum"):
        ec.quantize(x, "int8", ranges=np.stack([np.ones(6), np.zeros(6)]).astype(np.float32))
    with pytest.raises(ValueError, match="ranges contains NaN"):
        ec.quantize(x, "int8", ranges=np.full((2, 6), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"calibration_embeddings must be \(n, 6\)"):
        ec.quantize(x, "int8", calibration_embeddings=np.zeros((3, 5), np.float32))
    bad = x.copy()
    bad[1, 2] = np.nan
    for precision in ("int8", "uint8"):
        with pytest.raises(ValueError, match="embeddings contains NaN"):
            ec.quantize(bad, precision, ranges=ec.quantization_ranges(x))
        with pytest.raises(ValueError, match="embeddings contains NaN"):
            ec.quantize(torch.from_numpy(bad), precision)
    with pytest.raises(ValueError, match="calibration_embeddings contains NaN"):
        ec.quantization_ranges(bad)
    # As sentence-transformers: NaN is a 0 sign bit, and float precisions keep it.
    np.testing.assert_array_equal(ec.quantize(bad, "binary"), quantize_embeddings(bad, "binary"))
    assert np.isnan(ec.quantize(bad, "float32")[1, 2])
    with pytest.raises(ValueError, match="embeddings must be"):
        ec.quantize(np.zeros((2, 3, 4), np.float32), "binary")
    with pytest.raises(ValueError, match="calibration_embeddings must be"):
        ec.quantization_ranges(np.zeros((0, 4), np.float32))
    with pytest.raises(TypeError, match="codes must be int8 or uint8"):
        dequantize(x, np.zeros((2, 6), np.float32))
    with pytest.raises(ValueError, match="Invalid backend"):
        ec.quantize(x, "int8", backend="cuda")


def test_bucket_params_numpy_matches_torch(rng):
    # The numpy fast paths (1-row quantize, search's int8 affine) derive the buckets without torch.
    from embedcore.ops.quantize import bucket_params_numpy

    for scale in (1e-6, 1e-2, 1.0, 37.0, 1e5):
        r = np.sort((rng.standard_normal((2, 301)) * scale).astype(np.float32), axis=0)
        r[:, 7] = r[0, 7]  # zero width: step 1
        starts, steps = bucket_params(torch.from_numpy(r))
        ns, nst = bucket_params_numpy(r)
        np.testing.assert_array_equal(ns.view(np.int32), starts.numpy().view(np.int32))
        np.testing.assert_array_equal(nst.view(np.int32), steps.numpy().view(np.int32))


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
@pytest.mark.parametrize("shape", [(1, 384), (384,), (5, 13)])
def test_numpy_fast_path_matches_general_path(rng, precision, dtype, shape):
    # numpy input with given ranges skips the torch round trip; a tensor input takes the general path.
    x = _data(rng, 8, shape[-1], dtype)
    ranges = ec.quantization_ranges(x).astype(dtype)
    x = x[0] if len(shape) == 1 else x[: shape[0]]
    got = ec.quantize(x, precision, ranges=ranges)
    t = torch.from_numpy(np.ascontiguousarray(x))
    expected = ec.quantize(t, precision, ranges=torch.from_numpy(ranges))
    assert isinstance(got, np.ndarray) and got.dtype == expected.numpy().dtype
    np.testing.assert_array_equal(got, expected.numpy())
    if precision in ST_PRECISIONS:
        st = quantize_embeddings(x if x.ndim == 2 else x[None], precision, ranges=ranges)
        np.testing.assert_array_equal(got.reshape(st.shape), st)


def test_numpy_ranges_cache_follows_the_ranges(rng):
    # The numpy fast path reuses the buckets of the last ranges: changed, bad or mismatched ranges miss.
    x = _data(rng, 6, 10)
    ranges = ec.quantization_ranges(x)
    for r in (ranges, ranges * 2, ranges.astype(np.float64), ranges):
        expected = quantize_embeddings(x, "int8", ranges=r)
        np.testing.assert_array_equal(ec.quantize(x, "int8", ranges=r), expected)
    with pytest.raises(ValueError, match=r"ranges must have shape \(2, 9\)"):
        ec.quantize(x[:, :9], "int8", ranges=ranges)
    bad = ranges.copy()
    bad[1, 4] = np.inf
    with pytest.raises(ValueError, match="ranges contains NaN"):
        ec.quantize(x, "uint8", ranges=bad)
