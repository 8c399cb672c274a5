"""Fidelity tiers of Embedder / accelerate on the real all-MiniLM-L6-v2 and the bundled Wikipedia corpus.

Each tier's bound is checked against sentence-transformers' float32 output (exact: max abs <= 1e-5;
near_exact: mean cosine >= 0.99995, min >= 0.9999; int8: mean cosine >= 0.995 and recall@10 of the
description queries within 0.005 of exact), batch invariance per tier, and the packed forward itself
against the Hugging Face forward on odd lengths.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import transformers
from sentence_transformers import SentenceTransformer

import embedcore as ec
from embedcore._spec import FIDELITIES
from embedcore.models import openvino_engine, packed_bert
from embedcore.models.accelerate import undo
from embedcore.models.embedder import Embedder
from embedcore.models.fidelity import BFloat16Linear, Int8Linear

from corpus import load_summaries, minilm_path
from helpers import assert_close

MAX_SEQ_LENGTH = 128  # whole summaries are cut here: long enough to be the benchmark's kind of text
BOUNDS = {  # tier -> (mean cosine, min cosine) to sentence-transformers' float32 embeddings
    "near_exact": (0.99995, 0.9999),
    "int8": (0.995, 0.0),
}


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return [r for r in load_summaries(400) if r["description"]]


@pytest.fixture(scope="module")
def texts(rows) -> list[str]:
    """Whole summaries and short descriptions, the two kinds of text a retrieval loop embeds."""
    return [r["extract"] for r in rows[:48]] + [r["description"] for r in rows[:48]]


@pytest.fixture(scope="module")
def st() -> SentenceTransformer:
    model = SentenceTransformer(minilm_path(), device="cpu")
    model.max_seq_length = MAX_SEQ_LENGTH
    return model


@pytest.fixture(scope="module")
def reference(st, texts) -> np.ndarray:
    return st.encode(texts, normalize_embeddings=True)


# Every tier on the torch engine, and the tiers OpenVINO runs on the openvino engine (the optional extra:
# skipped without it).
ENGINE_TIERS = [(t, "torch") for t in FIDELITIES] + [
    pytest.param(
        t, "openvino", marks=pytest.mark.skipif(not openvino_engine.available(), reason="no openvino")
    )
    for t in openvino_engine.TIER_HINTS
]
_MODELS: dict = {}


def model_for(tier: str, engine: str) -> Embedder:
    if (tier, engine) not in _MODELS:
        _MODELS[tier, engine] = Embedder.from_pretrained(
            minilm_path(), device="cpu", fidelity=tier, engine=engine, max_seq_length=MAX_SEQ_LENGTH
        )
    return _MODELS[tier, engine]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(1)


@pytest.mark.parametrize(("tier", "engine"), ENGINE_TIERS)
def test_tier_bound_vs_sentence_transformers(texts, reference, tier, engine):
    model = model_for(tier, engine)
    assert model._packed is not None, "MiniLM should run the engine's forward"
    got = model.encode(texts, normalize_embeddings=True)
    if tier == "exact":
        assert_close(got, reference, atol=1e-5)
        return
    cos = cosines(got, reference)
    mean_bound, min_bound = BOUNDS[tier]
    assert cos.mean() >= mean_bound and cos.min() >= min_bound, (tier, cos.mean(), cos.min())
    assert np.abs(got - reference).max() > 1e-6, f"{tier} should not be the float32 computation"


@pytest.mark.parametrize(("tier", "engine"), ENGINE_TIERS)
def test_batch_invariance_per_tier(texts, tier, engine):
    model = model_for(tier, engine)
    sample = texts[::3]  # whole summaries and descriptions, of very different lengths
    together = model.encode(sample, batch_size=len(sample), normalize_embeddings=True)
    alone = np.stack([model.encode(t, normalize_embeddings=True) for t in sample])
    if tier == "exact":
        assert_close(alone, together, atol=1e-5)
    else:
        cos = cosines(alone, together)
        mean_bound, min_bound = BOUNDS[tier]
        assert cos.mean() >= mean_bound and cos.min() >= min_bound, (tier, cos.mean(), cos.min())


def _recall_at_10(queries: np.ndarray, corpus: np.ndarray) -> float:
    """Fraction of queries (query i describes document i) whose document is among the top 10."""
    scores = queries @ corpus.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    return float((top == np.arange(len(queries))[:, None]).any(1).mean())


@pytest.mark.parametrize(("tier", "engine"), [p for p in ENGINE_TIERS if "int8" in str(p)])
def test_int8_recall_at_10_close_to_exact(rows, tier, engine):
    docs = [r["extract"] for r in rows]
    queries = [r["description"] for r in rows]
    recall = {}
    for name, model in (("exact", model_for("exact", "torch")), ("int8", model_for(tier, engine))):
        corpus = model.encode(docs, normalize_embeddings=True)
        recall[name] = _recall_at_10(model.encode(queries, normalize_embeddings=True), corpus)
    assert recall["exact"] > 0.5, recall  # the task is meaningful
    assert recall["int8"] >= recall["exact"] - 0.005, recall


# ------------------------------------------------------------------------------------------- packed forward


def test_packed_forward_equals_hugging_face_on_odd_lengths():
    model = transformers.AutoModel.from_pretrained(minilm_path()).eval()
    forward = packed_bert.PackedForward(model, "exact")
    torch.manual_seed(0)
    lengths = [1, 7, 2, 33, 5, 1, 19]
    width = max(lengths)
    ids = torch.randint(1000, 20000, (len(lengths), width))
    mask = (torch.arange(width) < torch.tensor(lengths)[:, None]).long()
    types = torch.randint(0, 2, (len(lengths), width)) * mask
    with torch.inference_mode():
        expected = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = forward(ids, mask, types)
        one = forward(ids[3:4, :33], mask[3:4, :33], types[3:4, :33])
    valid = mask.bool()
    assert_close(got[valid], expected[valid], atol=1e-5)
    assert bool((got[~valid] == 0).all())
    assert_close(one[0], expected[3, :33], atol=1e-5)
    # Weights changed after the first call are used by the next one.
    with torch.no_grad():
        model.encoder.layer[0].attention.self.query.weight.mul_(0.5)
    with torch.inference_mode():
        expected = model(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        got = forward(ids, mask, types)
    assert_close(got[valid], expected[valid], atol=1e-5)


def test_low_precision_products_against_float32():
    torch.manual_seed(0)
    x, w, b = torch.randn(37, 96), torch.randn(50, 96) * 0.1, torch.randn(50)
    exact = torch.nn.functional.linear(x.double(), w.double(), b.double()).float()
    naive_bf16 = torch.nn.functional.linear(x.bfloat16(), w.bfloat16(), b.bfloat16()).float()
    bf16_err = (BFloat16Linear(w, b)(x) - exact).abs().max()
    assert bf16_err <= 2 * (naive_bf16 - exact).abs().max()
    int8_err = (Int8Linear(w, b)(x) - exact).abs().max() / exact.abs().max()
    assert 0 < int8_err < 0.02, int8_err


# ------------------------------------------------------------------------------------------- API


def test_fidelity_arguments(texts):
    with pytest.raises(ValueError, match="fidelity"):
        Embedder.from_pretrained(minilm_path(), fidelity="fp8")
    with pytest.raises(TypeError, match="fidelity"):
        Embedder.from_pretrained(minilm_path(), fidelity=8)
    with pytest.raises(ValueError, match="CPU"):
        Embedder.from_pretrained(minilm_path(), device="meta", fidelity="int8")
    with pytest.raises(ValueError, match="quantize_weights"):
        Embedder.from_pretrained(minilm_path(), quantize_weights="int4")
    with pytest.warns(DeprecationWarning, match='fidelity="int8"'):
        old = Embedder.from_pretrained(minilm_path(), device="cpu", quantize_weights="int8")
    assert old.fidelity == "int8"
    with warnings.catch_warnings(), pytest.raises(ValueError, match="contradicts"):
        warnings.simplefilter("ignore", DeprecationWarning)
        Embedder.from_pretrained(minilm_path(), quantize_weights="int8", fidelity="near_exact")


def test_engine_arguments(monkeypatch):
    with pytest.raises(ValueError, match="engine"):
        Embedder.from_pretrained(minilm_path(), engine="onnx")
    with pytest.raises(ValueError, match="OpenVINO engine runs the tiers"):
        openvino_engine.OpenVINOForward(torch.nn.Linear(2, 2), "fp8")
    with pytest.raises(TypeError, match="engine"):
        Embedder.from_pretrained(minilm_path(), engine=None)
    monkeypatch.setattr(openvino_engine, "available", lambda: False)
    with pytest.raises(ImportError, match=r"embedcore\[openvino\]"):
        Embedder.from_pretrained(minilm_path(), device="cpu", engine="openvino")
    # "auto" without OpenVINO falls back to the torch engine.
    auto = Embedder.from_pretrained(minilm_path(), device="cpu", fidelity="near_exact")
    assert isinstance(auto._packed, packed_bert.PackedForward)


def test_accelerate_tiers(st, texts, reference):
    original = st.encode(texts[:8], normalize_embeddings=True)
    try:
        ec.accelerate(st, fidelity="near_exact")
        assert st.encode.embedder.fidelity == "near_exact"
        cos = cosines(st.encode(texts, normalize_embeddings=True), reference)
        assert cos.mean() >= BOUNDS["near_exact"][0] and cos.min() >= BOUNDS["near_exact"][1]
        assert_close(st.encode.original(texts[:8], normalize_embeddings=True), original, atol=1e-6)
        ec.accelerate(st, fidelity="exact")  # another tier replaces the accelerated encode
        assert st.encode.embedder.fidelity == "exact"
        assert_close(st.encode(texts, normalize_embeddings=True), reference, atol=1e-5)
        with pytest.raises(ValueError, match="fidelity"):
            ec.accelerate(st, fidelity="fast")
    finally:
        undo(st)


def test_tiers_on_a_model_without_engine_forward(tmp_path):
    """A non-BERT model gets the tier by Linear swapping; accelerate() leaves the user's model alone."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path())
    config = transformers.LlamaConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    folder = tmp_path / "llama"
    transformers.LlamaModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    sample = [r["extract"][:120] for r in load_summaries(6)]
    exact = Embedder.from_pretrained(str(folder), device="cpu").encode(sample)
    near = Embedder.from_pretrained(str(folder), device="cpu", fidelity="near_exact")
    assert near._packed is None
    assert cosines(near.encode(sample), exact).min() >= 0.999
    model = SentenceTransformer(str(folder), device="cpu")
    before = model.encode(sample)
    ec.accelerate(model, fidelity="int8")
    try:
        assert cosines(model.encode(sample), exact).mean() >= 0.99
        assert_close(model.encode.original(sample), before, atol=1e-6)
    finally:
        undo(model)


@pytest.mark.parametrize(("tier", "engine"), ENGINE_TIERS)
def test_pickled_embedder_rebuilds_its_engine(texts, tier, engine):
    """Worker processes of the multi-process pool receive the Embedder pickled."""
    import pickle

    model = model_for(tier, engine)
    copy = pickle.loads(pickle.dumps(model))
    assert type(copy._packed) is type(model._packed) and copy._packed is not model._packed
    assert_close(copy.encode(texts[:4]), model.encode(texts[:4]), atol=1e-6)
