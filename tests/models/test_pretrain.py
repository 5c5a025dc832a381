import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM, Qwen2ForCausalLM

from leafpipe.models.pretrain import (
    ModelSpec,
    TrainSpec,
    build_model,
    save_model,
    train_lm,
)
from leafpipe.text.batching import collate, response_cross_entropy
from leafpipe.text.templates import encode_sample
from leafpipe.text.tokenizer import load_tokenizer

SPEC = dict(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)


def test_build_model_makes_the_requested_architecture(tokenizer):
    llama = build_model(ModelSpec(arch="llama", **SPEC), tokenizer, seed=0)
    qwen = build_model(ModelSpec(arch="qwen2", **SPEC), tokenizer, seed=0)
    assert isinstance(llama, LlamaForCausalLM) and isinstance(qwen, Qwen2ForCausalLM)
    assert llama.config.vocab_size == len(tokenizer)
    assert llama.config.eos_token_id == tokenizer.eos_token_id


def _loss(model, tokenizer, rows):
    batch = collate(
        [encode_sample(tokenizer, r["instruction"], r["response"]) for r in rows],
        tokenizer.pad_token_id,
    )
    with torch.no_grad():
        return (
            response_cross_entropy(
                model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch
            )
            .mean()
            .item()
        )


def test_training_reduces_the_response_loss_deterministically(tokenizer, samples):
    rows = [{"instruction": a, "response": b} for a, b in samples] * 4
    models = []
    for _ in range(2):
        model = build_model(ModelSpec(**SPEC), tokenizer, seed=0)
        before = _loss(model, tokenizer, rows)
        train_lm(
            model, tokenizer, rows, TrainSpec(epochs=5, batch_size=4, lr=1e-2), log=lambda _: None
        )
        assert _loss(model, tokenizer, rows) < 0.8 * before
        models.append(model)
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.equal(a, b)


def test_save_model_round_trips_and_leaves_no_temp_dir(tmp_path, tokenizer, samples):
    model = build_model(ModelSpec(arch="qwen2", **SPEC), tokenizer, seed=0)
    save_model(model, tokenizer, tmp_path / "m")
    assert [p.name for p in tmp_path.iterdir()] == ["m"]
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    tok = load_tokenizer(tmp_path / "m")
    ids = torch.tensor([tok(samples[0][0])["input_ids"]])
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
