"""Pre-training renders a row's system prompt, as every later stage does."""

from __future__ import annotations

import torch

from leafpipe.models.pretrain import ModelSpec, TrainSpec, build_model, train_lm

SPEC = dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
SYSTEM = "You are a careful math tutor."


def _trained(tokenizer, rows) -> torch.nn.Module:
    model = build_model(ModelSpec(**SPEC), tokenizer, seed=0)
    train_lm(model, tokenizer, rows, TrainSpec(epochs=1, batch_size=2, lr=1e-2), log=lambda _: None)
    return model


def test_a_system_prompt_is_context_in_pre_training(tokenizer, samples):
    rows = [{"instruction": a, "response": b} for a, b in samples]
    plain = _trained(tokenizer, rows)
    prompted = _trained(tokenizer, [{**r, "system": SYSTEM} for r in rows])
    again = _trained(tokenizer, [{**r, "system": None} for r in rows])
    weights = [dict(m.named_parameters()) for m in (plain, prompted, again)]
    assert all(torch.equal(weights[0][n], weights[2][n]) for n in weights[0]), "null is none"
    assert not torch.equal(weights[0]["lm_head.weight"], weights[1]["lm_head.weight"])
