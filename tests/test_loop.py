"""embedcore.loop: the tiled benchmark corpus and the text -> top-k loops."""

from __future__ import annotations

import numpy as np
import pytest

from embedcore import loop
from embedcore.index import Index


def _base(rng, m=7, dim=13):
    return rng.standard_normal((m, dim)).astype(np.float32)


@pytest.mark.parametrize("n", [1, 5, 7, 8, 50, 51])
def test_tile_corpus_shape_norm_and_originals_first(rng, n):
    base = _base(rng)
    out = loop.tile_corpus(base, n)
    assert out.shape == (n, 13) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    np.testing.assert_allclose(out[: min(n, 7)], unit[: min(n, 7)], atol=1e-6)


def test_tile_corpus_copies_are_near_their_source_but_distinct(rng):
    base = rng.standard_normal((50, 384)).astype(np.float32)
    out = loop.tile_corpus(base, 5000, sigma=0.35)
    source = out[np.arange(5000) % 50]
    cos = (out * source).sum(1)[50:]
    assert abs(cos.mean() - 1 / np.sqrt(1 + 0.35**2)) < 0.01
    assert cos.max() < 0.999  # no copy equals its source: no mass ties in the scan
    assert len(np.unique(out.round(5), axis=0)) == 5000
    np.testing.assert_array_equal(out, loop.tile_corpus(base, 5000, sigma=0.35))
    assert not np.array_equal(out, loop.tile_corpus(base, 5000, sigma=0.35, seed=1))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(base=np.zeros((0, 4), np.float32), n=3), "base"),
        (dict(base=np.zeros((3, 4), np.float64), n=3), "base"),
        (dict(base=np.ones((3, 4), np.float32), n=0), "n must"),
        (dict(base=np.ones((3, 4), np.float32), n=2.0), "n must"),
        (dict(base=np.ones((3, 4), np.float32), n=3, sigma=-1.0), "sigma"),
    ],
)
def test_tile_corpus_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        loop.tile_corpus(**kwargs)


class _FakeEmbedder:
    """encode(str) -> (dim,) like SentenceTransformer.encode, from a fixed table."""

    def __init__(self, table):
        self.table = table

    def encode(self, text):
        return self.table[text]


def test_embedcore_loop_equals_direct_search(rng):
    corpus = loop.tile_corpus(_base(rng, 40, 24), 300)
    table = {f"q{i}": rng.standard_normal(24).astype(np.float32) for i in range(5)}
    for precision, kwargs in (("float32", {}), ("int8", {}), ("binary", {"rescore_multiplier": 4})):
        rescore = "int8" if precision == "binary" else None
        index = Index(24, precision=precision, metric="cos", rescore=rescore)
        index.add(corpus)
        run = loop.embedcore_loop(_FakeEmbedder(table), index, 10, **kwargs)
        for text, q in table.items():
            ids = run(text)
            assert ids.shape == (10,)
            np.testing.assert_array_equal(ids, index.search(q[None], 10, **kwargs)[1][0])


def test_peer_loop_takes_faiss_pairs_and_plain_ids(rng):
    table = {"a": np.arange(4, dtype=np.float64)}
    seen = []

    def faiss_like(q):
        seen.append((q.shape, q.dtype, q.flags["C_CONTIGUOUS"]))
        return np.zeros((1, 3), np.float32), np.array([[4, 1, 2]])

    assert loop.peer_loop(_FakeEmbedder(table), faiss_like)("a").tolist() == [4, 1, 2]
    assert seen == [((1, 4), np.float32, True)]
    assert loop.peer_loop(_FakeEmbedder(table), lambda q: np.array([7, 3]))("a").tolist() == [7, 3]


def test_overlap():
    a = [np.array([1, 2, 3, 4]), np.array([5, 6, 7, 8])]
    assert loop.overlap(a, a) == 1.0
    assert loop.overlap(a, [np.array([4, 3, 9, 9]), np.array([0, 0, 0, 0])]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="equal"):
        loop.overlap(a, a[:1])


def test_exact_peer_prefers_openvino_then_onnx():
    assert loop.exact_peer(lambda name: True) == "st-openvino-f32"
    assert loop.exact_peer(lambda name: name == "onnxruntime") == "st-onnx"
    assert loop.exact_peer(lambda name: False) == "st-torch"
