import numpy as np
import pytest
import torch
from scoring_reference import LONG, reference_scores, scoring_rows

import leafpipe.detect.input_gradients as input_gradients
import leafpipe.detect.scoring as scoring
from leafpipe.detect.input_gradients import SCORED, _loss_weights
from leafpipe.detect.score_batches import budgeted_batches
from leafpipe.detect.scoring import (
    SCORE_COLUMNS,
    ScoreSpec,
    _normalized,
    score_samples,
    segment_starts,
    token_budget_batches,
)
from leafpipe.text.reasoning_steps import reasoning_step_starts
from leafpipe.text.templates import INSTRUCTION, RESPONSE, encode_sample


def _sample(frame, sample_id):
    return frame[frame["sample_id"] == sample_id]


def test_instruction_scores_match_a_hand_computed_autograd_gradient(tokenizer, samples, tiny_llama):
    model = tiny_llama(0)
    rows = scoring_rows(samples)
    frame = score_samples(model, tokenizer, rows, ScoreSpec(max_tokens=10**6))
    norms, products, loss, enc = reference_scores(model, tokenizer, rows[1])
    instr = _sample(frame, "s1").query("part == 'instruction'")
    expected = norms[instr["position"].tolist()]
    torch.testing.assert_close(
        torch.tensor(instr["grad_norm"].to_numpy()), expected, rtol=1e-4, atol=1e-7
    )
    assert abs(float(instr["loss"].iloc[0]) - loss) < 1e-5
    got = torch.tensor(instr["grad_x_input"].to_numpy())
    torch.testing.assert_close(got, products[instr["position"].tolist()], rtol=1e-4, atol=1e-8)
    assert not torch.allclose(got / got.max(), expected / expected.max()), "a score of its own"
    normalized = (expected - expected.min()) / (expected.max() - expected.min())
    torch.testing.assert_close(
        torch.tensor(instr["grad_norm_normalized"].to_numpy(), dtype=torch.float64),
        normalized.double(),
        rtol=1e-4,
        atol=1e-6,
    )


def test_step_scopes_score_each_step_by_the_loss_of_later_steps(tokenizer, samples, tiny_llama):
    model = tiny_llama(0)
    rows = scoring_rows(samples)
    frame = _sample(score_samples(model, tokenizer, rows, ScoreSpec(response_scopes="steps")), "s0")
    for k in (0, 1):
        norms, products, _, _ = reference_scores(model, tokenizer, rows[0], later_than=k)
        step = frame[(frame["part"] == RESPONSE) & (frame["step"] == k)]
        got = torch.tensor(step["grad_norm"].to_numpy())
        torch.testing.assert_close(got, norms[step["position"].tolist()], rtol=1e-4, atol=1e-7)
        got = torch.tensor(step["grad_x_input"].to_numpy())
        torch.testing.assert_close(got, products[step["position"].tolist()], rtol=1e-4, atol=1e-8)
    last = frame[(frame["part"] == RESPONSE) & (frame["step"] == 2)]
    assert last["grad_norm"].isna().all() and last["grad_x_input"].isna().all(), (
        "nothing comes after the last step"
    )


def test_segments_are_cut_at_the_step_boundary_nearest_the_middle():
    assert segment_starts([0, 10, 20, 30], 40) == [0, 20]
    assert segment_starts([0, 10, 30], 40) == [0, 10]  # a tie: the earlier boundary
    assert segment_starts([0, 5, 24], 40) == [0, 24]
    assert segment_starts([0, 30], 40) == [0, 30]  # two steps: the second is the continuation
    assert segment_starts([0], 40) == [0]  # one step: no earlier segment


def test_normalised_scores_are_min_max_within_the_instruction_and_the_earlier_steps():
    scores = np.array([1.0, 3.0, 5.0, np.nan, 2.0, 4.0, 6.0, 9.0, 8.0])
    parts = np.array([INSTRUCTION] * 4 + [RESPONSE] * 5, dtype=object)
    steps = np.array([-1, -1, -1, -1, 0, 0, 1, 2, 2])
    expected = [0.0, 0.5, 1.0, np.nan, 0.0, 0.5, 1.0, np.nan, np.nan]  # the last step: unscored
    np.testing.assert_array_equal(_normalized(scores, parts, steps, 2), expected)
    # All finite scores of a scope equal: nothing to tell apart, every score of the scope NaN.
    flat = _normalized(
        np.array([2.0, 2.0, np.inf]), np.array([INSTRUCTION] * 3), np.array([-1] * 3), -1
    )
    assert np.isnan(flat).all()


def test_a_mean_loss_weighs_each_target_by_one_over_its_samples_targets():
    mask = torch.tensor([[True, False, False], [True, True, False], [False, False, False]])
    mean = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]  # no targets: weights 0, not NaN
    torch.testing.assert_close(_loss_weights(mask, "mean"), torch.tensor(mean))
    torch.testing.assert_close(_loss_weights(mask, "sum"), mask.float())


THREE_STEPS = (
    "Tom has 3 apples. He buys 4 more. How many apples?",
    "Step 1: 3.\nStep 2: 4.\nStep 3: so he has 3 + 4 = 7 apples, and the answer is 7.",
)


def test_the_earlier_segment_is_scored_by_the_continuations_loss_alone(tokenizer, tiny_llama):
    model = tiny_llama(0)
    row = scoring_rows([THREE_STEPS])[0]
    response = row["response"]
    segments = segment_starts(reasoning_step_starts(response, "lines"), len(response))
    assert segments == [0, response.index("Step 3")], "the earlier segment holds two steps"
    frame = score_samples(model, tokenizer, [row])  # response_scopes "segments" is the default
    resp = frame[frame["part"] == RESPONSE]
    assert resp["step"].tolist() == [int(a >= segments[1]) for a in resp["char_start"]]
    earlier, continuation = resp[resp["step"] == 0], resp[resp["step"] == 1]
    norms, products, _, _ = reference_scores(model, tokenizer, row, later_than=0, starts=segments)
    positions = earlier["position"].tolist()
    torch.testing.assert_close(
        torch.tensor(earlier["grad_norm"].to_numpy()), norms[positions], rtol=1e-4, atol=1e-7
    )
    torch.testing.assert_close(
        torch.tensor(earlier["grad_x_input"].to_numpy()), products[positions], rtol=1e-4, atol=1e-8
    )
    assert continuation["grad_norm"].isna().all()
    by_steps = score_samples(model, tokenizer, [row], ScoreSpec(response_scopes="steps"))
    step_0 = by_steps[(by_steps["part"] == RESPONSE) & (by_steps["step"] == 0)][
        "grad_norm"
    ].to_numpy()
    assert not np.allclose(step_0, earlier["grad_norm"].to_numpy()[: len(step_0)]), (
        "a different loss per step"
    )


def test_a_one_step_response_has_no_earlier_segment(tokenizer, tiny_llama):
    frame = score_samples(
        tiny_llama(0), tokenizer, scoring_rows([("How many apples?", "The answer is 7.")])
    )
    resp = frame[frame["part"] == RESPONSE]
    assert (resp["step"] == 0).all() and resp["grad_norm"].isna().all()
    assert frame[frame["part"] == "instruction"]["grad_norm"].notna().all()


def test_without_response_level_only_the_instruction_is_scored(tokenizer, tiny_llama):
    rows = scoring_rows([THREE_STEPS])
    frame = score_samples(tiny_llama(0), tokenizer, rows, ScoreSpec(response_level=False))
    assert frame[frame["part"] == RESPONSE]["grad_norm"].isna().all()
    assert frame[frame["part"] == "instruction"]["grad_norm"].notna().all()


@pytest.mark.parametrize("per_backward", [1, 2])
def test_scopes_split_over_several_backward_passes_score_the_same(
    tokenizer, samples, tiny_llama, monkeypatch, per_backward
):
    """Three scopes (the instruction's, steps 0 and 1) in groups of one or two: every pass but
    the last must keep the graph for the next."""
    model = tiny_llama(0)
    rows = scoring_rows([THREE_STEPS, *samples])
    spec = ScoreSpec(max_tokens=10**6, response_scopes="steps")
    one_pass = score_samples(model, tokenizer, rows, spec)
    monkeypatch.setattr(input_gradients, "SCOPES_PER_BACKWARD", per_backward)
    split = score_samples(model, tokenizer, rows, spec)
    for column in ("grad_norm", "grad_x_input"):
        np.testing.assert_allclose(split[column], one_pass[column], rtol=1e-5, equal_nan=True)


def test_padding_and_batch_mates_do_not_change_scores(tokenizer, samples, tiny_llama):
    model = tiny_llama(0)
    rows = scoring_rows([*samples, LONG])
    together = score_samples(model, tokenizer, rows, ScoreSpec(max_tokens=10**6))
    alone = score_samples(model, tokenizer, rows, ScoreSpec(max_batch=1))
    assert together["sample_id"].tolist() == alone["sample_id"].tolist()
    a = together["grad_norm_normalized"].to_numpy()
    b = alone["grad_norm_normalized"].to_numpy()
    assert np.array_equal(np.isnan(a), np.isnan(b))
    assert np.nanmax(np.abs(a - b)) < 1e-5


def test_sum_loss_gives_the_same_normalised_instruction_scores(tokenizer, samples, tiny_qwen2):
    model = tiny_qwen2(0)
    rows = scoring_rows(samples)
    mean = score_samples(model, tokenizer, rows, ScoreSpec(loss="mean")).query(
        "part == 'instruction'"
    )
    total = score_samples(model, tokenizer, rows, ScoreSpec(loss="sum")).query(
        "part == 'instruction'"
    )
    assert np.max(np.abs(mean["grad_norm_normalized"] - total["grad_norm_normalized"])) < 1e-5
    assert (total["grad_norm"] > mean["grad_norm"] * 1.5).all()


def test_rows_keep_input_order_and_only_content_tokens(tokenizer, samples, tiny_qwen2):
    rows = scoring_rows(samples)[::-1]
    frame = score_samples(tiny_qwen2(0), tokenizer, rows)
    assert list(frame.columns) == SCORE_COLUMNS
    assert list(dict.fromkeys(frame["sample_id"])) == [r["id"] for r in rows]
    first = _sample(frame, rows[0]["id"])
    assert "".join(first.query("part == 'instruction'")["token"]) == rows[0]["instruction"]
    assert "".join(first.query("part == 'response'")["token"]) == rows[0]["response"]
    enc = encode_sample(tokenizer, rows[0]["instruction"], rows[0]["response"])
    assert first["token_id"].tolist() == [enc.input_ids[p] for p in first["position"]]
    segments = first.query("part == 'response'")["step"]  # the paper's two: earlier, continuation
    assert segments.iloc[0] == 0 and segments.iloc[-1] == 1 and segments.is_monotonic_increasing


def test_no_parameter_gradients_are_allocated(tokenizer, samples, tiny_llama):
    model = tiny_llama(0)
    score_samples(model, tokenizer, scoring_rows(samples))
    assert all(p.grad is None for p in model.parameters())
    # Frozen, so autograd records nothing for them in the forward pass either.
    assert not any(p.requires_grad for p in model.parameters())


def _stand_in_scores(calls):
    """Stands in for `embedding_grad_norms`: zero scores, every sample scored; records each
    call's pad id and number of samples."""

    def scores(model, items, pad_id, spec):
        calls.append((pad_id, len(items)))
        width = max(len(it.enc) for it in items)
        return np.zeros((2, len(items), width)), np.zeros(len(items)), np.full(len(items), SCORED)

    return scores


def test_scoring_pads_with_the_pad_token_and_shows_its_progress(
    tokenizer, samples, tiny_llama, monkeypatch, capsys
):
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    calls = []
    monkeypatch.setattr(scoring, "embedding_grad_norms", _stand_in_scores(calls))
    rows = scoring_rows(samples)
    score_samples(tiny_llama(0), tokenizer, rows, ScoreSpec(max_tokens=10**6))
    assert calls == [(tokenizer.pad_token_id, len(rows))]
    progress = capsys.readouterr().err
    assert "score: 100%" in progress and f"{len(rows)}/{len(rows)}" in progress
    assert "sample/s" in progress or "s/sample" in progress


def test_a_batch_out_of_memory_halves_the_budget_for_it_and_every_later_batch(monkeypatch, caplog):
    attempts, emptied = [], []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))

    def run(idx):  # room for two samples of 10 tokens
        attempts.append(idx)
        if len(idx) > 2:  # as some backends report it: a RuntimeError, not an OutOfMemoryError
            raise RuntimeError("MPS backend out of memory")
        return sum(idx)

    with caplog.at_level("WARNING", logger="leafpipe"):
        done = list(budgeted_batches(run, [10] * 5, 100, 8, on_cuda=True))
    # 5 × 10 tokens fail; the budget becomes 5 // 2 × 10 = 20: two samples a batch.
    assert attempts == [[0, 1, 2, 3, 4], [0, 1], [2, 3], [4]]
    assert done == [([0, 1], 1), ([2, 3], 5), ([4], 4)]
    assert "batch of 5 samples (50 tokens); token budget now 20" in caplog.text
    assert emptied == [True], "the GPU's cache is emptied once, after the failed attempt"


def test_token_budget_batches():
    batches = token_budget_batches([10, 50, 20, 30, 200], max_tokens=100, max_batch=8)
    assert batches == [[4], [1, 3], [2, 0]]  # the over-long sample alone; 2 × 50 ≤ 100
    assert sorted(i for b in batches for i in b) == list(range(5))
    assert token_budget_batches([1] * 5, max_tokens=100, max_batch=2) == [[0, 1], [2, 3], [4]]


def test_out_of_memory_splits_the_batch_and_retries(
    tokenizer, samples, tiny_llama, monkeypatch, caplog
):
    model = tiny_llama(0)
    rows = scoring_rows([*samples, LONG])
    reference = score_samples(model, tokenizer, rows, ScoreSpec(max_batch=1))
    real = scoring.embedding_grad_norms

    def small_memory(model, items, pad_id, spec):
        if len(items) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(model, items, pad_id, spec)

    monkeypatch.setattr(scoring, "embedding_grad_norms", small_memory)
    emptied = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))
    with caplog.at_level("WARNING", logger="leafpipe"):
        frame = score_samples(model, tokenizer, rows, ScoreSpec(max_tokens=10**6))
    assert "out of memory" in caplog.text
    assert emptied == [], "a model on the CPU leaves the GPU's cache alone"
    assert np.allclose(frame["grad_norm"], reference["grad_norm"], equal_nan=True)


def test_other_errors_are_not_retried(tokenizer, samples, tiny_llama, monkeypatch):
    calls = []

    def shape_error(model, items, pad_id, spec):
        calls.append(len(items))
        raise RuntimeError("shape")

    monkeypatch.setattr(scoring, "embedding_grad_norms", shape_error)
    with pytest.raises(RuntimeError, match="shape"):
        score_samples(tiny_llama(0), tokenizer, scoring_rows(samples))
    assert calls == [len(samples)], "raised from the first batch, never split"


@pytest.mark.parametrize(
    ("split", "text", "starts"),
    [
        ("lines", "a\nb\n\nc", [0, 2, 5]),
        ("blank_lines", "a\nb\n\nc", [0, 5]),
        ("step_k", "Step 1: x. Step 2: y", [0, 11]),
        ("numbered", "1. x\n2) y", [0, 5]),
    ],
)
def test_step_splits(split, text, starts):
    assert reasoning_step_starts(text, split) == starts


def test_unknown_step_split_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown step split"):
        reasoning_step_starts("x", "sentences")


def test_models_are_loaded_with_sdpa_attention(tokenizer, tiny_qwen2, tmp_path):
    from leafpipe.stages import load_model

    tiny_qwen2(0).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    model, _ = load_model(tmp_path)
    assert model.config._attn_implementation == "sdpa"
