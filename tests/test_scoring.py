import torch

from leafpipe.batching import collate, response_cross_entropy
from leafpipe.scoring import score_samples
from leafpipe.templates import INSTRUCTION, encode_sample


def _rows(samples):
    return [{"id": f"s{i}", "instruction": a, "response": b} for i, (a, b) in enumerate(samples)]


def test_scores_match_a_hand_computed_autograd_gradient(tokenizer, samples, tiny_llama):
    model = tiny_llama(0)
    rows = _rows(samples)
    frame = score_samples(model, tokenizer, rows, batch_size=2)
    # Reference: one sample, full autograd through a fresh embedding leaf, loss written out.
    enc = encode_sample(tokenizer, rows[1]["instruction"], rows[1]["response"])
    batch = collate([enc], tokenizer.pad_token_id)
    emb = model.get_input_embeddings().weight[batch.input_ids].clone().detach().requires_grad_(True)
    logits = model(inputs_embeds=emb).logits[0, :-1]
    targets = batch.input_ids[0, 1:]
    mask = batch.target_mask[0]
    loss = torch.nn.functional.cross_entropy(logits[mask], targets[mask])
    loss.backward()
    expected = [float(emb.grad[0, i].norm()) for i, f in enumerate(enc.fields) if f != "template"]
    got = frame.iloc[1]["grad_norm"]
    torch.testing.assert_close(torch.tensor(list(got)), torch.tensor(expected), rtol=1e-4, atol=1e-7)
    assert abs(frame.iloc[1]["loss"] - loss.item()) < 1e-5


def test_batching_does_not_change_scores(tokenizer, samples, tiny_llama):
    model = tiny_llama(0)
    rows = _rows(samples)
    together = score_samples(model, tokenizer, rows, batch_size=2)
    alone = score_samples(model, tokenizer, rows, batch_size=1)
    for a, b in zip(together["grad_norm"], alone["grad_norm"]):
        torch.testing.assert_close(torch.tensor(list(a)), torch.tensor(list(b)), rtol=1e-4, atol=1e-7)


def test_rows_keep_input_order_and_only_content_tokens(tokenizer, samples, tiny_qwen2):
    rows = _rows(samples)[::-1]
    frame = score_samples(tiny_qwen2(0), tokenizer, rows, batch_size=2)
    assert frame["id"].tolist() == [r["id"] for r in rows]
    first = frame.iloc[0]
    instr = "".join(t for f, t in zip(first["field"], first["text"]) if f == INSTRUCTION)
    assert instr == rows[0]["instruction"]
    assert set(first["field"]) == {"instruction", "response"}
    steps = [s for f, s in zip(first["field"], first["step"]) if f == "response"]
    assert steps[0] == 0 and steps[-1] == rows[0]["response"].count("\n")


def test_no_parameter_gradients_are_allocated(tokenizer, samples, tiny_llama):
    model = tiny_llama(0)
    score_samples(model, tokenizer, _rows(samples))
    assert all(p.grad is None for p in model.parameters())
