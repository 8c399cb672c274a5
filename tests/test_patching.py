"""bidirectional(model): numerical proof per architecture, equality with an explicit all-visible mask,
batch independence, exact undo, and the "embedcore" attention implementation on encoders."""

from __future__ import annotations

import importlib

import pytest
import torch
import transformers

import embedcore as ec
from embedcore import _backend
from embedcore.models import patching

from helpers import assert_close

COMMON = dict(
    vocab_size=101,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    initializer_range=0.1,
    attn_implementation="eager",
)
WINDOW = 4  # sliding window of the windowed tiny models (sequences here are up to 13 tokens)

# model_type -> (config class, base model class, causal LM class, extra config)
ARCHS = {
    "llama": ("LlamaConfig", "LlamaModel", "LlamaForCausalLM", {}),
    "mistral": ("MistralConfig", "MistralModel", "MistralForCausalLM", {"sliding_window": WINDOW}),
    "qwen2": ("Qwen2Config", "Qwen2Model", "Qwen2ForCausalLM", {}),
    "qwen3": ("Qwen3Config", "Qwen3Model", "Qwen3ForCausalLM", {"head_dim": 16}),
    "gemma": ("GemmaConfig", "GemmaModel", "GemmaForCausalLM", {"head_dim": 16}),
    "gemma2": (
        "Gemma2Config", "Gemma2Model", "Gemma2ForCausalLM",
        {"head_dim": 16, "sliding_window": WINDOW, "attn_logit_softcapping": 1.0,
         "layer_types": ["sliding_attention", "full_attention"]},
    ),
    "gemma3_text": (
        "Gemma3TextConfig", "Gemma3TextModel", "Gemma3ForCausalLM",
        {"head_dim": 16, "sliding_window": WINDOW, "layer_types": ["sliding_attention", "full_attention"]},
    ),
}


def build(arch: str, lm: bool = False, **overrides) -> torch.nn.Module:
    config_cls, base_cls, lm_cls, extra = ARCHS[arch]
    config = getattr(transformers, config_cls)(**{**COMMON, **extra, **overrides})
    torch.manual_seed(0)
    return getattr(transformers, lm_cls if lm else base_cls)(config).eval()


def last_hidden(model, input_ids, attention_mask=None, position_ids=None) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                    output_hidden_states=True, use_cache=False)
    return out.hidden_states[-1]


def batch(lengths: list[int], side: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ids padded on ``side``; returns (input_ids, attention_mask, position_ids)."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for b, n in enumerate(lengths):
        cols = slice(width - n, width) if side == "left" else slice(0, n)
        ids[b, cols] = torch.randint(1, COMMON["vocab_size"], (n,), generator=g)
        mask[b, cols] = 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, position_ids


def explicit_mask(model, mask: torch.Tensor):
    """All-visible additive 4-D masks (padding keys hidden; |i - j| < sliding_window on windowed layers)
    for the unpatched model: one tensor, or a dict by layer type for models that accept one."""
    config = model.config
    dtype = next(model.parameters()).dtype
    width = mask.shape[1]
    keys = mask.bool()[:, None, None, :].expand(-1, 1, width, width)
    dist = (torch.arange(width)[:, None] - torch.arange(width)[None, :]).abs()

    def additive(visible):
        return torch.zeros(visible.shape, dtype=dtype).masked_fill(~visible, torch.finfo(dtype).min)

    full = additive(keys)
    window = getattr(config, "sliding_window", None)
    windowed = additive(keys & (dist < window)) if window else full
    if config.model_type == "mistral":
        return windowed
    if getattr(config, "layer_types", None) is not None:
        return {"full_attention": full, "sliding_attention": windowed}
    return full


def token_change_reaches_first(model, n: int = 9) -> float:
    ids, _, _ = batch([n], "right", seed=3)
    other = ids.clone()
    other[0, -1] = ids[0, -1] % (COMMON["vocab_size"] - 1) + 1
    return float((last_hidden(model, ids)[0, 0] - last_hidden(model, other)[0, 0]).abs().max())


@pytest.mark.parametrize("lm", [False, True], ids=["base", "causal_lm"])
@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_last_token_reaches_first_only_while_patched(arch, lm):
    # A window below the length would hide the last token from the first; widen it for this proof.
    model = build(arch, lm, **({"sliding_window": 16} if "sliding_window" in ARCHS[arch][3] else {}))
    ids, _, _ = batch([9], "right", seed=5)
    before = last_hidden(model, ids)
    assert token_change_reaches_first(model) == 0.0

    handle = ec.bidirectional(model)
    assert model.config._attn_implementation == "embedcore"
    assert token_change_reaches_first(model) > 1e-3

    handle.undo()
    assert token_change_reaches_first(model) == 0.0
    assert model.config._attn_implementation == "eager"
    assert torch.equal(last_hidden(model, ids), before), "undo() must restore the exact outputs"


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize(
    "lengths, side",
    [([11], "right"), ([13, 5, 1, 9], "right"), ([13, 5, 1, 9], "left")],
    ids=["B1", "B4-right", "B4-left"],
)
def test_equals_explicit_all_visible_mask(arch, lengths, side):
    model = build(arch)
    ids, mask, pos = batch(lengths, side)
    expected = last_hidden(model, ids, explicit_mask(model, mask), pos)
    with ec.bidirectional(model):
        actual = last_hidden(model, ids, mask, pos)
    real = mask.bool()
    assert_close(actual[real], expected[real], atol=2e-5, rtol=1e-5, name=f"{arch} hidden states")


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_independence(arch, side):
    model = build(arch)
    lengths = [7, 12, 2, 10]
    ids, mask, pos = batch(lengths, side, seed=7)
    with ec.bidirectional(model):
        together = last_hidden(model, ids, mask, pos)
        for b, n in enumerate(lengths):
            cols = slice(ids.shape[1] - n, None) if side == "left" else slice(0, n)
            alone = last_hidden(model, ids[b : b + 1, cols])
            assert_close(together[b, cols], alone[0], atol=1e-5, rtol=1e-5, name=f"text {b}")


def test_layout_follows_in_place_mask_changes():
    """The per-forward layout cache must notice a mask edited in place between two calls."""
    model = build("llama")
    ids, mask, pos = batch([7, 7], "right")
    mask = mask.bool()
    with ec.bidirectional(model):
        before = last_hidden(model, ids, mask, pos)
        mask[1, 4:] = False
        edited = last_hidden(model, ids, mask, pos)
        fresh = last_hidden(model, ids, mask.clone(), pos)
    assert torch.equal(edited, fresh)
    assert not torch.allclose(before[1, :4], edited[1, :4])


def test_inference_mode_masks_and_their_in_place_changes():
    """Masks made under torch.inference_mode have no version counter: the layout cache must still work
    (no RuntimeError) and still see an in-place edit between two forwards."""
    model = build("qwen2")
    ids, mask, pos = batch([7, 5], "right")
    with ec.bidirectional(model):
        reference = last_hidden(model, ids, mask.bool(), pos)
        with torch.inference_mode():
            mask_inf = mask.bool().clone()
            assert mask_inf.is_inference()
            first = model(input_ids=ids, attention_mask=mask_inf, position_ids=pos).last_hidden_state
            mask_inf[1, 3:] = False
            edited = model(input_ids=ids, attention_mask=mask_inf, position_ids=pos).last_hidden_state
            fresh = model(input_ids=ids, attention_mask=mask_inf.clone(), position_ids=pos).last_hidden_state
    assert_close(first[:, :5], reference[:, :5], atol=1e-5, name="inference-mode forward")
    assert torch.equal(edited, fresh)
    assert not torch.allclose(first[1, :3], edited[1, :3])


@pytest.mark.parametrize("source", ["position_ids", "cu_seq_lens"])
def test_packed_batch_equals_texts_alone(source):
    """B=1 packed input (no padding anywhere in the model): boundaries from restarting position ids
    (transformers' DataCollatorWithFlattening) or flash-attention's cu_seq_lens kwargs."""
    model = build("qwen3")
    lengths = [5, 9, 1, 4]
    ids, mask, _ = batch(lengths, "right", seed=9)
    packed = ids[mask.bool()][None]
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    extra = {}
    if source == "cu_seq_lens":
        cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
        extra = dict(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=9, max_length_k=9)
    with ec.bidirectional(model), torch.no_grad():
        out = model(input_ids=packed, position_ids=positions, use_cache=False, **extra).last_hidden_state[0]
        start = 0
        for b, n in enumerate(lengths):
            alone = model(input_ids=ids[b : b + 1, :n], use_cache=False).last_hidden_state[0]
            assert_close(out[start : start + n], alone, atol=1e-5, rtol=1e-5, name=f"text {b}")
            start += n


def test_kernel_path_end_to_end(monkeypatch):
    """head_dim 32 is a kernel head dim: under the interpreter the Triton kernel runs inside the model."""
    if _backend.triton_mode() != "interpreted":
        pytest.skip("CPU tensors reach the Triton kernel only under TRITON_INTERPRET=1")
    from embedcore.kernels import attention as kernel

    launches = []
    fwd = kernel.attention_fwd
    monkeypatch.setattr(kernel, "attention_fwd", lambda *a: launches.append(a[4]) or fwd(*a))
    model = build("llama", num_attention_heads=2, num_key_value_heads=1)
    ids, mask, pos = batch([6, 3], "left", seed=2)
    expected = last_hidden(model, ids, explicit_mask(model, mask), pos)
    with ec.bidirectional(model):
        actual = last_hidden(model, ids, mask, pos)
    assert launches == [6, 6], "one varlen launch per layer, sized by the longest text"
    real = mask.bool()
    assert_close(actual[real], expected[real], atol=2e-5, rtol=1e-5, name="hidden states")


def test_context_manager_and_handle_state():
    model = build("qwen2")
    with ec.bidirectional(model) as handle:
        assert handle.active and all(
            not m.is_causal for m in model.modules() if isinstance(getattr(m, "is_causal", None), bool)
        )
        with pytest.raises(ValueError, match="already patched"):
            ec.bidirectional(model)
    assert not handle.active
    assert all(m.is_causal for m in model.modules() if isinstance(getattr(m, "is_causal", None), bool))
    handle.undo()  # idempotent


def test_keeping_the_attention_implementation():
    """attn_implementation=None keeps eager attention: bidirectional through config.is_causal where the
    mask builders honour it (transformers 5), a clear error where they do not (4.56)."""
    model = build("qwen2")
    if not patching.masks_honour_is_causal():
        with pytest.raises(ValueError, match="attn_implementation='embedcore'"):
            ec.bidirectional(model, attn_implementation=None)
        assert token_change_reaches_first(model) == 0.0
        return
    with ec.bidirectional(model, attn_implementation=None):
        assert model.config._attn_implementation == "eager"
        assert token_change_reaches_first(model) > 1e-3
    assert token_change_reaches_first(model) == 0.0


def test_unsupported_model_type_names_supported():
    config = transformers.BertConfig(
        vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    model = transformers.BertModel(config)
    with pytest.raises(ValueError, match=r"'bert'.*llama.*qwen3"):
        ec.bidirectional(model)
    with pytest.raises(TypeError, match="model"):
        ec.bidirectional(object())


@pytest.mark.parametrize("arch", ["bert", "xlm-roberta"])
def test_encoder_runs_embedcore_attention_unchanged(arch):
    """An encoder keeps its (bidirectional, padded) semantics under the "embedcore" implementation."""
    config_cls, model_cls = {"bert": ("BertConfig", "BertModel"),
                             "xlm-roberta": ("XLMRobertaConfig", "XLMRobertaModel")}[arch]
    config = getattr(transformers, config_cls)(
        vocab_size=50, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(config).eval()
    modeling = importlib.import_module(type(model).__module__)
    ids, mask, _ = batch([5, 8, 2], "right", seed=4)
    ids = ids % 50
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).last_hidden_state
        if not hasattr(modeling, "ALL_ATTENTION_FUNCTIONS"):
            # transformers 4.56's BERT and XLM-R do not dispatch through AttentionInterface.
            with pytest.raises(ValueError, match="AttentionInterface"):
                patching.use_embedcore_attention(model)
            assert model.config._attn_implementation == "sdpa"
            return
        handle = patching.use_embedcore_attention(model)
        assert model.config._attn_implementation == "embedcore"
        actual = model(input_ids=ids, attention_mask=mask).last_hidden_state
        handle.undo()
    assert model.config._attn_implementation == "sdpa"
    real = mask.bool()
    assert_close(actual[real], expected[real], atol=2e-5, rtol=1e-5, name="bert hidden states")


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_custom_4d_mask_is_honoured(arch):
    """A 4-D mask built by the caller goes to transformers' SDPA (eager for softcap) unchanged."""
    model = build(arch)
    ids, mask, pos = batch([8, 5], "right", seed=6)
    custom = explicit_mask(model, mask)
    expected = last_hidden(model, ids, custom, pos)
    with ec.bidirectional(model):
        actual = last_hidden(model, ids, custom, pos)
    real = mask.bool()
    assert_close(actual[real], expected[real], atol=2e-5, rtol=1e-5, name="custom mask")


def test_attention_function_rejects_kv_cache_and_weights():
    model = build("llama")
    ids, _, _ = batch([5], "right")
    with ec.bidirectional(model), torch.no_grad():
        with pytest.raises(ValueError, match="output_attentions"):
            model(input_ids=ids, output_attentions=True)
        first = model(input_ids=ids, use_cache=True)
        name = "cache" if "cache" in first.keys() else "past_key_values"  # renamed in transformers 5
        with pytest.raises(ValueError, match="KV cache"):
            model(input_ids=ids[:, :1], **{name: first[name]})
