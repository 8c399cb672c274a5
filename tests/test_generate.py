"""The optional LLM help: a tiny randomly initialised causal LM saved to tmp_path runs the plumbing
(what it writes is noise; the quality of real output is the real model's)."""

from __future__ import annotations

import numpy as np
import pytest

import embedcore as ec
from embedcore.generate import CLUSTER_TEMPLATE, QUERY_TEMPLATE, Generator, check_template

WORDS = (
    "write one short web search query that the following passage answers a name for this group texts "
    "belong to two five words volcano lava violin sonata goal football"
).split()


def save_tiny_lm(folder) -> str:
    """A 1-layer GPT-2 with a word-level tokenizer over WORDS, saved as a checkpoint folder."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<eos>", *dict.fromkeys(WORDS), ":", ".", "-"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(vocab), n_positions=128, n_embd=32, n_layer=1, n_head=2,
                        bos_token_id=1, eos_token_id=1)  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


def test_complete_is_batched_and_keeps_order(tiny_lm):
    gen = Generator.from_pretrained(tiny_lm, device="cpu")
    prompts = ["volcano lava", "violin sonata orchestra goal", "a", "football goal goal goal goal"]
    one_by_one = [gen.complete([p], max_new_tokens=5)[0] for p in prompts]
    batched = gen.complete(prompts, max_new_tokens=5, batch_size=3)
    assert batched == one_by_one  # left padding: a prompt's batch does not change its completion
    assert all(isinstance(t, str) and "\n" not in t for t in batched) and any(batched)
    assert len(gen.write_queries(["lava", "goal"], max_new_tokens=3)) == 2
    assert len(gen.name_groups([["lava", "volcano"], ["goal"]], max_new_tokens=3)) == 2


def test_templates_are_checked():
    assert check_template(QUERY_TEMPLATE, "text") and check_template(CLUSTER_TEMPLATE, "texts")
    with pytest.raises(ValueError, match=r"placeholder \{text\}"):
        check_template("no placeholder", "text")
    with pytest.raises(ValueError, match="no other"):
        check_template("{text} {extra}", "text")
    with pytest.raises(TypeError, match="template must be a string"):
        check_template(3, "text")


def test_a_path_that_is_not_a_causal_lm_is_refused(tmp_path):
    from transformers import BertConfig, BertModel

    with pytest.raises(ValueError, match="no such folder"):
        Generator.from_pretrained(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a transformers checkpoint"):
        Generator.from_pretrained(tmp_path)
    encoder = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(encoder)  # fmt: skip
    with pytest.raises(ValueError, match=r"not a causal LM checkpoint .*BertModel"):
        Generator.from_pretrained(encoder)


def test_tune_with_generated_queries(tiny_lm):
    from corpus import load_summaries, minilm_path

    texts = [r["extract"][:200] for r in load_summaries(60)]
    result = ec.tune(texts, model=minilm_path(), generator=tiny_lm, n_queries=30, target_recall=0.9,
                     k=3, latency_queries=2, multipliers=(2,), truncate_dims=())  # fmt: skip
    assert result.query_source == "generated" and result.n_queries == 30 and result.n_corpus == 60
    assert result.rows[0]["recall"] == 1.0


def test_tune_generator_needs_texts_and_enough_queries(tiny_lm):
    corpus = np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32)
    with pytest.raises(ValueError, match="generator= writes queries from the corpus texts"):
        ec.tune(corpus, generator=tiny_lm)
    texts = [f"text {i}" for i in range(100)]
    with pytest.raises(ValueError, match="at least 52 are needed"):
        ec.tune(corpus, generator=tiny_lm, texts=texts, model="unused", n_queries=20)


def test_inspect_names_clusters_with_the_generator(tiny_lm, rng):
    x = rng.normal(size=(40, 8)).astype(np.float32)
    texts = [f"{'volcano lava' if i % 2 else 'violin sonata'} {i}" for i in range(40)]
    report = ec.inspect(x, texts, n_clusters=3, generator=tiny_lm)
    gen = Generator.from_pretrained(tiny_lm, device="cpu")
    for cluster in report["clusters"]:
        written = gen.name_groups([[texts[i] for i in cluster["nearest_ids"]]])[0]
        assert cluster["name"] == (written or cluster["name"])
    with pytest.raises(ValueError, match="pass texts"):
        ec.inspect(x, generator=tiny_lm)
