"""A reference scorer (one sample at a time) and rows for the scoring tests."""

from __future__ import annotations

import torch

from leafpipe.text.batching import collate
from leafpipe.text.reasoning_steps import reasoning_step_of, reasoning_step_starts
from leafpipe.text.templates import RESPONSE, encode_sample

LONG = (
    "Ann has 2 cats and 3 dogs and a fish and a bird and a very long story about her garden. "
    "She plants 5 trees. How many pets?",
    "Step 1: cats and dogs, 2 + 3 = 5.\nStep 2: a fish and a bird.\nThe answer is 7.",
)


def scoring_rows(samples):
    return [{"id": f"s{i}", "instruction": a, "response": b} for i, (a, b) in enumerate(samples)]


def reference_scores(model, tokenizer, row, *, later_than=None, starts=None):
    """Plain autograd on one sample: ‖∂L/∂e‖ and |∂L/∂e · e| of the response loss at every
    position, or of the loss of the steps after `later_than` (steps from `starts`, or lines)."""
    enc = encode_sample(tokenizer, row["instruction"], row["response"], system=row.get("system"))
    batch = collate([enc], tokenizer.pad_token_id)
    emb = model.get_input_embeddings().weight[batch.input_ids].clone().detach().requires_grad_(True)
    logits = model(inputs_embeds=emb).logits[0, :-1]
    targets = batch.input_ids[0, 1:]
    mask = batch.target_mask[0].clone()
    if later_than is not None:
        starts = starts or reasoning_step_starts(row["response"], "lines")
        steps = [
            reasoning_step_of(starts, a) if f == RESPONSE else 10**6
            for f, (a, _) in zip(enc.fields, enc.offsets)
        ]
        mask &= torch.tensor([s > later_than for s in steps[1:]])
    loss = torch.nn.functional.cross_entropy(logits[mask], targets[mask])
    loss.backward()
    return emb.grad[0].norm(dim=-1), (emb.grad[0] * emb[0]).sum(-1).abs().detach(), loss.item(), enc
