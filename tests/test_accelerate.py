"""ec.accelerate(st_model): the same outputs as the model's own encode, live settings, undo, fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dropout

import embedcore as ec
from embedcore.models.accelerate import AcceleratedEncode, is_accelerated, undo

from corpus import load_summaries, minilm_path
from helpers import assert_close, assert_codes_match

ATOL = 1e-5


@pytest.fixture(scope="module")
def texts() -> list[str]:
    rows = load_summaries(16)
    return [r["extract"][:200] if i % 2 else f"{r['title']}: {r['description']}" for i, r in enumerate(rows)]


@pytest.fixture(scope="module")
def st() -> SentenceTransformer:
    model = SentenceTransformer(minilm_path(), device="cpu")
    model.max_seq_length = 64
    return model


@pytest.fixture
def accelerated(st):
    ec.accelerate(st)
    yield st
    undo(st)


CALLS = [
    dict(),
    dict(normalize_embeddings=True, truncate_dim=100),
    dict(prompt="query: "),
    dict(convert_to_tensor=True),
    dict(convert_to_numpy=False),
]


@pytest.mark.parametrize("kwargs", CALLS, ids=lambda k: ",".join(k) or "defaults")
def test_same_outputs(st, texts, kwargs):
    expected = st.encode(texts, **kwargs)
    assert ec.accelerate(st) is st and is_accelerated(st)
    try:
        got = st.encode(texts, **kwargs)
    finally:
        undo(st)
    assert type(got) is type(expected)
    if isinstance(expected, list):
        got, expected = torch.stack(got), torch.stack(expected)
    assert_close(np.asarray(got), np.asarray(expected), atol=ATOL)


def test_quantized_token_embeddings_and_query(st, texts):
    floats = st.encode(texts)
    tokens = st.encode(texts[:4], output_value="token_embeddings")
    query = st.encode_query(texts[:4])
    with_accel = ec.accelerate(st)
    try:
        codes = with_accel.encode(texts, precision="uint8")
        got_tokens = with_accel.encode(texts[:4], output_value="token_embeddings")
        got_query = with_accel.encode_query(texts[:4])
    finally:
        undo(st)
    assert_codes_match(codes, floats, "uint8", np.vstack([floats.min(0), floats.max(0)]), atol=ATOL)
    for g, e in zip(got_tokens, tokens):
        assert_close(g, e, atol=ATOL)
    assert_close(got_query, query, atol=ATOL)


def test_settings_are_read_at_each_call(accelerated, texts):
    st = accelerated
    saved = (dict(st.prompts), st.default_prompt_name, st[1].include_prompt, st.truncate_dim)
    try:
        st.prompts["topic"] = "topic: "
        st.default_prompt_name = "topic"
        st.truncate_dim = 64
        st[1].include_prompt = False
        got = st.encode(texts[:5])
        assert got.shape == (5, 64)
        expected = st.encode.original(texts[:5])
        assert_close(got, expected, atol=ATOL)
        with pytest.raises(ValueError, match="nope"):  # sentence-transformers' own prompt check
            st.encode(texts[:2], prompt_name="nope")
    finally:
        st.prompts, st.default_prompt_name, st[1].include_prompt, st.truncate_dim = saved


def test_undo_restores_the_original(st, texts):
    original = st.encode
    ec.accelerate(st)
    patched = st.encode
    assert isinstance(patched, AcceleratedEncode)
    assert ec.accelerate(st).encode is patched, "accelerating twice changes nothing"
    st.encode.undo()
    assert not is_accelerated(st) and "encode" not in st.__dict__
    assert st.encode == original
    assert undo(st) is st  # undoing a model that is not accelerated is a no-op
    assert_close(st.encode(texts[:3]), patched.original(texts[:3]), atol=ATOL)


def test_uncovered_calls_use_the_original(accelerated, texts):
    out = accelerated.encode(texts[:3], output_value=None)
    assert isinstance(out, list) and out[0]["modality"] == "text"  # sentence-transformers' own features
    pairs = accelerated.encode([("a question", "an answer")], convert_to_numpy=True)
    assert pairs.shape == (1, 384)


def test_bad_input(st):
    with pytest.raises(TypeError, match="SentenceTransformer"):
        ec.accelerate(torch.nn.Linear(2, 2))
    unsupported = SentenceTransformer(modules=[st[0], st[1], Dropout(0.1)], device="cpu")
    with pytest.raises(ValueError, match="Dropout"):
        ec.accelerate(unsupported)
    assert not is_accelerated(unsupported)
