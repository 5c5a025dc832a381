"""Scoring a corpus row with a system prompt: the prompt is context, never a scored token."""

from __future__ import annotations

import torch
from scoring_reference import reference_scores, scoring_rows

from leafpipe.detect.scoring import ScoreSpec, score_samples
from leafpipe.text.templates import INSTRUCTION

SYSTEM = "You are a careful math tutor."


def test_a_system_prompt_is_rendered_as_context_and_never_scored(tokenizer, samples, tiny_llama):
    model = tiny_llama(0)
    plain = scoring_rows(samples)
    rows = [{**row, "system": SYSTEM} for row in plain]
    spec = ScoreSpec(max_tokens=10**6)
    frame = score_samples(model, tokenizer, rows, spec)
    without = score_samples(model, tokenizer, plain, spec)
    for row in rows:
        tokens = frame[frame["sample_id"] == row["id"]]
        assert set(tokens["part"]) == {"instruction", "response"}
        for part in ("instruction", "response"):
            assert "".join(tokens[tokens["part"] == part]["token"]) == row[part]
    # The same content tokens, each further along: the system prompt's tokens come first.
    assert frame["token"].tolist() == without["token"].tolist()
    assert (frame["position"] > without["position"]).all()
    norms, _, loss, _ = reference_scores(model, tokenizer, rows[0])
    instr = frame[(frame["sample_id"] == "s0") & (frame["part"] == INSTRUCTION)]
    got = torch.tensor(instr["grad_norm"].to_numpy())
    torch.testing.assert_close(got, norms[instr["position"].tolist()], rtol=1e-4, atol=1e-7)
    assert abs(float(instr["loss"].iloc[0]) - loss) < 1e-5
    assert float(instr["loss"].iloc[0]) != float(
        without[without["sample_id"] == "s0"]["loss"].iloc[0]
    )
