"""Embedder.encode against SentenceTransformer.encode (sentence-transformers 6.x) on real Wikipedia text
with the bundled all-MiniLM-L6-v2, and on tiny random decoders; loading, batching, bad input."""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest
import torch
import transformers
from sentence_transformers import SentenceTransformer

import embedcore as ec
from embedcore.models import loading
from embedcore.models.embedder import Embedder

from corpus import load_summaries, minilm_path
from helpers import assert_close, assert_codes_match

ATOL = 1e-5
PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def wiki_texts(n: int) -> list[str]:
    """Real text of varied length: every 8th a whole summary (cut at the max sequence length), the others
    the first 150 characters of one, or its title and description."""
    rows = load_summaries(n)
    return [
        r["extract"] if i % 8 == 0 else r["extract"][:150] if i % 2 else f"{r['title']}: {r['description']}"
        for i, r in enumerate(rows)
    ]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return wiki_texts(24)


# Both models truncate at 64 tokens (the saved 256 would only make the suite slower): truncation is
# part of what is compared.
MAX_SEQ_LENGTH = 64


@pytest.fixture(scope="module")
def st() -> SentenceTransformer:
    model = SentenceTransformer(minilm_path(), device="cpu")
    model.max_seq_length = MAX_SEQ_LENGTH
    return model


@pytest.fixture(scope="module")
def emb() -> Embedder:
    return Embedder.from_pretrained(minilm_path(), device="cpu", max_seq_length=MAX_SEQ_LENGTH)


_ST_FLOAT: dict = {}


def st_float(st, texts, normalize, truncate_dim, prompt) -> np.ndarray:
    """sentence-transformers' float32 embeddings, computed once per setting."""
    key = (normalize, truncate_dim, prompt)
    if key not in _ST_FLOAT:
        _ST_FLOAT[key] = st.encode(
            texts, normalize_embeddings=normalize, truncate_dim=truncate_dim, prompt=prompt
        )
    return _ST_FLOAT[key]


# ------------------------------------------------------------------------------------------------ parity


@pytest.mark.parametrize("prompt", [None, "query: "])
@pytest.mark.parametrize("truncate_dim", [None, 100])
@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_parity_with_sentence_transformers(st, emb, texts, precision, normalize, truncate_dim, prompt):
    expected = st_float(st, texts, normalize, truncate_dim, prompt)
    got = emb.encode(
        texts, precision=precision, normalize_embeddings=normalize, truncate_dim=truncate_dim, prompt=prompt
    )
    assert isinstance(got, np.ndarray)
    if precision == "float32":
        assert got.dtype == np.float32 and got.shape == (len(texts), truncate_dim or 384)
        assert_close(got, expected, atol=ATOL, name="embeddings")
        return
    width = truncate_dim or 384
    assert got.dtype == (np.int8 if precision in ("int8", "binary") else np.uint8)
    assert got.shape == (len(texts), (width + 7) // 8 if precision.endswith("binary") else width)
    ranges = np.vstack([expected.min(0), expected.max(0)])
    assert_codes_match(got, expected, precision, ranges, atol=ATOL)


@pytest.mark.parametrize("precision", ["float32", "int8", "ubinary"])
@pytest.mark.parametrize(
    "convert",
    [dict(), dict(convert_to_tensor=True), dict(convert_to_numpy=False), dict(convert_to_numpy=True)],
)
def test_return_types_match(st, emb, texts, convert, precision):
    expected = st.encode(texts[:6], precision=precision, **convert)
    got = emb.encode(texts[:6], precision=precision, **convert)
    assert type(got) is type(expected)
    if isinstance(expected, list):
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert type(g) is type(e) and g.dtype == e.dtype and g.shape == e.shape
        got, expected = torch.stack(got), torch.stack(expected)
    assert got.dtype == expected.dtype and tuple(got.shape) == tuple(expected.shape)
    if precision == "float32":
        assert_close(np.asarray(got), np.asarray(expected), atol=ATOL)
    # A single str gives one embedding, as sentence-transformers does.
    one_expected = st.encode(texts[0], **convert)
    one = emb.encode(texts[0], **convert)
    assert type(one) is type(one_expected) and tuple(one.shape) == tuple(one_expected.shape)
    assert_close(np.asarray(one), np.asarray(one_expected), atol=ATOL)


def test_token_embeddings_match(st, emb, texts):
    expected = st.encode(texts, output_value="token_embeddings")
    got = emb.encode(texts, output_value="token_embeddings")
    assert isinstance(got, list) and len(got) == len(texts)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert torch.is_tensor(g) and g.shape == e.shape, f"text {i}: {tuple(g.shape)} vs {tuple(e.shape)}"
        assert_close(g, e, atol=ATOL, name=f"token embeddings of text {i}")
    # Quantized token embeddings: one set of ranges over all tokens, numpy codes per text.
    codes = emb.encode(texts[:5], output_value="token_embeddings", precision="int8")
    st_codes = st.encode(texts[:5], output_value="token_embeddings", precision="int8")
    cat = np.concatenate([e.numpy() for e in expected[:5]])
    ranges = np.vstack([cat.min(0), cat.max(0)])
    for g, e, f in zip(codes, st_codes, expected[:5]):
        assert isinstance(g, np.ndarray) and g.dtype == e.dtype == np.int8
        assert_codes_match(g, f.numpy(), "int8", ranges, atol=ATOL)


def test_output_value_none_gives_unpadded_features(st, emb, texts):
    expected = st.encode(texts[:8], output_value=None, truncate_dim=64, prompt="query: ")
    got = emb.encode(texts[:8], output_value=None, truncate_dim=64, prompt="query: ")
    assert isinstance(got, list) and len(got) == 8
    for g, e in zip(got, expected):
        assert g["prompt_length"] == e["prompt_length"] == 3  # [CLS] query :
        n = int(e["attention_mask"].sum())
        assert {"input_ids", "attention_mask", "token_embeddings", "sentence_embedding"} <= set(g)
        assert torch.equal(g["input_ids"], e["input_ids"][:n])
        assert g["attention_mask"].tolist() == [1] * n
        assert_close(g["token_embeddings"], e["token_embeddings"][:n], atol=ATOL)
        assert_close(g["sentence_embedding"], e["sentence_embedding"], atol=ATOL)


@pytest.mark.parametrize("mode", ["mean", "cls", "max", "weightedmean"])
def test_include_prompt_false_matches(st, emb, texts, mode):
    pooling = st[1]
    saved = (pooling.pooling_mode, pooling.include_prompt, emb.pooling_mode, emb.include_prompt)
    try:
        pooling.pooling_mode, pooling.include_prompt = mode, False
        emb.pooling_mode, emb.include_prompt = mode, False
        expected = st.encode(texts, prompt="Represent this sentence for retrieval: ")
        got = emb.encode(texts, prompt="Represent this sentence for retrieval: ")
        assert_close(got, expected, atol=ATOL)
        emb.include_prompt = True
        with_prompt = emb.encode(texts[:4], prompt="Represent this sentence for retrieval: ")
        assert np.abs(with_prompt - got[:4]).max() > 1e-3, "the prompt tokens must change a pooled vector"
    finally:
        pooling.pooling_mode, pooling.include_prompt, emb.pooling_mode, emb.include_prompt = saved


def test_prompt_precedence(st, emb, texts):
    prompts = {"query": "query: ", "document": "", "passage": "passage: ", "topic": "topic: "}
    saved = (dict(st.prompts), st.default_prompt_name, dict(emb.prompts), emb.default_prompt_name)
    try:
        st.prompts, emb.prompts = dict(prompts), dict(prompts)
        st.default_prompt_name = emb.default_prompt_name = "topic"
        sample = texts[:5]
        with_topic = emb.encode(sample, prompt="topic: ")
        assert_close(emb.encode(sample), with_topic, atol=ATOL, name="default prompt")
        assert_close(
            emb.encode(sample, prompt_name="passage"), emb.encode(sample, prompt="passage: "), atol=ATOL
        )
        # prompt wins over prompt_name, prompt_name over the default; "" disables the default.
        assert_close(
            emb.encode(sample, prompt="x: ", prompt_name="passage"),
            emb.encode(sample, prompt="x: "),
            atol=ATOL,
        )
        assert_close(emb.encode(sample, prompt=""), emb.encode(sample, prompt_name="document"), atol=ATOL)
        for call in ("encode", "encode_query", "encode_document"):
            for kwargs in ({}, {"prompt_name": "passage"}, {"prompt": "x: "}):
                assert_close(
                    getattr(emb, call)(sample, **kwargs),
                    getattr(st, call)(sample, **kwargs),
                    atol=ATOL,
                    name=f"{call}({kwargs})",
                )
    finally:
        st.prompts, st.default_prompt_name, emb.prompts, emb.default_prompt_name = saved


def test_order_is_restored_and_batch_size_does_not_matter(emb, texts):
    base = emb.encode(texts, batch_size=32)
    assert_close(emb.encode(texts[::-1], batch_size=5)[::-1], base, atol=ATOL)
    assert_close(emb.encode(texts[:8], batch_size=1), base[:8], atol=ATOL)


def test_batch_invariance(emb):
    batch = wiki_texts(64)
    together = emb.encode(batch, batch_size=64, normalize_embeddings=True)
    for i, text in enumerate(batch):
        assert_close(
            emb.encode([text], normalize_embeddings=True)[0], together[i], atol=ATOL, name=f"text {i}"
        )


def test_similarity_matches(st, emb, texts):
    a, b = emb.encode(texts[:5]), emb.encode(texts[5:9])
    assert_close(emb.similarity(a, b), st.similarity(a, b), atol=ATOL)
    emb.similarity_fn_name = "euclidean"
    try:
        assert_close(emb.similarity(a, b), -torch.cdist(torch.from_numpy(a), torch.from_numpy(b)), atol=ATOL)
    finally:
        emb.similarity_fn_name = None
    with pytest.raises(ValueError, match="dim"):
        emb.similarity(a, b[:, :10])


# The fidelity tiers (fidelity="near_exact" / "int8") are tested in test_fidelity.py.


# ------------------------------------------------------------------------------------------------ bad input


def test_empty_input(emb):
    out = emb.encode([])
    assert isinstance(out, np.ndarray) and out.shape == (0, 384) and out.dtype == np.float32
    t = emb.encode([], convert_to_tensor=True)
    assert torch.is_tensor(t) and tuple(t.shape) == (0, 384)
    assert emb.encode([], convert_to_numpy=False) == []
    assert emb.encode([], output_value="token_embeddings") == []
    assert emb.encode([], truncate_dim=64, precision="int8").shape == (0, 64)
    assert emb.encode([], precision="ubinary").shape == (0, 48)


def test_bad_input(emb, texts):
    with pytest.raises(TypeError, match=r"sentences\[2\]"):
        emb.encode(["a", "b", 3])
    with pytest.raises(TypeError, match=r"sentences\[1\].*NoneType"):
        emb.encode(["a", None])
    with pytest.raises(TypeError, match="sentences"):
        emb.encode(None)
    with pytest.raises(KeyError, match=r"available.*document.*query"):
        emb.encode(texts[:2], prompt_name="nope")
    with pytest.raises(ValueError, match="truncate_dim"):
        emb.encode(texts[:2], truncate_dim=0)
    with pytest.raises(ValueError, match=r"truncate_dim.*\[1, 384\]"):
        emb.encode(texts[:2], truncate_dim=385)
    with pytest.raises(TypeError, match="truncate_dim"):
        emb.encode(texts[:2], truncate_dim=12.0)
    with pytest.raises(ValueError, match="batch_size"):
        emb.encode(texts[:2], batch_size=0)
    with pytest.raises(ValueError, match="precision"):
        emb.encode(texts[:2], precision="int4")
    with pytest.raises(ValueError, match="output_value"):
        emb.encode(texts[:2], output_value="cls")
    with pytest.raises(TypeError, match="prompt"):
        emb.encode(texts[:2], prompt=3)


def _copy_minilm(tmp_path, name: str) -> str:
    """A copy of the bundled model folder (the weights linked, not copied) to edit its configuration."""
    src = minilm_path()
    dst = tmp_path / name
    dst.mkdir()
    for entry in os.listdir(src):
        if entry in ("1_Pooling", "modules.json"):
            continue
        s = os.path.join(src, entry)
        if entry == "model.safetensors":
            os.symlink(s, dst / entry)
        elif os.path.isfile(s):
            shutil.copy(s, dst / entry)
    return str(dst)


def _write_modules(folder: str, modules: list[tuple[str, str]]) -> None:
    entries = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (kind, path) in enumerate(modules)
    ]
    with open(os.path.join(folder, "modules.json"), "w") as f:
        json.dump(entries, f)


def test_not_a_model_folder(tmp_path):
    with pytest.raises(ValueError, match=r"config\.json not found") as info:
        Embedder.from_pretrained(tmp_path)
    assert "\n" not in str(info.value)
    folder = _copy_minilm(tmp_path, "no_pooling_config")
    _write_modules(folder, [("Transformer", ""), ("Pooling", "1_Pooling")])
    with pytest.raises(ValueError, match=r"1_Pooling.*config\.json not found"):
        Embedder.from_pretrained(folder)
    _write_modules(folder, [("Transformer", ""), ("LSTM", "1_LSTM")])
    with pytest.raises(ValueError, match="LSTM"):
        Embedder.from_pretrained(folder)
    with pytest.raises(ValueError, match="is a file"):
        Embedder.from_pretrained(os.path.join(folder, "config.json"))
    with pytest.raises(TypeError, match="name_or_path"):
        Embedder.from_pretrained(3)


def test_non_local_name_fails_fast():
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"not a local folder.*never downloads"):
        Embedder.from_pretrained("embedcore-tests/no-such-model-x9")
    assert time.perf_counter() - start < 10


# ------------------------------------------------------------------------------------------------ folders


def test_compact_pooling_dense_and_saved_prompts(tmp_path, texts):
    folder = _copy_minilm(tmp_path, "dense")
    os.makedirs(os.path.join(folder, "1_Pooling"))
    with open(os.path.join(folder, "1_Pooling", "config.json"), "w") as f:
        json.dump({"embedding_dimension": 384, "pooling_mode": ["cls", "mean"], "include_prompt": False}, f)
    torch.manual_seed(0)
    dense = torch.nn.Linear(768, 96)
    os.makedirs(os.path.join(folder, "2_Dense"))
    from safetensors.torch import save_file

    save_file(
        {"linear.weight": dense.weight.detach(), "linear.bias": dense.bias.detach()},
        os.path.join(folder, "2_Dense", "model.safetensors"),
    )
    with open(os.path.join(folder, "2_Dense", "config.json"), "w") as f:
        json.dump(
            {
                "in_features": 768,
                "out_features": 96,
                "bias": True,
                "activation_function": "torch.nn.modules.activation.Tanh",
            },
            f,
        )
    _write_modules(
        folder,
        [("Transformer", ""), ("Pooling", "1_Pooling"), ("Dense", "2_Dense"), ("Normalize", "3_Normalize")],
    )
    with open(os.path.join(folder, "config_sentence_transformers.json"), "w") as f:
        json.dump(
            {
                "prompts": {"query": "query: ", "doc": "passage: "},
                "default_prompt_name": "doc",
                "similarity_fn_name": "dot",
            },
            f,
        )
    st = SentenceTransformer(folder, device="cpu")
    st.max_seq_length = MAX_SEQ_LENGTH
    emb = Embedder.from_pretrained(folder, device="cpu", max_seq_length=MAX_SEQ_LENGTH)
    assert emb.pooling_mode == ("cls", "mean") and not emb.include_prompt
    assert emb.prompts["doc"] == "passage: " and emb.default_prompt_name == "doc"
    assert emb.similarity_fn_name == "dot" and emb.get_sentence_embedding_dimension() == 96
    for kwargs in ({}, {"prompt_name": "query"}, {"normalize_embeddings": True, "truncate_dim": 50}):
        assert_close(emb.encode(texts, **kwargs), st.encode(texts, **kwargs), atol=ATOL, name=str(kwargs))
    assert_close(emb.encode_query(texts[:4]), st.encode_query(texts[:4]), atol=ATOL)


def test_legacy_pooling_booleans_and_loading_options(tmp_path, texts):
    folder = _copy_minilm(tmp_path, "legacy")
    os.makedirs(os.path.join(folder, "1_Pooling"))
    with open(os.path.join(folder, "1_Pooling", "config.json"), "w") as f:
        json.dump(
            {
                "word_embedding_dimension": 384,
                "pooling_mode_cls_token": False,
                "pooling_mode_mean_tokens": True,
                "pooling_mode_max_tokens": True,
            },
            f,
        )
    _write_modules(folder, [("Transformer", ""), ("Pooling", "1_Pooling")])
    assert loading.pooling_from_config({}) == ("mean", True)
    prompts = {"query": "search_query: "}
    st = SentenceTransformer(folder, device="cpu", prompts=prompts, default_prompt_name="query")
    st.max_seq_length = 32
    emb = Embedder.from_pretrained(
        folder, device="cpu", prompts=prompts, default_prompt_name="query", max_seq_length=32
    )
    assert emb.pooling_mode == ("max", "mean") and emb.max_seq_length == 32
    assert_close(emb.encode(texts), st.encode(texts), atol=ATOL)
    over = Embedder.from_pretrained(folder, device="cpu", pooling="cls", max_seq_length=32)
    st[1].pooling_mode = "cls"
    assert_close(over.encode(texts, prompt=""), st.encode(texts, prompt=""), atol=ATOL)
    with pytest.raises(ValueError, match="pooling"):
        Embedder.from_pretrained(folder, pooling="median")
    with pytest.raises(ValueError, match="default_prompt_name"):
        Embedder.from_pretrained(folder, default_prompt_name="passage")


# ------------------------------------------------------------------------------------------------ decoders


def tiny_decoder(tmp_path, arch: str) -> str:
    """A random LlamaForCausalLM / Qwen2ForCausalLM checkpoint with the MiniLM tokenizer, saved as a
    plain Hugging Face folder (no modules.json)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm_path())
    config_cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[arch]
    config = config_cls(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.1,
    )
    torch.manual_seed(0)
    lm_cls = {"llama": transformers.LlamaForCausalLM, "qwen2": transformers.Qwen2ForCausalLM}[arch]
    folder = tmp_path / arch
    lm_cls(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_tiny_decoder_lasttoken_and_bidirectional(tmp_path, arch):
    folder = tiny_decoder(tmp_path, arch)
    sample = wiki_texts(12)
    st = SentenceTransformer(folder, device="cpu")
    causal = Embedder.from_pretrained(folder, device="cpu")
    assert causal.pooling_mode == "lasttoken" and st[1].pooling_mode == "lasttoken"
    assert_close(causal.encode(sample), st.encode(sample), atol=ATOL)
    assert_close(causal.encode(sample, batch_size=1), causal.encode(sample), atol=ATOL)

    bidir = Embedder.from_pretrained(folder, device="cpu", bidirectional=True)
    assert bidir.pooling_mode == "mean"
    # Bidirectional: the first token sees the last one. Causal: it does not.
    pair = ["the river flows north", "the river flows south"]
    for model, sees_future in ((causal, False), (bidir, True)):
        first = [t[1] for t in model.encode(pair, output_value="token_embeddings")]
        assert (not torch.allclose(first[0], first[1], atol=1e-6)) == sees_future
    # Equal to sentence-transformers running the same model patched by ec.bidirectional, mean pooled.
    st[1].pooling_mode = "mean"
    with ec.bidirectional(st[0].auto_model, attn_implementation=None):
        expected = st.encode(sample)
    assert_close(bidir.encode(sample), expected, atol=ATOL)
    assert_close(bidir.encode(sample, batch_size=1), expected, atol=ATOL)


def test_multi_process_pool_matches_single_process(tmp_path):
    emb = Embedder.from_pretrained(tiny_decoder(tmp_path, "llama"), device="cpu")
    sample = wiki_texts(10)
    single = emb.encode(sample)
    assert_close(emb.encode(sample, device=["cpu"]), single, atol=ATOL)  # a temporary one-worker pool
    pool = emb.start_multi_process_pool(["cpu", "cpu"])
    try:
        # int8 ranges span all chunks, as in one process
        codes = emb.encode(sample, pool=pool, chunk_size=4, precision="int8")
        assert_codes_match(codes, single, "int8", np.vstack([single.min(0), single.max(0)]), atol=ATOL)
        tokens = emb.encode(sample[:3], pool=pool, output_value="token_embeddings")
        for got, want in zip(tokens, emb.encode(sample[:3], output_value="token_embeddings")):
            assert_close(got, want, atol=ATOL)
        with pytest.raises(KeyError):
            emb.encode(sample, pool=pool, prompt_name="missing")
    finally:
        emb.stop_multi_process_pool(pool)
    with pytest.raises(TypeError, match="pool"):
        emb.encode(sample, pool={"input": None})
