"""The memory model (leafpipe.execution.memory) against tiny random-init models: parameter counts,
the KV cache a forward fills, and the activations autograd keeps for the backward."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from leafpipe.execution import memory

SMALL = dict(
    vocab_size=300,
    hidden_size=64,
    intermediate_size=176,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
)


def _model(config_cls, model_cls, **overrides):
    torch.manual_seed(0)
    return model_cls(config_cls(**{**SMALL, **overrides})).eval()


@pytest.mark.parametrize("tied", [False, True])
def test_params_count_every_weight_of_a_llama(tied):
    model = _model(LlamaConfig, LlamaForCausalLM, tie_word_embeddings=tied)
    assert memory.model_shape(model.config).params == model.num_parameters()


def test_params_leave_out_only_qwen2s_attention_biases():
    model = _model(Qwen2Config, Qwen2ForCausalLM, tie_word_embeddings=False)
    shape = memory.model_shape(model.config)
    biases = shape.layers * (shape.q_dim + 2 * shape.kv_dim)
    assert shape.params == model.num_parameters() - biases


def test_model_shape_reads_a_config_object_and_its_config_json_alike():
    config = LlamaConfig(**SMALL, head_dim=8, tie_word_embeddings=True)
    shape = memory.model_shape(config)
    assert memory.model_shape(config.to_dict()) == shape
    assert (shape.head_dim, shape.q_dim, shape.kv_dim, shape.tied_embeddings) == (8, 32, 16, True)


def test_model_shape_defaults_like_the_config_classes():
    """Gemma: head_dim apart from hidden / heads and a head tied by default; no kv heads given:
    one per query head."""
    gemma = {
        "model_type": "gemma",
        "num_hidden_layers": 28,
        "hidden_size": 3072,
        "intermediate_size": 24576,
        "num_attention_heads": 16,
        "head_dim": 256,
        "vocab_size": 256000,
    }
    shape = memory.model_shape(gemma)
    assert (shape.head_dim, shape.kv_heads, shape.tied_embeddings) == (256, 16, True)
    assert memory.model_shape({**gemma, "model_type": "llama"}).tied_embeddings is False


def test_model_shape_reads_a_multimodal_configs_language_model():
    text = LlamaConfig(**SMALL)
    expected = memory.model_shape(text)
    assert memory.model_shape({"model_type": "llava", "text_config": text.to_dict()}) == expected
    assert memory.model_shape(SimpleNamespace(get_text_config=lambda: text)) == expected


def test_kv_cache_bytes_are_what_a_forward_caches():
    model = _model(LlamaConfig, LlamaForCausalLM)
    batch, tokens = 3, 11
    with torch.no_grad():
        cache = model(torch.randint(0, 300, (batch, tokens)), use_cache=True).past_key_values
    cached = sum(t.nbytes for layer in cache.layers for t in (layer.keys, layer.values))
    shape = memory.model_shape(model.config)
    assert cached == batch * tokens * memory.kv_cache_bytes_per_token(shape, 4)


def _saved_bytes_per_token(model, ids):
    """Bytes autograd keeps for the backward of a loss on `ids` [B, T] (each storage once, the
    parameters left out), per token: the activations a backward pass needs."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        logits = model(inputs_embeds=embeds).logits
        torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids.flatten())
    return sum(kept.values()) / ids.numel()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_activations_kept_for_the_backward_stay_within_the_estimates(dtype):
    """The estimates add one layer's transients to what is kept, so they bound the kept bytes from
    above; they stay within twice them, so the planner does not refuse what fits."""
    model = _model(LlamaConfig, LlamaForCausalLM, attn_implementation="sdpa").to(dtype)
    shape, nbytes = memory.model_shape(model.config), dtype.itemsize
    ids = torch.randint(0, 300, (2, 64))
    model.requires_grad_(False)
    scoring = _saved_bytes_per_token(model, ids)
    estimate = memory.scoring_bytes_per_token(shape, nbytes)
    assert scoring < estimate < 2 * scoring
    model.requires_grad_(True)
    training = _saved_bytes_per_token(model, ids)
    estimate = memory.training_bytes_per_token(
        shape, nbytes, checkpointing=False
    ) + memory.logits_bytes_per_token(shape, nbytes, backward=True)
    assert training < estimate < 2 * training


def test_gradient_checkpointing_keeps_one_layer_input_per_layer():
    shape = memory.model_shape(LlamaConfig(**{**SMALL, "num_hidden_layers": 32}))
    full = memory.training_bytes_per_token(shape, 2, checkpointing=False)
    checkpointed = memory.training_bytes_per_token(shape, 2, checkpointing=True)
    assert checkpointed < full / 4


def test_token_budget_fits_the_free_memory_and_is_never_zero():
    shape = memory.model_shape(LlamaConfig(**SMALL))
    per_token = memory.scoring_bytes_per_token(shape, 2)
    assert memory.token_budget(shape, 1000 * per_token, 2, backward=True, margin=0.5) == 500
    assert memory.token_budget(shape, 10, 2, backward=True) == 1
    assert memory.token_budget(shape, 10**9, 2, backward=False) > memory.token_budget(
        shape, 10**9, 2, backward=True
    )


def test_attention_analysis_counts_one_layers_squares_and_no_logits():
    """Scores, fp32 probabilities and their cast, plus the 4-D mask, for one layer: the [T, T]
    terms do not grow with the layers (the hook frees each layer's), and the vocabulary does not
    count (the analysis runs the decoder without its head)."""
    shape = memory.model_shape(LlamaConfig(**SMALL))
    batch, tokens = 2, 100
    extra = memory.attention_analysis_bytes(shape, batch, tokens, 2)
    base = batch * tokens * memory.inference_bytes_per_token(shape, 2, logits=False)
    assert extra - base == batch * tokens**2 * (shape.heads * (4 + 2 * 2) + 2)
    wider_vocab = memory.model_shape(
        LlamaConfig(**{**SMALL, "vocab_size": 50 * SMALL["vocab_size"]})
    )
    assert memory.attention_analysis_bytes(wider_vocab, batch, tokens, 2) == extra
    deeper = memory.model_shape(
        LlamaConfig(**{**SMALL, "num_hidden_layers": 4 * SMALL["num_hidden_layers"]})
    )
    assert memory.attention_analysis_bytes(deeper, batch, tokens, 2) == extra


def test_topk_cache_host_bytes_are_the_arrays_and_one_batch():
    rows, k = 1000, 8
    assert memory.topk_cache_host_bytes(rows, k, batch_rows=0) == rows * k * (4 + 4)
    assert memory.topk_cache_host_bytes(rows, k, batch_rows=10) == rows * k * 8 + 10 * k * (8 + 4)
    assert memory.topk_cache_host_bytes(rows, k) == memory.topk_cache_host_bytes(
        rows, k, batch_rows=rows
    )
